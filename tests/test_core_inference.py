"""Cloud and shadow probabilities: exact behaviour with tiny ONNX models of known output, and
the real ukis-csmask model on the real T29UNU scene."""

import json

import numpy as np
import pytest
import rasterio
from onnx_helpers import band_logit_model
from rasterio.enums import Resampling
from rasterio.transform import Affine
from rasterio.warp import reproject
from rasterio.windows import Window
from shapely.geometry import box
from stack_helpers import fixture_item, local_path

from s2masks.core import grid as grids
from s2masks.core import inference, models, records, stack
from s2masks.core.errors import Cancelled, InputError


def write_stack(path, data, descriptions=records.S2_BANDS, scale=1e-4):
    """A 12-band stack like Download and stack writes (uint16, nodata 0, scale 0.0001); scale=None
    writes no scale metadata (plain DN, or reflectance for float data)."""
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=data.dtype if data.dtype != np.int64 else "uint16", nodata=0, crs="EPSG:32629",
                       transform=Affine(10, 0, 500000, 0, -10, 5900000), tiled=True, blockxsize=64,
                       blockysize=64) as dst:
        dst.write(data)
        for index, name in enumerate(descriptions, start=1):
            dst.set_band_description(index, name)
        if scale is not None:
            dst.scales = [scale] * data.shape[0]
    return path


def write_card(folder, model_path, **overrides):
    card = {"id": "tiny", "weights": {"path": str(model_path)}, "bands": ["B02"],
            "scaling": {"reflectance": False, "factor": 0.001}, "native_resolution": 10, "chip_size": 32,
            "overlap": 0.25, "output": {"type": "softmax", "cloud_class": 1}, "provides": ["cloud"]}
    card.update(overrides)
    path = folder / f"{card['id']}.json"
    path.write_text(json.dumps(card))
    return models.load_card(path)


