"""Download and stack, Merge orbits and the Preprocess workflow, run as a user runs them."""

from pathlib import Path

import numpy as np
import pytest
import rasterio
from qgis.core import QgsProcessingContext, QgsProcessingException, QgsProcessingFeedback, QgsVectorLayer
from shapely.geometry import box
from stack_helpers import FIXTURE_ID, split_two_zones

from s2masks.core import grid as grids
from s2masks.core import records, stack

AREA = "-8.74,-8.62,53.09,53.16 [EPSG:4326]"  # xmin,xmax,ymin,ymax, inside the T29UNU fixture


def run(algorithm, parameters, feedback=None):
    import processing

    context = QgsProcessingContext()
    return processing.run(f"s2masks:{algorithm}", parameters, context=context,
                          feedback=feedback or QgsProcessingFeedback()), context


def test_preprocess_writes_raster_mask_styles_and_footprints(s2masks_provider, pc_double, tmp_path):
    result, context = run("preprocesss2", {
        "EXTENT": AREA, "START_DATE": "2022-10-01", "END_DATE": "2022-10-10", "STAC_URL": pc_double.url,
        "CACHE_FOLDER": str(tmp_path / "cache"), "OUTPUT_FOLDER": str(tmp_path / "out"),
        "FOOTPRINTS": str(tmp_path / "selected.gpkg")})
    assert result["COUNT"] == 1
    raster, mask = Path(result["RASTERS"][0]), Path(result["MASKS"][0])
    assert raster.name == "S2A_20221005T115411_R023.tif" and mask.name == "S2A_20221005T115411_R023_mask.tif"
    assert raster.with_suffix(".qml").exists() and Path(str(mask)[:-4] + ".qml").exists()
    with rasterio.open(raster) as src:
        assert src.count == 12 and src.crs.to_epsg() == 32629
        reflectance = src.read(4).astype(float) * src.scales[3]
        assert 0.0 < np.median(reflectance) < 0.5  # red reflectance of an Irish scene
    footprints = QgsVectorLayer(result["FOOTPRINTS"])
    assert [f["item_id"] for f in footprints.getFeatures()] == [FIXTURE_ID]
    del footprints
    layers = context.layersToLoadOnCompletion()
    assert {str(raster), str(mask)} <= set(layers)


def test_preprocess_with_no_acquisition_warns(s2masks_provider, pc_double, tmp_path):
    class Recording(QgsProcessingFeedback):
        warnings = []

        def pushWarning(self, text):  # noqa: N802
            self.warnings.append(text)

    feedback = Recording()
    result, _ = run("preprocesss2", {
        "EXTENT": AREA, "START_DATE": "2022-11-01", "END_DATE": "2022-11-10", "STAC_URL": pc_double.url,
        "OUTPUT_FOLDER": str(tmp_path / "out"), "FOOTPRINTS": "memory:"}, feedback)
    assert result["COUNT"] == 0 and result["RASTERS"] == []
    assert any("nothing to download" in w for w in feedback.warnings)


def test_download_a_single_item_by_url(s2masks_provider, pc_double, tmp_path):
    url = f"{pc_double.url}/collections/sentinel-2-l2a/items/{FIXTURE_ID}"
    result, _ = run("downloadstacksentinel2", {"ITEM": url, "EXTENT": AREA, "CACHE_FOLDER": str(tmp_path / "c"),
                                               "OUTPUT_FOLDER": str(tmp_path / "out")})
    assert result["COUNT"] == 1 and Path(result["RASTERS"][0]).exists()


def test_download_into_an_unwritable_folder(s2masks_provider, pc_double, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    url = f"{pc_double.url}/collections/sentinel-2-l2a/items/{FIXTURE_ID}"
    with pytest.raises(QgsProcessingException, match="Cannot write to the output folder"):
        run("downloadstacksentinel2", {"ITEM": url, "EXTENT": AREA, "OUTPUT_FOLDER": str(blocker / "out"),
                                       "CACHE_FOLDER": str(tmp_path / "c")})


def test_download_cancelled_writes_nothing(s2masks_provider, pc_double, tmp_path):
    feedback = QgsProcessingFeedback()
    feedback.cancel()
    url = f"{pc_double.url}/collections/sentinel-2-l2a/items/{FIXTURE_ID}"
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        run("downloadstacksentinel2", {"ITEM": url, "EXTENT": AREA, "OUTPUT_FOLDER": str(tmp_path / "out"),
                                       "CACHE_FOLDER": str(tmp_path / "c")}, feedback)
    assert not list((tmp_path / "out").glob("*.tif"))


def test_merge_orbits_matches_the_direct_mosaic(s2masks_provider, pc_double, tmp_path):
    west, east = (records.parse_item(i) for i in split_two_zones(pc_double, tmp_path / "split", 0.7, 0.5))
    area = box(-8.74, 53.09, -8.62, 53.16)
    grid = grids.output_grid(area)
    options = stack.StackOptions(cache_dir=tmp_path / "cache")
    parts = [stack.stack_acquisition([tile], area, grid, tmp_path / f"{name}.tif", tmp_path / f"{name}_m.tif", options)
             for name, tile in (("west", west), ("east", east))]
    direct = stack.stack_acquisition([west, east], area, grid, tmp_path / "direct.tif", tmp_path / "direct_m.tif",
                                     options)
    result, _ = run("mergesentinel2orbits", {
        "RASTERS": [str(p.raster) for p in parts], "MASKS": [str(p.mask) for p in parts],
        "OUTPUT": str(tmp_path / "merged.tif"), "OUTPUT_MASK": str(tmp_path / "merged_mask.tif")})
    with rasterio.open(result["OUTPUT"]) as merged, rasterio.open(direct.raster) as expected:
        assert merged.transform == expected.transform and merged.shape == expected.shape
        got, want = merged.read(), expected.read()
    assert (got > 0).all()
    assert (got == want).all(axis=0).mean() > 0.995  # same pixels but for a few edge columns
    with rasterio.open(result["OUTPUT_MASK"]) as merged_mask, rasterio.open(direct.mask) as expected_mask:
        assert (merged_mask.read(1) == expected_mask.read(1)).mean() > 0.995


def test_merge_refuses_mismatched_inputs(s2masks_provider, tmp_path):
    with pytest.raises(QgsProcessingException):
        run("mergesentinel2orbits", {"RASTERS": [], "MASKS": [], "OUTPUT": str(tmp_path / "m.tif"),
                                     "OUTPUT_MASK": str(tmp_path / "mm.tif")})
