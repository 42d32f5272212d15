"""The improved cloud mask: FarmVibes' merge_cloud_masks_simple, streamed in blocks.

    flagged = P_cloud > cloud_thr  OR  P_shadow > shadow_thr  OR  product mask != 0
    masked  = flagged dilated by a disk of radius closing_size pixels
    if min_area > 0: masked components smaller than min_area pixels are cleared (8-connected),
                     then clear holes smaller than min_area are filled (4-connected)

The product mask's nodata (255) counts as flagged, and probabilities are 1 where the stack has
no data, so nodata is masked as in FarmVibes. FarmVibes' hole filling never runs (a bitwise NOT
on uint8); here it does what its name says.

Outputs: the mask (uint8, 0 clear, 1 cloud, as FarmVibes) and optionally classes (0 clear,
1 cloud, 2 shadow, 255 nodata): a masked pixel is shadow when it lies within closing_size of a
shadow pixel (P_shadow > shadow_thr or product code 4) and not within closing_size of a cloud
pixel (P_cloud > cloud_thr or product codes 1-3); every other masked pixel is cloud.

Blocks are read with a halo of closing_size + 2 x min_area pixels: any component that reaches
beyond the halo has more than min_area pixels inside it, so every block gives exactly what the
whole array would (tested).
"""

import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import Cancelled, InputError
from .grid import Grid
from .stack import MASK_CATEGORIES, MASK_NODATA, check_writable, describe_classes, publish_cog

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


@dataclass(frozen=True)
class MergeOptions:
    cloud_thr: float = 0.3
    shadow_thr: float = 0.2
    closing_size: int = 5
    min_area: int = 0

    @property
    def halo(self):
        return self.closing_size + 2 * self.min_area


@dataclass
class MaskStatistics:
    """Pixel counts of one merged mask, for the statistics table."""

    pixels: int = 0
    counts: dict = field(default_factory=lambda: {CLEAR: 0, CLOUD: 0, SHADOW: 0, NODATA: 0})
    product_flagged: int = 0  # product mask codes 1-4

    def add(self, classes, product):
        self.pixels += classes.size
        for code in self.counts:
            self.counts[code] += int(np.count_nonzero(classes == code))
        self.product_flagged += int(np.count_nonzero((product != 0) & (product != MASK_NODATA)))

    def percent(self, count):
        return 100.0 * count / self.pixels if self.pixels else 0.0

    def as_row(self):
        return {"pct_clear": self.percent(self.counts[CLEAR]), "pct_cloud": self.percent(self.counts[CLOUD]),
                "pct_shadow": self.percent(self.counts[SHADOW]), "pct_nodata": self.percent(self.counts[NODATA]),
                "pct_product_masked": self.percent(self.product_flagged)}


def validate_options(options):
    for name in ("cloud_thr", "shadow_thr"):
        value = getattr(options, name)
        if not 0.0 <= value <= 1.0:
            raise InputError(f"{name} must be a probability between 0 and 1, got {value}.")
    for name in ("closing_size", "min_area"):
        value = getattr(options, name)
        if value < 0 or int(value) != value:
            raise InputError(f"{name} must be a whole number of pixels, 0 or more, got {value}.")


def disk(radius):
    """skimage's disk: the pixels within `radius` of the centre (radius 5: 11 x 11, 81 pixels)."""
    offsets = np.arange(-radius, radius + 1)
    return offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius ** 2


def dilate(mask, radius):
    """Binary dilation by disk(radius), as rows: one horizontal maximum per distinct half-width."""
    from scipy import ndimage

    if radius == 0:
        return mask.copy()
    height, width = mask.shape
    padded = np.pad(mask, radius).view(np.uint8)
    by_half_width = {}
    out = np.zeros_like(mask)
    for dy in range(-radius, radius + 1):
        half = math.isqrt(radius * radius - dy * dy)
        if half not in by_half_width:
            by_half_width[half] = ndimage.maximum_filter1d(padded, 2 * half + 1, axis=1, mode="constant")
        out |= by_half_width[half][radius + dy:radius + dy + height, radius:radius + width].astype(bool)
    return out


def _drop_small(mask, min_area, structure):
    from scipy import ndimage

    labels, count = ndimage.label(mask, structure=structure)
    if count == 0:
        return mask
    small = np.bincount(labels.ravel()) < min_area
    small[0] = False
    return mask & ~small[labels]


def merge_arrays(product, cloud_prob, shadow_prob, options=MergeOptions()):
    """(mask, classes) for whole arrays (or a block with its halo)."""
    nodata = product == MASK_NODATA
    cloud = (cloud_prob > options.cloud_thr) | np.isin(product, _PRODUCT_CLOUD_CODES)
    shadow = (shadow_prob > options.shadow_thr) | (product == _PRODUCT_SHADOW_CODE)
    masked = dilate(cloud | shadow | nodata, options.closing_size)
    if options.min_area > 0:
        masked = _drop_small(masked, options.min_area, _EIGHT_NEIGHBOURS)
        masked = ~_drop_small(~masked, options.min_area, _FOUR_NEIGHBOURS)
    near_shadow = dilate(shadow, options.closing_size) & ~dilate(cloud, options.closing_size)
    classes = np.where(masked, np.where(near_shadow, SHADOW, CLOUD), CLEAR).astype(np.uint8)
    classes[nodata] = NODATA
    return masked.astype(np.uint8), classes


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
                      options=MergeOptions(), block_size=1024, progress=None, should_cancel=None):
    """Writes the improved mask (and the classes); returns MaskStatistics."""
    progress = progress or (lambda fraction, message: None)
    should_cancel = should_cancel or (lambda: False)
    validate_options(options)
    check_same_grid([("product mask", product_mask), ("cloud probability", cloud_probability),
                     ("shadow probability", shadow_probability)])
    mask_path = Path(mask_path)
    targets = [mask_path] + ([Path(classes_path)] if classes_path else [])
    for target in targets:
        check_writable(target.parent)
    work = Path(tempfile.mkdtemp(prefix=".merging-masks-", dir=mask_path.parent))
    try:
        statistics = _stream(product_mask, cloud_probability, shadow_probability, work, options, block_size,
                             progress, should_cancel)
        publish_cog(work / "mask.tif", mask_path, "nearest")
        if classes_path:
            publish_cog(work / "classes.tif", Path(classes_path), "nearest")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return statistics


def _stream(product_mask, cloud_probability, shadow_probability, work, options, block_size, progress,
            should_cancel):
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
                halo_window, core = _with_halo(block, options.halo, product.width, product.height)
                codes = product.read(1, window=halo_window)
                _check_codes(codes, product_mask)
                mask, classes = merge_arrays(codes, cloud.read(1, window=halo_window),
                                             shadow.read(1, window=halo_window), options)
                mask_out.write(mask[core][None], window=block)
                classes_out.write(classes[core][None], window=block)
                statistics.add(classes[core], codes[core])
                progress(number / len(blocks), f"merging block {number}/{len(blocks)}")
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