@pytest.fixture
def gradient_stack(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(1, 4000, size=(12, 100, 90)).astype(np.uint16)
    return write_stack(tmp_path / "stack.tif", data), data


@pytest.fixture
def tiny_card(tmp_path):
    return write_card(tmp_path, band_logit_model(tmp_path / "tiny.onnx", in_channels=1))


def _expected(data):
    return 1 / (1 + np.exp(-data[1].astype(np.float64) * 0.001))  # band B02, factor 0.001, sigmoid


def test_chips_cover_and_blend_exactly(gradient_stack, tiny_card, tmp_path):
    path, data = gradient_stack
    out = inference.compute_probabilities(path, {"cloud": tiny_card}, {"cloud": tmp_path / "cloud.tif"})
    with rasterio.open(out["cloud"]) as src:
        probability = src.read(1)
        assert src.dtypes[0] == "float32" and src.shape == (100, 90) and src.transform == Affine(10, 0, 500000, 0, -10, 5900000)
    np.testing.assert_allclose(probability, _expected(data), atol=1e-5)


def test_in_memory_gives_the_same_result(gradient_stack, tiny_card, tmp_path):
    path, _ = gradient_stack
    streamed = inference.compute_probabilities(path, {"cloud": tiny_card}, {"cloud": tmp_path / "a.tif"})
    loaded = inference.compute_probabilities(path, {"cloud": tiny_card}, {"cloud": tmp_path / "b.tif"},
                                             inference.InferenceOptions(in_memory=True, batch_size=3))
    with rasterio.open(streamed["cloud"]) as a, rasterio.open(loaded["cloud"]) as b:
        assert np.array_equal(a.read(), b.read())


def test_nodata_pixels_get_nan_the_declared_nodata(gradient_stack, tiny_card, tmp_path):
    path, data = gradient_stack
    data[7, 10:20, 30:40] = 0  # B08 missing there: not a band the model reads
    write_stack(path, data)
    out = inference.compute_probabilities(path, {"cloud": tiny_card}, {"cloud": tmp_path / "cloud.tif"})
    with rasterio.open(out["cloud"]) as src:
        probability = src.read(1)
        assert np.isnan(src.nodata)
    assert np.isnan(probability[10:20, 30:40]).all()
    assert np.isfinite(probability).sum() == probability.size - 100
    np.testing.assert_allclose(probability[50:, :], _expected(data)[50:, :], atol=1e-5)


def test_nodata_does_not_leak_into_coarse_neighbours(gradient_stack, tmp_path):
    """A 30 m model: a 30 m block without data is NaN at 10 m, and the bilinear return to 10 m
    leaves it out, so its valid neighbours keep a probability (FarmVibes' 1 spread into them)."""
    path, data = gradient_stack
    data[:, 30:39, 30:39] = 0  # 3 x 3 working pixels
    write_stack(path, data)
    card = write_card(tmp_path, band_logit_model(tmp_path / "t.onnx", 1), id="coarse", native_resolution=30)
    out = inference.compute_probabilities(path, {"cloud": card}, {"cloud": tmp_path / "c.tif"})
    with rasterio.open(out["cloud"]) as src:
        probability = src.read(1)
    assert np.isnan(probability[30:39, 30:39]).all()
    outside = np.ones(probability.shape, bool)
    outside[30:39, 30:39] = False
    assert np.isfinite(probability[outside]).all() and (probability[outside] >= 0).all()
    assert (probability[outside] <= 1).all()


def test_all_nodata_raster_warns_and_gives_nodata(tiny_card, tmp_path):
    path = write_stack(tmp_path / "empty.tif", np.zeros((12, 40, 40), dtype=np.uint16))
    warnings = []
    out = inference.compute_probabilities(path, {"cloud": tiny_card}, {"cloud": tmp_path / "c.tif"}, warn=warnings.append)
    with rasterio.open(out["cloud"]) as src:
        assert np.isnan(src.read(1)).all()
    assert warnings and "no valid pixel" in warnings[0]


def test_outputs_record_the_card_and_its_rule(gradient_stack, tmp_path):
    path, _ = gradient_stack
    card = write_card(tmp_path, band_logit_model(tmp_path / "m.onnx", 1, out_channels=3), id="multi",
                      output={"type": "softmax", "classes": ["clear", "cloud", "shadow"], "cloud_class": 1,
                              "shadow_class": 2}, provides=["cloud", "shadow"])
    out = inference.compute_probabilities(path, {"cloud": card, "shadow": card},
                                          {"cloud": tmp_path / "c.tif", "shadow": tmp_path / "s.tif"})
    for target in ("cloud", "shadow"):
        with rasterio.open(out[target]) as src:
            tags = src.tags()
        assert tags[models.TAG_TARGET] == target and tags[models.TAG_MODEL] == "multi"
        assert tags[models.TAG_RULE] == "argmax" and tags[models.TAG_CLASSES] == "clear,cloud,shadow"
        assert "scale metadata" in tags["S2MASKS_INPUT_SCALE"]


# -- the input's scale -------------------------------------------------------------------------------
@pytest.fixture
def reflectance_card(tmp_path):
    """P(cloud) = sigmoid(10 x B02 reflectance): a model that needs reflectance, as ukis-csmask does."""
    return write_card(tmp_path, band_logit_model(tmp_path / "r.onnx", in_channels=1), id="refl",
                      scaling={"reflectance": True, "factor": 10.0})


def _probability(path, card, tmp_path, name, **options):
    logs, warnings = [], []
    out = inference.compute_probabilities(path, {"cloud": card}, {"cloud": tmp_path / name},
                                          inference.InferenceOptions(**options), log=logs.append,
                                          warn=warnings.append)
    with rasterio.open(out["cloud"]) as src:
        return src.read(1), logs, warnings


def test_dn_stack_without_scale_metadata_gives_the_scaled_stacks_probabilities(gradient_stack, reflectance_card,
                                                                              tmp_path):
    path, data = gradient_stack
    plain = write_stack(tmp_path / "plain.tif", data, scale=None)
    scaled, scaled_log, _ = _probability(path, reflectance_card, tmp_path, "a.tif")
    detected, detected_log, warnings = _probability(plain, reflectance_card, tmp_path, "b.tif")
    assert np.array_equal(scaled, detected) and not warnings
    np.testing.assert_allclose(scaled, _expected(data), atol=1e-5)  # sigmoid(10 x DN x 0.0001)
    assert "band scale metadata, reflectance = DN x 0.0001" in scaled_log[0]
    assert "no scale metadata and its values look like digital numbers" in detected_log[0]
    assert "DN x 0.0001 assumed" in detected_log[0]
    # without the detection, the model would get DN: probabilities of 1 everywhere
    as_is, chosen_log, _ = _probability(plain, reflectance_card, tmp_path, "c.tif", input_scale="reflectance")
    assert (as_is > 0.99).all() and "reflectance (as chosen)" in chosen_log[0]


def test_reflectance_stack_is_used_as_it_is(gradient_stack, reflectance_card, tiny_card, tmp_path):
    path, data = gradient_stack
    reflectance = write_stack(tmp_path / "refl.tif", (data * 1e-4).astype(np.float32), scale=None)
    expected, _, _ = _probability(path, reflectance_card, tmp_path, "a.tif")
    found, logs, _ = _probability(reflectance, reflectance_card, tmp_path, "b.tif")
    np.testing.assert_allclose(found, expected, atol=1e-6)
    assert "look like reflectance" in logs[0]
    # a model that takes DN (FarmVibes' cloud models) gets reflectance x 10000
    dn_expected, _, _ = _probability(path, tiny_card, tmp_path, "c.tif")
    dn_found, _, _ = _probability(reflectance, tiny_card, tmp_path, "d.tif")
    np.testing.assert_allclose(dn_found, dn_expected, atol=1e-5)


def test_chosen_scale_overrides_the_metadata(gradient_stack, reflectance_card, tmp_path):
    path, data = gradient_stack
    metadata, _, _ = _probability(path, reflectance_card, tmp_path, "a.tif")
    chosen, logs, _ = _probability(write_stack(tmp_path / "x1.tif", data, scale=1.0), reflectance_card, tmp_path,
                                   "b.tif", input_scale="dn")
    assert np.array_equal(metadata, chosen) and "digital numbers (as chosen)" in logs[0]


def test_scale_metadata_that_contradict_the_values_warn(gradient_stack, reflectance_card, tmp_path):
    path, data = gradient_stack
    wrong = write_stack(tmp_path / "wrong.tif", (data * 1e-4).astype(np.float32))  # reflectance, and scale 0.0001
    _, _, warnings = _probability(wrong, reflectance_card, tmp_path, "a.tif")
    assert warnings and "the metadata look wrong" in warnings[0] and "INPUT_SCALE" in warnings[0]


def test_nan_in_a_float_stack_is_nodata(gradient_stack, reflectance_card, tmp_path):
    path, data = gradient_stack
    values = (data * 1e-4).astype(np.float32)
    values[3, 40:50, 40:50] = np.nan
    probability, _, _ = _probability(write_stack(tmp_path / "nan.tif", values, scale=None), reflectance_card,
                                     tmp_path, "a.tif")
    assert np.isnan(probability[40:50, 40:50]).all() and np.isfinite(probability).sum() == probability.size - 100


def test_nan_from_the_model_is_reported(gradient_stack, tmp_path):
    """A model that returns NaN (as the real one did for DN it should have got as reflectance):
    NaN in the output and a warning naming the input scale."""
    path, _ = gradient_stack
    card = write_card(tmp_path, band_logit_model(tmp_path / "n.onnx", 1), id="nan",
                      scaling={"reflectance": False, "factor": float("inf")})
    warnings = []
    out = inference.compute_probabilities(path, {"cloud": card}, {"cloud": tmp_path / "c.tif"}, warn=warnings.append)
    with rasterio.open(out["cloud"]) as src:
        assert np.isnan(src.read(1)).all()
    assert warnings and "returned no number (NaN) for 100.0%" in warnings[0] and "INPUT_SCALE" in warnings[0]


def test_overlapping_chips_blend_without_a_seam():
    strip = inference._Strip(["cloud"], 8, 14)
    weights = inference.blend_weights(8)
    strip.add(0, 0, {"cloud": np.zeros((8, 8), np.float32)}, weights, 8)
    strip.add(0, 6, {"cloud": np.ones((8, 8), np.float32)}, weights, 8)

    class Sink:
        def write(self, values, window):
            self.values = values[0]

    sink = Sink()
    strip.flush(8, {"cloud": sink}, 8)
    row = sink.values[4]
    assert (row[:6] == 0).all() and (row[8:] == 1).all()
    assert 0 < row[6] < row[7] < 1  # a smooth ramp across the overlap, no jump


def test_chip_starts_cover_the_axis():
    assert inference.chip_starts(20, 32, 0.25) == [0]
    starts = inference.chip_starts(100, 32, 0.25)
    assert starts[0] == 0 and starts[-1] == 68 and all(b - a <= 24 for a, b in zip(starts, starts[1:]))


def test_downsampled_model_returns_to_the_raster_grid(gradient_stack, tmp_path):
    path, data = gradient_stack
    card = write_card(tmp_path, band_logit_model(tmp_path / "t.onnx", 1), id="coarse", native_resolution=30)
    out = inference.compute_probabilities(path, {"cloud": card}, {"cloud": tmp_path / "c.tif"})
    with rasterio.open(out["cloud"]) as src:
        probability = src.read(1)
    assert probability.shape == (100, 90)
    # a 30 m average of random DN: close to the sigmoid of the local mean, smooth at 10 m
    assert abs(probability.mean() - _expected(data).mean()) < 0.05


def test_upsampling_streams_rows_and_matches_gdal_bilinear():
    """Working-grid rows arrive in uneven strips; the raster rows written equal GDAL's bilinear."""
    rng = np.random.default_rng(1)
    working = rng.random((34, 30)).astype(np.float32)
    raster_transform = Affine(10, 0, 500000, 0, -10, 5900000)
    expected = np.zeros((100, 90), np.float32)
    reproject(working, expected, src_transform=Affine(30, 0, 500000, 0, -30, 5900000), dst_transform=raster_transform,
              src_crs="EPSG:32629", dst_crs="EPSG:32629", resampling=Resampling.bilinear)

    class Raster:
        height, width = 100, 90
        values = np.full((100, 90), np.nan, np.float32)

        def write(self, values, window):
            self.values[window.row_off:window.row_off + window.height, window.col_off:window.col_off + window.width] = values[0]

    raster = Raster()
    no_nodata = lambda window: np.zeros((window.height, window.width), bool)  # noqa: E731
    sink = inference._RasterGridSink(raster, 3, working.shape, no_nodata, rows_per_write=7)
    top, kept = 0, []
    for count in (5, 1, 10, 3, 15):
        sink.write(working[None, top:top + count], Window(0, top, 30, count))
        top += count
        kept.append(len(sink.kept))
    np.testing.assert_allclose(raster.values, expected, atol=1e-6)  # every row written, none left NaN
    assert max(kept[:-1]) <= 2  # between strips it keeps only the rows later raster rows need


def test_one_pass_for_cloud_and_shadow_from_one_model(gradient_stack, tmp_path, monkeypatch):
    path, _ = gradient_stack
    card = write_card(tmp_path, band_logit_model(tmp_path / "m.onnx", 1, out_channels=3), id="multi",
                      output={"type": "softmax", "cloud_class": 1, "shadow_class": 2}, provides=["cloud", "shadow"])
    sessions = []
    original = inference.OnnxModel.__init__
    monkeypatch.setattr(inference.OnnxModel, "__init__", lambda self, *a: sessions.append(1) or original(self, *a))
    inference.compute_probabilities(path, {"cloud": card, "shadow": card},
                                    {"cloud": tmp_path / "c.tif", "shadow": tmp_path / "s.tif"})
    assert len(sessions) == 1 and (tmp_path / "c.tif").exists() and (tmp_path / "s.tif").exists()


def test_cancel_leaves_no_output(gradient_stack, tiny_card, tmp_path):
    path, _ = gradient_stack
    with pytest.raises(Cancelled):
        inference.compute_probabilities(path, {"cloud": tiny_card}, {"cloud": tmp_path / "out" / "c.tif"},
                                        should_cancel=lambda: True)
    assert list((tmp_path / "out").iterdir()) == []


# -- refusals ----------------------------------------------------------------------------------
def test_missing_weights_say_where_to_put_them(tmp_path):
    card = write_card(tmp_path, tmp_path / "absent.onnx")
    with pytest.raises(InputError, match=r"absent.onnx does not exist: fix the card"):
        inference.OnnxModel(card)


def test_farmvibes_card_without_its_file():
    card = models.load_card(models.MODELS_DIR / "farmvibes-cloud-model2.json")
    with pytest.raises(InputError, match="are missing. Copy cloud_model2_cpu.onnx into .*models: download "
                                         "op_resources/cloud_models/cloud_model2_cpu.onnx"):
        card.weights_path()


def test_a_file_that_is_not_onnx(tmp_path):
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"this is not a model")
    with pytest.raises(InputError, match="is not a usable ONNX model"):
        inference.OnnxModel(write_card(tmp_path, fake))


