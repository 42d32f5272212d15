"""The two Processing algorithms run as a user runs them (processing.run), against the
loopback double, including every bad input of the issue."""

import json
from datetime import date, timedelta

import pytest
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeature,
    QgsGeometry,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsRectangle,
    QgsReferencedRectangle,
    QgsVectorLayer,
)

ARCTIC_EXTENT = "90,100,80,83 [EPSG:4326]"  # xmin,xmax,ymin,ymax
TWO_ZONE_EXTENT = "93.254,95.073,80.933,82.313 [EPSG:4326]"


class RecordingFeedback(QgsProcessingFeedback):
    def __init__(self):
        super().__init__()
        self.warnings, self.infos = [], []

    def pushWarning(self, text):  # noqa: N802
        self.warnings.append(text)

    def pushInfo(self, text):  # noqa: N802
        self.infos.append(text)


def run(algorithm, parameters, feedback=None):
    import processing

    context = QgsProcessingContext()
    return processing.run(f"s2masks:{algorithm}", parameters, context=context,
                          feedback=feedback or QgsProcessingFeedback()), context


def list_parameters(double, **overrides):
    parameters = {"EXTENT": ARCTIC_EXTENT, "START_DATE": "2024-04-01", "END_DATE": "2024-04-30",
                  "STAC_URL": double.url, "OUTPUT": "memory:footprints"}
    parameters.update(overrides)
    return parameters


def layer_of(result, context):
    output = result["OUTPUT"]
    return output if isinstance(output, QgsVectorLayer) else context.getMapLayer(output) or QgsVectorLayer(output)


def test_list_writes_footprints(s2masks_provider, pc_double, tmp_path):
    target = tmp_path / "footprints.gpkg"
    result, _ = run("listsentinel2products", list_parameters(pc_double, OUTPUT=str(target)))
    assert result["COUNT"] == 4
    layer = QgsVectorLayer(str(target))
    assert layer.isValid() and layer.featureCount() == 4 and layer.crs().authid() == "EPSG:4326"
    features = {f["mgrs_tile"]: f for f in layer.getFeatures()}
    assert set(features) == {"46XER", "46XES", "47XMJ", "47XML"}
    xml = features["47XML"]
    assert xml["epsg"] == 32647 and xml["platform"] == "S2B" and xml["rel_orbit"] == 122
    assert xml["abs_orbit"] == 37185 and xml["baseline"] == "05.10" and xml["refl_offset"] == -1000
    assert xml["datetime"] == "2024-04-19T09:55:49.024000Z"
    assert 0 < xml["area_cover"] < 0.2  # a 10 x 3 degree extent is much larger than one tile
    assert json.loads(xml["item_json"])["id"] == xml["item_id"]
    assert xml["self_href"].startswith(pc_double.url)
    assert xml.geometry().boundingBox().xMinimum() == pytest.approx(92.6218839)
    del layer


def test_area_from_a_polygon_layer_in_another_crs(s2masks_provider, pc_double):
    # the two-zone area as a polygon in UTM 46N
    area = QgsVectorLayer("Polygon?crs=EPSG:32646", "area", "memory")
    feature = QgsFeature()
    geometry = QgsGeometry.fromWkt("POLYGON((93.254 80.933, 95.073 80.933, 95.073 82.313, 93.254 82.313, 93.254 80.933))")
    from qgis.core import QgsProject

    geometry.transform(QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:4326"),
                                              QgsCoordinateReferenceSystem("EPSG:32646"), QgsProject.instance()))
    feature.setGeometry(geometry)
    area.dataProvider().addFeatures([feature])
    listed, context = run("listsentinel2products", list_parameters(pc_double, EXTENT=None, AREA=area))
    footprints = layer_of(listed, context)
    selected, context = run("selectnecessarycoverageitems",
                            {"FOOTPRINTS": footprints, "AREA": area, "OUTPUT": "memory:selected"})
    chosen = layer_of(selected, context)
    assert sorted(f["mgrs_tile"] for f in chosen.getFeatures()) == ["46XES", "47XML"]
    assert selected["ACQUISITIONS"] == 1 and selected["DROPPED"] == 0


def test_list_output_feeds_selection(s2masks_provider, pc_double, tmp_path):
    listed, _ = run("listsentinel2products", list_parameters(pc_double, OUTPUT=str(tmp_path / "all.gpkg")))
    selected, _ = run("selectnecessarycoverageitems", {
        "FOOTPRINTS": listed["OUTPUT"], "EXTENT": TWO_ZONE_EXTENT, "MIN_TILE_COVER": 0.99,
        "OUTPUT": str(tmp_path / "selected.gpkg")})
    layer = QgsVectorLayer(selected["OUTPUT"])
    features = sorted(layer.getFeatures(), key=lambda f: f["pass_order"])
    assert [f["mgrs_tile"] for f in features] == ["47XML", "46XES"]  # larger share of the area first
    assert [f["pass_order"] for f in features] == [1, 2]
    assert features[0]["pass_cover"] >= 0.99
    # everything the download step needs travels with the feature
    item = json.loads(features[0]["item_json"])
    assert {"B02", "B8A", "SCL"} <= set(item["assets"])
    del layer


def test_selection_with_too_few_tiles_warns_and_writes_empty_layer(s2masks_provider, pc_double):
    listed, context = run("listsentinel2products", list_parameters(pc_double))
    feedback = RecordingFeedback()
    selected, context = run("selectnecessarycoverageitems", {
        "FOOTPRINTS": layer_of(listed, context), "EXTENT": TWO_ZONE_EXTENT, "MAX_TILES_PER_TIME": 1,
        "OUTPUT": "memory:"}, feedback)
    assert layer_of(selected, context).featureCount() == 0
    assert selected["DROPPED"] == 1
    assert any("max_tiles_per_time" in w for w in feedback.warnings)
    assert any("dropped" in i for i in feedback.infos)


