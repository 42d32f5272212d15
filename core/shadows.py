"""Cloud shadows that follow the sun: a geometric check in the spirit of Fmask (Zhu & Woodcock
2012, "Object-based cloud and cloud shadow detection in Landsat imagery"; Qiu et al. 2019).

A cloud at height h casts its shadow h x tan(sun zenith) metres away, on the side opposite the
sun (the sun azimuth is clockwise from north, of the sun as seen from the ground; raster rows grow
southward, so a sun in the south, azimuth 180, puts shadows up, to smaller rows). The check:

1. works on a coarser grid (about 30 m, as Fmask; coarser for large rasters): a cell is cloud when
   any of its valid pixels is, and holds the share of its valid pixels flagged shadow;
2. labels the cloud objects (8-connected) and moves every object along the shadow direction over
   the plausible cloud heights (200 m - 12 km by default), one cell of displacement per step, all
   objects at once (per step one vectorised pass over the cloud cells; no loop over objects);
3. at each step scores every object: the mean shadow share of the cells its shadow would cover,
   among those in view (inside the raster, with data, not under a cloud), on a lattice of about
   SAMPLES_PER_OBJECT of its cells. Searching up from the lowest height, as Fmask does, an object's
   height is the first peak scoring at least `min_similarity`; the heights next to it that score
   within SCORE_SLACK of it are its heights too (a shadow longer than its cloud makes several
   equally good). An object with fewer than MIN_OBJECT_CELLS cells, or no such peak, casts no
   shadow the check can see;
4. the plausible shadow is every matched object swept over its heights, grown by `tolerance` metres;
   a shadow pixel is kept inside it, or when its shadow patch (8-connected cells) reaches the
   raster's edge or nodata on the sun's side, where its cloud may lie unseen. Dark pixels that no
   cloud can have cast are not shadow.

Limits: a cloud outside the raster is unknown, so its shadow is kept only while the patch touches
the sun-side edge (a shadow lying wholly inside the raster whose cloud is outside is dropped);
clouds are taken flat; the parallax of the viewing angle is not modelled (the tolerance and the
height search absorb some of it).
"""

import math
from dataclasses import dataclass
from typing import Iterable, Optional, Tuple

import numpy as np

from .errors import InputError

DEFAULT_HEIGHTS = (200.0, 12000.0)  # m, the cloud heights Fmask searches
DEFAULT_TOLERANCE = 60.0  # m
DEFAULT_MIN_SIMILARITY = 0.3  # Fmask's threshold on the share of a projected shadow that is dark
WORK_PIXEL = 30.0  # m, the cell of the check (Fmask's Landsat pixel)
MAX_WORK_CELLS = 4_000_000  # larger rasters get larger cells (a full 10 m tile: 60 m)
MIN_OBJECT_CELLS = 3  # smaller cloud objects cast no shadow the check trusts (as Fmask)
SAMPLES_PER_OBJECT = 400  # cells that score a large object (a lattice over it)
MIN_VISIBLE_SHARE = 0.1  # a height is scored only when this share of the object's shadow is in view
SCORE_SLACK = 0.1  # the search stops this far below the best score; heights this close to it count too
_EIGHT = np.ones((3, 3), bool)  # 8-connected


@dataclass(frozen=True)
class Sun:
    """The mean sun position of an acquisition, in degrees: azimuth clockwise from north (of the
    sun as seen from the ground), zenith from the vertical."""

    azimuth: float
    zenith: float

    def check(self) -> "Sun":
        """This Sun, or an InputError unless it is above the horizon with a compass azimuth."""
        if not (math.isfinite(self.azimuth) and 0.0 <= self.azimuth <= 360.0):
            raise InputError("The sun azimuth (SUN_AZIMUTH) must be between 0 and 360 degrees (clockwise from "
                             f"north), got {self.azimuth}.")
        if not (math.isfinite(self.zenith) and 0.0 <= self.zenith <= 89.0):
            raise InputError("The sun zenith (SUN_ZENITH) must be between 0 and 89 degrees (the sun above the "
                             f"horizon), got {self.zenith}.")
        return self

    def shadow_offset(self, height, pixel_size: float) -> Tuple[np.ndarray, np.ndarray]:
        """(rows, columns) a shadow lies from the cloud casting it, for a cloud `height` metres high,
        on a north-up grid of `pixel_size` metres (floats; arrays for an array of heights)."""
        distance = np.asarray(height, dtype=float) * math.tan(math.radians(self.zenith)) / pixel_size
        azimuth = math.radians(self.azimuth)
        # the shadow points to azimuth + 180: east component -sin, north component -cos; rows grow south
        return distance * math.cos(azimuth), -distance * math.sin(azimuth)