def test_channel_mismatch_between_model_and_card(tmp_path):
    model = band_logit_model(tmp_path / "six.onnx", in_channels=6)
    with pytest.raises(InputError, match="takes 6 input channels but its card lists 1 bands"):
        inference.OnnxModel(write_card(tmp_path, model))


def test_chip_size_mismatch(tmp_path):
    model = band_logit_model(tmp_path / "s.onnx", in_channels=1, static_size=64)
    with pytest.raises(InputError, match="takes 64 x 64 chips but its card says 32"):
        inference.OnnxModel(write_card(tmp_path, model))


def test_unknown_output_semantics(tmp_path):
    with pytest.raises(InputError, match="unknown output type 'argmax'"):
        write_card(tmp_path, tmp_path / "x.onnx", output={"type": "argmax"})


@pytest.mark.parametrize("change, says", [
    (dict(mask_rule={"type": "vote"}), "unknown mask_rule type 'vote'"),
    (dict(mask_rule={"type": "argmax"}, output={"type": "sigmoid"}), "'argmax' needs a softmax output"),
    (dict(mask_rule={"type": "threshold"}), "needs a probability between 0 and 1 for cloud, got None"),
    (dict(mask_rule={"type": "threshold", "cloud": 1.5}), "for cloud, got 1.5"),
])
def test_bad_mask_rules_are_refused(tmp_path, change, says):
    with pytest.raises(InputError, match=says):
        write_card(tmp_path, tmp_path / "x.onnx", **change)