def test_nothing_found_is_an_empty_layer_and_a_warning(s2masks_provider, pc_double):
    feedback = RecordingFeedback()
    result, context = run("listsentinel2products",
                          list_parameters(pc_double, EXTENT="10,11,40,41 [EPSG:4326]"), feedback)
    assert result["COUNT"] == 0 and layer_of(result, context).featureCount() == 0
    assert any("No Sentinel-2 L2A product found" in w for w in feedback.warnings)


# A local engineering CRS: valid, but with no transformation to WGS84.
LOCAL_CRS = QgsCoordinateReferenceSystem.fromWkt(
    'ENGCRS["local",EDATUM["site"],CS[Cartesian,2],AXIS["x",east,ORDER[1],LENGTHUNIT["metre",1]],'
    'AXIS["y",north,ORDER[2],LENGTHUNIT["metre",1]]]')
TOMORROW = (date.today() + timedelta(days=1)).isoformat()


@pytest.mark.parametrize("overrides, message", [
    ({"EXTENT": "10,10,40,41 [EPSG:4326]"}, "no surface"),
    ({"EXTENT": None}, "No area given"),
    ({"EXTENT": QgsReferencedRectangle(QgsRectangle(0, 0, 1, 1), LOCAL_CRS)}, "could not be transformed from local"),
    ({"EXTENT": "1e12,1.1e12,1e12,1.1e12 [EPSG:32633]"}, "could not be transformed from EPSG:32633"),
    ({"START_DATE": "2024-04-30", "END_DATE": "2024-04-01"}, "before the start date"),
    ({"START_DATE": TOMORROW, "END_DATE": TOMORROW}, "in the future"),
    ({"STAC_URL": "http://127.0.0.1:9/api/stac/v1", "ATTEMPTS": 2}, "127.0.0.1:9/api/stac/v1 failed after 2 attempts"),
])
def test_list_bad_input_writes_nothing(s2masks_provider, pc_double, tmp_path, overrides, message):
    target = tmp_path / "out.gpkg"
    with pytest.raises(QgsProcessingException, match=message):
        run("listsentinel2products", list_parameters(pc_double, OUTPUT=str(target), **overrides))
    assert not target.exists()


def test_list_api_without_collection(s2masks_provider, pc_double_without_collection, tmp_path):
    target = tmp_path / "out.gpkg"
    with pytest.raises(QgsProcessingException, match="has no collection 'sentinel-2-l2a'"):
        run("listsentinel2products", list_parameters(pc_double_without_collection, OUTPUT=str(target)))
    assert not target.exists()


def test_list_server_error_after_retries(s2masks_provider, pc_double, tmp_path):
    pc_double.inject("/api/stac/v1/search", "status", times=10, status=502)
    target = tmp_path / "out.gpkg"
    with pytest.raises(QgsProcessingException, match=r"/api/stac/v1/search failed after 2 attempts: HTTP 502"):
        run("listsentinel2products", list_parameters(pc_double, OUTPUT=str(target), ATTEMPTS=2))
    assert not target.exists()


@pytest.mark.parametrize("overrides, message", [
    ({"MIN_TILE_COVER": 0.0}, "min_tile_cover must be a fraction in"),
    ({"MAX_TILES_PER_TIME": 0}, r"MAX_TILES_PER_TIME\): 0 is out of range. Give a whole number of 1 or more"),
    ({"EXTENT": "94,94,81,82 [EPSG:4326]"}, "no surface"),
])
def test_select_bad_input_writes_nothing(s2masks_provider, pc_double, tmp_path, overrides, message):
    listed, context = run("listsentinel2products", list_parameters(pc_double))
    target = tmp_path / "selected.gpkg"
    parameters = {"FOOTPRINTS": layer_of(listed, context), "EXTENT": TWO_ZONE_EXTENT, "OUTPUT": str(target)}
    parameters.update(overrides)
    with pytest.raises(QgsProcessingException, match=message):
        run("selectnecessarycoverageitems", parameters)
    assert not target.exists()


def test_min_tile_cover_above_one_is_refused(s2masks_provider, pc_double, tmp_path):
    listed, context = run("listsentinel2products", list_parameters(pc_double))
    target = tmp_path / "selected.gpkg"
    with pytest.raises(QgsProcessingException):
        run("selectnecessarycoverageitems", {"FOOTPRINTS": layer_of(listed, context), "EXTENT": TWO_ZONE_EXTENT,
                                             "MIN_TILE_COVER": 1.5, "OUTPUT": str(target)})
    assert not target.exists()


def test_select_refuses_footprints_without_item_json(s2masks_provider, pc_double):
    listed, context = run("listsentinel2products", list_parameters(pc_double))
    footprints = layer_of(listed, context)
    footprints.startEditing()
    for feature in footprints.getFeatures():
        footprints.changeAttributeValue(feature.id(), footprints.fields().indexOf("item_json"), '{"id": "S2B_MSIL2A_2')
    footprints.commitChanges()
    with pytest.raises(QgsProcessingException, match="Shapefile"):
        run("selectnecessarycoverageitems", {"FOOTPRINTS": footprints, "EXTENT": TWO_ZONE_EXTENT, "OUTPUT": "memory:"})
