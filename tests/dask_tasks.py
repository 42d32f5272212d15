"""Task functions the Dask tests submit. Workers import them by module name: local workers find
this folder on sys.path (spawned processes inherit it); a separately started worker gets the file
through Client.upload_file, as a user's cluster gets the plugin's code."""

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def square(x: int, die_once: str = "", fail_times: int = 0, counter: str = "", delay: float = 0.0) -> dict:
    """x * x after `delay` s. die_once: a marker file; the first call that finds it absent creates it
    and kills its own worker process. fail_times: raise that many times (counted in `counter`)."""
    if die_once and not os.path.exists(die_once):
        open(die_once, "w").close()
        os._exit(1)  # the worker process dies without any cleanup, as under the OOM killer
    if fail_times:
        with open(counter, "a+") as handle:
            handle.write("x")
            handle.seek(0)
            attempt = len(handle.read())
        if attempt <= fail_times:
            raise OSError(f"network down (attempt {attempt})")
    time.sleep(delay)
    return {"x": x * x, "pid": os.getpid()}


@contextlib.contextmanager
def separate_cluster(folder, workers: int = 1):
    """`dask scheduler` and `dask worker --nworkers N` started as separate processes on loopback, as a
    team's cluster would be, knowing nothing of the tests or the plugin (empty PYTHONPATH); yields
    the scheduler's address once the workers have registered."""
    from distributed import Client

    folder = Path(folder)
    dask = str(Path(sys.executable).parent / "dask")
    scheduler_file = folder / "scheduler.json"
    env = dict(os.environ, PYTHONPATH="")
    quiet = dict(env=env, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    processes = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                   "--scheduler-file", str(scheduler_file)], **quiet)]
    try:
        deadline = time.monotonic() + 30
        while not (scheduler_file.exists() and scheduler_file.stat().st_size) and time.monotonic() < deadline:
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        processes.append(subprocess.Popen([dask, "worker", address, "--nworkers", str(workers), "--nthreads", "1",
                                           "--no-dashboard", "--local-directory", str(folder / "worker")], **quiet))
        with Client(address, timeout=30) as client:
            client.wait_for_workers(workers, timeout=60)
        yield address
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(timeout=30)
