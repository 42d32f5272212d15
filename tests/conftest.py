"""Shared fixtures: the plugin under its stable package name, the loopback Planetary
Computer double, and a throwaway QGIS profile for qgis_process."""

import json
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
DATA = TESTS / "data"
PLUGIN_NAME = "s2masks"
# A folder holding one entry, s2masks -> the checkout, whatever the checkout is called.
PLUGIN_PATH = REPO / ".build" / "plugins"


def _link_plugin():
    PLUGIN_PATH.mkdir(parents=True, exist_ok=True)
    link = PLUGIN_PATH / PLUGIN_NAME
    if not (link.is_symlink() and link.resolve() == REPO):
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(REPO, target_is_directory=True)


_link_plugin()
sys.path.insert(0, str(PLUGIN_PATH))
sys.path.insert(0, str(TESTS))

from pc_server import PlanetaryComputerDouble  # noqa: E402


@pytest.fixture
def progress_log():
    """A QgsProcessingFeedback that keeps the progress texts an algorithm sets (each a line of
    QGIS's log) in `texts` and its progress values in `values`."""
    from qgis.core import QgsProcessingFeedback

    class ProgressLog(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.texts, self.values = [], []
            self.progressChanged.connect(self.values.append)

        def setProgressText(self, text):  # noqa: N802
            self.texts.append(text)

    return ProgressLog()


@pytest.fixture
def pc_double():
    with PlanetaryComputerDouble() as double:
        yield double


@pytest.fixture
def pc_double_without_collection():
    with PlanetaryComputerDouble(serve_collection=False) as double:
        yield double


@pytest.fixture
def stacked(pc_double, tmp_path):
    """The real T29UNU fixture scene stacked over an 8 km area: a StackResult (raster, mask)."""
    from shapely.geometry import box
    from stack_helpers import fixture_item

    from s2masks.core import grid, records, stack

    item = records.parse_item(fixture_item(pc_double))
    area = box(-8.74, 53.09, -8.62, 53.16)
    return stack.stack_acquisition([item], area, grid.output_grid(area), tmp_path / "s2.tif", tmp_path / "m.tif",
                                   stack.StackOptions(cache_dir=tmp_path / "cache"))


@pytest.fixture(scope="session")
def items_2024():
    """The four real items of one pass on 2024-04-19, in two UTM zones (46X, 47X)."""
    return json.loads((DATA / "stac" / "pc_items_2024-04_baseline05.10_x4.json").read_text())


def polygon(west, south, east, north):
    return {"type": "Polygon",
            "coordinates": [[[west, south], [east, south], [east, north], [west, north], [west, south]]]}


@pytest.fixture
def s2masks_provider(qgis_processing):
    """The plugin loaded as QGIS loads it (classFactory with iface=None), then unloaded."""
    import s2masks

    plugin = s2masks.classFactory(None)
    plugin.initProcessing()
    yield plugin.provider
    plugin.unload()


@pytest.fixture(scope="session")
def qgis_process_env(tmp_path_factory):
    """Environment for /usr/bin/qgis_process.bin: throwaway profile, plugin enabled,
    and this venv's packages visible to QGIS's Python."""
    import site

    profile = tmp_path_factory.mktemp("qgis-profile")
    env = dict(os.environ)
    env.update(
        QGIS_CUSTOM_CONFIG_PATH=str(profile),
        QGIS_PLUGINPATH=str(PLUGIN_PATH),
        QT_QPA_PLATFORM="offscreen",
        PYTHONPATH=os.pathsep.join(site.getsitepackages() + [env.get("PYTHONPATH", "")]).strip(os.pathsep),
    )
    return env


@pytest.fixture(scope="session")
def enabled_qgis_process_env(qgis_process_env):
    """The throwaway profile with the plugin enabled (once: enabling twice is an error)."""
    import subprocess

    result = subprocess.run(["/usr/bin/qgis_process.bin", "plugins", "enable", "s2masks"], env=qgis_process_env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return qgis_process_env


@pytest.fixture
def loading_project(qgis_processing, monkeypatch):
    """QgsProject.instance(), empty, for runAndLoadResults. QGIS 3.44's Processing hands loaded
    results to iface.layerTreeView(); pytest-qgis's iface is a mock, so results go straight to the
    project's layer tree instead, as they do when QGIS has no window. Layers are removed at the end
    (QGIS crashes at exit with layers left over)."""
    from processing.gui import Postprocessing
    from qgis.core import QgsProject

    monkeypatch.setattr(Postprocessing, "iface", None, raising=False)
    project = QgsProject.instance()
    project.clear()
    yield project
    project.removeAllMapLayers()
    project.clear()
