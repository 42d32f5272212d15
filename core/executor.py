"""Runs one task per acquisition on Dask (`dask.distributed`): a local cluster or a scheduler a team
already runs. In-process runs do not come here: the workflows run their steps one after another.

Each task writes its own outputs (atomically, to a folder the workers share with the user) and returns
only a small result (paths, statistics): no raster travels through the scheduler. A task that raises
is retried `retries` times; a task whose worker died is rescheduled by Dask (up to its
`distributed.scheduler.allowed-failures`). The run ends with every task's outcome, failures included,
so one lost acquisition never loses the others. Cancel cancels the futures at once.
"""

import os
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .errors import Cancelled, InputError, S2MasksError

IN_PROCESS, LOCAL_CLUSTER, SCHEDULER = "process", "local", "scheduler"
KINDS = (IN_PROCESS, LOCAL_CLUSTER, SCHEDULER)
CONNECT_TIMEOUT_S = 20  # to reach a scheduler, and for a local cluster's workers to start
POLL_S = 0.2  # how often Cancel is looked at while waiting for tasks
# A task's peak memory when nothing has been measured yet: a full 10980 x 10980 tile with
# in_memory off (stack <= 1 GB, probabilities <= 2 GB; see bench/).
DEFAULT_TASK_PEAK_BYTES = 2 * 1024 ** 3


class ExecutorError(S2MasksError):
    """Dask is missing, or the cluster cannot be reached or started; the message says what to do."""


@dataclass(frozen=True)
class ExecutorSpec:
    """Where the acquisitions run: kind is one of KINDS."""

    kind: str = IN_PROCESS
    address: str = ""  # SCHEDULER: e.g. tcp://10.0.0.5:8786
    workers: int = 0  # LOCAL_CLUSTER: 0 chooses from the cores and the memory (plan_local_workers)
    task_peak_bytes: int = DEFAULT_TASK_PEAK_BYTES
    retries: int = 2  # extra attempts of a task that raised (network, a full disk, ...)
    upload: Tuple[str, ...] = ()  # SCHEDULER: .zip/.py files the workers import the tasks from
    python: str = ""  # LOCAL_CLUSTER: the Python that starts workers, when sys.executable is not one (QGIS on Windows)


@dataclass
class Outcome:
    """What became of one task: its result, or the error that ended it."""

    key: str
    result: object = None
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        """Whether the task finished."""
        return self.error is None


@dataclass
class WorkerPlan:
    """How many local workers, with how much memory each, and why."""

    workers: int
    memory_limit: int  # bytes per worker
    reason: str = field(default="")


def check_spec(spec: ExecutorSpec) -> None:
    """Refuses an unusable spec before anything runs (InputError naming the parameter)."""
    if spec.kind not in KINDS:
        raise InputError(f"EXECUTOR: unknown executor '{spec.kind}'. Use one of {', '.join(KINDS)}.")
    if spec.kind == SCHEDULER:
        address = spec.address.strip()
        if not address:
            raise InputError("DASK_ADDRESS: no scheduler address given. Give the scheduler's address, e.g. "
                             "tcp://10.0.0.5:8786, or choose the local Dask cluster.")
        scheme, _, rest = address.partition("://")
        if not rest or scheme not in ("tcp", "tls", "ws", "wss", "inproc") or (scheme != "inproc" and ":" not in rest):
            raise InputError(f"DASK_ADDRESS: '{address}' is not a Dask scheduler address. Give it as "
                             "tcp://host:port (Dask's default port is 8786).")
    if spec.workers < 0:
        raise InputError("DASK_WORKERS: a negative number of workers. Give 0 (chosen from the cores and memory) "
                         "or a positive number.")
    if spec.retries < 0:
        raise InputError("DASK_RETRIES: a negative number of retries. Give 0 or a positive number.")
    if spec.kind != IN_PROCESS:
        dask_available()


def dask_available() -> None:
    """Raises ExecutorError when dask.distributed cannot be imported."""
    try:
        import distributed  # noqa: F401
    except ImportError as err:
        raise ExecutorError(
            "EXECUTOR: running on Dask needs the optional package 'distributed' (dask[distributed]). Install it "
            "with Processing Toolbox > Sentinel-2 improved masks > 5 Setup > Install dependencies, option "
            "'Also install Dask', or choose 'in this process'.") from err


