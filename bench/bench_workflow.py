"""End to end on the demo area (issue: improved mask and workflows): time per step and each
step's share of the total, so the slowest step is visible. Prints, asserts nothing.

Steps, each through core/ as the algorithms call it, against the loopback Planetary Computer
double serving the real T29UNU scene (HTTP, range requests):
  search  STAC search (all pages)           select  fewest tiles per acquisition
  read    the windowed COG reads alone, one stack   stacking with a warm window cache (resample,
  band after another                              harmonise, mask, mosaic, write the COGs)
  cloud   cloud probability alone           shadow  shadow probability alone (the default model
                                                    gives both in one pass: see 'cloud+shadow')
  merge   the improved mask (target: under 5% of the total)

    .venv/bin/python bench/bench_workflow.py [--repeat 3]
"""

import argparse
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / ".build" / "plugins"), str(REPO / "tests")]
AREA = {"type": "Polygon", "coordinates": [[[-8.74, 53.09], [-8.62, 53.09], [-8.62, 53.16], [-8.74, 53.16],
                                            [-8.74, 53.09]]]}


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def run_once(double, folder):
    from bench_stack import read_source_windows

    from s2masks.core import cloudmask, geometry, grid, inference, models, records, search, selection, stack

    seconds = {}
    raw, seconds["search"] = timed(search.search_items, AREA, date(2022, 10, 1), date(2022, 10, 10), url=double.url)
    items = [records.parse_item(item) for item in raw]
    area = geometry.area_from_geojson(AREA)
    chosen, seconds["select"] = timed(selection.select_necessary_coverage, items, area)
    group = selection.selected_items(chosen)
    target = grid.output_grid(area)
    options = stack.StackOptions(cache_dir=folder / "cache", sas_url=double.sas_url)

    _, seconds["read"] = timed(read_source_windows, group, target)
    raster, mask = folder / "s2.tif", folder / "s2_mask.tif"
    stack.stack_acquisition(group, area, target, raster, mask, options)  # fills the window cache
    _, seconds["stack"] = timed(stack.stack_acquisition, group, area, target, raster, mask, options)
    card = models.default_card("cloud")
    for name in ("cloud", "shadow"):
        _, seconds[name] = timed(inference.compute_probabilities, raster, {name: card}, {name: folder / f"{name}.tif"})
    _, both = timed(inference.compute_probabilities, raster, {"cloud": card, "shadow": card},
                    {"cloud": folder / "cloud.tif", "shadow": folder / "shadow.tif"})
    _, seconds["merge"] = timed(cloudmask.merge_cloud_masks, mask, folder / "cloud.tif", folder / "shadow.tif",
                                folder / "improved.tif", folder / "classes.tif")
    with stack.rasterio.open(raster) as src:
        size = f"{src.width} x {src.height}"
    return seconds, both, size


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="runs; the fastest time of each step is kept")
    args = parser.parse_args()
    from pc_server import PlanetaryComputerDouble

    best, best_both = {}, float("inf")
    with PlanetaryComputerDouble() as double:
        for _ in range(args.repeat):
            folder = Path(tempfile.mkdtemp(prefix="s2masks-bench-workflow-"))
            try:
                seconds, both, size = run_once(double, folder)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            best = {step: min(value, best.get(step, float("inf"))) for step, value in seconds.items()}
            best_both = min(best_both, both)
    total = sum(best.values())
    print(f"End to end on the demo area ({size} px at 10 m, 12 bands), best of {args.repeat} runs")
    print(f"  {'step':<8}{'seconds':>9}{'share':>8}")
    for step, value in best.items():
        print(f"  {step:<8}{value:>9.3f}{value / total:>8.1%}")
    print(f"  {'total':<8}{total:>9.3f}")
    slowest = max(best, key=best.get)
    print(f"slowest step: {slowest} ({best[slowest] / total:.0%}); merge {best['merge'] / total:.1%} of the total "
          "(target < 5%)")
    print(f"cloud + shadow in one pass of the shared model: {best_both:.3f} s "
          f"(vs {best['cloud'] + best['shadow']:.3f} s as two runs, {best_both / (best['cloud'] + best['shadow']):.2f}x)")


if __name__ == "__main__":
    main()
