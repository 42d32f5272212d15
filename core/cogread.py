"""Windowed reads of Cloud-Optimized GeoTIFF assets over HTTP, with an on-disk cache.

Only the source window that an output block needs is requested (HTTP Range reads through
GDAL's /vsicurl/). Windows are computed from the STAC item's `proj:transform`/`proj:shape`,
so a window already in the cache costs no request at all: a re-run after Cancel or a failure
fetches only what is missing.
"""

import hashlib
import math
import os
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import numpy as np

from .errors import S2MasksError


# GDAL's raster block cache (its default is 5% of RAM per process): blocks are read once and
# streamed, so a large cache only holds memory. In bytes (rasterio sets it with GDALSetCacheMax64).
BLOCK_CACHE_BYTES = 256 * 1024 * 1024


class DownloadError(S2MasksError):
    """A band could not be read; the message names the product, the band and the cause."""


def gdal_http_options(timeout, attempts=4, retry_delay=1.0, proxies=None, urls=()):
    """GDAL settings for COGs over HTTP: no directory listing, and the same bounds as every other
    request (core/search.py RequestPolicy): `timeout` for connecting and for each whole request,
    `attempts` in all (GDAL retries HTTP 429/5xx and timeouts, pausing `retry_delay` s, then about
    twice as long each time).

    `proxies` (a core.search.Proxies, or None to leave GDAL's own settings and the environment
    alone): see gdal_proxy_options; `urls` are the files the options are for.
    """
    seconds = str(int(math.ceil(timeout)))
    options = {
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF",
        "GDAL_HTTP_TIMEOUT": seconds,
        "GDAL_HTTP_CONNECTTIMEOUT": seconds,
        "GDAL_HTTP_MAX_RETRY": str(max(0, int(attempts) - 1)),
        "GDAL_HTTP_RETRY_DELAY": f"{retry_delay:g}",
        "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
        "GDAL_HTTP_MULTIPLEX": "YES",
        # no VSI_CACHE: its 32 kB chunks double the header read, and GDAL's block cache (datasets stay
        # open for a whole step, see core/stack.py) keeps what is read more than once
        "GDAL_CACHEMAX": BLOCK_CACHE_BYTES,
    }
    if proxies is not None:
        options.update(gdal_proxy_options(proxies, urls))
    return options


def gdal_proxy_options(proxies, urls=()):
    """GDAL_HTTP_PROXY, GDAL_HTTPS_PROXY and GDAL_HTTP_PROXYUSERPWD for a core.search.Proxies.

    An empty GDAL_HTTP(S)_PROXY means no proxy, even when QGIS or the environment set one. GDAL has
    no option listing hosts to reach without the proxy (and its `/vsicurl?proxy=` form does not go
    with CPL_VSIL_CURL_ALLOWED_EXTENSIONS): when every one of `urls` is on the proxies' no_proxy
    list, GDAL goes direct; otherwise through the proxy, where curl still applies the NO_PROXY
    environment variable by itself.
    """
    if urls and all(proxies.for_url(url) is None for url in urls):
        return {"GDAL_HTTP_PROXY": "", "GDAL_HTTPS_PROXY": ""}
    http, http_credentials = _split_credentials(proxies.http)
    https, https_credentials = _split_credentials(proxies.https)
    options = {"GDAL_HTTP_PROXY": http or "", "GDAL_HTTPS_PROXY": https or ""}
    credentials = https_credentials or http_credentials
    if credentials:
        options["GDAL_HTTP_PROXYUSERPWD"] = credentials
    return options


def _split_credentials(proxy_url):
    """'http://user:pw@host:3128' -> ('http://host:3128', 'user:pw'), decoded as curl wants them."""
    if not proxy_url:
        return None, None
    parts = urlsplit(proxy_url)
    if parts.username is None:
        return proxy_url, None
    netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    bare = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return bare, f"{unquote(parts.username)}:{unquote(parts.password or '')}"


def strip_query(href):
    """The href without its SAS token: the same asset keeps the same cache key."""
    parts = urlsplit(href)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


