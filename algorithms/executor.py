"""Where the workflows run their acquisitions: in this process (the default) or on Dask. The
parameters, their default from the plugin settings, and the spec core/executor.py takes."""

import sys
import tempfile
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from qgis.core import (
    QgsProcessingException,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsSettings,
)

from ..core import dependencies, executor, pipeline
from ..core.errors import Cancelled, S2MasksError
from .compat import INTEGER

KINDS = executor.KINDS  # in the order of LABELS
LABELS = ("In this process", "Local Dask cluster", "Dask scheduler address")
SETTINGS_KEY = "s2masks/executor"  # a plugin setting: the EXECUTOR default, one of KINDS
ADDRESS_KEY = "s2masks/dask_address"  # a plugin setting: the DASK_ADDRESS default
PEAK_KEY = "s2masks/dask_task_peak_bytes"  # the largest peak memory of one acquisition measured so far


def default_kind() -> int:
    """The EXECUTOR default: the plugin setting s2masks/executor, else 'in this process'."""
    kind = QgsSettings().value(SETTINGS_KEY, executor.IN_PROCESS)
    return KINDS.index(kind) if kind in KINDS else 0


def add_executor_parameters(algorithm) -> None:
    """EXECUTOR, DASK_ADDRESS, DASK_WORKERS and DASK_RETRIES, all advanced."""
    algorithm.add(QgsProcessingParameterEnum("EXECUTOR", algorithm.tr("Run the acquisitions"),
                                             options=[algorithm.tr(label) for label in LABELS],
                                             defaultValue=default_kind()),
                  "In this process (default): one acquisition after another. Local Dask cluster: several "
                  "acquisitions at once in worker processes of this machine, as many as its cores and memory "
                  "allow (the log says how many). Dask scheduler address: on a cluster your team runs; the "
                  "workers need the plugin's Python packages and must see the output folder at the same path. "
                  "Each worker reads, stacks, computes the probabilities and merges one acquisition, writes it "
                  "to the output folder and sends back only its statistics; a failed acquisition is retried, "
                  "then listed, and the others are kept. Needs the optional package 'distributed' (Install "
                  "dependencies, 'Also install Dask'). The default comes from the plugin setting "
                  f"{SETTINGS_KEY} (process, local or scheduler).", advanced=True)
    algorithm.add(QgsProcessingParameterString("DASK_ADDRESS", algorithm.tr("Dask scheduler address"),
                                               defaultValue=QgsSettings().value(ADDRESS_KEY, ""), optional=True),
                  "For 'Dask scheduler address': e.g. tcp://10.0.0.5:8786 (a scheduler started with "
                  f"'dask scheduler'). The default comes from the plugin setting {ADDRESS_KEY}.", advanced=True)
    algorithm.add(QgsProcessingParameterNumber("DASK_WORKERS", algorithm.tr("Local Dask workers (0 = automatic)"),
                                               INTEGER, defaultValue=0, minValue=0),
                  "For 'Local Dask cluster': how many worker processes, one acquisition each at a time. 0 "
                  "chooses from the cores and the memory (about 2.5 GB per acquisition).", advanced=True)
    algorithm.add(QgsProcessingParameterNumber("DASK_RETRIES", algorithm.tr("Retries of a failed acquisition"),
                                               INTEGER, defaultValue=2, minValue=0, maxValue=10),
                  "On Dask: how many more times an acquisition that failed (network, a lost worker) is tried "
                  "before it is listed as failed.", advanced=True)


def executor_spec(algorithm, parameters, context) -> executor.ExecutorSpec:
    """The ExecutorSpec of the parameters, checked (unusable values name their parameter)."""
    spec = _spec(algorithm, parameters, context)
    problem = spec_problem(algorithm, parameters, context, spec)
    if problem:
        raise QgsProcessingException(f"{problem[0]}: {problem[1]}")
    return spec


