#!/usr/bin/env python3
"""Runs the TSBS cpu-only query set on DuckDB over one Parquet export of a Tidemark table,
and prints DuckDB's median latency per query type beside Tidemark's.

The queries come from `tidemark load queries --print` (the same SQL Tidemark ran), the
Tidemark figures from `tidemark load queries --report`. The export is one Parquet file
written by DuckDB from the table's live Parquet files (the paths `system.files` lists:
replaced files wait on disk for a grace period), so both engines read the same rows. The
time column is exported as DuckDB's TIMESTAMP (microseconds, UTC), which its date functions
take. DuckDB runs in process (no HTTP, results fetched as Arrow); Tidemark's figures include
its HTTP round trip and result encoding.

    pip install -r benches/requirements.txt
    python3 benches/tsbs_duckdb.py --data-dir DIR --db bench --queries q.json \
        --tidemark-report tidemark.json
"""

import argparse
import json
import os
import statistics
import sys
import time

import duckdb


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True, help="Tidemark's data directory")
    ap.add_argument("--db", required=True)
    ap.add_argument("--table", default="cpu")
    ap.add_argument("--files", required=True,
                    help="file of the table's Parquet paths, one per line, relative to the data dir")
    ap.add_argument("--queries", required=True, help="JSON from `tidemark load queries --print`")
    ap.add_argument("--tidemark-report", help="JSON from `tidemark load queries --report`")
    ap.add_argument("--export", help="Parquet file to export to (default: in the data dir)")
    ap.add_argument("--report", help="write DuckDB's figures as JSON here")
    ap.add_argument("--reuse-export", action="store_true",
                    help="query an existing --export file instead of writing it again")
    args = ap.parse_args()

    export = args.export or os.path.join(args.data_dir, f"duckdb-export-{args.table}.parquet")
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    if not (args.reuse_export and os.path.exists(export)):
        export_table(con, args, export)
    rows = con.execute(f"SELECT count(*) FROM read_parquet('{export}')").fetchone()[0]
    print(f"{export}: {rows} rows, {os.path.getsize(export) / rows:.1f} bytes/row",
          file=sys.stderr)
    con.execute(f"CREATE VIEW {args.table} AS SELECT * FROM read_parquet('{export}')")

    with open(args.queries) as f:
        queries = json.load(f)
    by_kind = {}
    for q in queries:
        t = time.perf_counter()
        result = con.sql(q["sql"]).to_arrow_table()
        elapsed = (time.perf_counter() - t) * 1e3
        by_kind.setdefault(q["kind"], []).append((elapsed, result.num_rows))

    tidemark = {}
    if args.tidemark_report:
        with open(args.tidemark_report) as f:
            tidemark = {r["kind"]: r for r in json.load(f)}

    report = []
    print(f"{'query':<24} {'duckdb ms':>10} {'tidemark ms':>12} {'ratio':>7} {'rows':>8}")
    for kind, runs in by_kind.items():
        median = statistics.median(ms for ms, _ in runs)
        rows = runs[-1][1]
        tm = tidemark.get(kind, {}).get("latency", {}).get("p50_ms")
        ratio = f"{tm / median:7.2f}" if tm else "      -"
        tm_text = f"{tm:12.1f}" if tm else "           -"
        print(f"{kind:<24} {median:10.1f} {tm_text} {ratio} {rows:8}")
        report.append({"kind": kind, "runs": len(runs), "median_ms": median, "rows": rows})
    if args.report:
        with open(args.report, "w") as f:
            json.dump(report, f, indent=2)


def export_table(con, args, export):
    """Writes the table's live files into one Parquet file."""
    with open(args.files) as f:
        paths = [os.path.join(args.data_dir, p.strip()) for p in f if p.strip()]
    source = "[" + ", ".join(f"'{p}'" for p in paths) + "]"
    t = time.perf_counter()
    con.execute(
        f"COPY (SELECT * REPLACE (make_timestamp(epoch_ns(time) // 1000) AS time) FROM read_parquet({source})) "
        f"TO '{export}' "
        "(FORMAT parquet, COMPRESSION zstd)"
    )
    print(f"exported in {time.perf_counter() - t:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
