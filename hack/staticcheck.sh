#!/usr/bin/env bash
# make lint's staticcheck: the version tools/lint/go.mod pins, over every
# package of the project,
#  - for linux, with the e2e tests (build tag e2e), and
#  - for darwin/arm64, the macOS code type-checked against the stub of vz
#    that hack/darwin-stub.sh makes (as make check-darwin does),
# in one run whose findings are merged: a finding in either build counts,
# except "unused" (U1000), which counts only when the code is unused in
# both (a helper only the darwin files call is not dead code). Then every
# nested module with Go code (tools/sign), for the host.
#
# staticcheck is built from its own module (tools/lint) rather than a tool
# directive in go.mod: its dependencies stay exactly those of its release
# and none of them enter cowork's module graph.
#
# Environment: GO (go command). Work files (the staticcheck binary, the
# stub) go next to the Go build cache, one folder per checkout so that two
# checkouts linting at once do not rewrite each other's stub; not in bin/,
# whose fresh stub sources would make make rebuild bin/cowork.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
export GO GOWORK=off
cache=$("$GO" env GOCACHE)
case "$cache" in
/*) base=$(dirname "$cache") ;;
*) base=${TMPDIR:-/tmp} ;;
esac
work=$base/cowork-lint/$(printf '%s' "$PWD" | cksum | cut -d ' ' -f 1)
mkdir -p "$work"

GOOS= GOARCH= "$GO" -C tools/lint build -o "$work/staticcheck" honnef.co/go/tools/cmd/staticcheck
"$work/staticcheck" -version >&2

./hack/darwin-stub.sh "$work/darwin" >/dev/null ||
	{ echo "staticcheck: could not prepare the vz stub for the darwin build (see above)" >&2; exit 1; }

# -matrix takes build flags, not GOFLAGS: go/packages probes the Go version
# in GOPATH mode, where a -modfile in GOFLAGS is an error.
# Every part runs, so one run lists every finding.
status=0
printf '%s\n' \
	'linux: GOOS=linux -tags=e2e' \
	"darwin: GOOS=darwin GOARCH=arm64 CGO_ENABLED=0 \"-modfile=$work/darwin/go.mod\"" |
	"$work/staticcheck" -matrix ./... || status=1

# Nested modules, but not test data (tools/vzstub/testdata/fakevz) nor
# build output.
for mod in $(find . -name go.mod -not -path ./go.mod -not -path './.git/*' -not -path './bin/*' -not -path '*/testdata/*' | sort); do
	dir=$(dirname "${mod#./}")
	[ -n "$(find "$dir" -name '*.go' | head -n 1)" ] || continue # tools/lint
	(cd "$dir" && "$work/staticcheck" ./...) | sed "s|^|$dir/|" || status=1
done
[ $status = 0 ] || echo "staticcheck: fix the findings above ($work/staticcheck -explain CHECK says why each matters)" >&2
exit $status
