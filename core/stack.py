"""Download and stack: the 12 L2A bands at 10 m in one raster per acquisition, plus the
product cloud mask from SCL, reading only the pixels the area needs.

FarmVibes' download_stack_sentinel2 + merge_sentinel2_orbits, improved:
- windowed COG reads (HTTP Range) of the area instead of whole ~1 GB tiles, cached on disk;
- the grid is the area's, in one CRS: tiles of one acquisition from other UTM zones are
  reprojected onto it and mosaicked (first valid pixel, tiles ordered by how much of the area
  they cover, then by id);
- radiometry harmonised: for processing baseline >= 04.00, DN - 1000, clipped to >= 1 (0 stays
  nodata), so every date is on one scale; band metadata carries scale 0.0001;
- the product mask comes from SCL (FarmVibes' vector mask no longer exists since baseline 04.00);
- the work is streamed in blocks; outputs are written under temporary names and renamed
  only when complete, so Cancel or an error never leaves a half-written file.
"""

import os
import shutil
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as WaitTimeout  # not the built-in one before Python 3.11
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import numpy as np

from . import cogread, search, shadows, signing, tempfiles
from .errors import Cancelled, InputError, SearchError
from .grid import offset_transform
from .records import S2_BANDS
from .selection import item_cover_fractions

RESAMPLING_METHODS = ("bilinear", "nearest", "cubic")  # rasterio.enums.Resampling members: see resampling()
# Source pixels read beyond a block's edge so that the resampling kernel has its neighbours.
MARGIN = {"nearest": 1, "bilinear": 2, "cubic": 3}
REFLECTANCE_SCALE = 1e-4
# GDAL's block cache while stacking: grown to hold two or three source block rows of every band
# (see _BandReader._grow_block_cache) plus BLOCK_CACHE_HEADROOM_BYTES (a whole tile: about 400 MB),
# never beyond this.
MAX_BLOCK_CACHE_BYTES = 640 * 1024 * 1024
# Beyond those rows: the block being written, and the next row's first blocks read ahead (without
# it, LRU eviction re-fetched up to 25% of a whole tile's bytes, depending on thread timing).
BLOCK_CACHE_HEADROOM_BYTES = 96 * 1024 * 1024
# GDAL's block cache while publishing: the uncompressed source is read from the page cache, so a
# small cache costs no time and keeps a whole tile's peak memory low.
PUBLISH_CACHE_BYTES = 64 * 1024 * 1024
# Overviews only where they help drawing: down to a screen's size. GDAL's COG driver would go on
# to one 512 px block, but QGIS draws a raster up to 1024 px a side from its full resolution in at
# most four blocks, and that overview costs a quarter more compression (0.3 s for a 10 km stack).
OVERVIEW_FIT = 1024
# Share of write_cog's progress that building the overviews takes (a whole tile's stack: 19%).
OVERVIEW_SHARE = 0.2
# Shares of a stacking step's progress bar: reading and resampling, then writing. A whole tile
# spends 38% of its time reading, 60% on the stack's COG (compressing 12 bands on the CPUs) and 2%
# on the mask's (bench/bench_stack_phases.py): MASK_WRITE_SHARE is the mask's share of the writing.
READ_SHARE, MASK_WRITE_SHARE = 0.4, 0.03

# Product mask codes (uint8), from the scene classification (SCL).
MASK_CLEAR, MASK_OPAQUE, MASK_CIRRUS, MASK_INVALID, MASK_SHADOW, MASK_NODATA = 0, 1, 2, 3, 4, 255
MASK_CATEGORIES = {
    MASK_CLEAR: ("clear", (56, 168, 0)),
    MASK_OPAQUE: ("opaque cloud (SCL 8, 9)", (255, 255, 255)),
    MASK_CIRRUS: ("cirrus (SCL 10)", (115, 223, 255)),
    MASK_INVALID: ("saturated or defective (SCL 1)", (255, 0, 197)),
    MASK_SHADOW: ("cloud shadow (SCL 3)", (78, 78, 78)),
}
_SCL_TO_MASK = np.zeros(256, dtype=np.uint8)  # SCL 2, 4, 5, 6, 7, 11: clear
_SCL_TO_MASK[[8, 9]] = MASK_OPAQUE
_SCL_TO_MASK[10] = MASK_CIRRUS
_SCL_TO_MASK[1] = MASK_INVALID
_SCL_TO_MASK[3] = MASK_SHADOW
_SCL_TO_MASK[0] = MASK_NODATA


