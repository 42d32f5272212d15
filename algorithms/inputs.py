"""Inputs shared by several algorithms: the area of interest (an extent or a polygon layer
in any CRS, handed to core/ as WGS84 GeoJSON) and the date range."""

import json
import re
import tempfile
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from qgis.core import (
    Qgis,
    QgsApplication,
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
    QgsProcessingUtils,
    QgsProperty,
)
from qgis.PyQt.QtCore import QCoreApplication, QDate, QDateTime, Qt, QTime

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
    geometry = _repaired(geometry)  # before measuring: a bow-tie's two halves cancel out unrepaired
    if geometry.isEmpty() or geometry.area() <= 0:
        raise QgsProcessingException(
            "The area is empty or has no surface. Draw an extent with a width and a height, "
            "or use a layer with polygons."
        )
    return _to_wgs84_geojson(geometry, crs, context)


def _repaired(geometry):
    """An invalid polygon (self-intersecting, such as a bow-tie) made valid, as drawn; others unchanged."""
    if geometry.isNull() or geometry.isEmpty() or geometry.isGeosValid():
        return geometry
    repaired = geometry.makeValid()
    return geometry if repaired.isNull() else repaired


def _layer_geometry(algorithm, parameters, context):
    source = algorithm.parameterAsSource(parameters, AREA_LAYER, context)
    if source is None:
        raise QgsProcessingException(f"Could not open the area layer {parameters[AREA_LAYER]!r}.")
    request = QgsFeatureRequest().setNoAttributes()
    geometries = [_repaired(f.geometry()) for f in source.getFeatures(request) if f.hasGeometry()]
    geometries = [geometry for geometry in geometries if not geometry.isEmpty()]
    if not geometries:
        raise QgsProcessingException("The area layer has no polygon (no features, none selected, or only empty "
                                     "geometries). Use a layer with polygons, or select some.")
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
        "Skip products whose whole-tile eo:cloud_cover is above this percentage (asked of the server, and checked "
        "again on what it returns). 100 keeps all.",
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
                                     INTEGER, optional=True, minValue=1),
        "Most tiles to use for one acquisition, a whole number from 1; empty means no limit.",
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
        "is missing. Empty: s2masks-cache in the system's temporary folder. Must be a folder you can write to "
        "(checked before the run starts).",
        advanced=True,
    )


