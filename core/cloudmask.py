"""The improved cloud mask: FarmVibes' merge_cloud_masks_simple, with the classes rule of the
model card, growth in metres, and honest nodata; streamed in blocks.

    cloud   = the cloud rule  OR  product codes 1-3 (opaque cloud, cirrus, saturated/defective)
    shadow  = the shadow rule OR  product code 4, where not cloud; with the sun position known and
              shadow_geometry on (the default), the rule's shadow only where a cloud of the raster can
              cast it, or in a shadow patch open to the raster's sun-side edge (core/shadows.py); the
              product mask's shadow stays (every product flag is part of the mask, as in FarmVibes)
    rules: the model card's (recorded in the probability rasters' tags by inference):
           argmax over one softmax model's classes (ukis-csmask; clear = 1 - P(cloud) - P(shadow)):
               cloud where P(cloud) >= max(P(shadow), P(clear)), shadow where P(shadow) > max(P(cloud), P(clear))
           or thresholds (FarmVibes' models: P(cloud) > 0.3, P(shadow) > 0.2); a threshold given
           by the user overrides the card; rasters that record no card get FarmVibes' thresholds
    nodata  = product mask nodata (255) OR a probability that is NaN or outside [0, 1]
    masked  = (cloud | shadow), closed by a disk of `closing` metres (optional), grown by a disk
              of `buffer` metres; if min_area > 0 (m^2): masked patches smaller than that are
              cleared (8-connected), then clear holes smaller than that filled (4-connected)
    mask    = masked | nodata (uint8: 0 clear, 1 masked, as FarmVibes: nodata is never clear)
    classes = 0 clear, 1 cloud, 2 shadow, 255 nodata: a pixel flagged cloud or shadow keeps its
              class; a pixel added by closing, buffer or hole filling takes the class of its
              nearest flagged pixel (Euclidean; cloud on a tie)

Nodata does not grow. FarmVibes' hole filling never runs (a bitwise NOT on uint8); here it does
what its name says. If more than max_nodata percent of the pixels have no valid probability
the merge fails with the reason instead of writing a mask that is mostly nodata.

Blocks are read with a halo of 2 x closing + buffer + 2 x min_area pixels (+1): any component
that reaches beyond the halo has more than min_area pixels inside it, and every added pixel's
nearest flagged pixel lies within it, so every block gives exactly what the whole array would
(tested). The shadow check needs the whole raster: a first pass gathers the cloud and shadow
flags on its coarse cells, and every block then reads its part of the shadow zone.
"""

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from . import shadows, tempfiles
from .errors import Cancelled, InputError
from .grid import Grid
from .models import FARMVIBES_THRESHOLDS, TAG_MODEL, TAG_RULE, TAG_TARGET, TAG_THRESHOLD
from .stack import MASK_CATEGORIES, MASK_NODATA, check_writable, describe_classes, publishing, write_cog

CLEAR, CLOUD, SHADOW, NODATA = 0, 1, 2, 255
# "Cloud" in FarmVibes' sense (anything masked), drawn magenta so it stands out from white clouds.
MASK_LABELS = {CLEAR: ("Clear", (56, 168, 0)), CLOUD: ("Cloud", (230, 0, 160))}
CLASS_LABELS = {CLEAR: ("clear", (56, 168, 0)), CLOUD: ("cloud", (255, 255, 255)),
                SHADOW: ("cloud shadow", (78, 78, 78))}
