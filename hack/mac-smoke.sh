#!/usr/bin/env bash
# make mac-smoke: what Linux CI cannot prove, on a real Mac. Builds and signs
# bin/cowork, then boots a real Ubuntu guest under Virtualization.framework
# and drives it as a user would: exec, the shared workspace, ask against a
# local fake Messages API through the credential relay, the proxy's audit
# log, stop and delete. One PASS or FAIL line per step; exit 1 if any failed.
#
# Needs macOS 13+ on Apple silicon, Go 1.26, the Xcode command line tools,
# and the internet for the first init (the Ubuntu image and its packages).
set -u
cd "$(dirname "$0")/.."

if [ "$(uname -s)" != Darwin ]; then
	echo "mac-smoke runs on macOS; on Linux, make e2e drives the QEMU backend" >&2
	exit 2
fi

NAME=${SMOKE_NAME:-mac-smoke}
WS=$(mktemp -d "${TMPDIR:-/tmp}/cowork-smoke-ws.XXXXXX")
KEY="sk-ant-smoke-$RANDOM$RANDOM"
failed=0
out=$(mktemp)

step() {
	local what=$1
	shift
	if "$@" >"$out" 2>&1; then
		printf 'PASS  %s\n' "$what"
	else
		printf 'FAIL  %s\n' "$what"
		tail -n 20 "$out" | sed 's/^/      /'
		failed=$((failed + 1))
	fi
}

cleanup() {
	[ -n "${API_PID:-}" ] && kill "$API_PID" 2>/dev/null
	bin/cowork delete --name "$NAME" --force >/dev/null 2>&1
	rm -rf "$WS" "$out" "${API_URL_FILE:-}"
}
trap cleanup EXIT

signed() {
	codesign --display --entitlements - bin/cowork-hostd 2>&1 | grep -q com.apple.security.virtualization
}
arch_is_arm64() {
	[ "$(bin/cowork exec --name "$NAME" uname -m)" = aarch64 ]
}
workspace_shared() {
	echo "from-the-host" >"$WS/smoke.txt" &&
		[ "$(bin/cowork exec --name "$NAME" cat /workspace/smoke.txt)" = from-the-host ] &&
		bin/cowork exec --name "$NAME" "echo from-the-guest > /workspace/back.txt" &&
		[ "$(cat "$WS/back.txt")" = from-the-guest ]
}
ask_through_relay() {
	API_URL_FILE=$(mktemp)
	go run ./tools/fakeapi -reply "smoke answer" >"$API_URL_FILE" 2>/dev/null &
	API_PID=$!
	for _ in $(seq 100); do [ -s "$API_URL_FILE" ] && break; sleep 0.2; done
	ANTHROPIC_BASE_URL=$(head -n1 "$API_URL_FILE") ANTHROPIC_API_KEY=$KEY \
		bin/cowork ask --instance "$NAME" "say something" | grep -q "smoke answer"
}
key_not_in_guest() {
	# The key travels on grep's stdin only; grep exits 1 when it finds nothing.
	echo "$KEY" | bin/cowork exec --name "$NAME" -u root "grep -rlsF -D skip -f - /home /root /tmp /etc /workspace; test \$? -eq 1"
}
proxy_logged() {
	bin/cowork exec --name "$NAME" "getent hosts example.com >/dev/null || true" &&
		bin/cowork proxy --name "$NAME" --json --follow=false | grep -q example.com
}
stopped() {
	bin/cowork stop --name "$NAME" && bin/cowork status --name "$NAME" --json | grep -q '"state": *"stopped"'
}
deleted() {
	bin/cowork delete --name "$NAME" --force && ! bin/cowork status --name "$NAME" >/dev/null 2>&1
}

step "build and sign (make)" make bin/cowork
step "the binary carries the virtualization entitlement" signed
step "init: Ubuntu under Virtualization.framework, provisioned" bin/cowork init --name "$NAME" --workspace "$WS" --cpus 2 --memory 2GiB
step "exec: an arm64 guest answers" arch_is_arm64
step "the workspace is shared both ways (virtiofs)" workspace_shared
step "ask: Claude Code against a local fake API, through the relay" ask_through_relay
step "the real key never enters the guest" key_not_in_guest
step "proxy: the audit log holds the guest's DNS query" proxy_logged
step "stop" stopped
step "delete" deleted

if [ "$failed" -gt 0 ]; then
	echo "mac-smoke: $failed step(s) failed"
	exit 1
fi
echo "mac-smoke: all steps passed"
