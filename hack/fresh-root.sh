#!/usr/bin/env bash
# Proves the README's first command (hack/try.sh) on a fresh Debian 12: a
# root made by debootstrap, where try.sh must install everything it needs
# itself, so that a missing install step fails CI rather than a newcomer.
#
#   hack/fresh-root.sh [root] [user]      (default: both, side by side)
#
# root: try.sh as root. user: as "newcomer", a normal user with sudo (the
# only thing set up by hand, as an admin would: the sudo package and a
# sudoers line; NOPASSWD because CI cannot type a password). Each mode gets
# its own copy of the fresh root, so the user run installs everything too.
# In each, try.sh runs twice (the second time finds the instance made by
# the first), then the instance is deleted.
#
# Not a container (there is no Docker engine on CI machines): a private
# mount namespace and pivot_root into the debootstrap tree, sharing the
# host's kernel, network, /dev (with /dev/kvm) and binfmt_misc. pivot_root,
# not chroot: the kernel refuses a user namespace to a chrooted process,
# and cowork's virtiofsd jail (hostd/fsjail) needs one.
#
# What is shared with the host, to stay within CI's time (the packages are
# all installed inside, from apt and npm, every run):
#   - /usr/local/go, read-only: the Go the README asks for;
#   - download caches in $COWORK_FRESH_CACHE (default
#     ~/.cache/cowork-fresh-root): debootstrap's .deb files, and per mode
#     apt's .deb files and npm's cache (the modes run side by side);
#   - Go's module and build caches: this machine's own (go env GOMODCACHE,
#     GOCACHE) for root, the user's own in $COWORK_FRESH_CACHE/user (files
#     must be theirs); both are keyed by content, never trusted by name;
#   - the test guest: $COWORK_E2E_CACHE/ARCH (default ~/.cache/cowork-e2e),
#     whose stages e2e-image.sh rebuilds only when their inputs change.
#
# Env: E2E_ARCH (the guest's, default this machine's), COWORK_MIRROR (Debian
# mirror), FRESH_ROOT_KEEP=1 keeps the roots, FRESH_ROOT_TEST=1 also runs
# the README's second command (make test) after the first.
# Needs root, and runs on a Debian-like host (debootstrap from apt).
set -euo pipefail

SUITE=bookworm
MIRROR=${COWORK_MIRROR:-http://deb.debian.org/debian}
USER_NAME=newcomer

log() { printf '[fresh-root %(%T)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# unmount_under unmounts every mount at or below a directory, deepest first.
unmount_under() {
	awk -v d="$1" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
		umount -l "$m" 2>/dev/null || true
	done
}

# ------------------------------------------------------------------ inside
# `fresh-root.sh --inside ROOT MODE HOME` runs in the private mount
# namespace (unshare below): mounts, pivots into ROOT, runs try.sh as the
# mode's user. Every mount here dies with the namespace.
inside() {
	local R=$1 mode=$2 home=$3
	mount --make-rprivate /
	mount --bind "$R" "$R" # pivot_root needs a mount point
	mount --bind -o ro "$GOROOT_HOST" "$R/usr/local/go"
	mount --bind "$FRESH_CACHE/$mode/apt" "$R/var/cache/apt/archives"
	# npm runs under sudo (HOME=/root) in the user mode too.
	mount --bind "$FRESH_CACHE/$mode/npm" "$R/root/.npm"
	mount --bind "$GOMOD" "$R$home/go/pkg/mod"
	mount --bind "$GOBUILD" "$R$home/.cache/go-build"
	mount --bind "$GUEST_CACHE" "$R$home/.cache/cowork-e2e/$ARCH"
	mount -t proc proc "$R/proc"
	mount --rbind /sys "$R/sys"
	mount --rbind /dev "$R/dev"
	mount -t tmpfs -o mode=755 tmpfs "$R/run"
	readlink /proc/self/ns/mnt >"$R.ns"
	cd "$R"
	mkdir -p .oldroot
	pivot_root . .oldroot
	umount -l /.oldroot
	rmdir /.oldroot
	cd /
	local who=root
	[ "$mode" = root ] || who=$USER_NAME
	# su -l: a login shell with a clean environment, as after logging in.
	# The guest's architecture is the one whose cache is shared.
	exec su -l "$who" -c "export E2E_ARCH=$ARCH FRESH_ROOT_TEST=${FRESH_ROOT_TEST:-}; "'set -e
		cd ~/cowork
		echo "+ ./hack/try.sh"; ./hack/try.sh
		echo "+ ./hack/try.sh   (again: the instance exists)"; ./hack/try.sh
		./bin/cowork delete --yes --force
		if [ "$FRESH_ROOT_TEST" = 1 ]; then echo "+ make test"; make test; fi'
}

if [ "${1:-}" = --inside ]; then
	shift
	inside "$@"
fi

# ------------------------------------------------------------------ host
SELF=$(readlink -f "$0")
cd "$(dirname "$SELF")/.."
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, mounts)"
modes=("$@")
[ ${#modes[@]} -gt 0 ] || modes=(root user)
for m in "${modes[@]}"; do
	case "$m" in root | user) ;; *) die "mode $m: want root or user" ;; esac
done

export PATH="/usr/local/go/bin:$PATH"
GOROOT_HOST=$(go env GOROOT) || die "no Go on this machine (the README's requirement)"
# The guest try.sh builds: E2E_ARCH (CI passes the e2e suite's, so the
# guest it built is reused), or this machine's.
case "$(uname -m)" in x86_64) ARCH=amd64 ;; aarch64) ARCH=arm64 ;; *) die "$(uname -m)?" ;; esac
ARCH=${E2E_ARCH:-$ARCH}
FRESH_CACHE=${COWORK_FRESH_CACHE:-$HOME/.cache/cowork-fresh-root}
GUEST_CACHE=${COWORK_E2E_CACHE:-$HOME/.cache/cowork-e2e}/$ARCH
export GOROOT_HOST ARCH GUEST_CACHE FRESH_CACHE
mkdir -p "$GUEST_CACHE"
for m in "${modes[@]}"; do mkdir -p "$FRESH_CACHE/$m/apt/partial" "$FRESH_CACHE/$m/npm"; done
./hack/deps.sh debootstrap

