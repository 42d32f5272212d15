"""What the plugin needs in QGIS's Python, what is missing, and how pip installs it.

Standard library only: it runs before any of those packages can be imported, inside QGIS (the
dependency installer) and as `python3 -m core.dependencies` (`make setup`). Packages go into a
folder of the QGIS profile, `<profile>/python/dependencies/s2masks/python3.X`, installed with the
Python that runs QGIS (`pip install --prefix`), never into QGIS's own site-packages; numpy and
every compiled distribution QGIS's Python already has are pinned (`--constraint`), so pip never
replaces them or the GDAL, PROJ and GEOS bindings QGIS was built with.
"""

import argparse
import importlib
import importlib.metadata
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from . import tempfiles
from .errors import S2MasksError

REQUIREMENTS_FILE = Path(__file__).resolve().parent.parent / "requirements.txt"
# What the plugin can use when it is there (Dask, for EXECUTOR): offered by the installer, never required.
OPTIONAL_REQUIREMENTS_FILE = REQUIREMENTS_FILE.with_name("requirements-optional.txt")
PLUGIN_FOLDER = "s2masks"
# Come with QGIS itself: the plugin never installs or upgrades them (a second numpy breaks QGIS).
PROVIDED_BY_QGIS = frozenset({"numpy"})
# About how much pip downloads for each package with what it pulls in (64-bit wheels, 2026-11).
DOWNLOAD_MB = {"pystac-client": 1, "shapely": 3, "rasterio": 36, "pyproj": 10,
               "scipy": 35, "onnxruntime": 29, "ukis-csmask": 145, "distributed": 9}
# On Linux one process has one set of GEOS / GDAL symbols (ELF interposition): a wheel that bundles
# another version calls into QGIS's copy. Pick the wheel series bundling QGIS's major.minor.
# Windows and macOS resolve symbols per library, so any wheel works there.
WHEEL_SERIES = {
    "shapely": {(3, 11): ">=2.0,<2.1", (3, 13): ">=2.1,<2.2", (3, 14): ">=2.2,<2.3"},  # by GEOS
    "rasterio": {(3, 9): "==1.4.3", (3, 10): "==1.4.4", (3, 12): ">=1.5,<1.6"},  # by GDAL
}
_VERSION = re.compile(r"^\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?(\+[A-Za-z0-9.]+)?$")
PIP_TIMEOUT_S = 1800  # a whole install; pip's own per-request timeout applies inside


class DependencyError(S2MasksError):
    """The packages could not be checked or installed; the message says what to do."""


@dataclass(frozen=True)
class Requirement:
    """One line of requirements.txt: a distribution and the lowest version that works."""

    name: str
    minimum: str

    @property
    def spec(self) -> str:
        """The requirement as pip takes it."""
        return f"{self.name}>={self.minimum}"


@dataclass(frozen=True)
class Missing:
    """A requirement that is not met: not installed (installed is None) or too old."""

    requirement: Requirement
    installed: Optional[str]

    def describe(self) -> str:
        """One line for the user: name, what is there, what is needed, download size."""
        have = f"{self.installed} installed" if self.installed else "not installed"
        size = DOWNLOAD_MB.get(self.requirement.name)
        download = f", about {size} MB" if size else ""
        return f"{self.requirement.name} {self.requirement.minimum} or newer ({have}{download})"


def normalise(name: str) -> str:
    """PEP 503 form of a distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def version_tuple(text: str) -> Tuple[int, ...]:
    """The leading numeric release of a version string: '2.0.7' -> (2, 0, 7), '1.8.5rc1' -> (1, 8, 5)."""
    numbers = []
    for part in text.split("."):
        match = re.match(r"\d+", part)
        if not match:
            break
        numbers.append(int(match.group()))
        if match.end() != len(part):
            break
    return tuple(numbers)


def read_requirements(path: Path = REQUIREMENTS_FILE) -> List[Requirement]:
    """The `name>=version` lines of requirements.txt (comments and blank lines skipped)."""
    requirements = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*>=\s*([0-9][0-9.]*)", line)
        if not match:
            raise DependencyError(f"{path.name}: cannot read the line {line!r}; write it as name>=version.")
        requirements.append(Requirement(normalise(match.group(1)), match.group(2)))
    return requirements


def installed_version(name: str) -> Optional[str]:
    """The version of a distribution that QGIS's Python would import, or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def missing(requirements: Sequence[Requirement]) -> List[Missing]:
    """The requirements that are not installed or are older than their minimum. A distribution
    package built without its version ('0+unknown', as Debian unstable's shapely 2.2) counts as
    new enough: replacing it would bring a wheel built for another GEOS or GDAL."""
    found = []
    for requirement in requirements:
        version = installed_version(requirement.name)
        if version is None or (not unknown_version(version)
                               and version_tuple(version) < version_tuple(requirement.minimum)):
            found.append(Missing(requirement, version))
    return found


