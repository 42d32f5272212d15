"""Download and stack against the loopback double serving COGs built from the real T29UNU scene."""

import numpy as np
import pytest
import rasterio
from shapely.geometry import box
from stack_helpers import fixture_item, local_path, split_two_zones

from s2masks.core import grid as grids
from s2masks.core import records, stack
from s2masks.core.cogread import DownloadError
from s2masks.core.errors import Cancelled, InputError

AREA = box(-8.74, 53.09, -8.62, 53.16)  # about 8 km x 8 km inside the 12 km fixture


@pytest.fixture
def item(pc_double):
    return records.parse_item(fixture_item(pc_double))


def run_stack(items, tmp_path, area=AREA, **options):
    grid = grids.output_grid(area)
    opts = stack.StackOptions(cache_dir=tmp_path / "cache", **options)
    return stack.stack_acquisition(items, area, grid, tmp_path / "out" / "s2.tif", tmp_path / "out" / "mask.tif", opts)


def _source(double, asset):
    with rasterio.open(local_path(double, asset.href)) as src:
        return src.read(1).astype(np.float64), src.transform


def _bilinear(values, transform, x, y):
    """Reference bilinear interpolation at map coordinates (pixel-centre convention)."""
    col, row = grids.apply(~transform, x, y)
    col, row = col - 0.5, row - 0.5
    c0, r0 = int(np.floor(col)), int(np.floor(row))
    dc, dr = col - c0, row - r0
    window = values[r0:r0 + 2, c0:c0 + 2]
    return (window[0, 0] * (1 - dc) * (1 - dr) + window[0, 1] * dc * (1 - dr)
            + window[1, 0] * (1 - dc) * dr + window[1, 1] * dc * dr)


def test_grid_is_10m_aligned_in_the_areas_utm_zone(item):
    grid = grids.output_grid(AREA)
    assert grid.crs.to_epsg() == 32629
    assert grid.transform.a == 10 and grid.transform.e == -10
    assert grid.transform.c % 10 == 0 and grid.transform.f % 10 == 0
    left, bottom, right, top = grid.bounds
    assert right - left < 9000 and top - bottom < 9000  # clipped to the area, not the tile


def test_utm_zone_holding_most_of_the_area():
    assert grids.utm_epsg_for_area(box(-6.5, 52, -5.0, 53)) == 32630  # 1.0 of 1.5 degrees east of -6
    assert grids.utm_epsg_for_area(box(-7.5, 52, -5.5, 53)) == 32629
    assert grids.utm_epsg_for_area(box(20, -30, 21, -29)) == 32734


def test_stacked_values_match_the_source_after_resampling_and_offset(pc_double, item, tmp_path):
    result = run_stack([item], tmp_path)
    with rasterio.open(result.raster) as out:
        stacked = out.read().astype(np.float64)
        transform = out.transform
    rng = np.random.default_rng(3)
    rows, cols = rng.integers(5, stacked.shape[1] - 5, 40), rng.integers(5, stacked.shape[2] - 5, 40)
    for band_index, name in enumerate(records.S2_BANDS):
        values, source_transform = _source(pc_double, item.bands[name])
        for row, col in zip(rows, cols):
            x, y = grids.apply(transform, col + 0.5, row + 0.5)
            if item.bands[name].gsd == 10:  # same grid: the value itself, minus 1000
                expected = values[tuple(reversed([int(v) for v in grids.apply(~source_transform, x, y)]))]
            else:
                expected = _bilinear(values, source_transform, x, y)
            harmonised = max(1.0, expected - 1000)  # baseline 04.00 offset, clipped so 0 stays nodata
            assert stacked[band_index, row, col] == pytest.approx(harmonised, abs=1.0), (name, row, col)


