"""Temporary working folders and files next to the outputs, and the removal of those that a
killed run (QGIS closed or crashed mid-run) left behind.

A run writes into a hidden working folder (`.stacking-*`, `.inference-*`, `.merging-*`...) or a
hidden `.NAME.partial` file and renames the result into place when complete; Cancel and errors
remove them, but a killed process cannot. The next run in the same folder removes them, but only
stale ones, never those of a run still going (in this or another QGIS, on this or another machine):

- a working folder made by `work_folder` carries its process id and a tag of its machine; it is
  stale once that process no longer runs on this machine;
- anything else (older names, `.partial` files, the download cache's `*.part` files, folders of
  another machine) is stale when nothing in it has changed for STALE_AFTER_S.
"""

import hashlib
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

STALE_AFTER_S = 6 * 3600  # untouched this long: no run is still writing it
KINDS = ("stacking", "inference", "merging-masks", "merging", "pip")
# .stacking-<pid>-<machine tag>-<random> (work_folder), or .stacking-<random> (older versions)
_FOLDER = re.compile(r"^\.(?P<kind>" + "|".join(KINDS) + r")-((?P<pid>\d+)-(?P<host>[0-9a-f]{8})-)?")
_FILES = (re.compile(r"^\..+\.partial(\.aux\.xml)?$"), re.compile(r"^tmp\w+\.part$"), re.compile(r"^\.write-test-"))


def machine_tag() -> str:
    """Eight hex digits naming this machine (a folder on a shared drive may be another's)."""
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def work_folder(parent, kind: str) -> Path:
    """A new hidden working folder `.<kind>-<pid>-<machine>-<random>` in `parent`, after removing
    the stale ones that killed runs left there."""
    if kind not in KINDS:
        raise ValueError(f"Unknown kind of working folder {kind!r}; add it to KINDS.")
    remove_stale(parent)
    return Path(tempfile.mkdtemp(prefix=f".{kind}-{os.getpid()}-{machine_tag()}-", dir=parent))


def remove_stale(folder, now: Optional[float] = None) -> List[Path]:
    """Removes the stale working folders and partial files directly in `folder`; returns them.
    Never raises: a folder that cannot be read or an entry that cannot be removed is left alone."""
    now = time.time() if now is None else now
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                match = _FOLDER.match(entry.name)
                if match and _folder_is_stale(entry.path, match, now):
                    shutil.rmtree(entry.path)
                    removed.append(Path(entry.path))
            elif any(pattern.match(entry.name) for pattern in _FILES) \
                    and now - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER_S:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue  # removed meanwhile, or not ours to remove
    return removed


def _folder_is_stale(path, match, now):
    if match.group("pid") and match.group("host") == machine_tag():
        return not process_runs(int(match.group("pid")))
    return now - _last_change(path) > STALE_AFTER_S


def _last_change(path):
    """The newest modification time of a folder and of what it holds."""
    newest = os.stat(path).st_mtime
    for root, folders, files in os.walk(path):
        for name in folders + files:
            try:
                newest = max(newest, os.stat(os.path.join(root, name), follow_symlinks=False).st_mtime)
            except OSError:
                pass
    return newest


def process_runs(pid: int) -> bool:
    """Whether a process with this id runs on this machine (when unsure: yes)."""
    if pid == os.getpid():
        return True
    if sys.platform == "win32":
        return _windows_process_runs(pid)
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, as another user's
        return True
    return True


def _windows_process_runs(pid):
    """OpenProcess + GetExitCodeProcess (os.kill would end the process on Windows)."""
    import ctypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return ctypes.get_last_error() != 87  # ERROR_INVALID_PARAMETER: no such process
    try:
        code = ctypes.c_ulong()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)
