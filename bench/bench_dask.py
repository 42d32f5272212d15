"""Many acquisitions (issue: many dates and large areas, Dask). Prints ratios, asserts nothing.

The whole workflow (*Preprocess Sentinel-2 with improved masks*, through Processing) over N copies of
the real fixture scene at different dates (default 12), served by the loopback Planetary Computer
double, each run in its own child process (its own QGIS, its own peak memory):
  process    EXECUTOR=in this process (the reference)
  local      EXECUTOR=local Dask cluster, DASK_WORKERS=2
  scheduler  EXECUTOR=Dask scheduler address: `dask scheduler` + `dask worker --nworkers 2` started
             as separate processes, as a team's cluster would be (the workers get the plugin's core
             by upload)
Prints per mode the wall time, the speed-up against `process` measured in the same run, the peak
memory of the QGIS process and the largest peak of one worker.

    .venv/bin/python bench/bench_dask.py [--acquisitions 12] [--rounds 1]
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / ".build" / "plugins"), str(REPO / "tests")]
AREA = "-8.74,-8.62,53.09,53.16 [EPSG:4326]"
MODES = {"process": {}, "local": {"EXECUTOR": 1, "DASK_WORKERS": 2}, "scheduler": {"EXECUTOR": 2}}


def child(mode, count, folder, address):
    """One run of the workflow in this process; prints a JSON line with the figures."""
    from qgis.core import QgsApplication, QgsProcessingContext, QgsProcessingFeedback, QgsSettings

    from acquisitions import date_range, dated_copies
    from pc_server import PlanetaryComputerDouble

    os.environ["QGIS_CUSTOM_CONFIG_PATH"] = str(Path(folder) / "profile")
    app = QgsApplication([], False)
    app.initQgis()
    sys.path.append("/usr/share/qgis/python/plugins")
    import processing
    from processing.core.Processing import Processing

    from s2masks.algorithms.executor import PEAK_KEY
    from s2masks.algorithms.provider import S2MasksProvider

    Processing.initialize()
    provider = S2MasksProvider()
    QgsApplication.processingRegistry().addProvider(provider)
    with PlanetaryComputerDouble() as double:
        dated_copies(double, count)
        parameters = dict(date_range(count), EXTENT=AREA, STAC_URL=double.url, CACHE_FOLDER=f"{folder}/cache",
                          OUTPUT_FOLDER=f"{folder}/out", FOOTPRINTS=f"{folder}/out/used.gpkg",
                          STATISTICS=f"{folder}/out/statistics.gpkg", **MODES[mode])
        if mode == "scheduler":
            parameters["DASK_ADDRESS"] = address
        started = time.perf_counter()
        result = processing.run("s2masks:preprocesss2improvedmasks", parameters, context=QgsProcessingContext(),
                                feedback=QgsProcessingFeedback())
        seconds = time.perf_counter() - started
    worker_peak = int(QgsSettings().value(PEAK_KEY, 0) or 0) if mode != "process" else 0
    print(json.dumps({"mode": mode, "seconds": seconds, "count": result["COUNT"], "worker_peak": worker_peak,
                      "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}), flush=True)
    QgsApplication.processingRegistry().removeProvider(provider)
    app.exitQgis()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--acquisitions", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--child", nargs=3, metavar=("MODE", "FOLDER", "ADDRESS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.acquisitions, args.child[1], args.child[2])
        return
    from dask_tasks import separate_cluster

    runs = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="bench-dask-") as work:
        with separate_cluster(work, workers=2) as address:
            for number in range(args.rounds):
                for mode in MODES:  # alternating, so a busy moment hits every mode alike
                    folder = Path(work) / f"{mode}-{number}"
                    output = subprocess.run([sys.executable, __file__, "--acquisitions", str(args.acquisitions),
                                             "--child", mode, str(folder), address], capture_output=True, text=True,
                                            env=dict(os.environ, QT_QPA_PLATFORM="offscreen"))
                    lines = [line for line in output.stdout.splitlines() if line.startswith("{")]
                    if output.returncode or not lines:
                        sys.exit(f"{mode} failed:\n{output.stderr[-3000:]}")
                    runs[mode].append(json.loads(lines[-1]))
                    print(f"  round {number + 1} {mode}: {runs[mode][-1]['seconds']:.1f} s", flush=True)
    reference = statistics.median(run["seconds"] for run in runs["process"])
    print(f"\n{args.acquisitions} acquisitions, {os.cpu_count()} cores, {args.rounds} round(s); speed-up = "
          "in-process median / mode median")
    print(f"{'mode':<10} {'median s':>9} {'min s':>7} {'speed-up':>9} {'QGIS peak MB':>13} {'worker peak MB':>15}")
    for mode, results in runs.items():
        median = statistics.median(run["seconds"] for run in results)
        print(f"{mode:<10} {median:>9.1f} {min(run['seconds'] for run in results):>7.1f} {reference / median:>9.2f} "
              f"{max(run['rss'] for run in results) / 1e6:>13.0f} "
              f"{max(run['worker_peak'] for run in results) / 1e6:>15.0f}")


if __name__ == "__main__":
    main()
