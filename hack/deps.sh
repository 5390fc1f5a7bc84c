#!/bin/sh
# Installs the Debian packages a target needs, when they are missing.
# Usage: hack/deps.sh [package...]   (no arguments: everything the tests and bench use)
set -eu
pkgs="$*"
[ -n "$pkgs" ] || pkgs="openssh-server openssh-client"
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
	echo "missing packages:$missing; install them with your package manager" >&2
	exit 1
fi
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
echo "installing:$missing" >&2
# One apt at a time: CI builds the e2e guest (which installs its own host
# packages) while the tests run.
# shellcheck disable=SC2086
$sudo flock /tmp/cowork-apt.lock sh -c 'apt-get update -qq >/dev/null &&
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null' sh $missing
