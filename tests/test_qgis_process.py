"""The plugin through /usr/bin/qgis_process.bin, as a batch user runs it, in a throwaway
profile. (Debian's /usr/bin/qgis_process wrapper is broken on 3.22; the .bin is the tool.)"""

import subprocess

import pytest
from qgis.core import QgsVectorLayer

QGIS_PROCESS = "/usr/bin/qgis_process.bin"
pytestmark = pytest.mark.qgis_process


def qgis_process(env, *args, check=True):
    result = subprocess.run([QGIS_PROCESS, *args], env=env, capture_output=True, text=True, timeout=180)
    if check and result.returncode != 0:
        raise AssertionError(f"qgis_process {args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture
def enabled_env(enabled_qgis_process_env):
    return enabled_qgis_process_env


def test_list_shows_the_provider_and_algorithms(enabled_env):
    output = qgis_process(enabled_env, "list").stdout
    assert "Sentinel-2 improved masks" in output
    assert "s2masks:listsentinel2products\tList Sentinel-2 products" in output
    assert "s2masks:selectnecessarycoverageitems\tSelect necessary coverage items" in output


def test_help_describes_every_parameter(enabled_env):
    output = qgis_process(enabled_env, "help", "s2masks:listsentinel2products").stdout
    for name in ("EXTENT", "AREA", "START_DATE", "END_DATE", "MAX_CLOUD_COVER", "TIMEOUT", "STAC_URL", "PC_KEY"):
        assert f"({name}):" in output


def test_run_list_and_select(enabled_env, pc_double, tmp_path):
    footprints = tmp_path / "footprints.gpkg"
    listed = qgis_process(enabled_env, "run", "s2masks:listsentinel2products", "--",
                          "EXTENT=93.254,95.073,80.933,82.313 [EPSG:4326]", "START_DATE=2024-04-01",
                          "END_DATE=2024-04-30", f"STAC_URL={pc_double.url}", f"OUTPUT={footprints}")
    assert "COUNT:\t3" in listed.stdout
    layer = QgsVectorLayer(str(footprints))
    assert sorted(f["mgrs_tile"] for f in layer.getFeatures()) == ["46XER", "46XES", "47XML"]
    del layer

    selected = tmp_path / "selected.gpkg"
    result = qgis_process(enabled_env, "run", "s2masks:selectnecessarycoverageitems", "--",
                          f"FOOTPRINTS={footprints}", "EXTENT=93.254,95.073,80.933,82.313 [EPSG:4326]",
                          "MIN_TILE_COVER=0.99", f"OUTPUT={selected}")
    assert "ACQUISITIONS:\t1" in result.stdout
    layer = QgsVectorLayer(str(selected))
    assert sorted(f["mgrs_tile"] for f in layer.getFeatures()) == ["46XES", "47XML"]
    del layer


def test_bad_input_fails_with_the_reason(enabled_env, pc_double, tmp_path):
    target = tmp_path / "out.gpkg"
    result = qgis_process(enabled_env, "run", "s2masks:listsentinel2products", "--",
                          "EXTENT=93,95,81,82 [EPSG:4326]", "START_DATE=2024-04-30", "END_DATE=2024-04-01",
                          f"STAC_URL={pc_double.url}", f"OUTPUT={target}", check=False)
    assert result.returncode != 0
    assert "The end date 2024-04-01 is before the start date 2024-04-30" in result.stdout + result.stderr
    assert not target.exists()


def test_packaged_zip_loads_in_qgis(qgis_process_env, tmp_path):
    """The zip of `make package`, unpacked as QGIS's installer does, is a working plugin."""
    import zipfile

    from conftest import REPO

    subprocess.run(["make", "-s", "package"], cwd=REPO, check=True, capture_output=True, timeout=120)
    plugins = tmp_path / "plugins"
    with zipfile.ZipFile(REPO / "dist" / "s2masks.zip") as archive:
        archive.extractall(plugins)
    env = dict(qgis_process_env, QGIS_PLUGINPATH=str(plugins), QGIS_CUSTOM_CONFIG_PATH=str(tmp_path / "profile"))
    qgis_process(env, "plugins", "enable", "s2masks")
    assert "s2masks:selectnecessarycoverageitems" in qgis_process(env, "list").stdout


def test_run_preprocess_writes_and_reports_rasters_and_masks(enabled_env, pc_double, tmp_path):
    result = qgis_process(enabled_env, "run", "s2masks:preprocesss2", "--",
                          "EXTENT=-8.74,-8.62,53.09,53.16 [EPSG:4326]", "START_DATE=2022-10-01",
                          "END_DATE=2022-10-10", f"STAC_URL={pc_double.url}", f"CACHE_FOLDER={tmp_path / 'cache'}",
                          f"OUTPUT_FOLDER={tmp_path / 'out'}", f"FOOTPRINTS={tmp_path / 'selected.gpkg'}")
    raster = tmp_path / "out" / "S2A_20221005T115411_R023.tif"
    mask = tmp_path / "out" / "S2A_20221005T115411_R023_mask.tif"
    assert raster.exists() and mask.exists()
    assert str(raster) in result.stdout and str(mask) in result.stdout
    assert "COUNT:\t1" in result.stdout


def test_check_dependencies_finds_shapely_and_rasterio_agree_with_qgis(enabled_env):
    """Inside qgis_process, where QGIS's own GEOS and GDAL are loaded: same geometry, same pixels."""
    result = qgis_process(enabled_env, "run", "s2masks:checkdependencies")
    assert "Does shapely give the same geometry as QGIS's GEOS? yes" in result.stdout
    assert "Does a GeoTIFF written by rasterio read back the same in QGIS? yes" in result.stdout
    assert "ukis-csmask 1." in result.stdout


def test_install_dependencies_with_nothing_missing_installs_nothing(enabled_env):
    result = qgis_process(enabled_env, "run", "s2masks:installdependencies")
    assert "nothing to install" in result.stdout
    profile = enabled_env["QGIS_CUSTOM_CONFIG_PATH"]
    assert f"FOLDER:\t{profile}/profiles/default/python/dependencies/s2masks/python3." in result.stdout
