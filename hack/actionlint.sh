#!/usr/bin/env bash
# make lint's actionlint: the version tools/lint/go.mod pins, over
# .github/workflows. It runs shellcheck on the workflows' scripts when
# shellcheck is on PATH.
#
# Environment: GO (go command). The binary goes next to the Go build
# cache, one folder per checkout, as hack/staticcheck.sh's.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
export GOWORK=off
cache=$("$GO" env GOCACHE)
case "$cache" in
/*) base=$(dirname "$cache") ;;
*) base=${TMPDIR:-/tmp} ;;
esac
work=$base/cowork-lint/$(printf '%s' "$PWD" | cksum | cut -d ' ' -f 1)
mkdir -p "$work"
GOOS= GOARCH= "$GO" -C tools/lint build -o "$work/actionlint" github.com/rhysd/actionlint/cmd/actionlint
shopt -s nullglob
files=(.github/workflows/*.yml .github/workflows/*.yaml)
[ ${#files[@]} -gt 0 ] || { echo "actionlint: no workflow in .github/workflows" >&2; exit 0; }
"$work/actionlint" -version | head -n 1 >&2
"$work/actionlint" "${files[@]}" ||
	{ echo "actionlint: fix the findings above (https://github.com/rhysd/actionlint/blob/main/docs/checks.md says why each matters)" >&2; exit 1; }
