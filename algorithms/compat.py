"""Enum spellings that changed between QGIS 3.22 and current QGIS (3.36+ moved them to Qgis.*).

Using the new names where they exist keeps the plugin free of deprecated API on current
QGIS while still running on 3.22.
"""

from qgis.core import (
    Qgis,
    QgsField,
    QgsProcessing,
    QgsProcessingParameterDateTime,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QMetaType, QVariant

_NEW_ENUMS = hasattr(Qgis, "ProcessingSourceType")

if _NEW_ENUMS:
    POLYGON_SOURCE = Qgis.ProcessingSourceType.VectorPolygon
    DATE = Qgis.ProcessingDateTimeParameterDataType.Date
    DOUBLE = Qgis.ProcessingNumberParameterType.Double
    INTEGER = Qgis.ProcessingNumberParameterType.Integer
    FLAG_ADVANCED = Qgis.ProcessingParameterFlag.Advanced
    FLAG_OPTIONAL = Qgis.ProcessingParameterFlag.Optional
    FOLDER_BEHAVIOUR = Qgis.ProcessingFileParameterBehavior.Folder
    RASTER_LAYERS = Qgis.ProcessingSourceType.Raster
    TABLE = Qgis.ProcessingSourceType.Vector
else:
    POLYGON_SOURCE = QgsProcessing.SourceType.TypeVectorPolygon
    DATE = QgsProcessingParameterDateTime.Type.Date
    DOUBLE = QgsProcessingParameterNumber.Type.Double
    INTEGER = QgsProcessingParameterNumber.Type.Integer
    FLAG_ADVANCED = QgsProcessingParameterDefinition.Flag.FlagAdvanced
    FLAG_OPTIONAL = QgsProcessingParameterDefinition.Flag.FlagOptional
    FOLDER_BEHAVIOUR = QgsProcessingParameterFile.Behavior.Folder
    RASTER_LAYERS = QgsProcessing.SourceType.TypeRaster
    TABLE = QgsProcessing.SourceType.TypeVector

# Qgis.WkbType from QGIS 3.30 on
NO_GEOMETRY = Qgis.WkbType.NoGeometry if hasattr(Qgis, "WkbType") else QgsWkbTypes.Type.NoGeometry

# QgsField takes QMetaType from QGIS 3.38 on; QVariant types before (and Qt 6 has no QVariant.Type).
_QMETATYPE_FIELDS = Qgis.versionInt() >= 33800
_TYPE_NAMES = {str: ("QString", "String"), int: ("Int", "Int"), float: ("Double", "Double")}


def make_field(name, python_type):
    metatype_name, variant_name = _TYPE_NAMES[python_type]
    if _QMETATYPE_FIELDS:
        return QgsField(name, getattr(QMetaType.Type, metatype_name))
    return QgsField(name, getattr(QVariant, variant_name))


def mark_advanced(parameter):
    parameter.setFlags(parameter.flags() | FLAG_ADVANCED)
    return parameter


def copy_definition(source, copy):
    """Gives a cloned parameter `source`'s flags, metadata and help (for Python subclasses'
    clone(), which QGIS calls when it copies an algorithm's parameters)."""
    copy.setFlags(source.flags())
    copy.setMetadata(source.metadata())
    copy.setHelp(source.help())
    return copy
