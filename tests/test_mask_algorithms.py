"""Merge cloud masks, Improve cloud mask and Preprocess Sentinel-2 with improved masks, run as a
user runs them: through Processing, the Modeler (.model3) and qgis_process, on the real scene."""

import csv
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio
from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingModelAlgorithm,
    QgsProject,
    QgsVectorLayer,
)
from rasterio.transform import Affine

from s2masks.core import cloudmask, models

AREA = "-8.74,-8.62,53.09,53.16 [EPSG:4326]"  # inside the real T29UNU fixture scene
DATES = {"START_DATE": "2022-10-01", "END_DATE": "2022-10-10"}
# the model of the single steps that the plugin ships (tests/fixtures/build_model3.py writes it)
MODEL3 = Path(__file__).resolve().parent.parent / "resources" / "models" / "preprocess_s2_improved_masks_steps.model3"


class Recording(QgsProcessingFeedback):
    """Keeps the log; presses Cancel when a log line contains `cancel_when`."""

    def __init__(self, cancel_when=None):
        super().__init__()
        self.warnings, self.infos, self.cancel_when = [], [], cancel_when

    def pushWarning(self, text):  # noqa: N802
        self.warnings.append(text)

    def pushInfo(self, text):  # noqa: N802
        self.infos.append(text)
        if self.cancel_when and self.cancel_when in text:
            self.cancel()


def run(algorithm, parameters, feedback=None, context=None):
    import processing

    context = context or QgsProcessingContext()
    return processing.run(algorithm if not isinstance(algorithm, str) else f"s2masks:{algorithm}", parameters,
                          context=context, feedback=feedback or QgsProcessingFeedback())


def read(path):
    with rasterio.open(path) as src:
        return src.read(1)


def write(path, data, crs="EPSG:32629", **tags):
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
                       dtype=data.dtype, crs=crs, transform=Affine(10, 0, 500000, 0, -10, 5900000)) as dst:
        dst.write(data, 1)
        dst.update_tags(**tags)
    return str(path)


def copy_stack(source, target, scale_metadata=True, nodata_rows=0):
    """The stack written again: without its band scale metadata (plain DN), and/or with no data in
    its first `nodata_rows` rows."""
    with rasterio.open(source) as src:
        data, profile, descriptions = src.read(), src.profile, src.descriptions
    profile.update(driver="GTiff")
    data[:, :nodata_rows] = 0
    with rasterio.open(target, "w", **profile) as dst:
        dst.write(data)
        for index, name in enumerate(descriptions, start=1):
            dst.set_band_description(index, name)
        if scale_metadata:
            dst.scales = [1e-4] * data.shape[0]
    with rasterio.open(target) as src:
        assert src.scales == ((1e-4,) if scale_metadata else (1.0,)) * 12
    return str(target)


@pytest.fixture
def hand_made(tmp_path):
    product = np.zeros((30, 30), np.uint8)
    cloud = np.zeros((30, 30), np.float32)
    shadow = np.zeros((30, 30), np.float32)
    product[2, 2] = 1
    cloud[15, 15] = 0.31
    shadow[25, 25] = 0.21
    return {"PRODUCT_MASK": write(tmp_path / "p.tif", product), "CLOUD_PROBABILITY": write(tmp_path / "c.tif", cloud),
            "SHADOW_PROBABILITY": write(tmp_path / "s.tif", shadow)}


def test_merge_writes_mask_classes_styles_and_statistics(s2masks_provider, hand_made, tmp_path):
    result = run("mergecloudmaskssimple", dict(hand_made, BUFFER=10, OUTPUT=str(tmp_path / "mask.tif"),
                                               OUTPUT_CLASSES=str(tmp_path / "classes.tif")))
    mask, classes = read(result["OUTPUT"]), read(result["OUTPUT_CLASSES"])
    assert mask.sum() == 3 * 5  # three flagged pixels, each a plus-shaped disk(1) of 5 pixels
    assert classes[25, 25] == cloudmask.SHADOW and classes[15, 15] == classes[2, 2] == cloudmask.CLOUD
    assert result["PCT_SHADOW"] == pytest.approx(100 * 5 / 900) and result["PCT_PRODUCT_MASKED"] == pytest.approx(
        100 / 900)
    assert (tmp_path / "mask.qml").exists() and (tmp_path / "classes.qml").exists()


