"""A whole-tile stack, phase by phase, and Cancel in each phase (issue 16). Prints figures, asserts nothing.

The synthetic full T29UNU tile of bench_stack.py, served by the loopback double, stacked onto its
own 10 m grid with core.stack.stack_acquisition (the algorithm runs the same function):

1. one uncancelled run: seconds spent reading and resampling, building the stack's overviews,
   compressing its COG and the mask's, each as a share of the whole (what READ_SHARE,
   MASK_WRITE_SHARE and OVERVIEW_SHARE in core/stack.py rest on);
2. Merge orbits (core.merge.merge_stacks) of that stack alone: seconds mosaicking the blocks and
   writing the COGs (what MERGE_SHARE in core/merge.py rests on);
3. Cancel at moments in each phase of stacking: seconds from Cancel to the call's return, and
   whether any file is left in the output folder.

    .venv/bin/python bench/bench_stack_phases.py
    .venv/bin/python bench/bench_stack_phases.py --cancel-only --reading-at 5 20 --writing-at 1 3
"""

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / ".build" / "plugins"), str(REPO / "tests"), str(REPO / "bench")]
CRS = "EPSG:32629"


class Run:
    """One stack_acquisition in a thread, its progress steps timed, cancellable."""

    def __init__(self, item, area, grid, folder):
        from s2masks.core import stack

        self.steps, self.cancelled_at, self.ended_at, self.error = [], None, None, None
        self.folder = Path(folder)
        options = stack.StackOptions(cache_dir=self.folder / "cache")
        self.start = time.monotonic()
        self.thread = threading.Thread(target=self._run, args=(stack, item, area, grid, options))
        self.thread.start()

    def _run(self, stack, item, area, grid, options):
        try:
            stack.stack_acquisition([item], area, grid, self.folder / "out" / "s2.tif", self.folder / "out" / "mask.tif",
                                    options, progress=self._progress, should_cancel=lambda: self.cancelled_at is not None)
        except Exception as err:  # noqa: BLE001 - Cancelled, reported below
            self.error = err
        self.ended_at = time.monotonic()

    def _progress(self, fraction, message):
        self.steps.append((time.monotonic(), fraction, message))

    def first(self, phase):
        """When the first progress step of a phase ('reading', 'writing the stack', ...) came, or None."""
        return next((moment for moment, _, message in self.steps if message.startswith(phase)), None)

    def cancel(self):
        self.cancelled_at = time.monotonic()

    def wait(self):
        self.thread.join()
        return self.ended_at


def phases(item, area, grid, work):
    from s2masks.core import stack

    run = Run(item, area, grid, work / "phases")
    end = run.wait()
    if run.error:
        raise run.error
    writing, mask = run.first("writing the stack"), run.first("writing the mask")
    raster_share = (1 - stack.READ_SHARE) * (1 - stack.MASK_WRITE_SHARE)
    overviews_done = next((moment for moment, fraction, message in run.steps
                           if message.startswith("writing the stack")
                           and fraction >= stack.READ_SHARE + raster_share * stack.OVERVIEW_SHARE), writing)
    total = end - run.start
    rows = [("reading and resampling", writing - run.start), ("stack's overviews", overviews_done - writing),
            ("stack's COG", mask - overviews_done), ("mask's overviews and COG", end - mask)]
    print(f"Uncancelled: {total:.1f} s, {len(run.steps)} progress steps")
    for name, seconds in rows:
        print(f"  {name:26s} {seconds:6.1f} s  {seconds / total:6.1%}")
    print(f"  share of the stack's writing spent on overviews: {rows[1][1] / (rows[1][1] + rows[2][1]):.1%}")
    print(f"  share of the writing spent on the mask: {rows[3][1] / (total - rows[0][1]):.1%}")
    print(f"  (core/stack.py: READ_SHARE {stack.READ_SHARE}, MASK_WRITE_SHARE {stack.MASK_WRITE_SHARE}, "
          f"OVERVIEW_SHARE {stack.OVERVIEW_SHARE})")


def merge_phases(work):
    from s2masks.core import merge

    stacked = work / "phases" / "out"
    steps = []
    start = time.monotonic()
    merge.merge_stacks([stacked / "s2.tif"], [stacked / "mask.tif"], work / "merged" / "s2.tif",
                       work / "merged" / "mask.tif", progress=lambda *step: steps.append((time.monotonic(), *step)))
    end = time.monotonic()
    writing = next(moment for moment, _, message in steps if message.startswith("writing"))
    print(f"Merge orbits of that stack: {end - start:.1f} s; mosaicking the blocks {writing - start:.1f} s "
          f"({(writing - start) / (end - start):.1%}), writing the COGs {end - writing:.1f} s "
          f"(core/merge.py: MERGE_SHARE {merge.MERGE_SHARE})")


def cancel_at(item, area, grid, work, phase, delay):
    folder = work / f"cancel-{phase.split()[-1]}-{delay}"
    run = Run(item, area, grid, folder)
    while run.ended_at is None:
        began = run.start if phase == "reading" else run.first(phase)
        if began is not None and time.monotonic() - began >= delay:
            run.cancel()
            break
        time.sleep(0.01)
    end = run.wait()
    left = sorted(path.name for path in (folder / "out").iterdir()) if (folder / "out").exists() else []
    if run.cancelled_at is None:
        print(f"  {phase!r} + {delay} s: ended before Cancel ({run.error or 'finished'})")
        return
    print(f"  Cancel {delay:4.1f} s into {phase!r}: returned after {end - run.cancelled_at:.2f} s "
          f"({type(run.error).__name__}), files left in the output folder: {left or 'none'}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cancel-only", action="store_true")
    parser.add_argument("--reading-at", type=float, nargs="*", default=[5.0, 20.0], help="seconds after the start")
    parser.add_argument("--writing-at", type=float, nargs="*", default=[0.5, 3.0, 10.0],
                        help="seconds after the stack's COG began")
    args = parser.parse_args()
    import shapely
    from bench_stack import build_tile
    from pc_server import PlanetaryComputerDouble

    from s2masks.core import grid as grids
    from s2masks.core import records

    with PlanetaryComputerDouble() as double, tempfile.TemporaryDirectory(prefix="bench-phases-", dir="/tmp") as work:
        item = records.parse_item(build_tile(double))
        area = shapely.geometry.shape(item.footprint).buffer(-0.001)
        grid = grids.output_grid(area, CRS)
        print(f"Whole tile: grid {grid.width} x {grid.height} px", flush=True)
        if not args.cancel_only:
            phases(item, area, grid, Path(work))
            merge_phases(Path(work))
        print("Cancel:")
        for delay in args.reading_at:
            cancel_at(item, area, grid, Path(work), "reading", delay)
        for delay in args.writing_at:
            cancel_at(item, area, grid, Path(work), "writing the stack", delay)


if __name__ == "__main__":
    main()
