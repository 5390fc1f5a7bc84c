#!/usr/bin/env bash
# make lint: fails when a tracked Markdown file links to a path that is not
# in the checkout. README.md once linked ../shared/ARCHITECTURE.md, a file
# only its authors had; a reader got a 404. Web links are not followed (CI
# has no internet); anchors (#section) are not checked.
#
#   hack/check-links.sh
set -euo pipefail
top=$(git rev-parse --show-toplevel 2>/dev/null) || {
	echo "check-links: not a git checkout, nothing tracked to check" >&2
	exit 0
}
cd "$top"

bad=0
while IFS= read -r -d '' md; do
	dir=$(dirname "$md")
	# Inline links and images: [text](target) and ![alt](target "title").
	while IFS= read -r target; do
		target=${target%% *}   # drop a "title"
		target=${target%%#*}   # and an anchor
		case "$target" in
		'' | *://* | mailto:*) continue ;;
		/*) path=.$target ;;
		*) path=$dir/$target ;;
		esac
		if [ ! -e "$path" ]; then
			echo "$md: dead link to $target" >&2
			bad=1
		fi
	done < <(grep -o '\]([^)]*)' "$md" | sed 's/^](//; s/)$//')
done < <(git ls-files -z '*.md')
exit $bad
