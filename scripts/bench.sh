#!/usr/bin/env bash
# Benchmark: kalshi-ingest against the project's fake API on loopback, next to the
# floor of doing the same file-system work with no HTTP and no JSON (bench-floor).
#
#   scripts/bench.sh [MARKETS]        default 1,000,000; RUNS=3 for medians
#
# Prints one table: wall time, CPU time (user+sys), requests, records/s, peak RSS,
# bytes written, and the ratio to the floor, for per-record files and for JSON Lines;
# then peak RSS for a 19 MB /series response and the 1/10-size runs for linearity,
# each next to the floor's own growth over the same 10x (the file system's share).
# Needs GNU time (/usr/bin/time); drops the page cache before every timed step when
# run as root (see ../shared/benchmarking.md: a just-deleted folder slows creation).
set -euo pipefail
cd "$(dirname "$0")/.."

markets=${1:-1000000}
runs=${RUNS:-1}
work=${BENCH_DIR:-/tmp/kalshi-bench}
[ -x /usr/bin/time ] || { apt-get update -qq && apt-get install -y -qq time; }

# The dist profile (LTO, one codegen unit) is what users run: measured ~12 % faster
# than --release on JSON Lines.
cargo build --profile dist --locked --bins -q
bin=target/dist
# The static musl binary, when its target is installed (scripts/build-static.sh).
static_bin=
if rustup target list --installed 2>/dev/null | grep -q x86_64-unknown-linux-musl; then
    scripts/build-static.sh > /dev/null
    static_bin=target/x86_64-unknown-linux-musl/dist/kalshi-ingest