def test_band_order_and_metadata(item, tmp_path):
    result = run_stack([item], tmp_path)
    with rasterio.open(result.raster) as out:
        assert out.count == 12 and out.dtypes[0] == "uint16" and out.nodata == 0
        assert out.descriptions == records.S2_BANDS
        assert out.scales == (1e-4,) * 12
        assert out.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert out.tags()["PROCESSING_BASELINES"] == "04.00"
    with rasterio.open(result.mask) as mask:
        assert mask.dtypes[0] == "uint8" and mask.nodata == 255
        assert mask.colormap(1)[stack.MASK_SHADOW][:3] == (78, 78, 78)
    assert sorted(p.name for p in result.raster.parent.iterdir()) == ["mask.tif", "mask.tif.aux.xml", "s2.tif"]


def test_scl_codes_map_to_mask_codes(pc_double, item, tmp_path):
    result = run_stack([item], tmp_path)
    scl, scl_transform = _source(pc_double, item.bands["SCL"])
    with rasterio.open(result.mask) as out:
        mask, transform = out.read(1), out.transform
    rows, cols = np.mgrid[0:mask.shape[0], 0:mask.shape[1]]
    xs, ys = grids.apply(transform, cols + 0.5, rows + 0.5)
    scl_cols, scl_rows = grids.apply(~scl_transform, xs, ys)
    expected = stack.scl_to_mask(scl[scl_rows.astype(int), scl_cols.astype(int)].astype(np.uint8))
    assert np.array_equal(mask, expected)
    codes = set(np.unique(mask))
    assert {stack.MASK_CLEAR, stack.MASK_OPAQUE, stack.MASK_CIRRUS, stack.MASK_SHADOW} <= codes
    lut = {0: 255, 1: 3, 2: 0, 3: 4, 4: 0, 5: 0, 6: 0, 7: 0, 8: 1, 9: 1, 10: 2, 11: 0}
    assert all(stack.scl_to_mask(np.array([scl_code], dtype=np.uint8))[0] == code for scl_code, code in lut.items())


def test_harmonise_keeps_nodata_and_clips():
    dn = np.array([0, 1, 999, 1000, 1001, 11000], dtype=np.uint16)
    assert stack.harmonise(dn, -1000).tolist() == [0, 1, 1, 1, 1, 10000]
    assert stack.harmonise(dn, 0).tolist() == dn.tolist()


def test_two_tiles_in_two_utm_zones_mosaic_seamlessly(pc_double, item, tmp_path):
    west, east = (records.parse_item(i) for i in split_two_zones(pc_double, tmp_path / "split", 0.7, 0.5))
    assert (west.epsg, east.epsg) == (32629, 32630)
    reference = run_stack([item], tmp_path / "single")
    mosaic = run_stack([east, west], tmp_path / "mosaic")
    with rasterio.open(reference.raster) as ref, rasterio.open(mosaic.raster) as mos:
        expected, got = ref.read().astype(float), mos.read().astype(float)
    assert (got > 0).all()  # no gap anywhere, in particular along the seam
    # the seam: where the west tile (first: it covers more of the area) ends
    west_right = west.bands["B02"].transform[2] + 10 * west.bands["B02"].shape[1]
    seam_col = int((west_right - grids.output_grid(AREA).transform.c) / 10)
    # the west part is the west tile's own pixels (12 px = two 60 m pixels before its edge, where
    # bilinear weights lean on the edge differently)
    assert np.array_equal(got[:, :, : seam_col - 12], expected[:, :, : seam_col - 12])
    relative = np.abs(got - expected) / expected
    east_part = relative[:, :, seam_col + 5:]
    seam_zone = relative[:, :, seam_col - 12: seam_col + 12]
    print(f"east median {np.median(east_part):.4f} mean {east_part.mean():.4f}, seam mean {seam_zone.mean():.4f}")
    assert np.median(east_part) < 0.01  # reprojected twice, still the same scene
    assert seam_zone.mean() < 2 * east_part.mean() + 0.01  # no stripe at the seam


def test_area_outside_the_footprint(item, tmp_path):
    with pytest.raises(InputError, match="outside the footprint of product"):
        run_stack([item], tmp_path, area=box(-8.0, 53.0, -7.9, 53.1))