@dataclass(frozen=True)
class StackOptions:
    cache_dir: Path
    resampling: str = "bilinear"
    dl_timeout: float = 120.0  # s per HTTP request: COG reads (GDAL) and the token endpoint
    pc_key: str = None  # None: PC_SDK_SUBSCRIPTION_KEY, if set (see core/signing.py)
    sas_url: str = None  # None: PC_SDK_SAS_URL, else Planetary Computer's token endpoint
    block_size: int = 1024
    threads: int = 6
    attempts: int = 4  # per request, for GDAL's reads and the token endpoint alike
    backoff: float = 1.0  # s before the first retry, then about twice as long each time
    proxies: object = None  # a core.search.Proxies; None leaves GDAL and requests to the environment


@dataclass(frozen=True)
class StackResult:
    raster: Path
    mask: Path
    items: tuple
    valid_fraction: float


def resampling(method):
    """The rasterio Resampling member for one of RESAMPLING_METHODS."""
    from rasterio.enums import Resampling

    return Resampling[method]


def __getattr__(name):
    """`stack.RESAMPLING` (method -> rasterio Resampling) still works; asking for it imports rasterio."""
    if name == "RESAMPLING":
        return {method: resampling(method) for method in RESAMPLING_METHODS}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def scl_to_mask(scl):
    return _SCL_TO_MASK[scl]


def harmonise(dn, offset):
    """DN + offset, clipped to >= 1 where there is data; 0 (nodata) stays 0."""
    if offset == 0:
        return dn
    if offset < 0 and dn.dtype == np.uint16:  # the usual case (-1000), without int32 copies
        shifted = np.maximum(dn, 1 - offset).astype(np.uint16)
        shifted -= np.uint16(-offset)
        shifted[dn == 0] = 0
        return shifted
    shifted = np.clip(dn.astype(np.int32) + offset, 1, None).astype(np.uint16)
    return np.where(dn > 0, shifted, 0).astype(np.uint16)


def mosaic_order(items, area_wgs84):
    """Tiles that cover more of the area first; then by id (a stable, documented order)."""
    covers = item_cover_fractions(items, area_wgs84)
    return sorted(items, key=lambda item: (-round(covers[item.id], 9), item.id))


def check_items(items, area_wgs84):
    import shapely

    for item in items:
        missing = [name for name in S2_BANDS + ("SCL",) if name not in item.bands]
        if missing:
            raise InputError(f"Product {item.id} has no asset {', '.join(missing)}; it cannot be stacked.")
        incomplete = [name for name, band in item.bands.items() if not band.transform or not band.shape]
        if incomplete:
            raise InputError(f"Product {item.id}: assets {', '.join(incomplete)} lack proj:transform/proj:shape.")
        if not shapely.intersects(shapely.geometry.shape(item.footprint), area_wgs84):
            raise InputError(
                f"The area lies outside the footprint of product {item.id} (tile {item.mgrs_tile}); "
                "nothing of it can be read. Check the area or select other products."
            )


def check_writable(folder):
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as err:
        raise InputError(f"Cannot write to the output folder {folder}: {err.strerror or err}. "
                         "Choose a folder you can write to.") from err


def stack_acquisition(items, area_wgs84, grid, raster_path, mask_path, options, progress=None, should_cancel=None):
    """Reads, resamples, harmonises and mosaics `items` (one acquisition) onto `grid`.

    Writes a 12-band uint16 COG and a uint8 mask COG; returns a StackResult.
    """
    progress = progress or (lambda fraction, message: None)
    should_cancel = should_cancel or (lambda: False)
    if options.resampling not in RESAMPLING_METHODS:
        raise InputError(f"Unknown resampling '{options.resampling}'; use one of {', '.join(RESAMPLING_METHODS)}.")
    check_items(items, area_wgs84)
    raster_path, mask_path = Path(raster_path), Path(mask_path)
    check_writable(raster_path.parent)
    ordered = mosaic_order(items, area_wgs84)
    reader = _BandReader(ordered, options)
    tempfiles.remove_stale(options.cache_dir)  # *.part files of a killed run
    work = tempfiles.work_folder(raster_path.parent, "stacking")
    try:
        raster_tmp, mask_tmp = Path(work) / "raster.tif", Path(work) / "mask.tif"
        valid = _stream_blocks(grid, reader, raster_tmp, mask_tmp, options,
                               lambda fraction, message: progress(READ_SHARE * fraction, message), should_cancel)
        describe_outputs(raster_tmp, mask_tmp, [i.id for i in ordered], [i.processing_baseline for i in ordered],
                         shadows.mean_sun((i.sun_azimuth, i.sun_zenith) for i in ordered))
        publish_outputs(raster_tmp, mask_tmp, raster_path, mask_path, READ_SHARE, progress, should_cancel)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return StackResult(raster_path, mask_path, tuple(ordered), valid)