def plan_local_workers(cores: int, memory_bytes: int, task_peak_bytes: int, requested: int = 0) -> WorkerPlan:
    """Workers for a local cluster: one task each, as many as the cores and the memory allow."""
    per_worker = int(task_peak_bytes * 1.25)  # headroom over the measured peak, for Python and GDAL caches
    usable = int(memory_bytes * 0.8)  # leave QGIS and the system a fifth
    by_memory = max(1, usable // per_worker)
    workers = requested or max(1, min(cores, by_memory))
    memory_limit = max(per_worker, usable // workers) if requested else per_worker
    reason = (f"{workers} worker(s) of {memory_limit / 1024 ** 3:.1f} GB: {cores} cores, "
              f"{memory_bytes / 1024 ** 3:.1f} GB of memory, about {task_peak_bytes / 1024 ** 3:.1f} GB per "
              "acquisition" + (" (as requested)" if requested else ""))
    if requested and requested * per_worker > usable:
        reason += f"; more than the memory allows ({by_memory}): tasks may be paused or restarted by Dask"
    return WorkerPlan(workers, memory_limit, reason)


def system_memory_bytes() -> int:
    """Physical memory of this machine (psutil comes with distributed)."""
    import psutil

    return int(psutil.virtual_memory().total)


def run_tasks(function: Callable, tasks: Sequence[Tuple[str, Dict]], spec: ExecutorSpec,
              on_done: Callable[[Outcome, int, int], None] = None, should_cancel: Callable[[], bool] = None,
              log: Callable[[str], None] = None) -> List[Outcome]:
    """Runs function(**kwargs) for each (key, kwargs) on Dask; returns the outcomes in task order.

    `on_done(outcome, finished, total)` is called as each task ends (in this thread), `should_cancel`
    is polled every POLL_S, `log` gets one line per decision (cluster, workers, retries).
    """
    check_spec(spec)
    if spec.kind == IN_PROCESS:
        raise InputError("EXECUTOR: 'in this process' runs the steps directly, not through run_tasks.")
    on_done = on_done or (lambda outcome, finished, total: None)
    should_cancel = should_cancel or (lambda: False)
    log = log or (lambda message: None)
    keys = [key for key, _ in tasks]
    if len(set(keys)) != len(keys):
        raise InputError("Two tasks have the same key; each acquisition must have its own.")
    with _Connection(spec, log) as client:
        for path in spec.upload:
            client.upload_file(path)
        return _gather(client, function, tasks, spec, on_done, should_cancel, log)


def _gather(client, function, tasks, spec, on_done, should_cancel, log):
    token = f"{os.getpid()}-{time.time_ns()}"
    futures = {client.submit(function, key=f"s2masks-{key}-{token}", retries=spec.retries, pure=False, **kwargs): key
               for key, kwargs in tasks}
    log(f"Submitted {len(futures)} acquisition(s); each is retried up to {spec.retries} time(s) if it fails.")
    outcomes, pending = {}, set(futures)
    try:
        while pending:
            if should_cancel():
                raise Cancelled("Cancelled; the acquisitions finished so far are kept.")
            done = {future for future in pending if future.done()}
            if not done:
                time.sleep(POLL_S)
                continue
            pending -= done
            for future in done:
                outcome = _outcome(futures[future], future)
                outcomes[outcome.key] = outcome
                on_done(outcome, len(outcomes), len(futures))
    finally:
        if pending:
            client.cancel(list(pending), force=True)
    return [outcomes[key] for key, _ in tasks]


def _outcome(key, future):
    """Outcome of a finished future: its result, or the error in one line (no traceback, no secrets)."""
    if future.status == "finished":
        return Outcome(key, result=future.result())
    if future.status == "cancelled":
        return Outcome(key, error="cancelled")
    error = future.exception()
    name = type(error).__name__
    if name == "KilledWorker":
        return Outcome(key, error="its worker died each time it ran it (out of memory, or killed); see the "
                                  "workers' logs")
    return Outcome(key, error=str(error) or name)


class _Connection:
    """A distributed Client on a new local cluster or a running scheduler, closed on exit."""

    def __init__(self, spec, log):
        self.spec, self.log = spec, log
        self.cluster = self.client = None

    def __enter__(self):
        from distributed import Client, LocalCluster

        try:
            if self.spec.kind == LOCAL_CLUSTER:
                plan = plan_local_workers(os.cpu_count() or 1, system_memory_bytes(), self.spec.task_peak_bytes,
                                          self.spec.workers)
                self.log(f"Local Dask cluster: {plan.reason}.")
                if self.spec.python:
                    import multiprocessing

                    multiprocessing.set_executable(self.spec.python)
                self.cluster = LocalCluster(n_workers=plan.workers, threads_per_worker=1, processes=True,
                                            memory_limit=plan.memory_limit, dashboard_address=None,
                                            silence_logs=40, timeout=CONNECT_TIMEOUT_S)
                self.client = Client(self.cluster, timeout=CONNECT_TIMEOUT_S)
            else:
                self.log(f"Dask scheduler: {self.spec.address}.")
                self.client = Client(self.spec.address.strip(), timeout=CONNECT_TIMEOUT_S)
                workers = len(self.client.scheduler_info().get("workers", {}))
                self.log(f"The scheduler has {workers} worker(s).")
                if not workers:
                    raise ExecutorError(f"DASK_ADDRESS: the scheduler at {self.spec.address} has no worker; start "
                                        "workers (dask worker <address>) or choose the local Dask cluster.")
        except (OSError, TimeoutError) as err:
            self.__exit__(None, None, None)
            target = "start a local Dask cluster" if self.spec.kind == LOCAL_CLUSTER else \
                f"reach the Dask scheduler at {self.spec.address}"
            raise ExecutorError(f"Could not {target} within {CONNECT_TIMEOUT_S} s ({err}). Check DASK_ADDRESS, the "
                                "network and firewall, or choose 'in this process'.") from err
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self.client

    def __exit__(self, *exc):
        for resource in (self.client, self.cluster):
            if resource is not None:
                try:
                    resource.close()
                except Exception:  # noqa: BLE001 - closing after an error must not hide it
                    pass
        return False
