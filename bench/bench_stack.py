"""Download-and-stack measurements (issue: download and stack). Prints ratios, asserts nothing.

1. Bytes fetched for a 10 km x 10 km area / bytes of the whole-tile band files (target <= 5%).
2. Wall time of read + resample + write for that area, beside the pure read time of the same
   windows measured in the same run.
3. Peak memory (max RSS) of stacking a full 10980 x 10980 tile, in a child process (target <= 2 GB).

The full-size tile is synthetic: the real 12 km fixture pixels mirrored across a 109.8 km tile,
written as COGs at the nominal resolutions (10/20/60 m) like Planetary Computer's, in
/tmp/s2masks-bench (built once, about 1 GB). Served over HTTP by the loopback double.

    .venv/bin/python bench/bench_stack.py            # all three
    .venv/bin/python bench/bench_stack.py --skip-memory
"""

import argparse
import copy
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import Affine

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / ".build" / "plugins"), str(REPO / "tests")]
BENCH_DIR = Path("/tmp/s2masks-bench")
TILE_SIZE_10M = 10980
ORIGIN = (399960.0, 5900040.0)  # a UTM 29N tile origin (T29UNU)


def build_tile(double):
    """Synthetic full tile from the fixture pixels; returns the STAC item served for it."""
    from stack_helpers import fixture_item, local_path

    item = fixture_item(double)
    tile_dir = BENCH_DIR / "tile"
    for name, asset in item["assets"].items():
        gsd = int(asset["gsd"])
        size = TILE_SIZE_10M * 10 // gsd
        target = tile_dir / f"{name}_{gsd}m.tif"
        if not target.exists():
            with rasterio.open(local_path(double, asset["href"])) as src:
                block = src.read(1)
            mirrored = np.block([[block, block[:, ::-1]], [block[::-1, :], block[::-1, ::-1]]])
            reps = -(-size // mirrored.shape[0])
            data = np.tile(mirrored, (reps, reps))[:size, :size]
            target.parent.mkdir(parents=True, exist_ok=True)
            transform = Affine(gsd, 0, ORIGIN[0], 0, -gsd, ORIGIN[1])
            with rasterio.open(target, "w", driver="COG", width=size, height=size, count=1, dtype="uint16",
                               crs="EPSG:32629", transform=transform, nodata=0, compress="DEFLATE",
                               predictor=2, blocksize=1024 if gsd == 10 else 512) as dst:
                dst.write(data, 1)
            print(f"  built {target.name} ({target.stat().st_size / 1e6:.0f} MB)", flush=True)
        asset.update(href=f"{double.serve_files('/blob/bench', tile_dir)}/{target.name}",
                     **{"proj:shape": [size, size], "proj:transform": [gsd, 0, ORIGIN[0], 0, -gsd, ORIGIN[1]]})
    item = copy.deepcopy(item)
    item["geometry"] = _tile_footprint()
    return item


def _tile_footprint():
    from rasterio.warp import transform_geom

    left, top = ORIGIN
    right, bottom = left + 109800, top - 109800
    ring = [[left, bottom], [right, bottom], [right, top], [left, top], [left, bottom]]
    return transform_geom("EPSG:32629", "EPSG:4326", {"type": "Polygon", "coordinates": [ring]})


def area_10km():
    """A 10 km x 10 km square in the middle of the tile, as WGS84."""
    import shapely
    from rasterio.warp import transform_geom

    cx, cy = ORIGIN[0] + 54900, ORIGIN[1] - 54900
    square = shapely.box(cx - 5000, cy - 5000, cx + 5000, cy + 5000)
    return shapely.geometry.shape(transform_geom("EPSG:32629", "EPSG:4326", shapely.geometry.mapping(square)))


def read_source_windows(items, grid):
    """The pure read: the windows stacking fetches, raw, one band after another, no resampling,
    no writing, no cache (also used by bench_workflow.py)."""
    from osgeo import gdal

    from s2masks.core import cogread, stack

    gdal.VSICurlClearCache()
    with rasterio.Env(**cogread.gdal_http_options(120)):
        for item in items:
            for name, band in item.bands.items():
                window = cogread.source_window(band, grid.bounds, grid.crs, f"EPSG:{item.epsg}",
                                               stack.MARGIN["bilinear"])
                cogread.read_window(band.href, window, None, name)


def bench_bytes_and_time(double, item_json):
    from osgeo import gdal

    from s2masks.core import records, stack
    from s2masks.core import grid as grids

    item = records.parse_item(item_json)
    area = area_10km()
    grid = grids.output_grid(area, "EPSG:32629")
    whole = sum((BENCH_DIR / "tile" / Path(b.href).name).stat().st_size for b in item.bands.values())

    start = time.perf_counter()
    read_source_windows([item], grid)
    read_seconds = time.perf_counter() - start

    gdal.VSICurlClearCache()
    before = double.total_bytes_served()
    work = BENCH_DIR / "run"
    options = stack.StackOptions(cache_dir=work / f"cache-{time.time_ns()}")
    start = time.perf_counter()
    stack.stack_acquisition([item], area, grid, work / "s2.tif", work / "mask.tif", options)
    stack_seconds = time.perf_counter() - start
    shutil.rmtree(options.cache_dir)
    fetched = double.total_bytes_served() - before
    print(f"10 km area: {grid.width} x {grid.height} px at 10 m")
    print(f"  bytes fetched {fetched / 1e6:.1f} MB / whole-tile band files {whole / 1e6:.0f} MB = "
          f"{fetched / whole:.2%} (target <= 5%)")
    print(f"  read + resample + write {stack_seconds:.2f} s; pure read of the same windows {read_seconds:.2f} s; "
          f"ratio {stack_seconds / read_seconds:.2f}")


def bench_memory(item_json):
    """Stack the full tile from local files in a child process and report its max RSS."""
    script = f"""
import json, sys, time
sys.path[:0] = {[str(REPO / '.build' / 'plugins')]!r}
from pathlib import Path
import shapely
from s2masks.core import records, stack, grid as grids
item = records.parse_item(json.loads(Path({str(BENCH_DIR / 'item_local.json')!r}).read_text()))
area = shapely.geometry.shape(item.footprint).buffer(-0.001)
grid = grids.output_grid(area, 'EPSG:32629')
work = Path({str(BENCH_DIR / 'full')!r})
start = time.perf_counter()
options = stack.StackOptions(cache_dir=work / f'cache-{{time.time_ns()}}')
stack.stack_acquisition([item], area, grid, work / 's2.tif', work / 'mask.tif', options)
import shutil; shutil.rmtree(options.cache_dir)
# The child's own peak RSS in kB: its ru_maxrss would also count the parent's peak, kept across exec.
peak_kb = next(int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmHWM:'))
print(grid.width, grid.height, time.perf_counter() - start, peak_kb)
"""
    local = copy.deepcopy(item_json)
    for asset in local["assets"].values():
        asset["href"] = str(BENCH_DIR / "tile" / Path(asset["href"]).name)
    (BENCH_DIR / "item_local.json").write_text(json.dumps(local))
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    width, height, seconds, max_rss_kb = int(output[0]), int(output[1]), float(output[2]), int(output[3])
    print(f"Full tile {width} x {height} px (12 bands + mask): {seconds:.0f} s, peak memory "
          f"{max_rss_kb / 1024 / 1024:.2f} GB (target <= 2 GB)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    from pc_server import PlanetaryComputerDouble

    with PlanetaryComputerDouble() as double:
        print("Building / reusing the synthetic full tile in", BENCH_DIR, flush=True)
        item = build_tile(double)
        bench_bytes_and_time(double, item)
    if not args.skip_memory:
        bench_memory(item)
    print(f"(this process: max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")


if __name__ == "__main__":
    main()
