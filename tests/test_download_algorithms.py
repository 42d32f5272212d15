"""Download and stack, Merge orbits and the Preprocess workflow, run as a user runs them."""

import copy
import shutil
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from qgis.core import (
    QgsApplication,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsRasterLayer,
    QgsVectorLayer,
)
from shapely.geometry import box
from stack_helpers import FIXTURE_ID, split_two_zones

from s2masks.core import grid as grids
from s2masks.core import merge, records, stack
from s2masks.core.errors import Cancelled

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


def test_download_logs_one_line_per_phase_while_the_bar_moves(s2masks_provider, pc_double, tmp_path,
                                                             progress_log):
    url = f"{pc_double.url}/collections/sentinel-2-l2a/items/{FIXTURE_ID}"
    feedback = progress_log
    run("downloadstacksentinel2", {"ITEM": url, "EXTENT": AREA, "CACHE_FOLDER": str(tmp_path / "c"),
                                   "OUTPUT_FOLDER": str(tmp_path / "out")}, feedback)
    assert feedback.texts == ["reading and resampling the bands", "writing the stack's COG", "writing the mask's COG"]
    assert len(set(feedback.values)) > 13 and feedback.values == sorted(feedback.values)


def test_download_into_an_unwritable_folder(s2masks_provider, pc_double, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    url = f"{pc_double.url}/collections/sentinel-2-l2a/items/{FIXTURE_ID}"
    with pytest.raises(QgsProcessingException, match=r"Output folder \(OUTPUT_FOLDER\): .*file is a file, not a folder"):
        run("downloadstacksentinel2", {"ITEM": url, "EXTENT": AREA, "OUTPUT_FOLDER": str(blocker / "out"),
                                       "CACHE_FOLDER": str(tmp_path / "c")})
    assert pc_double.requests == []  # refused before the item is fetched


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


def test_merge_compresses_once_and_reports_progress_to_one(stacked, tmp_path):
    """The mosaic goes to uncompressed blocks, compressed once into the COGs while progress moves on."""
    steps, created = [], []
    original = stack.IntermediateRaster.__init__

    def record(self, path, *args):
        created.append(Path(path).name)
        original(self, path, *args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stack.IntermediateRaster, "__init__", record)
        merge.merge_stacks([stacked.raster], [stacked.mask], tmp_path / "out" / "merged.tif",
                           tmp_path / "out" / "merged_mask.tif", progress=lambda *step: steps.append(step))
    assert created == ["raster.tif", "mask.tif"]
    fractions = [fraction for fraction, _ in steps]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert [f for f, message in steps if message == "mosaicking the inputs"][-1] == pytest.approx(merge.MERGE_SHARE)
    assert {message for fraction, message in steps if fraction > merge.MERGE_SHARE} == {
        "writing the stack's COG", "writing the mask's COG"}
    with rasterio.open(tmp_path / "out" / "merged.tif") as merged, rasterio.open(stacked.raster) as first:
        assert merged.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and (merged.read() == first.read()).all()


def test_merge_cancelled_while_writing_leaves_nothing(stacked, tmp_path):
    steps = []
    with pytest.raises(Cancelled):
        merge.merge_stacks([stacked.raster], [stacked.mask], tmp_path / "out" / "merged.tif",
                           tmp_path / "out" / "merged_mask.tif", progress=lambda *step: steps.append(step),
                           should_cancel=lambda: any(message.startswith("writing") for _, message in steps))
    assert steps[-1][1] == "writing the stack's COG"
    assert list((tmp_path / "out").iterdir()) == []


def test_merge_refuses_mismatched_inputs(s2masks_provider, tmp_path):
    with pytest.raises(QgsProcessingException):
        run("mergesentinel2orbits", {"RASTERS": [], "MASKS": [], "OUTPUT": str(tmp_path / "m.tif"),
                                     "OUTPUT_MASK": str(tmp_path / "mm.tif")})


def test_download_gives_the_first_date_as_one_raster_and_mask(s2masks_provider, tmp_path):
    """RASTER and MASK, which the Modeler can wire into a step taking one raster, are the first
    acquisition's in time order; RASTERS and MASKS still list every date."""
    import processing
    from pc_server import PlanetaryComputerDouble, load_recorded_items

    items = load_recorded_items()
    fixture = next(item for item in items if item["id"] == FIXTURE_ID)
    later = copy.deepcopy(fixture)  # the same pixels, sensed three days later
    later["id"] = FIXTURE_ID.replace("20221005T115411", "20221008T115411")
    later["properties"]["datetime"] = fixture["properties"]["datetime"].replace("2022-10-05", "2022-10-08")
    context, feedback = QgsProcessingContext(), QgsProcessingFeedback()  # one context: temporary layers
    with PlanetaryComputerDouble(items=items + [later]) as double:
        listed = processing.run("s2masks:listsentinel2products", {
            "EXTENT": AREA, "START_DATE": "2022-10-01", "END_DATE": "2022-10-10", "STAC_URL": double.url,
            "OUTPUT": "TEMPORARY_OUTPUT"}, context=context, feedback=feedback)
        # the layer lists the later date first: the outputs follow time, not the layer
        newest_first = processing.run("native:orderbyexpression", {
            "INPUT": listed["OUTPUT"], "EXPRESSION": '"datetime"', "ASCENDING": False, "OUTPUT": "TEMPORARY_OUTPUT"},
            context=context, feedback=feedback)["OUTPUT"]
        assert [f["item_id"] for f in newest_first.getFeatures()] == [later["id"], FIXTURE_ID]
        result = processing.run("s2masks:downloadstacksentinel2", {
            "FOOTPRINTS": newest_first, "EXTENT": AREA, "CACHE_FOLDER": str(tmp_path / "cache"),
            "OUTPUT_FOLDER": str(tmp_path / "out")}, context=context, feedback=feedback)
    assert result["COUNT"] == 2
    assert [Path(p).name for p in result["RASTERS"]] == ["S2A_20221005T115411_R023.tif", "S2A_20221008T115411_R023.tif"]
    assert result["RASTER"] == result["RASTERS"][0] and result["MASK"] == result["MASKS"][0]
    assert Path(result["MASK"]).name == "S2A_20221005T115411_R023_mask.tif"
    for path in (result["RASTER"], result["MASK"]):
        assert QgsRasterLayer(path, "output").isValid()
    algorithm = QgsApplication.processingRegistry().algorithmById("s2masks:downloadstacksentinel2")
    outputs = {output.name(): output.type() for output in algorithm.outputDefinitions()}
    assert outputs == {"RASTERS": "outputMultilayer", "MASKS": "outputMultilayer", "COUNT": "outputNumber",
                       "RASTER": "outputRaster", "MASK": "outputRaster", "OUTPUT_FOLDER": "outputFolder"}


@pytest.mark.parametrize("tags, name, dates", [
    ({"PRODUCTS": "S2A_MSIL2A_20221005T115411_R023_T29UNU_20221005T164454"}, "mosaic.tif", {date(2022, 10, 5)}),
    ({"PRODUCTS": "S2A_MSIL2A_20221005T115411_R023_T29UNU_20221005T164454"}, "S2A_20221015T115411_R023.tif",
     {date(2022, 10, 5)}),  # the products it was made from count, not a name given later
    ({"PRODUCTS": "S2B_MSIL2A_20240419T061629_R091_T46XES_20240419T090000,"
                  "S2B_MSIL2A_20240419T061629_R091_T47XML_20240419T090000"}, "x.tif", {date(2024, 4, 19)}),
    ({}, "S2A_20221005T115411_R023_mask.tif", {date(2022, 10, 5)}),
    ({"PRODUCTS": ""}, "/data/S2B_20240419T061629_R091.tif", {date(2024, 4, 19)}),
    ({}, "merged.tif", set()),
    ({}, "S2A_20221345T115411_R023.tif", set()),  # 13th month: not a date
])
def test_acquisition_dates_from_tags_or_file_name(tags, name, dates):
    assert merge.acquisition_dates(tags, name) == dates


def test_first_two_dates_skips_files_without_a_date():
    day, other = date(2022, 10, 5), date(2022, 10, 15)
    assert merge.first_two_dates([("a", {day}), ("b", set()), ("c", {day}), ("d", {other})]) == (("a", day),
                                                                                                  ("d", other))
    assert merge.first_two_dates([("a", {day}), ("b", set()), ("c", {day})]) is None
    assert merge.first_two_dates([("a", {day, other})]) == (("a", day), ("a", other))


def stack_copy(stacked, folder, name, products):
    """A copy of the fixture stack and its mask as <name>.tif and <name>_mask.tif, with its PRODUCTS tag
    set to `products`."""
    folder.mkdir(exist_ok=True)
    raster, mask = folder / f"{name}.tif", folder / f"{name}_mask.tif"
    rasterio.shutil.copy(stacked.raster, raster, driver="GTiff")  # a plain GeoTIFF: tags change in place
    shutil.copyfile(stacked.mask, mask)
    with rasterio.open(raster, "r+") as dst:
        dst.update_tags(PRODUCTS=products)  # GDAL drops a tag set to ""
    with rasterio.open(raster) as src:
        assert src.tags().get("PRODUCTS", "") == products
    return str(raster), str(mask)


# another date in the products the copy was made from, or only in its file name
@pytest.mark.parametrize("products", ["S2A_MSIL2A_20221015T115411_R023_T29UNU_20221015T164454", ""])
def test_merge_orbits_refuses_two_dates_and_writes_nothing(s2masks_provider, stacked, tmp_path, products):
    raster, mask = stack_copy(stacked, tmp_path / "copies", "S2A_20221015T115411_R023", products)
    out = tmp_path / "out"
    with pytest.raises(QgsProcessingException) as error:
        run("mergesentinel2orbits", {"RASTERS": [str(stacked.raster), raster], "MASKS": [str(stacked.mask), mask],
                                     "OUTPUT": str(out / "merged.tif"), "OUTPUT_MASK": str(out / "merged_mask.tif")})
    message = str(error.value)
    assert "2022-10-05 (s2.tif)" in message and "2022-10-15 (S2A_20221015T115411_R023" in message
    assert "merge one date at a time" in message
    assert not out.exists()


def test_merge_orbits_does_not_refuse_a_raster_without_a_date(s2masks_provider, stacked, tmp_path):
    raster, mask = stack_copy(stacked, tmp_path / "copies", "other", "")
    result, _ = run("mergesentinel2orbits", {
        "RASTERS": [str(stacked.raster), raster], "MASKS": [str(stacked.mask), mask],
        "OUTPUT": str(tmp_path / "merged.tif"), "OUTPUT_MASK": str(tmp_path / "merged_mask.tif")})
    with rasterio.open(result["OUTPUT"]) as merged, rasterio.open(stacked.raster) as first:
        assert merged.shape == first.shape and (merged.read() == first.read()).all()
