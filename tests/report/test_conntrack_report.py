"""Connection tracking in the report: deltas of its statistics, the table's fill, findings and the ledger.

Synthetic run directories written by the collection's run_record (dropscope_lab.synthetic); 10 s between
snapshots; every value exact.
"""

from __future__ import annotations

import pytest
from dropscope.build import build_report
from dropscope_lab.synthetic import advance, drop, make_capture, make_conntrack, make_host, make_snapshot, write_run

SECONDS = 10.0


def _host(name: str, conntrack: dict | None, increases: dict | None, drops: list[dict] | None = None) -> dict:
    before = make_snapshot(name, conntrack=conntrack)
    capture = make_capture(before["system"]["boot_id"], drops or [], backend="bpftrace", duration_s=SECONDS)
    after = advance(before, SECONDS, conntrack=increases)
    return make_host(name, before=before, capture=capture, after=after)


def _fleet() -> list[dict]:
    return [
        # the table is full: 300 packets of new connections dropped, 40 entries evicted; the capture saw 300
        _host("gw", make_conntrack(count=65_000, maximum=65_536, buckets=16_384, found=9_000),
              {"drop": 300, "early_drop": 40, "found": 1_200, "count": 65_536},
              [drop("NETFILTER_DROP", "nf_hook_slow", 300)]),
        # DNS through NAT: 25 insert races, 6 invalid packets; no capture drops
        _host("k8s", make_conntrack(), {"insert_failed": 25, "invalid": 6, "search_restart": 3}),
        # conntrack not loaded
        _host("plain", None, None),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return build_report(write_run(tmp_path_factory.mktemp("conntrack") / "run", _fleet()))


def _host_of(report: dict, name: str) -> dict:
    return next(host for host in report["hosts"] if host["host"] == name)


def _finding(host: dict, key: str) -> dict:
    return next(f for f in host["findings"] if f["key"] == key)


def test_deltas_of_the_statistics_and_the_tables_levels(report: dict) -> None:
    assert _host_of(report, "gw")["counters"]["conntrack"] == {
        "found": 1_200, "drop": 300, "early_drop": 40, "count_now": 65_536, "max_now": 65_536, "buckets_now": 16_384,
    }  # fmt: skip
    assert _host_of(report, "plain")["counters"]["conntrack"] == {}


def test_table_full_names_the_fill_and_the_knobs(report: dict) -> None:
    host = _host_of(report, "gw")
    finding = _finding(host, "NETFILTER_DROP")
    # the capture's NETFILTER_DROP and the counter that names why: the table was full
    assert [f["key"] for f in host["findings"]] == [
        "NETFILTER_DROP", "counter:conntrack-table-full", "counter:conntrack-early-drop"]
    early = _finding(host, "counter:conntrack-early-drop")
    assert (early["severity"], early["title"]) == (
        "warning", "The conntrack table was full and evicted entries (early_drop)")
    assert early["explanation"] == (
        "gw: the conntrack table was full and evicted unassured connections to make room — nf_conntrack_count 65,536"
        " of nf_conntrack_max 65,536 (nf_conntrack_buckets 16,384) — conntrack early_drop +40 (4/s)"
    )
    assert finding["severity"] == "problem"
    ledger = host["ledger"]
    assert ledger["rows"] == [
        {"section": "conntrack", "object": None, "counter": "drop", "delta": 300,
         "explained_by": {"NETFILTER_DROP": 300}, "unexplained": 0, "where": "kernel"},
    ]  # fmt: skip
    assert (ledger["drops"], ledger["explained"], ledger["unexplained"]) == (300, 300, 0)


def test_table_full_without_a_capture_is_its_own_finding(tmp_path) -> None:
    host = _host("edge", make_conntrack(count=1_000, maximum=1_024, buckets=256), {"drop": 50, "count": 1_024})
    (edge,) = build_report(write_run(tmp_path / "run", [host]))["hosts"]
    finding = _finding(edge, "counter:conntrack-table-full")
    assert (finding["severity"], finding["title"]) == (
        "problem", "The conntrack table was full (nf_conntrack: table full, dropping packet)")
    assert finding["explanation"] == (
        "edge: conntrack dropped packets of new connections because its table was full — nf_conntrack_count 1,024 of"
        " nf_conntrack_max 1,024 (nf_conntrack_buckets 256) — conntrack drop +50 (5/s)"
    )
    assert finding["knobs"][0] == {  # 2 × the table's fill (1,024), at least twice its size: 2,048
        "name": "net.netfilter.nf_conntrack_max", "value": "1024", "proposed": "2048",
        "why": "the table held 1024 of 1024 entries; 2 × its fill is 2048, rounded up to a power of two (each entry "
               "costs about 320 B of kernel memory)"}  # fmt: skip
    assert finding["advice"].startswith("Raise net.netfilter.nf_conntrack_max")
    row = edge["ledger"]["rows"][0]
    assert (row["counter"], row["unexplained"], row["where"]) == ("drop", 50, "kernel")
    assert row["note"].startswith("conntrack returns NF_DROP and nf_hook_slow frees the packet")


def test_insert_failures_and_invalid_packets(report: dict) -> None:
    host = _host_of(report, "k8s")
    assert [(f["key"], f["severity"]) for f in host["findings"]] == [
        ("counter:conntrack-insert-failed", "problem"),
        ("unexplained:kernel", "problem"),  # the 25 insert failures, which the capture did not see
        ("counter:conntrack-invalid", "warning"),
    ]
    insert = _finding(host, "counter:conntrack-insert-failed")
    assert insert["title"] == "Conntrack could not insert new connections (insert_failed)"
    assert insert["explanation"] == (
        "k8s: conntrack failed to insert new connections and dropped their packets (races or NAT clashes)"
        " — nf_conntrack_count 412 of nf_conntrack_max 262,144 (nf_conntrack_buckets 65,536)"
        " — conntrack insert_failed +25 (2.5/s)"
    )
    invalid = _finding(host, "counter:conntrack-invalid")
    assert invalid["title"] == "Conntrack saw packets it could not track (invalid)"
    # search_restart is activity, not drops; invalid packets are not dropped by conntrack: only insert_failed counts
    assert [(row["counter"], row["delta"]) for row in host["ledger"]["rows"]] == [("insert_failed", 25)]
