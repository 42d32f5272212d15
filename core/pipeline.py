"""One acquisition, start to end: read and stack -> cloud and shadow probabilities -> improved mask.

The unit of work a Dask worker runs (core/executor.py). It takes plain, picklable values (STAC item
dicts, the area as GeoJSON, the options of each step), writes its files straight into the output
folder under the same names as the in-process workflow (each file atomically), and returns only
their paths and the statistics row. The SAS token is fetched inside the task, so a long run never
uses one token for hours.
"""

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from . import cloudmask, geometry, inference, records, report, stack
from .grid import Grid


@dataclass(frozen=True)
class AcquisitionJob:
    """Everything one acquisition needs; every field pickles."""

    items: List[Dict]  # STAC item dicts of the acquisition's tiles
    area_geojson: Dict  # the area in WGS 84
    grid: Grid
    folder: str  # the output folder (shared by the workers and the user)
    stack_options: stack.StackOptions
    cards: Dict  # {"cloud": ModelCard, "shadow": ModelCard}
    inference_options: inference.InferenceOptions
    merge_options: cloudmask.MergeOptions
    write_classes: bool = True


def output_paths(folder: str, name: str) -> Dict[str, Path]:
    """The files of one acquisition, named as the in-process workflow names them."""
    stem = Path(folder) / name
    return {"raster": Path(f"{stem}.tif"), "product_mask": Path(f"{stem}_mask.tif"),
            "cloud": Path(f"{stem}_cloud.tif"), "shadow": Path(f"{stem}_shadow.tif"),
            "mask": Path(f"{stem}_improved_mask.tif"), "classes": Path(f"{stem}_classes.tif")}


def process_acquisition(job: AcquisitionJob, log_lines: Optional[List[str]] = None) -> Dict:
    """Stacks, classifies and merges one acquisition; returns its paths and statistics."""
    lines = log_lines if log_lines is not None else []
    items = [records.parse_item(item) for item in job.items]
    area = geometry.area_from_geojson(job.area_geojson)
    name = stack.acquisition_name(items)
    paths = output_paths(job.folder, name)
    stacked = stack.stack_acquisition(items, area, job.grid, paths["raster"], paths["product_mask"],
                                      job.stack_options)
    inference.compute_probabilities(str(stacked.raster), job.cards,
                                    {target: paths[target] for target in job.cards}, job.inference_options,
                                    log=lines.append)
    statistics = cloudmask.merge_cloud_masks(str(stacked.mask), str(paths["cloud"]), str(paths["shadow"]),
                                             paths["mask"], paths["classes"] if job.write_classes else None,
                                             job.merge_options, log=lines.append)
    return {"name": name, "paths": {key: str(path) for key, path in paths.items()},
            "valid_fraction": stacked.valid_fraction, "statistics": statistics.as_row(),
            "provenance": report.provenance(str(stacked.raster)), "log": lines,
            "peak_memory": peak_memory_bytes()}


def peak_memory_bytes() -> int:
    """The largest resident memory this process has had so far, in bytes (0 when unknown)."""
    try:
        import resource
    except ImportError:  # Windows: the peak working set
        import psutil

        return int(getattr(psutil.Process().memory_info(), "peak_wset", 0))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux
