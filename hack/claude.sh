#!/bin/sh
# Installs the pinned Claude Code from npm into a cache and prints the path
# of its native binary for this machine (or, with an argument, for that
# Linux architecture: arm64 or amd64, fetched without installing it).
set -eu
version=$(sed -n 's/^const Version = "\(.*\)"/\1/p' "$(dirname "$0")/../hostd/claudecode/flags.go")
cache=${COWORK_TOOLS_CACHE:-$HOME/.cache/cowork-tools}/claude-$version
# One install at a time (e2e-image.sh and make test may run side by side).
mkdir -p "$(dirname "$cache")"
exec 8>"$cache.lock"
flock 8
if [ $# -gt 0 ]; then
	case "$1" in arm64) pkg=linux-arm64 ;; amd64) pkg=linux-x64 ;; *) echo "claude.sh: $1?" >&2; exit 2 ;; esac
	dir=$cache/$pkg
	if [ ! -x "$dir/package/claude" ]; then
		command -v npm >/dev/null 2>&1 || "$(dirname "$0")/deps.sh" npm >&2
		mkdir -p "$dir"
		(cd "$dir" && npm pack --silent "@anthropic-ai/claude-code-$pkg@$version" >/dev/null && tar xzf ./*.tgz && rm ./*.tgz)
	fi
	echo "$dir/package/claude"
	exit 0
fi
case "$(uname -s)-$(uname -m)" in
Linux-x86_64) pkg=linux-x64 ;; Linux-aarch64) pkg=linux-arm64 ;;
Darwin-arm64) pkg=darwin-arm64 ;; Darwin-x86_64) pkg=darwin-x64 ;;
*) echo "claude.sh: no Claude Code build for $(uname -s) $(uname -m)" >&2; exit 1 ;;
esac
bin=$cache/node_modules/@anthropic-ai/claude-code-$pkg/claude
if [ ! -x "$bin" ]; then
	command -v npm >/dev/null 2>&1 || "$(dirname "$0")/deps.sh" npm >&2
	mkdir -p "$cache"
	npm install --silent --no-audit --no-fund --prefix "$cache" "@anthropic-ai/claude-code@$version" >&2
fi
echo "$bin"
