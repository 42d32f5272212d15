"""Area of interest checks and area measurement in metres, not degrees.

FarmVibes measures coverage in EPSG:4326 degrees, which overweights the poleward part of
an area (at 80 N a degree of longitude is 5.7 times shorter than at the equator).
We project every geometry to a Lambert azimuthal equal-area projection centred on the
area, so ratios of areas are ratios of real ground areas, across UTM zones alike.
"""

import numpy as np

from .errors import InputError

# Longest segment, in degrees, before projecting: keeps long footprint edges faithful.
_DENSIFY_DEGREES = 0.05
# Less than this on the ground is no surface (a degenerate polygon keeps a rounding-error area).
MIN_AREA_M2 = 1.0


def area_from_geojson(geometry):
    """A user's area (GeoJSON dict, WGS84) -> a valid polygonal shapely geometry.

    Repairs self-intersections (FarmVibes issue #194: a bow-tie polygon that failed
    forever) and refuses what has no area.
    """
    import shapely
    from shapely.geometry import shape

    try:
        geom = shape(geometry)
    except Exception as err:  # shapely raises several types for bad GeoJSON
        raise InputError(f"The area is not a valid geometry: {err}") from err
    if geom.is_empty:
        raise InputError("The area is empty. Draw or choose an extent or polygon with a non-zero area.")
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    geom = _polygonal_part(geom)
    if geom.is_empty or geom.area <= 0 or ground_area(geom) < MIN_AREA_M2:
        raise InputError(
            "The area has no surface (a point, a line or a zero-width extent). "
            "Use an extent or polygon layer that encloses an area."
        )
    minx, miny, maxx, maxy = geom.bounds
    if minx < -180.0001 or maxx > 180.0001 or miny < -90.0001 or maxy > 90.0001:
        raise InputError(
            f"The area's WGS84 bounds ({minx:.4f}, {miny:.4f}, {maxx:.4f}, {maxy:.4f}) fall outside "
            "longitude -180..180 / latitude -90..90. Check the layer's CRS."
        )
    return geom


def ground_area(geometry_wgs84):
    """The area on the WGS84 ellipsoid, in square metres (geodesic, no projection to fold a sliver)."""
    import pyproj

    area, _ = pyproj.Geod(ellps="WGS84").geometry_area_perimeter(geometry_wgs84)
    return abs(area)


def _polygonal_part(geom):
    import shapely

    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    if geom.geom_type == "GeometryCollection":
        polygons = [part for part in geom.geoms if part.geom_type in ("Polygon", "MultiPolygon")]
        return shapely.union_all(polygons) if polygons else shapely.Polygon()
    return shapely.Polygon()


class EqualAreaProjection:
    """Projects WGS84 geometries to metres, equal-area, centred on one area.

    Through GDAL (rasterio), not pyproj: pyproj's per-thread PROJ context crashed QGIS 3.40
    (Debian 13, pyproj 3.7) in the worker thread where the Toolbox runs an algorithm."""

    def __init__(self, area_wgs84):
        from rasterio.crs import CRS

        centre = area_wgs84.centroid
        self.crs = CRS.from_proj4(
            f"+proj=laea +lat_0={centre.y:.6f} +lon_0={centre.x:.6f} +x_0=0 +y_0=0 +ellps=WGS84 +units=m"
        )

    def project(self, geometry_wgs84):
        import shapely
        from shapely.geometry import shape

        geom = geometry_wgs84 if hasattr(geometry_wgs84, "geom_type") else shape(geometry_wgs84)
        if not geom.is_valid:
            geom = shapely.make_valid(geom)
        dense = shapely.segmentize(geom, _DENSIFY_DEGREES)
        projected = shapely.transform(dense, self._project_coordinates)
        # a sliver can fold over itself in rounding: repaired, so the areas and overlays stay defined
        return projected if projected.is_valid else _polygonal_part(shapely.make_valid(projected))

    def _project_coordinates(self, lonlat):
        from rasterio.warp import transform

        if not len(lonlat):
            return lonlat
        x, y = transform("EPSG:4326", self.crs, lonlat[:, 0], lonlat[:, 1])
        return np.column_stack([x, y])


def search_geometry(area_wgs84, max_vertices=500):
    """GeoJSON for the STAC `intersects` filter, small enough for a request body.

    A detailed polygon is replaced by its convex hull, or by the smallest rotated rectangle
    around it when even the hull is too detailed: supersets, so no scene is missed; the
    exact area is still used to measure coverage.
    """
    import shapely
    from shapely.geometry import mapping

    for simpler in (shapely.convex_hull, shapely.oriented_envelope):
        if shapely.get_num_coordinates(area_wgs84) <= max_vertices:
            break
        area_wgs84 = simpler(area_wgs84)
    return mapping(area_wgs84)


def footprints_union(items):
    """The union of the items' footprints (WGS84): the area when the user gives none."""
    import shapely
    from shapely.geometry import shape

    return shapely.union_all([shape(item.footprint) for item in items])