SUN_AZIMUTH_TAG, SUN_ZENITH_TAG = "SUN_AZIMUTH", "SUN_ZENITH"  # GeoTIFF tags of stacks and product masks


def mean_sun(angles: Iterable[Tuple[Optional[float], Optional[float]]]) -> Optional[Sun]:
    """The mean Sun of (azimuth, zenith) pairs (None values skipped; the azimuth averaged on the
    circle), or None when no pair is complete."""
    known = [(float(a), float(z)) for a, z in angles if a is not None and z is not None]
    if not known:
        return None
    azimuths = np.radians([a for a, _ in known])
    azimuth = math.degrees(math.atan2(np.sin(azimuths).mean(), np.cos(azimuths).mean())) % 360.0
    return Sun(azimuth, float(np.mean([z for _, z in known])))


def sun_tags(sun: Optional[Sun]) -> dict:
    """The GeoTIFF tags that record a Sun (none for None)."""
    return {} if sun is None else {SUN_AZIMUTH_TAG: f"{sun.azimuth:.6f}", SUN_ZENITH_TAG: f"{sun.zenith:.6f}"}


def sun_from_tags(tags: dict) -> Optional[Sun]:
    """The Sun recorded in GeoTIFF tags, or None."""
    try:
        return Sun(float(tags[SUN_AZIMUTH_TAG]), float(tags[SUN_ZENITH_TAG]))
    except (KeyError, TypeError, ValueError):
        return None


@dataclass(frozen=True)
class ShadowOptions:
    """The check's settings (the defaults are what the merge uses)."""

    heights: Tuple[float, float] = DEFAULT_HEIGHTS  # m, lowest and highest cloud
    tolerance: float = DEFAULT_TOLERANCE  # m a shadow pixel may lie from a projected shadow
    min_similarity: float = DEFAULT_MIN_SIMILARITY
    work_pixel: Optional[float] = None  # m; None: WORK_PIXEL, coarser for large rasters

    def check(self) -> "ShadowOptions":
        """These options, or an InputError naming the one out of range."""
        low, high = self.heights
        if not 0.0 <= low <= high or math.isinf(high):
            raise InputError(f"The cloud heights must be 0 <= lowest <= highest metres, got {low} - {high}.")
        if not self.tolerance >= 0 or math.isinf(self.tolerance):
            raise InputError(f"The shadow tolerance must be 0 or more metres, got {self.tolerance}.")
        return self


def work_factor(shape: Tuple[int, int], pixel_size: float, work_pixel: Optional[float] = None) -> int:
    """How many pixels a side of a cell of the check holds (at least 1)."""
    factor = max(1, int(round((work_pixel or WORK_PIXEL) / pixel_size)))
    if work_pixel is None:
        cells = shape[0] * shape[1] / factor ** 2
        if cells > MAX_WORK_CELLS:
            factor = int(math.ceil(factor * math.sqrt(cells / MAX_WORK_CELLS)))
    return factor