def publish_outputs(raster_tmp: Path, mask_tmp: Path, raster_path: Path, mask_path: Path, start: float,
                    progress: Callable[[float, str], None], should_cancel: Callable[[], bool]) -> None:
    """Publishes a stack and its product mask as COGs; `progress` moves from `start` to 1. Both are
    written before either is renamed into place: Cancel never leaves a stack without its mask."""
    middle = 1 - (1 - start) * MASK_WRITE_SHARE
    with publishing([raster_path, mask_path]) as partials:
        write_cog(raster_tmp, partials[0], "average", should_cancel,
                  lambda fraction: progress(start + (middle - start) * fraction, "writing the stack's COG"))
        write_cog(mask_tmp, partials[1], "nearest", should_cancel,
                  lambda fraction: progress(middle + (1 - middle) * fraction, "writing the mask's COG"))


def _stream_blocks(grid, reader, raster_tmp, mask_tmp, options, progress, should_cancel):
    """Computes the blocks row by row (bands of one block in parallel, the next block's queued
    behind them) and writes them in order to uncompressed tiled GeoTIFFs that write_cog then
    compresses once."""
    import rasterio

    blocks = list(grid.blocks(options.block_size))
    names = S2_BANDS + ("SCL",)
    total, done, valid_pixels = len(blocks) * len(names), 0, 0
    # The pool closes (all reads finished) before the GDAL environment does: leaving the
    # environment while a worker is inside GDAL deadlocks.
    urls = [band.href for item in reader.items for band in item.bands.values()]
    gdal_options = cogread.gdal_http_options(options.dl_timeout, options.attempts, options.backoff, options.proxies,
                                             urls)
    with rasterio.Env(**gdal_options), \
            IntermediateRaster(raster_tmp, grid, len(S2_BANDS), np.uint16, 0) as raster, \
            IntermediateRaster(mask_tmp, grid, 1, np.uint8, MASK_NODATA) as mask, \
            reader, ThreadPoolExecutor(max_workers=max(1, options.threads)) as pool:
        def submit(block):
            return {name: pool.submit(_in_env, gdal_options, reader.mosaic, name, grid.sub_grid(block), should_cancel)
                    for name in names}

        futures, queued = {}, submit(blocks[0])
        try:
            for number, block in enumerate(blocks, start=1):
                futures, queued = queued, (submit(blocks[number]) if number < len(blocks) else {})
                arrays = {}
                for name in names:  # progress moves with each band finished
                    arrays[name] = _result(futures[name], should_cancel)
                    done += 1
                    progress(done / total, "reading and resampling the bands")
                stack = np.stack([arrays[name] for name in S2_BANDS])
                product_mask = scl_to_mask(arrays["SCL"])
                product_mask[(stack == 0).any(axis=0)] = MASK_NODATA
                raster.write(stack, block)
                mask.write(product_mask[None], block)
                valid_pixels += int((product_mask != MASK_NODATA).sum())
                if block.col_off + block.width == grid.width:  # a row of blocks done
                    _release_freed_memory()
        except BaseException:
            reader.stop()
            for future in list(futures.values()) + list(queued.values()):
                future.cancel()
            raise
    return valid_pixels / float(grid.width * grid.height)


