"""Compute cloud / shadow probability, run as a user runs them."""

import json
import subprocess

import numpy as np
import pytest
import rasterio
from onnx_helpers import band_logit_model
from qgis.core import QgsProcessingContext, QgsProcessingException, QgsProcessingFeedback


def run(algorithm, parameters, feedback=None):
    import processing

    return processing.run(f"s2masks:{algorithm}", parameters, context=QgsProcessingContext(),
                          feedback=feedback or QgsProcessingFeedback())


@pytest.mark.parametrize("algorithm", ["computecloudprob", "computeshadowprob"])
def test_default_model_writes_a_styled_probability(s2masks_provider, stacked, tmp_path, algorithm):
    result = run(algorithm, {"INPUT": str(stacked.raster), "OUTPUT": str(tmp_path / f"{algorithm}.tif")})
    with rasterio.open(result["OUTPUT"]) as src, rasterio.open(stacked.raster) as stack_src:
        values = src.read(1)
        assert src.transform == stack_src.transform and src.shape == stack_src.shape
    assert values.dtype == np.float32 and 0 <= values.min() and values.max() <= 1
    assert (tmp_path / f"{algorithm}.qml").exists()


class Recording(QgsProcessingFeedback):
    def __init__(self):
        super().__init__()
        self.infos = []

    def pushInfo(self, text):  # noqa: N802
        self.infos.append(text)


def test_probabilities_record_their_card_and_are_styled_by_its_rule(s2masks_provider, stacked, tmp_path):
    feedback = Recording()
    result = run("computecloudshadowprob", {"INPUT": str(stacked.raster), "CLOUD_OUTPUT": str(tmp_path / "c.tif"),
                                            "SHADOW_OUTPUT": str(tmp_path / "s.tif")}, feedback)
    for target, key in (("cloud", "CLOUD_OUTPUT"), ("shadow", "SHADOW_OUTPUT")):
        with rasterio.open(result[key]) as src:
            tags = src.tags()
            assert np.isnan(src.nodata)
        assert (tags["S2MASKS_TARGET"], tags["S2MASKS_MODEL"], tags["S2MASKS_MASK_RULE"]) == (
            target, "ukis-csmask-6b-l2a", "argmax")
    # transparent below 1/3: the most probable of three classes has at least that
    assert "below 0.33: transparent" in (tmp_path / "c.qml").read_text()
    assert "Input scale: the raster's band scale metadata, reflectance = DN x 0.0001." in feedback.infos


def test_probability_logs_one_line_while_the_bar_moves_per_chip(s2masks_provider, stacked, tmp_path, progress_log):
    run("computecloudprob", {"INPUT": str(stacked.raster), "OUTPUT": str(tmp_path / "c.tif")}, progress_log)
    texts, values = progress_log.texts, progress_log.values
    assert len(texts) == 1 and texts[0].endswith("chips through the model")
    assert len(set(values)) >= 2  # a step per batch of chips


def test_custom_onnx_with_its_card(s2masks_provider, stacked, tmp_path):
    model = band_logit_model(tmp_path / "tiny.onnx", in_channels=1)
    card = tmp_path / "tiny.json"
    card.write_text(json.dumps({"id": "tiny", "weights": {"file": "elsewhere.onnx"}, "bands": ["B02"],
                                "scaling": {"reflectance": False, "factor": 0.001}, "chip_size": 64,
                                "output": {"type": "softmax", "cloud_class": 1}, "provides": ["cloud"]}))
    result = run("computecloudprob", {"INPUT": str(stacked.raster), "MODEL": "custom", "CUSTOM_CARD": str(card),
                                      "CUSTOM_ONNX": str(model), "OUTPUT": str(tmp_path / "p.tif")})
    with rasterio.open(result["OUTPUT"]) as src, rasterio.open(stacked.raster) as stack_src:
        expected = 1 / (1 + np.exp(-stack_src.read(2).astype(float) * 0.001))
        np.testing.assert_allclose(src.read(1), expected, atol=1e-5)


def test_custom_choice_without_a_card(s2masks_provider, stacked, tmp_path):
    with pytest.raises(QgsProcessingException, match="needs its model card"):
        run("computecloudprob", {"INPUT": str(stacked.raster), "MODEL": "custom", "OUTPUT": str(tmp_path / "p.tif")})
    assert not (tmp_path / "p.tif").exists()


def test_cancel_writes_nothing(s2masks_provider, stacked, tmp_path):
    feedback = QgsProcessingFeedback()
    feedback.cancel()
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        run("computecloudprob", {"INPUT": str(stacked.raster), "OUTPUT": str(tmp_path / "p.tif")}, feedback)
    assert not (tmp_path / "p.tif").exists()


@pytest.mark.qgis_process
def test_qgis_process_run(enabled_qgis_process_env, stacked, tmp_path):
    target = tmp_path / "cloud.tif"
    result = subprocess.run(["/usr/bin/qgis_process.bin", "run", "s2masks:computecloudprob", "--",
                             f"INPUT={stacked.raster}", f"OUTPUT={target}"], env=enabled_qgis_process_env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert target.exists() and str(target) in result.stdout
