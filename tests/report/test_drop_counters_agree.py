"""Page, findings and `dropscope check` agree, counter by counter, on which counters count drops.

The knowledge base (knowledge_base.py + knowledge/counters.yml) is the only place that decides; the
builder marks each host's drop counters in report.json (`drop_counters`) and the three readers use those
marks. The same counters go to all three here and each must name exactly the expected drop counters.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from dropscope.build import build_report
from dropscope.check import check_report, load_thresholds
from dropscope.render_html import render_html
from dropscope_lab.synthetic import (
    advance,
    make_capture,
    make_host,
    make_interface,
    make_qdisc,
    make_rule,
    make_snapshot,
    veth_ethtool,
    write_run,
)

DROP_RULE = "nft inet filter input #3"
ACCEPT_RULE = "nft inet filter input #4"
QDISC = "eth0 tbf 8001:"

# Every counter that moves, and whether it counts drops (as knowledge/counters.yml says).
MOVED = {
    "interfaces eth0 ethtool:rx_queue_0_xdp_tx_errors": False,  # ethtool-xdp-other: drop: false
    "interfaces eth0 ethtool:rx_queue_0_xdp_drops": True,  # ethtool-xdp-drops
    "interfaces eth0 rx_missed_errors": True,  # if-rx-missed
    "interfaces eth0 rx_packets": False,  # traffic (no entry matches)
    "protocols UdpNoPorts": True,  # udp-noports
    "protocols TcpExtTCPSomethingFailed": True,  # no own entry: drop-or-error-by-name
    "protocols IpInReceives": False,
    f"qdiscs {QDISC} dropped": True,  # qdisc-dropped
    f"qdiscs {QDISC} overlimits": False,  # shaping, not a drop
    f"qdiscs {QDISC} packets": False,
    f"firewall {DROP_RULE} packets": True,  # firewall-rule-packets: the rule drops
    f"firewall {DROP_RULE} bytes": False,
    f"firewall {ACCEPT_RULE} packets": False,  # the rule accepts: traffic, not drops
    f"firewall {ACCEPT_RULE} bytes": False,
}
EXPECTED_DROPS = {
    "interfaces eth0 ethtool:rx_queue_0_xdp_drops",
    "interfaces eth0 rx_missed_errors",
    "protocols UdpNoPorts",
    "protocols TcpExtTCPSomethingFailed",
    f"qdiscs {QDISC} dropped",
    f"firewall {DROP_RULE} packets",
}


def _run(tmp_path: Path) -> Path:
    boot_id = "a9ee0000-0000-4000-8000-000000000001"
    before = make_snapshot(
        "h1",
        boot_id=boot_id,
        interfaces={"eth0": make_interface(ethtool=veth_ethtool(), base=1_000)},
        qdiscs=dict([make_qdisc("eth0", "tbf", "8001:", dropped=1, overlimits=1, packets=10)]),
        firewall=dict([make_rule("inet", "filter", "input", 3, "udp dport 8000 counter drop"),
                       make_rule("inet", "filter", "input", 4, "tcp dport 22 counter accept")]),
    )  # fmt: skip
    before["protocols"]["TcpExtTCPSomethingFailed"] = 0
    after = advance(
        before,
        4.0,
        interfaces={"eth0": {"ethtool:rx_queue_0_xdp_tx_errors": 7, "ethtool:rx_queue_0_xdp_drops": 2,
                             "rx_missed_errors": 5, "rx_packets": 900}},
        protocols={"UdpNoPorts": 30, "TcpExtTCPSomethingFailed": 4, "IpInReceives": 1_000},
        qdiscs={QDISC: {"dropped": 11, "overlimits": 40, "packets": 300}},
        firewall={DROP_RULE: {"packets": 12, "bytes": 720}, ACCEPT_RULE: {"packets": 80, "bytes": 6_400}},
    )  # fmt: skip
    host = make_host("h1", before=before, capture=make_capture(boot_id, []), after=after)
    return write_run(tmp_path / "run", [host])


def _page_rows(html: str) -> dict[str, bool]:
    """subject → highlighted as a drop, from the data embedded in report.html (what its script draws)."""
    match = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S)
    assert match
    detail = json.loads(match.group(1))["details"][0]["hosts"][0]
    rows = {}
    for section, _title, _object_title, section_rows in detail["sections"]:
        for row in section_rows:
            rows[" ".join(part for part in (section, row[0], row[1]) if part)] = row[5]
    for section, obj, counter, *rest in detail["other"]:
        rows[" ".join(part for part in (section, obj, counter) if part)] = rest[3]
    return rows


def test_page_findings_and_check_name_the_same_drop_counters(tmp_path: Path) -> None:
    run_dir = _run(tmp_path)
    report = build_report(run_dir)
    host = report["hosts"][0]
    softnet = {"softnet processed"}  # make_snapshot's CPUs: only `processed` moves (never a drop)

    # The page: every moved counter is shown, and exactly the drop counters are highlighted.
    page = _page_rows(render_html(report))
    assert set(page) - softnet == set(MOVED)
    assert {subject for subject, drop in page.items() if drop} == EXPECTED_DROPS

    # The findings: their evidence lists exactly the drop counters.
    evidence = {
        " ".join(part for part in (row["section"], row["object"], row["counter"]) if part)
        for finding in host["findings"]
        for row in finding["evidence"]["counters"]
    }
    assert evidence == EXPECTED_DROPS

    # check: a threshold on every drop counter (`counter: "*"`, `drop: true`) fires on exactly those.
    thresholds = tmp_path / "thresholds.yml"
    thresholds.write_text('counters:\n  - {counter: "*", drop: true, max_count: 0}\n')
    outcome = check_report(report, load_thresholds(thresholds))
    assert {violation["subject"] for violation in outcome["cases"][0]["violations"]} == EXPECTED_DROPS
    # ... and without `drop: true` on every counter that moved.
    thresholds.write_text('counters:\n  - {counter: "*", max_count: 0}\n')
    outcome = check_report(report, load_thresholds(thresholds))
    assert {violation["subject"] for violation in outcome["cases"][0]["violations"]} - softnet == set(MOVED)

    # report.json carries the marks with the knowledge base's entry for each.
    assert host["drop_counters"] == {
        "protocols": {"UdpNoPorts": "udp-noports", "TcpExtTCPSomethingFailed": "drop-or-error-by-name"},
        "interfaces": {"eth0": {"ethtool:rx_queue_0_xdp_drops": "ethtool-xdp-drops",
                                "rx_missed_errors": "if-rx-missed"}},
        "qdiscs": {QDISC: {"dropped": "qdisc-dropped"}},
        "firewall": {DROP_RULE: {"packets": "firewall-rule-packets"}},
    }  # fmt: skip
    assert host["firewall_rules"] == {
        DROP_RULE: "udp dport 8000 counter drop",
        ACCEPT_RULE: "tcp dport 22 counter accept",
    }


def test_a_host_whose_capture_did_not_run_is_failed_with_its_reason(tmp_path: Path) -> None:
    boot_id = "a9ee0000-0000-4000-8000-000000000002"
    before = make_snapshot("h1", boot_id=boot_id)
    reason = "port filter needs the bpftrace backend"
    capture = make_capture(boot_id, backend="perf", status="failed", reason=reason)
    host = make_host("h1", status="failed", before=before, capture=capture, after=advance(before, 2.0))
    run_dir = write_run(tmp_path / "run", [host])

    subprocess.run([sys.executable, "-m", "dropscope", "report", str(run_dir)], check=True, capture_output=True)
    report = json.loads((run_dir / "report.json").read_text())
    (failed,) = report["hosts"]
    assert (failed["status"], failed["verdict"]) == ("failed", "unknown")
    assert reason in failed["error"]
    assert (failed["capture"]["status"], failed["capture"]["reason"]) == ("failed", reason)
    assert report["fleet"]["failed"] == 1
    html = (run_dir / "report.html").read_text()
    assert json.dumps(failed["error"])[1:-1].replace("<", "\\u003c") in html  # the host's drill-down
    assert f"{failed['error']}</" in html  # the fleet overview's list of failed hosts

    thresholds = tmp_path / "thresholds.yml"
    thresholds.write_text("reasons:\n  - {max_count: 1000}\n")
    check = subprocess.run(
        [sys.executable, "-m", "dropscope", "check", str(run_dir), "--thresholds", str(thresholds)],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 3, check.stdout + check.stderr
    assert f"h1: failed: {failed['error']}" in check.stdout
