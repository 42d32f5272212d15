"""The workflow over several acquisitions on Dask gives, file for file and pixel for pixel, what the
in-process run gives: on a local cluster, and on a scheduler + worker started as separate processes
(the worker gets the plugin's core by upload, as a team's cluster would)."""

from pathlib import Path

import numpy as np
import pytest
import rasterio

pytest.importorskip("distributed")

from acquisitions import date_range, dated_copies  # noqa: E402
from dask_tasks import separate_cluster  # noqa: E402

AREA = "-8.74,-8.62,53.09,53.16 [EPSG:4326]"
SUFFIXES = ("", "_mask", "_cloud", "_shadow", "_improved_mask", "_classes")


def run(pc_double, folder, count, **extra):
    from qgis.core import QgsProcessingContext, QgsProcessingFeedback

    import processing

    parameters = dict(date_range(count), EXTENT=AREA, STAC_URL=pc_double.url, CACHE_FOLDER=str(folder / "cache"),
                      OUTPUT_FOLDER=str(folder / "out"), FOOTPRINTS=str(folder / "out" / "used.gpkg"),
                      STATISTICS=str(folder / "out" / "statistics.gpkg"), LOAD_CLASSES=True)
    parameters.update(extra)
    feedback = QgsProcessingFeedback()
    return processing.run("s2masks:preprocesss2improvedmasks", parameters, context=QgsProcessingContext(),
                          feedback=feedback)


def pixels(path):
    with rasterio.open(path) as src:
        return src.read(), src.transform, src.crs, src.tags()


def assert_same_outputs(expected, actual):
    assert [Path(p).name for p in actual["MASKS"]] == [Path(p).name for p in expected["MASKS"]]
    for raster in expected["RASTERS"]:
        stem = Path(raster).stem
        for suffix in SUFFIXES:
            want = pixels(Path(expected["OUTPUT_FOLDER"]) / f"{stem}{suffix}.tif")
            got = pixels(Path(actual["OUTPUT_FOLDER"]) / f"{stem}{suffix}.tif")
            assert np.array_equal(want[0], got[0], equal_nan=True), f"{stem}{suffix}.tif differs"
            assert want[1:3] == got[1:3]
    tables = [(Path(result["OUTPUT_FOLDER"]) / "statistics.csv").read_text().replace(result["OUTPUT_FOLDER"], "OUT")
              for result in (expected, actual)]
    assert tables[0] == tables[1]  # same rows, same order, same figures
    assert actual["COUNT"] == expected["COUNT"]


def test_local_cluster_equals_in_process(s2masks_provider, pc_double, tmp_path):
    dated_copies(pc_double, 3)
    expected = run(pc_double, tmp_path / "process", 3)
    assert expected["COUNT"] == 3
    actual = run(pc_double, tmp_path / "dask", 3, EXECUTOR=1, DASK_WORKERS=2)
    assert_same_outputs(expected, actual)


def test_scheduler_and_worker_started_apart_equal_in_process(s2masks_provider, pc_double, tmp_path):
    dated_copies(pc_double, 2)
    expected = run(pc_double, tmp_path / "process", 2)
    with separate_cluster(tmp_path) as address:  # the worker knows nothing of the plugin: it gets core/ by upload
        actual = run(pc_double, tmp_path / "remote", 2, EXECUTOR=2, DASK_ADDRESS=address)
    assert_same_outputs(expected, actual)