def test_missing_band_asset(pc_double, tmp_path):
    raw = fixture_item(pc_double)
    del raw["assets"]["B8A"]
    with pytest.raises(InputError, match="has no asset B8A"):
        run_stack([records.parse_item(raw)], tmp_path)


def test_unwritable_output_folder(item, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    opts = stack.StackOptions(cache_dir=tmp_path / "cache")
    with pytest.raises(InputError, match="Cannot write to the output folder"):
        stack.stack_acquisition([item], AREA, grids.output_grid(AREA), blocker / "s2.tif", blocker / "m.tif", opts)


def _band_path(item, name):
    return "/blob/" + item.bands[name].href.split("/blob/", 1)[1]


@pytest.mark.parametrize("kind, status, message", [
    ("status", 404, "Band B05 of .*not found"),
    ("truncate", None, "Band B05 of "),
])
def test_band_fault_names_the_band_and_leaves_nothing(pc_double, item, tmp_path, kind, status, message):
    pc_double.inject(_band_path(item, "B05"), kind, times=50, status=status or 503)
    with pytest.raises(DownloadError, match=message):
        run_stack([item], tmp_path)
    assert not (tmp_path / "out" / "s2.tif").exists() and not (tmp_path / "out" / "mask.tif").exists()
    assert list((tmp_path / "out").iterdir()) == []


def test_stall_past_dl_timeout(pc_double, item, tmp_path):
    pc_double.inject(_band_path(item, "B11"), "slow", times=50, delay=6)
    with pytest.raises(DownloadError, match="Band B11 .*no answer within dl_timeout"):
        run_stack([item], tmp_path, dl_timeout=1)


def test_refused_token_is_renewed_once(pc_double, item, tmp_path, monkeypatch):
    signs = []
    monkeypatch.setattr(stack, "_is_signable", lambda href: True)
    def fake_sign(href, key, url, fresh=False):  # a new token each time, as the real service gives
        signs.append(fresh)
        return f"{href}?sig={len(signs)}"

    monkeypatch.setattr(stack.signing, "sign_href", fake_sign)
    pc_double.inject(_band_path(item, "B03"), "status", times=1, status=403)
    run_stack([item], tmp_path / "once")
    assert True in signs  # a fresh token after the 403, then success
    pc_double.inject(_band_path(item, "B03"), "status", times=50, status=403)
    with pytest.raises(DownloadError, match="Band B03 of .*access refused"):
        run_stack([item], tmp_path / "twice")


def test_cancel_then_resume_fetches_no_byte_twice(pc_double, item, tmp_path):
    from osgeo import gdal

    calls = []

    def cancel_after_some_bands():
        calls.append(1)
        return len(calls) > 6

    with pytest.raises(Cancelled):
        grid = grids.output_grid(AREA)
        opts = stack.StackOptions(cache_dir=tmp_path / "cache", threads=1)
        stack.stack_acquisition([item], AREA, grid, tmp_path / "out" / "s2.tif", tmp_path / "out" / "m.tif",
                                opts, should_cancel=cancel_after_some_bands)
    assert list((tmp_path / "out").iterdir()) == []  # no partial output
    cached = list((tmp_path / "cache").iterdir())
    assert cached and all(p.suffix == ".npy" for p in cached)  # consistent cache, no .part files
    first_run = [(r[1], r[2].get("Range")) for r in pc_double.requests if r[0] == "GET" and r[1].startswith("/blob/")]
    first_bytes = pc_double.total_bytes_served()
    gdal.VSICurlClearCache()  # as a new QGIS session: only our cache remains

    result = run_stack([item], tmp_path)
    all_gets = [(r[1], r[2].get("Range")) for r in pc_double.requests if r[0] == "GET" and r[1].startswith("/blob/")]
    second_run = all_gets[len(first_run):]
    assert result.raster.exists()
    assert not set(first_run) & set(second_run)  # no range fetched twice
    assert {path for path, _ in first_run}.isdisjoint({path for path, _ in second_run})
    assert 0 < first_bytes < pc_double.total_bytes_served()


def test_stack_reads_a_small_share_of_the_files(pc_double, item, tmp_path):
    small = box(-8.70, 53.11, -8.66, 53.13)  # about 2.7 km x 2.2 km
    run_stack([item], tmp_path, area=small)
    served = pc_double.total_bytes_served()
    whole = sum(local_path(pc_double, band.href).stat().st_size for band in item.bands.values())
    assert served < 0.5 * whole


def _ranges(requests):
    """{path: [(first, last) byte]} of the GET requests for band files."""
    ranges = {}
    for method, path, headers, *_ in requests:
        if method == "GET" and path.startswith("/blob/") and headers.get("Range"):
            first, last = headers["Range"].split("=", 1)[1].split("-")
            ranges.setdefault(path, []).append((int(first), int(last)))
    return ranges


def test_every_source_byte_is_fetched_once(pc_double, item, tmp_path):
    """Output blocks of 256 px over source blocks of 256 px (20 m: 512 output px): neighbouring
    output blocks share source blocks and resampling margins, yet each byte is fetched once, but
    for GDAL's 4-byte tile leaders and chunk alignment (the window-per-request reader: 2.2x)."""
    from osgeo import gdal

    gdal.VSICurlClearCache()
    run_stack([item], tmp_path, block_size=256, threads=3)
    ranges = _ranges(pc_double.requests)
    assert len(ranges) == 13
    fetched = distinct = 0
    for spans in ranges.values():
        end = -1
        for first, last in sorted(spans):
            fetched += last + 1 - first
            distinct += max(0, last + 1 - max(first, end))
            end = max(end, last + 1)
    assert fetched <= 1.05 * distinct


def test_blocks_on_a_bands_own_grid_read_exactly_their_pixels(item, tmp_path, monkeypatch):
    """10 m bands on the output's grid are copied: each block reads its own pixels, no resampling
    margin reaching into the neighbouring source blocks; 20 m bands keep the bilinear margin."""
    reads = []
    original = stack._BandReader._read

    def record(self, item, name, window, *args, **kwargs):
        reads.append((name, window))
        return original(self, item, name, window, *args, **kwargs)

    monkeypatch.setattr(stack._BandReader, "_read", record)
    grid = grids.output_grid(AREA)
    result = run_stack([item], tmp_path, block_size=256)
    blocks = sorted((int(b.width), int(b.height)) for b in grid.blocks(256))
    for name in ("B02", "B03", "B04", "B08"):
        assert sorted((int(w.width), int(w.height)) for band, w in reads if band == name) == blocks
        assert _overlapping_pairs([w for band, w in reads if band == name]) == 0
    assert _overlapping_pairs([w for band, w in reads if band == "B05"]) > 0  # margins reach across blocks
    with rasterio.open(result.raster) as out:
        assert out.read(2).all()


def _overlapping_pairs(windows):
    return sum(1 for i, a in enumerate(windows) for b in windows[i + 1:]
               if a.col_off < b.col_off + b.width and b.col_off < a.col_off + a.width
               and a.row_off < b.row_off + b.height and b.row_off < a.row_off + a.height)


def _write_raw(path, data):
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=data.dtype, crs="EPSG:32629", transform=rasterio.transform.from_origin(500000, 5900000, 10, 10),
                       tiled=True, blockxsize=512, blockysize=512) as dst:
        dst.write(data)


