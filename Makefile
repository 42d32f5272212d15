# Two commands do everything on a fresh Debian 12, 13 or unstable machine: `make demo` and `make test`.
# Both run `setup` first, which is idempotent.

SHELL := /bin/bash
PLUGIN := s2masks
VENV := .venv
PY := $(VENV)/bin/python
SETUP_STAMP := $(VENV)/.setup-complete
# QGIS, and from Debian the Python packages that share QGIS's own libraries: numpy, GDAL (rasterio),
# PROJ (pyproj), and GEOS (shapely, where Debian's is shapely 2). pip adds the rest, pinned to these.
APT_PACKAGES := qgis python3-qgis qgis-providers python3-numpy python3-scipy python3-rasterio python3-pyproj \
	python3-venv python3-pip xvfb xauth make git
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Files that make up the installable plugin (tests, bench and tooling stay out of the zip).
PLUGIN_FILES := metadata.txt __init__.py plugin.py algorithms core models resources requirements.txt \
	requirements-optional.txt LICENSE README.md
QGIS_PROFILE ?= default
QGIS_PLUGINS_DIR ?= $(HOME)/.local/share/QGIS/QGIS3/profiles/$(QGIS_PROFILE)/python/plugins
# Other Debian QGIS versions `make test-matrix` runs the suite on, each in a cached chroot.
MATRIX_SUITES ?= trixie
export QT_QPA_PLATFORM := offscreen

.PHONY: setup test test-matrix demo screenshots package deploy clean

setup: $(SETUP_STAMP)

$(SETUP_STAMP): requirements.txt requirements-optional.txt requirements-dev.txt Makefile core/dependencies.py
	@packages="$(APT_PACKAGES)"; \
	[ -n "$$(apt-cache policy python3-shapely 2>/dev/null | awk '/Candidate:/ {print $$2}')" ] || $(SUDO) apt-get update -qq; \
	candidate=$$(apt-cache policy python3-shapely | awk '/Candidate:/ {print $$2}'); \
	if dpkg --compare-versions "$${candidate:-0}" ge 2; then packages="$$packages python3-shapely"; fi; \
	missing=$$(for p in $$packages; do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:" $$missing; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing > /dev/null; \
	fi
	[ -x $(PY) ] || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	mkdir -p .build
	/usr/bin/python3 -m core.dependencies constraints --optional > .build/constraints.txt
	/usr/bin/python3 -m core.dependencies specs --optional --geos "$$(/usr/bin/python3 -c 'from qgis.core import Qgis; print(Qgis.geosVersion())')" > .build/specs.txt
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt -r .build/specs.txt -c .build/constraints.txt
	$(PY) -m core.dependencies check --optional
	touch $@

test: setup
	$(PY) -m pytest

# The same suite on the other Debian QGIS versions (MATRIX_SUITES), each in its own cached chroot,
# then the plugin zip and its dependency installer on a bare Debian 13 QGIS.
test-matrix: setup
	for suite in $(MATRIX_SUITES); do bash tests/matrix/debian_chroot.sh $$suite || exit 1; done
	bash tests/matrix/debian_chroot.sh trixie bare

demo: setup
	$(PY) tests/demo.py

# What a user sees (map with its layer tree, the Toolbox, every dialog) as PNGs in demo-output/screenshots/.
screenshots: setup
	QT_QPA_PLATFORM= xvfb-run -a -s "-screen 0 1400x1000x24" $(PY) tests/screenshots.py

package:
	rm -rf dist/$(PLUGIN) dist/$(PLUGIN).zip && mkdir -p dist/$(PLUGIN)
	cp -r $(PLUGIN_FILES) dist/$(PLUGIN)/
	find dist/$(PLUGIN) -name __pycache__ -prune -exec rm -rf {} +
	cd dist && python3 -m zipfile -c $(PLUGIN).zip $(PLUGIN)
	rm -rf dist/$(PLUGIN)
	@echo "Wrote dist/$(PLUGIN).zip (QGIS: Plugins > Manage and Install Plugins > Install from ZIP)"

deploy: package
	mkdir -p "$(QGIS_PLUGINS_DIR)"
	rm -rf "$(QGIS_PLUGINS_DIR)/$(PLUGIN)"
	cd "$(QGIS_PLUGINS_DIR)" && python3 -m zipfile -e "$(CURDIR)/dist/$(PLUGIN).zip" .
	@echo "Installed into $(QGIS_PLUGINS_DIR)/$(PLUGIN); enable it in QGIS's plugin manager."

clean:
	rm -rf .build dist demo-output .pytest_cache .qgis-settings
