"""`/metrics` of a real `tidemark serve` parses with the Prometheus client library's
OpenMetrics parser, and its counters move when writes and queries happen."""

import json
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families

from test_influx_clients import server, sql  # noqa: F401 (pytest fixture)


def scrape(base):
    with urllib.request.urlopen(base + "/metrics", timeout=30) as resp:
        assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
        text = resp.read().decode()
    samples = {}
    families = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = family.type
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return families, samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def post(base, path, body):
    req = urllib.request.Request(base + path, data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def test_metrics_parse_and_move(server):  # noqa: F811
    base, _ = server
    families, before = scrape(base)
    for name, kind in {
        "tidemark_write_lines": "counter",
        "tidemark_log_fsync_duration_seconds": "histogram",
        "tidemark_buffer_bytes": "gauge",
        "tidemark_query_duration_seconds": "histogram",
        "tidemark_persist_runs": "counter",
        "tidemark_compaction_runs": "counter",
    }.items():
        assert families.get(name) == kind, (name, families.get(name))

    lines = "".join(f"cpu,host=h{i % 3} v={i} {i}\n" for i in range(100)).encode()
    assert post(base, "/api/v3/write_lp?db=m", lines) == 204
    assert post(base, "/api/v3/write_lp?db=m", b"cpu,host=x v=1 1\nbad line\n") == 400
    assert post(base, "/api/v3/write_lp", lines) == 400  # no db
    assert sql(base, "m", "SELECT count(*) AS n FROM cpu")[0]["n"] == 101

    _, after = scrape(base)
    assert value(after, "tidemark_write_lines_total") - value(before, "tidemark_write_lines_total") == 101
    assert value(after, "tidemark_write_rejected_lines_total") == 1
    assert value(after, "tidemark_write_requests_total") == 3
    assert value(after, "tidemark_write_errors_total", kind="bad_lines") == 1
    assert value(after, "tidemark_write_errors_total", kind="bad_request") == 1
    assert value(after, "tidemark_write_request_bytes_total") >= len(lines)
    assert value(after, "tidemark_log_appends_total") >= 2
    assert value(after, "tidemark_log_fsyncs_total") >= 2
    assert value(after, "tidemark_log_fsync_duration_seconds_count") >= 2
    assert value(after, "tidemark_buffer_bytes") > 0
    assert value(after, "tidemark_queries_total") == 1
    assert value(after, "tidemark_query_duration_seconds_count") == 1

    with_error = base + "/api/v3/query_sql?db=m&q=SELECT+nope+FROM+cpu"
    try:
        urllib.request.urlopen(with_error, timeout=30)
    except urllib.error.HTTPError:
        pass
    _, last = scrape(base)
    assert value(last, "tidemark_query_errors_total", kind="sql") == 1


def test_topic_metrics_parse_and_move(server):  # noqa: F811
    base, _ = server
    assert post(base, "/api/v3/topics", b'{"name": "metered", "partitions": 2}') == 201
    families, before = scrape(base)
    assert families.get("tidemark_topic_produced_records") == "counter"
    assert value(before, "tidemark_topic_produced_records_total", topic="metered") == 0

    records = "".join(f'{{"key": "k{i % 4}", "value": {{"n": {i}}}}}\n' for i in range(40)).encode()
    assert post(base, "/api/v3/topics/metered/records", records) == 200
    assert post(base, "/api/v3/topics/metered/records", b'{"value": 1}\nnot json\n') == 400
    read = 0
    for p in range(2):
        url = f"{base}/api/v3/topics/metered/records?partition={p}&offset=earliest"
        with urllib.request.urlopen(url, timeout=30) as resp:
            read += len(json.loads(resp.read())["records"])
    assert read == 40

    _, after = scrape(base)
    assert value(after, "tidemark_topic_produced_records_total", topic="metered") == 40
    assert value(after, "tidemark_topic_consumed_records_total", topic="metered") == 40
    produced_bytes = value(after, "tidemark_topic_produced_bytes_total", topic="metered")
    assert produced_bytes == value(after, "tidemark_topic_consumed_bytes_total", topic="metered")
    assert produced_bytes >= 40 * len('k0{"n":0}')
