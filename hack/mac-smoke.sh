#!/usr/bin/env bash
# make mac-smoke: what Linux CI cannot prove, on a real Mac. Builds and signs
# bin/cowork, then boots a real Ubuntu guest under Virtualization.framework
# and drives it as a user would: exec, the shared workspace, the network
# policy and its audit log, ask against a local fake Messages API through
# the credential relay, suspend and resume with the guest's memory, stop
# and delete. One PASS, FAIL or SKIP line per check (SKIP for what this Mac
# cannot do, saying why), then a summary; exit 1 if any failed. It leaves
# nothing running: the instance is deleted and the fake API ended, however
# the script ends. SMOKE_LOGS, when set, is a folder that gets the
# instance's hostd.log and serial.log before it is deleted.
#
# Needs macOS 13+ (Apple silicon, or an Intel Mac: the guest is then
# x86_64), Go 1.26, the Xcode command line tools, and the internet for the
# first init (the Ubuntu image and its packages; later inits clone the
# golden disk in $COWORK_HOME/cache). Suspend needs macOS 14+ on Apple
# silicon; elsewhere the script checks that it is refused, saying why.
set -u
cd "$(dirname "$0")/.." || exit 2

if [ "$(uname -s)" != Darwin ]; then
	echo "mac-smoke runs on macOS; on Linux, make e2e drives the QEMU backend" >&2
	exit 2
fi

NAME=${SMOKE_NAME:-mac-smoke}
WS=$(mktemp -d "${TMPDIR:-/tmp}/cowork-smoke-ws.XXXXXX")
TMP=$(mktemp -d "${TMPDIR:-/tmp}/cowork-smoke.XXXXXX")
KEY="sk-ant-smoke-$RANDOM$RANDOM"
failed=0 passed=0 skipped=0
began=$(date +%s)
out=$TMP/out

step() {
	local what=$1
	shift
	if "$@" >"$out" 2>&1; then
		printf 'PASS  %s\n' "$what"
		passed=$((passed + 1))
	else
		printf 'FAIL  %s\n' "$what"
		tail -n 20 "$out" | sed 's/^/      /'
		failed=$((failed + 1))
	fi
}

# The fake API is a binary built here and run directly, so that its pid is
# the server's own: `go run` ran it as a child that outlived a kill of go.
# The instance's logs go with it: keep_logs copies them first.
cleanup() {
	if [ -n "${API_PID:-}" ]; then
		kill "$API_PID" 2>/dev/null
		wait "$API_PID" 2>/dev/null
	fi
	keep_logs
	bin/cowork delete --name "$NAME" --force >/dev/null 2>&1
	rm -rf "$WS" "$TMP"
}
trap cleanup EXIT

# keep_logs copies the instance's hostd.log and serial.log to SMOKE_LOGS,
# when it is set (the workflow sets it), for a look at a failure once the
# instance is deleted; it runs before the delete step and at the end.
keep_logs() {
	local dir=${COWORK_HOME:-$HOME/.cowork}/$NAME f
	[ -n "${SMOKE_LOGS:-}" ] && [ -d "$dir" ] && mkdir -p "$SMOKE_LOGS" || return 0
	for f in hostd.log serial.log; do
		[ -f "$dir/$f" ] && cp "$dir/$f" "$SMOKE_LOGS/"
	done
	return 0
}
trap 'exit 130' INT TERM

signed() {
	codesign --display --entitlements - bin/cowork-hostd 2>&1 | grep -q com.apple.security.virtualization
}
guest_arch() {
	local want=aarch64
	[ "$(uname -m)" = x86_64 ] && want=x86_64
	[ "$(bin/cowork exec --name "$NAME" uname -m)" = "$want" ]
}
workspace_shared() {
	echo "from-the-host" >"$WS/smoke.txt" &&
		[ "$(bin/cowork exec --name "$NAME" cat /workspace/smoke.txt)" = from-the-host ] &&
		bin/cowork exec --name "$NAME" "echo from-the-guest > /workspace/back.txt" &&
		[ "$(cat "$WS/back.txt")" = from-the-guest ]
}
ask_through_relay() {
	go build -o "$TMP/fakeapi" ./tools/fakeapi || return 1
	"$TMP/fakeapi" -reply "smoke answer" >"$TMP/api-url" 2>/dev/null &
	API_PID=$!
	for _ in $(seq 100); do [ -s "$TMP/api-url" ] && break; sleep 0.2; done
	ANTHROPIC_BASE_URL=$(head -n1 "$TMP/api-url") ANTHROPIC_API_KEY=$KEY \
		bin/cowork ask --instance "$NAME" "say something" | grep -q "smoke answer"
}
key_not_in_guest() {
	# The key travels on grep's stdin only; grep exits 1 when it finds nothing.
	echo "$KEY" | bin/cowork exec --name "$NAME" -u root "grep -rlsF -D skip -f - /home /root /tmp /etc /workspace; test \$? -eq 1"
}
# The default policy denies the cloud metadata address (and the host's
# loopback and LANs): the guest's connection fails, and the audit log says
# it was denied.
policy_denies() {
	! bin/cowork exec --name "$NAME" "curl -sS -m 5 -o /dev/null http://169.254.169.254/" &&
		bin/cowork proxy --name "$NAME" --json --follow=false | grep '169\.254\.169\.254' | grep -q '"verdict": *"deny"'
}
proxy_logged() {
	bin/cowork exec --name "$NAME" "getent hosts example.com >/dev/null || true" &&
		bin/cowork proxy --name "$NAME" --json --follow=false | grep -q example.com
}

