#!/usr/bin/env bash
# Packs everything an offline host needs to build kalshi-ingest into one archive:
# the source at HEAD, its commit (COMMIT), the vendored crates (cargo vendor) and the
# cargo configuration that points at them. Run it on a host with network access:
#
#   scripts/vendor.sh [OUT_DIR]      default ./dist; prints the archive and its SHA-256
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-dist}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
commit=$(git rev-parse HEAD)
name="kalshi-ingest-$version-vendored"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
stage="$work/$name"
mkdir -p "$stage"
git archive HEAD | tar -x -C "$stage"
echo "$commit" > "$stage/COMMIT"
(cd "$stage" && cargo vendor --locked --versioned-dirs vendor > "$work/vendor.toml")
{
    echo
    echo "# Added by scripts/vendor.sh: build from vendor/, never from the network."
    cat "$work/vendor.toml"
    echo
    echo "[net]"
    echo "offline = true"
} >> "$stage/.cargo/config.toml"
mkdir -p "$out"
archive="$out/$name.tar.gz"
# Deterministic archive: sorted names, fixed times and owners.
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$work" -cf - "$name" |
    gzip -n -9 > "$archive"
echo "archive: $archive ($(stat -c %s "$archive") bytes)"
echo "sha256:  $(sha256sum "$archive" | cut -d' ' -f1)"