def test_closing_size_is_still_read_as_a_buffer_with_a_deprecation_note(s2masks_provider, hand_made, tmp_path):
    feedback = Recording()
    old = run("mergecloudmaskssimple", dict(hand_made, CLOSING_SIZE=2, OUTPUT=str(tmp_path / "old.tif")), feedback)
    new = run("mergecloudmaskssimple", dict(hand_made, BUFFER=20, OUTPUT=str(tmp_path / "new.tif")))
    assert (read(old["OUTPUT"]) == read(new["OUTPUT"])).all() and read(old["OUTPUT"]).sum() == 3 * 13
    assert [w for w in feedback.warnings if "CLOSING_SIZE is deprecated" in w and "BUFFER=20 m" in w]
    assert "Growth on 10 m pixels: buffer 20 m (2 pixels)" in " ".join(feedback.infos)


@pytest.mark.parametrize("change, says", [({"CLOUD_THR": 1.5}, "CLOUD_THR"), ({"SHADOW_THR": -0.1}, "SHADOW_THR"),
                                          ({"CLOSING_SIZE": -1}, "CLOSING_SIZE"), ({"MIN_AREA": -3}, "MIN_AREA"),
                                          ({"BUFFER": -1}, "BUFFER"), ({"CLOSING": -5}, "CLOSING"),
                                          ({"MAX_NODATA": 150}, "MAX_NODATA")])
def test_merge_refuses_out_of_range_parameters(s2masks_provider, hand_made, tmp_path, change, says):
    with pytest.raises(QgsProcessingException, match=says):
        run("mergecloudmaskssimple", dict(hand_made, OUTPUT=str(tmp_path / "mask.tif"), **change))
    assert not (tmp_path / "mask.tif").exists()


def test_merge_names_the_raster_on_another_grid(s2masks_provider, hand_made, tmp_path):
    hand_made["SHADOW_PROBABILITY"] = write(tmp_path / "s32.tif", np.zeros((30, 30), np.float32), crs="EPSG:32630")
    with pytest.raises(QgsProcessingException, match="shadow probability .* CRS EPSG:32630 instead of EPSG:32629"):
        run("mergecloudmaskssimple", dict(hand_made, OUTPUT=str(tmp_path / "mask.tif")))
    assert not (tmp_path / "mask.tif").exists()


def test_merge_applies_the_card_recorded_in_the_probabilities(s2masks_provider, tmp_path):
    """Probabilities of the default model (its card's tags): argmax unless thresholds are given."""
    cloud, shadow = np.full((30, 30), 0.31, np.float32), np.full((30, 30), 0.21, np.float32)  # clear: 0.48
    cloud[:10] = 0.6
    shadow[20:] = 0.5
    card = models.default_card("cloud")
    sources = {"PRODUCT_MASK": write(tmp_path / "p.tif", np.zeros((30, 30), np.uint8)),
               "CLOUD_PROBABILITY": write(tmp_path / "c.tif", cloud, **models.probability_tags(card, "cloud")),
               "SHADOW_PROBABILITY": write(tmp_path / "s.tif", shadow, **models.probability_tags(card, "shadow"))}
    feedback = Recording()
    by_card = run("mergecloudmaskssimple", dict(sources, OUTPUT_CLASSES=str(tmp_path / "a.tif"),
                                                OUTPUT=str(tmp_path / "a_mask.tif")), feedback)
    assert by_card["PCT_CLOUD"] == pytest.approx(100 / 3) and by_card["PCT_SHADOW"] == pytest.approx(100 / 3)
    assert "Cloud: the most probable of ukis-csmask-6b-l2a's classes (argmax, its model card's rule)." in feedback.infos
    given = run("mergecloudmaskssimple", dict(sources, CLOUD_THR=0.3, SHADOW_THR=0.2, OUTPUT=str(tmp_path / "b.tif")))
    assert given["PCT_CLOUD"] == 100  # 0.31 > 0.3 everywhere, and cloud wins over shadow
    given = run("mergecloudmaskssimple", dict(sources, CLOUD_THR=0.5, OUTPUT=str(tmp_path / "c.tif")))
    assert given["PCT_CLOUD"] == pytest.approx(100 / 3) and given["PCT_SHADOW"] == pytest.approx(100 / 3)