# Suspend and resume. The guest's boot id and a file in tmpfs (/dev/shm)
# live in its memory only: the same after the resume means it was resumed,
# not booted again.
remember_guest() {
	BOOT_ID=$(bin/cowork exec --name "$NAME" cat /proc/sys/kernel/random/boot_id) &&
		[ -n "$BOOT_ID" ] &&
		[ "$(bin/cowork exec --name "$NAME" stat -f -c %T /dev/shm)" = tmpfs ] &&
		bin/cowork exec --name "$NAME" "echo kept-in-memory > /dev/shm/smoke-tmpfs"
}
status_suspended() {
	bin/cowork status --name "$NAME" --json | grep -q '"state": *"suspended"'
}
start_resumed() {
	local said rc
	said=$(bin/cowork start --name "$NAME" 2>&1)
	rc=$?
	printf '%s\n' "$said"
	[ "$rc" -eq 0 ] && grep -q resumed <<<"$said"
}
same_boot() {
	local now
	now=$(bin/cowork exec --name "$NAME" cat /proc/sys/kernel/random/boot_id)
	echo "boot id before the suspend $BOOT_ID, after the resume $now"
	[ -n "$now" ] && [ "$now" = "$BOOT_ID" ]
}
tmpfs_kept() {
	[ "$(bin/cowork exec --name "$NAME" cat /dev/shm/smoke-tmpfs)" = kept-in-memory ]
}
runs_on() {
	bin/cowork status --name "$NAME" --json | grep -q '"state": *"running"' &&
		bin/cowork exec --name "$NAME" "grep -q ' /workspace virtiofs ' /proc/mounts"
}
refused_saying() {
	! bin/cowork suspend --name "$NAME" >"$TMP/suspend" 2>&1 &&
		cat "$TMP/suspend" && grep -q "$1" "$TMP/suspend" && runs_on
}
skip() {
	printf 'SKIP  %s\n' "$1"
	skipped=$((skipped + 1))
}
suspend_and_resume() {
	if [ "$(uname -m)" != arm64 ]; then
		step "suspend is refused on an Intel Mac, saying why; the guest runs on" refused_saying "saves VMs on Apple silicon only"
		return
	fi
	if [ "$(sw_vers -productVersion | cut -d. -f1)" -lt 14 ]; then
		step "suspend is refused on macOS 13, saying why; the guest runs on" refused_saying "macOS 14 or newer can"
		return
	fi
	step "remember the guest: its boot id, a file in tmpfs" remember_guest
	if ! bin/cowork suspend --name "$NAME" >"$out" 2>&1; then
		if grep -q "cannot save a VM with a shared directory" "$out"; then
			skip "suspend: Virtualization.framework on macOS $(sw_vers -productVersion) cannot save a VM with a shared directory: $(tr '\n' ' ' <"$out" | cut -c1-300)"
			step "the refused suspend left the guest running, /workspace mounted" runs_on
			return
		fi
		printf 'FAIL  %s\n' "suspend: the guest saved with its memory"
		tail -n 20 "$out" | sed 's/^/      /'
		failed=$((failed + 1))
		return
	fi
	printf 'PASS  %s\n' "suspend: the guest saved with its memory"
	passed=$((passed + 1))
	step "status: suspended" status_suspended
	step "start: says it resumed the guest" start_resumed
	step "the same boot after the resume (boot_id)" same_boot
	step "the tmpfs file survived the resume" tmpfs_kept
	step "the workspace is shared both ways after the resume" workspace_shared
}

stopped() {
	bin/cowork stop --name "$NAME" && bin/cowork status --name "$NAME" --json | grep -q '"state": *"stopped"'
}
deleted() {
	bin/cowork delete --name "$NAME" --force && ! bin/cowork status --name "$NAME" >/dev/null 2>&1
}

nothing_left() {
	local left
	left=$(pgrep -fl "cowork-hostd.*$NAME" || true)
	[ -z "$left" ] || { echo "still running: $left"; return 1; }
}

step "build and sign (make)" make bin/cowork
step "the binary carries the virtualization entitlement" signed
step "init: Ubuntu under Virtualization.framework, provisioned" bin/cowork init --name "$NAME" --workspace "$WS" --cpus 2 --memory 2GiB
step "exec: the guest answers, of the Mac's architecture" guest_arch
step "the workspace is shared both ways (virtiofs)" workspace_shared
step "policy: the metadata address is denied, and audited" policy_denies
step "ask: Claude Code against a local fake API, through the relay" ask_through_relay
step "the real key never enters the guest" key_not_in_guest
step "proxy: the audit log holds the guest's DNS query" proxy_logged
suspend_and_resume
step "stop" stopped
keep_logs
step "delete" deleted
step "nothing of the instance is left running" nothing_left

printf 'mac-smoke: %d passed, %d failed, %d skipped in %ss\n' "$passed" "$failed" "$skipped" "$(($(date +%s) - began))"
[ "$failed" -eq 0 ]