def _spec(algorithm, parameters, context):
    index = algorithm.parameterAsEnum(parameters, "EXECUTOR", context) if "EXECUTOR" in parameters \
        else default_kind()
    spec = executor.ExecutorSpec(
        kind=KINDS[index],
        address=algorithm.parameterAsString(parameters, "DASK_ADDRESS", context) or "",
        workers=algorithm.parameterAsInt(parameters, "DASK_WORKERS", context),
        retries=algorithm.parameterAsInt(parameters, "DASK_RETRIES", context),
        task_peak_bytes=measured_peak() or executor.DEFAULT_TASK_PEAK_BYTES,
    )
    return spec


def spec_problem(algorithm, parameters, context, spec=None) -> Optional[Tuple[str, str]]:
    """(parameter, what to do) when the EXECUTOR parameters cannot work, else None."""
    try:
        executor.check_spec(spec or _spec(algorithm, parameters, context))
    except S2MasksError as err:
        name, _, text = str(err).partition(": ")
        return name, text
    return None


def measured_peak() -> int:
    """The peak memory of one acquisition measured in earlier runs (0 before any)."""
    try:
        return int(QgsSettings().value(PEAK_KEY, 0))
    except (TypeError, ValueError):
        return 0


def remember_peak(results: List[Dict], feedback) -> None:
    """Keeps the largest peak memory the workers measured, for sizing the next local cluster."""
    peaks = [result.get("peak_memory", 0) for result in results]
    if peaks and max(peaks):
        feedback.pushInfo(f"Peak memory of one acquisition on its worker: {max(peaks) / 1024 ** 2:.0f} MB.")
        QgsSettings().setValue(PEAK_KEY, max(peaks))


def worker_python() -> str:
    """The Python that starts local workers when QGIS's executable is not one (qgis-bin.exe on Windows)."""
    if Path(sys.executable).name.lower().startswith("python"):
        return ""
    return str(dependencies.find_python())


def code_archive(folder: Path) -> Path:
    """A zip of the plugin's core (and its package __init__) for a remote cluster's workers."""
    plugin_dir = Path(__file__).resolve().parent.parent
    package = __name__.split(".")[0]
    archive = Path(folder) / f"{package}-core.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr(f"{package}/__init__.py", "")  # the workers need core/ only, not the QGIS plugin
        for path in sorted((plugin_dir / "core").rglob("*.py")):
            bundle.write(path, f"{package}/{path.relative_to(plugin_dir).as_posix()}")
    return archive


def run_acquisitions(algorithm, spec: executor.ExecutorSpec, jobs: List[Tuple[str, pipeline.AcquisitionJob]],
                     feedback, on_result: Callable[[Dict], None]) -> List[executor.Outcome]:
    """Runs the jobs on Dask; on_result(result) for each acquisition as it ends, in this thread.
    Returns the failed outcomes (the others were handed to on_result)."""
    with tempfile.TemporaryDirectory(prefix="s2masks-dask-") as work:
        if spec.kind == executor.SCHEDULER:
            spec = replace(spec, upload=(str(code_archive(Path(work))),))
        elif spec.kind == executor.LOCAL_CLUSTER:
            spec = replace(spec, python=algorithm.run_core(worker_python))
        failed, results = [], []

        def done(outcome, finished, total):
            feedback.setProgress(100.0 * finished / total)
            if outcome.ok:
                for line in outcome.result.get("log", ()):
                    feedback.pushInfo(f"{outcome.key}: {line}")
                feedback.pushInfo(algorithm.tr("{} finished ({}/{}).").format(outcome.key, finished, total))
                results.append(outcome.result)
                on_result(outcome.result)
            else:
                failed.append(outcome)
                feedback.reportError(algorithm.tr("{} failed: {}").format(outcome.key, outcome.error))

        try:
            executor.run_tasks(pipeline.process_acquisition, [(name, {"job": job}) for name, job in jobs], spec,
                               on_done=done, should_cancel=feedback.isCanceled, log=feedback.pushInfo)
        except Cancelled as err:
            raise QgsProcessingException(algorithm.tr("Cancelled; the acquisitions finished so far are kept.")) \
                from err
        except S2MasksError as err:
            raise QgsProcessingException(str(err)) from err
        finally:
            remember_peak(results, feedback)
    return failed
