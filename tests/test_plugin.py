"""The plugin as QGIS loads it: classFactory(None), provider, algorithms, help, and
a clear message when an optional package is missing."""

import sys

import pytest
from qgis.core import QgsApplication, QgsProcessingException

import s2masks

ALGORITHM_IDS = {"s2masks:listsentinel2products", "s2masks:selectnecessarycoverageitems",
                 "s2masks:downloadstacksentinel2", "s2masks:mergesentinel2orbits", "s2masks:preprocesss2",
                 "s2masks:computecloudprob", "s2masks:computeshadowprob", "s2masks:computecloudshadowprob",
                 "s2masks:mergecloudmaskssimple", "s2masks:improvecloudmask", "s2masks:preprocesss2improvedmasks",
                 "s2masks:installdependencies", "s2masks:checkdependencies",
                 "s2masks:preprocesss2improvedmaskssteps"}  # the model shipped in resources/models


def test_class_factory_accepts_no_iface(qgis_processing):
    plugin = s2masks.classFactory(None)
    registry = QgsApplication.processingRegistry()
    plugin.initProcessing()
    try:
        provider = registry.providerById("s2masks")
        assert provider is not None and provider.name() == "Sentinel-2 improved masks"
        assert {alg.id() for alg in provider.algorithms()} == ALGORITHM_IDS
    finally:
        plugin.unload()
    assert registry.providerById("s2masks") is None


def test_init_gui_registers_the_provider_once(qgis_processing, qgis_iface):
    plugin = s2masks.classFactory(qgis_iface)
    plugin.initProcessing()
    plugin.initGui()
    try:
        providers = [p for p in QgsApplication.processingRegistry().providers() if p.id() == "s2masks"]
        assert len(providers) == 1
    finally:
        plugin.unload()


def test_help_lists_every_parameter(s2masks_provider):
    for algorithm in s2masks_provider.algorithms():
        help_text = algorithm.shortHelpString()
        assert "FarmVibes op" in help_text or "FarmVibes workflow" in help_text or algorithm.group() == "5 Setup"
        for parameter in algorithm.parameterDefinitions():
            assert f"({parameter.name()})" in help_text, (algorithm.id(), parameter.name())
        assert algorithm.displayName()[0].isupper() and "_" not in algorithm.displayName()
        assert not algorithm.icon().isNull()


def test_missing_package_is_named_with_install_command(s2masks_provider, monkeypatch):
    import processing

    # Simulate a QGIS whose Python lacks pystac-client: importing it fails.
    for name in [m for m in sys.modules if m.startswith("s2masks.core.search") or m.startswith("pystac_client")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "pystac_client", None)
    with pytest.raises(QgsProcessingException) as error:
        processing.run("s2masks:listsentinel2products", {
            "EXTENT": "10,11,50,51 [EPSG:4326]", "START_DATE": "2024-04-01", "END_DATE": "2024-04-30",
            "OUTPUT": "memory:"})
    message = str(error.value)
    assert "pystac-client" in message and "pip install" in message
    # the provider is still there
    assert QgsApplication.processingRegistry().algorithmById("s2masks:selectnecessarycoverageitems")


def test_metadata_is_complete():
    from configparser import ConfigParser

    from conftest import REPO

    parser = ConfigParser()
    parser.read(REPO / "metadata.txt", encoding="utf-8")
    general = parser["general"]
    for key in ("name", "description", "about", "version", "qgisMinimumVersion", "author", "email",
                "repository", "tracker", "homepage", "hasProcessingProvider", "tags", "license"):
        assert general.get(key), key
    assert general["qgisMinimumVersion"] == "3.22"
    assert general["hasProcessingProvider"] == "yes"


def test_shapely_with_another_geos_is_refused(s2masks_provider, monkeypatch, pc_double):
    import processing
    import shapely

    monkeypatch.setattr(shapely, "geos_version", (3, 99, 0))
    with pytest.raises(QgsProcessingException, match=r"uses GEOS 3.99.0 but QGIS uses GEOS .*--no-binary shapely"):
        processing.run("s2masks:listsentinel2products", {
            "EXTENT": "10,11,50,51 [EPSG:4326]", "START_DATE": "2024-04-01", "END_DATE": "2024-04-30",
            "STAC_URL": pc_double.url, "OUTPUT": "memory:"})
    assert pc_double.requests == []


def test_every_algorithm_links_to_its_readme_section(s2masks_provider):
    import re

    from conftest import REPO

    anchors = {"".join(c for c in line[4:].strip().lower() if c.isalnum() or c in " -").replace(" ", "-")
               for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines() if line.startswith("### ")}
    for algorithm in s2masks_provider.algorithms():
        url = algorithm.helpUrl()
        assert re.match(r"^https://github\.com/[^#]+#[a-z0-9-]+$", url), url
        assert url.split("#")[1] in anchors, (algorithm.id(), url)


def test_missing_packages_are_all_named_before_anything_runs(s2masks_provider, monkeypatch, pc_double, tmp_path):
    import processing

    from s2masks.algorithms import base, packages
    from s2masks.core.dependencies import Missing, Requirement

    needed = [Missing(Requirement("onnxruntime", "1.16"), None), Missing(Requirement("shapely", "2.0"), "1.8.5")]
    monkeypatch.setattr(packages, "missing", lambda: needed)
    monkeypatch.setattr(base, "_all_packages_present", False)
    target = tmp_path / "out"
    with pytest.raises(QgsProcessingException) as error:
        processing.run("s2masks:preprocesss2", {
            "EXTENT": "-8.74,-8.62,53.09,53.16 [EPSG:4326]", "START_DATE": "2022-10-01", "END_DATE": "2022-10-10",
            "STAC_URL": pc_double.url, "OUTPUT_FOLDER": str(target), "FOOTPRINTS": "memory:"})
    message = str(error.value)
    assert "onnxruntime 1.16 or newer (not installed, about 29 MB)" in message
    assert "shapely 2.0 or newer (1.8.5 installed" in message
    assert "Install dependencies" in message and "qgis_process run s2masks:installdependencies" in message
    assert pc_double.requests == [] and not target.exists()
    # the installer and the check still run without the packages
    assert not QgsApplication.processingRegistry().algorithmById("s2masks:installdependencies").NEEDS_PACKAGES


def test_plugin_load_puts_the_profile_packages_first_on_sys_path(qgis_processing, monkeypatch):
    import importlib

    from s2masks.algorithms import packages

    prefix = packages.profile_prefix()
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    site = prefix / "lib" / version / "site-packages"
    site.mkdir(parents=True, exist_ok=True)
    (site / "s2masks_profile_probe.py").write_text("WHERE = 'profile'\n")
    monkeypatch.setattr(sys, "path", list(sys.path))
    try:
        plugin = s2masks.classFactory(None)
        assert sys.path[0] == str(site)
        assert importlib.import_module("s2masks_profile_probe").WHERE == "profile"
        plugin.unload()
    finally:
        sys.modules.pop("s2masks_profile_probe", None)
        (site / "s2masks_profile_probe.py").unlink()
