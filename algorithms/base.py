"""The small base class every algorithm of the plugin derives from.

It owns what is the same everywhere: ids and groups, the icon, `createInstance`, help text
built from one description plus one line per parameter (so the Toolbox help and
`qgis_process help` never drift from the parameters), and the mapping of core errors to
QgsProcessingException, a missing package included (core/ imports third-party packages only
where it uses them, so the plugin loads without them and a run names the one it lacks).
"""

import sys
from pathlib import Path
from typing import Callable

from qgis.core import (
    Qgis,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterRasterDestination,
)
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from ..core import errors
from . import inputs, packages
from .compat import FLAG_OPTIONAL, copy_definition, mark_advanced

PLUGIN_DIR = Path(__file__).resolve().parent.parent
ICON_PATH = PLUGIN_DIR / "resources" / "icon.svg"
_all_packages_present = False  # once they are all there, they stay: no need to look again
# Toolbox groups in the order of the workflow (the Toolbox sorts groups by name).
STEP_GROUPS = {
    "listsentinel2products": "1 Search and select", "selectnecessarycoverageitems": "1 Search and select",
    "downloadstacksentinel2": "2 Download and stack", "mergesentinel2orbits": "2 Download and stack",
    "computecloudprob": "3 Cloud and shadow", "computeshadowprob": "3 Cloud and shadow",
    "computecloudshadowprob": "3 Cloud and shadow", "mergecloudmaskssimple": "3 Cloud and shadow",
    "preprocesss2": "4 Workflows", "improvecloudmask": "4 Workflows", "preprocesss2improvedmasks": "4 Workflows",
    "installdependencies": "5 Setup", "checkdependencies": "5 Setup",
}
WORKFLOWS_GROUP = "4 Workflows"


def plugin_metadata(key: str) -> str:
    """A value of metadata.txt's [general] section ('' when absent)."""
    for line in (PLUGIN_DIR / "metadata.txt").read_text(encoding="utf-8").splitlines():
        if line.startswith(f"{key}="):
            return line.split("=", 1)[1].strip()
    return ""