_PRODUCT_CLOUD_CODES = (1, 2, 3)  # opaque, cirrus, saturated/defective
_PRODUCT_SHADOW_CODE = 4
_KNOWN_PRODUCT_CODES = tuple(MASK_CATEGORIES) + (MASK_NODATA,)
_EIGHT_NEIGHBOURS = np.ones((3, 3), dtype=bool)
_FOUR_NEIGHBOURS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)  # scipy's generate_binary_structure(2, 1)
_PROBABILITY_TOLERANCE = 1e-6  # bilinear resampling may land a hair outside [0, 1]
# The one-line label of each parameter in messages (the Processing parameter names).
_PARAMETER_NAMES = {"cloud_thr": "CLOUD_THR", "shadow_thr": "SHADOW_THR", "buffer": "BUFFER", "closing": "CLOSING",
                    "min_area": "MIN_AREA", "max_nodata": "MAX_NODATA", "sun_azimuth": "SUN_AZIMUTH",
                    "sun_zenith": "SUN_ZENITH"}


@dataclass(frozen=True)
class MergeOptions:
    cloud_thr: Optional[float] = None  # None: the rule of the cloud probability's model card
    shadow_thr: Optional[float] = None  # None: the rule of the shadow probability's model card
    buffer: float = 0.0  # metres the masked pixels grow by (FarmVibes: 5 pixels = 50 m)
    closing: float = 0.0  # metres of a morphological closing before the buffer; 0: none
    min_area: float = 0.0  # m^2; 0: no small patch removal or hole filling
    max_nodata: float = 50.0  # percent of pixels without a valid probability above which the merge fails
    shadow_geometry: bool = True  # keep shadow only where a cloud can cast it (when the sun position is known)
    sun_azimuth: Optional[float] = None  # degrees; None: the product mask's SUN_AZIMUTH tag
    sun_zenith: Optional[float] = None  # degrees; None: the product mask's SUN_ZENITH tag


@dataclass(frozen=True)
class Rule:
    """How one probability becomes a class: "argmax" (over the classes of the softmax model that
    made both probabilities) or "threshold" (probability above `threshold`)."""

    kind: str
    threshold: float = None
    why: str = ""


ARGMAX = (Rule("argmax", why="argmax"), Rule("argmax", why="argmax"))  # (cloud, shadow) of one softmax model


def resolve_rules(options, cloud_tags=None, shadow_tags=None):
    """(cloud Rule, shadow Rule) from the options and the tags of the two probability rasters."""
    tags = {"cloud": dict(cloud_tags or {}), "shadow": dict(shadow_tags or {})}
    given = {"cloud": options.cloud_thr, "shadow": options.shadow_thr}
    model = {target: tags[target].get(TAG_MODEL) for target in tags}
    one_softmax_model = model["cloud"] is not None and model["cloud"] == model["shadow"] and all(
        tags[target].get(TAG_RULE) == "argmax" for target in tags)
    rules = []
    for target in ("cloud", "shadow"):
        name = _PARAMETER_NAMES[f"{target}_thr"]
        if given[target] is not None:
            rules.append(Rule("threshold", float(given[target]),
                              f"{target}: probability above {given[target]:g} ({name} as given)"))
        elif tags[target].get(TAG_RULE) == "argmax" and one_softmax_model:
            rules.append(Rule("argmax", why=f"{target}: the most probable of {model[target]}'s classes (argmax, "
                                            "its model card's rule)"))
        elif tags[target].get(TAG_RULE) == "argmax":
            rules.append(Rule("threshold", 0.5, (
                f"{target}: probability above 0.5, the majority ({model[target]}'s card says argmax, but the cloud "
                "and shadow probabilities come from different models, so its other classes are not known)")))
        elif tags[target].get(TAG_RULE) == "threshold" and tags[target].get(TAG_THRESHOLD):
            value = float(tags[target][TAG_THRESHOLD])
            rules.append(Rule("threshold", value,
                              f"{target}: probability above {value:g} ({model[target]}'s model card)"))
        else:
            value = FARMVIBES_THRESHOLDS[target]
            rules.append(Rule("threshold", value, (
                f"{target}: probability above {value:g} (FarmVibes' threshold: the raster does not say which model "
                f"made it; set {name} to choose)")))
    return tuple(rules)