class IntermediateRaster:
    """An uncompressed tiled GeoTIFF written block by block, which write_cog then compresses once.
    Each block is flushed to disk at once: dirty blocks would otherwise fill GDAL's block cache and
    push out source blocks still needed."""

    def __init__(self, path, grid, count, dtype, nodata):
        from osgeo import gdal, gdal_array

        self.dataset = gdal.GetDriverByName("GTiff").Create(
            str(path), grid.width, grid.height, count, gdal_array.NumericTypeCodeToGDALTypeCode(np.dtype(dtype)),
            ["TILED=YES", "BLOCKXSIZE=512", "BLOCKYSIZE=512", "BIGTIFF=IF_SAFER"])
        if self.dataset is None:
            raise OSError(f"Could not create {path}: {gdal.GetLastErrorMsg()}")
        self.dataset.SetGeoTransform(grid.transform.to_gdal())
        self.dataset.SetProjection(grid.crs.to_wkt())
        for index in range(1, count + 1):
            self.dataset.GetRasterBand(index).SetNoDataValue(nodata)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.dataset = None  # closes the file

    def write(self, array, window):
        """Writes a (bands, rows, columns) array at the window's origin."""
        self.dataset.WriteArray(array, int(window.col_off), int(window.row_off))
        self.dataset.FlushCache()


def _release_freed_memory():
    """Hands memory freed by the worker threads (GDAL's source blocks) back to the system, where
    the C library can (glibc's malloc_trim); elsewhere nothing."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        pass


def _in_env(gdal_options, function, *args):
    """function(*args) inside a rasterio.Env of its own: rasterio's settings are per thread, and a
    worker without them reads without the HTTP timeouts and holds the GIL while it waits for the
    network (QGIS froze for tens of seconds)."""
    import rasterio

    with rasterio.Env(**gdal_options):
        return function(*args)


def _result(future, should_cancel, poll=0.2):
    """The future's result; Cancel is noticed within `poll` seconds while waiting."""
    while True:
        if should_cancel():
            raise Cancelled("Stacking cancelled.")
        try:
            return future.result(timeout=poll)
        except WaitTimeout:
            continue