def test_nan_probability_is_nodata_not_clear(s2masks_provider, hand_made, tmp_path):
    cloud = np.zeros((30, 30), np.float32)
    cloud[:10, :10] = np.nan
    hand_made["CLOUD_PROBABILITY"] = write(tmp_path / "nan.tif", cloud)
    result = run("mergecloudmaskssimple", dict(hand_made, OUTPUT=str(tmp_path / "mask.tif"),
                                               OUTPUT_CLASSES=str(tmp_path / "classes.tif")))
    assert (read(result["OUTPUT_CLASSES"])[:10, :10] == cloudmask.NODATA).all()
    assert (read(result["OUTPUT"])[:10, :10] == 1).all()
    assert result["PCT_NODATA"] == pytest.approx(100 * 100 / 900) and result["PCT_CLEAR"] < 100 - 100 * 100 / 900


def test_dn_stack_without_scale_metadata_gives_the_scaled_stacks_mask(s2masks_provider, stacked, tmp_path):
    """The issue: a plain-DN stack gave a 100% clear mask. Now its scale is detected from the values."""
    plain = copy_stack(stacked.raster, tmp_path / "plain.tif", scale_metadata=False)
    feedback = Recording()
    from_plain = run("improvecloudmask", {"INPUT": plain, "PRODUCT_MASK": str(stacked.mask),
                                          "OUTPUT": str(tmp_path / "plain_mask.tif"),
                                          "OUTPUT_CLASSES": str(tmp_path / "plain_classes.tif")}, feedback)
    scaled = run("improvecloudmask", {"INPUT": str(stacked.raster), "PRODUCT_MASK": str(stacked.mask),
                                      "OUTPUT": str(tmp_path / "mask.tif"),
                                      "OUTPUT_CLASSES": str(tmp_path / "classes.tif")})
    assert (read(from_plain["OUTPUT"]) == read(scaled["OUTPUT"])).all()
    assert (read(from_plain["OUTPUT_CLASSES"]) == read(scaled["OUTPUT_CLASSES"])).all()
    assert 20 < from_plain["PCT_CLEAR"] < 80 and from_plain["PCT_NODATA"] == 0
    assert [line for line in feedback.infos if "no scale metadata and its values look like digital numbers" in line]


def test_wrong_input_scale_fails_instead_of_writing_a_clear_mask(s2masks_provider, stacked, tmp_path):
    """DN given to the model as reflectance (INPUT_SCALE: reflectance already): NaN probabilities,
    which are nodata, not clear; most of the area, so the run fails and says what to do."""
    with pytest.raises(QgsProcessingException, match="of the area has no valid cloud or shadow probability.*Where "
                                                     "the product mask has data .*INPUT_SCALE"):
        run("improvecloudmask", {"INPUT": str(stacked.raster), "PRODUCT_MASK": str(stacked.mask), "INPUT_SCALE": 1,
                                 "OUTPUT": str(tmp_path / "mask.tif")})
    assert not (tmp_path / "mask.tif").exists()


def test_mostly_nodata_stack_fails_with_the_reason(s2masks_provider, stacked, tmp_path):
    with rasterio.open(stacked.raster) as src:
        rows = int(src.height * 0.7)
    raster = copy_stack(stacked.raster, tmp_path / "partial.tif", nodata_rows=rows)
    with rasterio.open(stacked.mask) as src:
        codes, profile = src.read(1), src.profile
    codes[:rows] = 255  # as Download and stack writes it where the stack has no data
    profile.update(driver="GTiff")
    with rasterio.open(tmp_path / "partial_mask.tif", "w", **profile) as dst:
        dst.write(codes, 1)
    parameters = {"INPUT": raster, "PRODUCT_MASK": str(tmp_path / "partial_mask.tif"),
                  "OUTPUT": str(tmp_path / "mask.tif"), "OUTPUT_CLASSES": str(tmp_path / "classes.tif")}
    with pytest.raises(QgsProcessingException, match=r"7\d.\d% of the area has no valid cloud or shadow probability.*"
                                                     "The product mask has no data over .*MIN_TILE_COVER.*MAX_NODATA"):
        run("improvecloudmask", parameters)
    assert not (tmp_path / "mask.tif").exists() and not (tmp_path / "classes.tif").exists()
    written = run("improvecloudmask", dict(parameters, MAX_NODATA=100))
    assert 69 < written["PCT_NODATA"] < 72
    assert (read(written["OUTPUT_CLASSES"])[:rows] == cloudmask.NODATA).all()


