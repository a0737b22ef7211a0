"""Real InfluxDB client libraries write to a real `tidemark serve`; SQL returns exactly
what they wrote.

The binary comes from $TIDEMARK_BIN (set by .ci/run)."""

import json
import os
import re
import subprocess
import tempfile
import urllib.parse
import urllib.request

import pytest

BIN = os.environ.get("TIDEMARK_BIN", "target/debug/tidemark")


@pytest.fixture()
def server():
    with tempfile.TemporaryDirectory() as data:
        proc = subprocess.Popen(
            [BIN, "serve", "--data-dir", data, "--http-bind", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            env={**os.environ, "TIDEMARK_LOG": "warn"},
            text=True,
        )
        try:
            line = proc.stdout.readline()
            m = re.match(r"tidemark listening on (http://[\d.]+:(\d+))", line)
            assert m, f"unexpected first line: {line!r}"
            yield m.group(1), int(m.group(2))
        finally:
            proc.kill()
            proc.wait()


def sql(base, db, q):
    url = base + "/api/v3/query_sql?" + urllib.parse.urlencode(
        {"db": db, "q": q, "format": "json"}
    )
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


@pytest.mark.parametrize("gzip", [False, True])
def test_influxdb_client_v2_write_api(server, gzip):
    from influxdb_client import InfluxDBClient, Point, WritePrecision
    from influxdb_client.client.write_api import SYNCHRONOUS

    base, _ = server
    with InfluxDBClient(url=base, token="any", org="any", enable_gzip=gzip) as client:
        write = client.write_api(write_options=SYNCHRONOUS)
        write.write(
            bucket="pyv2",
            record=[
                Point("cpu")
                .tag("host", "a")
                .tag("region", "eu west")
                .field("usage", 1.5)
                .field("count", 3)
                .field("ok", True)
                .field("note", 'quote " comma, space')
                .time(1_700_000_000_000_000_000, WritePrecision.NS),
                Point("cpu")
                .tag("host", "b")
                .tag("region", "us")
                .field("usage", 2.25)
                .field("count", -4)
                .time(1_700_000_001, WritePrecision.S),
            ],
        )
        write.write(
            bucket="pyv2",
            record="cpu,host=c,region=us usage=9.5,count=7i 1700000002000",
            write_precision=WritePrecision.MS,
        )
    rows = sql(
        base,
        "pyv2",
        "SELECT host, region, usage, count, ok, note, CAST(time AS BIGINT) AS t "
        "FROM cpu ORDER BY host",
    )
    assert rows == [
        {"host": "a", "region": "eu west", "usage": 1.5, "count": 3, "ok": True,
         "note": 'quote " comma, space', "t": 1_700_000_000_000_000_000},
        {"host": "b", "region": "us", "usage": 2.25, "count": -4,
         "t": 1_700_000_001_000_000_000},
        {"host": "c", "region": "us", "usage": 9.5, "count": 7,
         "t": 1_700_000_002_000_000_000},
    ]


def test_influxdb_client_v2_rejects_bad_type(server):
    from influxdb_client import InfluxDBClient
    from influxdb_client.client.write_api import SYNCHRONOUS
    from influxdb_client.rest import ApiException

    base, _ = server
    with InfluxDBClient(url=base, token="any", org="any") as client:
        write = client.write_api(write_options=SYNCHRONOUS)
        write.write(bucket="b", record="m v=1.5 1")
        with pytest.raises(ApiException) as err:
            write.write(bucket="b", record="m v=\"text\" 2")
        assert err.value.status == 400
        assert "a float field" in err.value.body
    assert sql(base, "b", "SELECT count(*) AS n FROM m") == [{"n": 1}]


def test_influxdb_v1_client_write_points(server):
    from influxdb import InfluxDBClient

    _, port = server
    client = InfluxDBClient(host="127.0.0.1", port=port, database="pyv1")
    assert client.ping()
    ok = client.write_points(
        [
            {"measurement": "mem", "tags": {"host": "a"},
             "fields": {"free": 10, "used": 0.5}, "time": 1_700_000_000_000},
            {"measurement": "mem", "tags": {"host": "b"},
             "fields": {"free": 20, "used": 0.25}, "time": 1_700_000_001_000},
        ],
        time_precision="ms",
    )
    assert ok
    rows = sql(
        "http://127.0.0.1:%d" % port,
        "pyv1",
        "SELECT host, free, used, CAST(time AS BIGINT) AS t FROM mem ORDER BY host",
    )
    assert rows == [
        {"host": "a", "free": 10, "used": 0.5, "t": 1_700_000_000_000_000_000},
        {"host": "b", "free": 20, "used": 0.25, "t": 1_700_000_001_000_000_000},
    ]
