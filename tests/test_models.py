"""Models a user can manage: cards and weights in user folders outside the plugin (the QGIS
profile's s2masks/models, a folder from the plugin settings), only installed models offered, by
name and in the same order everywhere, the others listed with how to install them, and the
numbers of earlier releases still accepted."""

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from onnx_helpers import band_logit_model
from qgis.core import QgsApplication, QgsProcessingContext, QgsProcessingException, QgsProcessingFeedback, QgsSettings

from s2masks.algorithms import probability
from s2masks.core import inference, models
from s2masks.core.errors import InputError

MODEL_ALGORITHMS = ("computecloudprob", "computeshadowprob", "computecloudshadowprob", "improvecloudmask",
                    "preprocesss2improvedmasks")


def write_user_card(folder, card_id="user-tiny", weights="user-tiny.onnx", **overrides):
    """A card in `folder` for a one-band model whose cloud probability is sigmoid(B02 x 0.001)."""
    card = {"id": card_id, "name": "A user's tiny model", "weights": {"file": weights}, "bands": ["B02"],
            "scaling": {"reflectance": False, "factor": 0.001}, "native_resolution": 10, "chip_size": 32,
            "output": {"type": "softmax", "classes": ["clear", "cloud"], "cloud_class": 1},
            "mask_rule": {"type": "threshold", "cloud": 0.5}, "provides": ["cloud"],
            "install": "ask the colleague who trained it"}
    card.update(overrides)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{card_id}.json").write_text(json.dumps(card))
    return folder / f"{card_id}.json"


@pytest.fixture
def user_folder(tmp_path):
    """A user model folder holding a tiny model with its card, and a card whose weights are missing."""
    folder = tmp_path / "my models"
    write_user_card(folder)
    band_logit_model(folder / "user-tiny.onnx", in_channels=1)
    write_user_card(folder, "user-absent", "absent.onnx")
    return folder


@pytest.fixture
def models_setting(user_folder):
    """The plugin setting pointing at the user folder, removed afterwards."""
    settings = QgsSettings()
    before = settings.value(probability.MODELS_FOLDER_SETTING)
    settings.setValue(probability.MODELS_FOLDER_SETTING, str(user_folder))
    yield user_folder
    if before is None:
        settings.remove(probability.MODELS_FOLDER_SETTING)
    else:
        settings.setValue(probability.MODELS_FOLDER_SETTING, before)


# -- core: the catalogue -----------------------------------------------------------------------------
def test_user_folder_cards_are_installed_when_their_weights_are_present(user_folder, tmp_path):
    found = models.catalogue([tmp_path / "does not exist", user_folder])
    installed = [card.id for card in found.installed("cloud")]
    assert installed[0] == "ukis-csmask-6b-l2a" and "user-tiny" in installed and "user-absent" not in installed
    assert "user-absent" in [card.id for card in found.missing("cloud")]
    assert "farmvibes-cloud-model1" not in installed  # FarmVibes' weights are not shipped
    hint = found.find("user-absent").install_hint()
    assert f"Copy absent.onnx into {tmp_path / 'does not exist'}" in hint and "ask the colleague" in hint
    with pytest.raises(InputError, match="weights of model 'user-absent' are missing. Copy absent.onnx"):
        found.find("user-absent").weights_path()
    assert models.catalogue([]).find("user-tiny") is None


def test_farmvibes_weights_in_the_user_folder_work_with_the_shipped_card(tmp_path):
    """FarmVibes' own file (here a stand-in with its contract: 12 bands, 512 x 512 chips) dropped
    into the user folder is found by the card shipped in models/."""
    folder = tmp_path / "user"
    folder.mkdir()
    found = models.catalogue([folder])
    assert "farmvibes-cloud-model2" not in [card.id for card in found.installed()]
    hint = found.find("farmvibes-cloud-model2").install_hint()
    assert hint.startswith(f"Copy cloud_model2_cpu.onnx into {folder}: download op_resources/cloud_models/")
    band_logit_model(folder / "cloud_model2_cpu.onnx", in_channels=12)
    card = models.catalogue([folder]).find("farmvibes-cloud-model2")
    assert card.installed() and card.weights_path() == folder / "cloud_model2_cpu.onnx"
    assert card.card_path.parent == models.MODELS_DIR
    inference.OnnxModel(card)  # the stand-in meets the card's contract


