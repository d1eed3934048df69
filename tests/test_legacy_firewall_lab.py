"""iptables-legacy on the real lab: a legacy DROP rule's drops are named with the rule and its exact count.

h1 gets an iptables-legacy `-A INPUT -p udp --dport 8000 -j DROP` rule in its network namespace (the lab's
`iptables-legacy` scenario; h2 and h3 have no legacy tables, so nothing is read there). Two real playbook
runs inject datagrams to it while every capture is live:

(a) the default capture (auto -> bpftrace, this host's namespace only): the report names the rule with +500
    and the ledger explains those 500 by NETFILTER_DROP at nf_hook_slow;
(b) `-e backend=perf` (one capture of the whole kernel on every host: the hosts share it): the 300 drops are
    attributed to h1, whose rule counted them, not left "kernel-wide, not attributed"; h2 and h3 stay ok.

Run with DROPSCOPE_TEST_LAB / DROPSCOPE_TEST_SUBNET set to a lab of your own when other test runs share the
machine. The rule goes with `inject clear` and, at the latest, with the lab's namespaces (`lab3` removes them).
"""

from __future__ import annotations

import json

import pytest
from conftest import lab_cli, run_playbook_injecting

DURATION = 4
RULE_KEY = "iptables filter INPUT #1"
RULE_TEXT = "-p udp -m udp --dport 8000 -j DROP"
PACKETS = {"bpftrace": 500, "perf": 300}

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def legacy_runs(lab3, tmp_path_factory):
    runs_dir = tmp_path_factory.mktemp("legacy-runs")
    runs = {}
    # The rule exists before the first snapshot: its counter is a delta from there.
    lab_cli("inject", "iptables-legacy", "--host", "h1", "--packets", "0")
    try:
        for backend, extra in (("bpftrace", ()), ("perf", ("-e", "backend=perf"))):
            packets = PACKETS[backend]
            run = run_playbook_injecting(
                lab3, lambda n=packets: lab_cli("inject", "iptables-legacy", "--host", "h1", "--packets", str(n)),
                "-e", f"duration={DURATION}", *extra, runs_dir=runs_dir, run_id=f"legacy-{backend}")
            assert run["rc"] == 0, run["output"][-4000:]
            report = json.loads((runs_dir / f"legacy-{backend}" / "report.json").read_text())
            runs[backend] = {"injected": run["injected"], "report": report,
                             "by_host": {host["host"]: host for host in report["hosts"]}}
    finally:
        cleared = lab_cli("inject", "clear", "--host", "h1")
    assert "iptables-legacy rule udp dport 8000 DROP" in cleared["removed"]
    return runs


def _finding(host: dict, key: str) -> dict:
    return next(f for f in host["findings"] if f["key"] == key)


def _ledger_row(host: dict, obj: str) -> dict:
    return next(row for row in host["ledger"]["rows"] if row["object"] == obj)


def test_default_capture_names_the_legacy_rule_with_its_exact_count(legacy_runs):
    run = legacy_runs["bpftrace"]
    assert run["injected"]["rule_counter_delta"] == 500
    h1 = run["by_host"]["h1"]
    assert (h1["capture"]["status"], h1["capture"]["backend"], h1["capture"]["scope"]) == ("ok", "bpftrace", "netns")
    assert h1["firewall_rules"][RULE_KEY] == RULE_TEXT
    assert h1["counters"]["firewall"][RULE_KEY]["packets"] == 500
    # The only drop counter among the legacy rules that moved (the ACCEPT policies counted SSH traffic).
    assert h1["drop_counters"]["firewall"] == {RULE_KEY: {"packets": "iptables-rule-packets"}}
    finding = _finding(h1, "NETFILTER_DROP")
    assert (finding["attribution"], finding["severity"]) == ("host", "problem")
    assert finding["explanation"].startswith(
        f"h1 drops inbound UDP to port 8000 in the firewall — rule `{RULE_TEXT}` ({RULE_KEY}) counted 500 packets ("
    )
    assert "; kfree_skb saw 500 NETFILTER_DROP at nf_hook_slow (" in finding["explanation"]
    assert [(d["reason"], d["location"], d["count"], d["direction"]) for d in h1["capture"]["drops"]
            if d["reason"] == "NETFILTER_DROP"] == [("NETFILTER_DROP", "nf_hook_slow", 500, "rx")]
    assert _ledger_row(h1, RULE_KEY) == {
        "section": "firewall", "object": RULE_KEY, "counter": "packets", "delta": 500,
        "explained_by": {"NETFILTER_DROP": 500}, "unexplained": 0, "where": "kernel"}
    assert h1["verdict"] == "problem"
    for name in ("h2", "h3"):
        host = run["by_host"][name]
        assert host["verdict"] == "ok", [(f["key"], f["severity"], f["explanation"]) for f in host["findings"]]
        assert not (host.get("firewall_rules") or {})


def test_perf_on_a_shared_kernel_attributes_the_drops_to_the_host_whose_rule_counted_them(legacy_runs):
    run = legacy_runs["perf"]
    assert run["injected"]["rule_counter_delta"] == 300
    by_host = run["by_host"]
    for host in by_host.values():
        assert (host["capture"]["status"], host["capture"]["backend"], host["capture"]["scope"]) == (
            "ok", "perf", "kernel")
    h1 = by_host["h1"]
    finding = _finding(h1, "NETFILTER_DROP")
    assert (finding["attribution"], finding["attributed_to"]) == ("host", ["h1"])
    assert finding["severity"] in ("warning", "problem")
    assert finding["explanation"].startswith(
        f"h1 drops inbound UDP to port 8000 in the firewall — rule `{RULE_TEXT}` ({RULE_KEY}) counted 300 packets ("
    )
    # The whole kernel's capture saw at least h1's 300 at nf_hook_slow; the rule's 300 are explained by them.
    assert sum(d["count"] for d in h1["capture"]["drops"]
               if (d["reason"], d["location"]) == ("NETFILTER_DROP", "nf_hook_slow")) >= 300
    assert _ledger_row(h1, RULE_KEY) == {
        "section": "firewall", "object": RULE_KEY, "counter": "packets", "delta": 300,
        "explained_by": {"NETFILTER_DROP": 300}, "unexplained": 0, "where": "kernel"}
    assert h1["verdict"] != "ok"
    for name in ("h2", "h3"):
        host = by_host[name]
        assert host["verdict"] == "ok", [(f["key"], f["severity"], f["explanation"]) for f in host["findings"]]
        seen = _finding(host, "NETFILTER_DROP")
        assert (seen["attribution"], seen["attributed_to"], seen["severity"]) == ("kernel-wide", ["h1"], "info")
        assert seen["explanation"].startswith(
            "NETFILTER_DROP seen kernel-wide (shared kernel), not attributed to this host: h1's own counters show it"
        )
    assert "NETFILTER_DROP" not in [f["key"] for f in run["report"]["fleet"]["findings"]]
