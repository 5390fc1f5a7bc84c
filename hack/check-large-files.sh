#!/usr/bin/env bash
# make lint: fails when git tracks a file over 1 MiB. Nothing this repository
# needs is that big; what is, is build output (a 16 MB cowork-agent binary
# was once committed by a `go build` run at the root) or data that belongs
# in a cache. It checks the index, which is what the next commit records,
# so a big file fails as soon as it is added.
#
#   hack/check-large-files.sh [LIMIT_BYTES]    (default 1048576)
set -euo pipefail
limit=${1:-1048576}
top=$(git rev-parse --show-toplevel 2>/dev/null) || {
	echo "check-large-files: not a git checkout, nothing tracked to check" >&2
	exit 0
}
cd "$top"

# ls-files --stage: "MODE OBJECT STAGE<TAB>PATH"; cat-file answers each
# object's size. Submodules (mode 160000) have no blob here.
big=$(git ls-files -z --stage | while IFS= read -r -d '' entry; do
	meta=${entry%%$'\t'*} path=${entry#*$'\t'}
	read -r mode object _ <<<"$meta"
	[ "$mode" = 160000 ] || printf '%s %s\n' "$object" "$path"
done | git cat-file --batch-check='%(objectsize) %(rest)' | awk -v max="$limit" '$1 > max')

if [ -n "$big" ]; then
	echo "tracked files over $limit bytes (build output? remove them with git rm --cached and add them to .gitignore):" >&2
	printf '%s\n' "$big" | sort -rn | awk '{printf "  %s (%d bytes)\n", substr($0, index($0, " ") + 1), $1}' >&2
	exit 1
fi
