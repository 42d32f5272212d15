"""The small base class every algorithm of the plugin derives from.

It owns what is the same everywhere: ids and groups, the icon, `createInstance`, help text
built from one description plus one line per parameter (so the Toolbox help and
`qgis_process help` never drift from the parameters), and the mapping of core errors to
QgsProcessingException, a missing package included (core/ imports third-party packages only
where it uses them, so the plugin loads without them and a run names the one it lacks).
"""

import sys
from pathlib import Path

from qgis.core import Qgis, QgsProcessingAlgorithm, QgsProcessingException
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from ..core import errors
from .compat import mark_advanced

ICON_PATH = Path(__file__).resolve().parent.parent / "resources" / "icon.svg"


class S2MasksAlgorithm(QgsProcessingAlgorithm):
    NAME = ""  # algorithm id, the FarmVibes op name without underscores
    DISPLAY_NAME = ""
    GROUP = "Sentinel-2 steps"
    DESCRIPTION = ""  # one paragraph; parameter lines are appended to it

    def __init__(self):
        super().__init__()
        self._parameter_help = {}

    # -- identity --------------------------------------------------------------------------
    def name(self):
        return self.NAME

    def displayName(self):  # noqa: N802
        return self.tr(self.DISPLAY_NAME)

    def group(self):
        return self.tr(self.GROUP)

    def groupId(self):  # noqa: N802
        return self.GROUP.lower().replace(" ", "").replace("-", "")

    def icon(self):
        return QIcon(str(ICON_PATH))

    def createInstance(self):  # noqa: N802
        return type(self)()

    def tr(self, text):
        return QCoreApplication.translate("S2Masks", text)

    # -- parameters and help ---------------------------------------------------------------
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
        lines = [self.tr(self.DESCRIPTION), "", self.tr("Parameters:")]
        for parameter in self.parameterDefinitions():
            text = self._parameter_help.get(parameter.name())
            if text:
                lines.append(f"- {parameter.description()} ({parameter.name()}): {self.tr(text)}")
        return "\n".join(lines)

    # -- raster inputs and outputs -----------------------------------------------------------
    def raster_source(self, parameters, key, context):
        """The file behind a raster layer parameter, or an error naming the parameter."""
        layer = self.parameterAsRasterLayer(parameters, key, context)
        if layer is None:
            raise QgsProcessingException(f"Could not open the raster given as {key}.")
        return layer.source()

    def tif_destination(self, parameters, key, context):
        """A raster destination's path; core/ writes GeoTIFF only, so other formats are refused."""
        path = Path(self.parameterAsOutputLayer(parameters, key, context))
        if path.suffix.lower() not in (".tif", ".tiff"):
            raise QgsProcessingException(f"Write {key} as GeoTIFF (.tif), not {path.suffix or 'without extension'}.")
        return path

    # -- core access -----------------------------------------------------------------------
    def run_core(self, function, *args, **kwargs):
        """Calls into core/, turning its errors into messages the user can act on: a missing
        package becomes an install instruction."""
        check_shapely_geos()
        try:
            return function(*args, **kwargs)
        except ModuleNotFoundError as err:
            raise QgsProcessingException(errors.missing_dependency_message(err.name)) from err
        except errors.Cancelled as err:
            raise QgsProcessingException(self.tr("Cancelled; nothing was written.")) from err
        except errors.S2MasksError as err:
            raise QgsProcessingException(str(err)) from err


def run_child(child_id, parameters, context, feedback, **extra):
    """Runs a child algorithm of a composite. It gets every parent parameter it defines under
    the same name (empty ones left out, so its defaults apply), then `extra`, which wins (for
    the names a child uses differently, such as a sink of the parent that is a source of the child)."""
    import processing
    from qgis.core import QgsApplication

    child = QgsApplication.processingRegistry().algorithmById(child_id)
    names = {definition.name() for definition in child.parameterDefinitions()}
    values = {key: value for key, value in parameters.items() if key in names and value not in (None, "")}
    values.update(extra)
    return processing.run(child_id, values, context=context, feedback=feedback, is_child_algorithm=True)


def check_shapely_geos():
    """Refuses a shapely whose GEOS differs from QGIS's.

    A shapely wheel from PyPI bundles its own GEOS; inside QGIS the symbols resolve to
    QGIS's GEOS instead, and a different version silently returns empty or wrong geometry.
    Without shapely there is nothing to check: the code that needs it names the package.
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
    if tuple(shapely.geos_version[:2]) != qgis_geos:
        raise QgsProcessingException(
            f"The installed shapely {shapely.__version__} uses GEOS "
            f"{'.'.join(map(str, shapely.geos_version))} but QGIS uses GEOS {Qgis.geosVersion()}; mixing "
            "two GEOS versions in one process gives wrong geometry. Install shapely built against "
            "QGIS's GEOS: your distribution's package (python3-shapely, OSGeo4W or conda shapely), or "
            "python3 -m pip install --no-binary shapely 'shapely>=2' (needs the GEOS headers, e.g. libgeos-dev)."
        )
