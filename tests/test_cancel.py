"""Cancel within 2 s, and QGIS never freezes: every long step, run as the Toolbox runs it (a
QgsProcessingAlgRunnerTask on QGIS's task manager, while the main thread turns a Qt event loop), is
cancelled at a random (seeded) moment against a slow server. The run must end within 2 s of Cancel,
leave no partial output or temporary folder, and the main thread's timer must never wait more than
0.5 s for its next tick (the Python work of the run must not hold the GIL for long)."""

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from qgis.core import QgsApplication, QgsProcessingAlgRunnerTask, QgsProcessingContext, QgsProcessingFeedback
from qgis.PyQt.QtCore import QEventLoop, QTimer
from stack_helpers import FIXTURE_ID

AREA = "-8.74,-8.62,53.09,53.16 [EPSG:4326]"  # inside the real T29UNU fixture scene
DATES = {"START_DATE": "2022-10-01", "END_DATE": "2022-10-10"}
CANCEL_LIMIT_S = 2.0
FREEZE_LIMIT_S = 0.5
TICK_MS = 20
SEED = 13


class Watched(QgsProcessingFeedback):
    """Feedback that keeps the log and when progress moved."""

    def __init__(self):
        super().__init__()
        self.log, self.progress_times = [], []
        self.progressChanged.connect(lambda value: self.progress_times.append((time.monotonic(), value)))

    def pushInfo(self, text):  # noqa: N802
        self.log.append(text)

    def reportError(self, text, fatalError=False):  # noqa: N802, N803
        self.log.append(text)


class Outcome:
    ok = None
    cancelled_at = None
    finished_at = None
    longest_gap = 0.0

    @property
    def cancel_latency(self):
        return self.finished_at - self.cancelled_at


def run_in_task(algorithm_id, parameters, cancel_after=None, cancel_when=None, limit_s=40.0):
    """Runs an algorithm in a QgsProcessingAlgRunnerTask while this (the main) thread turns a Qt
    event loop with a timer ticking every TICK_MS; presses Cancel `cancel_after` seconds after
    `cancel_when(feedback)` first holds (checked on every tick; default: at once)."""
    algorithm = QgsApplication.processingRegistry().createAlgorithmById(algorithm_id)
    context, feedback, outcome = QgsProcessingContext(), Watched(), Outcome()
    ok, message = algorithm.checkParameterValues(parameters, context)
    assert ok, message
    task = QgsProcessingAlgRunnerTask(algorithm, parameters, context, feedback)
    loop = QEventLoop()
    last_tick = [time.monotonic()]
    armed = [None]

    def finished(ok, results):
        outcome.ok, outcome.finished_at = ok, time.monotonic()
        loop.quit()

    def tick():
        now = time.monotonic()
        outcome.longest_gap = max(outcome.longest_gap, now - last_tick[0])
        last_tick[0] = now
        if cancel_after is None or outcome.cancelled_at is not None:
            return
        if armed[0] is None and (cancel_when is None or cancel_when(feedback)):
            armed[0] = now + cancel_after
        if armed[0] is not None and now >= armed[0]:
            outcome.cancelled_at = now
            feedback.cancel()

    task.executed.connect(finished)
    timer = QTimer()
    timer.setInterval(TICK_MS)
    timer.timeout.connect(tick)
    timer.start()
    QTimer.singleShot(int(limit_s * 1000), loop.quit)
    started = time.monotonic()
    QgsApplication.taskManager().addTask(task)
    loop.exec_()
    timer.stop()
    if outcome.finished_at is None:  # let the task end before the test tears down its files
        feedback.cancel()
        while QgsApplication.taskManager().countActiveTasks():
            QgsApplication.processEvents()
            time.sleep(0.05)
        pytest.fail(f"{algorithm_id} did not end within {limit_s:g} s (Cancel pressed: "
                    f"{outcome.cancelled_at is not None}, progress {feedback.progress():.0f}%, longest main-thread "
                    f"gap {outcome.longest_gap:.1f} s)")
    outcome.duration = outcome.finished_at - started
    outcome.feedback = feedback
    return outcome


def leftovers(folder):
    """Hidden temporary entries (.stacking-*, .NAME.partial...) under `folder`."""
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob(".*"))


def check_cancelled(outcome, name):
    assert outcome.cancelled_at is not None and outcome.ok is False, f"{name} ended before Cancel, after " \
        f"{outcome.duration:.1f} s: {outcome.feedback.log[-3:]}"
    print(f"\n{name}: ended {outcome.cancel_latency:.2f} s after Cancel; longest main-thread gap "
          f"{outcome.longest_gap:.3f} s; run {outcome.duration:.1f} s")
    assert outcome.cancel_latency < CANCEL_LIMIT_S
    assert outcome.longest_gap < FREEZE_LIMIT_S


@pytest.fixture
def rng():
    return random.Random(SEED)


