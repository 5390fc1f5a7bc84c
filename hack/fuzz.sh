#!/usr/bin/env bash
# make fuzz: runs each fuzz target for FUZZTIME (default 10m), then keeps
# what the fuzzer learned: the new corpus entries go from Go's fuzz cache
# into the package's testdata/fuzz, where every `go test` (make test)
# replays them. Arguments pick targets by name (default: all).
#   make fuzz FUZZTIME=30s
#   ./hack/fuzz.sh FuzzParseArgs
set -euo pipefail
cd "$(dirname "$0")/.."
targets=(
	./guestagent:FuzzExecFrames
	./hostd/agentclient:FuzzAgentFrames
	./hostd/agentrpc:FuzzAgentReplies
	./internal/execwire:FuzzAppendStart
	./internal/execwire:FuzzParseExit
	./hostd/netstack:FuzzSniffName
	./hostd/netstack/audit:FuzzParseLine
	./hostd/netstack/usage:FuzzMeter
	./hostd/claudecode:FuzzParseArgs
	./image/qcow2:FuzzReadInfo
)
for want in "$@"; do
	[[ " ${targets[*]} " == *":$want "* ]] || {
		echo "fuzz: no target $want; the targets: ${targets[*]##*:}" >&2
		exit 2
	}
done
cache=$(go env GOCACHE)/fuzz
for t in "${targets[@]}"; do
	pkg=${t%%:*} name=${t#*:}
	if [ $# -gt 0 ] && [[ " $* " != *" $name "* ]]; then
		continue
	fi
	echo "== $name in $pkg for ${FUZZTIME:-10m}" >&2
	go test "$pkg" -run '^$' -fuzz "^$name\$" -fuzztime "${FUZZTIME:-10m}" -parallel "${FUZZPARALLEL:-2}"
	src="$cache/$(go list -f '{{.ImportPath}}' "$pkg")/$name"
	dst="$(go list -f '{{.Dir}}' "$pkg")/testdata/fuzz/$name"
	if [ -d "$src" ]; then
		mkdir -p "$dst"
		cp -n "$src"/* "$dst"/
	fi
	echo "$name: $(find "$dst" -type f 2>/dev/null | wc -l) corpus entries kept in ${dst#"$PWD"/}" >&2
done
