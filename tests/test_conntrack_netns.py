"""Connection tracking read on the real kernel: a private network namespace whose nft rule makes conntrack
track its traffic, 40 UDP flows to closed ports on its own loopback, and the snapshot module's reading of
/proc/net/stat/nf_conntrack and nf_conntrack_count/_max/_buckets before and after, as the report diffs them.

nf_conntrack_max is global on this kernel (a namespace other than the first gets EPERM writing it): the
table-full test lowers it to 10 for ~1 s and restores it (measured here: 30 of 40 flows dropped, 30 sends
refused with EPERM, early_drop 0: the few unreplied entries never share the new flow's buckets). The
namespace is named after DROPSCOPE_TEST_LAB and removed at the end; all traffic stays on its loopback (40
datagrams per test).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import LAB3_NAME
from dropscope.build import host_report
from dropscope.deltas import snapshot_deltas
from dropscope.findings import drop_counter_rows, host_findings
from dropscope.knowledge_base import default_knowledge
from dropscope.load import HostRecord

REPO = Path(__file__).resolve().parent.parent
NETNS = f"{LAB3_NAME}-ct"
FLOWS = 40
# Runs inside the namespace: the collection's own reader, as drop_counters runs it.
SNAPSHOT = """
import json, subprocess
from ansible_collections.dropscope.drops.plugins.module_utils.snapshot import HostReader, collect_snapshot
def run(argv):
    proc = subprocess.run(argv, capture_output=True, text=True)
    return proc.returncode, proc.stdout, proc.stderr
print(json.dumps(collect_snapshot(HostReader(run, lambda name: None), ethtool=False, firewall=False)))
"""
FLOWS_SCRIPT = """
import socket
for port in range(20000, 20000 + %d):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"x", ("127.0.0.1", port))
""" % FLOWS

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


def _in_netns(*argv: str, stdin: str | None = None) -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "collections"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(["ip", "netns", "exec", NETNS, *argv], input=stdin, capture_output=True, text=True,
                          timeout=30, check=False, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture
def tracked_netns(lab_name):  # noqa: ARG001 (the lab name is claimed: the namespace is named after it)
    subprocess.run(["ip", "netns", "del", NETNS], capture_output=True, check=False)
    subprocess.run(["ip", "netns", "add", NETNS], check=True, timeout=10)
    try:
        _in_netns("ip", "link", "set", "lo", "up")
        _in_netns("nft", "-f", "-", stdin="table inet dsh9ct {\n chain out {\n  type filter hook output priority 0;\n"
                                          "  ct state new counter accept\n }\n}\n")
        yield NETNS
    finally:
        subprocess.run(["ip", "netns", "del", NETNS], check=True, timeout=10)


def _snapshot() -> dict:
    return json.loads(_in_netns(sys.executable, "-c", SNAPSHOT))


def test_conntrack_counts_the_new_flows_exactly_as_the_kernel_does(tracked_netns):
    before = _snapshot()
    _in_netns(sys.executable, "-c", FLOWS_SCRIPT)
    after = _snapshot()
    kernel_count = int(_in_netns("cat", "/proc/sys/net/netfilter/nf_conntrack_count"))
    kernel_max = int(Path("/proc/sys/net/netfilter/nf_conntrack_max").read_text())

    assert before["conntrack"]["count"] == 0
    assert after["conntrack"]["count"] == kernel_count == FLOWS  # one entry per flow (they live 30 s)
    assert after["conntrack"]["max"] == kernel_max
    assert after["conntrack"]["stat"]["entries"] == FLOWS
    assert after["conntrack"]["stat"]["cpus"] == os.cpu_count()
    assert [e for e in after["errors"] if "conntrack" in e["source"]] == []
    counters = snapshot_deltas(before, after)["counters"]["conntrack"]
    assert (counters["count_now"], counters["max_now"]) == (FLOWS, kernel_max)
    assert counters.get("drop", 0) == counters.get("insert_failed", 0) == 0


SMALL_MAX = 10
# The same flows, counting the sends the kernel refused: a packet conntrack drops on the way out (table
# full) makes sendto fail with EPERM.
FLOWS_REFUSED_SCRIPT = """
import socket
refused = 0
for port in range(20000, 20000 + %d):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(b"x", ("127.0.0.1", port))
        except PermissionError:
            refused += 1
print(refused)
""" % FLOWS


@pytest.fixture
def small_conntrack_max():
    """nf_conntrack_max set to SMALL_MAX for the test, restored after (a global sysctl on this kernel).

    The lowered limit applies to every namespace's own count; it lasts the ~2 s of the test, while nothing
    else of the test suite runs.
    """
    path = Path("/proc/sys/net/netfilter/nf_conntrack_max")
    saved = path.read_text().strip()
    path.write_text(str(SMALL_MAX))
    try:
        yield SMALL_MAX
    finally:
        path.write_text(saved)
        assert path.read_text().strip() == saved


def test_a_full_conntrack_table_is_a_finding_with_the_exact_count(tracked_netns, small_conntrack_max):
    """40 new flows against a table of 10: the first 10 get entries; each of the other 30 finds the table
    full and either evicts an unreplied entry (early_drop) or is dropped (drop): exactly 30 in all. The
    report's own host steps turn the two snapshots into the conntrack findings, with those counts."""
    before = _snapshot()
    refused = int(_in_netns(sys.executable, "-c", FLOWS_REFUSED_SCRIPT))
    after = _snapshot()

    assert before["conntrack"]["count"] == 0
    assert after["conntrack"]["max"] == SMALL_MAX
    counters = snapshot_deltas(before, after)["counters"]["conntrack"]
    evicted, dropped = counters.get("early_drop", 0), counters.get("drop", 0)
    assert evicted + dropped == FLOWS - SMALL_MAX, counters
    assert dropped == refused  # each table-full drop is a send the application saw fail
    assert after["conntrack"]["count"] == SMALL_MAX

    knowledge = default_knowledge()
    host = host_report(HostRecord(host="ct", file="ct.json", status="ok", before=before, after=after))
    rows = drop_counter_rows(host, {}, knowledge)
    findings = {finding["key"]: finding for finding in host_findings(host, rows, knowledge)}
    expected = {key for key, count in (("counter:conntrack-table-full", dropped),
                                       ("counter:conntrack-early-drop", evicted)) if count}
    assert expected and expected <= set(findings), sorted(findings)
    for key in expected:
        assert findings[key]["severity"] in ("warning", "problem"), findings[key]
    if dropped:
        table_full = findings["counter:conntrack-table-full"]
        assert f"{SMALL_MAX}" in table_full["explanation"], table_full["explanation"]
