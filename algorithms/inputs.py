"""Inputs shared by several algorithms: the area of interest (an extent or a polygon layer
in any CRS, handed to core/ as WGS84 GeoJSON) and the date range."""

import json
import re
import tempfile
from datetime import date, timedelta
from pathlib import Path

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCsException,
    QgsFeatureRequest,
    QgsGeometry,
    QgsProcessingException,
    QgsProcessingOutputLayerDefinition,
    QgsProcessingParameterCrs,
    QgsProcessingParameterDateTime,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)
from qgis.PyQt.QtCore import QDate, QDateTime, QTime

from ..core import stack
from .compat import DATE, DOUBLE, FOLDER_BEHAVIOUR, INTEGER, POLYGON_SOURCE

EXTENT = "EXTENT"
AREA_LAYER = "AREA"
WGS84 = QgsCoordinateReferenceSystem("EPSG:4326")
_PROVIDER_URI = re.compile(r"^[A-Za-z][A-Za-z0-9]+:")


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


RESAMPLING_METHODS = ("bilinear", "nearest", "cubic")
# Also in core.search, which this module may not import at load time (its packages may be missing).
PLANETARY_COMPUTER_STAC = "https://planetarycomputer.microsoft.com/api/stac/v1"


def add_search_parameters(algorithm, cloud_cover_advanced=False):
    """Cloud-cover filter and STAC API URL (List, and the workflows that list)."""
    algorithm.add(
        QgsProcessingParameterNumber("MAX_CLOUD_COVER", algorithm.tr("Maximum scene cloud cover (%)"), DOUBLE,
                                     defaultValue=100.0, minValue=0.0, maxValue=100.0),
        "Skip products whose whole-tile eo:cloud_cover is above this percentage. 100 keeps all.",
        advanced=cloud_cover_advanced,
        decimals=1,
    )
    algorithm.add(
        QgsProcessingParameterString("STAC_URL", algorithm.tr("STAC API URL"), defaultValue=PLANETARY_COMPUTER_STAC),
        "Root of the STAC API to search; it must serve the sentinel-2-l2a collection.",
        advanced=True,
    )


def add_pc_key_parameter(algorithm, help_text, advanced=True):
    algorithm.add(
        QgsProcessingParameterString("PC_KEY", algorithm.tr("Planetary Computer subscription key"),
                                     optional=True),
        help_text,
        advanced=advanced,
    )


def add_coverage_parameters(algorithm):
    """min_tile_cover and max_tiles_per_time (Select, and the workflows that select)."""
    algorithm.add(
        QgsProcessingParameterNumber("MIN_TILE_COVER", algorithm.tr("Minimum cover of the area"),
                                     DOUBLE, defaultValue=0.99, minValue=0.0, maxValue=1.0),
        "Fraction in (0, 1] of the area an acquisition's tiles must cover together to be kept.",
        decimals=3,
    )
    algorithm.add(
        QgsProcessingParameterNumber("MAX_TILES_PER_TIME",
                                     algorithm.tr("Maximum tiles per acquisition"),
                                     INTEGER, optional=True),
        "Most tiles to use for one acquisition; empty means no limit.",
    )


def add_download_parameters(algorithm, pc_key_advanced=True):
    """Parameters shared by the download step and the workflows that include it."""
    algorithm.add(
        QgsProcessingParameterNumber("DL_TIMEOUT", algorithm.tr("Download timeout per request (dl_timeout, s)"),
                                     DOUBLE, defaultValue=120.0, minValue=1.0),
        "Seconds GDAL waits for each HTTP request of a band before retrying (3 retries), then fails.",
        decimals=0,
    )
    add_pc_key_parameter(algorithm, "Optional key used to obtain the SAS tokens that sign the band URLs.",
                         advanced=pc_key_advanced)
    algorithm.add(
        QgsProcessingParameterEnum("RESAMPLING", algorithm.tr("Resampling of 20 m and 60 m bands"),
                                   options=list(RESAMPLING_METHODS), defaultValue=0),
        "How 20 m and 60 m bands are brought to 10 m: bilinear (as FarmVibes), nearest or cubic. "
        "SCL always uses nearest.",
        advanced=True,
    )
    algorithm.add(
        QgsProcessingParameterCrs("OUTPUT_CRS", algorithm.tr("Output CRS"), optional=True),
        "Projected CRS of the outputs; empty means the UTM zone that holds most of the area.",
        advanced=True,
    )
    algorithm.add(
        QgsProcessingParameterFile("CACHE_FOLDER", algorithm.tr("Cache folder"), behavior=FOLDER_BEHAVIOUR,
                                   optional=True),
        "Where downloaded windows are kept so a re-run (after Cancel or a failure) fetches only what "
        "is missing. Empty: s2masks-cache in the system's temporary folder.",
        advanced=True,
    )


def download_options(algorithm, parameters, context):
    cache = algorithm.parameterAsFile(parameters, "CACHE_FOLDER", context)
    return stack.StackOptions(
        cache_dir=Path(cache) if cache else Path(tempfile.gettempdir()) / "s2masks-cache",
        resampling=RESAMPLING_METHODS[algorithm.parameterAsEnum(parameters, "RESAMPLING", context)],
        dl_timeout=algorithm.parameterAsDouble(parameters, "DL_TIMEOUT", context),
        pc_key=algorithm.parameterAsString(parameters, "PC_KEY", context).strip() or None,
    )


def prepare_output_folders(algorithm, parameters, context, sink_keys=()):
    """Creates OUTPUT_FOLDER (checking it is writable) and the folders of file sinks, so that
    `OUTPUT_FOLDER=s2 FOOTPRINTS=s2/used.gpkg` works on the command line before s2 exists."""
    algorithm.run_core(stack.check_writable,
                       algorithm.parameterAsString(parameters, "OUTPUT_FOLDER", context))
    for key in sink_keys:
        value = parameters.get(key)
        if isinstance(value, QgsProcessingOutputLayerDefinition):
            value = value.sink.staticValue()
        # provider URIs (memory:, ogr:, postgres:...) name no folder; a drive letter (C:) is one letter
        if isinstance(value, str) and value and value != "TEMPORARY_OUTPUT" and not _PROVIDER_URI.match(value):
            Path(value).parent.mkdir(parents=True, exist_ok=True)


def output_crs(algorithm, parameters, context):
    crs = algorithm.parameterAsCrs(parameters, "OUTPUT_CRS", context)
    return crs.toWkt() if crs.isValid() else None
