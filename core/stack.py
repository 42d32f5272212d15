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
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import cogread, search, signing
from .errors import Cancelled, InputError, SearchError
from .grid import offset_transform
from .records import S2_BANDS
from .selection import item_cover_fractions

RESAMPLING_METHODS = ("bilinear", "nearest", "cubic")  # rasterio.enums.Resampling members: see resampling()
# Source pixels read beyond a block's edge so that the resampling kernel has its neighbours.
MARGIN = {"nearest": 1, "bilinear": 2, "cubic": 3}
REFLECTANCE_SCALE = 1e-4

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
    work = tempfile.mkdtemp(prefix=".stacking-", dir=raster_path.parent)
    try:
        raster_tmp, mask_tmp = Path(work) / "raster.tif", Path(work) / "mask.tif"
        valid = _stream_blocks(grid, reader, raster_tmp, mask_tmp, options, progress, should_cancel)
        describe_outputs(raster_tmp, mask_tmp, [i.id for i in ordered], [i.processing_baseline for i in ordered])
        publish_cog(raster_tmp, raster_path, "average")
        publish_cog(mask_tmp, mask_path, "nearest")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return StackResult(raster_path, mask_path, tuple(ordered), valid)


def _stream_blocks(grid, reader, raster_tmp, mask_tmp, options, progress, should_cancel):
    import rasterio

    blocks = list(grid.blocks(options.block_size))
    names = S2_BANDS + ("SCL",)
    total, done, valid_pixels = len(blocks) * len(names), 0, 0
    profile = dict(driver="GTiff", width=grid.width, height=grid.height, crs=grid.crs, transform=grid.transform,
                   tiled=True, blockxsize=512, blockysize=512, compress="DEFLATE", predictor=2, BIGTIFF="IF_SAFER")
    # The pool closes (all reads finished) before the GDAL environment does: leaving the
    # environment while a worker is inside GDAL deadlocks.
    urls = [band.href for item in reader.items for band in item.bands.values()]
    gdal_options = cogread.gdal_http_options(options.dl_timeout, options.attempts, options.backoff, options.proxies,
                                             urls)
    with rasterio.Env(**gdal_options), \
            rasterio.open(raster_tmp, "w", count=len(S2_BANDS), dtype="uint16", nodata=0, **profile) as raster, \
            rasterio.open(mask_tmp, "w", count=1, dtype="uint8", nodata=MASK_NODATA, **profile) as mask, \
            ThreadPoolExecutor(max_workers=max(1, options.threads)) as pool:
        for number, block in enumerate(blocks, start=1):
            block_grid = grid.sub_grid(block)
            futures = {name: pool.submit(reader.mosaic, name, block_grid, should_cancel) for name in names}
            arrays = {}
            try:
                for name in names:  # collect in band order so progress names the band just finished
                    arrays[name] = futures[name].result()
                    done += 1
                    progress(done / total, f"block {number}/{len(blocks)}: {name}")
            except BaseException:
                for future in futures.values():
                    future.cancel()
                raise
            if should_cancel():
                raise Cancelled("Stacking cancelled.")
            stack = np.stack([arrays[name] for name in S2_BANDS])
            product_mask = scl_to_mask(arrays["SCL"])
            product_mask[(stack == 0).any(axis=0)] = MASK_NODATA
            raster.write(stack, window=block)
            mask.write(product_mask, 1, window=block)
            valid_pixels += int((product_mask != MASK_NODATA).sum())
    return valid_pixels / float(grid.width * grid.height)


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

    def mosaic(self, name, block_grid, should_cancel):
        # After one band has failed, the bands still queued do not start: each read can take the
        # whole of its retries, and the step's error is known already.
        if self._first_error is not None:
            raise self._first_error
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
        out = np.zeros((block_grid.height, block_grid.width), dtype=np.uint8 if is_scl else np.uint16)
        for item in self.items:
            part = self._resampled(item, name, block_grid, method, out.dtype)
            if part is None:
                continue
            if not is_scl:
                part = harmonise(part, item.reflectance_offset)
            empty = out == 0
            out[empty] = part[empty]
            if not (out == 0).any():
                break  # later tiles cannot add anything to this block
        return out

    def _resampled(self, item, name, block_grid, method, dtype):
        import rasterio.crs
        from rasterio.errors import NotGeoreferencedWarning
        from rasterio.transform import Affine
        from rasterio.warp import reproject

        asset = item.bands[name]
        item_crs = rasterio.crs.CRS.from_epsg(item.epsg)
        window = cogread.source_window(asset, block_grid.bounds, block_grid.crs, item_crs, MARGIN[method])
        if window is None:
            return None
        raw = self._raw_window(item, name, window)
        destination = np.zeros((block_grid.height, block_grid.width), dtype=dtype)
        window_transform = offset_transform(Affine(*asset.transform), window.col_off, window.row_off)
        with warnings.catch_warnings():  # rasterio 1.3 warns on plain arrays despite the transforms given
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            reproject(raw, destination, src_transform=window_transform, src_crs=item_crs, src_nodata=0,
                      dst_transform=block_grid.transform, dst_crs=block_grid.crs, dst_nodata=0,
                      resampling=resampling(method))
        return destination

    def _raw_window(self, item, name, window):
        from rasterio.transform import Affine

        asset = item.bands[name]
        cached = self.cache.get(asset.href, window)
        if cached is not None:
            return cached
        label = f"Band {name} of {item.id}"
        expected = Affine(*asset.transform)
        try:
            data = cogread.read_window(self._href(item, name), window, expected, label)
        except cogread.DownloadError as err:
            if not (cogread.is_access_error(err) and _is_signable(asset.href)):
                raise
            # an expired or refused SAS token: sign once more with a fresh token, then give up
            data = cogread.read_window(self._href(item, name, fresh=True), window, expected, label)
        self.cache.put(asset.href, window, data)
        return data

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


def _is_signable(href):
    """Whether an href needs a SAS token (Azure Blob Storage), as core/signing.py decides."""
    return signing.is_signable(href)


def describe_outputs(raster_tmp, mask_tmp, products, baselines):
    """Band names, reflectance scale, provenance tags, mask palette and class names."""
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
        )
    describe_classes(mask_tmp, "product_mask", MASK_CATEGORIES, MASK_NODATA,
                     SOURCE="Sentinel-2 L2A scene classification (SCL)")


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


def publish_cog(source, target, overview_resampling):
    """Converts to a COG next to the target, then renames: readers never see a partial file."""
    import rasterio
    import rasterio.shutil

    partial = target.with_name(f".{target.name}.partial")
    try:
        with rasterio.Env(GDAL_CACHEMAX=cogread.BLOCK_CACHE_BYTES):
            rasterio.shutil.copy(source, partial, driver="COG", compress="DEFLATE", predictor=2, blocksize=512,
                                 overview_resampling=overview_resampling, BIGTIFF="IF_SAFER")
        os.replace(partial, target)
        _move_sidecar(partial, target)
    finally:
        partial.unlink(missing_ok=True)
        Path(str(partial) + ".aux.xml").unlink(missing_ok=True)


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