def unknown_version(version: str) -> bool:
    """Whether a version string says the build did not know its version (e.g. '0+unknown')."""
    return version_tuple(version) in ((), (0,)) and "unknown" in version


def install_specs(needed: Sequence[Missing], platform: str = sys.platform,
                  library_versions: Optional[Dict[str, Tuple[int, int]]] = None) -> List[str]:
    """What to hand pip for the missing packages; on Linux shapely and rasterio in the wheel series
    that bundles the GEOS / GDAL version QGIS runs with (`library_versions`: {'shapely': GEOS
    (major, minor), 'rasterio': GDAL (major, minor)})."""
    blocked = [m.requirement.name for m in needed if m.requirement.name in PROVIDED_BY_QGIS]
    if blocked:
        raise DependencyError(
            f"{', '.join(blocked)} comes with QGIS and is missing or too old in this QGIS's Python; the "
            "plugin does not replace it. Install a QGIS whose Python has numpy 1.21 or newer.")
    specs = []
    for entry in needed:
        name = entry.requirement.name
        spec = entry.requirement.spec
        series = WHEEL_SERIES.get(name, {}).get((library_versions or {}).get(name))
        if platform.startswith("linux") and series:
            spec = f"{name}{series}"
        specs.append(spec)
    return specs


def constraints(exclude: Sequence[str] = ()) -> List[str]:
    """`name==version` for every compiled distribution QGIS's Python already has (and numpy),
    except `exclude`: they share numpy's ABI and QGIS's GDAL, PROJ and GEOS, so pip must keep
    them. Pure-Python ones (requests, say) may be newer in the plugin's folder."""
    skip = {normalise(name) for name in exclude}
    pins = {}
    for distribution in importlib.metadata.distributions():
        name = normalise(distribution.metadata["Name"] or "")
        version = distribution.version
        if not name or name in skip or name in pins or not version or not _VERSION.match(version):
            continue  # the first one on sys.path is the one imported
        if name in PROVIDED_BY_QGIS or _is_compiled(distribution):
            pins[name] = f"{name}=={version}"
    return sorted(pins.values())


def _is_compiled(distribution: importlib.metadata.Distribution) -> bool:
    """Whether a distribution holds extension modules (or we cannot tell: then it is kept)."""
    suffixes = (".so", ".pyd", ".dylib", ".dll")
    if distribution.files is not None:
        return any(str(path).endswith(suffixes) or ".so." in str(path) for path in distribution.files)
    # Debian's packages have no RECORD, and its newer ones no top_level.txt either: look for the
    # modules by name next to the metadata.
    name = distribution.metadata["Name"] or ""
    modules = (distribution.read_text("top_level.txt") or "").split() or [normalise(name).replace("-", "_"), name]
    site = Path(distribution.locate_file(""))
    found = [path for module in modules for path in [*site.glob(f"{module}.*"), *(site / module).rglob("*")]]
    return not found or any(path.suffix in suffixes for path in found)


# -- where the packages live ------------------------------------------------------------------
def prefix_for(profile_dir: Path, version: Tuple[int, int] = tuple(sys.version_info[:2])) -> Path:
    """The install prefix in a QGIS profile: per profile, per Python minor version, outside the
    plugin folder (so a plugin upgrade keeps it)."""
    return Path(profile_dir) / "python" / "dependencies" / PLUGIN_FOLDER / f"python{version[0]}.{version[1]}"


def site_dirs(prefix: Path, version: Tuple[int, int] = tuple(sys.version_info[:2])) -> List[Path]:
    """The folders under `prefix` where pip put packages: lib/python3.X/site-packages (Linux, macOS),
    Lib/site-packages (Windows), local/lib/python3.X/dist-packages (Debian's pip)."""
    python = f"python{version[0]}.{version[1]}"
    candidates = [Path(prefix, "lib", python, "site-packages"), Path(prefix, "Lib", "site-packages"),
                  Path(prefix, "local", "lib", python, "dist-packages"), Path(prefix, "lib", python, "dist-packages")]
    return [path for path in candidates if path.is_dir()]


def activate(prefix: Path) -> List[str]:
    """Puts the prefix's package folders first on sys.path, so they win over older system copies."""
    added = []
    for folder in reversed(site_dirs(prefix)):
        text = str(folder)
        if text not in sys.path:
            sys.path.insert(0, text)
            added.append(text)
    if added:
        importlib.invalidate_caches()
    return added


