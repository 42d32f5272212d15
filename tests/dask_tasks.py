"""Task functions the Dask tests submit. Workers import them by module name: local workers find
this folder on sys.path (spawned processes inherit it); a separately started worker gets the file
through Client.upload_file, as a user's cluster gets the plugin's code."""

import os
import time


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
