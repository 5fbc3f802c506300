#!/usr/bin/env bash
# Builds the static release binary of HEAD twice, from two clones in different
# folders, and checks that the two binaries are byte for byte identical.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone -q --no-hardlinks . "$work/a"
git clone -q --no-hardlinks . "$work/another/place/b"
for dir in "$work/a" "$work/another/place/b"; do
    (cd "$dir" && bash scripts/build-static.sh >/dev/null)
done
sums=$(sha256sum "$work/a/target/x86_64-unknown-linux-musl/dist/kalshi-ingest" \
    "$work/another/place/b/target/x86_64-unknown-linux-musl/dist/kalshi-ingest")
echo "$sums"
if [ "$(echo "$sums" | cut -d' ' -f1 | sort -u | wc -l)" != 1 ]; then
    echo "check-reproducible: the two builds differ" >&2
    exit 1
fi
echo "reproducible: both builds are identical"