class _BandReader:
    """Mosaics one band of the acquisition's tiles onto one block."""

    def __init__(self, items, options):
        self.items = items
        self.options = options
        self.cache = cogread.WindowCache(options.cache_dir)
        self._signed = {}
        self._sign_failure = None  # the first token failure ends the step: the other bands share it
        self._first_error = None  # the first band that failed
        policy = search.RequestPolicy(timeout=options.dl_timeout, attempts=options.attempts,
                                      backoff=options.backoff, proxies=options.proxies)
        self._endpoint = signing.TokenEndpoint(url=options.sas_url, policy=policy)
        # One open dataset per (item, band) for the whole step, used by one thread at a time: GDAL's
        # block cache then decodes each source block once for all the output blocks it feeds.
        self._datasets = {}
        self._locks = {}
        self._guard = threading.Lock()
        self._cache_bytes = 0
        self._stopped = False

    def __enter__(self):
        from osgeo import gdal

        self._previous_cache_max = gdal.GetCacheMax()
        return self

    def __exit__(self, *exc):
        self.close()

    def stop(self):
        """Queued bands end at once (Cancel or an error elsewhere)."""
        self._stopped = True

    def close(self):
        """Closes the datasets (call after the worker threads have finished)."""
        with self._guard:
            for dataset in self._datasets.values():
                dataset.close()
            self._datasets.clear()
        if self._cache_bytes:
            from osgeo import gdal

            gdal.SetCacheMax(self._previous_cache_max)
        _release_freed_memory()

    def mosaic(self, name, block_grid, should_cancel):
        # After one band has failed, the bands still queued do not start: each read can take the
        # whole of its retries, and the step's error is known already.
        if self._first_error is not None:
            raise self._first_error
        if self._stopped:
            raise Cancelled("Stacking cancelled.")
        try:
            return self._mosaic(name, block_grid, should_cancel)
        except Exception as err:
            if self._first_error is None:
                self._first_error = err
            raise

    def _mosaic(self, name, block_grid, should_cancel):
        if should_cancel():
            raise Cancelled("Stacking cancelled.")
        is_scl = name == "SCL"
        method = "nearest" if is_scl else self.options.resampling
        dtype = np.uint8 if is_scl else np.uint16
        out = None
        for item in self.items:
            part = self._resampled(item, name, block_grid, method, dtype)
            if part is None:
                continue
            if not is_scl:
                part = harmonise(part, item.reflectance_offset)
            if out is None:
                out = part
            else:
                np.copyto(out, part, where=out == 0)
            if out.all():
                break  # later tiles cannot add anything to this block
        return out if out is not None else np.zeros((block_grid.height, block_grid.width), dtype=dtype)

    def _resampled(self, item, name, block_grid, method, dtype):
        import rasterio.crs
        from rasterio.errors import NotGeoreferencedWarning
        from rasterio.transform import Affine
        from rasterio.warp import reproject

        asset = item.bands[name]
        item_crs = rasterio.crs.CRS.from_epsg(item.epsg)
        destination = np.zeros((block_grid.height, block_grid.width), dtype=dtype)
        origin = _pixel_shift(Affine(*asset.transform), item_crs, block_grid)
        if origin is not None:  # the block lies on the source's own grid: its pixels as they are
            window = _block_window(origin, block_grid, asset.shape)  # no margin: nothing is resampled
            if window is None:
                return None
            raw = self._raw_window(item, name, window, cached_rows=2)
            _paste(raw, destination, origin[0] - window.col_off, origin[1] - window.row_off)
            return destination
        window = cogread.source_window(asset, block_grid.bounds, block_grid.crs, item_crs, MARGIN[method])
        if window is None:
            return None
        raw = self._raw_window(item, name, window, cached_rows=3)
        window_transform = offset_transform(Affine(*asset.transform), window.col_off, window.row_off)
        with warnings.catch_warnings():  # rasterio 1.3 warns on plain arrays despite the transforms given
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            reproject(raw, destination, src_transform=window_transform, src_crs=item_crs, src_nodata=0,
                      dst_transform=block_grid.transform, dst_crs=block_grid.crs, dst_nodata=0,
                      resampling=resampling(method))
        return destination

    def _raw_window(self, item, name, window, cached_rows):
        asset = item.bands[name]
        cached = self.cache.get(asset.href, window)
        if cached is not None:
            return cached
        key = (item.id, name)
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            try:
                data = self._read(item, name, window, cached_rows)
            except cogread.DownloadError as err:
                if not (cogread.is_access_error(err) and _is_signable(asset.href)):
                    raise
                # an expired or refused SAS token: sign once more with a fresh token, then give up
                self._drop(key)
                data = self._read(item, name, window, cached_rows, fresh=True)
        self.cache.put(asset.href, window, data)
        return data

    def _read(self, item, name, window, cached_rows, fresh=False):
        from rasterio.transform import Affine

        key, label = (item.id, name), f"Band {name} of {item.id}"
        href = self._href(item, name, fresh=fresh)
        dataset = self._datasets.get(key)
        if dataset is None:
            dataset = cogread.open_band(href, Affine(*item.bands[name].transform), label)
            with self._guard:
                self._datasets[key] = dataset
                self._grow_block_cache(dataset, cached_rows)
        return cogread.read_from(dataset, href, window, label)

    def _drop(self, key):
        with self._guard:
            dataset = self._datasets.pop(key, None)
        if dataset is not None:
            dataset.close()

    def _grow_block_cache(self, dataset, rows):
        """GDAL's block cache holds `rows` source block rows of the band: three where it is resampled
        (the rows the current output block row, its resampling margin and the next output row
        need), two where its pixels are copied (an output block row spans two source block rows)."""
        from osgeo import gdal

        block_rows, _ = dataset.block_shapes[0]
        row_bytes = dataset.width * block_rows * np.dtype(dataset.dtypes[0]).itemsize
        self._cache_bytes += rows * row_bytes
        wanted = self._cache_bytes + BLOCK_CACHE_HEADROOM_BYTES
        gdal.SetCacheMax(max(cogread.BLOCK_CACHE_BYTES, min(wanted, MAX_BLOCK_CACHE_BYTES)))

    def _href(self, item, name, fresh=False):
        href = item.bands[name].href
        if not _is_signable(href):
            return href
        if self._sign_failure is not None:
            raise self._sign_failure
        if fresh or href not in self._signed:
            try:
                self._signed[href] = signing.sign_href(href, self.options.pc_key, self._endpoint, fresh=fresh)
            except SearchError as err:
                self._sign_failure = SearchError(f"Band {name} of {item.id}: no access token. {err}")
                raise self._sign_failure from err
        return self._signed[href]


