#!/usr/bin/env bash
# The storage benchmark of issue 3, end to end through the release binary:
#
#   1. start `tidemark serve` on a fresh data dir with a bounded buffer (BUFFER_MB);
#   2. `tidemark load write` ROWS TSBS cpu-only rows for HOSTS hosts over HTTP;
#   3. wait until everything is persisted and compacted;
#   4. report rows/s, the server's peak resident memory (VmHWM), bytes on disk per row and
#      files per window;
#   5. `tidemark load queries` (the TSBS cpu-only set, RUNS runs per type), then the same
#      SQL on DuckDB over one Parquet export of the same data, side by side.
#
# Usage: benches/tsbs.sh            (50M rows, 1,000 hosts, 1 GiB buffer)
#        ROWS=5000000 HOSTS=100 benches/tsbs.sh
#        SKIP_QUERIES=1 benches/tsbs.sh    (ingest and storage figures only)
# Needs: cargo build --release; pip install -r benches/requirements.txt (for DuckDB).
set -euo pipefail

ROWS=${ROWS:-50000000}
HOSTS=${HOSTS:-1000}
BUFFER_MB=${BUFFER_MB:-1024}
SNAPSHOT_MB=${SNAPSHOT_MB:-256}
WORKERS=${WORKERS:-4}
BATCH=${BATCH:-10000}
RUNS=${RUNS:-5}
TARGET=${CARGO_TARGET_DIR:-target}
BIN=${BIN:-$TARGET/release/tidemark}
WORK=${WORK:-$(mktemp -d /tmp/tidemark-tsbs.XXXXXX)}
DATA=$WORK/data
mkdir -p "$DATA"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
HOST=http://127.0.0.1:$PORT

"$BIN" serve --data-dir "$DATA" --http-bind "127.0.0.1:$PORT" \
    --buffer-limit-mb "$BUFFER_MB" --snapshot-mb "$SNAPSHOT_MB" --snapshot-age-secs 5 \
    --compaction-interval-secs 5 --log-filter warn >"$WORK/server.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    curl -sf "$HOST/health" >/dev/null && break
    sleep 0.1
done

sql() { curl -sf --get "$HOST/api/v3/query_sql" --data-urlencode db=bench \
    --data-urlencode "q=$1" --data-urlencode format=csv | tail -n +2; }
peak_kib() { awk '/VmHWM/ {print $2}' "/proc/$PID/status"; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$PID/status"; }

echo "== ingest: $ROWS rows, $HOSTS hosts, buffer limit $BUFFER_MB MiB, snapshot $SNAPSHOT_MB MiB"
"$BIN" load write --host "$HOST" --db bench --hosts "$HOSTS" --rows "$ROWS" \
    --workers "$WORKERS" --batch-size "$BATCH" --report "$WORK/write.json"
echo "server peak RSS during ingest: $(( $(peak_kib) / 1024 )) MiB"

echo "== waiting for persist and compaction"
t0=$(date +%s)
while true; do
    buffered=$(sql "SELECT sum(buffered_rows) FROM system.tables WHERE table_name = 'cpu'")
    worst=$(sql "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM system.files \
                 WHERE table_name = 'cpu' GROUP BY window_start)")
    [[ "$buffered" == "0" && "$worst" == "1" ]] && break
    sleep 2
done
echo "persisted and compacted $(( $(date +%s) - t0 )) s after the load ended"
echo "server peak RSS overall: $(( $(peak_kib) / 1024 )) MiB; now $(( $(rss_kib) / 1024 )) MiB"

stored=$(sql "SELECT count(*) FROM cpu")
file_bytes=$(sql "SELECT sum(bytes) FROM system.files WHERE table_name = 'cpu'")
echo "rows stored: $stored"
echo "bytes on disk: live files $file_bytes ($(python3 -c "print(round($file_bytes/$stored, 2))") bytes/row);" \
     "data dir $(du -sb "$DATA" | cut -f1) (with replaced files awaiting deletion and the log)"
echo "files per window after compaction (windows, files, max, rows per file):"
sql "SELECT count(*) AS windows, sum(n) AS files, max(n) AS max_per_window, \
     CAST(avg(r) AS BIGINT) AS rows_per_file FROM (SELECT count(*) AS n, avg(rows) AS r \
     FROM system.files WHERE table_name = 'cpu' GROUP BY window_start)"

if [[ "${SKIP_QUERIES:-}" == 1 ]]; then
    exit 0
fi

echo "== TSBS cpu-only queries on Tidemark ($RUNS runs per type)"
"$BIN" load queries --host "$HOST" --db bench --hosts "$HOSTS" --rows "$ROWS" --runs "$RUNS" \
    --report "$WORK/tidemark-queries.json"
"$BIN" load queries --db bench --hosts "$HOSTS" --rows "$ROWS" --runs "$RUNS" --print \
    >"$WORK/queries.json"
echo "server peak RSS after queries: $(( $(peak_kib) / 1024 )) MiB"

echo "== the same queries on DuckDB"
sql "SELECT path FROM system.files WHERE table_name = 'cpu'" >"$WORK/files.txt"
python3 "$(dirname "$0")/tsbs_duckdb.py" --data-dir "$DATA" --db bench --files "$WORK/files.txt" \
    --queries "$WORK/queries.json" --tidemark-report "$WORK/tidemark-queries.json" \
    --export "$WORK/export.parquet" --report "$WORK/duckdb-queries.json"
echo "reports in $WORK"
