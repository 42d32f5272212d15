"""`make demo`: the plugin's steps, run through QGIS Processing exactly as the Toolbox runs
them, offline against the loopback Planetary Computer double (real recorded STAC items and
COGs cut from a real L2A scene).

1. Search and selection: list the products over an area near 81 N that straddles UTM zones
   46 and 47, and select the fewest tiles per acquisition.
2. The whole workflow 'Preprocess Sentinel-2 with improved masks' over an area in Ireland on
   the embedded real scene of 2022-10-05: list -> select -> download and stack -> cloud and
   shadow probability (default model, ukis-csmask) -> merged, improved mask; print the
   statistics table and render a PNG montage (true colour | product mask | improved mask |
   classes, one row per date) with the styles the plugin writes.
"""

import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
REPO = Path(__file__).resolve().parent.parent
PLUGIN_PATH = REPO / ".build" / "plugins"
OUTPUT_DIR = REPO / "demo-output"
AREA = "93.254,95.073,80.933,82.313 [EPSG:4326]"  # xmin,xmax,ymin,ymax
DATES = ("2024-04-01", "2024-04-30")
SCENE_AREA = "-8.74,-8.62,53.09,53.16 [EPSG:4326]"  # about 8 km x 8 km near Athenry, Ireland
SCENE_DATES = ("2022-10-01", "2022-10-10")


def start_qgis():
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    sys.path.append(os.path.join(QgsApplication.pkgDataPath(), "python", "plugins"))
    from processing.core.Processing import Processing

    Processing.initialize()
    return app


def link_plugin():
    PLUGIN_PATH.mkdir(parents=True, exist_ok=True)
    link = PLUGIN_PATH / "s2masks"
    if not link.is_symlink():
        link.symlink_to(REPO, target_is_directory=True)
    sys.path.insert(0, str(PLUGIN_PATH))
    sys.path.insert(0, str(REPO / "tests"))


def print_table(title, layer, extra=(), order_by="mgrs_tile"):
    from qgis.core import QgsFeatureRequest

    columns = ("datetime", "mgrs_tile", "epsg", "baseline", "cloud_cover", "area_cover") + tuple(extra)
    print(f"\n{title}: {layer.featureCount()}")
    print("  " + "  ".join(f"{c:>27}" if c == "datetime" else f"{c:>11}" for c in columns))
    request = QgsFeatureRequest().addOrderBy(order_by)
    for feature in layer.getFeatures(request):
        cells = []
        for column in columns:
            value = feature[column]
            cells.append(f"{value:>27}" if column == "datetime" else
                         f"{value:>11.3f}" if isinstance(value, float) else f"{value!s:>11}")
        print("  " + "  ".join(cells))


def search_and_select(processing, double, footprints_path, selected_path):
    from qgis.core import QgsVectorLayer

    print(f"\n1. Search and selection over {AREA}, {DATES[0]} .. {DATES[1]}")
    listed = processing.run("s2masks:listsentinel2products", {
        "EXTENT": AREA, "START_DATE": DATES[0], "END_DATE": DATES[1], "STAC_URL": double.url,
        "OUTPUT": str(footprints_path)})
    selected = processing.run("s2masks:selectnecessarycoverageitems", {
        "FOOTPRINTS": listed["OUTPUT"], "EXTENT": AREA, "MIN_TILE_COVER": 0.99, "OUTPUT": str(selected_path)})
    found, chosen = QgsVectorLayer(str(footprints_path)), QgsVectorLayer(str(selected_path))
    print_table("Products found", found)
    print_table("Tiles selected (fewest covering >= 99% of the area)", chosen, ("pass_order", "pass_cover"),
                "pass_order")
    print(f"\nAcquisitions kept: {selected['ACQUISITIONS']}, dropped: {selected['DROPPED']}")
    print(f"Layers written: {footprints_path}, {selected_path}")
    del found, chosen


