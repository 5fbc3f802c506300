#!/usr/bin/env bash
# Builds the fully static x86_64 Linux binary of kalshi-ingest (musl libc, TLS roots
# bundled), checks that it is static, and prints its path and size.
#
# Installs what it needs: the rustup musl target and, for ring's C and assembly
# code, Debian's musl-tools (musl-gcc). Usage: scripts/build-static.sh
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-musl
if ! rustup target list --installed | grep -qx "$target"; then
    echo "build-static: adding the rustup target $target" >&2
    rustup target add "$target"
fi
if ! command -v musl-gcc >/dev/null 2>&1; then
    echo "build-static: installing musl-tools (musl-gcc, for ring)" >&2
    if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq musl-tools >/dev/null
fi

export CC_x86_64_unknown_linux_musl=musl-gcc
# Reproducible: no host paths in the binary (the source folder and CARGO_HOME are
# remapped; the dist profile strips symbols and debug info). RUSTFLAGS replaces the
# target rustflags of .cargo/config.toml, so +crt-static is repeated here.
src_dir=$(pwd)
cargo_home=${CARGO_HOME:-$HOME/.cargo}
export RUSTFLAGS="-C target-feature=+crt-static --remap-path-prefix=$src_dir=/build --remap-path-prefix=$cargo_home=/cargo"
export CFLAGS_x86_64_unknown_linux_musl="-ffile-prefix-map=$src_dir=/build -ffile-prefix-map=$cargo_home=/cargo"
offline=()
if [ "${CARGO_NET_OFFLINE:-}" = true ]; then offline=(--offline); fi
cargo build --locked "${offline[@]}" --profile dist --target "$target" --bin kalshi-ingest

bin="target/$target/dist/kalshi-ingest"
# Static means: no program interpreter and no shared-library dependencies.
if readelf -l "$bin" | grep -q "Requesting program interpreter"; then
    echo "build-static: $bin has a program interpreter: not static" >&2
    exit 1
fi
if readelf -d "$bin" | grep -q "(NEEDED)"; then
    echo "build-static: $bin needs shared libraries: not static" >&2
    readelf -d "$bin" | grep "(NEEDED)" >&2
    exit 1
fi
"$bin" --version >/dev/null
size=$(stat -c %s "$bin")
echo "static binary: $bin ($size bytes, $((size / 1024)) KiB)"