@dataclass(frozen=True)
class PixelGeometry:
    """The options' metres and square metres in pixels of one grid."""

    buffer: float
    closing: float
    min_area: float

    @classmethod
    def of(cls, options, pixel_size):
        return cls(options.buffer / pixel_size, options.closing / pixel_size, options.min_area / pixel_size ** 2)

    @property
    def halo(self):
        return int(math.ceil(2 * self.closing + self.buffer)) + 2 * int(math.ceil(self.min_area)) + 1


@dataclass
class MaskStatistics:
    """Pixel counts of one merged mask, for the statistics table."""

    pixels: int = 0
    counts: dict = field(default_factory=lambda: {CLEAR: 0, CLOUD: 0, SHADOW: 0, NODATA: 0})
    product_flagged: int = 0  # product mask codes 1-4
    invalid: int = 0  # no valid probability (NaN or outside [0, 1])
    invalid_with_data: int = 0  # of these, where the product mask has data
    shadow_dropped: int = 0  # flagged shadow that the shadow check cleared (no cloud can cast it)

    def add(self, classes, product, invalid=None, dropped=None):
        self.pixels += classes.size
        for code in self.counts:
            self.counts[code] += int(np.count_nonzero(classes == code))
        self.product_flagged += int(np.count_nonzero((product != 0) & (product != MASK_NODATA)))
        if invalid is not None:
            self.invalid += int(np.count_nonzero(invalid))
            self.invalid_with_data += int(np.count_nonzero(invalid & (product != MASK_NODATA)))
        if dropped is not None:
            self.shadow_dropped += int(np.count_nonzero(dropped))

    def percent(self, count):
        return 100.0 * count / self.pixels if self.pixels else 0.0

    def as_row(self):
        return {"pct_clear": self.percent(self.counts[CLEAR]), "pct_cloud": self.percent(self.counts[CLOUD]),
                "pct_shadow": self.percent(self.counts[SHADOW]), "pct_nodata": self.percent(self.counts[NODATA]),
                "pct_product_masked": self.percent(self.product_flagged)}


def validate_options(options):
    for name in ("cloud_thr", "shadow_thr"):
        value = getattr(options, name)
        if value is not None and not 0.0 <= value <= 1.0:
            raise InputError(f"{_PARAMETER_NAMES[name]} ({name}) must be a probability between 0 and 1, or empty for "
                             f"the model card's rule; got {value}.")
    for name, unit in (("buffer", "metres"), ("closing", "metres"), ("min_area", "square metres")):
        value = getattr(options, name)
        if not value >= 0 or math.isinf(value):
            raise InputError(f"{_PARAMETER_NAMES[name]} ({name}) must be 0 or more {unit}, got {value}.")
    if not 0.0 <= options.max_nodata <= 100.0:
        raise InputError(f"MAX_NODATA (max_nodata) must be a percentage between 0 and 100, got {options.max_nodata}.")
    if (options.sun_azimuth is None) != (options.sun_zenith is None):
        raise InputError("Give both SUN_AZIMUTH and SUN_ZENITH (degrees), or neither to read them from the product "
                         "mask's tags.")
    if options.sun_azimuth is not None:
        shadows.Sun(options.sun_azimuth, options.sun_zenith).check()


def _half_width(radius, dy):
    """The largest dx with dx^2 + dy^2 <= radius^2 (exact for whole radii)."""
    if float(radius).is_integer():
        return math.isqrt(int(radius) ** 2 - dy * dy)
    return int(math.floor(math.sqrt(max(0.0, radius * radius - dy * dy)) + 1e-9))


def disk(radius):
    """skimage's disk: the pixels within `radius` (pixels, may be fractional) of the centre
    (radius 5: 11 x 11, 81 pixels)."""
    reach = int(math.floor(radius + 1e-9))
    offsets = np.arange(-reach, reach + 1)
    halves = np.array([_half_width(radius, dy) for dy in offsets])
    return np.abs(offsets)[None, :] <= halves[:, None]


