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
    QgsProcessingParameterAuthConfig,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)
from qgis.PyQt.QtCore import QDate, QDateTime, QTime

from ..core import search, stack
from . import network
from .compat import DATE, DOUBLE, FLAG_OPTIONAL, FOLDER_BEHAVIOUR, INTEGER, POLYGON_SOURCE, copy_definition

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


SECRET_MASK = "********"


def _is_given(value):
    return isinstance(value, str) and bool(value.strip())


class SecretStringParameter(QgsProcessingParameterString):
    """A string parameter whose value QGIS never shows: the dialog's log ("Input parameters"),
    processing.log, the history and 'Copy as Python / qgis_process command' all print SECRET_MASK.

    QGIS has no flag for sensitive values (QgsProcessingParameterDefinition's flags are Advanced,
    Hidden, Optional and IsModelOutput, in 3.22 as in 3.40); these all go through the value-to-text
    methods overridden here. Only qgis_process's own "Inputs" block prints its command-line
    arguments as typed, before any plugin runs: give the key there with AUTHCFG or
    PC_SDK_SUBSCRIPTION_KEY instead.
    """

    def valueAsPythonString(self, value, context):  # noqa: N802
        if _is_given(value):
            return repr(SECRET_MASK)
        return super().valueAsPythonString(value, context)

    def valueAsJsonObject(self, value, context):  # noqa: N802  (QGIS 3.24 and later)
        if _is_given(value):
            return SECRET_MASK
        return super().valueAsJsonObject(value, context)

    def valueAsString(self, value, context):  # noqa: N802  (QGIS 3.24 and later; returns (text, ok))
        if _is_given(value):
            return SECRET_MASK, True
        return super().valueAsString(value, context)

    def clone(self):
        optional = bool(self.flags() & FLAG_OPTIONAL)
        return copy_definition(self, SecretStringParameter(self.name(), self.description(), self.defaultValue(),
                                                           self.multiLine(), optional))


def add_pc_key_parameter(algorithm, help_text, advanced=True):
    """AUTHCFG (the subscription key from QGIS's Authentication Manager) and the deprecated PC_KEY."""
    algorithm.add(
        QgsProcessingParameterAuthConfig("AUTHCFG", algorithm.tr("Planetary Computer subscription key "
                                                                 "(authentication configuration)"), optional=True),
        help_text + " Pick an authentication configuration of QGIS's Authentication Manager: method 'API Header' "
        "with the header Ocp-Apim-Subscription-Key and your key as value (QGIS 3.24 and later), or 'Basic' with "
        "the key as password (QGIS 3.22). Empty: the PC_SDK_SUBSCRIPTION_KEY environment variable, if set, else "
        "anonymous access. The key itself is never printed.",
        advanced=advanced,
    )
    algorithm.add(
        SecretStringParameter("PC_KEY", algorithm.tr("Planetary Computer subscription key (deprecated: use AUTHCFG)"),
                              optional=True),
        "Deprecated, kept for existing scripts and models: the key as plain text. QGIS logs show it masked, but "
        "qgis_process prints every argument it is given, and models store it in clear: use AUTHCFG or the "
        "PC_SDK_SUBSCRIPTION_KEY environment variable.",
        advanced=True,
    )


def subscription_key(algorithm, parameters, context, feedback=None):
    """(key or None, explicit): AUTHCFG, else the deprecated PC_KEY, else PC_SDK_SUBSCRIPTION_KEY.

    `explicit` is True when the key was chosen for this run (AUTHCFG or PC_KEY); a key that only
    comes from the environment is sent to Planetary Computer's hosts only (see search_key).
    """
    authcfg = algorithm.parameterAsString(parameters, "AUTHCFG", context).strip() \
        if algorithm.parameterDefinition("AUTHCFG") else ""
    if authcfg:
        return network.subscription_key_from_auth_config(authcfg), True
    key = algorithm.parameterAsString(parameters, "PC_KEY", context).strip() \
        if algorithm.parameterDefinition("PC_KEY") else ""
    if key and set(key) == {"*"}:
        if feedback is not None:
            feedback.pushWarning(algorithm.tr(
                "PC_KEY holds the mask QGIS logs in place of the key, not a key: it is ignored. Choose the key "
                "with AUTHCFG."))
        key = ""
    if key:
        if feedback is not None:
            feedback.pushWarning(algorithm.tr(
                "PC_KEY is deprecated: give the subscription key with AUTHCFG (QGIS's Authentication Manager) or "
                "the PC_SDK_SUBSCRIPTION_KEY environment variable, which nothing prints."))
        return key, True
    return search.subscription_key(), False


def search_key(url, key, explicit):
    """The key to send to the STAC API at `url`: one from the environment only goes to Planetary
    Computer, never to another STAC API the user points STAC_URL at."""
    return key if key and (explicit or search.is_planetary_computer(url)) else None


def request_policy(algorithm, parameters, context, timeout_key, attempts_key=None):
    """The bounds of every request of a step (core.search.RequestPolicy), with this run's proxies."""
    attempts = 4
    if attempts_key and algorithm.parameterDefinition(attempts_key):
        attempts = algorithm.parameterAsInt(parameters, attempts_key, context)
    return search.RequestPolicy(timeout=algorithm.parameterAsDouble(parameters, timeout_key, context),
                                attempts=attempts, proxies=network.proxies())


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
        "Seconds each HTTP request may take, to connect and to answer in full: the band reads, the token "
        "requests (and in the workflows the STAC search). Up to 4 attempts, with pauses of 1, 2 and 4 s (longer "
        "when the server asks with Retry-After, at most 30 s); a step whose server does not answer fails within "
        "about 4 times this plus the pauses, naming the host.",
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


def download_options(algorithm, parameters, context, feedback=None):
    cache = algorithm.parameterAsFile(parameters, "CACHE_FOLDER", context)
    key, _ = subscription_key(algorithm, parameters, context, feedback)
    return stack.StackOptions(
        cache_dir=Path(cache) if cache else Path(tempfile.gettempdir()) / "s2masks-cache",
        resampling=RESAMPLING_METHODS[algorithm.parameterAsEnum(parameters, "RESAMPLING", context)],
        dl_timeout=algorithm.parameterAsDouble(parameters, "DL_TIMEOUT", context),
        pc_key=key,
        proxies=network.proxies(),
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
