#!/usr/bin/env bash
# make e2e-image: builds the end-to-end test guest from Debian packages into a
# cache outside the repo, rebuilding only the stages whose inputs changed.
#
#   hack/e2e-image.sh AGENT_BINARY
#
# Env: COWORK_E2E_CACHE (default ~/.cache/cowork-e2e), E2E_ARCH (arm64 | amd64),
#      COWORK_MIRROR, COWORK_SUITE (bookworm), COWORK_KERNEL_PKG (pin a kernel).
# Prints, as its last lines, what `cowork init` takes:
#   kernel=PATH initrd=PATH disk=PATH cmdline=STRING
# and just before them (consumers find each line by its key):
#   ssh_key=PATH for the bench
#   cloud_disk=PATH: a qcow2 stand-in for a cloud image (systemd and cloud-init
#   from Debian's packages), booted with the same kernel, initrd and cmdline
#
# The guest: a Debian kernel; an initramfs (busybox) that loads the root
# disk's and the agent channel's modules and switches to a bookworm minbase
# root made with mkfs.ext4 -d; there busybox init starts the real agent at
# once (respawned if it dies) beside the boot script (network, share, sshd),
# and powers off on the power button. The pinned Claude Code (its native
# binary for the guest) is /usr/local/bin/claude.
# Needs root (debootstrap, chroot through qemu-user binfmt).
set -euo pipefail

AGENT=${1:?usage: e2e-image.sh AGENT_BINARY}
ARCH=${E2E_ARCH:-arm64}
OUT=${COWORK_E2E_CACHE:-$HOME/.cache/cowork-e2e}/$ARCH
MIRROR=${COWORK_MIRROR:-http://deb.debian.org/debian}
SUITE=${COWORK_SUITE:-bookworm}
ROOTFS_SIZE=2G
PKGS="bash,coreutils,procps,util-linux,iproute2,ca-certificates,curl,openssh-server,e2fsprogs,sudo,systemd-sysv,udev,dbus,cloud-init,python3-cffi-backend,ifupdown,isc-dhcp-client,kmod"
MODULES="virtio_pci virtio_mmio virtio_blk virtio_net virtio_console virtio_rng fuse virtiofs
crc32c_generic ext4 isofs gpio_keys evdev vmw_vsock_virtio_transport inet_diag tcp_diag udp_diag"
# What the root disk and the agent's channel need, in the order loaded:
# the initramfs loads only these when the root has /etc/cowork/modules-late
# (the busybox guest, whose boot scripts load the rest while the agent
# starts: NET_MODULES for the network and the share, POWER_MODULES for the
# power button, the others last), and every module otherwise (the cloud
# stand-in's root loads none of ours itself).
EARLY_MODULES="virtio_pci virtio_blk virtio_console crc32c_generic ext4"
NET_MODULES="virtio_net fuse virtiofs"
POWER_MODULES="gpio_keys evdev"
# What `init --with docker` needs of the kernel (overlay storage, the
# bridge and veth, netfilter for its NAT), kept in the cloud stand-in only,
# where modprobe loads them on demand like a cloud image's kernel does.
DOCKER_MODULE_DIRS="fs/overlayfs net/bridge net/netfilter net/ipv4/netfilter net/ipv6/netfilter drivers/net/veth.ko*"
SCRIPT_REV=5 # bump when this script's output changes for the same inputs

case "$ARCH" in
arm64) QARCH=aarch64 CONSOLE=ttyAMA0 ;;
amd64) QARCH=x86_64 CONSOLE=ttyS0 ;;
*) echo "E2E_ARCH=$ARCH: want arm64 or amd64" >&2; exit 2 ;;
esac

log() { printf '[e2e-image %(%T)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap and chroot)"
[ -f "$AGENT" ] || die "no agent binary at $AGENT; run make agents"
AGENT=$(cd "$(dirname "$AGENT")" && pwd)/$(basename "$AGENT")

# ---------------------------------------------------------------- host tools
need=()
tools="/usr/lib/qemu/virtiofsd:qemu-system-common debootstrap:debootstrap mkfs.ext4:e2fsprogs
	cpio:cpio depmod:kmod ssh-keygen:openssh-client qemu-img:qemu-utils
	/usr/lib/ipxe/qemu/efi-virtio.rom:ipxe-qemu"
case "$ARCH" in
arm64) tools="$tools qemu-system-aarch64:qemu-system-arm /usr/share/AAVMF/AAVMF_CODE.fd:qemu-efi-aarch64" ;;
amd64) tools="$tools qemu-system-x86_64:qemu-system-x86 /usr/share/OVMF/OVMF_CODE.fd:ovmf" ;;
esac
if [ "$ARCH" != "$(dpkg --print-architecture)" ]; then
	tools="$tools update-binfmts:binfmt-support /usr/bin/qemu-$QARCH-static:qemu-user-static"
