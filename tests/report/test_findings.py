"""Findings: each drop recipe, as synthetic counters and capture, gives the right cause and knob on the right host."""

from __future__ import annotations

from pathlib import Path

import pytest
from dropscope.build import build_report
from dropscope.knowledge_base import load_knowledge
from dropscope_lab.synthetic import (
    advance,
    drop,
    make_capture,
    make_host,
    make_interface,
    make_qdisc,
    make_rule,
    make_snapshot,
    make_socket,
    simple_host,
    write_run,
)

SHARED = "5a4ed000-0000-4000-8000-00000000000a"
ANY = "0.0.0.0"  # noqa: S104 (an address in test data)


def _host(name: str, drops: list[dict], boot_id: str | None = None, seconds: float = 5.0, **setup: dict) -> dict:
    """A host whose snapshots have SETUP's objects (qdiscs, firewall, sockets, interfaces) and increases."""
    boot_id = boot_id or f"{name}-kernel-0000-0000-000000000000"
    objects = {key: setup.pop(key) for key in ("qdiscs", "firewall", "sockets", "interfaces") if key in setup}
    # A counter the snapshot did not have before gets no delta (model.py): give new ones a 0 before.
    base_protocols = dict.fromkeys(setup.get("protocols") or {}, 0)
    before = make_snapshot(name, boot_id=boot_id, protocols=base_protocols, **objects)
    after = advance(before, seconds, **setup)
    return make_host(name, before=before, capture=make_capture(boot_id, drops, duration_s=5.0), after=after)


def _findings(tmp_path: Path, hosts: list[dict], knowledge_file: Path | None = None) -> dict[str, dict]:
    report = build_report(write_run(tmp_path / "run", hosts), load_knowledge(knowledge_file))
    return {host["host"]: host for host in report["hosts"]} | {"__fleet__": report["fleet"]}


def _worst(host: dict) -> dict:
    return host["findings"][0]


def test_firewall_drop_names_the_rule_and_port(tmp_path: Path) -> None:
    rule_key, rule = make_rule("inet", "dropscope_lab", "input", 2, "udp dport 8000 drop")
    host = _host("h1", [drop("NETFILTER_DROP", "nft_do_chain", 500)], firewall={rule_key: rule})
    host["after"]["firewall"][rule_key]["packets"] = 500
    h1 = _findings(tmp_path, [host])["h1"]
    finding = _worst(h1)
    assert (finding["key"], finding["severity"], finding["attribution"]) == ("NETFILTER_DROP", "problem", "host")
    assert finding["explanation"].startswith(
        "h1 drops inbound UDP to port 8000 in the firewall — rule `udp dport 8000 drop` "
        "(nft inet dropscope_lab input #2) counted 500 packets (100/s)"
    )
    assert "the firewall rule (nft / iptables)" in [knob["name"] for knob in finding["knobs"]]
    assert finding["evidence"]["counters"][0]["detail"] == "udp dport 8000 drop"
    assert finding["evidence"]["rate"] == 100.0
    assert h1["verdict"] == "problem"


def test_udp_noport(tmp_path: Path) -> None:
    h2 = _findings(tmp_path, [_host("h2", [drop("NO_SOCKET", "__udp4_lib_rcv", 300)], protocols={"UdpNoPorts": 300})])[
        "h2"
    ]
    finding = _worst(h2)
    assert finding["key"] == "NO_SOCKET" and finding["severity"] == "problem"
    assert finding["explanation"].startswith("h2 receives UDP datagrams for ports nobody listens on — UdpNoPorts +300")
    assert [c["counter"] for c in finding["evidence"]["counters"]] == ["UdpNoPorts"]
    assert "ss -ulpn" in finding["advice"]


