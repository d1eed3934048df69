"""A run recorded on the real 3-host lab (data/lab3-run): the report reads the producer's real output.

In that run h1 dropped 500 UDP datagrams in an nft rule, h2 got 300 datagrams to a closed port and h3
overflowed a tbf qdisc; the three hosts are network namespaces of one kernel.
"""

from __future__ import annotations

from pathlib import Path

from dropscope.build import build_report
from dropscope.render_html import render_html

LAB3_RUN = Path(__file__).parent / "data" / "lab3-run"


def test_real_run_numbers() -> None:
    report = build_report(LAB3_RUN)
    h1, h2, h3 = report["hosts"]

    assert report["warnings"] == []
    assert [host["status"] for host in report["hosts"]] == ["ok", "ok", "ok"]
    assert h1["counters"]["firewall"] == {"nft inet dropscope_lab input #2": {"packets": 500, "bytes": 46000}}
    assert h2["counters"]["protocols"]["UdpNoPorts"] == 300
    assert "UdpNoPorts" not in h1["counters"]["protocols"]
    assert h3["counters"]["qdiscs"] == {
        "eth0 tbf 8010:": {"bytes": 11098, "packets": 51, "dropped": 200, "overlimits": 202}
    }
    assert h3["interval_s"] == 6.892335  # from the monotonic clock
    assert report["run"]["command"].startswith("ansible-playbook playbooks/diagnose-drops.yml -i ")

    fleet = report["fleet"]
    assert fleet["kernels"] == [
        {"boot_id": "8b6ce9bc-ba96-4cce-8142-1cc194b15797", "hosts": ["h1", "h2", "h3"], "counted_from": "h1"}
    ]
    assert fleet["drops"] == 1095  # once, not 3 × 1095
    assert fleet["reasons"][:3] == [
        {"reason": "NETFILTER_DROP", "count": 500},
        {"reason": "NO_SOCKET", "count": 300},
        {"reason": "QDISC_DROP", "count": 198},
    ]

    html = render_html(report)
    assert "udp dport 8000 drop" in html  # the rule text, from the snapshot
    assert "Shares its kernel" in html