def test_improve_equals_the_single_ops_and_runs_the_model_once(s2masks_provider, stacked, tmp_path):
    feedback = Recording()
    improved = run("improvecloudmask", {"INPUT": str(stacked.raster), "PRODUCT_MASK": str(stacked.mask),
                                        "OUTPUT": str(tmp_path / "improved.tif")}, feedback)
    passes = [text for text in feedback.infos if text.startswith("Model ")]
    assert passes == ["Model ukis-csmask-6b-l2a for cloud and shadow"]  # one pass gives both
    cloud = run("computecloudprob", {"INPUT": str(stacked.raster), "OUTPUT": str(tmp_path / "cloud.tif")})
    shadow = run("computeshadowprob", {"INPUT": str(stacked.raster), "OUTPUT": str(tmp_path / "shadow.tif")})
    merged = run("mergecloudmaskssimple", {"PRODUCT_MASK": str(stacked.mask), "CLOUD_PROBABILITY": cloud["OUTPUT"],
                                           "SHADOW_PROBABILITY": shadow["OUTPUT"], "OUTPUT": str(tmp_path / "m.tif")})
    assert (read(improved["OUTPUT"]) == read(merged["OUTPUT"])).all()
    assert improved["PCT_CLOUD"] == pytest.approx(merged["PCT_CLOUD"])


def run_workflow(pc_double, tmp_path, feedback=None, context=None, **extra):
    parameters = dict(DATES, EXTENT=AREA, STAC_URL=pc_double.url, CACHE_FOLDER=str(tmp_path / "cache"),
                      OUTPUT_FOLDER=str(tmp_path / "out"), FOOTPRINTS=str(tmp_path / "out" / "used.gpkg"),
                      STATISTICS=str(tmp_path / "out" / "statistics.gpkg"))
    parameters.update(extra)
    return run("preprocesss2improvedmasks", parameters, feedback, context)