def test_udp_rcvbuf_names_the_port_and_rmem_max(tmp_path: Path) -> None:
    socket = make_socket("udp", "198.18.3.4", 9100, 0, inode=41)
    host = _host(
        "h3",
        [drop("SOCKET_RCVBUFF", "__udp_enqueue_schedule_skb", 290)],
        sockets=[socket],
        protocols={"UdpRcvbufErrors": 290, "UdpInErrors": 290},
    )
    host["after"]["sockets"][0]["drops"] = 290
    finding = _worst(_findings(tmp_path, [host])["h3"])
    assert finding["key"] == "SOCKET_RCVBUFF" and finding["severity"] == "problem"
    assert finding["explanation"].startswith("h3: the application on UDP port 9100 cannot keep up — ")
    assert "net.core.rmem_max" in [knob["name"] for knob in finding["knobs"]] and "SO_RCVBUF" in finding["advice"]
    assert {c["counter"] for c in finding["evidence"]["counters"]} == {"UdpRcvbufErrors", "UdpInErrors", "drops"}


def test_qdisc_tx_names_the_qdisc_and_device(tmp_path: Path) -> None:
    key, qdisc = make_qdisc("tx0", "tbf", "8001:")
    host = _host(
        "h3",
        [drop("QDISC_DROP", "__dev_queue_xmit", 198)],
        qdiscs={key: qdisc},
        protocols={"IpOutDiscards": 197, "UdpSndbufErrors": 197},
    )
    host["after"]["qdiscs"][key]["dropped"] = 200
    finding = _worst(_findings(tmp_path, [host])["h3"])
    assert finding["key"] == "QDISC_DROP" and finding["direction"] == "transmit"
    assert finding["explanation"].startswith("h3 drops on transmit in the tbf qdisc of tx0 — ")
    assert any("txqueuelen" in knob["name"] for knob in finding["knobs"])
    # IpOutDiscards and UdpSndbufErrors corroborate it: no separate findings for them. The qdisc's 2 drops
    # beyond the 198 captured are the ledger's unexplained finding.
    again = _findings(tmp_path / "again", [host])["h3"]
    assert [f["key"] for f in again["findings"]] == ["QDISC_DROP", "unexplained:kernel"]
    assert again["ledger"]["unexplained"] == 2


@pytest.mark.parametrize(
    ("increases", "reason", "knob"),
    [
        (
            {"protocols": {"TcpExtListenOverflows": 40, "TcpExtListenDrops": 40}},
            "TCP_LISTEN_OVERFLOW",
            "net.core.somaxconn",
        ),
        (
            {"protocols": {"TcpExtIPReversePathFilter": 25}},
            "IP_RPFILTER",
            "net.ipv4.conf.*.rp_filter (0 off, 1 strict, 2 loose)",
        ),
        ({"softnet": {0: {"dropped": 120}}}, "CPU_BACKLOG", "net.core.netdev_max_backlog"),
    ],
)
def test_counter_only_recipes(tmp_path: Path, increases: dict, reason: str, knob: str) -> None:
    """Listen overflow is invisible to kfree_skb (consume_skb): counters alone give the finding."""
    host = _findings(tmp_path, [_host("h1", [], **increases)])["h1"]
    finding = _worst(host)
    assert (finding["key"], finding["kind"], finding["reason"]) == (reason, "counter", reason)
    assert knob in [entry["name"] for entry in finding["knobs"]] and finding["severity"] == "problem"


def test_otherhost_is_at_most_a_warning(tmp_path: Path) -> None:
    eth0 = make_interface(statistics={"rx_otherhost_dropped": 0}, base=10)
    host = _host("h1", [drop("OTHERHOST", "ip_rcv_core", 900)], interfaces={"eth0": eth0})
    host["after"]["interfaces"]["eth0"]["statistics"]["rx_otherhost_dropped"] = 900
    finding = _worst(_findings(tmp_path, [host])["h1"])
    assert finding["key"] == "OTHERHOST" and finding["severity"] == "warning"
    assert finding["evidence"]["counters"][0]["counter"] == "rx_otherhost_dropped"


