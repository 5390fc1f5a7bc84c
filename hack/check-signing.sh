#!/bin/sh
# check-signing: prove, on any OS, that cowork's darwin binary can be signed
# ad hoc with entitlements.plist and then carries
# com.apple.security.virtualization, without which Virtualization.framework
# will not start a VM. On macOS `make` runs codesign; CI on Linux has none, so
# this signs with tools/sign (quill, in its own module) and checks the result
# with tools/machosig, an independent standard-library verifier.
#
# usage: hack/check-signing.sh [DARWIN-BINARY...]
# Without arguments it builds a tiny darwin/arm64 program; with them it signs
# and verifies a copy of each binary given (e.g. a cross-built bin/cowork).
set -eu
cd "$(dirname "$0")/.."
GO=${GO:-go}
root=$PWD
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

GOWORK=off GOOS= GOARCH= "$GO" -C tools/sign build -o "$tmp/sign" .
GOOS= GOARCH= "$GO" build -o "$tmp/machosig" ./tools/machosig

if [ $# -eq 0 ]; then
	CGO_ENABLED=0 GOOS=darwin GOARCH=arm64 "$GO" build -o "$tmp/hello" ./tools/machosig/testdata/hello
	echo "PASS built a darwin/arm64 test binary"
	# Negative control: the Go linker's own ad-hoc signature has no
	# entitlements, so the verifier must reject it, or it proves nothing.
	if "$tmp/machosig" "$tmp/hello" >"$tmp/unsigned.log" 2>&1; then
		cat "$tmp/unsigned.log"
		echo "FAIL machosig accepted a binary without the virtualization entitlement" >&2
		exit 1
	fi
	echo "PASS machosig rejects the binary before it is signed with entitlements.plist"
	set -- "$tmp/hello"
fi

i=0
for bin in "$@"; do
	i=$((i + 1))
	# A folder per binary keeps its name, which becomes the signing identifier.
	mkdir "$tmp/$i"
	copy="$tmp/$i/$(basename "$bin")"
	cp "$bin" "$copy"
	"$tmp/sign" -entitlements "$root/entitlements.plist" "$copy"
	echo "PASS signed $(basename "$bin") ad hoc with entitlements.plist"
	if ! "$tmp/machosig" "$copy"; then
		echo "FAIL signature of $(basename "$bin") does not verify" >&2
		exit 1
	fi
	echo "PASS $(basename "$bin"): every page hash, the entitlements slot and com.apple.security.virtualization=true verify"
done
