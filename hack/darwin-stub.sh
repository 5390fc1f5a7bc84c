#!/usr/bin/env bash
# hack/darwin-stub.sh WORKDIR: prepares what lets Linux type-check cowork's
# macOS code, for make check-darwin and make lint (staticcheck for darwin).
#
#  - WORKDIR/vzstub: tools/vzstub, built;
#  - WORKDIR/vz: a stub of the vz version go.mod pins (bodies dropped, cgo
#    gone), checked to build for darwin/arm64 with CGO_ENABLED=0;
#  - WORKDIR/go.mod, go.sum: copies of the project's with one replace, vz by
#    the stub, to select with -modfile=WORKDIR/go.mod (GOFLAGS or a build
#    flag). Not a go.work: workspace mode builds its module graph differently
#    (while cowork linked gRPC it tripped over an ambiguous import,
#    genproto/googleapis/rpc/status, also in gvisor's old genproto, that a
#    normal build never saw); -modfile keeps the exact module graph of
#    `go build` on a Mac, with only vz swapped.
#
# Prints the real vz's source directory on stdout; exits non-zero with the
# reason on stderr. Environment: GO (go command).
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
[ $# = 1 ] || { echo "usage: $0 WORKDIR" >&2; exit 2; }

VZ_MODULE=github.com/Code-Hex/vz/v3
VZ_VERSION=v3.7.1 # must match go.mod; bump both together

fail() { printf 'darwin-stub: %s\n' "$*" >&2; exit 1; }

have=$(GOWORK=off "$GO" list -m -f '{{.Version}}' "$VZ_MODULE" 2>/dev/null) ||
	fail "go.mod does not require $VZ_MODULE; run: go get $VZ_MODULE@$VZ_VERSION"
[ "$have" = "$VZ_VERSION" ] ||
	fail "go.mod requires $VZ_MODULE $have, this check is for $VZ_VERSION; update VZ_VERSION in $0 after reviewing the new API"

mkdir -p "$1"
work=$(cd "$1" && pwd)
stub=$work/vz

GOWORK=off "$GO" build -o "$work/vzstub" ./tools/vzstub
src=$("$work/vzstub" locate -module "$VZ_MODULE")
"$work/vzstub" generate -src "$src" -out "$stub" >&2
(cd "$stub" && GOWORK=off GOOS=darwin GOARCH=arm64 CGO_ENABLED=0 "$GO" build ./...) ||
	fail "the stub of $VZ_MODULE does not build for darwin/arm64"

cp go.mod "$work/go.mod"
cp go.sum "$work/go.sum"
GOWORK=off "$GO" mod edit -modfile="$work/go.mod" -replace="$VZ_MODULE@$VZ_VERSION=$stub"
resolved=$(GOWORK=off GOFLAGS="-modfile=$work/go.mod" "$GO" list -m -f '{{with .Replace}}{{.Path}}{{end}}' "$VZ_MODULE")
[ "$resolved" = "$stub" ] || fail "the alternate go.mod resolves $VZ_MODULE to '$resolved', not the stub"
echo "$src"