def dilate(mask, radius, outside=False):
    """Binary dilation by disk(radius), as rows: one horizontal maximum per distinct half-width.
    Outside the array counts as `outside`."""
    from scipy import ndimage

    reach = int(math.floor(radius + 1e-9))
    if reach == 0:
        return mask.copy()
    height, width = mask.shape
    padded = np.pad(mask, reach, constant_values=outside).view(np.uint8)
    by_half_width = {}
    out = np.zeros_like(mask)
    for dy in range(-reach, reach + 1):
        half = _half_width(radius, dy)
        if half not in by_half_width:
            by_half_width[half] = ndimage.maximum_filter1d(padded, 2 * half + 1, axis=1, mode="constant")
        out |= by_half_width[half][reach + dy:reach + dy + height, reach:reach + width].astype(bool)
    return out


def close(mask, radius):
    """Binary closing by disk(radius): dilation, then erosion, outside the array clear for both (so
    nothing fills towards the edges), and every masked pixel kept (near the edges the erosion would
    otherwise clear some)."""
    return mask | ~dilate(~dilate(mask, radius), radius, outside=True)


def _drop_small(mask, min_area, structure):
    from scipy import ndimage

    labels, count = ndimage.label(mask, structure=structure)
    if count == 0:
        return mask
    small = np.bincount(labels.ravel()) < min_area
    small[0] = False
    return mask & ~small[labels]


def invalid_probability(probability):
    """NaN, infinite, or outside [0, 1]: no valid probability (nodata)."""
    with np.errstate(invalid="ignore"):
        return ~((probability >= -_PROBABILITY_TOLERANCE) & (probability <= 1 + _PROBABILITY_TOLERANCE))


def flags(cloud_prob, shadow_prob, rules):
    """(cloud, shadow) as each rule says, before the product mask; False where a probability is NaN."""
    cloud_rule, shadow_rule = rules
    with np.errstate(invalid="ignore"):
        clear = 1 - cloud_prob - shadow_prob if "argmax" in (cloud_rule.kind, shadow_rule.kind) else None
        if cloud_rule.kind == "argmax":
            cloud = cloud_prob >= np.maximum(shadow_prob, clear)
        else:
            cloud = cloud_prob > cloud_rule.threshold
        if shadow_rule.kind == "argmax":
            shadow = shadow_prob > np.maximum(cloud_prob, clear)
        else:
            shadow = shadow_prob > shadow_rule.threshold
    return cloud, shadow


def _nearer_shadow(cloud, shadow):
    """Where the nearest shadow pixel is strictly nearer than the nearest cloud pixel (Euclidean)."""
    from scipy import ndimage

    if not shadow.any():
        return np.zeros(cloud.shape, dtype=bool)
    if not cloud.any():
        return np.ones(cloud.shape, dtype=bool)
    return ndimage.distance_transform_edt(~shadow) < ndimage.distance_transform_edt(~cloud)


def merge_arrays(product, cloud_prob, shadow_prob, options=MergeOptions(), rules=None, pixel_size=10.0, sun=None):
    """(mask, classes) for whole arrays (or a block with its halo). rules: (cloud, shadow) Rules,
    by default resolve_rules(options) (the thresholds given, else FarmVibes'); pixel_size in metres;
    sun: the shadows.Sun of the shadow check (options.sun_azimuth / sun_zenith when given win), None
    to skip it."""
    rules = rules or resolve_rules(options)
    sun = resolve_sun(options, sun)
    zone = None
    if options.shadow_geometry and sun is not None:
        cloud, shadow, nodata, _ = classify(product, cloud_prob, shadow_prob, rules)
        zone = shadows.zone_of(cloud, shadow, ~nodata, sun, pixel_size).window(0, 0, *cloud.shape)
    return _merge(product, cloud_prob, shadow_prob, rules, PixelGeometry.of(options, pixel_size), zone)[:2]


