"""Download and stack side by side with odc-stac (issue 16). Prints figures and ratios, asserts nothing.

The same item (bench_stack.py's synthetic full T29UNU tile, served by the loopback double), the same
10 m grid in EPSG:32629, bilinear, the 12 bands, for a 10 km x 10 km area and for the whole tile:

- plugin, algorithm: *Download and stack* through processing.run in a QGIS started in the child
  (the time counts processing.run only, not QGIS's start-up nor the first import of rasterio and
  shapely, as odc-stac's time does not count importing odc.stac);
- plugin, core: core.stack.stack_acquisition;
- odc-stac: odc.stac.load(..., dtype="uint16", nodata=0, chunks 2048) of the 12 bands (bilinear) and SCL
  (nearest, which the plugin's product mask needs) streamed into tiled DEFLATE GeoTIFFs with dask (no
  overviews; a bench-only dependency: --odc-python names a Python that has odc-stac 0.5.3).

Each run is a child process (peak memory = its VmHWM); runs alternate between the engines. Bytes
fetched are the bytes the double served during the run. With --reference DIR (files written by an
earlier version: DIR/<case>/s2.tif, mask.tif), the plugin's outputs are compared pixel by pixel.

    python3 -m venv --system-site-packages /tmp/odc && /tmp/odc/bin/pip install odc-stac==0.5.3 dask  # once
    .venv/bin/python bench/bench_stack_vs_odc.py --odc-python /tmp/odc/bin/python --runs 3
    .venv/bin/python bench/bench_stack_vs_odc.py --cases 10km --engines core --keep DIR   # reference files
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / ".build" / "plugins"), str(REPO / "tests"), str(REPO / "bench")]
CRS = "EPSG:32629"
ENGINES = ("algorithm", "core", "odc")


def case_extent(case):
    """(xmin, ymin, xmax, ymax) in EPSG:32629 of a bench case."""
    from bench_stack import ORIGIN

    if case == "10km":
        cx, cy = ORIGIN[0] + 54900, ORIGIN[1] - 54900
        return cx - 5000, cy - 5000, cx + 5000, cy + 5000
    return ORIGIN[0], ORIGIN[1] - 109800, ORIGIN[0] + 109800, ORIGIN[1]


def wgs84_area(extent):
    import shapely
    from rasterio.warp import transform_geom

    return shapely.geometry.shape(transform_geom(CRS, "EPSG:4326", shapely.geometry.mapping(shapely.box(*extent))))


def peak_kb():
    """This process's own peak RSS (ru_maxrss of a child would count its parent's peak)."""
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))


# -- children ---------------------------------------------------------------------------------------

def child_core(job):
    from s2masks.core import grid as grids
    from s2masks.core import records, stack

    item = records.parse_item(job["item"])
    area = wgs84_area(job["extent"])
    grid = grids.output_grid(area, CRS)
    out = Path(job["out"])
    options = stack.StackOptions(cache_dir=out / "cache")
    start = time.perf_counter()
    stack.stack_acquisition([item], area, grid, out / "s2.tif", out / "mask.tif", options)
    return time.perf_counter() - start


def child_algorithm(job):
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # no display needed
    from qgis.core import QgsApplication, QgsProcessingContext, QgsProcessingFeedback

    QgsApplication.setPrefixPath("/usr", True)
    app = QgsApplication([], False)
    app.initQgis()
    sys.path.append("/usr/share/qgis/python/plugins")
    from processing.core.Processing import Processing

    Processing.initialize()
    import processing
    import s2masks

    plugin = s2masks.classFactory(None)
    plugin.initProcessing()
    # imported before the clock starts, as the odc-stac child imports odc.stac (and rasterio) first
    import rasterio.warp  # noqa: F401
    import shapely  # noqa: F401
    from s2masks.core import stack  # noqa: F401
    out = Path(job["out"])
    xmin, ymin, xmax, ymax = job["extent"]
    parameters = {"ITEM": json.dumps(job["item"]), "EXTENT": f"{xmin},{xmax},{ymin},{ymax} [{CRS}]",
                  "OUTPUT_CRS": CRS, "CACHE_FOLDER": str(out / "cache"), "OUTPUT_FOLDER": str(out / "alg")}
    start = time.perf_counter()
    result = processing.run("s2masks:downloadstacksentinel2", parameters, context=QgsProcessingContext(),
                            feedback=QgsProcessingFeedback())
    seconds = time.perf_counter() - start
    shutil.move(result["RASTER"], out / "s2.tif")
    shutil.move(result["MASK"], out / "mask.tif")
    plugin.unload()
    return seconds


def child_odc(job):
    import dask
    import dask.array as da
    import odc.stac
    import pystac
    from odc.geo.geobox import GeoBox
    from rasterio.transform import Affine

    bands = job["bands"]
    item = pystac.Item.from_dict(job["item"])
    width, height, transform = job["grid"]
    geobox = GeoBox((height, width), Affine(*transform), CRS)
    out = Path(job["out"])
    start = time.perf_counter()
    data = odc.stac.load([item], bands=bands + ["SCL"], geobox=geobox, resampling={"SCL": "nearest", "*": "bilinear"},
                         dtype="uint16", nodata=0, chunks={"x": 2048, "y": 2048})
    profile = dict(driver="GTiff", width=width, height=height, nodata=0, crs=CRS, transform=geobox.affine,
                   tiled=True, blockxsize=512, blockysize=512, compress="DEFLATE", predictor=2, BIGTIFF="IF_SAFER")
    with rasterio.open(out / "s2.tif", "w", count=len(bands), dtype="uint16", **profile) as dst, \
            rasterio.open(out / "scl.tif", "w", count=1, dtype="uint8", **profile) as scl:
        class Target:
            def __init__(self, dataset):
                self.dataset = dataset

            def __setitem__(self, key, value):
                bands, rows, cols = key
                self.dataset.write(value, indexes=list(range(bands.start + 1, bands.stop + 1)),
                                   window=((rows.start, rows.stop), (cols.start, cols.stop)))

        arrays = [da.stack([data[band].data[0] for band in bands]), data["SCL"].data[0:1].astype("uint8")]
        with dask.config.set(scheduler="threads"):
            da.store(arrays, [Target(dst), Target(scl)], lock=True)
    return time.perf_counter() - start


def run_child(job):
    if job.get("plugin_path"):  # an earlier version of the plugin, e.g. to write reference files
        sys.path.insert(0, job["plugin_path"])
    seconds = {"core": child_core, "algorithm": child_algorithm, "odc": child_odc}[job["engine"]](job)
    print(json.dumps({"seconds": seconds, "peak_kb": peak_kb()}))


# -- parent -----------------------------------------------------------------------------------------

def compare(path, reference, adjust=None):
    """Max |difference| and count of differing values of a raster against a reference whose grid
    holds it (the same pixel size, an origin a whole number of pixels away); `adjust` maps the
    raster's values first."""
    from rasterio.windows import Window

    with rasterio.open(path) as a, rasterio.open(reference) as b:
        col, row = ~b.transform * (a.transform.c, a.transform.f)
        col, row = round(col), round(row)
        inside = 0 <= col and 0 <= row and col + a.width <= b.width and row + a.height <= b.height
        if a.count != b.count or a.res != b.res or not inside:
            return f"grids differ: {a.width}x{a.height} vs {b.width}x{b.height}"
        worst, differing = 0, 0
        for _, window in a.block_windows(1):
            shifted = Window(window.col_off + col, window.row_off + row, window.width, window.height)
            x, y = a.read(window=window), b.read(window=shifted)
            x, y = (adjust(x) if adjust else x).astype(np.int32), y.astype(np.int32)
            worst = max(worst, int(np.abs(x - y).max()))
            differing += int((x != y).sum())
        where = f" (at column {col}, row {row} of the reference's {b.width}x{b.height})" if (col, row) != (0, 0) \
            or (a.width, a.height) != (b.width, b.height) else ""
        return f"max |diff| {worst}, {differing} values differ{where}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cases", nargs="+", default=["10km", "tile"], choices=["10km", "tile"])
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    parser.add_argument("--odc-python", default=sys.executable)
    parser.add_argument("--reference", type=Path, help="folder of earlier outputs: <case>/s2.tif, mask.tif")
    parser.add_argument("--keep", type=Path, help="copy the last core/algorithm outputs to <keep>/<case>/")
    parser.add_argument("--per-file", action="store_true", help="bytes fetched per file, plugin vs odc-stac")
    parser.add_argument("--plugin-path", help="folder holding another s2masks package (default: this checkout)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return run_child(json.loads(Path(args.child).read_text()))

    from bench_stack import build_tile
    from pc_server import PlanetaryComputerDouble

    from s2masks.core import grid as grids
    from s2masks.core import records, stack
    from s2masks.core.records import S2_BANDS

    work = Path(tempfile.mkdtemp(prefix="bench-vs-odc-", dir="/tmp"))
    with PlanetaryComputerDouble() as double:
        item = build_tile(double)
        for case in args.cases:
            extent = case_extent(case)
            grid = grids.output_grid(wgs84_area(extent), CRS)
            print(f"\n{case}: grid {grid.width} x {grid.height} px", flush=True)
            figures = {engine: [] for engine in args.engines}
            per_file = {}
            for run in range(args.runs):
                order = args.engines[run % len(args.engines):] + args.engines[:run % len(args.engines)]
                for engine in order:
                    out = work / f"{case}-{engine}-{run}"
                    out.mkdir()
                    job = {"engine": engine, "item": item, "extent": extent, "out": str(out),
                           "bands": list(S2_BANDS), "grid": [grid.width, grid.height, list(grid.transform)[:6]],
                           "plugin_path": args.plugin_path}
                    (out / "job.json").write_text(json.dumps(job))
                    python = args.odc_python if engine == "odc" else sys.executable
                    before, before_files = double.total_bytes_served(), dict(double.bytes_served)
                    done = subprocess.run([python, __file__, "--child", str(out / "job.json")], capture_output=True,
                                          text=True)
                    if done.returncode:
                        print(f"  {engine}: failed\n{done.stderr[-3000:]}")
                        continue
                    result = json.loads(done.stdout.strip().splitlines()[-1])
                    fetched = double.total_bytes_served() - before
                    per_file[engine] = {Path(path).stem: count - before_files.get(path, 0)
                                        for path, count in double.bytes_served.items()}
                    figures[engine].append((result["seconds"], result["peak_kb"] / 1024, fetched / 1e6))
                    print(f"  run {run + 1} {engine:9s} {result['seconds']:7.2f} s  peak {result['peak_kb'] / 1024:6.0f} MB"
                          f"  fetched {fetched / 1e6:7.1f} MB", flush=True)
                    if engine != "odc" and args.reference:
                        for name in ("s2.tif", "mask.tif"):
                            print(f"      {name} vs reference: {compare(out / name, args.reference / case / name)}")
                    if engine != "odc" and args.keep and run == args.runs - 1:
                        (args.keep / case).mkdir(parents=True, exist_ok=True)
                        for name in ("s2.tif", "mask.tif"):
                            shutil.copy(out / name, args.keep / case / name)
                    if engine == "odc" and "core" in args.engines and run == args.runs - 1:
                        runs = [work / f"{case}-core-{number}" / "s2.tif" for number in range(run, -1, -1)]
                        plugin = next((path for path in runs if path.exists()), None)
                        if plugin:  # odc-stac keeps the product's offset, which the plugin removes
                            offset = records.parse_item(item).reflectance_offset
                            same = compare(out / "s2.tif", plugin, lambda dn: stack.harmonise(dn, offset))
                            print(f"      odc-stac s2.tif (offset {offset} removed) vs plugin's: {same}")
                    shutil.rmtree(out / "cache", ignore_errors=True)
            if args.per_file and "odc" in per_file:
                for engine in set(per_file) - {"odc"}:
                    print(f"  bytes per file, {engine} / odc-stac (last run):", ", ".join(
                        f"{name} {count / 1e6:.1f}/{per_file['odc'].get(name, 0) / 1e6:.1f} MB"
                        for name, count in sorted(per_file[engine].items()) if count))
            summary = {}
            for engine, rows in figures.items():
                if not rows:
                    continue
                times = [row[0] for row in rows]
                summary[engine] = (min(times), statistics.median(times), max(row[1] for row in rows),
                                   statistics.median(row[2] for row in rows))
                print(f"  {engine:9s} time min {summary[engine][0]:.2f} / median {summary[engine][1]:.2f} / "
                      f"max {max(times):.2f} s, peak {summary[engine][2]:.0f} MB, fetched {summary[engine][3]:.1f} MB")
            if "odc" in summary:
                for engine in ("algorithm", "core"):
                    if engine in summary:
                        odc = summary["odc"]
                        print(f"  {engine}/odc-stac: time {summary[engine][0] / odc[0]:.2f} (min) "
                              f"{summary[engine][1] / odc[1]:.2f} (median), bytes {summary[engine][3] / odc[3]:.3f}, "
                              f"peak memory {summary[engine][2] / odc[2]:.2f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