def test_cards_without_a_mask_rule_get_their_output_types_decision(tmp_path):
    assert write_card(tmp_path, tmp_path / "x.onnx").rule("cloud") == ("argmax", None)
    sigmoid = write_card(tmp_path, tmp_path / "x.onnx", id="s", output={"type": "sigmoid"})
    assert sigmoid.rule("cloud") == ("threshold", 0.5)


def test_raster_with_too_few_bands(tiny_card, tmp_path):
    path = write_stack(tmp_path / "four.tif", np.ones((4, 40, 40), np.uint16), ("B02", "B03", "B04", "B08"))
    with pytest.raises(InputError, match="has 4 bands; a Sentinel-2 stack has 12"):
        inference.compute_probabilities(path, {"cloud": tiny_card}, {"cloud": tmp_path / "c.tif"})


def test_raster_bands_in_another_order(tiny_card, tmp_path):
    path = write_stack(tmp_path / "shuffled.tif", np.ones((12, 40, 40), np.uint16), records.S2_BANDS[::-1])
    with pytest.raises(InputError, match="expected B01 B02 B03"):
        inference.compute_probabilities(path, {"cloud": tiny_card}, {"cloud": tmp_path / "c.tif"})


@pytest.mark.parametrize("options, message", [
    (inference.InferenceOptions(overlap=0.6), "Overlap must be between 0 and 0.5"),
    (inference.InferenceOptions(overlap=-0.1), "Overlap must be between 0 and 0.5"),
    (inference.InferenceOptions(batch_size=0), "Batch size must be at least 1"),
])
def test_bad_options(gradient_stack, tiny_card, tmp_path, options, message):
    with pytest.raises(InputError, match=message):
        inference.compute_probabilities(gradient_stack[0], {"cloud": tiny_card}, {"cloud": tmp_path / "c.tif"}, options)
    assert not (tmp_path / "c.tif").exists()


