"""`make package` writes a zip that QGIS's "Install from ZIP" accepts: one top folder, the plugin."""

import subprocess
import zipfile

from conftest import REPO


def test_package_zip_has_one_plugin_folder(tmp_path):
    subprocess.run(["make", "-s", "package"], cwd=REPO, check=True, capture_output=True, timeout=120)
    with zipfile.ZipFile(REPO / "dist" / "s2masks.zip") as archive:
        names = archive.namelist()
    assert {name.split("/")[0] for name in names} == {"s2masks"}
    for required in ("metadata.txt", "__init__.py", "plugin.py", "algorithms/provider.py", "core/search.py",
                     "requirements.txt", "core/dependencies.py", "algorithms/install_dependencies.py",
                     "resources/icon.svg", "LICENSE"):
        assert f"s2masks/{required}" in names
    assert not any(name.startswith("s2masks/tests/") or "__pycache__" in name for name in names)