def download_options(algorithm, parameters, context, feedback=None):
    cache = algorithm.parameterAsFile(parameters, "CACHE_FOLDER", context)
    key, _ = subscription_key(algorithm, parameters, context, feedback)
    return stack.StackOptions(
        cache_dir=Path(cache) if cache else default_cache_folder(),
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


# -- validation: every check that needs no network and writes nothing ------------------------
# Run by S2MasksAlgorithm.checkParameterValues (dialog, processing.run, qgis_process) and again by
# its prepareAlgorithm (a model's steps, alg.run), so a bad value stops a run before its first
# request or file. Each message names the parameter ("Description (NAME): ...") and what to do.
GEOTIFF_SUFFIXES = (".tif", ".tiff")
# Qgis.PropertyType from QGIS 3.36 on
_STATIC_PROPERTY = Qgis.PropertyType.Static if hasattr(Qgis, "PropertyType") else QgsProperty.StaticProperty
_NO_LIMIT = 1e300  # QgsProcessingParameterNumber's "no minimum/maximum" is +-DBL_MAX


def _tr(text):
    return QCoreApplication.translate("S2Masks", text)


def parameter_label(definition):
    """'Description (NAME)', how messages name a parameter."""
    return f"{definition.description()} ({definition.name()})"


def _is_empty(value):
    return value is None or (isinstance(value, str) and not value.strip()) or \
        (hasattr(value, "isNull") and not isinstance(value, str) and value.isNull())


def _static(value):
    """The plain value of a parameter: a destination's path, a property's static value; None
    for what only the run can tell (expressions, fields)."""
    if isinstance(value, QgsProcessingOutputLayerDefinition):
        value = value.sink
    if isinstance(value, QgsProperty):
        if value.propertyType() != _STATIC_PROPERTY:
            return None
        value = value.staticValue()
    return value


def _output_path(value):
    """A destination's file path, or None for temporary and provider outputs (memory:, ogr:, ...)."""
    value = _static(value)
    if not isinstance(value, str) or not value.strip() or value == "TEMPORARY_OUTPUT":
        return None
    value = value.strip()
    if _PROVIDER_URI.match(value) and not re.match(r"^[A-Za-z]:[\\/]", value):
        return None
    return Path(value)


def folder_problem(folder):
    """Why files cannot be written in `folder` (created if missing), or None. Writes nothing: the
    probe is an anonymous temporary file in the nearest existing folder."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        return _tr("{} is a file, not a folder").format(existing)
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        return _tr("cannot write in {} ({})").format(existing, err.strerror or err)
    return None


class _Refusal(Exception):
    """A problem with one parameter; validate_parameters words it with the parameter's label."""


def validate_parameters(algorithm, parameters, context, partial=False, labels=None, rules=True):
    """Checks every parameter of `algorithm` (types, ranges, whole numbers, files, folders,
    output formats) and the rules between them (area, dates, selection, item source, CRS).

    `partial`: only the parameters given are checked and none is required (a model's inputs that
    feed one of its steps). `labels`: names for messages in place of a parameter's own label.
    `rules`: False checks each parameter alone (a model's own inputs; its steps know the rules).
    Raises QgsProcessingException naming the parameter and what to do.
    """
    labels = labels or {}

    def refuse(name, problem):
        definition = algorithm.parameterDefinition(name)
        label = labels.get(name) or (parameter_label(definition) if definition else name)
        return QgsProcessingException(f"{label}: {problem}")

    for definition in algorithm.parameterDefinitions():
        name = definition.name()
        if partial and name not in parameters:
            continue
        value = parameters.get(name)
        try:
            if _is_empty(value) or (isinstance(value, (list, tuple)) and not value):
                if not partial and _required(definition):
                    raise _Refusal(_tr("no value given. {}").format(_what_to_give(definition)))
                continue
            check = _CHECKS.get(definition.type())
            if check is not None and _static(value) is not None:
                check(algorithm, definition, parameters, context)
        except _Refusal as problem:
            raise refuse(name, str(problem)) from None
    for rule in _RULES if rules else ():
        try:
            rule(algorithm, parameters, context, partial)
        except _RuleRefusal as problem:
            raise refuse(problem.name, problem.text) from None


def _required(definition):
    default = definition.defaultValue()
    return not (definition.flags() & FLAG_OPTIONAL) and not definition.isDestination() and _is_empty(default)


def _what_to_give(definition):
    return {
        "raster": _tr("Give a raster file (GeoTIFF) or a raster layer."),
        "source": _tr("Give a vector layer or file."),
        "multilayer": _tr("Give one or more raster files or layers."),
        "extent": _tr("Give an extent (xmin,xmax,ymin,ymax [CRS])."),
        "datetime": _tr("Give a date as YYYY-MM-DD."),
        "file": _tr("Give the path of the file."),
    }.get(definition.type(), _tr("Give a value: see the algorithm's help."))


# -- one parameter --------------------------------------------------------------------------
def _check_number(algorithm, definition, parameters, context):
    value = _static(parameters[definition.name()])
    kind = _tr("whole number") if definition.dataType() == INTEGER else _tr("number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if number != number or abs(number) == float("inf"):
        raise _Refusal(_tr("{!r} is not a number. Give a {}{}.").format(value, kind, _range_text(definition)))
    if definition.dataType() == INTEGER and not number.is_integer():
        raise _Refusal(_tr("{:g} is not a whole number, and it is not rounded for you. Give a whole number{}.").format(
            number, _range_text(definition)))
    low, high = definition.minimum(), definition.maximum()
    if (low > -_NO_LIMIT and number < low) or (high < _NO_LIMIT and number > high):
        raise _Refusal(_tr("{:g} is out of range. Give a {}{}.").format(number, kind, _range_text(definition)))


def _range_text(definition):
    low, high = definition.minimum(), definition.maximum()
    if low > -_NO_LIMIT and high < _NO_LIMIT:
        return _tr(" from {:g} to {:g}").format(low, high)
    if low > -_NO_LIMIT:
        return _tr(" of {:g} or more").format(low)
    if high < _NO_LIMIT:
        return _tr(" of {:g} or less").format(high)
    return ""


def _check_enum(algorithm, definition, parameters, context):
    value = _static(parameters[definition.name()])
    options = definition.options()
    values = value if isinstance(value, (list, tuple)) else [value]
    for entry in values:
        if isinstance(entry, str) and entry in options:
            continue
        try:
            index = float(entry)
        except (TypeError, ValueError):
            index = -1.0
        if not (index.is_integer() and 0 <= index < len(options)):
            choices = "; ".join(options if definition.usesStaticStrings()  # models are chosen by name
                                else (f"{number} = {option}" for number, option in enumerate(options)))
            raise _Refusal(_tr("{!r} is not one of the choices. Give one of: {}.").format(entry, choices))


def _check_raster_destination(algorithm, definition, parameters, context):
    path = _output_path(parameters[definition.name()])
    if path is None:
        return
    if path.suffix.lower() not in GEOTIFF_SUFFIXES:
        raise _Refusal(_tr("{} is not a GeoTIFF file name; this algorithm writes GeoTIFF only. Give a file name "
                           "ending in .tif.").format(path.name))
    _check_output_folder(path.parent)


def _check_sink(algorithm, definition, parameters, context):
    path = _output_path(parameters[definition.name()])
    if path is None:
        return
    suffix = path.suffix.lower().lstrip(".")
    supported = [extension.lower() for extension in definition.supportedOutputVectorLayerExtensions()]
    if suffix and suffix not in supported:
        raise _Refusal(_tr("'.{}' is not a vector format QGIS can write ({}). Give a file name ending in .gpkg "
                           "(GeoPackage), or another of: {}.").format(
            suffix, path.name, ", ".join("." + extension for extension in supported[:12])))
    _check_output_folder(path.parent)


def _check_folder_destination(algorithm, definition, parameters, context):
    path = _output_path(parameters[definition.name()])
    if path is not None:
        _check_output_folder(path)


def _check_output_folder(folder):
    problem = folder_problem(folder)
    if problem:
        raise _Refusal(_tr("{}. Choose a folder you can write to.").format(problem))


def _check_file(algorithm, definition, parameters, context):
    value = _static(parameters[definition.name()])
    path = Path(str(value).strip())
    if definition.behavior() == FOLDER_BEHAVIOUR:
        problem = folder_problem(path)
        if problem:
            raise _Refusal(_tr("{}. Choose a folder you can write to, or leave it empty.").format(problem))
        return
    extension = definition.extension()
    if not path.is_file():
        raise _Refusal(_tr("{} does not exist or is not a file. Give the path of an existing {}file.").format(
            path, f".{extension} " if extension else ""))
    if extension and path.suffix.lower() != "." + extension.lower():
        raise _Refusal(_tr("{} is not a .{} file. Give the path of a .{} file.").format(path.name, extension,
                                                                                      extension))


def _check_raster(algorithm, definition, parameters, context):
    if algorithm.parameterAsRasterLayer(parameters, definition.name(), context) is None:
        raise _Refusal(_layer_problem(parameters[definition.name()], _tr("raster")))


def _check_source(algorithm, definition, parameters, context):
    if algorithm.parameterAsSource(parameters, definition.name(), context) is None:
        raise _Refusal(_layer_problem(parameters[definition.name()], _tr("vector")))


def _check_layers(algorithm, definition, parameters, context):
    values = _static(parameters[definition.name()])
    for value in values if isinstance(values, (list, tuple)) else [values]:
        if isinstance(value, str) and QgsProcessingUtils.mapLayerFromString(value, context) is None:
            raise _Refusal(_layer_problem(value, _tr("raster")))


def _layer_problem(value, kind):
    text = _static(value)
    if isinstance(text, str) and not Path(text).exists() and ("/" in text or "\\" in text or "." in text):
        return _tr("{} does not exist. Give an existing {} file or a layer of the project.").format(text, kind)
    return _tr("{!r} could not be opened as a {} layer. Give an existing {} file or a layer of the project.").format(
        text, kind, kind)


def _check_crs(algorithm, definition, parameters, context):
    crs = algorithm.parameterAsCrs(parameters, definition.name(), context)
    if not crs.isValid():
        raise _Refusal(_tr("{!r} is not a CRS QGIS knows. Give one such as EPSG:32633, or leave it empty.").format(
            _static(parameters[definition.name()])))
    if algorithm.parameterDefinition("DL_TIMEOUT") is not None and crs.isGeographic():
        raise _Refusal(_tr("{} is not projected; 10 m pixels need metres. Leave it empty (the area's UTM zone) or "
                           "give a projected CRS such as EPSG:32633.").format(crs.authid() or crs.description()))


def _check_datetime(algorithm, definition, parameters, context):
    value = _static(parameters[definition.name()])
    # a text QGIS cannot read becomes the default date, silently: read it here
    text = value.strip() if isinstance(value, str) else None
    unreadable = text is not None and not (QDate.fromString(text[:10], "yyyy-MM-dd").isValid()
                                           or QDateTime.fromString(text, Qt.DateFormat.ISODate).isValid())
    if unreadable or not algorithm.parameterAsDateTime(parameters, definition.name(), context).isValid():
        raise _Refusal(_tr("{!r} is not a date. Give a date as YYYY-MM-DD.").format(
            _static(parameters[definition.name()])))


def _check_extent(algorithm, definition, parameters, context):
    value = _static(parameters[definition.name()])
    if isinstance(value, str) and algorithm.parameterAsExtent(parameters, definition.name(), context).isNull():
        raise _Refusal(_tr("{!r} is not an extent. Give xmin,xmax,ymin,ymax [CRS], for example "
                           "-8.74,-8.62,53.09,53.16 [EPSG:4326].").format(value))


def _check_authcfg(algorithm, definition, parameters, context):
    authcfg = str(_static(parameters[definition.name()])).strip()
    manager = QgsApplication.authManager()
    if manager is None or manager.isDisabled():
        return  # network.subscription_key_from_auth_config says so, before any request
    if authcfg not in manager.configIds():
        raise _Refusal(_tr("there is no authentication configuration {!r}. Choose one of QGIS's Authentication "
                           "Manager (Settings > Options > Authentication), or leave it empty.").format(authcfg))


def _check_string(algorithm, definition, parameters, context):
    if definition.name() != "STAC_URL":
        return
    url = str(_static(parameters["STAC_URL"])).strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _Refusal(_tr("{!r} is not an http(s) URL. Give the root of a STAC API, such as {}.").format(
            url, PLANETARY_COMPUTER_STAC))


_CHECKS = {
    "number": _check_number, "enum": _check_enum, "rasterDestination": _check_raster_destination,
    "sink": _check_sink, "folderDestination": _check_folder_destination, "file": _check_file,
    "raster": _check_raster, "source": _check_source, "multilayer": _check_layers, "crs": _check_crs,
    "datetime": _check_datetime, "extent": _check_extent, "authcfg": _check_authcfg, "string": _check_string,
}


# -- rules between parameters -------------------------------------------------------------------
class _RuleRefusal(Exception):
    def __init__(self, name, text):
        super().__init__(text)
        self.name, self.text = name, text


def _core_message(algorithm, function, *args):
    """Runs a core/ check; its error text (or None)."""
    try:
        algorithm.run_core(function, *args)
    except QgsProcessingException as err:
        return str(err)
    return None


def _rule_area(algorithm, parameters, context, partial):
    if algorithm.parameterDefinition(EXTENT) is None or algorithm.parameterDefinition(AREA_LAYER) is None:
        return
    name = AREA_LAYER if parameters.get(AREA_LAYER) else EXTENT
    if not parameters.get(AREA_LAYER) and not parameters.get(EXTENT):
        if partial or not algorithm.AREA_REQUIRED:
            return
    try:
        area = area_geojson(algorithm, parameters, context)
    except QgsProcessingException as err:
        raise _RuleRefusal(name, str(err)) from None
    from ..core import geometry  # shapely: only once the packages are known to be there

    message = _core_message(algorithm, geometry.area_from_geojson, area)
    if message:
        raise _RuleRefusal(name, message)


def _rule_dates(algorithm, parameters, context, partial):
    if algorithm.parameterDefinition("START_DATE") is None:
        return
    if partial and not ("START_DATE" in parameters and "END_DATE" in parameters):
        return
    start, end = date_range(algorithm, parameters, context)
    message = _core_message(algorithm, search.validate_date_range, start, end)
    if message:
        raise _RuleRefusal("END_DATE" if "end date" in message.lower() and "start date" not in message.lower()
                           else "START_DATE", message)


def _rule_selection(algorithm, parameters, context, partial):
    from ..core import selection

    if algorithm.parameterDefinition("MIN_TILE_COVER") is None:
        return
    if partial and "MIN_TILE_COVER" not in parameters:
        return
    cover = algorithm.parameterAsDouble(parameters, "MIN_TILE_COVER", context)
    if not 0 < cover <= 1:
        message = _core_message(algorithm, selection.validate_selection_parameters, cover, None)
        raise _RuleRefusal("MIN_TILE_COVER", _tr("{} Give a fraction above 0 and at most 1.").format(message))


def _rule_item_source(algorithm, parameters, context, partial):
    """Download and stack: a footprint layer with item_json, or one STAC item (URL or JSON)."""
    if algorithm.parameterDefinition("ITEM") is None:
        return
    text = str(_static(parameters.get("ITEM")) or "").strip()
    if text and not text.startswith(("http://", "https://")):
        from ..core import records

        try:
            item = json.loads(text)
        except ValueError as err:
            raise _RuleRefusal("ITEM", _tr("neither a URL nor valid STAC item JSON ({}). Give the item's URL or "
                                           "its JSON.").format(err)) from None
        message = _core_message(algorithm, records.parse_item, item)
        if message:
            raise _RuleRefusal("ITEM", message)
        return
    if text:
        return
    if _is_empty(parameters.get("FOOTPRINTS")):
        if not partial:
            raise _RuleRefusal("FOOTPRINTS", _tr("no products given. Give the selected footprints (FOOTPRINTS) or "
                                                 "one STAC item (ITEM)."))
        return
    _require_item_json(algorithm, parameters, context, "'List Sentinel-2 products' or 'Select necessary coverage "
                                                       "items'")


def _rule_footprints_field(algorithm, parameters, context, partial):
    """Select: the footprint layer must carry the items (item_json)."""
    definition = algorithm.parameterDefinition("FOOTPRINTS")
    if definition is None or definition.type() != "source" or algorithm.parameterDefinition("ITEM") is not None:
        return
    if _is_empty(parameters.get("FOOTPRINTS")):
        return
    _require_item_json(algorithm, parameters, context, "'List Sentinel-2 products' (s2masks:listsentinel2products)")


def _require_item_json(algorithm, parameters, context, producer):
    """FOOTPRINTS must be a layer that carries the STAC items (item_json), as `producer` writes it."""
    source = algorithm.parameterAsSource(parameters, "FOOTPRINTS", context)
    if source is not None and source.fields().indexOf("item_json") < 0:
        raise _RuleRefusal("FOOTPRINTS", _tr("the layer has no 'item_json' field. Give the output of {}.").format(
            producer))


def _rule_rasters_and_masks(algorithm, parameters, context, partial):
    if algorithm.parameterDefinition("RASTERS") is None or algorithm.parameterDefinition("MASKS") is None:
        return
    if partial and not ("RASTERS" in parameters and "MASKS" in parameters):
        return
    rasters = algorithm.parameterAsLayerList(parameters, "RASTERS", context)
    masks = algorithm.parameterAsLayerList(parameters, "MASKS", context)
    if not rasters:
        raise _RuleRefusal("RASTERS", _tr("no raster given. Give the stacks of one acquisition."))
    if len(rasters) != len(masks):
        raise _RuleRefusal("MASKS", _tr("{} masks for {} rasters. Give one product mask per raster, in the same "
                                        "order.").format(len(masks), len(rasters)))


def _rule_custom_models(algorithm, parameters, context, partial):
    for definition in algorithm.parameterDefinitions():
        name = definition.name()
        if not name.endswith("MODEL") or definition.type() != "enum" or _is_empty(parameters.get(name)):
            continue
        prefix = name[:-len("MODEL")]
        card = algorithm.parameterDefinition(f"{prefix}CUSTOM_CARD")
        custom_index = len(definition.options()) - 1
        chosen = (_static(parameters.get(name)) == definition.options()[-1] if definition.usesStaticStrings()
                  else algorithm.parameterAsEnum(parameters, name, context) == custom_index)  # models by name
        if card is None or not chosen:
            continue
        if _is_empty(parameters.get(card.name())) and not (partial and card.name() not in parameters):
            raise _RuleRefusal(card.name(), _tr("{} is the custom model, which needs its model card. Give the card "
                                                "(a JSON like those in the plugin's models/ folder) or choose an "
                                                "installed model.").format(name))


def _rule_default_cache(algorithm, parameters, context, partial):
    """An empty CACHE_FOLDER means s2masks-cache in the system's temporary folder: it must be usable too."""
    if partial or algorithm.parameterDefinition("CACHE_FOLDER") is None:
        return
    if not _is_empty(parameters.get("CACHE_FOLDER")):
        return
    problem = folder_problem(default_cache_folder())
    if problem:
        raise _RuleRefusal("CACHE_FOLDER", _tr("the default cache folder {} is not usable: {}. Choose a cache folder "
                                               "you can write to.").format(default_cache_folder(), problem))


def default_cache_folder():
    """Where downloaded windows are kept when CACHE_FOLDER is empty."""
    return Path(tempfile.gettempdir()) / "s2masks-cache"


def _rule_executor(algorithm, parameters, context, partial):
    """EXECUTOR and its DASK_* parameters: Dask installed, a scheduler address that can be one."""
    if algorithm.parameterDefinition("EXECUTOR") is None or (partial and "EXECUTOR" not in parameters):
        return
    from .executor import spec_problem

    problem = spec_problem(algorithm, parameters, context)
    if problem:
        raise _RuleRefusal(*problem)


_RULES = (_rule_default_cache, _rule_area, _rule_dates, _rule_selection, _rule_item_source, _rule_footprints_field,
          _rule_rasters_and_masks, _rule_custom_models, _rule_executor)
