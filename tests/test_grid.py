"""One output grid for one area, whichever way the area comes in: the core API, the Toolbox
(processing.run) and qgis_process. An extent drawn on the 10 m grid lines gives exactly its pixels."""

import subprocess

import pytest
import rasterio
import shapely
from rasterio.warp import transform_geom
from stack_helpers import FIXTURE_ID

from s2masks.core import grid as grids

# 4 km x 4 km on 10 m grid lines inside the 12 km T29UNU fixture (EPSG:32629)
EXTENT = (517000.0, 5884000.0, 521000.0, 5888000.0)
EXTENT_PARAMETER = "517000,521000,5884000,5888000 [EPSG:32629]"  # xmin,xmax,ymin,ymax


def wgs84(extent):
    return shapely.geometry.shape(transform_geom("EPSG:32629", "EPSG:4326",
                                                 shapely.geometry.mapping(shapely.box(*extent))))


def grid_of(path):
    with rasterio.open(path) as raster:
        return raster.crs.to_epsg(), tuple(raster.transform)[:6], raster.width, raster.height


@pytest.mark.parametrize("extent, size", [
    (EXTENT, (400, 400)),
    ((399960.0, 5790240.0, 509760.0, 5900040.0), (10980, 10980)),  # a whole Sentinel-2 tile (T29UNU)
    ((449860.0, 5840140.0, 459860.0, 5850140.0), (1000, 1000)),
])
def test_an_extent_on_grid_lines_gives_exactly_its_pixels(extent, size):
    grid = grids.output_grid(wgs84(extent), "EPSG:32629")
    assert (grid.width, grid.height) == size
    assert (grid.transform.c, grid.transform.f) == (extent[0], extent[3])


def test_millimetres_off_the_grid_lines_snap_onto_them():
    """QGIS writes the area's GeoJSON with 8 decimals (about a millimetre); that adds no column."""
    rounded = shapely.set_precision(wgs84(EXTENT), 1e-8)
    assert rounded != wgs84(EXTENT)
    grid = grids.output_grid(rounded, "EPSG:32629")
    assert (grid.width, grid.height, grid.transform.c, grid.transform.f) == (400, 400, EXTENT[0], EXTENT[3])


def test_an_edge_a_centimetre_past_a_line_takes_the_next_pixel():
    left, bottom, right, top = EXTENT
    grid = grids.output_grid(wgs84((left - 0.05, bottom, right + 0.05, top)), "EPSG:32629")
    assert (grid.width, grid.height) == (402, 400)


def _core_grid():
    grid = grids.output_grid(wgs84(EXTENT), "EPSG:32629")
    return 32629, tuple(grid.transform)[:6], grid.width, grid.height


def test_toolbox_and_core_api_make_one_grid(s2masks_provider, pc_double, tmp_path):
    import processing
    from qgis.core import QgsProcessingContext, QgsProcessingFeedback

    url = f"{pc_double.url}/collections/sentinel-2-l2a/items/{FIXTURE_ID}"
    result = processing.run("s2masks:downloadstacksentinel2", {
        "ITEM": url, "EXTENT": EXTENT_PARAMETER, "CACHE_FOLDER": str(tmp_path / "c"),
        "OUTPUT_FOLDER": str(tmp_path / "out")}, context=QgsProcessingContext(), feedback=QgsProcessingFeedback())
    assert grid_of(result["RASTER"]) == grid_of(result["MASK"]) == _core_grid()


@pytest.mark.qgis_process
def test_qgis_process_and_core_api_make_one_grid(enabled_qgis_process_env, pc_double, tmp_path):
    url = f"{pc_double.url}/collections/sentinel-2-l2a/items/{FIXTURE_ID}"
    done = subprocess.run(["/usr/bin/qgis_process.bin", "run", "s2masks:downloadstacksentinel2", "--",
                           f"ITEM={url}", f"EXTENT={EXTENT_PARAMETER}", f"CACHE_FOLDER={tmp_path / 'c'}",
                           f"OUTPUT_FOLDER={tmp_path / 'out'}"], env=enabled_qgis_process_env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    rasters = sorted((tmp_path / "out").glob("*.tif"))
    assert [path.name.endswith("_mask.tif") for path in rasters] == [False, True]
    assert grid_of(rasters[0]) == grid_of(rasters[1]) == _core_grid()