def publish(source, target, resampling, should_cancel=None, progress=None):
    with stack.publishing([target]) as partials:
        stack.write_cog(source, partials[0], resampling, should_cancel, progress)


def test_published_cog_has_the_cog_drivers_overview_values_down_to_a_screen(tmp_path):
    """write_cog builds the overviews in the uncompressed intermediate file (so that each pixel is
    compressed once): the same values as GDAL's COG driver makes by itself, but only down to
    OVERVIEW_FIT (1024) pixels a side, where the driver goes on to one 512 px block."""
    import rasterio.shutil

    data = np.random.default_rng(5).integers(0, 12000, (3, 1100, 2500)).astype(np.uint16)
    _write_raw(tmp_path / "raw.tif", data)
    rasterio.shutil.copy(tmp_path / "raw.tif", tmp_path / "driver.tif", driver="COG", compress="DEFLATE", predictor=2,
                         blocksize=512, overview_resampling="average")
    publish(tmp_path / "raw.tif", tmp_path / "published.tif", "average")
    with rasterio.open(tmp_path / "published.tif") as ours, rasterio.open(tmp_path / "driver.tif") as driver:
        assert ours.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert (ours.overviews(1), driver.overviews(1)) == ([2, 4], [2, 4, 8])
        assert (ours.read() == data).all()
    for level in (0, 1):
        with rasterio.open(tmp_path / "published.tif", OVERVIEW_LEVEL=level) as ours, \
                rasterio.open(tmp_path / "driver.tif", OVERVIEW_LEVEL=level) as driver:
            assert (ours.read() == driver.read()).all()