def resolve_sun(options: MergeOptions, recorded: Optional[shadows.Sun] = None) -> Optional[shadows.Sun]:
    """The shadows.Sun of the shadow check: the options' angles when given, else `recorded`."""
    if options.sun_azimuth is not None and options.sun_zenith is not None:
        return shadows.Sun(options.sun_azimuth, options.sun_zenith)
    return recorded


def classify(product: np.ndarray, cloud_prob: np.ndarray, shadow_prob: np.ndarray, rules: tuple) -> tuple:
    """(cloud, shadow, nodata, invalid) flags of the module docstring, before the shadow check."""
    invalid = invalid_probability(cloud_prob) | invalid_probability(shadow_prob)
    nodata = (product == MASK_NODATA) | invalid
    cloud_flag, shadow_flag = flags(cloud_prob, shadow_prob, rules)
    cloud = (cloud_flag | np.isin(product, _PRODUCT_CLOUD_CODES)) & ~nodata
    shadow = (shadow_flag | (product == _PRODUCT_SHADOW_CODE)) & ~nodata & ~cloud
    return cloud, shadow, nodata, invalid


def _merge(product, cloud_prob, shadow_prob, rules, geometry, zone=None):
    """(mask, classes, invalid, dropped shadow): the rule of the module docstring; zone: where shadow
    may be (bool, same shape), None for no shadow check."""
    cloud, shadow, nodata, invalid = classify(product, cloud_prob, shadow_prob, rules)
    dropped = None
    if zone is not None:  # the product mask's own shadow stays
        dropped = shadow & ~zone & (product != _PRODUCT_SHADOW_CODE)
        shadow = shadow & ~dropped
    flagged = cloud | shadow
    masked = flagged
    if geometry.closing >= 1:
        masked = close(masked, geometry.closing)
    if geometry.buffer >= 1:
        masked = dilate(masked, geometry.buffer)
    if geometry.min_area > 0:
        masked = _drop_small(masked, geometry.min_area, _EIGHT_NEIGHBOURS)
        masked = ~_drop_small(~masked, geometry.min_area, _FOUR_NEIGHBOURS)
    classes = np.where(masked, CLOUD, CLEAR).astype(np.uint8)
    added = masked & ~flagged & ~nodata
    if added.any():  # closing, buffer and filled holes: the class of the nearest flagged pixel
        classes[added & _nearer_shadow(cloud, shadow)] = SHADOW
    classes[shadow & masked] = SHADOW
    classes[nodata] = NODATA
    return (masked | nodata).astype(np.uint8), classes, invalid, dropped


def check_same_grid(named_paths):
    """Every raster on the first one's grid, or an error saying which differs and how."""
    import rasterio

    reference_name, reference_path = named_paths[0]
    with rasterio.open(reference_path) as ref:
        expected = (ref.crs, ref.transform, ref.width, ref.height)
    for name, path in named_paths[1:]:
        with rasterio.open(path) as src:
            found = (src.crs, src.transform, src.width, src.height)
        problems = []
        if found[0] != expected[0]:
            problems.append(f"CRS {_crs_label(found[0])} instead of {_crs_label(expected[0])}")
        if (found[2], found[3]) != (expected[2], expected[3]):
            problems.append(f"size {found[2]} x {found[3]} instead of {expected[2]} x {expected[3]}")
        if not found[1].almost_equals(expected[1], precision=1e-6):
            problems.append(f"origin/pixel size {tuple(found[1])[:6]} instead of {tuple(expected[1])[:6]}")
        if problems:
            raise InputError(
                f"The {name} ({path}) is not on the {reference_name}'s grid: {'; '.join(problems)}. "
                "Compute the probabilities from the stack the product mask belongs to, or warp them onto its grid."
            )


def _crs_label(crs):
    return crs.to_string() if crs else "none"