def test_a_user_card_replaces_the_shipped_one_and_a_broken_one_is_listed(tmp_path):
    folder = tmp_path / "user"
    write_user_card(folder, "farmvibes-shadow", "shadow.onnx", provides=["shadow"],
                    output={"type": "sigmoid", "channel": 0}, mask_rule={"type": "threshold", "shadow": 0.4})
    (folder / "broken.json").write_text("{not json")
    found = models.catalogue([folder])
    assert found.find("farmvibes-shadow").card_path == folder / "farmvibes-shadow.json"
    assert found.find("farmvibes-shadow").rule("shadow") == ("threshold", 0.4)
    assert [path for path, _ in found.unreadable] == [folder / "broken.json"]
    assert "ukis-csmask-6b-l2a" in [card.id for card in found.installed()]


# -- algorithms: the MODEL parameters -------------------------------------------------------------------
def model_options(provider):
    """{algorithm: {target: options}} of every parameter that chooses a model."""
    found = {}
    for name in MODEL_ALGORITHMS:
        algorithm = provider.algorithm(name)
        for definition in algorithm.parameterDefinitions():
            if definition.name().endswith("MODEL"):
                target = {"MODEL": "cloud" if "cloud" in name else "shadow"}.get(definition.name(),
                                                                                 definition.name()[:-6].lower())
                found.setdefault(name, {})[target] = (definition.options(), definition.defaultValue(),
                                                      definition.usesStaticStrings())
    return found


def test_every_algorithm_offers_the_same_models_by_name(s2masks_provider):
    found = model_options(s2masks_provider)
    assert set(found) == set(MODEL_ALGORITHMS)
    for target in ("cloud", "shadow"):
        lists = {name: targets[target] for name, targets in found.items() if target in targets}
        assert len(lists) == 4 and len(set(map(repr, lists.values()))) == 1, lists
        options, default, by_name = next(iter(lists.values()))
        assert by_name and default == "ukis-csmask-6b-l2a" and options[-1] == "custom"
        assert options == [card.id for card in models.catalogue(probability.user_model_folders()).installed(target)] \
            + ["custom"]
    # a model that gives both is at the same place in both lists
    cloud, shadow = found["computecloudshadowprob"]["cloud"][0], found["computecloudshadowprob"]["shadow"][0]
    assert [name for name in cloud if name in shadow] == [name for name in shadow if name in cloud]
    assert "ukis-csmask-4b-l2a" in cloud and "farmvibes-cloud-model1" not in cloud


def test_the_profile_folder_is_searched_first():
    assert probability.user_model_folders()[0] == Path(QgsApplication.qgisSettingsDirPath()) / "s2masks" / "models"


def run(algorithm, parameters):
    import processing

    return processing.run(f"s2masks:{algorithm}", parameters, context=QgsProcessingContext(),
                          feedback=QgsProcessingFeedback())


def test_a_user_model_is_offered_and_used(s2masks_provider, models_setting, stacked, tmp_path):
    algorithm = QgsApplication.processingRegistry().createAlgorithmById("s2masks:computecloudprob")
    options = algorithm.parameterDefinition("MODEL").options()
    assert "user-tiny" in options and "user-absent" not in options
    text = algorithm.shortHelpString()
    assert "user-tiny (A user's tiny model)" in text
    assert "Not installed: " in text and "user-absent: Copy absent.onnx into" in text
    assert "farmvibes-shadow" not in text  # a shadow model is not offered for cloud
    both = QgsApplication.processingRegistry().createAlgorithmById("s2masks:computecloudshadowprob")
    assert both.parameterDefinition("CLOUD_MODEL").options() == options
    assert "user-tiny" not in both.parameterDefinition("SHADOW_MODEL").options()

    result = run("computecloudprob", {"INPUT": str(stacked.raster), "MODEL": "user-tiny",
                                      "OUTPUT": str(tmp_path / "p.tif")})
    with rasterio.open(result["OUTPUT"]) as src, rasterio.open(stacked.raster) as stack_src:
        assert src.tags()["S2MASKS_MODEL"] == "user-tiny" and src.tags()["S2MASKS_THRESHOLD"] == "0.5"
        expected = 1 / (1 + np.exp(-stack_src.read(2).astype(float) * 0.001))
        np.testing.assert_allclose(src.read(1), expected, atol=1e-5)


