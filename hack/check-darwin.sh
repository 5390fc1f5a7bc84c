#!/usr/bin/env bash
# make check-darwin: proves on Linux that cowork's macOS code type-checks
# against the exact API of the vz version go.mod pins, without a macOS SDK.
#
#  1. tools/vzstub writes a stub of the pinned vz (bodies dropped, cgo gone);
#     the stub must build for darwin/arm64 with CGO_ENABLED=0.
#  2. A copy of go.mod outside the tree replaces vz with the stub (steps 1
#     and 2: hack/darwin-stub.sh); the whole project is vetted and built for
#     darwin/arm64 with it; the vz users and the commands for darwin/amd64 too
#     (the Intel runner's build).
#  3. Self-test: a known-good program must build and a known-bad one
#     (tools/vzstub/testdata/wrongcall) must be rejected, so a pass means
#     something.
#  4. The stub's exported surface is compared with the real vz source,
#     type-checked with cgo faked, so the stub cannot drift from vz; and
#     TestRealVZ shows that comparison catching a changed signature.
#  5. hack/mac-smoke.sh is syntax-checked (bash -n); it runs only on a Mac.
#  6. hack/check-signing.sh runs last; the check fails if it is missing.
#
# Environment: GO (go command), CHECK_DARWIN_DIR (work directory, default
# $(dirname $(go env GOCACHE))/cowork-check-darwin).
set -euo pipefail
# shellcheck disable=SC2086 # package lists are split into arguments on purpose
cd "$(dirname "$0")/.."
GO=${GO:-go}
export GO

VZ_MODULE=github.com/Code-Hex/vz/v3 # its version is pinned in hack/darwin-stub.sh

start=$(date +%s)
step() { printf '\n== %s\n' "$*" >&2; }
fail() { printf 'check-darwin: FAIL: %s\n' "$*" >&2; exit 1; } # a step the rest needs
problem() { problems+=("$*"); }                                        # recorded, the run goes on
verified=()
problems=()

