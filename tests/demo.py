"""`make demo`: the plugin's steps, run through QGIS Processing exactly as the Toolbox runs
them, offline against the loopback Planetary Computer double (real recorded STAC items and
COGs cut from a real L2A scene).

1. Search and selection: list the products over an area near 81 N that straddles UTM zones
   46 and 47, and select the fewest tiles per acquisition.
2. Preprocess (list -> select -> download and stack) an area in Ireland on the embedded real
   scene of 2022-10-05, compute cloud and shadow probabilities with the default model
   (ukis-csmask), and render a PNG quicklook (true colour | product mask | cloud probability |
   shadow probability) with the styles the plugin writes.
"""

import os
import sys
import warnings
from pathlib import Path

import numpy as np

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


def preprocess_scene(processing, double):
    import rasterio

    print(f"\n2. Preprocess Sentinel-2 over {SCENE_AREA}, {SCENE_DATES[0]} .. {SCENE_DATES[1]}")
    result = processing.run("s2masks:preprocesss2", {
        "EXTENT": SCENE_AREA, "START_DATE": SCENE_DATES[0], "END_DATE": SCENE_DATES[1], "STAC_URL": double.url,
        "CACHE_FOLDER": str(OUTPUT_DIR / "cache"), "OUTPUT_FOLDER": str(OUTPUT_DIR / "stacks"),
        "FOOTPRINTS": str(OUTPUT_DIR / "preprocess_footprints.gpkg")})
    for raster, mask in zip(result["RASTERS"], result["MASKS"]):
        with rasterio.open(raster) as src, rasterio.open(mask) as msk:
            codes = msk.read(1)
            shares = {name: (codes == code).mean() for code, name in
                      ((0, "clear"), (1, "opaque cloud"), (2, "cirrus"), (3, "invalid"), (4, "shadow"), (255, "nodata"))}
            print(f"  {raster}: {src.count} bands {src.width}x{src.height} px, {src.crs}, "
                  f"median red reflectance {np.median(src.read(4)) * src.scales[3]:.3f}")
            print("  product mask: " + ", ".join(f"{name} {share:.1%}" for name, share in shares.items()))
    print(f"  bytes downloaded from the double: {double.total_bytes_served():,}")
    return result["RASTERS"], result["MASKS"]


def probabilities(processing, raster):
    import rasterio

    stem = str(Path(raster).with_suffix(""))
    cloud = processing.run("s2masks:computecloudprob", {"INPUT": raster, "OUTPUT": stem + "_cloud.tif"})["OUTPUT"]
    shadow = processing.run("s2masks:computeshadowprob", {"INPUT": raster, "OUTPUT": stem + "_shadow.tif"})["OUTPUT"]
    with rasterio.open(cloud) as c, rasterio.open(shadow) as s:
        print(f"  cloud probability > 0.3: {(c.read(1) > 0.3).mean():.1%} of pixels; "
              f"shadow probability > 0.2: {(s.read(1) > 0.2).mean():.1%}")
    return cloud, shadow


def render_quicklook(paths, size=400):
    """The rasters side by side, rendered by QGIS with the .qml styles the plugin wrote."""
    from qgis.core import QgsMapRendererSequentialJob, QgsMapSettings, QgsRasterLayer
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor, QImage, QPainter

    images = []
    for path in paths:
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
        images.append(job.renderedImage())
        del layer
    montage = QImage(len(images) * (size + 10) - 10, size, QImage.Format_RGB32)
    montage.fill(QColor(255, 255, 255))
    painter = QPainter(montage)
    for index, image in enumerate(images):
        painter.drawImage(index * (size + 10), 0, image)
    painter.end()
    target = str(Path(paths[0]).with_suffix("")) + "_quicklook.png"
    montage.save(target)
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
        rasters, masks = preprocess_scene(processing, double)
    for raster, mask in zip(rasters, masks):
        cloud, shadow = probabilities(processing, raster)
        print(f"Quicklook (true colour | product mask | cloud | shadow): "
              f"{render_quicklook([raster, mask, cloud, shadow])}")
    print("\nSame against the live Planetary Computer (needs internet), for your own area and dates\n"
          "(on Debian's QGIS 3.22 call /usr/bin/qgis_process.bin):\n"
          "  qgis_process run s2masks:preprocesss2 -- EXTENT='5.0,5.2,52.0,52.1 [EPSG:4326]' "
          "START_DATE=2024-06-01 END_DATE=2024-06-30 MAX_CLOUD_COVER=60 OUTPUT_FOLDER=s2 FOOTPRINTS=s2/used.gpkg")
    plugin.unload()
    app.exitQgis()


if __name__ == "__main__":
    main()