def _pixel_shift(source_transform, source_crs, block_grid):
    """(column, row) of the block's origin on the source's grid when both grids are one (same CRS,
    pixel size and pixel edges), else None. Resampling onto the same grid returns the pixels."""
    if source_crs != block_grid.crs:
        return None
    a, b, c, d, e, f = tuple(source_transform)[:6]
    ba, bb, bc, bd, be, bf = tuple(block_grid.transform)[:6]
    if (a, b, d, e) != (ba, bb, bd, be) or b or d:
        return None
    col, row = (bc - c) / a, (bf - f) / e
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return int(round(col)), int(round(row))


def _block_window(origin, block_grid, shape):
    """The source window of a block at (column, row) `origin` on the source's grid, clipped to the
    source's `shape` (rows, columns), or None when they do not overlap."""
    from rasterio.windows import Window

    col0, row0 = max(0, origin[0]), max(0, origin[1])
    col1, row1 = min(shape[1], origin[0] + block_grid.width), min(shape[0], origin[1] + block_grid.height)
    if col1 <= col0 or row1 <= row0:
        return None
    return Window(col0, row0, col1 - col0, row1 - row0)


def _paste(source, destination, col, row):
    """destination[r, c] = source[row + r, col + c] where the source has that pixel."""
    rows, cols = source.shape
    top, left = max(0, -row), max(0, -col)
    bottom, right = min(destination.shape[0], rows - row), min(destination.shape[1], cols - col)
    if bottom > top and right > left:
        destination[top:bottom, left:right] = source[row + top:row + bottom, col + left:col + right]


def _is_signable(href):
    """Whether an href needs a SAS token (Azure Blob Storage), as core/signing.py decides."""
    return signing.is_signable(href)


def describe_outputs(raster_tmp, mask_tmp, products, baselines, sun=None):
    """Band names, reflectance scale, provenance tags, mask palette and class names; `sun` (a
    shadows.Sun, the acquisition's mean) as SUN_AZIMUTH / SUN_ZENITH tags of both files."""
    import rasterio

    with rasterio.open(raster_tmp, "r+") as raster:
        for index, name in enumerate(S2_BANDS, start=1):
            raster.set_band_description(index, name)
        raster.scales = [REFLECTANCE_SCALE] * len(S2_BANDS)
        raster.offsets = [0.0] * len(S2_BANDS)
        raster.update_tags(
            BANDS=",".join(S2_BANDS),
            REFLECTANCE="reflectance = DN * 0.0001 (BOA_ADD_OFFSET already applied)",
            PRODUCTS=",".join(products),
            PROCESSING_BASELINES=",".join(baselines),
            MOSAIC_ORDER="first valid pixel; tiles covering more of the area first, then by id",
            **shadows.sun_tags(sun),
        )
    describe_classes(mask_tmp, "product_mask", MASK_CATEGORIES, MASK_NODATA,
                     SOURCE="Sentinel-2 L2A scene classification (SCL)", **shadows.sun_tags(sun))


def describe_classes(path, description, categories, nodata_code=None, **tags):
    """Band description, palette, a CODES tag and GDAL category names (QGIS and gdalinfo show
    the class labels) of a one-band class raster; categories maps code -> (label, (r, g, b))."""
    import rasterio
    from osgeo import gdal

    codes = "; ".join(f"{code}={label}" for code, (label, _) in categories.items())
    with rasterio.open(path, "r+") as dst:
        dst.set_band_description(1, description)
        dst.write_colormap(1, {code: color + (255,) for code, (_, color) in categories.items()})
        dst.update_tags(CODES=codes + (f"; {nodata_code}=nodata" if nodata_code is not None else ""), **tags)
    names = [""] * ((nodata_code if nodata_code is not None else max(categories)) + 1)
    for code, (label, _) in categories.items():
        names[code] = label
    if nodata_code is not None:
        names[nodata_code] = "nodata"
    dataset = gdal.Open(str(path), gdal.GA_Update)
    dataset.GetRasterBand(1).SetCategoryNames(names)
    dataset = None