def test_workflow_on_the_real_scene(s2masks_provider, pc_double, tmp_path):
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    result = run_workflow(pc_double, tmp_path, context=context)
    assert result["COUNT"] == 1
    raster, mask, product = result["RASTERS"][0], result["MASKS"][0], result["PRODUCT_MASKS"][0]
    assert Path(mask).name == "S2A_20221005T115411_R023_improved_mask.tif"
    improved, codes = read(mask), read(product)
    flagged_by_product = (codes != 0)
    assert improved[flagged_by_product].all()  # the improved mask keeps every product flag
    assert 0.2 < improved.mean() < 0.9 and improved.mean() > flagged_by_product.mean()
    # statistics: as a layer and as CSV, in agreement with the rasters
    table = QgsVectorLayer(result["STATISTICS"])
    rows = [dict(zip(f.fields().names(), f.attributes())) for f in table.getFeatures()]
    del table
    assert len(rows) == 1 and rows[0]["tiles"] == "29UNU" and rows[0]["date"] == "2022-10-05T11:54:11Z"
    assert rows[0]["pct_clear"] == pytest.approx(100 * (improved == 0).mean())
    assert rows[0]["pct_product_masked"] == pytest.approx(100 * ((codes != 0) & (codes != 255)).mean())
    with open(result["STATISTICS_CSV"], newline="") as handle:
        csv_rows = list(csv.DictReader(handle))
    assert csv_rows[0]["acquisition"] == "S2A_20221005T115411_R023"
    assert float(csv_rows[0]["pct_cloud"]) == pytest.approx(rows[0]["pct_cloud"], abs=0.01)
    # the raster and the improved mask load into one group per date, styled
    loads = context.layersToLoadOnCompletion()
    assert set(loads) == {raster, mask}
    assert Path(mask[:-4] + ".qml").exists() and Path(raster[:-4] + ".qml").exists()
    assert loads[mask].postProcessor().groups == (
        "Sentinel-2 2022-10-01 to 2022-10-10 (-8.74, 53.09, -8.62, 53.16)", "2022-10-05 S2A_20221005T115411_R023")
    leftovers = [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_no_acquisition_reaches_the_cover(s2masks_provider, pc_double, tmp_path):
    feedback = Recording()
    # half of this area lies west of the fixture scene
    result = run_workflow(pc_double, tmp_path, feedback, EXTENT="-8.95,-8.62,53.09,53.16 [EPSG:4326]")
    assert result["COUNT"] == 0 and result["MASKS"] == [] and result["RASTERS"] == []
    assert any("min_tile_cover" in warning for warning in feedback.warnings)
    with open(result["STATISTICS_CSV"]) as handle:
        assert handle.read().startswith("date,acquisition")
    assert not list((tmp_path / "out").glob("*.tif"))


# during the download, during the model run, between the probabilities and the merge
@pytest.mark.parametrize("cancel_when", ["Acquisition 1/1", "Model ukis",
                                         "Compute cloud and shadow probability finished."])
def test_cancel_in_any_step_leaves_no_partial_file(s2masks_provider, pc_double, tmp_path, cancel_when):
    feedback = Recording(cancel_when)
    with pytest.raises(QgsProcessingException, match="[Cc]ancel"):
        run_workflow(pc_double, tmp_path, feedback)
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert not [name for name in written if name.startswith(".")]
    for name in written:  # whatever is there is complete
        if name.endswith(".tif"):
            read(tmp_path / "out" / name)
    assert "statistics.csv" not in written


def test_model3_chain_equals_the_composite(s2masks_provider, pc_double, tmp_path):
    """The shipped model (List -> Select -> Download and stack -> probabilities -> Merge cloud masks),
    run from its file, gives pixel for pixel the composite's stack, product mask and improved mask."""
    model = QgsProcessingModelAlgorithm()
    assert model.fromFile(str(MODEL3))
    assert model.validate() == (True, [])  # it was saved before BUFFER, CLOSING, MAX_NODATA and INPUT_SCALE
    assert "CLOSING_SIZE" not in model.childAlgorithm("merge").parameterSources()  # not the deprecated name
    mask_key = next(p.name() for p in model.destinationParameterDefinitions() if p.name().endswith("improved_mask"))
    chained = run(model, {"area": AREA, "start_date": DATES["START_DATE"], "end_date": DATES["END_DATE"],
                          "output_folder": str(tmp_path / "chain"), "stac_url": pc_double.url,
                          "cache_folder": str(tmp_path / "cache"), mask_key: str(tmp_path / "chain_mask.tif")})
    composite = run_workflow(pc_double, tmp_path)
    assert chained[mask_key] == str(tmp_path / "chain_mask.tif")
    assert (read(chained[mask_key]) == read(composite["MASKS"][0])).all()
    raster = Path(composite["RASTERS"][0])
    product_mask = Path(composite["PRODUCT_MASKS"][0])
    with rasterio.open(tmp_path / "chain" / raster.name) as a, rasterio.open(raster) as b:
        assert a.transform == b.transform and (a.read() == b.read()).all()
    assert (read(tmp_path / "chain" / product_mask.name) == read(product_mask)).all()


@pytest.mark.qgis_process
def test_qgis_process_still_takes_closing_size(enabled_qgis_process_env, hand_made, tmp_path):
    """The deprecated CLOSING_SIZE, hidden in the dialog, works from the command line for one release."""
    arguments = [f"{key}={value}" for key, value in hand_made.items()]
    result = subprocess.run(
        ["/usr/bin/qgis_process.bin", "run", "s2masks:mergecloudmaskssimple", "--", *arguments, "CLOSING_SIZE=2",
         f"OUTPUT={tmp_path / 'mask.tif'}"], env=enabled_qgis_process_env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    log = result.stdout + result.stderr
    assert "CLOSING_SIZE is deprecated" in log and "BUFFER=20 m" in log
    assert read(tmp_path / "mask.tif").sum() == 3 * 13  # three disks of radius 2 pixels


@pytest.mark.qgis_process
def test_qgis_process_prints_the_outputs(enabled_qgis_process_env, pc_double, tmp_path):
    folder = tmp_path / "s2"
    result = subprocess.run(
        ["/usr/bin/qgis_process.bin", "run", "s2masks:preprocesss2improvedmasks", "--", f"EXTENT={AREA}",
         "START_DATE=2022-10-01", "END_DATE=2022-10-10", f"STAC_URL={pc_double.url}", f"OUTPUT_FOLDER={folder}",
         f"FOOTPRINTS={folder / 'used.gpkg'}", f"STATISTICS={folder / 'statistics.gpkg'}",
         f"CACHE_FOLDER={tmp_path / 'cache'}"],
        env=enabled_qgis_process_env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"MASKS:\t{folder / 'S2A_20221005T115411_R023_improved_mask.tif'}" in result.stdout
    assert "STATISTICS_CSV:" in result.stdout and (folder / "statistics.csv").exists()