fi
rm -rf "$work"
mkdir -p "$work"
fakes=()
cleanup() { for p in "${fakes[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

start_fake() { # args... -> sets $url
    "$bin/fake-kalshi" "$@" > "$work/fake.url" &
    fakes+=($!)
    for _ in $(seq 100); do [ -s "$work/fake.url" ] && break; sleep 0.05; done
    url=$(head -n 1 "$work/fake.url")
    rm -f "$work/fake.url"
}

calc() { awk "BEGIN { print $1 }"; }

settle() {
    sync
    if [ "$(id -u)" = 0 ]; then echo 3 > /proc/sys/vm/drop_caches; fi
}

# timed LABEL COMMAND... : runs it under GNU time, appends "label wall cpu rss" to $work/times
timed() {
    local label=$1; shift
    settle
    /usr/bin/time -f "%e %U %S %M" -o "$work/t.txt" "$@" > /dev/null
    read -r wall user sys rss < "$work/t.txt"
    echo "$label $wall $(calc "$user + $sys") $rss" >> "$work/times"
}

median() { # label field -> median of that field over the runs
    awk -v l="$1" -v f="$2" '$1 == l { print $f }' "$work/times" | sort -g |
        awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

summary_field() { # run_dir jq-path
    python3 -c "import json,glob,sys; s=json.load(open(glob.glob(sys.argv[1]+'/atomic_session_summary_*.json')[0])); print(eval('s'+sys.argv[2]))" "$1" "$2"
}

start_fake --markets "$markets" --events 1000 --series 100
big_url=$url
start_fake --markets $((markets / 10)) --events 1000 --series 100
small_url=$url
start_fake --series 14000
series_url=$url

for run in $(seq "$runs"); do
    for format in files jsonl; do
        out="$work/tool-$format-$run"
        mkdir -p "$out"
        timed "tool-$format" "$bin/kalshi-ingest" --base-url "$big_url" --endpoints markets \
            --rate 0 -q --format "$format" --out "$out"
        dir=$(ls -d "$out"/kalshi_atomic_ingestion_*)
        echo "$format $(summary_field "$dir" "['endpoints'][0]['requests']") $(summary_field "$dir" "['endpoints'][0]['records_saved']") $(summary_field "$dir" "['endpoints'][0]['bytes_written']")" > "$work/counts-$format"
        "$bin/bench-floor" plan "$dir/markets" > "$work/plan-$format"
        timed "floor-$format" "$bin/bench-floor" "$format" "$work/plan-$format" "$work/floor-$format-$run" 2>/dev/null
        rm -rf "$out" "$work/floor-$format-$run"
    done
    if [ -n "$static_bin" ]; then
        out="$work/static-$run"
        mkdir -p "$out"
        timed "static-jsonl" "$static_bin" --base-url "$big_url" --endpoints markets \
            --rate 0 -q --format jsonl --out "$out"
        rm -rf "$out"
    fi
    for format in files jsonl; do
        out="$work/small-$format-$run"
        mkdir -p "$out"
        timed "tool-$format-small" "$bin/kalshi-ingest" --base-url "$small_url" \
            --endpoints markets --rate 0 -q --format "$format" --out "$out"
        "$bin/bench-floor" plan "$(ls -d "$out"/kalshi_atomic_ingestion_*)/markets" \
            > "$work/plan-$format-small"
        rm -rf "$out"
        timed "floor-$format-small" "$bin/bench-floor" "$format" "$work/plan-$format-small" \
            "$work/floor-$format-small-$run" 2>/dev/null
        rm -rf "$work/floor-$format-small-$run"
    done
    out="$work/series-$run"
    mkdir -p "$out"
    timed "series" "$bin/kalshi-ingest" --base-url "$series_url" --endpoints series -q --out "$out"
    series_bytes=$(summary_field "$(ls -d "$out"/kalshi_atomic_ingestion_*)" "['endpoints'][0]['bytes_received']")
    rm -rf "$out"
done
settle

printf '\nkalshi-ingest benchmark: %s markets, %s run(s), medians; %s cores, %s\n' \
    "$markets" "$runs" "$(nproc)" "$(uname -r)"
printf '%-22s %9s %9s %9s %11s %9s %13s %9s\n' case wall_s cpu_s requests records/s rss_MB bytes_written vs_floor
for format in files jsonl; do
    read -r _ requests records bytes < "$work/counts-$format"
    wall=$(median "tool-$format" 2); cpu=$(median "tool-$format" 3); rss=$(median "tool-$format" 4)
    floor=$(median "floor-$format" 2)
    printf '%-22s %9.2f %9.2f %9d %11.0f %9.1f %13d %8.2fx\n' "tool --format $format" "$wall" "$cpu" \
        "$requests" "$(calc "$records / $wall")" "$(calc "$rss / 1024")" "$bytes" \
        "$(calc "$wall / $floor")"
    printf '%-22s %9.2f %9.2f %9s %11.0f %9.1f %13d\n' "floor ($format)" "$floor" \
        "$(median "floor-$format" 3)" - "$(calc "$records / $floor")" \
        "$(calc "$(median "floor-$format" 4) / 1024")" "$bytes"
done
if [ -n "$static_bin" ]; then
    wall=$(median static-jsonl 2)
    printf '%-22s %9.2f %9.2f %9s %11.0f %9.1f\n' "static musl, jsonl" "$wall" \
        "$(median static-jsonl 3)" - "$(calc "$markets / $wall")" \
        "$(calc "$(median static-jsonl 4) / 1024")"
fi
for format in files jsonl; do
    small=$(median "tool-$format-small" 2)
    printf '%-22s %9.2f %9.2f %9s %11.0f %9.1f %13s %8.2fx\n' "$format, $((markets / 10))" \
        "$small" "$(median "tool-$format-small" 3)" - "$(calc "($markets / 10) / $small")" \
        "$(calc "$(median "tool-$format-small" 4) / 1024")" - \
        "$(calc "$small / $(median "floor-$format-small" 2)")"
done
printf '%-22s %9.2f %9.2f %9s %11s %9.1f %13s\n' "/series 14,000 objects" "$(median series 2)" \
    "$(median series 3)" 1 - "$(calc "$(median series 4) / 1024")" "${series_bytes}B_in"
for format in files jsonl; do
    printf 'linearity (%s): %s markets took %.2fx the time of %s; the floor %.2fx\n' \
        "$format" "$markets" \
        "$(calc "$(median "tool-$format" 2) / $(median "tool-$format-small" 2)")" \
        "$((markets / 10))" \
        "$(calc "$(median "floor-$format" 2) / $(median "floor-$format-small" 2)")"
done
rm -rf "$work"