@pytest.fixture
def slow_server():
    """Starts the loopback double in slow mode in a process of its own, as a real server is (an
    in-process one would wait for this process's GIL); returns its STAC URL."""
    started = []

    def start(delay=0.0, rate=None, prefix=""):
        command = [sys.executable, str(Path(__file__).parent / "pc_server.py"), "--delay", str(delay),
                   "--slow-prefix", prefix] + (["--rate", str(rate)] if rate else [])
        server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        started.append(server)
        return server.stdout.readline().split("STAC API: ", 1)[1].strip()

    yield start
    for server in started:
        server.terminate()
        server.wait(10)


def test_search_cancelled_against_a_slow_stac_api(s2masks_provider, slow_server, tmp_path, rng):
    url = slow_server(delay=4.0, prefix="/api/stac")  # every STAC request answers after 4 s
    out = tmp_path / "out"
    out.mkdir()
    outcome = run_in_task("s2masks:listsentinel2products", dict(
        DATES, EXTENT=AREA, STAC_URL=url, OUTPUT=str(out / "footprints.gpkg")),
        cancel_after=rng.uniform(0.2, 7.0))
    check_cancelled(outcome, "List Sentinel-2 products")
    assert list(out.iterdir()) == []


def download_parameters(url, tmp_path):
    return {"ITEM": f"{url}/collections/sentinel-2-l2a/items/{FIXTURE_ID}", "EXTENT": AREA,
            "CACHE_FOLDER": str(tmp_path / "cache"), "OUTPUT_FOLDER": str(tmp_path / "out"), "DL_TIMEOUT": 30}


def test_download_cancelled_against_a_slow_cog_host(s2masks_provider, slow_server, tmp_path, rng):
    url = slow_server(delay=1.0, rate=200_000, prefix="/blob")
    outcome = run_in_task("s2masks:downloadstacksentinel2", download_parameters(url, tmp_path),
                          cancel_after=rng.uniform(1.0, 8.0))
    check_cancelled(outcome, "Download and stack")
    assert leftovers(tmp_path / "out") == [] and not list((tmp_path / "out").glob("*.tif"))



def test_download_progress_moves(s2masks_provider, slow_server, tmp_path):
    """Progress moves during the download (per band or block), not only when it ends."""
    url = slow_server(delay=0.3, prefix="/blob")
    outcome = run_in_task("s2masks:downloadstacksentinel2", download_parameters(url, tmp_path), limit_s=150)
    assert outcome.ok
    times = [moment for moment, value in outcome.feedback.progress_times if 0 < value < 100]
    print(f"\nDownload: {len(times)} progress steps over {times[-1] - times[0]:.1f} of {outcome.duration:.1f} s; "
          f"longest main-thread gap {outcome.longest_gap:.3f} s")
    assert len(times) >= 5 and times[-1] - times[0] > 0.2 * outcome.duration
    assert outcome.longest_gap < FREEZE_LIMIT_S


@pytest.fixture
def large_stack(stacked, tmp_path):
    """The stacked real scene tiled 3 x 3 (about 2500 x 2300 pixels): a model run of some seconds."""
    with rasterio.open(stacked.raster) as src:
        data, profile, descriptions, scales = src.read(), src.profile, src.descriptions, src.scales
    data = np.tile(data, (1, 3, 3))
    profile.update(driver="GTiff", width=data.shape[2], height=data.shape[1])
    path = tmp_path / "large.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions, dst.scales = descriptions, scales
    return path


@pytest.mark.parametrize("algorithm, outputs", [("computecloudprob", ("OUTPUT",)),
                                                ("computecloudshadowprob", ("CLOUD_OUTPUT", "SHADOW_OUTPUT"))])
def test_probabilities_cancelled(s2masks_provider, large_stack, tmp_path, rng, algorithm, outputs):
    out = tmp_path / "probabilities"
    out.mkdir()
    parameters = dict({key: str(out / f"{key}.tif") for key in outputs}, INPUT=str(large_stack))
    outcome = run_in_task(f"s2masks:{algorithm}", parameters, cancel_after=rng.uniform(0.0, 1.0),
                          cancel_when=lambda feedback: feedback.progress() > 0)
    check_cancelled(outcome, algorithm)
    assert list(out.iterdir()) == []


@pytest.fixture
def large_masks(tmp_path):
    """A product mask and two probabilities of 4000 x 4000 pixels (UTM, 10 m): a merge of some seconds."""
    generator = np.random.default_rng(SEED)
    profile = dict(driver="GTiff", width=4000, height=4000, count=1, crs="EPSG:32629", tiled=True,
                   transform=rasterio.transform.Affine(10, 0, 500000, 0, -10, 5900000))
    paths = {}
    for key, dtype, data in (("PRODUCT_MASK", "uint8", lambda: generator.integers(0, 5, (4000, 4000), np.uint8)),
                             ("CLOUD_PROBABILITY", "float32", lambda: generator.random((4000, 4000), np.float32)),
                             ("SHADOW_PROBABILITY", "float32", lambda: generator.random((4000, 4000), np.float32))):
        paths[key] = str(tmp_path / f"{key}.tif")
        with rasterio.open(paths[key], "w", dtype=dtype, **profile) as dst:
            dst.write(data(), 1)
    return paths


