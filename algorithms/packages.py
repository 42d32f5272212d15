"""The plugin's Python packages as seen from QGIS: the profile folder they go to, the GEOS and
GDAL versions QGIS runs with, and the message that says what is missing. The work itself is in
core/dependencies.py, which knows nothing of QGIS."""

import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from qgis.core import Qgis, QgsApplication
from qgis.PyQt.QtCore import QCoreApplication

from ..core import dependencies


def profile_prefix() -> Path:
    """Where this QGIS profile keeps the plugin's packages (kept across plugin upgrades)."""
    return dependencies.prefix_for(Path(QgsApplication.qgisSettingsDirPath()))


def activate() -> List[str]:
    """Puts the profile's package folder on sys.path; called when the plugin loads."""
    return dependencies.activate(profile_prefix())


def gdal_version() -> Optional[Tuple[int, int]]:
    """The GDAL QGIS runs with, through its own Python bindings (None when they are absent)."""
    try:
        from osgeo import gdal
    except ImportError:
        return None
    return dependencies.version_tuple(gdal.__version__)[:2]


def library_versions() -> Dict[str, Tuple[int, int]]:
    """QGIS's GEOS and GDAL (major, minor), keyed by the package that must match them."""
    versions = {"shapely": (Qgis.geosVersionMajor(), Qgis.geosVersionMinor())}
    gdal = gdal_version()
    if gdal:
        versions["rasterio"] = gdal
    return versions


def missing(optional: bool = False) -> List[dependencies.Missing]:
    """The plugin's requirements (with `optional`, also the optional ones) this QGIS's Python does not meet."""
    requirements = dependencies.read_requirements()
    if optional:
        requirements += dependencies.read_requirements(dependencies.OPTIONAL_REQUIREMENTS_FILE)
    return dependencies.missing(requirements)


def missing_message(needed: List[dependencies.Missing]) -> str:
    """All missing packages at once, and the one thing to do about it."""
    lines = [_tr("This algorithm needs Python packages that QGIS's Python does not have:")]
    lines += [f"  - {entry.describe()}" for entry in needed]
    lines += [_tr("Install them into your QGIS profile with the plugin's installer: Plugins > Sentinel-2 improved "
                  "masks > Install dependencies, or Processing Toolbox > Sentinel-2 improved masks > 5 Setup > "
                  "Install dependencies (or run qgis_process run s2masks:installdependencies), then run this "
                  "again. The README's 'Installing in QGIS' section describes doing it by hand.")]
    return "\n".join(lines)


def _tr(text: str) -> str:
    return QCoreApplication.translate("S2Masks", text)


def geos_text() -> str:
    """QGIS's GEOS version as text, e.g. 3.11.1."""
    return re.sub(r"-CAPI.*", "", Qgis.geosVersion())