def test_shipped_cards():
    ids = {card.id for card in models.catalogue().cards}
    assert {"ukis-csmask-6b-l2a", "ukis-csmask-4b-l2a", "farmvibes-shadow"} <= ids
    assert {f"farmvibes-cloud-model{i}" for i in range(1, 6)} <= ids
    # installed: the weights are present (ukis-csmask's come with its package; FarmVibes' are not shipped)
    assert [card.id for card in models.installed_cards()] == ["ukis-csmask-6b-l2a", "ukis-csmask-4b-l2a"]
    assert models.default_card("cloud").id == models.default_card("shadow").id == "ukis-csmask-6b-l2a"
    inference.OnnxModel(models.default_card("cloud"))  # the shipped model matches its card
    # how each card's outputs become classes: argmax for the softmax ukis-csmask models, FarmVibes'
    # thresholds for FarmVibes' models
    cards = {card.id: card for card in models.catalogue().cards}
    for name in ("ukis-csmask-6b-l2a", "ukis-csmask-4b-l2a"):
        assert cards[name].rule("cloud") == cards[name].rule("shadow") == ("argmax", None)
        assert cards[name].classes() == ("clear", "cloud", "shadow")
    for i in range(1, 6):
        assert cards[f"farmvibes-cloud-model{i}"].rule("cloud") == ("threshold", 0.3)
    assert cards["farmvibes-shadow"].rule("shadow") == ("threshold", 0.2)


