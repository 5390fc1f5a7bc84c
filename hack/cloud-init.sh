#!/bin/sh
# Makes Debian's cloud-init runnable for `cloud-init schema` without
# installing it as a service on this machine: its Python libraries come
# from apt, the package itself is unpacked into a cache. Prints the path of
# a `cloud-init` wrapper.
set -eu
cache=${COWORK_TOOLS_CACHE:-$HOME/.cache/cowork-tools}/cloud-init
"$(dirname "$0")/deps.sh" python3 python3-configobj python3-jinja2 python3-jsonpatch python3-jsonschema \
	python3-netifaces python3-oauthlib python3-requests python3-serial python3-yaml >&2
if [ ! -x "$cache/cloud-init" ]; then
	rm -rf "$cache" && mkdir -p "$cache"
	(cd "$cache" && apt-get download -q cloud-init >/dev/null 2>&1 && dpkg-deb -x cloud-init_*.deb root && rm cloud-init_*.deb) ||
		{ echo "cannot get Debian's cloud-init package" >&2; exit 1; }
	cat >"$cache/cloud-init" <<WRAP
#!/bin/sh
PYTHONPATH=$cache/root/usr/lib/python3/dist-packages exec /usr/bin/python3 $cache/root/usr/bin/cloud-init "\$@"
WRAP
	chmod +x "$cache/cloud-init"
fi
echo "$cache/cloud-init"
