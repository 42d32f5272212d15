"""In the graphical Modeler: the footprint output of List feeds the input of Select, and the models
the plugin ships in resources/models/ are valid, listed by the provider, and run (Processing and
qgis_process) to the composite's result."""

import subprocess
from pathlib import Path

import pytest
import rasterio
from qgis.core import (
    QgsApplication,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingModelAlgorithm,
    QgsProcessingModelChildAlgorithm,
    QgsProcessingModelChildParameterSource,
    QgsProcessingModelOutput,
    QgsProcessingModelParameter,
    QgsProcessingParameterDateTime,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterString,
    QgsVectorLayer,
)

from s2masks.algorithms.compat import DATE, FOLDER_BEHAVIOUR

MODELS = Path(__file__).resolve().parent.parent / "resources" / "models"
SHIPPED = sorted(MODELS.glob("*.model3"))
STEPS_MODEL = MODELS / "preprocess_s2_improved_masks_steps.model3"
STEPS_ID = "s2masks:preprocesss2improvedmaskssteps"
AREA = "-8.74,-8.62,53.09,53.16 [EPSG:4326]"  # inside the real T29UNU fixture scene
DATES = {"start_date": "2022-10-01", "end_date": "2022-10-10"}


def _child(algorithm_id, child_id, sources):
    child = QgsProcessingModelChildAlgorithm(algorithm_id)
    child.setChildId(child_id)
    for name, source in sources.items():
        child.addParameterSources(name, [source])
    return child


def build_list_and_select_model():
    model = QgsProcessingModelAlgorithm("List and select", "s2masks tests")
    for parameter in (QgsProcessingParameterExtent("area", "Area"), QgsProcessingParameterString("stac", "STAC API")):
        model.addModelParameter(parameter, QgsProcessingModelParameter(parameter.name()))
    from_model = QgsProcessingModelChildParameterSource.fromModelParameter
    static = QgsProcessingModelChildParameterSource.fromStaticValue
    model.addChildAlgorithm(_child("s2masks:listsentinel2products", "list", {
        "EXTENT": from_model("area"), "STAC_URL": from_model("stac"),
        "START_DATE": static("2024-04-01"), "END_DATE": static("2024-04-30")}))
    select = _child("s2masks:selectnecessarycoverageitems", "select", {
        "FOOTPRINTS": QgsProcessingModelChildParameterSource.fromChildOutput("list", "OUTPUT"),
        "EXTENT": from_model("area"), "MIN_TILE_COVER": static(0.99)})
    output = QgsProcessingModelOutput("selected", "Selected footprints")
    output.setChildId("select")
    output.setChildOutputName("OUTPUT")
    select.setModelOutputs({"selected": output})
    model.addChildAlgorithm(select)
    model.updateDestinationParameters()
    return model


def test_list_feeds_select_in_a_model(s2masks_provider, pc_double, tmp_path):
    import processing

    model = build_list_and_select_model()
    assert model.childAlgorithm("select").algorithm() is not None
    target = tmp_path / "selected.gpkg"
    destination = next(p.name() for p in model.destinationParameterDefinitions())
    result = processing.run(model, {"area": "93.254,95.073,80.933,82.313 [EPSG:4326]", "stac": pc_double.url,
                                    destination: str(target)},
                            context=QgsProcessingContext(), feedback=QgsProcessingFeedback())
    layer = QgsVectorLayer(result[destination])
    assert sorted(f["mgrs_tile"] for f in layer.getFeatures()) == ["46XES", "47XML"]
    del layer


def load_model(path):
    model = QgsProcessingModelAlgorithm()
    assert model.fromFile(str(path)), path
    return model


def improved_mask_key(algorithm):
    """The model output of Merge cloud masks' OUTPUT ('merge:improved_mask')."""
    return next(p.name() for p in algorithm.destinationParameterDefinitions() if p.name().endswith("improved_mask"))


def read(path):
    with rasterio.open(path) as src:
        return src.read()


def run_composite(pc_double, tmp_path):
    import processing

    return processing.run("s2masks:preprocesss2improvedmasks", {
        "EXTENT": AREA, "START_DATE": DATES["start_date"], "END_DATE": DATES["end_date"], "STAC_URL": pc_double.url,
        "CACHE_FOLDER": str(tmp_path / "cache"), "OUTPUT_FOLDER": str(tmp_path / "composite"),
        "FOOTPRINTS": "TEMPORARY_OUTPUT", "STATISTICS": "TEMPORARY_OUTPUT"},
        context=QgsProcessingContext(), feedback=QgsProcessingFeedback())


def test_the_steps_model_is_shipped():
    assert STEPS_MODEL in SHIPPED


@pytest.mark.parametrize("path", SHIPPED, ids=lambda path: path.name)
def test_shipped_model_is_valid(s2masks_provider, path):
    """What the Modeler checks when it opens the file: no errors for the model or any step."""
    model = load_model(path)
    assert model.validate() == (True, [])
    for child_id, child in model.childAlgorithms().items():
        assert child.algorithm() is not None, child.algorithmId()
        assert model.validateChildAlgorithm(child_id) == (True, []), child_id