work=${CHECK_DARWIN_DIR:-}
if [ -z "$work" ]; then
	cache=$(GOWORK=off "$GO" env GOCACHE)
	case "$cache" in
	/*) work=$(dirname "$cache")/cowork-check-darwin ;;
	*) work=${TMPDIR:-/tmp}/cowork-check-darwin ;;
	esac
fi
mkdir -p "$work"
work=$(cd "$work" && pwd)
echo "work directory: $work" >&2

step "the stub of the pinned vz, and an alternate go.mod replacing vz with it"
# hack/darwin-stub.sh says why -modfile and not a go.work.
src=$(./hack/darwin-stub.sh "$work") || fail "hack/darwin-stub.sh could not prepare the stub"
stub=$work/vz
VZ_VERSION=$(GOWORK=off "$GO" list -m -f '{{.Version}}' "$VZ_MODULE") # the pinned one: checked above
verified+=("go.mod requires $VZ_MODULE $VZ_VERSION")
verified+=("the stub of $VZ_MODULE@$VZ_VERSION builds for darwin/arm64 without cgo")
export GOWORK=off GOFLAGS="-modfile=$work/go.mod" GOOS=darwin GOARCH=arm64 CGO_ENABLED=0
echo "GOFLAGS=$GOFLAGS" >&2

step "go vet and go build the packages that use vz, for darwin/arm64"
users=$("$GO" list -e -f '{{range .Imports}}{{if eq . "'"$VZ_MODULE"'"}}{{$.ImportPath}} {{end}}{{end}}' ./...)
if [ -z "$users" ]; then
	echo "warning: no package of the project imports $VZ_MODULE for darwin/arm64 yet" >&2
elif "$GO" vet $users && "$GO" build -o /dev/null $users; then
	verified+=("go vet and go build pass for darwin/arm64 against the vz API: $(echo $users)")
else
	problem "go vet or go build of the packages using vz: $(echo $users)"
fi

step "go vet and go build ./... for darwin/arm64"
# Packages that cannot even be loaded for darwin (a Linux-only import) are
# reported by name; the rest are vetted and built, so one run lists every
# problem rather than the first.
broken=$("$GO" list -e -f '{{if or .Error .DepsErrors}}{{.ImportPath}}{{end}}' ./...)
pkgs=$("$GO" list -e -f '{{if not (or .Error .DepsErrors)}}{{.ImportPath}}{{end}}' ./...)
if [ -n "$broken" ]; then
	"$GO" list -e -f '{{with .Error}}{{.}}{{end}}{{range .DepsErrors}}{{.}}{{end}}' $broken >&2 || true
	problem "these packages do not load for darwin/arm64: $(echo $broken)"
fi
"$GO" vet $pkgs || problem "go vet for darwin/arm64 against the vz stub"
# A folder of tests alone (hack) is vetted, not built.
built=$("$GO" list -e -f '{{if not (or .Error .DepsErrors)}}{{if .GoFiles}}{{.ImportPath}}{{end}}{{end}}' ./...)
"$GO" build -o /dev/null $built || problem "go build for darwin/arm64 against the vz stub"
if [ ${#problems[@]} -eq 0 ]; then
	verified+=("go vet and go build ./... pass for darwin/arm64 ($(echo $pkgs | wc -w) packages)")
fi
# The Intel runner of .github/workflows/macos.yml builds for darwin/amd64,
# where other build tags pick other files (save_arm64_darwin.go's twin).
if GOARCH=amd64 "$GO" vet $users && GOARCH=amd64 "$GO" build -o /dev/null ./cmd/...; then
	verified+=("go vet of the packages using vz and go build ./cmd/... pass for darwin/amd64")
else
	problem "go vet or go build for darwin/amd64 (the Intel runner's) against the vz stub"
fi
cgofiles=$(git ls-files '*.go' | xargs grep -l '^import "C"' 2>/dev/null || true)
[ -z "$cgofiles" ] || echo "warning: these files use cgo and were not type-checked (CGO_ENABLED=0): $cgofiles" >&2

step "self-test: the check rejects wrong vz calls"
if "$GO" build -o /dev/null ./tools/vzstub/testdata/rightcall; then
	if out=$("$GO" build -o /dev/null ./tools/vzstub/testdata/wrongcall 2>&1); then
		problem "the known-bad program tools/vzstub/testdata/wrongcall type-checks against the stub: the check proves nothing"
	else
		missed=0
		for want in 'cannot use 42' 'vm.Boot undefined'; do
			if ! grep -q "$want" <<<"$out"; then
				printf '%s\n' "$out" >&2
				problem "wrongcall was rejected, but not with \"$want\""
				missed=1
			fi
		done
		[ $missed = 1 ] || verified+=("self-test: a correct vz program builds, a wrong one is rejected for both its type errors")
	fi
else
	problem "the known-good program tools/vzstub/testdata/rightcall does not build against the stub"
fi

step "surface comparison with the real vz source"
unset GOFLAGS GOOS GOARCH CGO_ENABLED
if "$work/vzstub" compare -real "$src" -stub "$stub"; then
	verified+=("the stub's exported surface equals the real vz's, type-checked with cgo faked")
else
	problem "the stub's API differs from the real vz"
fi
# TestRealVZ changes a signature in a fresh stub of the real vz and expects
# the comparison to catch it (skipped by plain `go test`: it needs the export
# data the comparison above has just built).
if VZSTUB_REAL=1 "$GO" test -count=1 -run '^TestRealVZ$' ./tools/vzstub; then
	verified+=("the comparison catches a changed vz signature (TestRealVZ)")
else
	problem "TestRealVZ: the surface comparison does not catch drift in vz"
fi

step "hack/mac-smoke.sh parses"
# It only runs on a Mac; here at least its syntax is checked.
if bash -n hack/mac-smoke.sh; then
	verified+=("hack/mac-smoke.sh parses (bash -n)")
else
	problem "hack/mac-smoke.sh has a syntax error"
fi

step "hack/check-signing.sh"
if [ ! -x hack/check-signing.sh ]; then
	problem "hack/check-signing.sh is missing or not executable: the signing check did not run (restore it, or chmod +x it)"
elif ./hack/check-signing.sh; then
	verified+=("hack/check-signing.sh passed")
else
	problem "hack/check-signing.sh"
fi

elapsed=$(($(date +%s) - start))
printf '\nverified:\n' >&2
for v in "${verified[@]}"; do printf '  - %s\n' "$v" >&2; done
if [ ${#problems[@]} -gt 0 ]; then
	printf 'check-darwin: FAIL after %ss:\n' "$elapsed" >&2
	for p in "${problems[@]}"; do printf '  - %s\n' "$p" >&2; done
	exit 1
fi
printf 'check-darwin: OK in %ss\n' "$elapsed" >&2
