"""Merge stacked rasters (and their product masks) of one acquisition onto one grid:
FarmVibes' merge_sentinel2_orbits, for rasters made earlier (for example one per tile).

The first input has priority: a pixel of a later input fills only where the mosaic has no data
yet (all bands 0). Inputs in another CRS are reprojected (bilinear for reflectance, nearest for
masks). Unlike FarmVibes, masks follow the same valid-pixel rule as the rasters, so a later
input's clouds are not lost under an earlier input's nodata.

Inputs of different acquisition dates are refused: a mosaic of two dates looks like one image
but mixes clouds and ground of both. The date of a file is the sensing date of the products its
PRODUCTS tag lists (written by core/stack.py and by this module), else the one in its file name
(<platform>_<YYYYMMDDTHHMMSS>_R<orbit>.tif, ..._mask.tif); a file that names none is not refused.
"""

import math
import re
import shutil
from datetime import date
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np

from . import shadows, tempfiles
from .errors import Cancelled, InputError
from .grid import Grid
from .records import S2_BANDS
from .stack import MASK_NODATA, IntermediateRaster, check_writable, describe_outputs, publish_outputs

# Share of Merge's progress bar that mosaicking the blocks takes; the rest is writing the COGs
# (a whole tile's stack merged alone: 35%, bench/bench_stack_phases.py).
MERGE_SHARE = 0.35


def union_grid(paths, crs=None):
    """A 10 m grid over the union of the inputs, in `crs` or the first input's CRS."""
    import rasterio
    from rasterio.transform import Affine
    from rasterio.warp import transform_bounds

    with rasterio.open(paths[0]) as first:
        crs = rasterio.crs.CRS.from_user_input(crs) if crs else first.crs
        size = abs(first.transform.a)
    boxes = []
    for path in paths:
        with rasterio.open(path) as src:
            boxes.append(transform_bounds(src.crs, crs, *src.bounds, densify_pts=21))
    left = math.floor(min(b[0] for b in boxes) / size) * size
    bottom = math.floor(min(b[1] for b in boxes) / size) * size
    right = math.ceil(max(b[2] for b in boxes) / size) * size
    top = math.ceil(max(b[3] for b in boxes) / size) * size
    return Grid(crs, Affine(size, 0, left, 0, -size, top), int(round((right - left) / size)),
                int(round((top - bottom) / size)))


# A sensing time as in product ids and stack names: 20221005T115411 (the first one is the sensing
# time; a product id ends with its processing time).
_SENSING_TIME = re.compile(r"(?<![0-9])(\d{4})(\d{2})(\d{2})T\d{6}(?![0-9])")


def sensing_date(text):
    """The date of the first sensing time in a product id or file name, or None."""
    for match in _SENSING_TIME.finditer(text):
        try:
            return date(*(int(part) for part in match.groups()))
        except ValueError:  # 8 digits that are not a date
            continue
    return None


def acquisition_dates(tags, file_name):
    """The acquisition dates of one file, from its tags (dict) and its file name: the dates of
    the products in the PRODUCTS tag, or, when it names none, the date in the file name; an
    empty set when neither has one."""
    products = [product for product in tags.get("PRODUCTS", "").split(",") if product.strip()]
    dates = {day for day in map(sensing_date, products) if day is not None}
    if not dates:
        day = sensing_date(Path(file_name).name)
        dates = {day} if day is not None else set()
    return dates


def first_two_dates(dated_files):
    """dated_files: [(file, dates)] in input order. The first two different dates, each with
    the first file that has it, as ((file_a, date_a), (file_b, date_b)); None when all the
    files that have a date have the same one."""
    first = None
    for file, dates in dated_files:
        for day in sorted(dates):
            if first is None:
                first = (file, day)
            elif day != first[1]:
                return first, (file, day)
    return None


def file_dates(paths):
    """[(path, acquisition dates)] of raster files, read from their tags and names (a file GDAL
    cannot open has only its name; the merge itself then says what is wrong with it)."""
    import rasterio
    from rasterio.errors import RasterioIOError

    dated = []
    for path in paths:
        try:
            with rasterio.open(path) as src:
                tags = src.tags()
        except RasterioIOError:
            tags = {}
        dated.append((str(path), acquisition_dates(tags, path)))
    return dated


def date_mix(paths):
    """((file_a, date_a), (file_b, date_b)) when the files are of two acquisition dates, else None."""
    return first_two_dates(file_dates(paths))


