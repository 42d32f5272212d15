"""In the graphical Modeler, the footprint output of List feeds the input of Select."""

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingModelAlgorithm,
    QgsProcessingModelChildAlgorithm,
    QgsProcessingModelChildParameterSource,
    QgsProcessingModelOutput,
    QgsProcessingModelParameter,
    QgsProcessingParameterExtent,
    QgsProcessingParameterString,
    QgsVectorLayer,
)


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
