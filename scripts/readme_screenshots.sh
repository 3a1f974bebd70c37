#!/usr/bin/env bash
# Refresh the README's screenshots from the browser test suite (one command, from anywhere):
#
#   bash scripts/readme_screenshots.sh
#
# It runs the browser tests of notebooks 03 (routing-iterations slider), 06 (coupling explorer)
# and 07 (capsule-dimension sliders) in a private JupyterLab driven by headless Chromium
# (tests/browser/, needs Debian's chromium), with CAPSNET_SCREENSHOTS pointing at a temporary
# folder, and keeps each notebook's "after the slider moved" screenshot under a stable name:
#
#   docs/screenshots/routing_slider.png      03_dynamic_routing_after.png
#   docs/screenshots/coupling_explorer.png   06_coupling_coefficients_after.png
#   docs/screenshots/dimension_sliders.png   07_capsule_dimensions_after.png
#   docs/screenshots/site_scrubber.png       site_scrubber.png (the static site, tests/browser/test_static_site.py)
#
# CI=true makes a missing Chromium a failure rather than a skip, so this never "succeeds" without
# taking the pictures. Takes 2-3 minutes on a 2-core CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
shots=$(mktemp -d)
trap 'rm -rf "$shots"' EXIT

CI=true CAPSNET_SCREENSHOTS="$shots" "$python" -m pytest tests/browser -m browser -p no:cacheprovider \
  -k "03_dynamic_routing or 06_coupling_coefficients or 07_capsule_dimensions or scrubber"

mkdir -p docs/screenshots
cp "$shots/03_dynamic_routing_after.png" docs/screenshots/routing_slider.png
cp "$shots/06_coupling_coefficients_after.png" docs/screenshots/coupling_explorer.png
cp "$shots/07_capsule_dimensions_after.png" docs/screenshots/dimension_sliders.png
cp "$shots/site_scrubber.png" docs/screenshots/site_scrubber.png
ls -l docs/screenshots/routing_slider.png docs/screenshots/coupling_explorer.png docs/screenshots/dimension_sliders.png docs/screenshots/site_scrubber.png
