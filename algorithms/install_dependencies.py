"""Install dependencies: pip installs the plugin's missing Python packages into the QGIS profile."""

import sys

from qgis.core import (
    QgsProcessingException,
    QgsProcessingOutputFolder,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
)

from ..core import dependencies
from . import packages
from .base import S2MasksAlgorithm


class InstallDependencies(S2MasksAlgorithm):
    NAME = "installdependencies"
    DISPLAY_NAME = "Install dependencies"
    NEEDS_PACKAGES = False
    DESCRIPTION = (
        "Installs the Python packages the plugin needs and this QGIS's Python lacks (or has too old), "
        "all at once, with QGIS's own Python and pip, into a folder of the current QGIS profile "
        "(python/dependencies/s2masks/python3.X): never into QGIS's own packages, kept across plugin "
        "upgrades, one per profile. Every compiled package QGIS's Python already has (numpy, GDAL, "
        "pyproj, ...) is pinned, so pip never replaces it; on Linux shapely and rasterio come in the "
        "version built for QGIS's own GEOS and GDAL. pip's output is shown in the log. Needs internet "
        "access to the Python Package Index (about 260 MB for everything). Run 'Check dependencies' "
        "afterwards to see that the packages work together with QGIS."
    )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add(QgsProcessingParameterBoolean("DASK", self.tr("Also install Dask (optional)"), defaultValue=False),
                 "Also installs the optional package 'distributed' (Dask's scheduler and workers, about 9 MB), "
                 "which the workflows' EXECUTOR needs to run acquisitions in parallel on a local Dask cluster or "
                 "on a Dask scheduler your team runs. Not needed otherwise.")
        self.addOutput(QgsProcessingOutputFolder("FOLDER", self.tr("Folder of the plugin's packages")))
        self.addOutput(QgsProcessingOutputString("INSTALLED", self.tr("Packages installed")))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        prefix = packages.profile_prefix()
        optional = self.parameterAsBoolean(parameters, "DASK", context)
        needed = packages.missing(optional)
        if not needed:
            feedback.pushInfo(self.tr("Every package the plugin needs is already there; nothing to install."))
            return {"FOLDER": str(prefix), "INSTALLED": ""}
        feedback.pushInfo(self.tr("Missing or too old:"))
        for entry in needed:
            feedback.pushInfo(f"  {entry.describe()}")
        try:
            specs = dependencies.install_specs(needed, library_versions=packages.library_versions())
            python = dependencies.find_python()
            if dependencies.pip_version(python) is None:
                raise dependencies.DependencyError(dependencies.no_pip_message(python))
            feedback.pushInfo(self.tr("Installing into {} with {}").format(prefix, python))
            dependencies.install(specs, prefix, python, log=feedback.pushConsoleInfo, cancelled=feedback.isCanceled)
        except dependencies.DependencyError as err:
            raise QgsProcessingException(str(err)) from err
        still = packages.missing(optional)
        if still:
            raise QgsProcessingException(
                self.tr("pip finished, but these are still missing: {}. See pip's output above.").format(
                    ", ".join(entry.describe() for entry in still)))
        loaded = [e.requirement.name for e in needed if e.requirement.name.replace("-", "_") in sys.modules]
        feedback.setProgress(100)
        feedback.pushInfo(self.tr("Installed: {}.").format(", ".join(specs)))
        if loaded:  # an older copy is already imported in this QGIS session
            feedback.pushWarning(self.tr("Restart QGIS to use the new {}.").format(", ".join(loaded)))
        else:
            feedback.pushInfo(self.tr("The plugin can use them now, without restarting QGIS."))
        return {"FOLDER": str(prefix), "INSTALLED": ", ".join(specs)}