# -- the real model on the real scene ------------------------------------------------------------
def test_real_model_agrees_with_sen2cor_on_the_real_scene(pc_double, tmp_path):
    item = records.parse_item(fixture_item(pc_double))
    area = box(-8.765, 53.075, -8.597, 53.177)  # nearly the whole 12 km fixture
    grid = grids.output_grid(area)
    result = stack.stack_acquisition([item], area, grid, tmp_path / "s2.tif", tmp_path / "m.tif",
                                     stack.StackOptions(cache_dir=tmp_path / "cache"))
    card = models.default_card("cloud")
    out = inference.compute_probabilities(result.raster, {"cloud": card, "shadow": card},
                                          {"cloud": tmp_path / "cloud.tif", "shadow": tmp_path / "shadow.tif"})
    with rasterio.open(out["cloud"]) as c, rasterio.open(out["shadow"]) as s, rasterio.open(result.raster) as r:
        cloud, shadow, transform = c.read(1), s.read(1), r.transform
    with rasterio.open(local_path(pc_double, item.bands["SCL"].href)) as src:
        scl_full, scl_transform = src.read(1), src.transform
    rows, cols = np.mgrid[0:cloud.shape[0], 0:cloud.shape[1]]
    xs, ys = grids.apply(transform, cols + 0.5, rows + 0.5)
    scl_cols, scl_rows = grids.apply(~scl_transform, xs, ys)
    scl = scl_full[np.clip(scl_rows.astype(int), 0, 599), np.clip(scl_cols.astype(int), 0, 599)]
    sure_cloud, vegetation, sen2cor_shadow = np.isin(scl, (8, 9)), scl == 4, scl == 3
    agreement = ((cloud[sure_cloud] > 0.5).sum() + (cloud[vegetation] <= 0.5).sum()) / (sure_cloud.sum() + vegetation.sum())
    print(f"cloud: mean P {cloud[sure_cloud].mean():.3f} on Sen2Cor cloud (SCL 8/9, {sure_cloud.mean():.1%} of pixels), "
          f"{cloud[vegetation].mean():.3f} on vegetation (SCL 4, {vegetation.mean():.1%}); agreement at 0.5: {agreement:.3f}; "
          f"shadow: mean P {shadow[sen2cor_shadow].mean():.3f} on SCL 3, {shadow[vegetation].mean():.3f} on SCL 4")
    assert sure_cloud.sum() > 1000 and vegetation.sum() > 1000
    assert agreement > 0.85  # chance is about 0.5
    assert cloud[sure_cloud].mean() > 0.7 and cloud[vegetation].mean() < 0.2
    assert shadow[sen2cor_shadow].mean() > shadow[vegetation].mean() + 0.3
