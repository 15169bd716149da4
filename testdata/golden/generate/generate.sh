#!/usr/bin/env bash
# testdata/golden/generate/generate.sh vX.Y.Z|<commit> [out-dir [generator flags...]]
#
# Writes the storage entries of released version vX.Y.Z into out-dir (default
# testdata/golden/vX.Y.Z): the commit RELEASES records for it is extracted with
# `git archive`, golden_gen_test.go is copied into its package and run there, so the
# entries are written by that release's own code. Only the Go module proxy is needed.
# An unreleased commit of the history may be named instead of a version (the storage
# an upgrade from it meets); flags after out-dir go to the generator (-golden-narrowed).
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
version=${1:?usage: generate.sh vX.Y.Z|<commit> [out-dir [generator flags...]]}
out=$(realpath -m "${2:-$root/testdata/golden/$version}")
shift $(($# < 2 ? $# : 2))
commit=$(awk -v v="$version" '$1 == v { print $2 }' "$root/RELEASES")
if [[ -z $commit && $version != v* ]] && git -C "$root" cat-file -e "$version^{commit}" 2>/dev/null; then
	commit=$version
fi
if [[ -z $commit ]]; then
	echo "generate.sh: RELEASES records no commit for $version, and it names no commit of this clone" >&2
	exit 1
fi
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
git -C "$root" archive "$commit" | tar -x -C "$src"
# The release's own tests are not needed (and would pull in their dependencies).
rm -f "$src"/*_test.go
cp "$root/testdata/golden/generate/golden_gen_test.go" "$src/zz_golden_gen_test.go"
rm -rf "$out"
mkdir -p "$out"
(cd "$src" && GOFLAGS=-buildvcs=false go test -count=1 -run '^TestWriteGolden$' . -args -golden-out "$out" "$@" >&2)
echo "generate.sh: $version (commit $commit) wrote $(find "$out" -type f | wc -l) entries into $out" >&2