# -- the Python that runs QGIS ----------------------------------------------------------------
def python_candidates(platform: str = sys.platform, prefix: str = sys.prefix, executable: str = sys.executable,
                      version: Tuple[int, int] = tuple(sys.version_info[:2])) -> List[Path]:
    """Where the interpreter of QGIS's Python may be. Inside QGIS `sys.executable` is often QGIS
    itself (qgis-bin.exe, QGIS.app/Contents/MacOS/QGIS, /usr/bin/qgis), so look next to it too."""
    minor = f"{version[0]}.{version[1]}"
    exe = Path(executable) if executable else None
    candidates = []
    if exe is not None and exe.name.lower().startswith("python"):
        candidates.append(exe)
    if platform == "win32":  # OSGeo4W and the standalone installer: apps/Python3X/python.exe = sys.prefix
        candidates += [Path(prefix, "python.exe"), Path(prefix, "python3.exe")]
        if exe is not None:
            candidates += [exe.parent / "python.exe", exe.parent / "python3.exe"]
    elif platform == "darwin":  # QGIS.app: Contents/MacOS/bin/python3 or the bundled framework
        candidates += [Path(prefix, "bin", f"python{minor}"), Path(prefix, "bin", "python3")]
        if exe is not None:
            candidates += [exe.parent / "bin" / "python3", exe.parent / f"python{minor}", exe.parent / "python3"]
    else:
        candidates += [Path(prefix, "bin", f"python{minor}"), Path(prefix, "bin", "python3")]
    unique = []
    for path in candidates:
        if path not in unique:
            unique.append(path)
    return unique


def find_python(candidates: Optional[Sequence[Path]] = None,
                version: Tuple[int, int] = tuple(sys.version_info[:2])) -> Path:
    """The first candidate that runs and is the same Python minor version as QGIS's."""
    candidates = python_candidates() if candidates is None else candidates
    for path in candidates:
        if not path.is_file():
            continue
        try:
            result = subprocess.run([str(path), "-c", "import sys; print(*sys.version_info[:2])"],
                                    capture_output=True, text=True, timeout=60, **_no_window())
        except (OSError, subprocess.SubprocessError):
            continue
        if result.returncode == 0 and tuple(map(int, result.stdout.split())) == tuple(version):
            return path
    tried = ", ".join(str(p) for p in candidates) or "nothing"
    raise DependencyError(
        f"Could not find the Python {version[0]}.{version[1]} that runs QGIS (tried {tried}). "
        "Install the packages listed in the plugin's requirements.txt with that Python's pip, "
        "as the README describes for your system.")


def pip_version(python: Path) -> Optional[str]:
    """pip's version for that Python, or None when it has no pip."""
    try:
        result = subprocess.run([str(python), "-m", "pip", "--version"], capture_output=True, text=True,
                                timeout=120, **_no_window())
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.match(r"pip (\S+)", result.stdout)
    return match.group(1) if result.returncode == 0 and match else None


def no_pip_message(python: Path, platform: str = sys.platform) -> str:
    """What to run when QGIS's Python has no pip, per system."""
    lines = [f"The Python that runs QGIS ({python}) has no pip, so the plugin cannot install its packages."]
    if platform.startswith("linux"):
        if str(python).startswith("/app/"):
            lines.append("This is the Flatpak QGIS, whose Python has no pip. Run once, outside QGIS: "
                         "flatpak run --command=python3 org.qgis.qgis -m ensurepip --user, then try again.")
        else:
            lines.append("Debian/Ubuntu: sudo apt install python3-pip. Fedora: sudo dnf install python3-pip. "
                         f"Otherwise: {python} -m ensurepip --user.")
    elif platform == "win32":
        lines.append(f"In the OSGeo4W Shell: \"{python}\" -m ensurepip, or reinstall QGIS with the OSGeo4W installer.")
    else:
        lines.append(f"In a terminal: \"{python}\" -m ensurepip --user")
    lines.append("Then run the plugin's 'Install dependencies' again.")
    return "\n".join(lines)


def install_command(python: Path, prefix: Path, specs: Sequence[str], constraints_file: Path) -> List[str]:
    """pip's command line: into the prefix, no cache, pinned to what QGIS's Python has."""
    return [str(python), "-m", "pip", "install", "--prefix", str(prefix), "--no-cache-dir", "--no-input",
            "--disable-pip-version-check", "--no-warn-script-location", "--progress-bar", "off",
            "--constraint", str(constraints_file), *specs]


