#!/usr/bin/env bash
# The README's first command: cowork's main job, end to end, on a fresh
# Debian or Ubuntu machine, with nothing from the internet but Debian's apt,
# the Go module proxy and npm (no cloud image):
#
#   1. installs what it needs from apt (sudo when not root): make and
#      ca-certificates here; QEMU, virtiofsd, ipxe-qemu, debootstrap, npm and
#      the rest in hack/e2e-image.sh;
#   2. builds bin/cowork and the small test guest for this machine's
#      architecture (KVM where /dev/kvm works; no qemu-user needed);
#   3. creates and starts the instance (or starts the one that exists),
#      runs `uname -a` in it and prints where to go next.
#
# It needs Go (https://go.dev/doc/install) and, as a normal user, sudo: the
# guest is built with debootstrap and chroot. cowork itself then runs as
# you. Run again, it reuses what it built (the guest is cached in
# $COWORK_E2E_CACHE, default ~/.cache/cowork-e2e, rebuilt only when its
# inputs change) and the instance it made. .ci/run proves this script on a
# fresh Debian 12 root, as root and as a user (hack/fresh-root.sh).
#
# Env: COWORK_TRY_NAME (instance, default sandbox), E2E_ARCH (amd64 | arm64,
# default this machine's), COWORK_HOME, COWORK_E2E_CACHE.
set -euo pipefail
cd "$(dirname "$0")/.."

start=$SECONDS
b="" o=""
[ -t 2 ] && b=$'\033[1m' o=$'\033[0m'
say() { printf '%s==> [%ds] %s%s\n' "$b" $((SECONDS - start)) "$*" "$o" >&2; }
die() { printf 'try: %s\n' "$*" >&2; exit 1; }

[ "$(uname -s)" = Linux ] || die "this script is for Linux; on a Mac see \"On a Mac\" in README.md"
command -v apt-get >/dev/null 2>&1 || die "this script installs from apt (Debian, Ubuntu); elsewhere install QEMU, virtiofsd and debootstrap and follow README.md"

sudo=()
if [ "$(id -u)" != 0 ]; then
	command -v sudo >/dev/null 2>&1 || die "run it as root, or install sudo (apt-get install sudo) and add yourself to the sudo group"
	sudo=(sudo)
fi

# Go: on PATH, or where go.dev's instructions put it (a new login shell has
# it on PATH; this one may not yet).
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
	export PATH="/usr/local/go/bin:$PATH"
fi
command -v go >/dev/null 2>&1 || die "cowork is built with Go $(sed -n 's/^go //p' go.mod) or newer: install it from https://go.dev/doc/install, then run this again"

case "$(uname -m)" in
x86_64) host_arch=amd64 ;;
aarch64) host_arch=arm64 ;;
*) die "no test guest for $(uname -m): cowork runs arm64 and amd64 guests" ;;
esac
arch=${E2E_ARCH:-$host_arch}
name=${COWORK_TRY_NAME:-sandbox}
cache=${COWORK_E2E_CACHE:-$HOME/.cache/cowork-e2e}

# make builds cowork; Go's downloads need the CA certificates (a minimal
# Debian has neither).
say "installing make and ca-certificates (when missing)"
./hack/deps.sh make ca-certificates

say "building bin/cowork"
make --no-print-directory bin/cowork

# The guest is made as root (debootstrap, chroot, mkfs.ext4 -d keeps root's
# files root's); as a user it still goes into your cache, where cowork, running
# as you, reads it. sudo may reset HOME and PATH, hence the explicit values.
say "building the test guest ($arch; a few minutes the first time)"
mkdir -p "$cache"
out=$("${sudo[@]}" env COWORK_E2E_CACHE="$cache" E2E_ARCH="$arch" ./hack/e2e-image.sh "bin/cowork-agent-linux-$arch")
get() { printf '%s\n' "$out" | sed -n "s/^$1=//p" | tail -1; }
kernel=$(get kernel) initrd=$(get initrd) disk=$(get disk) cmdline=$(get cmdline)
# Readable by the user whatever root's umask was.
"${sudo[@]}" chmod a+r "$kernel" "$initrd" "$disk"
"${sudo[@]}" chmod a+rx "$cache" "$cache/$arch"

cowork=$PWD/bin/cowork
home=${COWORK_HOME:-$HOME/.cowork}
if [ -f "$home/$name/config.json" ]; then
	say "starting the existing instance $name"
	"$cowork" start --name "$name"
else
	if [ "$arch" = "$host_arch" ] && [ -e /dev/kvm ] && ! [ -w /dev/kvm ]; then
		say "note: /dev/kvm is not yours, so the guest runs emulated (slow); for KVM: sudo adduser $(id -un) kvm, then log in again"
	fi
	say "creating the instance $name (1 GiB, 2 CPUs; the workspace is ~/cowork-workspace)"
	"$cowork" init --name "$name" --arch "$arch" --cpus 2 --memory 1GiB --disk 4GiB \
		--image "$disk" --kernel "$kernel" --initrd "$initrd" --cmdline "$cmdline"
fi

say "cowork exec uname -a"
"$cowork" exec --name "$name" uname -a

# The instance goes before the subcommand: after `ask`, --name is Claude
# Code's own flag.
c="./bin/cowork"
[ "$name" = sandbox ] || c="./bin/cowork --name $name"
next() { printf '  %s\n      %s\n' "$1" "$2"; }
echo
echo "[$((SECONDS - start))s] cowork works: the instance \"$name\" runs a small Debian test guest. Next:"
next "$c shell" "a shell in the guest, in /workspace (your ~/cowork-workspace)"
next "$c exec ls -la /workspace" "any command"
next "$c ask \"write hello.py\"" "Claude Code in the guest; set ANTHROPIC_API_KEY (it stays on this machine)"
next "$c status; $c proxy" "its state; its network log"
next "$c stop; $c delete" "stop it; remove it (the workspace is kept)"
next "make test" "the tests (README.md's second command)"
echo "For Ubuntu with the toolchain and Claude Code: \"Ubuntu, and your own images\" in README.md."
