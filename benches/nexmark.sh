#!/usr/bin/env bash
# Nexmark-style topologies (benches/topologies/*.yaml) run by the release binary over the
# deterministic bids generator; prints events/s for each. Client and engine share the
# machine: `tidemark topology run` is the whole engine in one process.
#
#   cargo build --release && benches/nexmark.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/tidemark}
printf '%-12s %12s %10s %14s %10s\n' query events seconds events/s "max RSS"
for f in benches/topologies/nexmark_q*.yaml; do
    q=$(basename "$f" .yaml)
    out=$( { /usr/bin/time -f 'rss %M' "$BIN" topology run --quiet "$f"; } 2>&1 )
    events=$(echo "$out" | awk '$1 == "bids" { print $3 }')
    secs=$(echo "$out" | awk '$1 == "ran" { print $2 }')
    rss=$(echo "$out" | awk '$1 == "rss" { printf "%d MiB", $2 / 1024 }')
    printf '%-12s %12s %10s %14.0f %10s\n' "$q" "$events" "$secs" "$(echo "$events / $secs" | bc -l)" "$rss"
done