def test_idle_host_is_ok_and_noise_is_info(tmp_path: Path) -> None:
    hosts = [
        simple_host("idle"),
        simple_host(
            "noisy",
            [
                drop("QUEUE_PURGE", "sk_stream_kill_queues", 27),
                drop("NOT_SPECIFIED", "tcp_v4_rcv", 3),
                drop("IPV6DISABLED", "ip6_rcv_core", 37),
            ],
        ),
    ]
    by_name = _findings(tmp_path, hosts)
    assert by_name["idle"]["verdict"] == "ok" and by_name["idle"]["findings"] == []
    noisy = by_name["noisy"]
    assert noisy["verdict"] == "ok"
    assert {f["key"]: (f["severity"], f["benign"]) for f in noisy["findings"]} == {
        "QUEUE_PURGE": ("info", True),
        "NOT_SPECIFIED@noise": ("info", True),
        "IPV6DISABLED": ("info", True),
    }
    assert by_name["__fleet__"]["verdict"] == "ok"


def test_unknown_reason_is_shown_raw_not_hidden(tmp_path: Path) -> None:
    host = _findings(tmp_path, [simple_host("h1", [drop("BRAND_NEW_REASON", "new_func", 500)])])["h1"]
    finding = _worst(host)
    assert (finding["key"], finding["known"], finding["severity"]) == ("BRAND_NEW_REASON", False, "warning")
    assert "no advice" in finding["advice"] and "new_func" in finding["explanation"]


def test_shared_kernel_attributes_drops_to_the_host_whose_counters_show_them(tmp_path: Path) -> None:
    """perf (scope kernel) shows every namespace's drops to every host on one kernel."""
    drops = [
        drop("NETFILTER_DROP", "nft_do_chain", 500),
        drop("NO_SOCKET", "__udp4_lib_rcv", 300),
        drop("NOT_SPECIFIED", "ip_rcv_finish_core", 30),
    ]
    rule_key, rule = make_rule("inet", "dropscope_lab", "input", 2, "udp dport 8000 drop")
    h1 = _host("h1", drops, boot_id=SHARED, firewall={rule_key: rule})
    h1["after"]["firewall"][rule_key]["packets"] = 500
    h2 = _host("h2", drops, boot_id=SHARED, protocols={"UdpNoPorts": 300})
    h3 = _host("h3", drops, boot_id=SHARED)
    by_name = _findings(tmp_path, [h1, h2, h3])
    summary = {
        name: {f["key"]: (f["severity"], f["attribution"], f["attributed_to"]) for f in by_name[name]["findings"]}
        for name in ("h1", "h2", "h3")
    }
    assert summary["h1"]["NETFILTER_DROP"] == ("problem", "host", ["h1"])
    assert summary["h1"]["NO_SOCKET"] == ("info", "kernel-wide", ["h2"])
    assert summary["h2"]["NO_SOCKET"] == ("problem", "host", ["h2"])
    assert summary["h2"]["NETFILTER_DROP"] == ("info", "kernel-wide", ["h1"])
    assert summary["h3"]["NETFILTER_DROP"] == ("info", "kernel-wide", ["h1"])
    assert [by_name[n]["verdict"] for n in ("h1", "h2", "h3")] == ["problem", "problem", "ok"]
    h3_text = next(f for f in by_name["h3"]["findings"] if f["key"] == "NO_SOCKET")["explanation"]
    assert h3_text.startswith("NO_SOCKET seen kernel-wide (shared kernel), not attributed to this host: h2's own")
    fleet = by_name["__fleet__"]
    assert [(f["key"], f["severity"], f["hosts"]) for f in fleet["findings"]] == [
        ("NOT_SPECIFIED", "warning", ["h1", "h2", "h3"])
    ]
    assert fleet["verdict"] == "problem"
    assert fleet["verdicts"] == {"ok": 1, "warning": 0, "problem": 2, "unknown": 0}


