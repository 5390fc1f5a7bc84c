#!/bin/sh
# Writes docs/dashboard.png: the dashboard at 1280x800 in headless
# Chromium, over a synthetic log (dashboard/screenshot_test.go).
set -eu
cd "$(dirname "$0")/.."
./hack/deps.sh chromium
COWORK_DASHBOARD_SCREENSHOT="$PWD/docs/dashboard.png" ${GO:-go} test -count=1 -run '^TestScreenshot$' ./dashboard/