def install(specs: Sequence[str], prefix: Path, python: Path, log: Callable[[str], None],
            cancelled: Callable[[], bool] = lambda: False, timeout_s: float = PIP_TIMEOUT_S) -> None:
    """Runs pip into `prefix`, each output line to `log`. Temporary files stay inside the prefix
    and are removed; Cancel or the timeout stop pip. Raises DependencyError when pip fails.

    Two steps: pip first resolves (`--dry-run --report`) against everything QGIS's Python has,
    then installs exactly that list with `--no-deps --ignore-installed`. So a newer copy of a
    package the distribution installed (typing-extensions, say) goes into the prefix and is never
    uninstalled from the system, which pip 25 refuses for Debian's packages."""
    prefix.mkdir(parents=True, exist_ok=True)
    work = tempfiles.work_folder(prefix, "pip")
    deadline = time.monotonic() + timeout_s
    try:
        names = [re.split(r"[<>=!~ ]", spec, maxsplit=1)[0] for spec in specs]
        constraints_file = work / "constraints.txt"
        constraints_file.write_text("\n".join(constraints(exclude=names)) + "\n", encoding="utf-8")
        env = dict(os.environ, TMPDIR=str(work), TEMP=str(work), TMP=str(work), PIP_NO_CACHE_DIR="1",
                   PYTHONNOUSERSITE="1", PYTHONPATH=os.pathsep.join(
                       [str(p) for p in site_dirs(prefix)] + [p for p in sys.path if p and Path(p).is_dir()]))
        report = work / "report.json"
        command = install_command(python, prefix, specs, constraints_file) + ["--dry-run", "--report", str(report)]
        log("$ " + " ".join(command))
        _run(command, env, log, cancelled, deadline - time.monotonic())
        plan = [f"{normalise(entry['metadata']['name'])}=={entry['metadata']['version']}"
                for entry in json.loads(report.read_text(encoding="utf-8")).get("install", [])]
        if plan:
            command = install_command(python, prefix, plan, constraints_file) + ["--no-deps", "--ignore-installed"]
            log("$ " + " ".join(command))
            _run(command, env, log, cancelled, deadline - time.monotonic())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    activate(prefix)


def _run(command: List[str], env: Dict[str, str], log: Callable[[str], None], cancelled: Callable[[], bool],
         timeout_s: float) -> None:
    """Runs pip, relaying its lines; Cancel and the deadline are checked every 0.2 s even while
    pip prints nothing (a stalled download, say)."""
    lines: "queue.Queue[Optional[str]]" = queue.Queue()
    deadline = time.monotonic() + timeout_s
    tail: List[str] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
                          bufsize=1, **_no_window()) as process:
        reader = threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True)
        reader.start()
        try:
            while True:
                try:
                    line = lines.get(timeout=0.2)
                except queue.Empty:
                    line = ""
                if line is None:
                    break
                if line:
                    log(line)
                    tail = (tail + [line])[-8:]
                if cancelled() or time.monotonic() > deadline:
                    reason = "Cancelled" if cancelled() else f"pip took longer than {timeout_s:.0f} s"
                    raise DependencyError(f"{reason}; pip was stopped. Run the install again: what pip "
                                          "finished is kept, the rest is installed then.")
            code = process.wait()
        finally:
            if process.poll() is None:
                process.kill()
    if code != 0:
        raise DependencyError("pip failed (exit code {}):\n{}".format(code, "\n".join(tail)))


def _pump(stream, lines: "queue.Queue[Optional[str]]") -> None:
    """Moves pip's output lines into the queue; None when pip has closed it (or was stopped)."""
    try:
        for line in stream:
            lines.put(line.rstrip())
    except (OSError, ValueError):  # the pipe was closed after Cancel
        pass
    lines.put(None)


def _no_window() -> Dict[str, int]:
    """On Windows, run console programs without flashing a console window over QGIS."""
    return {"creationflags": 0x08000000} if sys.platform == "win32" else {}  # CREATE_NO_WINDOW


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python3 -m core.dependencies specs|constraints|check`: what `make setup` needs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("specs", "constraints", "check"))
    parser.add_argument("--geos", help="QGIS's GEOS version, e.g. 3.11.1")
    parser.add_argument("--gdal", help="QGIS's GDAL version, e.g. 3.6.2")
    parser.add_argument("--optional", action="store_true", help="also the optional packages (Dask)")
    args = parser.parse_args(argv)
    requirements = read_requirements()
    if args.optional:
        requirements += read_requirements(OPTIONAL_REQUIREMENTS_FILE)
    needed = missing(requirements)
    if args.what == "constraints":
        print("\n".join(constraints(exclude=[m.requirement.name for m in needed])))
    elif args.what == "specs":
        versions = {name: version_tuple(text)[:2] for name, text in (("shapely", args.geos), ("rasterio", args.gdal))
                    if text}
        print("\n".join(install_specs(needed, library_versions=versions)))
    elif needed:
        print("Still missing: " + "; ".join(entry.describe() for entry in needed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
