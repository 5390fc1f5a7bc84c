#!/usr/bin/env bash
# hack/kind-smoke.sh: what no machine of ours can prove, on a real
# Kubernetes cluster with KubeVirt (kind, or any other). Builds the three
# binaries, builds the egress proxy's image from bin/cowork-hostd (and
# loads it into kind when the context is a kind cluster), deploys the
# namespace's egress proxy and NetworkPolicies, then drives a sandbox as a
# user would: init --backend kubevirt, exec, status, proxy, ask, stop,
# exec --rm and fleet ask in CDI clones, start, delete.
# One PASS, FAIL or SKIP line per check, then a summary; exit 1 if any
# failed. It leaves nothing behind: the instance is deleted and the
# namespace with it, however the script ends.
#
# Needs: kubectl with a context for the cluster (SMOKE_CONTEXT, default the
# current one); KubeVirt with the VSOCK feature gate and CDI (the root disk
# is a DataVolume imported from a registry); a network plugin that enforces
# NetworkPolicies; docker to build the proxy's image (and kind to load it,
# for a kind cluster; elsewhere push SMOKE_PROXY_IMAGE yourself first and
# set SMOKE_SKIP_BUILD=1); the cluster's nodes reaching the internet (the
# guest image, and the guest's provisioning through the proxy).
#
# `cowork ask` goes through the relay in the egress pod, its session
# opened through the API server's port-forward: without the Secret it must
# be refused naming it; with SMOKE_ANTHROPIC_API_KEY set, the key is put in
# the namespace's Secret and an ask must answer (a real API call, so a
# SKIP line without it: the relay sends the key to api.anthropic.com only).
set -u
cd "$(dirname "$0")/.." || exit 2

NS=${SMOKE_NAMESPACE:-cowork-smoke}
NAME=${SMOKE_NAME:-smoke}
IMAGE=${SMOKE_GUEST_IMAGE:-quay.io/containerdisks/ubuntu:22.04}
PROXY_IMAGE=${SMOKE_PROXY_IMAGE:-cowork-hostd:smoke}
CIDRS=${SMOKE_CLUSTER_CIDRS:-10.96.0.0/12 10.244.0.0/16} # kind's services and pods
NODE_ARCH=${SMOKE_NODE_ARCH:-amd64} # the nodes' (and so the guest's) architecture
TMP=$(mktemp -d "${TMPDIR:-/tmp}/cowork-kind-smoke.XXXXXX")
export COWORK_HOME=$TMP/home
failed=0 passed=0 skipped=0
began=$(date +%s)
out=$TMP/out

need() {
	command -v "$1" >/dev/null 2>&1 || {
		echo "kind-smoke: $1 is not installed; $2" >&2
		exit 2
	}
}
need kubectl "install it, with a context for a cluster that runs KubeVirt"
CONTEXT=${SMOKE_CONTEXT:-$(kubectl config current-context 2>/dev/null)}
if [ -z "$CONTEXT" ]; then
	echo "kind-smoke: kubectl has no current context; set SMOKE_CONTEXT, or create a cluster (kind create cluster)" >&2
	exit 2
fi
k() { kubectl --context "$CONTEXT" "$@"; }

step() {
	local what=$1
	shift
	if "$@" >"$out" 2>&1; then
		printf 'PASS  %s\n' "$what"
		passed=$((passed + 1))
	else
		printf 'FAIL  %s\n' "$what"
		sed 's/^/      /' "$out" | tail -20
		failed=$((failed + 1))
	fi
}
skip() {
	printf 'SKIP  %s (%s)\n' "$1" "$2"
	skipped=$((skipped + 1))
}

cleanup() {
	if [ -d "$COWORK_HOME/$NAME" ]; then
		bin/cowork --name "$NAME" delete --yes --force >/dev/null 2>&1 ||
			echo "kind-smoke: could not delete instance $NAME; kubectl --context $CONTEXT -n $NS delete vm cowork-$NAME" >&2
	fi
	k delete namespace "$NS" --ignore-not-found --wait=false >/dev/null 2>&1
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "kind-smoke: context $CONTEXT, namespace $NS, guest image $IMAGE"

gates=$(k get kubevirt -A -o jsonpath='{.items[0].spec.configuration.developerConfiguration.featureGates}' 2>/dev/null)
case $gates in
*VSOCK*) ;;
*)
	echo "kind-smoke: KubeVirt is not installed in $CONTEXT, or lacks the VSOCK feature gate (gates: ${gates:-none}); cowork reaches its agent over vsock" >&2
	exit 2
	;;
esac

step "build bin/cowork, bin/cowork-hostd and bin/cowork-hostd-kubevirt" make bin/cowork kubevirt
if [ "${SMOKE_SKIP_BUILD:-}" != 1 ]; then
	need docker "the proxy's image is built with it (or push SMOKE_PROXY_IMAGE and set SMOKE_SKIP_BUILD=1)"
	# The proxy runs on the cluster's nodes: a static Linux build of this
	# tree's cowork-hostd (with the agents it serves the guests), whatever
	# this machine is.
	printf 'FROM debian:12-slim\nRUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*\nCOPY cowork-hostd /usr/local/bin/cowork-hostd\n' >"$TMP/Dockerfile"
	step "build cowork-hostd for linux/$NODE_ARCH" env CGO_ENABLED=0 GOOS=linux GOARCH="$NODE_ARCH" go build -trimpath -o "$TMP/cowork-hostd" ./cmd/cowork-hostd
	step "build the egress proxy's image $PROXY_IMAGE" docker build -q -t "$PROXY_IMAGE" "$TMP"
	case $CONTEXT in
	kind-*)
		need kind "the image is loaded into the kind cluster with it"
		step "load $PROXY_IMAGE into kind cluster ${CONTEXT#kind-}" kind load docker-image "$PROXY_IMAGE" --name "${CONTEXT#kind-}"
		;;
	esac
