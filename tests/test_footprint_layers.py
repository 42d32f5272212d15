"""Footprint layers as a user sees them once loaded (Toolbox, processing.runAndLoadResults): hollow
outlines labelled "<tile> <cloud cover>%", a map tip with the scene's preview, and an action that
opens the preview. Run against the loopback double in a fresh project."""

import json

import pytest
from qgis.core import (
    Qgis,
    QgsAction,
    QgsExpression,
    QgsExpressionContext,
    QgsExpressionContextUtils,
    QgsProject,
    QgsSingleSymbolRenderer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import Qt

from conftest import DATA

ARCTIC_EXTENT = "90,100,80,83 [EPSG:4326]"
TWO_ZONE_EXTENT = "93.254,95.073,80.933,82.313 [EPSG:4326]"
IRELAND_EXTENT = "-8.74,-8.62,53.09,53.16 [EPSG:4326]"  # the real T29UNU scene, 60% cloud
OPEN_URL = Qgis.AttributeActionType.OpenUrl if hasattr(Qgis, "AttributeActionType") else QgsAction.ActionType.OpenUrl


def recorded_rendered_previews():
    items = json.loads((DATA / "stac" / "pc_items_2024-04_baseline05.10_x4.json").read_text())
    return {item["properties"]["s2:mgrs_tile"]: item["assets"]["rendered_preview"]["href"] for item in items}


@pytest.fixture
def project(qgis_new_project, loading_project):
    return loading_project


def run_and_load(algorithm, parameters):
    import processing

    return processing.runAndLoadResults(f"s2masks:{algorithm}", parameters)


def loaded_layer(result):
    """The layer Processing put into the project for result['OUTPUT'] (a layer id or a file path)."""
    output = result["OUTPUT"]
    layer = QgsProject.instance().mapLayer(output)
    if layer is None:
        matches = [lyr for lyr in QgsProject.instance().mapLayers().values()
                   if lyr.source().split("|")[0] == str(output).split("|")[0]]
        assert len(matches) == 1, (output, [lyr.source() for lyr in QgsProject.instance().mapLayers().values()])
        layer = matches[0]
    assert isinstance(layer, QgsVectorLayer) and layer.isValid()
    return layer


def evaluate(layer, feature, expression_text):
    expression = QgsExpression(expression_text)
    assert not expression.hasParserError(), expression.parserErrorString()
    context = QgsExpressionContext(QgsExpressionContextUtils.globalProjectLayerScopes(layer))
    context.setFeature(feature)
    value = expression.evaluate(context)
    assert not expression.hasEvalError(), expression.evalErrorString()
    return value


def expand(layer, feature, template):
    """A template with [% expressions %] (map tip, action command) as QGIS fills it for a feature."""
    context = QgsExpressionContext(QgsExpressionContextUtils.globalProjectLayerScopes(layer))
    context.setFeature(feature)
    return QgsExpression.replaceExpressionText(template, context)


def map_tip(layer, feature):
    return expand(layer, feature, layer.mapTipTemplate())


def by_tile(layer):
    return {feature["mgrs_tile"]: feature for feature in layer.getFeatures()}


def assert_footprint_style(layer):
    """Hollow outline, label expression on tile and cloud cover, map tip, one OpenUrl action."""
    renderer = layer.renderer()
    assert isinstance(renderer, QgsSingleSymbolRenderer)
    symbol_layer = renderer.symbol().symbolLayer(0)
    assert (symbol_layer.brushStyle() == Qt.BrushStyle.NoBrush or symbol_layer.fillColor().alpha() == 0)
    assert symbol_layer.strokeStyle() != Qt.PenStyle.NoPen
    assert symbol_layer.strokeColor().alpha() == 255 and symbol_layer.strokeWidth() > 0
    assert layer.labelsEnabled() and layer.labeling() is not None
    settings = layer.labeling().settings()
    assert settings.isExpression and "mgrs_tile" in settings.fieldName and "cloud_cover" in settings.fieldName
    assert '"preview_url"' in layer.mapTipTemplate()
    actions = layer.actions().actions()
    assert len(actions) == 1
    assert actions[0].type() == OPEN_URL and "preview_url" in actions[0].command()
    assert actions[0].name() == "Show scene preview"
    return settings.fieldName


@pytest.mark.parametrize("output", ["TEMPORARY_OUTPUT", "footprints.gpkg"])
def test_listed_footprints_load_as_labelled_outlines_with_preview(s2masks_provider, pc_double, project, tmp_path,
                                                                  output):
    result = run_and_load("listsentinel2products", {
        "EXTENT": ARCTIC_EXTENT, "START_DATE": "2024-04-01", "END_DATE": "2024-04-30", "STAC_URL": pc_double.url,
        "OUTPUT": output if output == "TEMPORARY_OUTPUT" else str(tmp_path / output)})
    assert result is not None and result["COUNT"] == 4
    layer = loaded_layer(result)
    label = assert_footprint_style(layer)
    features = by_tile(layer)
    assert set(features) == {"46XER", "46XES", "47XMJ", "47XML"}
    xml = features["47XML"]
    assert xml["cloud_cover"] == pytest.approx(0.219774)
    assert evaluate(layer, xml, label) == "47XML 0%"
    # the preview is Planetary Computer's rendered PNG (its data API, which the double leaves alone)
    previews = recorded_rendered_previews()
    assert {tile: f["preview_url"] for tile, f in features.items()} == previews
    assert xml["preview_url"].startswith("https://planetarycomputer.microsoft.com/api/data/v1/item/preview.png?")
    tip = map_tip(layer, xml)
    assert "47XML" in tip and "2024-04-19 09:55:49" in tip and "0.2 %" in tip
    assert f'<img src="{previews["47XML"]}"' in tip
    # the action opens exactly that link
    assert expand(layer, xml, layer.actions().actions()[0].command()) == previews["47XML"]


def test_label_of_the_real_cloudy_scene_and_a_scene_without_preview(s2masks_provider, pc_double, project):
    result = run_and_load("listsentinel2products", {
        "EXTENT": IRELAND_EXTENT, "START_DATE": "2022-10-01", "END_DATE": "2022-10-10", "STAC_URL": pc_double.url,
        "OUTPUT": "TEMPORARY_OUTPUT"})
    layer = loaded_layer(result)
    label = assert_footprint_style(layer)
    (feature,) = layer.getFeatures()
    assert evaluate(layer, feature, label) == "29UNU 60%"
    # the fixture item has neither rendered_preview nor thumbnail: empty link, no broken image
    assert feature["preview_url"] == ""
    tip = map_tip(layer, feature)
    assert "29UNU" in tip and "59.8 %" in tip and "<img" not in tip


def test_selected_footprints_load_styled_and_keep_the_preview(s2masks_provider, pc_double, project):
    import processing

    listed = processing.run("s2masks:listsentinel2products", {
        "EXTENT": ARCTIC_EXTENT, "START_DATE": "2024-04-01", "END_DATE": "2024-04-30", "STAC_URL": pc_double.url,
        "OUTPUT": "memory:footprints"})
    result = run_and_load("selectnecessarycoverageitems", {
        "FOOTPRINTS": listed["OUTPUT"], "EXTENT": TWO_ZONE_EXTENT, "MIN_TILE_COVER": 0.99,
        "OUTPUT": "TEMPORARY_OUTPUT"})
    assert result is not None and result["ACQUISITIONS"] == 1
    layer = loaded_layer(result)
    label = assert_footprint_style(layer)
    features = by_tile(layer)
    assert set(features) == {"47XML", "46XES"}
    previews = recorded_rendered_previews()
    assert all(features[tile]["preview_url"] == previews[tile] for tile in features)
    assert evaluate(layer, features["46XES"], label) == "46XES 1%"  # 0.843375 % rounds to 1


def test_preview_url_falls_back_to_a_viewable_thumbnail():
    from s2masks.algorithms.footprints import preview_url

    png = {"href": "https://example.org/p.png", "type": "image/png", "roles": ["overview"]}
    tiff = {"href": "https://example.org/PVI.tif", "type": "image/tiff; application=geotiff", "roles": ["thumbnail"]}
    jpeg = {"href": "https://example.org/t.jpg", "type": "image/jpeg", "roles": ["thumbnail"]}
    assert preview_url({"assets": {"rendered_preview": png, "thumbnail": jpeg}}) == png["href"]
    assert preview_url({"assets": {"thumbnail": jpeg, "preview": tiff}}) == jpeg["href"]
    assert preview_url({"assets": {"preview": tiff, "other": jpeg}}) == jpeg["href"]
    assert preview_url({"assets": {"preview": tiff}}) == ""  # a GeoTIFF shows in no map tip
    assert preview_url({}) == ""


def test_styling_twice_adds_one_action(s2masks_provider):
    from s2masks.algorithms import footprints

    layer = QgsVectorLayer("MultiPolygon?crs=EPSG:4326", "footprints", "memory")
    layer.dataProvider().addAttributes(list(footprints.fields()))
    layer.updateFields()
    footprints.apply_footprint_style(layer)
    footprints.apply_footprint_style(layer)
    assert len(layer.actions().actions()) == 1
    assert_footprint_style(layer)