def test_a_cog_that_fits_on_a_screen_has_no_overviews(tmp_path):
    data = np.random.default_rng(6).integers(0, 12000, (2, 1024, 1000)).astype(np.uint16)
    _write_raw(tmp_path / "raw.tif", data)
    publish(tmp_path / "raw.tif", tmp_path / "published.tif", "average")
    with rasterio.open(tmp_path / "published.tif") as ours:
        assert ours.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ours.overviews(1) == []
        assert (ours.read() == data).all()


def test_publishing_reports_its_progress_up_to_one(tmp_path):
    """The overviews, then the compression, each move the fraction on, never back."""
    _write_raw(tmp_path / "raw.tif", np.random.default_rng(7).integers(0, 12000, (3, 1100, 2500)).astype(np.uint16))
    fractions = []
    publish(tmp_path / "raw.tif", tmp_path / "published.tif", "average", progress=fractions.append)
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert any(0 < f < stack.OVERVIEW_SHARE for f in fractions) and any(stack.OVERVIEW_SHARE < f < 1 for f in fractions)


def test_stacking_progress_goes_on_while_the_cogs_are_written(item, tmp_path):
    """Reading fills READ_SHARE of the bar; writing the two COGs fills the rest, to 100%."""
    grid = grids.output_grid(AREA)
    steps = []
    stack.stack_acquisition([item], AREA, grid, tmp_path / "s2.tif", tmp_path / "mask.tif",
                            stack.StackOptions(cache_dir=tmp_path / "cache"),
                            progress=lambda fraction, message: steps.append((fraction, message)))
    fractions = [fraction for fraction, _ in steps]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    reading = [fraction for fraction, message in steps if message == "reading and resampling the bands"]
    assert reading[-1] == pytest.approx(stack.READ_SHARE)
    assert {message for fraction, message in steps if fraction > stack.READ_SHARE} == {
        "writing the stack's COG", "writing the mask's COG"}


def test_cancel_while_the_mask_is_written_leaves_neither_file(item, tmp_path):
    """The stack's COG is complete by then, but it is renamed into place only with its mask."""
    steps = []
    with pytest.raises(Cancelled):
        stack.stack_acquisition([item], AREA, grids.output_grid(AREA), tmp_path / "out" / "s2.tif",
                                tmp_path / "out" / "mask.tif", stack.StackOptions(cache_dir=tmp_path / "cache"),
                                progress=lambda *step: steps.append(step),
                                should_cancel=lambda: any(message == "writing the mask's COG" for _, message in steps))
    assert steps[-1][1] == "writing the mask's COG"
    assert list((tmp_path / "out").iterdir()) == []


def test_cancel_while_publishing_leaves_nothing(tmp_path):
    _write_raw(tmp_path / "raw.tif", np.ones((2, 600, 700), dtype=np.uint16))
    with pytest.raises(Cancelled):
        publish(tmp_path / "raw.tif", tmp_path / "out.tif", "average", should_cancel=lambda: True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw.tif"]
