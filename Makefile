# Two commands do everything on a fresh Debian 12 machine: `make demo` and `make test`.
# Both run `setup` first, which is idempotent.

SHELL := /bin/bash
PLUGIN := s2masks
VENV := .venv
PY := $(VENV)/bin/python
SETUP_STAMP := $(VENV)/.setup-complete
APT_PACKAGES := qgis python3-qgis qgis-providers python3-rasterio python3-pyproj python3-venv python3-pip python3-dev \
	libgeos-dev build-essential xvfb xauth
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Files that make up the installable plugin (tests, bench and tooling stay out of the zip).
PLUGIN_FILES := metadata.txt __init__.py plugin.py algorithms core models resources LICENSE README.md
QGIS_PROFILE ?= default
QGIS_PLUGINS_DIR ?= $(HOME)/.local/share/QGIS/QGIS3/profiles/$(QGIS_PROFILE)/python/plugins
export QT_QPA_PLATFORM := offscreen

.PHONY: setup test demo package deploy clean

setup: $(SETUP_STAMP)

$(SETUP_STAMP): requirements.txt Makefile
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages: $$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	[ -x $(PY) ] || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

test: setup
	$(PY) -m pytest

demo: setup
	$(PY) tests/demo.py

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
	rm -rf .build dist demo-output .pytest_cache
