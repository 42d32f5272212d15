"""core/dependencies.py: the requirement list, what is missing, the pins that keep QGIS's own
packages, where QGIS's Python lives on each system, and a real pip install into a profile."""

import base64
import hashlib
import importlib
import sys
import zipfile
from pathlib import Path

import pytest

from s2masks.core import dependencies
from s2masks.core.dependencies import DependencyError, Missing, Requirement


def test_requirements_file_lists_every_package_the_core_imports():
    names = {r.name for r in dependencies.read_requirements()}
    assert names == {"numpy", "pystac-client", "shapely", "rasterio", "pyproj", "scipy",
                     "onnxruntime", "ukis-csmask"}
    assert all(dependencies.version_tuple(r.minimum) for r in dependencies.read_requirements())


def test_a_bad_requirement_line_is_refused(tmp_path):
    bad = tmp_path / "requirements.txt"
    bad.write_text("shapely==2.0\n")
    with pytest.raises(DependencyError, match="name>=version"):
        dependencies.read_requirements(bad)


@pytest.mark.parametrize("text, expected", [("2.0.7", (2, 0, 7)), ("1.8.5rc1", (1, 8, 5)), ("3.11.1-CAPI-1.17.1", (3, 11, 1)),
                                            ("1.24.2+dfsg", (1, 24, 2)), ("0.0.0", (0, 0, 0))])
def test_version_tuple(text, expected):
    assert dependencies.version_tuple(text) == expected


def test_missing_names_absent_and_too_old_packages():
    import numpy

    needed = dependencies.missing([Requirement("numpy", "1.0"), Requirement("numpy", "999.0"),
                                   Requirement("no-such-package-s2masks", "1.0")])
    assert [(m.requirement.minimum, m.installed) for m in needed] == [("999.0", numpy.__version__),
                                                                        ("1.0", None)]
    assert needed[1].describe() == "no-such-package-s2masks 1.0 or newer (not installed)"
    assert "about 145 MB" in Missing(Requirement("ukis-csmask", "1.0"), None).describe()


def test_specs_pick_the_wheel_series_of_qgis_geos_and_gdal_on_linux_only():
    needed = [Missing(Requirement("shapely", "2.0"), "1.8.5"), Missing(Requirement("rasterio", "1.3"), None),
              Missing(Requirement("scipy", "1.8"), None)]
    versions = {"shapely": (3, 11), "rasterio": (3, 10)}
    assert dependencies.install_specs(needed, "linux", versions) == ["shapely>=2.0,<2.1", "rasterio==1.4.4",
                                                                     "scipy>=1.8"]
    assert dependencies.install_specs(needed, "win32", versions) == ["shapely>=2.0", "rasterio>=1.3", "scipy>=1.8"]
    assert dependencies.install_specs(needed, "darwin", versions)[0] == "shapely>=2.0"
    # a GEOS with no matching wheel: the plain requirement (the GEOS check then says what to do)
    assert dependencies.install_specs(needed[:1], "linux", {"shapely": (3, 12)}) == ["shapely>=2.0"]


def test_numpy_is_never_installed_by_the_plugin():
    with pytest.raises(DependencyError, match="comes with QGIS"):
        dependencies.install_specs([Missing(Requirement("numpy", "1.21"), "1.19.5")], "linux", {})


def test_constraints_pin_compiled_packages_and_leave_pure_python_ones_free():
    import numpy

    pins = dependencies.constraints()
    assert f"numpy=={numpy.__version__}" in pins
    assert any(pin.startswith("shapely==") for pin in pins)  # compiled
    assert not any(pin.startswith(("requests==", "pystac-client==")) for pin in pins)  # pure Python
    assert not any(pin.startswith("shapely==") for pin in dependencies.constraints(exclude=["Shapely"]))


def test_prefix_is_per_profile_and_python_version(tmp_path):
    assert dependencies.prefix_for(tmp_path, (3, 12)) == tmp_path / "python" / "dependencies" / "s2masks" / "python3.12"


@pytest.mark.parametrize("layout", [("lib", "python3.12", "site-packages"), ("Lib", "site-packages"),
                                    ("local", "lib", "python3.12", "dist-packages")])
def test_site_dirs_find_every_layout_pip_uses(tmp_path, layout):
    folder = tmp_path.joinpath(*layout)
    folder.mkdir(parents=True)
    assert dependencies.site_dirs(tmp_path, (3, 12)) == [folder]


def test_python_candidates_on_windows_osgeo4w_and_standalone():
    prefix = r"C:\OSGeo4W\apps\Python312"
    found = dependencies.python_candidates("win32", prefix, r"C:\OSGeo4W\bin\qgis-bin.exe", (3, 12))
    assert found[:2] == [Path(prefix, "python.exe"), Path(prefix, "python3.exe")]
    assert Path(r"C:\OSGeo4W\bin\qgis-bin.exe").parent / "python3.exe" in found
    assert not any(p.name.startswith("qgis") for p in found)  # sys.executable is QGIS itself there


def test_python_candidates_on_macos_qgis_app():
    found = dependencies.python_candidates("darwin", "/Applications/QGIS.app/Contents/Frameworks",
                                           "/Applications/QGIS.app/Contents/MacOS/QGIS", (3, 12))
    assert Path("/Applications/QGIS.app/Contents/Frameworks/bin/python3.12") == found[0]
    assert Path("/Applications/QGIS.app/Contents/MacOS/bin/python3") in found


