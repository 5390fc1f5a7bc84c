#!/usr/bin/env bash
# make e2e: builds (or reuses) the test guest, then drives bin/cowork against
# real guests under QEMU. Extra arguments go to `go test` (e.g. -run Lifecycle).
set -euo pipefail
cd "$(dirname "$0")/.."
ARCH=${E2E_ARCH:-arm64}
out=$(./hack/e2e-image.sh "bin/cowork-agent-linux-$ARCH")
get() { printf '%s\n' "$out" | sed -n "s/^$1=//p" | tail -1; }
export COWORK_E2E_BIN=$PWD/bin/cowork
export COWORK_E2E_ARCH=$ARCH
export COWORK_E2E_KERNEL=$(get kernel)
export COWORK_E2E_INITRD=$(get initrd)
export COWORK_E2E_DISK=$(get disk)
export COWORK_E2E_CMDLINE=$(get cmdline)
export COWORK_E2E_SSH_KEY=$(get ssh_key)
export COWORK_E2E_CLOUD_DISK=$(get cloud_disk)
# The whole suite also saves and restores the guest with its memory through
# the QEMU backend itself (hostd/qemu), which needs this guest too.
if [ $# -eq 0 ]; then
	go test -count=1 -timeout 10m -v -run '^TestSaveAndRestoreTheGuest$' ./hostd/qemu/
fi
exec go test -tags e2e -count=1 -timeout 30m -v "$@" ./e2e/
