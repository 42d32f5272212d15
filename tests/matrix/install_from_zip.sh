#!/bin/sh
# Runs inside a bare Debian QGIS (no pip packages, no venv), as a user would: the plugin zip goes
# into a new profile, `Install dependencies` installs what it needs with QGIS's own pip, `Check
# dependencies` checks shapely and rasterio against QGIS's GEOS and GDAL, and `Improve cloud mask`
# runs on a stack of the test scene. Then it lists every file the run added outside the profile
# and the outputs: there must be none (temporary files in /tmp are listed, not counted).
set -eu
work=${1:?usage: $0 WORK_FOLDER (holding s2masks.zip, s2.tif, s2_mask.tif)}
profile=$work/profile
plugins=$profile/profiles/default/python/plugins
rm -rf "$profile" "$work/out" && mkdir -p "$plugins" "$work/out"
export QGIS_CUSTOM_CONFIG_PATH="$profile" QT_QPA_PLATFORM=offscreen HOME=/root
export TMPDIR="$work"  # for sort
snapshot() { find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path "$work" \) -prune \
               -o -print 2>/dev/null | sort; }
# What QGIS itself writes on any start (its caches, Qt's runtime folder) is there before the snapshot.
QGIS_CUSTOM_CONFIG_PATH="$work/warm-up" qgis_process --version > /dev/null
QGIS_CUSTOM_CONFIG_PATH="$work/warm-up" qgis_process list > /dev/null
snapshot > "$work/before.txt"

python3 -m zipfile -e "$work/s2masks.zip" "$plugins"
for module in pystac_client planetary_computer shapely rasterio onnxruntime ukis_csmask; do
  if python3 -c "import $module" 2>/dev/null; then echo "$module is already importable: not a bare QGIS"; exit 1; fi
done
qgis_process plugins enable s2masks
qgis_process list | grep 's2masks:'
qgis_process run s2masks:installdependencies
qgis_process run s2masks:checkdependencies
qgis_process run s2masks:improvecloudmask -- INPUT="$work/s2.tif" PRODUCT_MASK="$work/s2_mask.tif" \
  OUTPUT="$work/out/improved_mask.tif" OUTPUT_CLASSES="$work/out/classes.tif" \
  CLOUD_OUTPUT="$work/out/cloud.tif" SHADOW_OUTPUT="$work/out/shadow.tif"
ls -l "$work/out"

snapshot > "$work/after.txt"
added=$(comm -13 "$work/before.txt" "$work/after.txt")
echo "Files added outside the profile and the outputs, except /tmp: $(echo "$added" | grep -v '^/tmp' | grep -c . || true)"
echo "$added" | grep -v '^/tmp' || true
echo "Left in /tmp: $(echo "$added" | grep '^/tmp' | grep -c . || true)"
echo "$added" | grep '^/tmp' | head -20 || true
[ -z "$(echo "$added" | grep -v '^/tmp')" ]
echo "Size of the plugin's packages in the profile:"
du -sh "$profile/profiles/default/python/dependencies"