fi
for pair in $tools; do
	cmd=${pair%%:*} pkg=${pair#*:}
	command -v "$cmd" >/dev/null 2>&1 || [ -e "$cmd" ] || need+=("$pkg")
done
# One apt at a time (hack/deps.sh takes the same lock): CI runs the tests
# while this builds.
apt_locked() { flock /tmp/cowork-apt.lock "$@"; }
if [ ${#need[@]} -gt 0 ]; then
	log "installing host packages: ${need[*]}"
	apt_locked apt-get update -q >/dev/null
	DEBIAN_FRONTEND=noninteractive apt_locked apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi
if [ "$ARCH" != "$(dpkg --print-architecture)" ] && ! dpkg --print-foreign-architectures | grep -qx "$ARCH"; then
	log "dpkg --add-architecture $ARCH"
	apt_locked sh -c "dpkg --add-architecture $ARCH && apt-get update -q >/dev/null"
fi
ls /var/lib/apt/lists/*_binary-"$ARCH"_Packages* >/dev/null 2>&1 || apt_locked apt-get update -q >/dev/null
# The pinned Claude Code for the guest, from npm (claude.sh locks its cache).
CLAUDE=$("$(dirname "$0")/claude.sh" "$ARCH")

# The cache is one builder's at a time. The host tools and Claude Code are
# fetched before waiting for it: a second build (CI's fresh roots) then
# waits only for the guest, not for its own downloads too.
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
exec 9>"$OUT/.lock"
flock 9

# unmount_under unmounts every mount at or below a directory, deepest first.
unmount_under() {
	awk -v d="$1" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
		umount -l "$m" || true
	done
}

ensure_binfmt() {
	[ "$ARCH" = "$(dpkg --print-architecture)" ] && return
	[ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
	grep -qx enabled "/proc/sys/fs/binfmt_misc/qemu-$QARCH" 2>/dev/null ||
		update-binfmts --enable "qemu-$QARCH" >/dev/null 2>&1 || true
	grep -qx enabled "/proc/sys/fs/binfmt_misc/qemu-$QARCH" 2>/dev/null || die "binfmt qemu-$QARCH not enabled"
}

cand() { apt-cache policy "$1" | awk '/Candidate:/{print $2}'; }

# ---------------------------------------------------------------- packages
# apt-cache takes seconds per call: remember the answers until the lists change.
APT_KEY=$(ls -l --time-style=+%s /var/lib/apt/lists 2>/dev/null | sha256sum | cut -c1-16)-${COWORK_KERNEL_PKG:-auto}
if [ "$(sed -n 1p "$OUT/.resolved" 2>/dev/null)" = "$APT_KEY" ]; then
	{ read -r _; read -r KPKG; read -r KVER_PKG; read -r BB_VER; } <"$OUT/.resolved"
else
	KPKG=${COWORK_KERNEL_PKG:-$(apt-cache depends "linux-image-$ARCH:$ARCH" | awk '/Depends: linux-image-/{print $2; exit}')}
	KPKG=${KPKG%:"$ARCH"}
	[ -n "$KPKG" ] || die "cannot resolve the kernel package"
	KVER_PKG=$(cand "$KPKG:$ARCH")
	BB_VER=$(cand "busybox-static:$ARCH")
	[ -n "$KVER_PKG" ] && [ "$KVER_PKG" != "(none)" ] || die "no candidate for $KPKG:$ARCH"
	printf '%s\n' "$APT_KEY" "$KPKG" "$KVER_PKG" "$BB_VER" >"$OUT/.resolved"
fi
mkdir -p "$OUT/debs"
fetch_deb() { # package version -> path of the .deb
	local f
	f=$(ls "$OUT/debs/${1}_"*"_$ARCH.deb" 2>/dev/null | grep -F "_${2/:/%3a}_" | head -1 || true)
	if [ -z "$f" ]; then
		(cd "$OUT/debs" && apt-get download -q "$1:$ARCH=$2" >/dev/null 2>&1) || die "apt-get download $1=$2 failed"
		f=$(ls "$OUT/debs/${1}_"*"_$ARCH.deb" | grep -F "_${2/:/%3a}_" | head -1)
	fi
	echo "$f"
}

# ---------------------------------------------------------------- kernel
# docker_modules names the modules under DOCKER_MODULE_DIRS in the tree $1.
docker_modules() {
	(cd "$1/lib/modules/$KVER/kernel" && for d in $DOCKER_MODULE_DIRS; do
		[ -e "$d" ] && find "$d" -name '*.ko*'
	done) | sed 's|.*/||; s|\.ko.*||'
}
K_STAMP="$KPKG=$KVER_PKG $(echo $MODULES) $DOCKER_MODULE_DIRS"
if [ "$(cat "$OUT/.kernel.stamp" 2>/dev/null)" != "$K_STAMP" ] || [ ! -f "$OUT/vmlinuz" ]; then
	log "kernel: $KPKG $KVER_PKG"
	deb=$(fetch_deb "$KPKG" "$KVER_PKG")
	rm -rf "$OUT/kernel.tmp"
	mkdir -p "$OUT/kernel.tmp"
	dpkg-deb -x "$deb" "$OUT/kernel.tmp"
	KVER=$(ls "$OUT/kernel.tmp/lib/modules")
	depmod -b "$OUT/kernel.tmp" "$KVER"
	# Keep only the modules the guest loads, and what they depend on.
	keep=$(for m in $MODULES $(docker_modules "$OUT/kernel.tmp"); do
		modprobe -d "$OUT/kernel.tmp" -S "$KVER" --show-depends "$m" 2>/dev/null
	done | awk '$1=="insmod"{print $2}')
	find "$OUT/kernel.tmp/lib/modules/$KVER/kernel" -name '*.ko*' | grep -vxF "$keep" | xargs rm -f
	rm -rf "$OUT/kernel.tmp/usr"
	rm -rf "$OUT/kernel"
	mv "$OUT/kernel.tmp" "$OUT/kernel"
	cp "$OUT/kernel/boot/vmlinuz-$KVER" "$OUT/vmlinuz.tmp"
	mv "$OUT/vmlinuz.tmp" "$OUT/vmlinuz"
	echo "$K_STAMP" >"$OUT/.kernel.stamp"
fi
KVER=$(ls "$OUT/kernel/lib/modules")
MODS=$(for m in $MODULES; do modprobe -d "$OUT/kernel" -S "$KVER" --show-depends "$m" 2>/dev/null; done |
	awk '$1=="insmod"{print $2}' | awk '!seen[$0]++')
DOCKER_MODS=$(for m in $(docker_modules "$OUT/kernel"); do modprobe -d "$OUT/kernel" -S "$KVER" --show-depends "$m" 2>/dev/null; done |
	awk '$1=="insmod"{print $2}' | awk '!seen[$0]++')
# The modules the busybox root loads last: the ones no boot step names.
LATE_MODULES=$(for m in $MODULES; do
	case " $EARLY_MODULES $NET_MODULES $POWER_MODULES " in *" $m "*) ;; *) echo "$m" ;; esac
done)

