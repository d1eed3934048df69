"""Connection tracking read on the real kernel: a private network namespace whose nft rule makes conntrack
track its traffic, 40 UDP flows to closed ports on its own loopback, and the snapshot module's reading of
/proc/net/stat/nf_conntrack and nf_conntrack_count/_max/_buckets before and after, as the report diffs them.

nf_conntrack_max is not changed: on this kernel it is global (a namespace other than the first gets EPERM
writing it), and lowering it would drop other namespaces' connections. The namespace is named after
DROPSCOPE_TEST_LAB and removed at the end; all traffic stays on its loopback (40 datagrams).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import LAB3_NAME
from dropscope.deltas import snapshot_deltas

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
def tracked_netns():
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
