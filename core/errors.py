"""Exceptions raised by core/. Each message says what was wrong and what to do.

The Processing algorithms turn every one of these into a QgsProcessingException
with the same text, so the message is what the user reads.
"""


class S2MasksError(Exception):
    """Base class of every error this plugin raises on purpose."""


class InputError(S2MasksError, ValueError):
    """A parameter value that cannot work (empty area, reversed dates, ...)."""


class SearchError(S2MasksError):
    """The STAC API could not be queried (unreachable, HTTP error, bad reply)."""


class Cancelled(S2MasksError):
    """The user pressed Cancel; nothing was written."""


# Python module name -> (pip package, Debian package or None)
_INSTALL_HINTS = {
    "pystac_client": ("pystac-client", None),
    "pystac": ("pystac", None),
    "shapely": ("shapely", "python3-shapely"),
    "pyproj": ("pyproj", "python3-pyproj"),
    "rasterio": ("rasterio", "python3-rasterio"),
    "numpy": ("numpy<2", "python3-numpy"),
    "requests": ("requests", "python3-requests"),
    "onnxruntime": ("onnxruntime", None),
    "ukis_csmask": ("ukis-csmask", None),
    "scipy": ("scipy", "python3-scipy"),
}


def missing_dependency_message(module_name):
    """What to do when the Python package that provides `module_name` cannot be imported."""
    top = (module_name or "").split(".")[0]
    pip_name, apt_name = _INSTALL_HINTS.get(top, (top, None))
    lines = [
        f"The Python package '{pip_name}' cannot be imported in the Python that QGIS uses.",
        "Run the plugin's installer: Processing Toolbox > Sentinel-2 improved masks > 5 Setup > Install "
        "dependencies (or qgis_process run s2masks:installdependencies), then run this again.",
        f"By hand, with QGIS's Python: python3 -m pip install '{pip_name}'",
    ]
    if apt_name:
        lines.append(f"On Debian/Ubuntu you can also use: sudo apt install {apt_name}")
    lines.append("See the plugin README, 'Installing in QGIS'.")
    return "\n".join(lines)