W=$(mktemp -d "${TMPDIR:-/var/tmp}/cowork-fresh-root.XXXXXX")
# cleanup: kill what is left in the roots' namespaces (a hostd, QEMU: by pid,
# found by their mount namespace), which takes the mounts with them; then
# remove the roots.
cleanup() {
	local ns p
	for f in "$W"/*.ns; do
		[ -f "$f" ] || continue
		ns=$(cat "$f")
		for p in /proc/[0-9]*; do
			[ "$(readlink "$p/ns/mnt" 2>/dev/null)" = "$ns" ] && kill -KILL "${p#/proc/}" 2>/dev/null
		done
	done
	unmount_under "$W"
	if [ "${FRESH_ROOT_KEEP:-}" = 1 ]; then log "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The source as a newcomer's clone has it: tracked and new files and the
# .git they came with, no build output (bin/ and the embedded agents are
# ignored). With git in the root too (a clone needs it), the build stamps
# the same commit as here, so the agent built there is this one, byte for
# byte, and the test guest it goes into is reused, not rebuilt under the
# e2e suite running beside it.
git ls-files -z -co --exclude-standard | tar --null -T - -cf "$W/src.tar"
tar -rf "$W/src.tar" .git

t0=$SECONDS
mkdir -p "$FRESH_CACHE/debootstrap"
log "debootstrap $SUITE (Debian 12's required and important packages, and git)"
debootstrap --cache-dir="$FRESH_CACHE/debootstrap" --include=git "$SUITE" "$W/base" "$MIRROR" >"$W/debootstrap.log" 2>&1 || {
	tail -30 "$W/debootstrap.log"
	die "debootstrap failed"
}
# What Debian's installer writes: the release, its updates and security.
rm -f "$W/base/etc/apt/sources.list"
cat >"$W/base/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${MIRROR%/debian}/debian-security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
cp /etc/resolv.conf "$W/base/etc/resolv.conf"
# As the installer leaves them: the machine's name resolves (sudo asks).
hostname >"$W/base/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n' "$(hostname)" >"$W/base/etc/hosts"
# The network's trust, not a package: where HTTPS goes through an
# intercepting proxy, its CA is among the host's local certificates, and
# the root trusts it as a machine on that network would. ca-certificates
# (installed by try.sh) adds them to the system bundle Go reads; npm reads
# its own list unless told.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
	mkdir -p "$W/base/usr/local/share/ca-certificates"
	cp /usr/local/share/ca-certificates/*.crt "$W/base/usr/local/share/ca-certificates/"
	echo "cafile=/etc/ssl/certs/ca-certificates.crt" >"$W/base/etc/npmrc"
fi
# go.dev/doc/install: "Add /usr/local/go/bin to the PATH".
echo 'export PATH=$PATH:/usr/local/go/bin' >>"$W/base/etc/profile"
mkdir -p "$W/base/usr/local/go"
log "base root ready in $((SECONDS - t0))s"

# prepare MODE: the mode's copy of the root, its user, the source and the
# mount points of its caches. Prints the user's home.
prepare() {
	local mode=$1 R=$W/$1 home=/root owner=0:0
	cp -a "$W/base" "$R"
	if [ "$mode" = user ]; then
		home=/home/$USER_NAME
		chroot "$R" sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sudo >/dev/null" >&2
		chroot "$R" useradd -m -s /bin/bash -G sudo "$USER_NAME"
		echo "$USER_NAME ALL=(ALL) NOPASSWD:ALL" >"$R/etc/sudoers.d/$USER_NAME"
		chmod 440 "$R/etc/sudoers.d/$USER_NAME"
		owner=$(chroot "$R" id -u "$USER_NAME"):$(chroot "$R" id -g "$USER_NAME")
		rm -f "$R"/var/cache/apt/archives/*.deb
	fi
	mkdir -p "$R$home/cowork"
	tar -xf "$W/src.tar" -C "$R$home/cowork"
	mkdir -p "$R$home/go/pkg/mod" "$R$home/.cache/go-build" "$R$home/.cache/cowork-e2e/$ARCH" "$R/root/.npm"
	chown -R "$owner" "$R$home/cowork" "$R$home/go" "$R$home/.cache"
	if [ "$mode" = user ]; then
		mkdir -p "$FRESH_CACHE/user/gomod" "$FRESH_CACHE/user/go-build"
		chown "$owner" "$FRESH_CACHE/user/gomod" "$FRESH_CACHE/user/go-build"
	fi
	echo "$home"
}

# run_mode MODE: try.sh in the mode's fresh root; its output goes to
# $W/MODE.log, which is printed when it fails.
run_mode() {
	local mode=$1 t=$SECONDS home
	home=$(prepare "$mode")
	if [ "$mode" = root ]; then
		GOMOD=$(go env GOMODCACHE) GOBUILD=$(go env GOCACHE)
	else
		GOMOD=$FRESH_CACHE/user/gomod GOBUILD=$FRESH_CACHE/user/go-build
	fi
	mkdir -p "$GOMOD" "$GOBUILD"
	log "$mode: ./hack/try.sh in a fresh root (log: $W/$mode.log)"
	if GOMOD=$GOMOD GOBUILD=$GOBUILD unshare --mount --propagation private \
		"$SELF" --inside "$W/$mode" "$mode" "$home" >"$W/$mode.log" 2>&1; then
		log "$mode: PASS in $((SECONDS - t))s"
	else
		cat "$W/$mode.log" >&2
		log "$mode: FAIL after $((SECONDS - t))s"
		return 1
	fi
}

# The modes run side by side (each has its own root, apt and npm caches;
# the guest's cache is locked by e2e-image.sh): in CI they wait for the
# guest that the e2e suite builds at the same time.
# yield_cpu keeps the roots' processes at the back of the queue for the
# CPU. nice alone does not: they run in sessions of their own (su -l, and
# cowork's hostd with its QEMU), and the kernel's autogroups share the CPU
# between sessions, each as one, whatever their processes' nice. So every
# 2 s each of their sessions is set to nice 19 (/proc/PID/autogroup).
yield_cpu() {
	local f ns
	[ -r /proc/self/autogroup ] || return 0
	while :; do
		for f in "$W"/*.ns; do
			[ -f "$f" ] || continue
			ns=$(cat "$f")
			# One ls for all: "... /proc/PID/ns/mnt -> mnt:[ID]".
			ls -l /proc/[0-9]*/ns/mnt 2>/dev/null | awk -v ns="$ns" '$NF == ns { split($(NF-2), a, "/"); print a[3] }' |
				while read -r p; do echo 19 >"/proc/$p/autogroup" 2>/dev/null || true; done
		done
		sleep 2
	done
}

pids=()
for mode in "${modes[@]}"; do
	run_mode "$mode" &
	pids+=($!)
done
yield_cpu &
yielder=$!
status=0
for p in "${pids[@]}"; do
	wait "$p" || status=1
done
kill "$yielder" 2>/dev/null || true
log "total $((SECONDS - t0))s"
exit $status