def test_a_model_that_is_not_installed_is_refused_with_how_to_install_it(s2masks_provider, stacked, tmp_path):
    for value in ("farmvibes-cloud-model2", 2, "2"):  # by name, or by its number in earlier releases
        with pytest.raises(QgsProcessingException, match=r"MODEL: model farmvibes-cloud-model2 is not installed. "
                                                         r"Copy cloud_model2_cpu.onnx into .*s2masks/models"):
            run("computecloudprob", {"INPUT": str(stacked.raster), "MODEL": value, "OUTPUT": str(tmp_path / "p.tif")})
    with pytest.raises(QgsProcessingException, match="no-such-model"):
        run("computecloudprob", {"INPUT": str(stacked.raster), "MODEL": "no-such-model",
                                 "OUTPUT": str(tmp_path / "p.tif")})
    assert not (tmp_path / "p.tif").exists()


@pytest.mark.parametrize("cloud, shadow", [(0, 2), ("0", "2")])
def test_numbers_of_earlier_releases_still_work(s2masks_provider, stacked, tmp_path, cloud, shadow):
    """Saved models and scripts gave the models by number: 0 the 6-band model, 6 (cloud) / 2
    (shadow) the 4-band model, as the lists of those releases had them."""
    result = run("computecloudshadowprob", {"INPUT": str(stacked.raster), "CLOUD_MODEL": cloud,
                                            "SHADOW_MODEL": shadow, "CLOUD_OUTPUT": str(tmp_path / "c.tif"),
                                            "SHADOW_OUTPUT": str(tmp_path / "s.tif")})
    for key, model in (("CLOUD_OUTPUT", "ukis-csmask-6b-l2a"), ("SHADOW_OUTPUT", "ukis-csmask-4b-l2a")):
        with rasterio.open(result[key]) as src:
            assert src.tags()["S2MASKS_MODEL"] == model


def test_a_number_of_earlier_releases_in_a_step_run_without_checks(s2masks_provider, stacked, tmp_path):
    """A saved model's step runs without checkParameterValues: the number is still understood."""
    algorithm = QgsApplication.processingRegistry().createAlgorithmById("s2masks:computecloudprob")
    results, ok = algorithm.run({"INPUT": str(stacked.raster), "MODEL": 6, "OUTPUT": str(tmp_path / "p.tif")},
                                QgsProcessingContext(), QgsProcessingFeedback())
    assert ok
    with rasterio.open(results["OUTPUT"]) as src:
        assert src.tags()["S2MASKS_MODEL"] == "ukis-csmask-4b-l2a"


def test_custom_by_name_and_by_its_former_number(s2masks_provider, stacked, tmp_path):
    card = write_user_card(tmp_path / "elsewhere", weights="missing.onnx")
    model = band_logit_model(tmp_path / "m.onnx", in_channels=1)
    for value in ("custom", 7):
        result = run("computecloudprob", {"INPUT": str(stacked.raster), "MODEL": value, "CUSTOM_CARD": str(card),
                                          "CUSTOM_ONNX": str(model), "OUTPUT": str(tmp_path / f"p{value}.tif")})
        with rasterio.open(result["OUTPUT"]) as src:
            assert src.tags()["S2MASKS_MODEL"] == "user-tiny"
