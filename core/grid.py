"""The output grid: 10 m pixels aligned to the Sentinel-2 10 m grid, in the UTM zone that
holds most of the area (or a projected CRS the user picks), clipped to the area's bounds."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import InputError
from .geometry import EqualAreaProjection

if TYPE_CHECKING:
    from rasterio.crs import CRS
    from rasterio.transform import Affine

PIXEL_SIZE = 10.0  # metres; Sentinel-2 tile origins are multiples of it, so edges line up
SNAP_TOLERANCE = 0.01  # metres: see output_grid


# affine 3 deprecates `*` on transforms in favour of `@`, which affine 2 (Debian 12) lacks: both
# operations the plugin needs are written out.
def offset_transform(transform: Affine, col_off: float, row_off: float) -> Affine:
    """The transform whose origin is pixel (col_off, row_off) of `transform`'s grid."""
    from rasterio.transform import Affine

    a, b, c, d, e, f = tuple(transform)[:6]
    return Affine(a, b, c + a * col_off + b * row_off, d, e, f + d * col_off + e * row_off)


def apply(transform: Affine, x, y):
    """`transform` applied to coordinates (numbers or numpy arrays): (x', y')."""
    a, b, c, d, e, f = tuple(transform)[:6]
    return a * x + b * y + c, d * x + e * y + f


@dataclass(frozen=True)
class Grid:
    crs: CRS
    transform: Affine
    width: int
    height: int

    @property
    def bounds(self):
        left, top = self.transform.c, self.transform.f
        return (left, top + self.transform.e * self.height, left + self.transform.a * self.width, top)

    def blocks(self, size):
        """Windows of at most size x size pixels covering the grid, row by row."""
        from rasterio.windows import Window

        for row in range(0, self.height, size):
            for col in range(0, self.width, size):
                yield Window(col, row, min(size, self.width - col), min(size, self.height - row))

    def sub_grid(self, window):
        return Grid(self.crs, offset_transform(self.transform, window.col_off, window.row_off),
                    int(window.width), int(window.height))


def utm_epsg_for_area(area_wgs84):
    """EPSG code of the UTM zone holding the largest part of the area (north or south by its centre)."""
    import shapely

    west, _, east, _ = area_wgs84.bounds
    projection = EqualAreaProjection(area_wgs84)
    best_zone, best_area = None, -1.0
    for zone in range(_zone(west), _zone(east) + 1):
        strip = shapely.box(-180 + 6 * (zone - 1), -90, -180 + 6 * zone, 90)
        share = projection.project(shapely.intersection(area_wgs84, strip)).area
        if share > best_area:
            best_zone, best_area = zone, share
    north = area_wgs84.centroid.y >= 0
    return (32600 if north else 32700) + best_zone


def _zone(longitude):
    return min(60, max(1, int(math.floor((longitude + 180) / 6)) + 1))


def output_grid(area_wgs84, crs=None, pixel_size=PIXEL_SIZE):
    """The grid covering the area's bounding box in `crs` (default: its UTM zone)."""
    import shapely
    from rasterio.crs import CRS
    from rasterio.transform import Affine
    from rasterio.warp import transform_geom

    crs = CRS.from_user_input(crs) if crs else CRS.from_epsg(utm_epsg_for_area(area_wgs84))
    if not crs.is_projected:
        raise InputError(
            f"The output CRS {crs.to_string()} is not projected; 10 m pixels need metres. "
            "Leave the CRS empty (the area's UTM zone) or pick a projected CRS."
        )
    projected = shapely.geometry.shape(transform_geom("EPSG:4326", crs, shapely.geometry.mapping(area_wgs84)))
    west, south, east, north = projected.bounds
    # An edge within SNAP_TOLERANCE of a grid line is on it: the round trip through WGS84 (and the
    # 8 decimals QGIS writes GeoJSON with) moves an edge drawn on the grid by up to a millimetre,
    # which would otherwise add a column or row on either side.
    tolerance = SNAP_TOLERANCE / pixel_size
    left = math.floor(west / pixel_size + tolerance) * pixel_size
    top = math.ceil(north / pixel_size - tolerance) * pixel_size
    width = max(1, int(math.ceil((east - left) / pixel_size - tolerance)))
    height = max(1, int(math.ceil((top - south) / pixel_size - tolerance)))
    return Grid(crs, Affine(pixel_size, 0.0, left, 0.0, -pixel_size, top), width, height)