# install_modules puts the initramfs's modules (MODS), and any given after
# the tree $1, into that tree and indexes them, so that modprobe works
# there after the switch to it.
install_modules() {
	local root=$1 p rel
	shift
	mkdir -p "$root/lib/modules/$KVER"
	for p in $MODS "$@"; do
		rel=${p#"$OUT/kernel"}
		mkdir -p "$root$(dirname "$rel")"
		cp "$p" "$root$rel"
	done
	cp "$OUT/kernel/lib/modules/$KVER"/modules.{order,builtin,builtin.modinfo} "$root/lib/modules/$KVER/"
	depmod -b "$root" "$KVER"
}

# ---------------------------------------------------------------- initramfs
read -r -d '' INITRAMFS_INIT <<'EOF' || true
#!/bin/busybox sh
# Load the modules, mount the root disk, switch to it. Under TCG every
# command is costly: the shell runs busybox's applets without links (no
# --install; they need /proc for that), one modprobe loads the modules
# (in their dependencies' order), and it forks only what must run.
/bin/busybox mount -t proc proc /proc
# The console's first line, also the mark of hostd's "guest kernel
# booting" phase (it waits for one).
read -r up _ </proc/uptime
echo "cowork e2e guest: initramfs at ${up}s"
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
read -r early </etc/modules.early
modprobe -a $early
root=/dev/vda fstype=ext4 init=/sbin/init
read -r cmdline </proc/cmdline
for a in $cmdline; do
	case "$a" in
	cowork.root=*) root=${a#*=} ;;
	cowork.init=*) init=${a#*=} ;;
	cowork.break=*) setsid cttyhack sh ;;
	esac