class S2MasksAlgorithm(QgsProcessingAlgorithm):
    NAME = ""  # algorithm id, the FarmVibes op name without underscores
    DISPLAY_NAME = ""
    DESCRIPTION = ""  # one paragraph; parameter lines are appended to it
    HELP_SECTION = ""  # the README heading that documents it (default: DISPLAY_NAME)
    NEEDS_PACKAGES = True  # False for the algorithms that install and check the packages
    AREA_REQUIRED = True  # with EXTENT and AREA: one of them must be given (checked before the run)

    def __init__(self):
        super().__init__()
        self._parameter_help = {}
        self._value_adapters = {}  # parameter -> function(value) -> value (add_value_adapter)

    # -- identity --------------------------------------------------------------------------
    def name(self):
        return self.NAME

    def displayName(self):  # noqa: N802
        return self.tr(self.DISPLAY_NAME)

    def group(self):
        return self.tr(STEP_GROUPS[self.NAME])

    def groupId(self):  # noqa: N802
        return STEP_GROUPS[self.NAME].lower().replace(" ", "")

    def icon(self):
        return QIcon(str(ICON_PATH))

    def createInstance(self):  # noqa: N802
        return type(self)()

    def tr(self, text):
        return QCoreApplication.translate("S2Masks", text)

    def helpUrl(self):  # noqa: N802
        """The README section for this algorithm, on the project's home page."""
        heading = self.HELP_SECTION or self.DISPLAY_NAME
        anchor = "".join(c for c in heading.lower() if c.isalnum() or c in " -").replace(" ", "-")
        return f"{plugin_metadata('homepage')}#{anchor}"

    def checkParameterValues(self, parameters, context):  # noqa: N802
        """Refuses to start, before any network call or write, when packages are missing: all of
        them are named at once, with the installer to run."""
        global _all_packages_present
        if self.NEEDS_PACKAGES and not _all_packages_present:
            needed = packages.missing()
            if needed:
                return False, packages.missing_message(needed)
            _all_packages_present = True
        try:
            parameters = self.adapted(parameters)
            inputs.validate_parameters(self, parameters, context)
        except QgsProcessingException as err:
            return False, str(err)
        return super().checkParameterValues(parameters, context)

    def prepareAlgorithm(self, parameters, context, feedback):  # noqa: N802
        """The same checks again where QGIS runs an algorithm without checkParameterValues (a
        model's steps, alg.run): a bad value still stops it before any request or write."""
        if not self.NEEDS_PACKAGES or _all_packages_present or not packages.missing():
            inputs.validate_parameters(self, self.adapted(parameters), context)
        return True

    # -- parameters and help ---------------------------------------------------------------
    def add_value_adapter(self, name, adapt):
        """`adapt(value)` turns a value of parameter `name` that earlier releases took into today's
        (such as a model given by its former number) before the checks, or raises
        QgsProcessingException saying what to do."""
        self._value_adapters[name] = adapt

    def adapted(self, parameters):
        """`parameters` with the values their adapters translate."""
        return {name: self._value_adapters[name](value) if name in self._value_adapters else value
                for name, value in parameters.items()}

    def add(self, parameter, help_text, advanced=False, decimals=None):
        """Adds a parameter together with its line of help."""
        if advanced:
            mark_advanced(parameter)
        if decimals is not None:  # how many decimals the Toolbox spin box shows
            parameter.setMetadata({"widget_wrapper": {"decimals": decimals}})
        self._parameter_help[parameter.name()] = help_text
        self.addParameter(parameter)
        return parameter

    def shortHelpString(self):  # noqa: N802
        # Plain lines: the Toolbox turns each into a paragraph, qgis_process prints them as they are.
        lines = [f"- {parameter.description()} ({parameter.name()}): {self.tr(self._parameter_help[parameter.name()])}"
                 for parameter in self.parameterDefinitions() if self._parameter_help.get(parameter.name())]
        if lines:
            lines = ["", self.tr("Parameters:")] + lines
        return "\n".join([self.tr(self.DESCRIPTION)] + lines)

    # -- raster inputs and outputs -----------------------------------------------------------
    def raster_source(self, parameters, key, context):
        """The file behind a raster layer parameter, or an error naming the parameter."""
        layer = self.parameterAsRasterLayer(parameters, key, context)
        if layer is None:
            raise QgsProcessingException(self.tr("Could not open the raster given as {}.").format(key))
        return layer.source()

    def tif_destination(self, parameters, key, context):
        """A raster destination's path; core/ writes GeoTIFF only, so other formats are refused."""
        path = Path(self.parameterAsOutputLayer(parameters, key, context))
        if path.suffix.lower() not in (".tif", ".tiff"):
            raise QgsProcessingException(self.tr("Write {} as GeoTIFF (.tif), not {}.").format(
                key, path.suffix or self.tr("without extension")))
        return path

    # -- core access -----------------------------------------------------------------------
    def run_core(self, function, *args, **kwargs):
        """Calls into core/, turning its errors into messages the user can act on: a missing
        package becomes an install instruction."""
        check_shapely_geos()
        try:
            return function(*args, **kwargs)
        except ModuleNotFoundError as err:
            needed = packages.missing()
            message = packages.missing_message(needed) if needed else errors.missing_dependency_message(err.name)
            raise QgsProcessingException(message) from err
        except errors.Cancelled as err:
            raise QgsProcessingException(self.tr("Cancelled; nothing was written.")) from err
        except errors.S2MasksError as err:
            raise QgsProcessingException(str(err)) from err