def check_inputs(rasters, masks):
    import rasterio

    if not rasters:
        raise InputError("Give at least one stacked raster to merge.")
    if len(rasters) != len(masks):
        raise InputError(f"{len(rasters)} rasters but {len(masks)} masks: give one mask per raster, in the same order.")
    for path in rasters:
        with rasterio.open(path) as src:
            if src.count != len(S2_BANDS) or tuple(src.descriptions) != S2_BANDS:
                raise InputError(f"{path} is not a stacked Sentinel-2 raster (12 bands {', '.join(S2_BANDS)}).")
    mixed = date_mix(list(rasters) + list(masks))
    if mixed:
        (file_a, date_a), (file_b, date_b) = mixed
        raise InputError(f"The inputs are of different acquisition dates: {date_a} ({Path(file_a).name}) and "
                         f"{date_b} ({Path(file_b).name}). A merge mosaics the tiles of one acquisition; "
                         "merge one date at a time.")


def merge_stacks(rasters: List[str], masks: List[str], raster_path: Path, mask_path: Path, crs: Optional[str] = None,
                 block_size: int = 1024, progress: Optional[Callable[[float, str], None]] = None,
                 should_cancel: Optional[Callable[[], bool]] = None) -> Grid:
    """Mosaics stacks and their product masks onto the union of their grids; returns that Grid.
    Written once: uncompressed blocks, then one compression into COGs (publish_outputs)."""
    progress = progress or (lambda fraction, message: None)
    should_cancel = should_cancel or (lambda: False)
    check_inputs(rasters, masks)
    raster_path, mask_path = Path(raster_path), Path(mask_path)
    check_writable(raster_path.parent)
    grid = union_grid(rasters, crs)
    work = tempfiles.work_folder(raster_path.parent, "merging")
    try:
        blocks = list(grid.blocks(block_size))
        with IntermediateRaster(work / "raster.tif", grid, len(S2_BANDS), np.uint16, 0) as out, \
                IntermediateRaster(work / "mask.tif", grid, 1, np.uint8, MASK_NODATA) as out_mask:
            for number, block in enumerate(blocks, start=1):
                if should_cancel():
                    raise Cancelled("Merge cancelled.")
                stack, mask = _merge_block(rasters, masks, grid, block)
                out.write(stack, block)
                out_mask.write(mask[None], block)
                progress(MERGE_SHARE * number / len(blocks), "mosaicking the inputs")
        products, baselines, sun = _provenance(rasters)
        describe_outputs(work / "raster.tif", work / "mask.tif", products, baselines, sun)
        publish_outputs(work / "raster.tif", work / "mask.tif", raster_path, mask_path, MERGE_SHARE, progress,
                        should_cancel)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return grid


def _provenance(rasters):
    import rasterio

    products, baselines, suns = [], [], []
    for path in rasters:
        with rasterio.open(path) as src:
            tags = src.tags()
        products += [p for p in tags.get("PRODUCTS", "").split(",") if p]
        baselines += [b for b in tags.get("PROCESSING_BASELINES", "").split(",") if b]
        sun = shadows.sun_from_tags(tags)
        suns.append((sun.azimuth, sun.zenith) if sun else (None, None))
    return products, baselines, shadows.mean_sun(suns)


def _merge_block(rasters, masks, grid, block):
    from rasterio.enums import Resampling

    sub = grid.sub_grid(block)
    stack = np.zeros((len(S2_BANDS), sub.height, sub.width), dtype=np.uint16)
    mask = np.full((sub.height, sub.width), MASK_NODATA, dtype=np.uint8)
    for raster, mask_file in zip(rasters, masks):
        empty = (stack == 0).all(axis=0)
        if not empty.any():
            break
        data = _read_onto(raster, sub, Resampling.bilinear, 0)
        codes = _read_onto(mask_file, sub, Resampling.nearest, MASK_NODATA)[0]
        fill = empty & (data != 0).any(axis=0)
        stack[:, fill] = data[:, fill]
        mask[fill] = codes[fill]
    return stack, mask


def _read_onto(path, grid, resampling, nodata):
    import rasterio
    from rasterio.vrt import WarpedVRT

    with rasterio.open(path) as src, WarpedVRT(src, crs=grid.crs, transform=grid.transform, width=grid.width,
                                               height=grid.height, resampling=resampling, nodata=nodata) as vrt:
        return vrt.read()
