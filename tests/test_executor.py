"""core/executor.py on real Dask: a local cluster and a scheduler + worker started as separate
processes on loopback, as a team's cluster would be. Worker deaths, failing tasks and Cancel."""

import os
import time
from pathlib import Path

import pytest

from s2masks.core import executor
from s2masks.core.errors import Cancelled, InputError

pytest.importorskip("distributed")
import dask_tasks  # noqa: E402  (tests/ is on sys.path: see conftest.py)

TESTS = Path(__file__).resolve().parent


def local(**extra):
    return executor.ExecutorSpec(kind=executor.LOCAL_CLUSTER, workers=2, task_peak_bytes=256 * 1024 ** 2, **extra)


def test_local_cluster_runs_every_task_and_reports_each_as_it_ends():
    done = []
    outcomes = executor.run_tasks(dask_tasks.square, [(f"a{i}", {"x": i}) for i in range(5)], local(),
                                  on_done=lambda outcome, finished, total: done.append((outcome.key, finished, total)))
    assert [o.result["x"] for o in outcomes] == [0, 1, 4, 9, 16]  # in task order, whatever order they ended in
    assert sorted(key for key, _, _ in done) == [f"a{i}" for i in range(5)]
    assert [finished for _, finished, _ in done] == [1, 2, 3, 4, 5] and {t for _, _, t in done} == {5}
    assert len({o.result["pid"] for o in outcomes}) >= 1 and os.getpid() not in {o.result["pid"] for o in outcomes}


def test_a_killed_worker_loses_only_its_task_which_runs_again(tmp_path):
    marker = tmp_path / "died"
    tasks = [(f"a{i}", {"x": i, "die_once": str(marker) if i == 2 else ""}) for i in range(4)]
    outcomes = executor.run_tasks(dask_tasks.square, tasks, local())
    assert marker.exists()  # a worker really died running a2
    assert all(o.ok for o in outcomes) and [o.result["x"] for o in outcomes] == [0, 1, 4, 9]


def test_failing_task_is_retried_a_bounded_number_of_times_then_reported(tmp_path):
    flaky, broken = tmp_path / "flaky", tmp_path / "broken"
    tasks = [("ok", {"x": 3}), ("flaky", {"x": 4, "fail_times": 2, "counter": str(flaky)}),
             ("broken", {"x": 5, "fail_times": 99, "counter": str(broken)})]
    outcomes = {o.key: o for o in executor.run_tasks(dask_tasks.square, tasks, local(retries=2))}
    assert outcomes["ok"].result["x"] == 9
    assert outcomes["flaky"].ok and outcomes["flaky"].result["x"] == 16 and flaky.read_text() == "xxx"
    assert not outcomes["broken"].ok and "network down (attempt 3)" in outcomes["broken"].error
    assert broken.read_text() == "xxx"  # 1 + 2 retries, then reported


def test_cancel_returns_promptly_and_keeps_what_finished():
    started = time.monotonic()
    finished = []

    def cancel_after_first():
        return bool(finished)

    with pytest.raises(Cancelled):
        executor.run_tasks(dask_tasks.square, [("fast", {"x": 1})] + [(f"slow{i}", {"x": i, "delay": 60})
                                                                       for i in range(3)],
                           local(), on_done=lambda outcome, n, total: finished.append(outcome.key),
                           should_cancel=cancel_after_first)
    assert finished == ["fast"]
    assert time.monotonic() - started < 30  # not the 60 s the slow tasks take (cluster start-up included)


def test_scheduler_and_worker_started_apart(tmp_path):
    """`dask scheduler` and `dask worker` as separate processes; the worker gets the task code by upload."""
    with dask_tasks.separate_cluster(tmp_path) as address:
        spec = executor.ExecutorSpec(kind=executor.SCHEDULER, address=address, upload=(str(TESTS / "dask_tasks.py"),))
        lines = []
        outcomes = executor.run_tasks(dask_tasks.square, [("b1", {"x": 7}), ("b2", {"x": 8})], spec, log=lines.append)
    assert [o.result["x"] for o in outcomes] == [49, 64]
    assert f"Dask scheduler: {address}." in lines and "The scheduler has 1 worker(s)." in lines


def test_unreachable_scheduler_fails_in_bounded_time_naming_the_address():
    from pc_server import closed_port

    address = f"tcp://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    with pytest.raises(executor.ExecutorError, match=f"reach the Dask scheduler at {address}.*DASK_ADDRESS"):
        executor.run_tasks(dask_tasks.square, [("c", {"x": 1})],
                           executor.ExecutorSpec(kind=executor.SCHEDULER, address=address))
    assert time.monotonic() - started < executor.CONNECT_TIMEOUT_S + 10


@pytest.mark.parametrize("spec, match", [
    (executor.ExecutorSpec(kind="cloud"), "EXECUTOR"),
    (executor.ExecutorSpec(kind=executor.SCHEDULER), "DASK_ADDRESS: no scheduler address given"),
    (executor.ExecutorSpec(kind=executor.SCHEDULER, address="10.0.0.5"), "tcp://host:port"),
    (executor.ExecutorSpec(kind=executor.LOCAL_CLUSTER, workers=-1), "DASK_WORKERS"),
    (executor.ExecutorSpec(kind=executor.LOCAL_CLUSTER, retries=-1), "DASK_RETRIES"),
])
def test_unusable_specs_are_refused_before_anything_runs(spec, match):
    with pytest.raises(InputError, match=match):
        executor.check_spec(spec)


def test_worker_count_follows_cores_and_memory():
    gib = 1024 ** 3
    plan = executor.plan_local_workers(cores=8, memory_bytes=16 * gib, task_peak_bytes=2 * gib)
    assert plan.workers == 5 and plan.memory_limit == int(2.5 * gib)  # 12.8 GB usable / 2.5 GB
    assert executor.plan_local_workers(2, 24 * gib, 2 * gib).workers == 2  # cores bound it
    assert executor.plan_local_workers(8, 2 * gib, 2 * gib).workers == 1  # never none
    requested = executor.plan_local_workers(2, 4 * gib, 2 * gib, requested=3)
    assert requested.workers == 3 and "more than the memory allows" in requested.reason