class WindowCache:
    """Raw source windows as .npy files; writes are atomic (temp file + rename)."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, href, window):
        key = f"{strip_query(href)}|{window.col_off},{window.row_off},{window.width},{window.height}"
        return self.folder / (hashlib.sha256(key.encode()).hexdigest() + ".npy")

    def get(self, href, window):
        path = self.path(href, window)
        if path.exists():
            try:
                return np.load(path)
            except (OSError, ValueError):
                path.unlink(missing_ok=True)  # a damaged entry is fetched again
        return None

    def put(self, href, window, array):
        path = self.path(href, window)
        handle, temporary = tempfile.mkstemp(dir=self.folder, suffix=".part")
        try:
            with os.fdopen(handle, "wb") as stream:
                np.save(stream, array)
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)


def source_window(asset, block_bounds, block_crs, item_crs, margin):
    """The window of `asset` (a BandAsset) that covers a block, plus `margin` pixels, or None."""
    from rasterio.transform import Affine
    from rasterio.warp import transform_bounds
    from rasterio.windows import Window, from_bounds

    transform = Affine(*asset.transform)
    rows, cols = asset.shape
    left, bottom, right, top = transform_bounds(block_crs, item_crs, *block_bounds, densify_pts=21)
    window = from_bounds(left, bottom, right, top, transform=transform)
    col0 = max(0, int(math.floor(window.col_off)) - margin)
    row0 = max(0, int(math.floor(window.row_off)) - margin)
    col1 = min(cols, int(math.ceil(window.col_off + window.width)) + margin)
    row1 = min(rows, int(math.ceil(window.row_off + window.height)) + margin)
    if col1 <= col0 or row1 <= row0:
        return None
    return Window(col0, row0, col1 - col0, row1 - row0)


def read_window(href, window, expected_transform, label):
    """Reads one window of band 1 of a COG; errors name the asset."""
    with open_band(href, expected_transform, label) as src:
        return read_from(src, href, window, label)


def open_band(href, expected_transform, label):
    """Opens a COG for many windowed reads (GDAL's block cache then serves a source block that
    several windows share from memory); checks its grid against `expected_transform`."""
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        src = rasterio.open(_gdal_path(href))
    except RasterioIOError as err:
        _forget(href)
        raise DownloadError(f"{label}: {describe_gdal_error(err)} ({strip_query(href)})") from err
    if expected_transform is not None and not src.transform.almost_equals(expected_transform):
        src.close()
        raise DownloadError(
            f"{label}: the file's grid {tuple(src.transform)[:6]} differs from the STAC item's "
            f"proj:transform {tuple(expected_transform)[:6]}; the item and the file do not match."
        )
    return src


def read_from(src, href, window, label):
    """Reads one window of band 1 of a dataset from open_band; errors name the asset."""
    from rasterio.errors import RasterioIOError

    try:
        return src.read(1, window=window)
    except RasterioIOError as err:
        _forget(href)
        raise DownloadError(f"{label}: {describe_gdal_error(err)} ({strip_query(href)})") from err


def _forget(href):
    """Drops GDAL's cached answer for a failed file, so that a retry or a re-run asks again."""
    from osgeo import gdal

    gdal.VSICurlPartialClearCache(_gdal_path(href))


def describe_gdal_error(err):
    text = str(err)
    for code, meaning in (("403", "access refused (HTTP 403)"), ("404", "not found (HTTP 404)")):
        if f"HTTP response code: {code}" in text or f"HTTP error code : {code}" in text:
            return meaning
    if "timed out" in text.lower() or "timeout" in text.lower():
        return "no answer within dl_timeout, after GDAL's retries"
    if "couldn't connect" in text.lower() or "failed to connect" in text.lower():
        return f"could not connect ({text})"
    if "proxy" in text.lower() and "curl error" in text.lower():
        return f"could not go through the proxy ({text})"
    for code in ("429", "500", "502", "503", "504"):
        if f"HTTP response code: {code}" in text or f"HTTP error code : {code}" in text \
                or f"HTTP error code: {code}" in text:
            return f"HTTP {code} after GDAL's retries"
    return f"read failed: {text}"


def is_access_error(err):
    return "HTTP 403" in str(err) or "HTTP 404" in str(err)


def _gdal_path(href):
    return "/vsicurl/" + href if href.startswith(("http://", "https://")) else href