def test_steps_model_takes_an_area_dates_and_a_folder(s2masks_provider):
    model = load_model(STEPS_MODEL)
    inputs = {p.name(): p for p in model.parameterDefinitions() if not p.isDestination()}
    assert isinstance(inputs["area"], QgsProcessingParameterExtent)
    for name in ("start_date", "end_date"):
        assert isinstance(inputs[name], QgsProcessingParameterDateTime) and inputs[name].dataType() == DATE
    assert isinstance(inputs["output_folder"], QgsProcessingParameterFile)
    assert inputs["output_folder"].behavior() == FOLDER_BEHAVIOUR
    # the dialog shows them in this order (without an order, QGIS 3.22 sorts inputs by name)
    assert [p.name() for p in model.parameterDefinitions()][:4] == ["area", "start_date", "end_date", "output_folder"]
    steps = [child.algorithmId() for child in model.childAlgorithms().values()]
    assert sorted(steps) == sorted(["s2masks:listsentinel2products", "s2masks:selectnecessarycoverageitems",
                                    "s2masks:downloadstacksentinel2", "s2masks:computecloudshadowprob",
                                    "s2masks:mergecloudmaskssimple"])
    # the probability step takes Download and stack's single raster, not Merge orbits' mosaic
    sources = model.childAlgorithm("probability").parameterSources()["INPUT"]
    assert [(s.outputChildId(), s.outputName()) for s in sources] == [("download", "RASTER")]


def test_provider_lists_the_shipped_models(s2masks_provider):
    registry = QgsApplication.processingRegistry()
    composite = registry.algorithmById("s2masks:preprocesss2improvedmasks")
    for path in SHIPPED:
        model = load_model(path)
        algorithm = registry.algorithmById(f"s2masks:{path.stem.replace('_', '')}")
        assert algorithm is not None and algorithm.provider().id() == "s2masks"
        assert algorithm.displayName() == model.displayName() and " " in algorithm.displayName()
        assert (algorithm.group(), algorithm.groupId()) == (composite.group(), composite.groupId())
        # loaded once its steps could be found: the same inputs and outputs as the file
        assert [p.name() for p in algorithm.parameterDefinitions()] == [p.name() for p in model.parameterDefinitions()]
        assert algorithm.create().validate() == (True, [])
    assert registry.algorithmById(STEPS_ID).displayName() == "Preprocess Sentinel-2 with improved masks, step by step"


def test_steps_model_by_id_gives_the_composite_mask(s2masks_provider, pc_double, tmp_path):
    import processing

    key = improved_mask_key(QgsApplication.processingRegistry().algorithmById(STEPS_ID))
    result = processing.run(STEPS_ID, dict(DATES, area=AREA, output_folder=str(tmp_path / "steps"),
                                           stac_url=pc_double.url, cache_folder=str(tmp_path / "cache"),
                                           **{key: str(tmp_path / "steps_mask.tif")}),
                            context=QgsProcessingContext(), feedback=QgsProcessingFeedback())
    composite = run_composite(pc_double, tmp_path)
    assert result[key] == str(tmp_path / "steps_mask.tif")
    assert (read(result[key]) == read(composite["MASKS"][0])).all()
    assert sorted(p.name for p in (tmp_path / "steps").glob("*.tif")) == [
        "S2A_20221005T115411_R023.tif", "S2A_20221005T115411_R023_mask.tif"]


@pytest.mark.qgis_process
def test_steps_model_file_runs_with_qgis_process(enabled_qgis_process_env, s2masks_provider, pc_double, tmp_path):
    env = enabled_qgis_process_env
    key = improved_mask_key(load_model(STEPS_MODEL))
    mask = tmp_path / "qgis_process_mask.tif"
    result = subprocess.run(
        ["/usr/bin/qgis_process.bin", "run", str(STEPS_MODEL), "--", f"area={AREA}",
         f"start_date={DATES['start_date']}", f"end_date={DATES['end_date']}", f"output_folder={tmp_path / 'steps'}",
         f"stac_url={pc_double.url}", f"cache_folder={tmp_path / 'cache'}", f"{key}={mask}"],
        env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{key}:\t{mask}" in result.stdout
    composite = run_composite(pc_double, tmp_path)
    assert (read(mask) == read(composite["MASKS"][0])).all()
    # the provider's copy is known to qgis_process by its id, with every input and the output
    described = subprocess.run(["/usr/bin/qgis_process.bin", "help", STEPS_ID], env=env, capture_output=True,
                               text=True, timeout=120)
    assert described.returncode == 0, described.stdout + described.stderr
    # the model's help lists its inputs and output (up to 3.40 as "(name):", 3.44 as lines "name: ...")
    for name in (key, "start_date"):
        assert f"({name}):" in described.stdout or f"\n{name}: " in described.stdout, described.stdout