done
# virtio_blk makes the disk's node as it loads; a root on another driver
# may take a moment.
i=0
while [ ! -b "$root" ] && [ $i -lt 500 ]; do usleep 10000; i=$((i + 1)); done
if ! mount -t "$fstype" -o rw "$root" /newroot; then
	echo "initramfs: cannot mount $root"
	exec setsid cttyhack sh
fi
if [ -f /newroot/etc/cowork/modules-late ]; then
	# The busybox guest: it loads the rest itself, and starts its agent
	# as soon as it runs, so it gets its kernel file systems mounted, and
	# a /run that no boot before this one wrote to (the agent's
	# provisioned marker lives there). Its name too, before the agent
	# can report it.
	echo cowork >/proc/sys/kernel/hostname
	mount -t tmpfs -o mode=755 tmpfs /newroot/run
	mount --move /dev /newroot/dev
	mount --move /sys /newroot/sys
	# Without /proc the shell finds busybox by its path only.
	/bin/busybox mount --move /proc /newroot/proc
else
	read -r late </etc/modules.late
	modprobe -a $late
	mount --move /dev /newroot/dev
	umount /proc /sys
fi
exec /bin/busybox switch_root /newroot "$init"
EOF

I_STAMP=$(printf '%s\n' "$SCRIPT_REV" "$K_STAMP" "$EARLY_MODULES" "busybox-static=$BB_VER" "$INITRAMFS_INIT" | sha256sum | cut -c1-16)
if [ "$(cat "$OUT/.initrd.stamp" 2>/dev/null)" != "$I_STAMP" ] || [ ! -f "$OUT/initrd.img" ]; then
	log "initramfs: kernel $KVER, busybox-static $BB_VER"
	bbdeb=$(fetch_deb busybox-static "$BB_VER")
	T="$OUT/initrd.tmp"
	rm -rf "$OUT/bb.tmp" "$T"
	mkdir -p "$OUT/bb.tmp" "$T"/{bin,sbin,etc,proc,sys,dev,newroot,lib/modules/"$KVER"}
	dpkg-deb -x "$bbdeb" "$OUT/bb.tmp"
	cp "$OUT/bb.tmp/bin/busybox" "$T/bin/busybox"
	cp "$OUT/bb.tmp/bin/busybox" "$OUT/busybox"
	printf '%s\n' "$INITRAMFS_INIT" >"$T/init"
	chmod 755 "$T/init"
	for p in $MODS; do
		rel=${p#"$OUT/kernel"}
		mkdir -p "$T$(dirname "$rel")"
		cp "$p" "$T$rel"
	done
	cp "$OUT/kernel/lib/modules/$KVER"/modules.{order,builtin,builtin.modinfo} "$T/lib/modules/$KVER/"
	depmod -b "$T" "$KVER"
	echo $EARLY_MODULES >"$T/etc/modules.early"
	echo $MODULES >"$T/etc/modules.late"
	mknod -m 600 "$T/dev/console" c 5 1 2>/dev/null || true
	(cd "$T" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --owner=0:0 --quiet | gzip -6n) >"$OUT/initrd.img.tmp"
	mv "$OUT/initrd.img.tmp" "$OUT/initrd.img"
	rm -rf "$OUT/bb.tmp" "$T"
	echo "$I_STAMP" >"$OUT/.initrd.stamp"
fi

# ---------------------------------------------------------------- root filesystem
# Stage 1, slow (minutes under qemu-user): the debootstrap tree, cached.
B_STAMP=$(printf '%s\n' "$SUITE" "$MIRROR" "$PKGS" "$ARCH" | sha256sum | cut -c1-16)
if [ "$(cat "$OUT/.base.stamp" 2>/dev/null)" != "$B_STAMP" ] || [ ! -d "$OUT/rootfs-base" ]; then
	ensure_binfmt
	B="$OUT/rootfs-base.tmp"
	# An interrupted debootstrap leaves /proc (and more) mounted in its tree:
	# unmount before removing it, now and if this run is interrupted too.
	unmount_under "$B"
	trap 'unmount_under "$B"' EXIT
	rm -rf "$B"
	mkdir -p "$OUT/debcache"
	log "rootfs: debootstrap --variant=minbase --arch=$ARCH $SUITE (a few minutes)"
	debootstrap --variant=minbase --arch="$ARCH" --cache-dir="$OUT/debcache" --include="$PKGS" \
		"$SUITE" "$B" "$MIRROR" >"$OUT/debootstrap.log" 2>&1 || {
		tail -20 "$OUT/debootstrap.log"
		die "debootstrap failed"
	}
	chroot "$B" /usr/sbin/useradd -m -u 1000 -U -G sudo -s /bin/bash cowork
	chroot "$B" passwd -d root >/dev/null
	chroot "$B" dpkg-query -W -f '${Package}=${Version}\n' >"$OUT/rootfs-packages.txt"
	rm -rf "$B"/var/cache/apt/archives/*.deb "$B"/var/lib/apt/lists/* "$B"/usr/share/doc/* \
		"$B"/usr/share/man/* "$B"/usr/share/locale/* "$B"/usr/share/info/* "$B"/var/log/*.log \
		"$B"/etc/ssh/ssh_host_*
	unmount_under "$B"
	trap - EXIT
	rm -rf "$OUT/rootfs-base"
	mv "$B" "$OUT/rootfs-base"
	echo "$B_STAMP" >"$OUT/.base.stamp"
fi

# The bench's key into the guest's sshd, and the guest's host key: made once.
if [ ! -f "$OUT/ssh/id_ed25519" ]; then
	mkdir -p "$OUT/ssh"
	ssh-keygen -q -t ed25519 -N "" -C cowork-e2e -f "$OUT/ssh/id_ed25519"
	ssh-keygen -q -t ed25519 -N "" -C cowork-e2e-host -f "$OUT/ssh/ssh_host_ed25519_key"
fi

# init starts the agent at once, beside rcS-early: the initramfs mounted
# what the agent needs (/proc, /sys, /dev; it loaded the agent channel's
# module). rcS-early brings up what hostd's "ready" needs (mounts,
# network, the workspace share), then writes the provisioned marker the
# agent reports, in /run: the marker of this boot, not of one before.
# hostd says ready, and serves clients, only once the agent reports it.
# rcS-early goes on with what no client waits for (sshd: it may listen a
# moment after hostd said ready; the bench waits for it).
read -r -d '' INITTAB <<'EOF' || true
::once:/etc/cowork/rcS-early
::respawn:/etc/cowork/agent
::respawn:/etc/cowork/power-button
::shutdown:/bin/busybox sync
::shutdown:/bin/busybox umount -a -r
EOF

read -r -d '' RCS_EARLY <<'EOF' || true
#!/bin/busybox sh
# Boot, first part: mounts, network (static: the cowork netstack's fixed
# addresses), the workspace share, and the provisioned marker the agent
# reports. busybox's own applets (the shell runs them without a path): no
# exec of a dynamic binary, slow under TCG.
mkdir -p /dev/pts /dev/shm /tmp /workspace /run/cowork
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /tmp
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
read -r mods </etc/cowork/modules-net
modprobe -a $mods
ip link set lo up
ip link set eth0 up && ip addr add 192.168.127.2/24 dev eth0 && ip route add default via 192.168.127.1
echo "nameserver 192.168.127.1" >/etc/resolv.conf
mount -t virtiofs workspace /workspace || echo "rcS: no workspace share" >/dev/console
: >/run/cowork/provisioned
read -r up _ </proc/uptime
echo "cowork e2e guest up after ${up}s" >/dev/console
exec /etc/cowork/rcS
EOF

read -r -d '' RCS <<'EOF' || true
#!/bin/busybox sh
# Boot, second part, once the guest is ready: sshd, the modules no client
# waits for, the disk grown to its size.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mkdir -p /run/sshd && /usr/sbin/sshd
read -r mods </etc/cowork/modules-late
modprobe -a $mods
resize2fs /dev/vda >/dev/null 2>&1 &
read -r up _ </proc/uptime
echo "cowork e2e guest: sshd up after ${up}s" >/dev/console
EOF

read -r -d '' PROXY_ENV <<'EOF' || true
# cowork: the guest's traffic goes through the auditing proxy on the gateway
# (direct connections are policed and logged too).
export http_proxy=http://192.168.127.1:7890 https_proxy=http://192.168.127.1:7890
export HTTP_PROXY=$http_proxy HTTPS_PROXY=$https_proxy
export no_proxy=localhost,127.0.0.1,::1,.cowork.internal,192.168.127.0/24 NO_PROXY=localhost,127.0.0.1,::1,.cowork.internal,192.168.127.0/24
EOF

read -r -d '' AGENT_RUN <<'EOF' || true
#!/bin/busybox sh
# Run by init, which starts it again whenever it exits.
exec /usr/local/bin/cowork-agent --listen serial://org.cowork.agent --default-user cowork \
	--provisioned-marker /run/cowork/provisioned 2>>/var/log/cowork-agent.log
EOF

read -r -d '' POWER_BUTTON <<'EOF' || true
#!/bin/busybox sh
# The power button (QMP system_powerdown) arrives as a key on gpio-keys (arm64
# virt) or as an ACPI button (x86); either way: a clean poweroff. The
# agent's Shutdown comes first; this is hostd's fallback, so its modules
# load here, not before the agent starts.
read -r mods </etc/cowork/modules-power
modprobe -a $mods
for d in /sys/class/input/event*; do
	read -r n <"$d/device/name" 2>/dev/null || continue
	case "$n" in gpio-keys | "Power Button")
		head -c 24 "/dev/input/${d##*/}" >/dev/null && exec busybox poweroff ;;
	esac
