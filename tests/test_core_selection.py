"""Tile selection on the four real items of 2024-04-19 (tiles 46XER, 46XES in UTM 46 and
47XML, 47XMJ in UTM 47, near 81 N)."""

import copy
import random

import numpy as np
import pyproj
import pytest
import shapely
from shapely.geometry import box, shape

from s2masks.core import records, selection
from s2masks.core.errors import InputError

# Needs two tiles from two UTM zones; FarmVibes' greedy rule, measured in degrees, takes three.
TWO_ZONE_AREA = box(93.254, 80.933, 95.073, 82.313)


@pytest.fixture
def items(items_2024):
    return [records.parse_item(item) for item in items_2024]


def _tiles(results):
    return [item.mgrs_tile for item in selection.selected_items(results)]


def _reference_fraction(footprints, area):
    """Cover computed independently, in EASE-Grid 2.0 North (EPSG:6931, equal-area)."""
    to_ease = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:6931", always_xy=True)

    def project(geom):
        return shapely.transform(shapely.segmentize(geom, 0.01),
                                 lambda xy: np.column_stack(to_ease.transform(xy[:, 0], xy[:, 1])))

    union = shapely.union_all([project(fp) for fp in footprints])
    return union.intersection(project(area)).area / project(area).area


def test_true_minimal_set_spans_two_utm_zones(items):
    results = selection.select_necessary_coverage(items, TWO_ZONE_AREA, min_cover=0.99)
    assert len(results) == 1 and results[0].method == "exact"
    chosen = results[0].selected
    assert sorted(item.mgrs_tile for item in chosen) == ["46XES", "47XML"]
    assert {item.epsg for item in chosen} == {32646, 32647}
    footprints = {item.mgrs_tile: shape(item.footprint) for item in items}
    # minimal: no single tile reaches the cover, the chosen pair does
    assert all(_reference_fraction([fp], TWO_ZONE_AREA) < 0.99 for fp in footprints.values())
    assert _reference_fraction([footprints["46XES"], footprints["47XML"]], TWO_ZONE_AREA) >= 0.99
    assert results[0].cover == pytest.approx(
        _reference_fraction([footprints["46XES"], footprints["47XML"]], TWO_ZONE_AREA), abs=1e-4)


def test_farmvibes_greedy_in_degrees_needs_three_here(items):
    """The reason for the exact search: the greedy degree rule takes a redundant tile."""
    footprints = {item.mgrs_tile: shape(item.footprint) for item in items}
    remaining, chosen = TWO_ZONE_AREA, []
    candidates = list(footprints)
    while candidates and remaining.area >= 0.01 * TWO_ZONE_AREA.area:
        candidates.sort(key=lambda t: footprints[t].intersection(remaining).area, reverse=True)
        best = candidates.pop(0)
        chosen.append(best)
        remaining = remaining.difference(footprints[best])
    assert len(chosen) == 3


def test_cover_is_measured_in_metres_not_degrees(items):
    area = box(93.5, 81.5, 95.0, 82.5)
    fractions = selection.item_cover_fractions(items, area)
    for item in items:
        reference = _reference_fraction([shape(item.footprint)], area)
        in_degrees = shape(item.footprint).intersection(area).area / area.area
        assert fractions[item.id] == pytest.approx(reference, abs=1e-4)
        if reference > 0:
            assert abs(in_degrees - reference) > 0.01  # degrees would be wrong by >1 point here


def test_single_tile_when_one_suffices(items):
    results = selection.select_necessary_coverage(items, box(94.0, 81.1, 95.0, 81.8))
    # 46XER and 47XML both cover it fully; the tie goes to the newest processing (46XER 12:43:42)
    assert _tiles(results) == ["46XER"]
    assert results[0].cover == pytest.approx(1.0)


def test_result_does_not_depend_on_input_order(items):
    expected = _tiles(selection.select_necessary_coverage(items, TWO_ZONE_AREA))
    rng = random.Random(7)
    for _ in range(5):
        shuffled = items[:]
        rng.shuffle(shuffled)
        assert _tiles(selection.select_necessary_coverage(shuffled, TWO_ZONE_AREA)) == expected


def test_pass_below_min_cover_is_dropped_and_reported(items):
    area = box(93.0, 82.5, 96.0, 83.5)  # north of every footprint's top edge
    messages = []
    results = selection.select_necessary_coverage(items, area, min_cover=0.99, log=messages.append)
    assert selection.selected_items(results) == []
    assert "cover only" in results[0].dropped_reason
    assert any("dropped" in message for message in messages)
    # a lower threshold keeps it
    assert _tiles(selection.select_necessary_coverage(items, area, min_cover=0.2)) == ["46XES"]


def test_max_tiles_per_time_applies_to_the_chosen_set(items):
    dropped = selection.select_necessary_coverage(items, TWO_ZONE_AREA, max_tiles=1)
    assert dropped[0].selected == () and "max_tiles_per_time=1" in dropped[0].dropped_reason
    assert len(selection.select_necessary_coverage(items, TWO_ZONE_AREA, max_tiles=2)[0].selected) == 2


def test_reprocessed_copy_of_a_tile_is_chosen_once(items_2024, items):
    newer = copy.deepcopy(items_2024[2])  # 46XES, processed again later the same day
    newer["id"] = newer["id"].rsplit("_", 1)[0] + "_20240419T235959"
    results = selection.select_necessary_coverage(items + [records.parse_item(newer)], TWO_ZONE_AREA)
    chosen_ids = [item.id for item in results[0].selected]
    assert newer["id"] in chosen_ids and items_2024[2]["id"] not in chosen_ids


def test_passes_are_grouped_by_acquisition(items_2024, items):
    other_pass = copy.deepcopy(items_2024[3])
    other_pass["properties"]["datetime"] = "2024-04-22T09:45:49.024000Z"
    results = selection.select_necessary_coverage(items + [records.parse_item(other_pass)],
                                                  box(94.0, 81.1, 95.0, 81.8))
    assert [r.key[1].day for r in results] == [19, 22]
    assert all(len(r.selected) == 1 for r in results)


@pytest.mark.parametrize("min_cover, max_tiles, message", [
    (0.0, None, "min_tile_cover"), (1.5, None, "min_tile_cover"), (-0.1, None, "min_tile_cover"),
    (0.99, 0, "max_tiles_per_time"),
])
def test_bad_parameters(items, min_cover, max_tiles, message):
    with pytest.raises(InputError, match=message):
        selection.select_necessary_coverage(items, TWO_ZONE_AREA, min_cover, max_tiles)


def test_min_cover_of_one_is_allowed(items):
    assert _tiles(selection.select_necessary_coverage(items, box(94.0, 81.1, 95.0, 81.8), 1.0)) == ["46XER"]