fi

step "create namespace $NS" k create namespace "$NS"
cidr_flags=()
for c in $CIDRS; do cidr_flags+=(--cluster-cidr "$c"); done
deploy() {
	bin/cowork-hostd-kubevirt egress --namespace "$NS" --image "$PROXY_IMAGE" "${cidr_flags[@]}" >"$TMP/egress.yaml" &&
		k apply -f "$TMP/egress.yaml" &&
		k -n "$NS" rollout status deployment/cowork-egress --timeout 5m
}
step "deploy the egress proxy and its NetworkPolicies" deploy

step "cowork init --backend kubevirt (boots and provisions the guest)" \
	bin/cowork --name "$NAME" init --backend kubevirt --context "$CONTEXT" --namespace "$NS" \
	--image "$IMAGE" --arch "$NODE_ARCH" --cpus 2 --memory 2GiB --disk 10GiB --timeout 30m
step "exec: uname in the guest" sh -c "bin/cowork --name '$NAME' exec -- uname -sm | grep -q Linux"
step "status names the backend" sh -c "bin/cowork --name '$NAME' status --json | grep -q kubevirt"
step "the guest reaches the internet through the proxy only" \
	bin/cowork --name "$NAME" exec -- 'curl -fsS -o /dev/null https://example.com && ! curl -fsS --noproxy "*" -m 10 -o /dev/null https://example.com'
step "the proxy's audit log names the guest's request" k -n "$NS" exec deployment/cowork-egress -- grep -q example.com /var/lib/cowork/audit/network.jsonl
step "cowork proxy reads it through the port-forward" \
	sh -c "bin/cowork --name '$NAME' proxy --json --follow=false --since 1h | grep -q example.com"
ask_needs_the_secret() {
	! env -u ANTHROPIC_API_KEY bin/cowork --name "$NAME" ask "say hi" >"$TMP/ask.out" 2>&1 &&
		grep -q "kubectl create secret generic cowork-api-key" "$TMP/ask.out"
}
step "ask without the namespace's Secret is refused, naming it" ask_needs_the_secret
if [ -n "${SMOKE_ANTHROPIC_API_KEY:-}" ]; then
	put_key() {
		k -n "$NS" create secret generic cowork-api-key --from-literal=api-key="$SMOKE_ANTHROPIC_API_KEY" >/dev/null
	}
	step "create the Secret cowork-api-key" put_key
	# The pod reads the key at each session; the kubelet mounts a new
	# Secret within its sync period (about a minute).
	ask_answers() {
		local i
		for i in $(seq 1 20); do
			if env -u ANTHROPIC_API_KEY bin/cowork --name "$NAME" ask "Reply with the single word pong." 2>"$TMP/ask.err" | grep -qi pong; then
				return 0
			fi
			echo "attempt $i: $(tail -1 "$TMP/ask.err")"
			sleep 10
		done
		return 1
	}
	step "ask through the cluster's relay, with the Secret's key" ask_answers
	step "the proxy's audit log names the relayed call" k -n "$NS" exec deployment/cowork-egress -- grep -q '"relay session ' /var/lib/cowork/audit/network.jsonl
else
	skip "ask through the cluster's relay" "set SMOKE_ANTHROPIC_API_KEY to make a real API call with it"
fi
stop_keeps() { bin/cowork --name "$NAME" stop && k -n "$NS" get vm "cowork-$NAME"; }
step "stop keeps the VM and its disk" stop_keeps
no_clone_left() { ! k -n "$NS" get vm -o name | grep -q -- "cowork-$NAME-rm-"; }
step "exec --rm runs in a clone of the stopped disk (CDI)" \
	sh -c "bin/cowork --name '$NAME' exec --rm -- uname -sm | grep -q Linux"
step "the clone is deleted in the cluster" no_clone_left
if [ -n "${SMOKE_ANTHROPIC_API_KEY:-}" ]; then
	fleet_answers() {
		env -u ANTHROPIC_API_KEY bin/cowork --name "$NAME" fleet ask --count 2 --json \
			"Reply with the single word pong." >"$TMP/fleet.json" &&
			[ "$(grep -ci pong "$TMP/fleet.json")" -ge 2 ]
	}
	step "fleet ask: two clones at once, through the cluster's relay" fleet_answers
	step "the fleet's clones are deleted in the cluster" no_clone_left
else
	skip "fleet ask on the cluster" "set SMOKE_ANTHROPIC_API_KEY to make real API calls with it"
fi
step "start again" bin/cowork --name "$NAME" start
step "exec after the restart" bin/cowork --name "$NAME" exec -- true
delete_all() {
	bin/cowork --name "$NAME" delete --yes --force &&
		! k -n "$NS" get vm "cowork-$NAME" 2>/dev/null && ! k -n "$NS" get secret "cowork-$NAME-cloudinit" 2>/dev/null
}
step "delete removes the VM and its seed" delete_all

echo "kind-smoke: $passed passed, $failed failed, $skipped skipped in $(($(date +%s) - began)) s"
[ "$failed" -eq 0 ]