def merge_cloud_masks(product_mask, cloud_probability, shadow_probability, mask_path, classes_path=None,
                      options=MergeOptions(), block_size=1024, progress=None, should_cancel=None, log=None):
    """Writes the improved mask (and the classes); returns MaskStatistics. `log` gets one line per
    decision (the rules used, the growth in pixels, the shadow check)."""
    progress = progress or (lambda fraction, message: None)
    should_cancel = should_cancel or (lambda: False)
    log = log or (lambda message: None)
    validate_options(options)
    check_same_grid([("product mask", product_mask), ("cloud probability", cloud_probability),
                     ("shadow probability", shadow_probability)])
    rules = resolve_rules(options, *(_probability_tags(path, target) for path, target in (
        (cloud_probability, "cloud"), (shadow_probability, "shadow"))))
    pixel_size = _pixel_size(product_mask, options)
    geometry = PixelGeometry.of(options, pixel_size)
    for rule in rules:
        log(f"{rule.why[0].upper()}{rule.why[1:]}.")
    log(_describe_growth(options, geometry, pixel_size))
    sun = _shadow_check_sun(product_mask, options, log)
    mask_path = Path(mask_path)
    targets = [mask_path] + ([Path(classes_path)] if classes_path else [])
    for target in targets:
        check_writable(target.parent)
    work = tempfiles.work_folder(mask_path.parent, "merging-masks")
    try:
        zone = None
        if sun is not None:
            zone = _shadow_zone(product_mask, cloud_probability, shadow_probability, rules, sun, pixel_size,
                                block_size, should_cancel)
            log(_describe_shadow_check(zone, sun, pixel_size))
        statistics = _stream(product_mask, cloud_probability, shadow_probability, work, rules, geometry, block_size,
                             progress, should_cancel, zone)
        if zone is not None:
            log(f"The shadow check cleared {statistics.percent(statistics.shadow_dropped):.2f}% of the area: "
                "pixels the rule flagged cloud shadow that no cloud of the raster can cast.")
        if statistics.percent(statistics.invalid) > options.max_nodata:
            raise InputError(_too_much_nodata(statistics, options))
        with publishing(targets) as partials:
            for source, partial in zip((work / "mask.tif", work / "classes.tif"), partials):
                write_cog(source, partial, "nearest", should_cancel)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return statistics


def _shadow_check_sun(product_mask, options, log):
    """The shadows.Sun of the shadow check, or None (logged why) when it does not run."""
    import rasterio

    if not options.shadow_geometry:
        log("Shadow check off (SHADOW_GEOMETRY): every pixel the rules flag cloud shadow stays shadow.")
        return None
    with rasterio.open(product_mask) as src:
        tags, crs, transform = src.tags(), src.crs, src.transform
    sun = resolve_sun(options, shadows.sun_from_tags(tags))
    if sun is None:
        log("Shadow check skipped: the sun position is unknown (the product mask has no SUN_AZIMUTH / SUN_ZENITH "
            "tags; 'Download and stack Sentinel-2' writes them). Give SUN_AZIMUTH and SUN_ZENITH in degrees (the "
            "product's s2:mean_solar_azimuth and s2:mean_solar_zenith) to run it.")
        return None
    if crs is None or crs.is_geographic or transform.b or transform.d:
        log(f"Shadow check skipped: it needs a north-up grid in metres, and {product_mask} is "
            f"{'in degrees' if crs is not None and crs.is_geographic else 'not one'}. Warp the rasters to the "
            "stack's UTM zone to run it.")
        return None
    return sun.check()