done
exec sleep 2147483647
EOF

AGENT_SUM=$(sha256sum "$AGENT" | cut -c1-16)
CLAUDE_SUM=$(sha256sum "$CLAUDE" | cut -c1-16)
R_STAMP=$(printf '%s\n' "$SCRIPT_REV" "$B_STAMP" "$I_STAMP" "$ROOTFS_SIZE" "$INITTAB" "$RCS_EARLY" "$RCS" "$NET_MODULES" "$POWER_MODULES" "$LATE_MODULES" "$PROXY_ENV" "$AGENT_RUN" "$POWER_BUTTON" "$AGENT_SUM" "$CLAUDE_SUM" |
	sha256sum | cut -c1-16)
if [ "$(cat "$OUT/.rootfs.stamp" 2>/dev/null)" != "$R_STAMP" ] || [ ! -f "$OUT/rootfs.ext4" ]; then
	log "rootfs: agent $AGENT_SUM, mkfs.ext4 -d ($ROOTFS_SIZE)"
	R="$OUT/rootfs.tmp"
	rm -rf "$R"
	cp -a "$OUT/rootfs-base" "$R"
	echo cowork >"$R/etc/hostname"
	printf '127.0.0.1 localhost\n127.0.1.1 cowork\n::1 localhost\n' >"$R/etc/hosts"
	printf '/dev/vda / ext4 rw 0 1\n' >"$R/etc/fstab"
	install -m 755 "$OUT/busybox" "$R/bin/busybox"
	ln -sf /bin/busybox "$R/sbin/init"
	printf '%s\n' "$INITTAB" >"$R/etc/inittab"
	mkdir -p "$R/etc/cowork" "$R/workspace" "$R/root/.ssh"
	printf '%s\n' "$RCS_EARLY" >"$R/etc/cowork/rcS-early"
	echo $NET_MODULES >"$R/etc/cowork/modules-net"
	echo $POWER_MODULES >"$R/etc/cowork/modules-power"
	echo $LATE_MODULES >"$R/etc/cowork/modules-late"
	printf '%s\n' "$RCS" >"$R/etc/cowork/rcS"
	printf '%s\n' "$AGENT_RUN" >"$R/etc/cowork/agent"
	printf '%s\n' "$POWER_BUTTON" >"$R/etc/cowork/power-button"
	printf '%s\n' "$PROXY_ENV" >"$R/etc/profile.d/cowork-proxy.sh"
	printf 'Acquire::http::Proxy "http://192.168.127.1:7890";\nAcquire::https::Proxy "http://192.168.127.1:7890";\n' >"$R/etc/apt/apt.conf.d/95cowork-proxy"
	printf 'proxy=http://192.168.127.1:7890\nhttps-proxy=http://192.168.127.1:7890\nnoproxy=localhost,127.0.0.1,.cowork.internal\n' >"$R/etc/npmrc"
	chmod 755 "$R/etc/cowork/rcS-early" "$R/etc/cowork/rcS" "$R/etc/cowork/agent" "$R/etc/cowork/power-button"
	install -m 755 "$AGENT" "$R/usr/local/bin/cowork-agent"
	install -m 755 "$CLAUDE" "$R/usr/local/bin/claude"
	install -m 600 "$OUT/ssh/id_ed25519.pub" "$R/root/.ssh/authorized_keys"
	install -m 600 "$OUT/ssh/ssh_host_ed25519_key" "$R/etc/ssh/ssh_host_ed25519_key"
	install -m 644 "$OUT/ssh/ssh_host_ed25519_key.pub" "$R/etc/ssh/ssh_host_ed25519_key.pub"
	echo 'cowork ALL=(ALL) NOPASSWD:ALL' >"$R/etc/sudoers.d/cowork"
	chmod 440 "$R/etc/sudoers.d/cowork"
	install_modules "$R"
	rm -f "$OUT/rootfs.ext4.tmp"
	mkfs.ext4 -q -F -L cowork-root -E root_owner=0:0 -d "$R" "$OUT/rootfs.ext4.tmp" "$ROOTFS_SIZE" >/dev/null
	mv "$OUT/rootfs.ext4.tmp" "$OUT/rootfs.ext4"
	rm -rf "$R"
	echo "$R_STAMP" >"$OUT/.rootfs.stamp"