def test_merge_cloud_masks_cancelled(s2masks_provider, large_masks, tmp_path, rng):
    out = tmp_path / "merged"
    out.mkdir()
    outcome = run_in_task("s2masks:mergecloudmaskssimple", dict(
        large_masks, BUFFER=30, CLOSING=20, MIN_AREA=500, OUTPUT=str(out / "mask.tif"),
        OUTPUT_CLASSES=str(out / "classes.tif")), cancel_after=rng.uniform(0.0, 1.0),
        cancel_when=lambda feedback: feedback.progress() > 0)
    check_cancelled(outcome, "Merge cloud masks")
    assert list(out.iterdir()) == []


_WORKFLOW = {}  # "seconds": an uncancelled run's duration, measured once


@pytest.mark.parametrize("draw", range(3))  # three random moments: search, download, models or merge
def test_workflow_cancelled_against_a_slow_server(s2masks_provider, slow_server, tmp_path, draw):
    """Preprocess Sentinel-2 with improved masks, cancelled anywhere in its search, download, models
    or merge; whatever it leaves is complete."""
    url = slow_server(delay=0.5)

    def parameters(folder):
        return dict(DATES, EXTENT=AREA, STAC_URL=url, DL_TIMEOUT=30, CACHE_FOLDER=str(folder / "cache"),
                    OUTPUT_FOLDER=str(folder / "out"), FOOTPRINTS=str(folder / "out" / "used.gpkg"),
                    STATISTICS=str(folder / "out" / "statistics.gpkg"))

    if "seconds" not in _WORKFLOW:  # how long a whole run takes here, so that Cancel falls inside one
        started = time.monotonic()
        assert run_in_task("s2masks:preprocesss2improvedmasks", parameters(tmp_path / "whole"), limit_s=150).ok
        _WORKFLOW["seconds"] = time.monotonic() - started
    out = tmp_path / "out"
    outcome = run_in_task("s2masks:preprocesss2improvedmasks", parameters(tmp_path),
                          cancel_after=random.Random(SEED + draw).uniform(0.05, 0.85) * _WORKFLOW["seconds"],
                          limit_s=150)
    check_cancelled(outcome, f"Preprocess Sentinel-2 with improved masks ({outcome.feedback.log[-1][:60]})")
    assert leftovers(out) == []
    for raster in out.glob("*.tif"):
        with rasterio.open(raster) as src:
            src.read(1, out_shape=(1, 8, 8))
    assert not (out / "statistics.csv").exists()


KILLED_RUN = """
import sys
sys.path[:0] = [{plugin!r}]
import requests
from shapely.geometry import box
from s2masks.core import grid, records, stack
item = records.parse_item(requests.get({item!r}, timeout=30).json())
area = box(-8.74, 53.09, -8.62, 53.16)
stack.stack_acquisition([item], area, grid.output_grid(area), {out!r} + "/s2.tif", {out!r} + "/m.tif",
                        stack.StackOptions(cache_dir={cache!r}))
"""


def test_a_killed_runs_temporary_folders_go_with_the_next_run(s2masks_provider, slow_server, tmp_path):
    from s2masks.core import tempfiles

    out, cache = tmp_path / "out", tmp_path / "cache"
    out.mkdir()
    url = slow_server(delay=2.0, prefix="/blob")
    killed = subprocess.Popen([sys.executable, "-c", KILLED_RUN.format(
        plugin=str(Path(__file__).parent.parent / ".build" / "plugins"), out=str(out), cache=str(cache),
        item=f"{url}/collections/sentinel-2-l2a/items/{FIXTURE_ID}")])
    deadline = time.monotonic() + 60
    while not list(out.glob(".stacking-*")) and time.monotonic() < deadline:
        time.sleep(0.1)
    killed.kill()  # no chance to clean up
    killed.wait(10)
    orphans = list(out.glob(".stacking-*"))
    assert orphans, "the killed run made no working folder"
    # what must stay: a run of this process, a run of another live process, files still being written
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as alive:
        kept = [out / f".stacking-{os.getpid()}-{tempfiles.machine_tag()}-concurrent",
                out / f".inference-{alive.pid}-{tempfiles.machine_tag()}-concurrent", out / ".stacking-oldname"]
        for folder in kept:
            folder.mkdir()
        (out / ".x.tif.partial").write_bytes(b"fresh")
        stale = [out / ".merging-oldname", out / ".old.tif.partial", cache / "tmpabcdefgh.part"]
        stale[0].mkdir()
        for path in stale[1:]:
            path.write_bytes(b"old")
        hours_ago = time.time() - tempfiles.STALE_AFTER_S - 60
        for path in stale:
            os.utime(path, (hours_ago, hours_ago))
        result = run_in_task("s2masks:downloadstacksentinel2", download_parameters(slow_server(), tmp_path))
        alive.kill()
    assert result.ok, result.feedback.log[-3:]
    assert not any(path.exists() for path in orphans + stale)
    assert all(path.exists() for path in kept + [out / ".x.tif.partial"])
    assert len(list(out.glob("*.tif"))) == 2