def _shadow_zone(product_mask, cloud_probability, shadow_probability, rules, sun, pixel_size, block_size,
                 should_cancel):
    """The shadows.ShadowZone of the whole raster: a first pass over it, in blocks on the check's cells."""
    import rasterio

    with rasterio.open(product_mask) as product, rasterio.open(cloud_probability) as cloud, \
            rasterio.open(shadow_probability) as shadow:
        shape = (product.height, product.width)
        cells = shadows.Cells.empty(shape, shadows.work_factor(shape, pixel_size))
        size = cells.factor * max(1, block_size // cells.factor)
        for block in Grid(product.crs, product.transform, product.width, product.height).blocks(size):
            if should_cancel():
                raise Cancelled("Merging the cloud masks was cancelled.")
            codes = product.read(1, window=block)
            _check_codes(codes, product_mask)
            cloud_flag, shadow_flag, nodata, _ = classify(codes, cloud.read(1, window=block),
                                                          shadow.read(1, window=block), rules)
            cells.add(int(block.row_off), int(block.col_off), cloud_flag, shadow_flag, ~nodata)
    return shadows.shadow_zone(cells, sun, pixel_size)


def _describe_shadow_check(zone, sun, pixel_size):
    options = shadows.ShadowOptions()
    found = (f"heights {zone.heights[0]:.0f}-{zone.heights[1]:.0f} m" if zone.heights else "none")
    return (f"Shadow check: sun azimuth {sun.azimuth:.1f} degrees, zenith {sun.zenith:.1f} degrees; clouds "
            f"{options.heights[0]:.0f}-{options.heights[1]:.0f} m high searched on {pixel_size * zone.factor:g} m "
            f"cells; the shadow of {zone.matched} of {zone.objects} cloud objects found ({found}). The rule's cloud "
            f"shadow is kept within {options.tolerance:g} m of those shadows, or in shadow patches that reach the "
            "raster's edge or nodata on the sun's side (their cloud may be out of sight), and cleared elsewhere; "
            "the product mask's shadow stays.")


def _probability_tags(path, target):
    """The tags inference wrote (none for rasters from elsewhere); refuses the other target's raster."""
    import rasterio

    with rasterio.open(path) as src:
        tags = src.tags()
    if tags.get(TAG_TARGET) not in (None, target):
        raise InputError(f"The {target} probability {path} holds {tags[TAG_TARGET]} probability (from model "
                         f"{tags.get(TAG_MODEL, '?')}): give it as the {tags[TAG_TARGET]} probability.")
    return tags


def _pixel_size(path, options):
    """The grid's pixel size in metres (the square root of a pixel's area)."""
    import rasterio

    with rasterio.open(path) as src:
        crs, transform = src.crs, src.transform
    if crs is not None and crs.is_geographic and (options.buffer or options.closing or options.min_area):
        raise InputError(f"BUFFER, CLOSING and MIN_AREA are in metres but {path} is in degrees "
                         f"({_crs_label(crs)}): warp the rasters to a projected CRS (the stack's UTM zone), or set "
                         "the three to 0.")
    return math.sqrt(abs(transform.a * transform.e - transform.b * transform.d))


def _describe_growth(options, geometry, pixel_size):
    def part(name, value, unit, pixels):
        return f"{name} {value:g} {unit}" + (f" ({pixels:g} pixels)" if value else " (off)")

    text = "Growth on {:g} m pixels: {}, {}, {}; nodata does not grow.".format(
        pixel_size, part("buffer", options.buffer, "m", geometry.buffer),
        part("closing", options.closing, "m", geometry.closing),
        part("minimum area", options.min_area, "m2", geometry.min_area))
    if 0 < geometry.min_area < 1:
        text += (f" MIN_AREA is in square metres (it was pixels before): {options.min_area:g} m2 is less than one "
                 f"pixel and removes nothing; {options.min_area:g} pixels would be "
                 f"{options.min_area * pixel_size ** 2:g} m2.")
    return text


def _too_much_nodata(statistics, options):
    share = statistics.percent(statistics.invalid)
    with_data = statistics.percent(statistics.invalid_with_data)
    without_data = share - with_data
    text = (f"{share:.1f}% of the area has no valid cloud or shadow probability (NaN, or outside 0-1), more than "
            f"MAX_NODATA ({options.max_nodata:g}%): no mask was written, it would be mostly nodata. ")
    if with_data >= without_data:
        text += (f"Where the product mask has data ({with_data:.1f}% of the area) the model gave no number: it most "
                 "likely got its inputs on the wrong scale (digital numbers where it expects reflectance, or the "
                 "reverse). Compute the probabilities again with the input scale (INPUT_SCALE) set to what the stack "
                 "holds, or from a stack written by 'Download and stack Sentinel-2'. ")
    else:
        text += (f"The product mask has no data over {without_data:.1f}% of the area (outside the scene or its "
                 "swath): choose an area the acquisition covers, or keep only acquisitions that cover it "
                 "(MIN_TILE_COVER). ")
    return text + "To write the mask anyway, raise MAX_NODATA."


def _stream(product_mask, cloud_probability, shadow_probability, work, rules, geometry, block_size, progress,
            should_cancel, zone=None):
    """Merges block by block (with the halo of the growth); zone: the shadows.ShadowZone, or None."""
    import rasterio

    statistics = MaskStatistics()
    with rasterio.open(product_mask) as product, rasterio.open(cloud_probability) as cloud, \
            rasterio.open(shadow_probability) as shadow:
        profile = dict(driver="GTiff", width=product.width, height=product.height, count=1, dtype="uint8",
                       crs=product.crs, transform=product.transform, tiled=True, blockxsize=512, blockysize=512,
                       compress="DEFLATE")
        blocks = list(Grid(product.crs, product.transform, product.width, product.height).blocks(block_size))
        with rasterio.open(work / "mask.tif", "w", **profile) as mask_out, \
                rasterio.open(work / "classes.tif", "w", nodata=NODATA, **profile) as classes_out:
            for number, block in enumerate(blocks, start=1):
                if should_cancel():
                    raise Cancelled("Merging the cloud masks was cancelled.")
                halo_window, core = _with_halo(block, geometry.halo, product.width, product.height)
                codes = product.read(1, window=halo_window)
                _check_codes(codes, product_mask)
                zone_window = None if zone is None else zone.window(
                    int(halo_window.row_off), int(halo_window.col_off), int(halo_window.height),
                    int(halo_window.width))
                mask, classes, invalid, dropped = _merge(codes, cloud.read(1, window=halo_window),
                                                         shadow.read(1, window=halo_window), rules, geometry,
                                                         zone_window)
                mask_out.write(mask[core][None], window=block)
                classes_out.write(classes[core][None], window=block)
                statistics.add(classes[core], codes[core], invalid[core], None if dropped is None else dropped[core])
                progress(number / len(blocks), "merging the masks")
    describe_classes(work / "mask.tif", "cloud_mask", MASK_LABELS)
    describe_classes(work / "classes.tif", "cloud_classes", CLASS_LABELS, NODATA)
    return statistics


def _with_halo(block, halo, width, height):
    """The block grown by `halo` (clipped to the raster) and the slices of the block inside it."""
    from rasterio.windows import Window

    col0, row0 = max(0, block.col_off - halo), max(0, block.row_off - halo)
    col1 = min(width, block.col_off + block.width + halo)
    row1 = min(height, block.row_off + block.height + halo)
    core = (slice(block.row_off - row0, block.row_off - row0 + block.height),
            slice(block.col_off - col0, block.col_off - col0 + block.width))
    return Window(col0, row0, col1 - col0, row1 - row0), core


def _check_codes(codes, path):
    unknown = np.setdiff1d(np.unique(codes), _KNOWN_PRODUCT_CODES)
    if unknown.size:
        known = "; ".join(f"{code} {label}" for code, (label, _) in MASK_CATEGORIES.items())
        raise InputError(
            f"The product mask {path} holds values {', '.join(map(str, unknown[:10]))} that are not product mask "
            f"codes ({known}; {MASK_NODATA} nodata). Use the mask written by 'Download and stack Sentinel-2'."
        )

