"""Check dependencies: which packages the plugin finds, and whether shapely and rasterio give the
same answers as QGIS's own GEOS and GDAL inside this very process."""

import sys
import tempfile
from pathlib import Path

from qgis.core import (
    QgsGeometry,
    QgsPointXY,
    QgsProcessingException,
    QgsProcessingOutputString,
    QgsRasterLayer,
    QgsRectangle,
)

from ..core import dependencies
from . import packages
from .base import S2MasksAlgorithm

_TOLERANCE = 1e-9


class CheckDependencies(S2MasksAlgorithm):
    NAME = "checkdependencies"
    DISPLAY_NAME = "Check dependencies"
    NEEDS_PACKAGES = False
    DESCRIPTION = (
        "Lists the Python packages the plugin needs with the versions QGIS's Python has, and checks "
        "inside QGIS that they work with QGIS's own libraries: shapely must repair, buffer and "
        "union polygons exactly as QGIS's GEOS does, and a GeoTIFF written by rasterio must read back "
        "in QGIS with the same pixels and CRS. Fails, saying what to do, when a package is missing "
        "or disagrees with QGIS. Writes nothing but a small temporary file."
    )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addOutput(QgsProcessingOutputString("REPORT", self.tr("Report")))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        lines = [f"QGIS's Python {sys.version.split()[0]} ({sys.platform}), GEOS {packages.geos_text()}, "
                 f"GDAL {'.'.join(map(str, packages.gdal_version() or ())) or 'unknown'}",
                 f"Plugin packages folder: {packages.profile_prefix()}"]
        for requirement in dependencies.read_requirements():
            installed = dependencies.installed_version(requirement.name) or "missing"
            lines.append(f"{requirement.name} {installed} (needs {requirement.minimum} or newer)")
        needed = packages.missing()
        problems = [packages.missing_message(needed)] if needed else []
        if not needed:
            for check in (_shapely_agrees_with_qgis, _rasterio_agrees_with_qgis):
                feedback.pushInfo(check.__doc__)
                problem = check()
                lines.append(f"{check.__doc__} {'no: ' + problem if problem else 'yes'}")
                if problem:
                    problems.append(problem)
        report = "\n".join(lines)
        for line in lines:
            feedback.pushInfo(line)
        if problems:
            raise QgsProcessingException("\n".join(problems))
        return {"REPORT": report}


def _shapely_agrees_with_qgis():
    """Does shapely give the same geometry as QGIS's GEOS?"""
    import shapely
    from shapely.geometry import Point, Polygon, box

    bow_tie = Polygon([(0, 0), (4, 4), (4, 0), (0, 4), (0, 0)])  # self-intersecting: make_valid splits it
    cases = [
        ("make_valid of a bow-tie", shapely.make_valid(bow_tie).area,
         QgsGeometry.fromWkt(bow_tie.wkt).makeValid().area()),
        ("buffer of a point", Point(0.5, 0.25).buffer(10, quad_segs=16).area,
         QgsGeometry.fromPointXY(QgsPointXY(0.5, 0.25)).buffer(10, 16).area()),
        ("union of two squares", shapely.union_all([box(0, 0, 2, 2), box(1, 1, 3, 3)]).area,
         QgsGeometry.unaryUnion([QgsGeometry.fromRect(QgsRectangle(0, 0, 2, 2)),
                                 QgsGeometry.fromRect(QgsRectangle(1, 1, 3, 3))]).area()),
    ]
    for name, ours, qgis in cases:
        if not qgis or abs(ours - qgis) > _TOLERANCE * abs(qgis):
            return (f"shapely {shapely.__version__} (GEOS {'.'.join(map(str, shapely.geos_version))}) gives "
                    f"area {ours} for the {name}, QGIS gives {qgis}. Install shapely built for QGIS's GEOS "
                    f"{packages.geos_text()}: run 'Install dependencies' after removing shapely from "
                    f"{packages.profile_prefix()}, or see the README.")
    return ""


def _rasterio_agrees_with_qgis():
    """Does a GeoTIFF written by rasterio read back the same in QGIS?"""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    values = (np.arange(64 * 48, dtype="uint16").reshape(48, 64) * 7) % 10000
    with tempfile.TemporaryDirectory(prefix="s2masks-check-") as folder:
        path = Path(folder) / "check.tif"
        profile = dict(driver="GTiff", width=64, height=48, count=1, dtype="uint16", crs="EPSG:32629",
                       transform=from_origin(500000, 5900000, 10, 10), tiled=True, blockxsize=32, blockysize=16,
                       compress="deflate")
        with rasterio.open(path, "w", **profile) as dataset:
            dataset.write(values, 1)
        layer = QgsRasterLayer(str(path), "check", "gdal")
        try:
            if not layer.isValid():
                return f"QGIS cannot open a GeoTIFF written by rasterio {rasterio.__version__}."
            block = layer.dataProvider().block(1, layer.extent(), 64, 48)
            read = np.frombuffer(bytes(block.data()), dtype="uint16").reshape(48, 64)
            crs = layer.crs().authid()
        finally:
            del layer
    if crs != "EPSG:32629" or not np.array_equal(read, values):
        return (f"A GeoTIFF written by rasterio {rasterio.__version__} (GDAL {rasterio.__gdal_version__}) reads "
                f"back differently in QGIS (CRS {crs or 'none'}). Install rasterio built for QGIS's GDAL "
                "(your distribution's python3-rasterio, OSGeo4W's, or conda's), see the README.")
    return ""