def improved_masks(processing, double):
    """The whole workflow, as the Toolbox runs it; returns its results."""
    import csv

    print(f"\n2. Preprocess Sentinel-2 with improved masks over {SCENE_AREA}, {SCENE_DATES[0]} .. {SCENE_DATES[1]}")
    folder = OUTPUT_DIR / "improved"
    result = processing.run("s2masks:preprocesss2improvedmasks", {
        "EXTENT": SCENE_AREA, "START_DATE": SCENE_DATES[0], "END_DATE": SCENE_DATES[1], "STAC_URL": double.url,
        "CACHE_FOLDER": str(OUTPUT_DIR / "cache"), "OUTPUT_FOLDER": str(folder),
        "FOOTPRINTS": str(folder / "footprints.gpkg"), "STATISTICS": str(folder / "statistics.gpkg")})
    print(f"  bytes downloaded from the double: {double.total_bytes_served():,}")
    print(f"  outputs in {folder}:")
    for name in sorted(path.name for path in folder.glob("*.tif")):
        print(f"    {name}")
    with open(result["STATISTICS_CSV"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = ("date", "tiles", "pct_clear", "pct_cloud", "pct_shadow", "pct_nodata", "pct_product_masked")
    print(f"\nStatistics per acquisition ({result['STATISTICS_CSV']}):")
    print("  " + "  ".join(f"{c:>20}" if c == "date" else f"{c:>18}" for c in columns))
    for row in rows:
        print("  " + "  ".join(f"{row[c]:>20}" if c == "date" else f"{row[c]:>18}" for c in columns))
    return result


PANELS = ("true colour", "product mask (SCL)", "improved mask", "classes: cloud / shadow")


def render_montage(rows, target, size=360):
    """One row per acquisition: the rasters side by side, rendered by QGIS with the plugin's styles."""
    from qgis.core import QgsMapRendererSequentialJob, QgsMapSettings, QgsRasterLayer
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor, QImage, QPainter

    header, gap = 24, 10
    montage = QImage(len(PANELS) * (size + gap) - gap, len(rows) * (size + header + gap), QImage.Format.Format_RGB32)
    montage.fill(QColor(255, 255, 255))
    painter = QPainter(montage)
    for row_index, (label, paths) in enumerate(rows):
        top = row_index * (size + header + gap)
        for column, (path, title) in enumerate(zip(paths, PANELS)):
            layer = QgsRasterLayer(path, Path(path).stem)
            settings = QgsMapSettings()
            settings.setLayers([layer])
            settings.setDestinationCrs(layer.crs())
            settings.setExtent(layer.extent())
            settings.setOutputSize(QSize(size, size))
            settings.setBackgroundColor(QColor(255, 255, 255))
            job = QgsMapRendererSequentialJob(settings)
            job.start()
            job.waitForFinished()
            painter.drawImage(column * (size + gap), top + header, job.renderedImage())
            painter.drawRect(column * (size + gap), top + header, size - 1, size - 1)
            painter.drawText(column * (size + gap) + 4, top + 17, f"{label}: {title}" if column == 0 else title)
            del layer
    painter.end()
    montage.save(str(target))
    return target


def main():
    link_plugin()
    app = start_qgis()
    # planetary-computer 1.0 uses pydantic's v1-style config (set after QGIS, which resets filters)
    warnings.filterwarnings("ignore", message="Support for class-based `config`")
    import processing
    from pc_server import PlanetaryComputerDouble

    import s2masks

    plugin = s2masks.classFactory(None)
    plugin.initProcessing()
    OUTPUT_DIR.mkdir(exist_ok=True)
    footprints_path, selected_path = OUTPUT_DIR / "footprints.gpkg", OUTPUT_DIR / "selected.gpkg"
    with PlanetaryComputerDouble() as double:
        print(f"Offline Planetary Computer double at {double.url} (real recorded items, real pixels)")
        search_and_select(processing, double, footprints_path, selected_path)
        result = improved_masks(processing, double)
    rows = [(Path(raster).stem[4:12], [raster, product, mask, classes]) for raster, product, mask, classes in
            zip(result["RASTERS"], result["PRODUCT_MASKS"], result["MASKS"], result["CLASSES"])]
    montage = render_montage(rows, OUTPUT_DIR / "improved" / "montage.png")
    print(f"\nMontage (true colour | product mask | improved mask | cloud/shadow classes, one row per date): "
          f"{montage}")
    print("\nSame against the live Planetary Computer (needs internet), for your own area and dates\n"
          "(on Debian's QGIS 3.22 call /usr/bin/qgis_process.bin):\n"
          "  qgis_process run s2masks:preprocesss2improvedmasks -- EXTENT='5.0,5.2,52.0,52.1 [EPSG:4326]' "
          "START_DATE=2024-06-01 END_DATE=2024-06-30 MAX_CLOUD_COVER=60 OUTPUT_FOLDER=s2 "
          "FOOTPRINTS=s2/used.gpkg STATISTICS=s2/statistics.gpkg")
    plugin.unload()
    app.exitQgis()


if __name__ == "__main__":
    main()
