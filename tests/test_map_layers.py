"""What a user sees on the map: the workflow run as the Toolbox runs it (`runAndLoadResults`),
then the project's layer tree, renderers, band mapping, class names and colours checked."""

import pytest
from qgis.core import (
    QgsLayerTreeGroup,
    QgsLayerTreeLayer,
    QgsMultiBandColorRenderer,
    QgsPalettedRasterRenderer,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProject,
    QgsRasterLayer,
    QgsSingleBandPseudoColorRenderer,
)

from s2masks.algorithms.probability import style_threshold
from s2masks.core import models

AREA = "-8.74,-8.62,53.09,53.16 [EPSG:4326]"
RUN_GROUP = "Sentinel-2 2022-10-01 to 2022-10-10 (-8.74, 53.09, -8.62, 53.16)"
DATE_GROUP = "2022-10-05 S2A_20221005T115411_R023"


@pytest.fixture
def project(loading_project):
    return loading_project


def run_and_load(pc_double, tmp_path, **extra):
    import processing

    parameters = dict(EXTENT=AREA, START_DATE="2022-10-01", END_DATE="2022-10-10", STAC_URL=pc_double.url,
                      CACHE_FOLDER=str(tmp_path / "cache"), OUTPUT_FOLDER=str(tmp_path / "out"),
                      FOOTPRINTS="TEMPORARY_OUTPUT", STATISTICS="TEMPORARY_OUTPUT", **extra)
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    return processing.runAndLoadResults("s2masks:preprocesss2improvedmasks", parameters,
                                        feedback=QgsProcessingFeedback(), context=context)


def tree(group):
    """The layer tree as nested (name, children) tuples, layers as their names."""
    return [(child.name(), tree(child)) if isinstance(child, QgsLayerTreeGroup) else child.name()
            for child in group.children()]


def layer(project, name):
    [found] = project.mapLayersByName(name)
    return found


def test_workflow_loads_one_group_per_run_and_per_date_styled(s2masks_provider, pc_double, tmp_path, project):
    run_and_load(pc_double, tmp_path)
    stem = "S2A_20221005T115411_R023"
    assert tree(project.layerTreeRoot()) == [(RUN_GROUP, [
        (DATE_GROUP, [f"{stem} improved mask", stem]),  # mask above raster
        "Statistics per acquisition", "Selected footprints"])]

    raster = layer(project, stem)
    renderer = raster.renderer()
    assert isinstance(renderer, QgsMultiBandColorRenderer)
    assert (renderer.redBand(), renderer.greenBand(), renderer.blueBand()) == (4, 3, 2)  # B04 B03 B02
    stretch = renderer.redContrastEnhancement()
    # a fixed reflectance stretch (0 .. 0.25, i.e. DN 2500), not min/max of a cloudy scene
    assert stretch.minimumValue() == 0 and stretch.maximumValue() in (0.25, 2500)

    mask = layer(project, f"{stem} improved mask").renderer()
    assert isinstance(mask, QgsPalettedRasterRenderer)
    classes = {c.value: (c.label, c.color.alpha()) for c in mask.classes()}
    assert classes == {0: ("Clear", 0), 1: ("Cloud", 180)}  # clear transparent, cloud lets the image show through
    assert len(mask.legendSymbologyItems()) == 2  # one legend entry per class


def test_optional_layers_load_when_asked(s2masks_provider, pc_double, tmp_path, project):
    run_and_load(pc_double, tmp_path, LOAD_CLASSES=True, LOAD_PROBABILITIES=True, LOAD_PRODUCT_MASK=True)
    stem = "S2A_20221005T115411_R023"
    date_group = project.layerTreeRoot().findGroup(RUN_GROUP).findGroup(DATE_GROUP)
    assert [child.name() for child in date_group.children()] == [
        f"{stem} improved mask", f"{stem} cloud classes", f"{stem} cloud probability",
        f"{stem} shadow probability", f"{stem} product mask", stem]
    assert all(isinstance(child, QgsLayerTreeLayer) for child in date_group.children())

    classes = layer(project, f"{stem} cloud classes").renderer()
    assert {c.value: (c.label, c.color.alpha() > 0) for c in classes.classes()} == {
        0: ("clear", False), 1: ("cloud", True), 2: ("cloud shadow", True), 255: ("no data", False)}
    for target in ("cloud", "shadow"):  # transparent where the default card's rule (argmax) never flags
        threshold = style_threshold(models.default_card(target), target)
        probability = layer(project, f"{stem} {target} probability")
        renderer = probability.renderer()
        assert isinstance(renderer, QgsSingleBandPseudoColorRenderer)
        items = renderer.shader().rasterShaderFunction().colorRampItemList()
        assert (items[0].value, items[-1].value) == (0.0, 1.0)
        assert all(item.color.alpha() == 0 for item in items if item.value < threshold)  # transparent below
        assert all(item.color.alpha() > 0 for item in items if item.value >= threshold)
    product = layer(project, f"{stem} product mask").renderer()
    assert isinstance(product, QgsPalettedRasterRenderer)
    assert [(c.label, c.color.alpha()) for c in product.classes()][:2] == [("clear", 0), ("opaque cloud (SCL 8, 9)", 180)]


def test_single_steps_load_their_outputs_styled(s2masks_provider, stacked, tmp_path, project):
    """A raster destination QGIS loads itself gets the .qml written beside it."""
    import processing

    context = QgsProcessingContext()
    context.setProject(project)
    result = processing.runAndLoadResults("s2masks:computecloudprob", {
        "INPUT": str(stacked.raster), "OUTPUT": str(tmp_path / "cloud.tif")}, context=context,
        feedback=QgsProcessingFeedback())
    [loaded] = [lyr for lyr in project.mapLayers().values() if isinstance(lyr, QgsRasterLayer)]
    assert loaded.source() == result["OUTPUT"]
    assert isinstance(loaded.renderer(), QgsSingleBandPseudoColorRenderer)