def test_unreachable_host_verdict_unknown(tmp_path: Path) -> None:
    by_name = _findings(tmp_path, [simple_host("idle"), make_host("down", status="unreachable", error="timed out")])
    assert (by_name["down"]["verdict"], by_name["idle"]["verdict"]) == ("unknown", "ok")
    assert by_name["__fleet__"]["verdicts"]["unknown"] == 1 and by_name["__fleet__"]["verdict"] == "ok"


def test_user_knowledge_overrides_and_extends(tmp_path: Path) -> None:
    user = tmp_path / "site.yml"
    user.write_text(
        "severity:\n  problem: {rate: 1000, count: 1}\n"
        "reasons:\n  NO_SOCKET:\n    advice: Ask the DNS team.\n  BRAND_NEW_REASON:\n    title: Site-specific\n"
        "    explain: '{host} hits the new thing'\n    advice: Restart it.\n    max_severity: warning\n"
    )
    hosts = [simple_host("h1", [drop("NO_SOCKET", "__udp4_lib_rcv", 300), drop("BRAND_NEW_REASON", "f", 5)])]
    by_name = _findings(tmp_path, hosts, user)
    findings = {f["key"]: f for f in by_name["h1"]["findings"]}
    assert findings["NO_SOCKET"]["advice"] == "Ask the DNS team."
    assert findings["NO_SOCKET"]["severity"] == "problem"  # the reason's own thresholds (10/s, 100) still apply
    assert findings["BRAND_NEW_REASON"]["known"] and findings["BRAND_NEW_REASON"]["title"] == "Site-specific"
    assert findings["BRAND_NEW_REASON"]["explanation"].startswith("h1 hits the new thing — ")


def test_every_counter_reason_exists_and_corroborates() -> None:
    """counters.yml and reasons.yml agree: a counter's reason exists and lists the counter as corroboration."""
    knowledge = load_knowledge()
    for rule in knowledge.counters:
        reason = rule.entry.get("reason")
        if reason is None:
            assert rule.entry.get("drop") is False or rule.is_generic or rule.entry.get("advice"), rule.id
            continue
        assert knowledge.reason(reason) is not None, rule.id
        for pattern in rule.patterns:
            name = pattern.replace("*", "x")
            assert all(knowledge.corroborates(reason, section, name) for section in rule.sections), (rule.id, name)
    for name in (
        "NO_SOCKET",
        "NETFILTER_DROP",
        "SOCKET_RCVBUFF",
        "SOCKET_BACKLOG",
        "TCP_LISTEN_OVERFLOW",
        "QDISC_DROP",
        "CPU_BACKLOG",
        "OTHERHOST",
        "IP_RPFILTER",
        "UDP_CSUM",
        "TCP_CSUM",
        "SOCKET_FILTER",
        "PKT_TOO_SMALL",
        "IP_NOPROTO",
        "NEIGH_FAILED",
        "NEIGH_QUEUEFULL",
        "IP_OUTNOROUTES",
        "IP_INNOROUTES",
        "XDP",
        "TC_INGRESS",
        "TC_EGRESS",
        "FULL_RING",
        "NOMEM",
        "TCP_OLD_DATA",
        "TCP_INVALID_SEQUENCE",
        "QUEUE_PURGE",
        "NOT_SPECIFIED",
        "SOCKET_CLOSE",
    ):
        entry = knowledge.reason(name)
        assert entry and entry["direction"] and entry["explain"] and entry["advice"], name


def test_knowledge_lists_were_not_split_by_yaml_commas() -> None:
    """A flow list item with a comma inside parentheses must be quoted; an unbalanced item means it was not."""
    knowledge = load_knowledge()
    entries = list(knowledge.reasons.items()) + [(rule.id, rule.entry) for rule in knowledge.counters]
    for name, entry in entries:
        for field in ("causes", "next", "knobs", "corroborated_by", "benign_locations"):
            for item in entry.get(field) or []:
                assert str(item).count("(") == str(item).count(")"), (name, field, item)
