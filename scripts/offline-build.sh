#!/usr/bin/env bash
# Builds kalshi-ingest from a vendored archive (scripts/vendor.sh) the way an
# air-gapped host would: an empty CARGO_HOME (no registry cache), --offline
# --locked, CARGO_NET_OFFLINE=true; then runs the binary's --version --verbose.
#
#   scripts/offline-build.sh ARCHIVE [--static]
# With --static it runs scripts/build-static.sh inside the unpacked source (the host
# needs the rustup musl target and musl-gcc installed beforehand).
set -euo pipefail
archive=$(realpath "$1")
mode=${2:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -xzf "$archive" -C "$work"
src=$(ls -d "$work"/kalshi-ingest-*-vendored)
export CARGO_HOME="$work/empty-cargo-home" CARGO_NET_OFFLINE=true
mkdir -p "$CARGO_HOME"
cd "$src"
if [ "$mode" = "--static" ]; then
    bash scripts/build-static.sh
    bin=target/x86_64-unknown-linux-musl/dist/kalshi-ingest
else
    cargo build --offline --locked --release --bin kalshi-ingest
    bin=target/release/kalshi-ingest
fi
"$bin" --version --verbose
echo "offline build ok: nothing was fetched (CARGO_HOME was empty, --offline)"
