"""Findings on the real lab: injected drops (tests/support/lab inject) get the right cause and knob on the right host.

h1 drops UDP to port 8000 in an nft rule, h2 gets datagrams to a closed port and overflows a receiver
that never reads (UDP port 9100), h3 stays idle. Whatever the capture's scope (a kernel-wide capture
shows every host's drops to every host), each finding must land on the host whose own counters show
it, and idle h3 must get verdict ok. Run with DROPSCOPE_TEST_LAB / DROPSCOPE_TEST_SUBNET set to a lab of
your own when other test runs share the machine.
"""

from __future__ import annotations

import json

import pytest
from conftest import lab_cli, run_playbook_injecting

DURATION = 4

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def findings_run(lab3, tmp_path_factory):
    runs_dir = tmp_path_factory.mktemp("findings-runs")
    # Rule and receiver exist before the first snapshot: their counters are deltas from there.
    lab_cli("inject", "udp-firewall", "--host", "h1", "--packets", "0")
    lab_cli("inject", "udp-rcvbuf", "--host", "h2", "--packets", "0")
    try:
        run = run_playbook_injecting(lab3, lambda: {
            "h1 udp-firewall": lab_cli("inject", "udp-firewall", "--host", "h1", "--packets", "500"),
            "h2 udp-noport": lab_cli("inject", "udp-noport", "--host", "h2", "--packets", "300"),
            "h2 udp-rcvbuf": lab_cli("inject", "udp-rcvbuf", "--host", "h2", "--packets", "300"),
        }, "-e", f"duration={DURATION}", runs_dir=runs_dir, run_id="findings")
    finally:
        lab_cli("inject", "clear", "--host", "h1")
        lab_cli("inject", "clear", "--host", "h2")
    output, injected = run["output"], run["injected"]
    report_path = runs_dir / "findings" / "report.json"
    assert run["rc"] == 0, output[-4000:]
    report = json.loads(report_path.read_text())
    return {"report": report, "injected": injected, "by_host": {h["host"]: h for h in report["hosts"]}}


def _owned(host: dict) -> dict[str, dict]:
    """The host's own findings (attributed to it), by key."""
    return {f["key"]: f for f in host["findings"] if f["attribution"] == "host"}


def test_each_recipe_lands_on_its_host_with_cause_and_knob(findings_run):
    by_host, injected = findings_run["by_host"], findings_run["injected"]
    assert injected["h1 udp-firewall"]["rule_counter_delta"] == 500
    assert injected["h2 udp-noport"]["udp_noports_delta"] == 300

    h1 = _owned(by_host["h1"])
    firewall = h1["NETFILTER_DROP"]
    assert firewall["severity"] == "problem"
    assert firewall["explanation"].startswith(
        "h1 drops inbound UDP to port 8000 in the firewall — rule `udp dport 8000"
    )
    assert "counted 500 packets" in firewall["explanation"]
    assert "the firewall rule (nft / iptables)" in [knob["name"] for knob in firewall["knobs"]]
    assert by_host["h1"]["verdict"] == "problem"

    h2 = _owned(by_host["h2"])
    noport = h2["NO_SOCKET"]
    assert noport["severity"] == "problem" and noport["explanation"].startswith(
        "h2 receives UDP datagrams for ports nobody listens on — UdpNoPorts +300"
    )
    rcvbuf = h2["SOCKET_RCVBUFF"]
    socket_drops = injected["h2 udp-rcvbuf"]["socket_drops_delta"]
    assert socket_drops > 20
    assert rcvbuf["severity"] == "problem"
    assert rcvbuf["explanation"].startswith("h2: the application on UDP port 9100 cannot keep up — ")
    assert "net.core.rmem_max" in [knob["name"] for knob in rcvbuf["knobs"]]
    counters = {c["counter"]: c["delta"] for c in rcvbuf["evidence"]["counters"]}
    assert counters["drops"] == counters["UdpRcvbufErrors"] == socket_drops
    assert by_host["h2"]["verdict"] == "problem"

    # Nothing of h2's lands on h1 and nothing of h1's on h2.
    assert "NO_SOCKET" not in h1 and "SOCKET_RCVBUFF" not in h1 and "NETFILTER_DROP" not in h2


def test_idle_host_is_ok(findings_run):
    h3 = findings_run["by_host"]["h3"]
    assert h3["status"] == "ok"
    assert h3["verdict"] == "ok", [(f["key"], f["severity"], f["explanation"]) for f in h3["findings"]]
    for finding in h3["findings"]:  # a kernel-wide capture shows the others' drops: never as h3's problem
        assert finding["severity"] == "info"
        if finding["key"] in ("NETFILTER_DROP", "NO_SOCKET", "SOCKET_RCVBUFF"):
            assert finding["attribution"] == "kernel-wide" and "not attributed to this host" in finding["explanation"]