@dataclass
class Cells:
    """The inputs of the check on its coarse grid, filled strip by strip (see add)."""

    cloud: np.ndarray  # bool: any pixel of the cell is cloud
    shadow: np.ndarray  # float32: the share of the cell's valid pixels flagged shadow
    valid: np.ndarray  # bool: the cell has a valid pixel
    factor: int

    @classmethod
    def empty(cls, shape: Tuple[int, int], factor: int) -> "Cells":
        """Cells for a raster of `shape` pixels, `factor` pixels a side, nothing added yet."""
        cells = (-(-shape[0] // factor), -(-shape[1] // factor))
        return cls(np.zeros(cells, bool), np.zeros(cells, np.float32), np.zeros(cells, bool), factor)

    def add(self, row_off: int, col_off: int, cloud: np.ndarray, shadow: np.ndarray, valid: np.ndarray) -> None:
        """Pixels of a window whose offsets are multiples of the factor (and whose size is, except
        at the raster's edges)."""
        f = self.factor
        if row_off % f or col_off % f:
            raise ValueError("windows of the shadow check must start on its cells")
        rows, cols = -(-cloud.shape[0] // f), -(-cloud.shape[1] // f)
        target = (slice(row_off // f, row_off // f + rows), slice(col_off // f, col_off // f + cols))
        count_valid = _cell_sum(valid, f)
        self.cloud[target] = _cell_sum(cloud & valid, f) > 0
        self.valid[target] = count_valid > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            self.shadow[target] = np.where(count_valid > 0, _cell_sum(shadow & valid, f) / count_valid, 0)


def _cell_sum(mask, factor):
    rows, cols = mask.shape
    padded = np.zeros((-(-rows // factor) * factor, -(-cols // factor) * factor), np.int32)
    padded[:rows, :cols] = mask
    return padded.reshape(padded.shape[0] // factor, factor, padded.shape[1] // factor, factor).sum(axis=(1, 3))


@dataclass
class ShadowZone:
    """Where a cloud of the raster can cast a shadow, on the check's cells, and what was found."""

    zone: np.ndarray  # bool cells
    factor: int
    objects: int = 0  # cloud objects large enough to cast a shadow
    matched: int = 0  # of these, the ones whose shadow was found
    heights: Tuple[float, ...] = ()  # (lowest, highest) height of the matched objects (m), () if none

    def window(self, row_off: int, col_off: int, height: int, width: int) -> np.ndarray:
        """The zone for a window of the full-resolution raster (bool pixels)."""
        f = self.factor
        rows = np.arange(row_off, row_off + height) // f
        cols = np.arange(col_off, col_off + width) // f
        return self.zone[np.ix_(rows, cols)]


def zone_of(cloud: np.ndarray, shadow: np.ndarray, valid: np.ndarray, sun: Sun, pixel_size: float,
            options: ShadowOptions = ShadowOptions()) -> ShadowZone:
    """The ShadowZone of whole arrays (bool flags; pixel_size in metres on a north-up grid)."""
    cells = Cells.empty(cloud.shape, work_factor(cloud.shape, pixel_size, options.work_pixel))
    cells.add(0, 0, cloud, shadow, valid)
    return shadow_zone(cells, sun, pixel_size, options)


def plausible_shadow(cloud: np.ndarray, shadow: np.ndarray, valid: np.ndarray, sun: Sun, pixel_size: float,
                     options: ShadowOptions = ShadowOptions()) -> np.ndarray:
    """The shadow pixels a cloud of the raster can cast (bool, for whole arrays): `shadow` & zone."""
    return shadow & zone_of(cloud, shadow, valid, sun, pixel_size, options).window(0, 0, *cloud.shape)


def shadow_zone(cells: Cells, sun: Sun, pixel_size: float, options: ShadowOptions = ShadowOptions()) -> ShadowZone:
    """The ShadowZone of the cloud objects in `cells` (the algorithm of the module docstring)."""
    from scipy import ndimage

    sun.check()
    options.check()
    cell_size = pixel_size * cells.factor
    shape = cells.cloud.shape
    labels, count = ndimage.label(cells.cloud, structure=_EIGHT)
    casting = np.bincount(labels.ravel(), minlength=count + 1) >= MIN_OBJECT_CELLS
    casting[0] = False
    rows, cols = np.nonzero(casting[labels])
    objects = labels[rows, cols]
    heights, drows, dcols = _steps(sun, cell_size, options.heights, shape)
    sample = _sample(rows, cols, objects, count)
    scores = _scores(cells, rows[sample], cols[sample], objects[sample], count, drows, dcols)
    first, last = _best_runs(scores, options.min_similarity)
    matched = casting & (last >= 0)
    # each matched object moved to its lowest height, and its edge cells along the path to its highest:
    # together the object swept over its heights
    zone = np.zeros(shape, bool)
    pick = matched[objects]
    target_rows, target_cols, inside = _moved(rows[pick], cols[pick], drows[first[objects[pick]]],
                                              dcols[first[objects[pick]]], shape)
    zone[target_rows[inside], target_cols[inside]] = True
    edge = (cells.cloud & ~ndimage.binary_erosion(cells.cloud, structure=_EIGHT))[rows, cols] & pick
    edge_rows, edge_cols, edge_objects = rows[edge], cols[edge], objects[edge]
    for step in range(int(first[matched].min()) + 1, int(last[matched].max()) + 1) if matched.any() else ():
        on = (first[edge_objects] <= step) & (step <= last[edge_objects])
        target_rows, target_cols, inside = _moved(edge_rows[on], edge_cols[on], drows[step], dcols[step], shape)
        zone[target_rows[inside], target_cols[inside]] = True
    radius = options.tolerance / cell_size
    if zone.any() and radius > 0:
        zone = ndimage.distance_transform_edt(~zone) <= max(radius, 0.5)
    zone |= _open_to_the_sun(cells, sun)
    found = np.nonzero(matched)[0]
    return ShadowZone(zone, cells.factor, int(casting.sum()), int(found.size),
                      (float(heights[first[found].min()]), float(heights[last[found].max()])) if found.size else ())


def _sample(rows, cols, objects, count):
    """The cells that score each object: a regular lattice of about SAMPLES_PER_OBJECT of its cells
    (all of them for small or thin objects)."""
    sizes = np.bincount(objects, minlength=count + 1)
    stride = np.maximum(1, np.floor(np.sqrt(sizes / SAMPLES_PER_OBJECT))).astype(np.int64)[objects]
    sample = (rows % stride == 0) & (cols % stride == 0)
    sampled = np.bincount(objects[sample], minlength=count + 1)
    return sample | (sampled < MIN_OBJECT_CELLS * 10)[objects]


def _best_runs(scores, min_similarity):
    """Per object (first, last) step of its heights: searching up from the lowest, as Fmask does, the
    first peak scoring at least min_similarity (the search stops when the score falls SCORE_SLACK below
    the best so far), and the steps next to it scoring within SCORE_SLACK of it; (-1, -1) for an
    object without one. Vectorised over the objects."""
    objects = scores.shape[1]
    peak = np.full(objects, -np.inf)
    peak_step = np.zeros(objects, np.int64)
    done = np.zeros(objects, bool)
    for step, score in enumerate(scores):
        rising = ~done & (score > peak)
        peak[rising], peak_step[rising] = score[rising], step
        done |= (peak >= min_similarity) & (score < peak - SCORE_SLACK)
    steps = np.arange(scores.shape[0])[:, None]
    poor = scores < np.maximum(min_similarity, peak - SCORE_SLACK)
    first = np.where(poor & (steps < peak_step), steps, -1).max(axis=0) + 1
    last = np.where(poor & (steps > peak_step), steps, scores.shape[0]).min(axis=0) - 1
    none = peak < min_similarity
    first[none], last[none] = -1, -1
    return first, last


def _open_to_the_sun(cells, sun):
    """The shadow patches (8-connected cells with shadow) with a cell whose neighbour towards the sun
    is outside the raster or has no data: their cloud may be out of sight."""
    from scipy import ndimage

    patches, count = ndimage.label(cells.shadow > 0, structure=_EIGHT)
    if count == 0:
        return np.zeros(patches.shape, bool)
    drow, dcol = sun.shadow_offset(1.0, 1.0)
    length = math.hypot(drow, dcol)
    towards_sun = (int(round(-drow / length)), int(round(-dcol / length))) if length else (0, 0)
    if towards_sun == (0, 0):  # the sun overhead: shadows lie under their clouds
        return np.zeros(patches.shape, bool)
    unseen = ~np.pad(cells.valid, 1, constant_values=False)
    rows, cols = patches.shape
    top, left = 1 + towards_sun[0], 1 + towards_sun[1]
    neighbour_unseen = unseen[top:top + rows, left:left + cols]
    open_patches = np.zeros(count + 1, bool)
    open_patches[patches[neighbour_unseen & (patches > 0)]] = True
    open_patches[0] = False
    return open_patches[patches]


def _steps(sun, cell_size, heights, shape):
    """(heights, row offsets, column offsets) from the lowest to the highest cloud, one cell of
    displacement apart (no further than the raster's diagonal)."""
    low, high = heights
    per_metre = math.tan(math.radians(sun.zenith)) / cell_size  # cells of displacement per metre of height
    if per_metre <= 0:
        samples = np.array([low])
    else:
        reach = min(high * per_metre, low * per_metre + math.hypot(*shape))
        samples = np.arange(low * per_metre, reach + 1e-9, 1.0) / per_metre
        samples = samples if samples.size else np.array([low])
    drow, dcol = sun.shadow_offset(samples, cell_size)
    return samples, np.atleast_1d(drow), np.atleast_1d(dcol)


def _moved(rows, cols, drow, dcol, shape):
    target_rows = np.rint(rows + drow).astype(np.int64)
    target_cols = np.rint(cols + dcol).astype(np.int64)
    inside = (target_rows >= 0) & (target_rows < shape[0]) & (target_cols >= 0) & (target_cols < shape[1])
    return target_rows, target_cols, inside


def _scores(cells, rows, cols, objects, count, drows, dcols):
    """(steps, objects + 1): per step the mean shadow share of the cells in view under each object's
    moved shadow; -1 where less than MIN_VISIBLE_SHARE of it is in view."""
    shape = cells.cloud.shape
    in_view = (cells.valid & ~cells.cloud).ravel()
    shadow = cells.shadow.ravel()
    needed = np.maximum(1, MIN_VISIBLE_SHARE * np.bincount(objects, minlength=count + 1))
    scores = np.full((len(drows), count + 1), -1.0)
    for step, (drow, dcol) in enumerate(zip(drows, dcols)):
        target_rows, target_cols, inside = _moved(rows, cols, drow, dcol, shape)
        flat = target_rows[inside] * shape[1] + target_cols[inside]
        seen = in_view[flat]
        owners = objects[inside][seen]
        visible = np.bincount(owners, minlength=count + 1)
        dark = np.bincount(owners, weights=shadow[flat[seen]], minlength=count + 1)
        scored = visible >= needed
        scores[step, scored] = dark[scored] / visible[scored]
    return scores