def test_python_candidates_on_linux():
    assert dependencies.python_candidates("linux", "/usr", "/usr/bin/qgis", (3, 13)) == [
        Path("/usr/bin/python3.13"), Path("/usr/bin/python3")]
    assert dependencies.python_candidates("linux", "/usr", "/usr/bin/python3.13", (3, 13))[0] == Path("/usr/bin/python3.13")


def test_find_python_takes_the_first_of_the_same_version(tmp_path):
    here = Path(sys.executable)
    assert dependencies.find_python([tmp_path / "missing", here]) == here
    with pytest.raises(DependencyError, match="Could not find the Python 2.7"):
        dependencies.find_python([here], version=(2, 7))


def test_no_pip_message_gives_a_command_per_system():
    assert "sudo apt install python3-pip" in dependencies.no_pip_message(Path("/usr/bin/python3"), "linux")
    assert "flatpak run" in dependencies.no_pip_message(Path("/app/bin/python3"), "linux")
    assert "OSGeo4W Shell" in dependencies.no_pip_message(Path(r"C:\OSGeo4W\apps\Python312\python.exe"), "win32")


def _wheel(folder, name, version, requires=()):
    """A minimal pure-Python wheel, so pip runs for real without the internet."""
    dist_info = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": f"VERSION = {version!r}\n",
             f"{dist_info}/METADATA": "Metadata-Version: 2.1\nName: {}\nVersion: {}\n{}".format(
                 name, version, "".join(f"Requires-Dist: {r}\n" for r in requires)),
             f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: s2masks-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{dist_info}/RECORD"] = "\n".join(record + [f"{dist_info}/RECORD,,"]) + "\n"
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name_in_zip, text in files.items():
            archive.writestr(name_in_zip, text)
    return path


def test_real_pip_install_into_a_profile_prefix(tmp_path, monkeypatch):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "s2masks_probe", "1.2", requires=["numpy>=1"])  # numpy: satisfied by QGIS's, not installed
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    monkeypatch.setattr(sys, "path", list(sys.path))
    prefix = dependencies.prefix_for(tmp_path / "profile")
    lines = []
    dependencies.install(["s2masks-probe>=1.0"], prefix, Path(sys.executable), log=lines.append)

    assert lines[0].startswith(f"$ {sys.executable} -m pip install --prefix {prefix}")
    assert any(line.endswith("s2masks-probe==1.2 --no-deps --ignore-installed") for line in lines), lines
    assert any("Successfully installed s2masks-probe-1.2" in line for line in lines), lines
    [site] = dependencies.site_dirs(prefix)
    assert str(site) == sys.path[0]  # activated, first
    assert importlib.import_module("s2masks_probe").VERSION == "1.2"
    assert not (site / "numpy").exists()  # QGIS's numpy is kept, not installed again
    assert not list(prefix.glob(".pip-*"))  # pip's temporary files were inside the prefix and are gone
    sys.modules.pop("s2masks_probe", None)


def test_pip_failure_and_cancel_are_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    monkeypatch.setattr(sys, "path", list(sys.path))
    prefix = tmp_path / "prefix"
    with pytest.raises(DependencyError, match=r"pip failed \(exit code 1\)"):
        dependencies.install(["no-such-package-s2masks"], prefix, Path(sys.executable), log=lambda line: None)
    with pytest.raises(DependencyError, match="Cancelled"):
        dependencies.install(["no-such-package-s2masks"], prefix, Path(sys.executable), log=lambda line: None,
                             cancelled=lambda: True)
    assert not list(prefix.glob(".pip-*"))


def test_a_distribution_built_without_its_version_counts_as_installed(monkeypatch):
    """Debian unstable's python3-shapely 2.2 says '0+unknown': replacing it with a wheel would bring
    a second GEOS into QGIS."""
    monkeypatch.setattr(dependencies, "installed_version", lambda name: "0+unknown")
    assert dependencies.missing([Requirement("shapely", "2.0")]) == []
    monkeypatch.setattr(dependencies, "installed_version", lambda name: "0.9")
    assert len(dependencies.missing([Requirement("shapely", "2.0")])) == 1


def test_a_newer_copy_of_a_distribution_package_goes_into_the_prefix(tmp_path, monkeypatch):
    """A package the distribution installed has no RECORD; pip 25 refuses to uninstall it. The
    installer never asks pip to: the newer copy goes into the prefix and wins on sys.path."""
    system = tmp_path / "dist-packages"
    (system / "s2masks_probe").mkdir(parents=True)
    (system / "s2masks_probe" / "__init__.py").write_text("VERSION = '1.0'\n")
    (system / "s2masks_probe-1.0.dist-info").mkdir()
    (system / "s2masks_probe-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: s2masks-probe\nVersion: 1.0\n")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "s2masks_probe", "1.2")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    monkeypatch.setattr(sys, "path", [str(system)] + sys.path)
    prefix = tmp_path / "prefix"
    dependencies.install(["s2masks-probe>=1.2"], prefix, Path(sys.executable), log=lambda line: None)
    assert (system / "s2masks_probe" / "__init__.py").exists()  # the system's copy is untouched
    assert importlib.import_module("s2masks_probe").VERSION == "1.2"
    sys.modules.pop("s2masks_probe", None)
