"""Area checks."""

import pytest
from conftest import polygon

from s2masks.core import geometry
from s2masks.core.errors import InputError


def test_bow_tie_polygon_is_repaired():
    # FarmVibes issue #194: vertices in "Z" order make a self-intersecting bow-tie
    bow_tie = {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}
    area = geometry.area_from_geojson(bow_tie)
    assert area.is_valid and area.area == pytest.approx(0.5)


@pytest.mark.parametrize("geojson", [
    polygon(10, 10, 10, 11),  # zero width
    {"type": "Point", "coordinates": [1, 2]},
    {"type": "Polygon", "coordinates": []},
    # corners on one meridian, and a square of 0.5 m: less than 1 m² on the ground
    {"type": "Polygon", "coordinates": [[[-8.7, 53.1], [-8.7, 53.12], [-8.7, 53.14], [-8.7, 53.1]]]},
    polygon(-8.7, 53.1, -8.7 + 0.5 / 67000, 53.1 + 0.5 / 111000),
])
def test_areas_without_surface_are_refused(geojson):
    with pytest.raises(InputError):
        geometry.area_from_geojson(geojson)


def test_area_outside_wgs84_range_is_refused():
    with pytest.raises(InputError, match="Check the layer's CRS"):
        geometry.area_from_geojson(polygon(500000, 4000000, 510000, 4010000))


def test_detailed_area_is_searched_by_its_hull():
    import shapely

    circle = shapely.Point(10, 50).buffer(0.1, quad_segs=400)
    searched = geometry.search_geometry(circle, max_vertices=500)
    assert len(searched["coordinates"][0]) < 500
    assert shapely.geometry.shape(searched).buffer(1e-9).covers(circle)  # a superset: no scene missed


def test_a_sliver_is_measured_without_a_topology_error():
    """A thin sliver can fold over itself once projected; it is repaired there, so measuring it works."""
    import shapely

    sliver = shapely.from_wkt("POLYGON((-8.7 53.1, -8.65 53.12, -8.6 53.14, -8.7 53.1))")
    area = geometry.area_from_geojson(shapely.geometry.mapping(sliver))
    projected = geometry.EqualAreaProjection(area).project(area)
    assert projected.is_valid and 0 < projected.area < 1e4  # square metres: a sliver, not a fold's artefact
    assert shapely.intersection(projected, projected.buffer(1)).area == pytest.approx(projected.area)
