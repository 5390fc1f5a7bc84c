#!/usr/bin/env bash
# make bench: the agent channel against local fork+exec and ssh, then (as
# root, with the e2e guest) boot and exec through a real guest against ssh
# into the same guest. Prints one table.
set -euo pipefail
cd "$(dirname "$0")/.."
./hack/deps.sh openssh-server openssh-client qemu-utils
if [ "$(id -u)" = 0 ]; then
	ARCH=${E2E_ARCH:-arm64}
	out=$(./hack/e2e-image.sh "bin/cowork-agent-linux-$ARCH")
	get() { printf '%s\n' "$out" | sed -n "s/^$1=//p" | tail -1; }
	export COWORK_E2E_ARCH=$ARCH COWORK_E2E_KERNEL=$(get kernel) COWORK_E2E_INITRD=$(get initrd) \
		COWORK_E2E_DISK=$(get disk) COWORK_E2E_CMDLINE=$(get cmdline) COWORK_E2E_SSH_KEY=$(get ssh_key) \
		COWORK_E2E_CLOUD_DISK=$(get cloud_disk)
fi
exec go run ./tools/bench "$@"
