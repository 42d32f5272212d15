"""Inputs shared by several algorithms: the area of interest (an extent or a polygon layer
in any CRS, handed to core/ as WGS84 GeoJSON) and the date range."""

import json
from datetime import date, timedelta

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCsException,
    QgsFeatureRequest,
    QgsGeometry,
    QgsProcessingException,
    QgsProcessingParameterDateTime,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSource,
)
from qgis.PyQt.QtCore import QDate, QDateTime, QTime

from .compat import DATE, POLYGON_SOURCE

EXTENT = "EXTENT"
AREA_LAYER = "AREA"
WGS84 = QgsCoordinateReferenceSystem("EPSG:4326")


def add_area_parameters(algorithm):
    algorithm.add(
        QgsProcessingParameterExtent(EXTENT, algorithm.tr("Area of interest (extent)"), optional=True),
        "Rectangle to cover, in any CRS. Used when no polygon layer is given.",
    )
    algorithm.add(
        QgsProcessingParameterFeatureSource(
            AREA_LAYER, algorithm.tr("Area of interest (polygon layer)"), [POLYGON_SOURCE], optional=True
        ),
        "Polygons to cover, in any CRS; all features (or the selected ones) together form the area. "
        "Takes precedence over the extent.",
    )


def area_geojson(algorithm, parameters, context):
    """The area as a GeoJSON dict in EPSG:4326, or a QgsProcessingException saying why not."""
    if parameters.get(AREA_LAYER):
        geometry, crs = _layer_geometry(algorithm, parameters, context)
    elif parameters.get(EXTENT):
        crs = algorithm.parameterAsExtentCrs(parameters, EXTENT, context)
        geometry = QgsGeometry.fromRect(algorithm.parameterAsExtent(parameters, EXTENT, context))
    else:
        raise QgsProcessingException(
            "No area given. Set an extent (EXTENT) or a polygon layer (AREA) to search over."
        )
    if geometry.isEmpty() or geometry.area() <= 0:
        raise QgsProcessingException(
            "The area is empty or has no surface. Draw an extent with a width and a height, "
            "or use a layer with polygons."
        )
    return _to_wgs84_geojson(geometry, crs, context)


def _layer_geometry(algorithm, parameters, context):
    source = algorithm.parameterAsSource(parameters, AREA_LAYER, context)
    if source is None:
        raise QgsProcessingException(f"Could not open the area layer {parameters[AREA_LAYER]!r}.")
    request = QgsFeatureRequest().setNoAttributes()
    geometries = [f.geometry() for f in source.getFeatures(request) if f.hasGeometry()]
    if not geometries:
        raise QgsProcessingException("The area layer has no polygon (no features, or none selected).")
    return QgsGeometry.unaryUnion(geometries), source.sourceCrs()


def _to_wgs84_geojson(geometry, crs, context):
    if not crs.isValid():
        raise QgsProcessingException("The area has no valid CRS. Set the layer's or extent's CRS.")
    geometry = QgsGeometry(geometry)
    if crs != WGS84:
        transform = QgsCoordinateTransform(crs, WGS84, context.transformContext())
        try:
            if not transform.isValid():  # e.g. a local engineering CRS: no way to WGS84
                raise QgsCsException("no transformation exists")
            geometry.transform(transform)
        except QgsCsException as err:
            raise QgsProcessingException(
                f"The area could not be transformed from {_crs_name(crs)} to WGS84 ({err}). "
                "Use an area in a CRS with a known transformation to EPSG:4326."
            ) from err
    bounds = geometry.boundingBox()
    finite = all(abs(v) != float("inf") and v == v for v in (bounds.xMinimum(), bounds.yMinimum(),
                                                           bounds.xMaximum(), bounds.yMaximum()))
    if geometry.isEmpty() or not finite:
        raise QgsProcessingException(
            f"The area could not be transformed from {_crs_name(crs)} to WGS84: "
            "the result is empty or infinite. Check the extent's CRS."
        )
    return json.loads(geometry.asJson(8))


def _crs_name(crs):
    return crs.authid() or crs.description() or "its CRS"


def add_date_parameters(algorithm):
    today = date.today()
    algorithm.add(
        QgsProcessingParameterDateTime("START_DATE", algorithm.tr("Start date"), type=DATE,
                                       defaultValue=_qdatetime(today - timedelta(days=30))),
        "First day of the time range (UTC), included.",
    )
    algorithm.add(
        QgsProcessingParameterDateTime("END_DATE", algorithm.tr("End date"), type=DATE,
                                       defaultValue=_qdatetime(today)),
        "Last day of the time range (UTC), included. Not after today.",
    )


def date_range(algorithm, parameters, context):
    start = algorithm.parameterAsDateTime(parameters, "START_DATE", context)
    end = algorithm.parameterAsDateTime(parameters, "END_DATE", context)
    if not start.isValid() or not end.isValid():
        raise QgsProcessingException("Give a start and an end date (YYYY-MM-DD).")
    return start.date().toPyDate(), end.date().toPyDate()


def _qdatetime(day):
    return QDateTime(QDate(day.year, day.month, day.day), QTime(0, 0))