fi

# ---------------------------------------------------------------- the cloud stand-in
# The same tree booted by systemd, provisioned by cloud-init from cowork's
# cidata disk, as qcow2: what `cowork init` does with a cloud image.
# The modules by their paths in the kernel's tree: the cache is shared,
# bind-mounted elsewhere, by hack/fresh-root.sh's roots, whose stamp must
# be this one or they would rebuild the disk the suite is using.
C_STAMP=$(printf '%s\n' "$SCRIPT_REV" "$B_STAMP" "$I_STAMP" "${DOCKER_MODS//"$OUT"/}" | sha256sum | cut -c1-16)
if [ "$(cat "$OUT/.cloud.stamp" 2>/dev/null)" != "$C_STAMP" ] || [ ! -f "$OUT/cloud.qcow2" ]; then
	log "cloud stand-in: systemd + cloud-init, qcow2"
	R="$OUT/cloud.tmp"
	rm -rf "$R"
	cp -a "$OUT/rootfs-base" "$R"
	printf '/dev/vda / ext4 rw 0 1\n' >"$R/etc/fstab"
	printf 'datasource_list: [NoCloud, None]\n' >"$R/etc/cloud/cloud.cfg.d/90-cowork-datasource.cfg"
	rm -f "$R/etc/machine-id" && : >"$R/etc/machine-id"
	# shellcheck disable=SC2086 # one path per word
	install_modules "$R" $DOCKER_MODS
	rm -f "$OUT/cloud.ext4"
	mkfs.ext4 -q -F -L cloudimg-rootfs -E root_owner=0:0 -d "$R" "$OUT/cloud.ext4" "$ROOTFS_SIZE" >/dev/null
	qemu-img convert -O qcow2 "$OUT/cloud.ext4" "$OUT/cloud.qcow2.tmp"
	mv "$OUT/cloud.qcow2.tmp" "$OUT/cloud.qcow2"
	rm -rf "$R" "$OUT/cloud.ext4"
	echo "$C_STAMP" >"$OUT/.cloud.stamp"
fi

log "ready"
# The extras first: what `cowork init` takes stays in the last four lines.
echo "ssh_key=$OUT/ssh/id_ed25519"
echo "cloud_disk=$OUT/cloud.qcow2"
echo "kernel=$OUT/vmlinuz"
echo "initrd=$OUT/initrd.img"
echo "disk=$OUT/rootfs.ext4"
# cryptomgr.notests: the kernel's self-tests of its crypto algorithms
# take half a second of the emulated boot (crypto_algapi_init, seen with
# initcall_debug); a test guest does without them.
echo "cmdline=console=$CONSOLE panic=-1 loglevel=4 cryptomgr.notests cowork.root=/dev/vda"