class TifDestination(QgsProcessingParameterRasterDestination):
    """A raster output that offers GeoTIFF only, the one format core/ writes (QGIS would offer ~37)."""

    def supportedOutputRasterLayerExtensions(self):  # noqa: N802
        return ["tif"]

    def defaultFileExtension(self):  # noqa: N802
        return "tif"

    def createFileFilter(self):  # noqa: N802
        return "GeoTIFF (*.tif *.TIF)"

    def clone(self):
        optional = bool(self.flags() & FLAG_OPTIONAL)
        return copy_definition(self, TifDestination(self.name(), self.description(), self.defaultValue(), optional,
                                                    self.createByDefault()))


def progress_reporter(feedback: QgsProcessingFeedback, start: float = 0.0,
                      share: float = 1.0) -> Callable[[float, str], None]:
    """A core progress callback, (fraction, message), for `feedback`: the bar moves from `start`
    over `share` of it; a message reaches the log only when it changes (QGIS's dialog and
    qgis_process add every progress text to the log as a line of its own)."""
    shown = []

    def report(fraction, message):
        feedback.setProgress(100.0 * (start + share * fraction))
        if shown[-1:] != [message]:
            shown.append(message)
            feedback.setProgressText(message)

    return report


def run_child(child_id, parameters, context, feedback, **extra):
    """Runs a child algorithm of a composite. It gets every parent parameter it defines under
    the same name (empty ones left out, so its defaults apply), then `extra`, which wins (for
    the names a child uses differently, such as a sink of the parent that is a source of the child).
    The log gets one line when it ends, not its whole results dictionary."""
    from qgis.core import QgsApplication

    child = QgsApplication.processingRegistry().createAlgorithmById(child_id)
    names = {definition.name() for definition in child.parameterDefinitions()}
    values = {key: value for key, value in parameters.items() if key in names and value not in (None, "")}
    values.update(extra)
    ok, message = child.checkParameterValues(values, context)
    if not ok:
        raise QgsProcessingException(message)
    results, ok = child.run(values, context, feedback, {}, False)
    if not ok:
        raise QgsProcessingException(QCoreApplication.translate("S2Masks", "{} failed.").format(child.displayName()))
    feedback.pushInfo(QCoreApplication.translate("S2Masks", "{} finished.").format(child.displayName()))
    return results


def check_shapely_geos():
    """Refuses a shapely whose GEOS differs from QGIS's.

    A shapely wheel from PyPI bundles its own GEOS. On Linux one process has one set of GEOS
    symbols, so inside QGIS they resolve to QGIS's GEOS, and a different version silently
    returns empty or wrong geometry. Windows and macOS resolve each library's symbols apart,
    so there only shapely 2 is required. Without shapely there is nothing to check: the code
    that needs it names the package.
    """
    shapely = sys.modules.get("shapely")
    if shapely is None:
        try:
            import shapely
        except ImportError:
            return
    if not hasattr(shapely, "union_all"):
        raise QgsProcessingException(
            f"shapely {shapely.__version__} is too old; this plugin needs shapely 2. Install it with "
            "python3 -m pip install --no-binary shapely 'shapely>=2' (needs the GEOS headers, e.g. libgeos-dev), "
            "or use your distribution's python3-shapely if it is version 2."
        )
    qgis_geos = (Qgis.geosVersionMajor(), Qgis.geosVersionMinor())
    if sys.platform.startswith("linux") and tuple(shapely.geos_version[:2]) != qgis_geos:
        raise QgsProcessingException(
            f"The installed shapely {shapely.__version__} uses GEOS "
            f"{'.'.join(map(str, shapely.geos_version))} but QGIS uses GEOS {Qgis.geosVersion()}; mixing "
            "two GEOS versions in one process gives wrong geometry. Install shapely built for QGIS's "
            f"GEOS: remove shapely from {packages.profile_prefix()} and run 'Install dependencies', which "
            "picks the matching wheel; or your distribution's python3-shapely; or "
            "python3 -m pip install --no-binary shapely 'shapely>=2' (needs the GEOS headers, e.g. libgeos-dev)."
        )