@contextmanager
def publishing(targets: List[Path]) -> Iterator[List[Path]]:
    """Yields a partial path next to each target, for write_cog; renames them all into place when
    the `with` block ends normally, removes them otherwise: readers never see a partial file, and
    Cancel or an error never leaves one output without the others."""
    partials = [Path(target).with_name(f".{Path(target).name}.partial") for target in targets]
    try:
        yield partials
        _release_freed_memory()
        for partial, target in zip(partials, targets):
            os.replace(partial, target)
            _move_sidecar(partial, target)
    finally:
        for partial in partials:
            partial.unlink(missing_ok=True)
            Path(str(partial) + ".aux.xml").unlink(missing_ok=True)


def write_cog(source: Path, partial: Path, overview_resampling: str, should_cancel: Optional[Callable[[], bool]] = None,
              progress: Optional[Callable[[float], None]] = None) -> None:
    """Writes `source` as a COG at `partial` (a path from publishing).

    The one compression of the pixels, on every CPU; `should_cancel` (if given) interrupts it and
    `progress` (if given) is called with the fraction done. Overviews halve the raster until it fits
    in OVERVIEW_FIT pixels a side; a raster that fits already has none.
    """
    from osgeo import gdal

    should_cancel = should_cancel or (lambda: False)
    progress = progress or (lambda fraction: None)

    def callback_for(start, share):
        def callback(complete, message, data):
            if should_cancel():
                return 0
            progress(start + share * complete)
            return 1
        return callback

    options = ["COMPRESS=DEFLATE", "PREDICTOR=2", "BLOCKSIZE=512", f"OVERVIEW_RESAMPLING={overview_resampling.upper()}",
               "BIGTIFF=IF_SAFER", "NUM_THREADS=ALL_CPUS"]
    previous = gdal.GetCacheMax()
    gdal.SetCacheMax(PUBLISH_CACHE_BYTES)
    copy_start = 0.0
    try:
        dataset = gdal.Open(str(source), gdal.GA_Update)
        factors = _overview_factors(dataset)
        if not factors:
            options.append("OVERVIEWS=NONE")
        elif not dataset.GetMetadataItem("COMPRESSION", "IMAGE_STRUCTURE") and not dataset.GetRasterBand(
                1).GetOverviewCount():
            # In the uncompressed source the overviews cost no compression; the COG driver then
            # copies them, and every pixel is compressed once (the driver's values).
            copy_start = OVERVIEW_SHARE
            dataset.BuildOverviews(overview_resampling.upper(), factors, callback=callback_for(0, copy_start))
        written = None if should_cancel() else gdal.GetDriverByName("COG").CreateCopy(
            str(partial), dataset, strict=0, options=options, callback=callback_for(copy_start, 1 - copy_start))
        failure = gdal.GetLastErrorMsg()
    except RuntimeError as err:  # when osgeo.gdal.UseExceptions() is on
        written, failure = None, str(err)
    finally:
        dataset = None
        gdal.SetCacheMax(previous)
    target = partial.with_name(partial.name[1:].removesuffix(".partial"))
    if written is None and not should_cancel():
        raise OSError(f"Could not write {target}: {failure}")
    written = None  # closes the file
    if should_cancel():  # also when GDAL had finished: nothing is published once Cancel was pressed
        raise Cancelled(f"Cancelled while writing {target.name}.")


def _overview_factors(dataset, fit=OVERVIEW_FIT):
    """Overview levels: halving until the image fits in `fit` pixels a side."""
    factors, factor = [], 1
    while -(-dataset.RasterXSize // factor) > fit or -(-dataset.RasterYSize // factor) > fit:
        factor *= 2
        factors.append(factor)
    return factors


def _move_sidecar(partial, target):
    aux = Path(str(partial) + ".aux.xml")
    if aux.exists():
        os.replace(aux, Path(str(target) + ".aux.xml"))


def acquisition_groups(items):
    """[(key, items)] per acquisition (one satellite pass), in time order: FarmVibes'
    group_sentinel2_orbits, keyed by (platform, sensing time) instead of an orbit number
    that needed a manifest download."""
    groups = {}
    for item in items:
        groups.setdefault(item.acquisition_key, []).append(item)
    return sorted(groups.items(), key=lambda entry: (entry[0][1], entry[0][0]))


def acquisition_name(items):
    """File stem for an acquisition, e.g. S2A_20221005T115411_R023."""
    first = items[0]
    orbit = f"_R{first.relative_orbit:03d}" if first.relative_orbit is not None else ""
    return f"{first.platform}_{first.datetime:%Y%m%dT%H%M%S}{orbit}"
