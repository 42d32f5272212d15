"""`make demo`: the plugin's steps, run through QGIS Processing exactly as the Toolbox runs
them, offline against the loopback Planetary Computer double serving real recorded items.

For now: list Sentinel-2 products for an area near 81 N that straddles UTM zones 46 and 47,
then select the tiles needed per acquisition, and print both.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
REPO = Path(__file__).resolve().parent.parent
PLUGIN_PATH = REPO / ".build" / "plugins"
OUTPUT_DIR = REPO / "demo-output"
AREA = "93.254,95.073,80.933,82.313 [EPSG:4326]"  # xmin,xmax,ymin,ymax
DATES = ("2024-04-01", "2024-04-30")


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


def main():
    link_plugin()
    app = start_qgis()
    import processing
    from pc_server import PlanetaryComputerDouble
    from qgis.core import QgsVectorLayer

    import s2masks

    plugin = s2masks.classFactory(None)
    plugin.initProcessing()
    OUTPUT_DIR.mkdir(exist_ok=True)
    footprints_path, selected_path = OUTPUT_DIR / "footprints.gpkg", OUTPUT_DIR / "selected.gpkg"
    with PlanetaryComputerDouble() as double:
        print(f"Offline Planetary Computer double at {double.url} (real recorded items)")
        print(f"Area {AREA}, dates {DATES[0]} .. {DATES[1]}")
        listed = processing.run("s2masks:listsentinel2products", {
            "EXTENT": AREA, "START_DATE": DATES[0], "END_DATE": DATES[1], "STAC_URL": double.url,
            "OUTPUT": str(footprints_path)})
        selected = processing.run("s2masks:selectnecessarycoverageitems", {
            "FOOTPRINTS": listed["OUTPUT"], "EXTENT": AREA, "MIN_TILE_COVER": 0.99,
            "OUTPUT": str(selected_path)})
    found, chosen = QgsVectorLayer(str(footprints_path)), QgsVectorLayer(str(selected_path))
    print_table("Products found", found)
    print_table("Tiles selected (fewest covering >= 99% of the area)", chosen, ("pass_order", "pass_cover"),
                "pass_order")
    print(f"\nAcquisitions kept: {selected['ACQUISITIONS']}, dropped: {selected['DROPPED']}")
    print(f"Layers written: {footprints_path}, {selected_path}")
    print("\nSame against the live Planetary Computer (needs internet), for your own area and dates\n"
          "(on Debian's QGIS 3.22 call /usr/bin/qgis_process.bin):\n"
          "  qgis_process run s2masks:listsentinel2products -- EXTENT='5.0,5.2,52.0,52.1 [EPSG:4326]' "
          "START_DATE=2024-06-01 END_DATE=2024-06-30 OUTPUT=footprints.gpkg")
    del found, chosen
    plugin.unload()
    app.exitQgis()


if __name__ == "__main__":
    main()
