"""Parsing real Planetary Computer items into typed records."""

import json
from datetime import datetime, timezone

import pytest
from conftest import DATA

from s2masks.core import records
from s2masks.core.errors import InputError


def _item(name):
    return json.loads((DATA / "stac" / name).read_text())


def test_baseline_0510_item(items_2024):
    record = records.parse_item(items_2024[0])
    assert record.id == "S2B_MSIL2A_20240419T095549_R122_T47XML_20240419T123458"
    assert record.datetime == datetime(2024, 4, 19, 9, 55, 49, 24000, tzinfo=timezone.utc)
    assert record.platform == "S2B"
    assert record.mgrs_tile == "47XML"
    assert record.epsg == 32647
    assert record.relative_orbit == 122
    assert record.absolute_orbit == 37185  # from s2:datatake_id, no manifest request
    assert record.processing_baseline == "05.10"
    assert record.reflectance_offset == -1000
    assert record.cloud_cover == pytest.approx(0.219774)
    assert record.product_uri == "S2B_MSIL2A_20240419T095549_N0510_R122_T47XML_20240419T123458"
    assert record.footprint["type"] == "Polygon"
    assert record.self_href.endswith("/collections/sentinel-2-l2a/items/" + record.id)


def test_band_assets_carry_grid(items_2024):
    record = records.parse_item(items_2024[0])
    assert set(record.bands) == set(records.S2_BANDS) | {"SCL"}
    b02, b05, b01 = record.bands["B02"], record.bands["B05"], record.bands["B01"]
    assert (b02.gsd, b02.shape, b02.transform) == (10.0, (10980, 10980), (10.0, 0.0, 399960.0, 0.0, -10.0, 9100020.0))
    assert (b05.gsd, b05.shape) == (20.0, (5490, 5490))
    assert (b01.gsd, b01.shape) == (60.0, (1830, 1830))
    assert b02.href.startswith("https://sentinel2l2a01.blob.core.windows.net/") and "_B02_10m.tif" in b02.href


@pytest.mark.parametrize(
    "name, baseline, offset, orbit",
    [
        ("pc_item_2015-07_baseline02.12_T35XQA.json", "02.12", 0, None),
        ("pc_item_2022-06_baseline04.00_T24XWR.json", "04.00", -1000, None),
    ],
)
def test_reflectance_offset_follows_baseline(name, baseline, offset, orbit):
    item = _item(name)
    record = records.parse_item(item)
    assert record.processing_baseline == baseline
    assert record.reflectance_offset == offset
    expected_orbit = int(item["properties"]["s2:datatake_id"].split("_")[2])
    assert record.absolute_orbit == expected_orbit


@pytest.mark.parametrize("baseline, offset", [("03.99", 0), ("04.00", -1000), ("05.11", -1000), ("", 0)])
def test_offset_rule(baseline, offset):
    assert records.reflectance_offset(baseline) == offset


def test_item_without_properties_is_refused():
    with pytest.raises(InputError, match="not a Sentinel-2 L2A item"):
        records.parse_item({"id": "broken", "geometry": None})
