"""The ledger: every drop counter that moved, set against the captured reasons; each capture group's direction.

Synthetic run directories written by the collection's run_record (dropscope_lab.synthetic); every value exact.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from dropscope.build import build_report
from dropscope.knowledge_base import KnowledgeError, load_knowledge
from dropscope_lab.synthetic import (
    advance,
    drop,
    ixgbe_ethtool,
    make_capture,
    make_host,
    make_interface,
    make_qdisc,
    make_rule,
    make_snapshot,
    simple_host,
    write_run,
)

SECONDS = 5.0
INPUT_RULE = "nft inet filter input #3"
OUTPUT_RULE = "nft inet filter output #7"
TBF = "tx0 tbf 8001:"
SHARED = "5a4ed000-0000-4000-8000-000000000001"


def _host(
    name: str, drops: list[dict], *, scope: str = "netns", boot_id: str | None = None, **snapshot: object
) -> dict:
    """An ok host: SNAPSHOT options for make_snapshot, the increases (see `advance`) under `increases`."""
    increases = snapshot.pop("increases", {})
    before = make_snapshot(name, boot_id=boot_id, **snapshot)  # type: ignore[arg-type]
    capture = make_capture(before["system"]["boot_id"], drops, backend="bpftrace", scope=scope, duration_s=SECONDS)
    return make_host(name, before=before, capture=capture, after=advance(before, SECONDS, **increases))  # type: ignore[arg-type]


def _fleet() -> list[dict]:
    interfaces = {"lo": make_interface(base=100), "eth0": make_interface(base=9_000), "tx0": make_interface(base=50)}
    nic = {"lo": make_interface(base=100), "eth1": make_interface(ethtool=ixgbe_ethtool(), base=70_000)}
    return [
        # (a) 300 datagrams to a closed UDP port
        _host(
            "udp", [drop("NO_SOCKET", "__udp4_lib_rcv", 300, port=9999)], increases={"protocols": {"UdpNoPorts": 300}}
        ),
        # (b) an nft drop rule on input, and one on output
        _host(
            "fw",
            [
                drop("NETFILTER_DROP", "nft_do_chain", 500, port=8000),
                drop("NETFILTER_DROP", "nf_hook_slow", 40, port=53),
            ],
            firewall=dict(
                [
                    make_rule("inet", "filter", "input", 3, "udp dport 8000 counter drop"),
                    make_rule("inet", "filter", "output", 7, "udp dport 53 counter reject"),
                ]
            ),
            increases={
                "firewall": {
                    INPUT_RULE: {"packets": 500, "bytes": 14_000},
                    OUTPUT_RULE: {"packets": 40, "bytes": 2_400},
                }
            },
        ),  # fmt: skip
        # (c) a tbf on a transmit-only interface drops 197 (IpOutDiscards, UdpSndbufErrors count the same packets)
        _host(
            "tbf",
            [drop("QDISC_DROP", "__dev_queue_xmit", 197, port=9)],
            interfaces=interfaces,
            qdiscs=dict([make_qdisc("tx0", "tbf", "8001:"), make_qdisc("eth0", "fq_codel", "0:")]),
            increases={
                "qdiscs": {TBF: {"dropped": 197, "packets": 20}},
                "protocols": {"IpOutDiscards": 197, "UdpSndbufErrors": 197},
            },
        ),  # fmt: skip
        # (d) the NIC's ring was full: only the NIC counts it (ethtool and the sysfs total)
        _host(
            "nic",
            [],
            interfaces=nic,
            increases={"interfaces": {"eth1": {"ethtool:rx_missed_errors": 1_234, "rx_missed_errors": 1_234}}},
        ),
        # (e) drops no counter shows, and a listen queue overflow the capture cannot see
        _host(
            "quiet",
            [drop("NO_SOCKET", "tcp_v4_rcv", 7, port=22), drop("SOCKET_CLOSE", "__sk_destruct", 2)],
            increases={"protocols": {"TcpExtListenOverflows": 12, "TcpExtListenDrops": 12}},
        ),
    ]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return build_report(write_run(tmp_path_factory.mktemp("ledger") / "run", _fleet()))


def _host_of(report: dict, name: str) -> dict:
    return next(host for host in report["hosts"] if host["host"] == name)


def test_closed_udp_port_is_explained_by_no_socket(report: dict) -> None:
    host = _host_of(report, "udp")
    assert host["ledger"] == {
        "drops": 300,
        "explained": 300,
        "unexplained": 0,
        "rows": [{"section": "protocols", "object": None, "counter": "UdpNoPorts", "delta": 300,
                  "explained_by": {"NO_SOCKET": 300}, "unexplained": 0, "where": "kernel"}],
        "capture_only": {},
        "capture_only_unexplained": 0,
    }  # fmt: skip
    assert host["capture"]["drops"] == [
        {"reason": "NO_SOCKET", "location": "__udp4_lib_rcv", "protocol": "IPv4", "count": 300, "port": 9999,
         "direction": "rx"}
    ]  # fmt: skip
    assert not [f for f in host["findings"] if f["kind"] == "unexplained"]


def test_firewall_rules_are_explained_and_their_chain_gives_the_direction(report: dict) -> None:
    host = _host_of(report, "fw")
    assert host["ledger"]["rows"] == [
        {"section": "firewall", "object": INPUT_RULE, "counter": "packets", "delta": 500,
         "explained_by": {"NETFILTER_DROP": 500}, "unexplained": 0, "where": "kernel"},
        {"section": "firewall", "object": OUTPUT_RULE, "counter": "packets", "delta": 40,
         "explained_by": {"NETFILTER_DROP": 40}, "unexplained": 0, "where": "kernel"},
    ]  # fmt: skip
    assert (host["ledger"]["drops"], host["ledger"]["explained"], host["ledger"]["unexplained"]) == (540, 540, 0)
    assert [(g["location"], g["port"], g["direction"]) for g in host["capture"]["drops"]] == [
        ("nft_do_chain", 8000, "rx"),  # matched to the input chain's rule
        ("nf_hook_slow", 53, "tx"),  # matched to the output chain's rule
    ]


def test_qdisc_drops_are_explained_and_transmit_on_the_qdiscs_interface(report: dict) -> None:
    host = _host_of(report, "tbf")
    duplicate = [["qdiscs", TBF, "dropped"]]
    assert host["ledger"] == {
        "drops": 197,
        "explained": 197,
        "unexplained": 0,
        "rows": [
            {"section": "protocols", "object": None, "counter": "IpOutDiscards", "delta": 197, "explained_by": {},
             "unexplained": 0, "where": "kernel", "duplicate_of": duplicate, "counted": 0},
            {"section": "protocols", "object": None, "counter": "UdpSndbufErrors", "delta": 197, "explained_by": {},
             "unexplained": 0, "where": "kernel", "duplicate_of": duplicate, "counted": 0},
            {"section": "qdiscs", "object": TBF, "counter": "dropped", "delta": 197,
             "explained_by": {"QDISC_DROP": 197}, "unexplained": 0, "where": "kernel"},
        ],
        "capture_only": {},
        "capture_only_unexplained": 0,
    }  # fmt: skip
    assert host["capture"]["drops"] == [
        {"reason": "QDISC_DROP", "location": "__dev_queue_xmit", "protocol": "IPv4", "count": 197, "port": 9,
         "direction": "tx", "dev": "tx0", "qdisc": TBF}
    ]  # fmt: skip


def test_a_drop_only_the_nic_counts_is_unexplained_by_the_kernel_in_the_nics_words(report: dict) -> None:
    host = _host_of(report, "nic")
    assert host["ledger"] == {
        "drops": 1_234,
        "explained": 0,
        "unexplained": 1_234,
        "rows": [
            {"section": "interfaces", "object": "eth1", "counter": "rx_missed_errors", "delta": 1_234,
             "explained_by": {}, "unexplained": 0, "where": "nic",
             "duplicate_of": [["interfaces", "eth1", "ethtool:rx_missed_errors"]], "counted": 0},
            {"section": "interfaces", "object": "eth1", "counter": "ethtool:rx_missed_errors", "delta": 1_234,
             "explained_by": {}, "unexplained": 1_234, "where": "nic"},
        ],
        "capture_only": {},
        "capture_only_unexplained": 0,
    }  # fmt: skip
    finding = next(f for f in host["findings"] if f["kind"] == "unexplained")
    assert (finding["key"], finding["severity"], finding["title"]) == (
        "unexplained:nic",
        "problem",
        "Drops in the NIC, before the kernel saw the packet",
    )
    assert finding["explanation"] == (
        "nic: 1,234 drops in the NIC, before the kernel saw the packet — eth1 ethtool:rx_missed_errors +1,234"
        " (the driver counts it as `rx_missed_errors` (ethtool -S eth1))"
    )
    assert (finding["evidence"]["basis"], finding["evidence"]["count"], finding["evidence"]["rate"]) == (
        "counters",
        1_234,
        246.8,
    )
    assert report["knowledge"]["findings"]["unexplained:nic"]["meaning"].startswith("The NIC or its driver dropped")


def test_capture_only_reasons_and_drops_the_capture_cannot_see(report: dict) -> None:
    host = _host_of(report, "quiet")
    assert host["ledger"] == {
        "drops": 12 + 7 + 2,
        "explained": 7 + 2,
        "unexplained": 12,
        "rows": [  # in the report's counter order
            {"section": "protocols", "object": None, "counter": "TcpExtListenDrops", "delta": 12, "explained_by": {},
             "unexplained": 0, "where": "kernel", "duplicate_of": [["protocols", None, "TcpExtListenOverflows"]],
             "counted": 0},
            {"section": "protocols", "object": None, "counter": "TcpExtListenOverflows", "delta": 12,
             "explained_by": {}, "unexplained": 12, "where": "kernel",
             "note": "SYNs dropped for a full accept queue are freed by consume_skb, which kfree_skb does not see:"
                     " only these counters show them"},
        ],
        "capture_only": {"NO_SOCKET": 7, "SOCKET_CLOSE": 2},
        "capture_only_unexplained": 0,
    }  # fmt: skip
    finding = next(f for f in host["findings"] if f["kind"] == "unexplained")
    assert (finding["key"], finding["severity"], finding["evidence"]["count"]) == ("unexplained:kernel", "warning", 12)
    assert "freed by consume_skb" in finding["explanation"]


def test_fleet_totals(report: dict) -> None:
    assert report["fleet"]["ledger"] == {
        "drops": 300 + 540 + 197 + 1_234 + 21,
        "explained": 300 + 540 + 197 + 0 + 9,
        "unexplained": 1_234 + 12,
    }


def test_hosts_sharing_a_kernel_match_only_their_own_counters(tmp_path: Path) -> None:
    """A kernel-wide capture sees both hosts' drops: each explains its own counter, the rest counts once."""
    kernel_drops = [drop("NO_SOCKET", "__udp4_lib_rcv", 300), drop("NO_SOCKET", "tcp_v4_rcv", 5)]
    hosts = [
        _host(name, kernel_drops, scope="kernel", boot_id=SHARED, increases={"protocols": {"UdpNoPorts": own},
                                                                             "softnet": {0: {"dropped": 4}}})
        for name, own in (("c1", 100), ("c2", 200))
    ]  # fmt: skip
    report = build_report(write_run(tmp_path / "run", hosts))
    c1, c2 = report["hosts"]
    assert c1["ledger"]["rows"][0] == {
        "section": "protocols",
        "object": None,
        "counter": "UdpNoPorts",
        "delta": 100,
        "explained_by": {"NO_SOCKET": 100},
        "unexplained": 0,
        "where": "kernel",
    }
    assert c1["ledger"]["rows"][1]["counter"] == "dropped" and c1["ledger"]["rows"][1]["unexplained"] == 4
    assert (c1["ledger"]["drops"], c1["ledger"]["explained"], c1["ledger"]["capture_only"]) == (104, 100, None)
    assert (c2["ledger"]["drops"], c2["ledger"]["explained"], c2["ledger"]["capture_only"]) == (204, 200, None)
    assert c1["ledger"]["note"].startswith("kernel-wide capture shared with c2: only this host's own counters")
    # UdpNoPorts 100 + 200 explained, the 5 TCP NO_SOCKET no counter shows, softnet's 4 once (one kernel).
    assert report["fleet"]["ledger"] == {"drops": 300 + 5 + 4, "explained": 305, "unexplained": 4}


def test_direction_comes_from_the_knowledge_base() -> None:
    knowledge = load_knowledge()
    assert knowledge.direction("NO_SOCKET", "__udp4_lib_rcv") == "rx"
    assert knowledge.direction("QDISC_DROP", "__dev_queue_xmit") == "tx"
    assert knowledge.direction("NETFILTER_DROP", "nft_do_chain") == "unknown"
    assert knowledge.direction("NETFILTER_DROP", "nft_do_chain", "PREROUTING") == "rx"
    assert knowledge.direction("NETFILTER_DROP", "nf_hook_slow", "postrouting") == "tx"
    assert knowledge.direction("NETFILTER_DROP", "nft_do_chain", "forward") == "unknown"
    assert knowledge.direction("NOT_SPECIFIED", "ip6_mc_input") == "rx"
    assert knowledge.direction("NOT_SPECIFIED", "ip_finish_output2") == "tx"
    assert knowledge.direction("IP_INNOROUTES", "ip_route_input_slow") == "unknown"  # forward
    assert knowledge.direction("NO_SUCH_REASON", "somewhere") == "unknown"


def test_ledger_knowledge_is_checked(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("counters:\n  - id: udp-noports\n    where: disk\n")
    with pytest.raises(KnowledgeError, match=r"counters\[0\]\.where: 'disk' is not one of kernel, nic"):
        load_knowledge(bad)
    bad.write_text("reasons:\n  NETFILTER_DROP:\n    chain_direction: {input: sideways}\n")
    with pytest.raises(KnowledgeError, match=r"NETFILTER_DROP\.chain_direction: expected a mapping"):
        load_knowledge(bad)
    bad.write_text("unexplained:\n  disk: {title: x}\n")
    with pytest.raises(KnowledgeError, match=r"unexplained\.disk: expected one of kernel, nic"):
        load_knowledge(bad)


def test_a_user_file_can_account_a_counter_to_a_reason(tmp_path: Path) -> None:
    """The mapping is data: a user's knowledge file makes rx_dropped on eth0 explained by FULL_RING@veth_xmit only."""
    user = tmp_path / "mine.yml"
    user.write_text('counters:\n  - id: if-rx-dropped\n    accounted_by: ["FULL_RING@veth_xmit"]\n')
    host = simple_host("v", [drop("FULL_RING", "veth_xmit", 9), drop("FULL_RING", "tun_net_xmit", 3)],
                       interfaces={"eth0": {"rx_dropped": 10}})  # fmt: skip
    report = build_report(write_run(tmp_path / "run", [host]), load_knowledge(user))
    ledger = report["hosts"][0]["ledger"]
    assert ledger["rows"] == [
        {
            "section": "interfaces",
            "object": "eth0",
            "counter": "rx_dropped",
            "delta": 10,
            "explained_by": {"FULL_RING": 9},
            "unexplained": 1,
            "where": "kernel",
        }
    ]
    assert ledger["capture_only"] == {"FULL_RING": 3}


def test_a_shared_kernel_counted_from_an_undiagnosed_host(tmp_path: Path) -> None:
    """The kernel's counted host failed after its capture (no ledger): the other host's ledger stands alone."""
    kernel_drops = [drop("NO_SOCKET", "__udp4_lib_rcv", 300), drop("NO_SOCKET", "tcp_v4_rcv", 5)]
    ok = _host("c1", kernel_drops, scope="kernel", boot_id=SHARED,
               increases={"protocols": {"UdpNoPorts": 100}, "softnet": {0: {"dropped": 4}}})  # fmt: skip
    before = make_snapshot("c2", boot_id=SHARED)
    capture = make_capture(SHARED, kernel_drops, backend="bpftrace", scope="kernel", events=999)
    failed = make_host("c2", status="failed", error="drop_counters failed", before=before, capture=capture)
    report = build_report(write_run(tmp_path / "run", [ok, failed]))
    assert report["fleet"]["kernels"][0]["counted_from"] == "c2"
    assert report["hosts"][1]["ledger"] is None
    assert report["hosts"][0]["ledger"]["capture_only"] is None
    # c1's 100 + softnet 4, and the 205 NO_SOCKET the kernel saw beyond c1's counter, once.
    assert report["fleet"]["ledger"] == {"drops": 100 + 4 + 205, "explained": 305, "unexplained": 4}


def test_a_classful_qdisc_counts_its_childs_drops_once(tmp_path: Path) -> None:
    """iproute2 4.14.1 (tests/data/tc_qdisc_text_iproute2_4.14.txt): tbf 2: shows dropped 194 because its child
    pfifo 20: dropped 194 (tbf adds a child's drops to its own); tbf 3: dropped 198 alone. The capture saw 392
    QDISC_DROP: the ledger counts 392 drops, all explained, not 586 with 194 unexplained."""
    from ansible_collections.dropscope.drops.plugins.module_utils.tc_qdisc import parse_tc_qdisc_text

    sample = Path(__file__).resolve().parents[1] / "data" / "tc_qdisc_text_iproute2_4.14.txt"
    after_qdiscs = parse_tc_qdisc_text(sample.read_text(encoding="utf-8"))
    before_qdiscs = {key: {**qdisc, "dropped": 0} for key, qdisc in after_qdiscs.items()}
    before = make_snapshot("old-tc", qdiscs=before_qdiscs)
    after = advance(before, SECONDS)
    after["qdiscs"] = after_qdiscs
    capture = make_capture(before["system"]["boot_id"], [drop("QDISC_DROP", "__dev_queue_xmit", 392)],
                           backend="bpftrace", duration_s=SECONDS)  # fmt: skip
    host = build_report(write_run(tmp_path / "run", [make_host("old-tc", before=before, capture=capture, after=after)]))
    ledger = host["hosts"][0]["ledger"]
    assert [(row["object"], row["delta"], row.get("counted"), row["explained_by"], row["unexplained"])
            for row in ledger["rows"]] == [
        ("dh4c pfifo 20:", 194, None, {"QDISC_DROP": 194}, 0),
        ("dh4c tbf 2:", 194, 0, {}, 0),
        ("dh4e tbf 3:", 198, None, {"QDISC_DROP": 198}, 0),
    ]  # fmt: skip
    assert ledger["rows"][1]["duplicate_of"] == [["qdiscs", "dh4c pfifo 20:", "dropped"]]
    assert (ledger["drops"], ledger["explained"], ledger["unexplained"], ledger["capture_only"]) == (392, 392, 0, {})


def test_which_qdisc_each_sits_in_on_recorded_tc_outputs() -> None:
    """`tc -s qdisc show` of iproute2 4.14.1 and `tc -s -j qdisc show` of the lab (tests/data): mq, htb and tbf
    hold their children; mq's children that share handle 0: are told apart by their parent; ingress and root
    qdiscs sit in nothing."""
    from ansible_collections.dropscope.drops.plugins.module_utils.tc_qdisc import (
        parse_tc_qdisc_json,
        parse_tc_qdisc_text,
    )
    from dropscope.load import HostRecord, qdisc_containers

    data = Path(__file__).resolve().parents[1] / "data"
    text = parse_tc_qdisc_text((data / "tc_qdisc_text_iproute2_4.14.txt").read_text(encoding="utf-8"))
    assert qdisc_containers(HostRecord("h", "h.json", "ok", after={"qdiscs": text})) == {
        "dh4a pfifo_fast 12:": "dh4a mq 1:",
        "dh4a pfifo_fast 11:": "dh4a mq 1:",
        "dh4d bfifo 40:": "dh4d htb 4:",
        "dh4c pfifo 20:": "dh4c tbf 2:",
    }
    lab = parse_tc_qdisc_json((data / "tc_qdisc.json").read_text(encoding="utf-8"))
    assert qdisc_containers(HostRecord("h", "h.json", "ok", after={"qdiscs": lab})) == {
        "dsq-peer pfifo 10:": "dsq-peer tbf 1:",
        "dsm0 pfifo_fast 0: parent 1:2": "dsm0 mq 1:",
        "dsm0 pfifo_fast 0: parent 1:1": "dsm0 mq 1:",
    }


def test_a_sampled_captures_estimates_explain_counters_within_their_error(tmp_path: Path) -> None:
    """The rate guard made bpftrace count 1 in 8 drops: its counts are estimates. Shortfalls and excesses within
    4σ are the sample's error, not unexplained or capture-only drops; beyond it they stay what they are."""
    host = _host(
        "sampled",
        [drop("NETFILTER_DROP", "nft_do_chain", 4_136), drop("NO_SOCKET", "__udp4_lib_rcv", 2_400),
         drop("SOCKET_CLOSE", "skb_release_data", 16)],
        firewall=dict([make_rule("inet", "filter", "input", 3, "udp dport 8000 counter drop")]),
        increases={"protocols": {"UdpNoPorts": 2_900, "UdpRcvbufErrors": 5, "TcpExtTCPBacklogDrop": 900},
                   "firewall": {INPUT_RULE: {"packets": 4_000, "bytes": 112_000}}},
    )  # fmt: skip
    host["capture"]["sample_one_in"] = 8
    built = _host_of(build_report(write_run(tmp_path / "run", [host])), "sampled")
    rows = {row["object"] or row["counter"]: row for row in built["ledger"]["rows"]}
    # 4σ of an estimate of 2,900 drops sampled 1 in 8: 4·√(2,900·7) = 570 ≥ 500 short
    assert rows["UdpNoPorts"] == {"section": "protocols", "object": None, "counter": "UdpNoPorts", "delta": 2_900,
                                  "explained_by": {"NO_SOCKET": 2_400}, "unexplained": 0, "within_error": 500,
                                  "where": "kernel"}  # fmt: skip
    # 5 drops at 1 in 8 are most likely not sampled at all (0.875⁵ = 51 %): 4·√(5·7) = 24 ≥ 5
    assert (rows["UdpRcvbufErrors"]["explained_by"], rows["UdpRcvbufErrors"]["within_error"]) == ({}, 5)
    assert rows[INPUT_RULE]["explained_by"] == {"NETFILTER_DROP": 4_000}
    # 900 backlog drops with no sample at all: 4·√(900·7) = 318 < 900, unexplained
    backlog = rows["TcpExtTCPBacklogDrop"]
    assert (backlog["explained_by"], backlog["unexplained"], "within_error" in backlog) == ({}, 900, False)
    ledger = built["ledger"]
    # 136 left of NETFILTER_DROP after its rule took 4,000: within 4·√(4,136·7) = 681, the estimate's excess;
    # SOCKET_CLOSE, which no counter took from, stays capture-only
    assert (ledger["capture_only"], ledger["sample_one_in"], ledger["sampling_excess"]) == (
        {"SOCKET_CLOSE": 16}, 8, 136)
    assert (ledger["drops"], ledger["explained"], ledger["unexplained"]) == (
        2_905 + 4_900 + 16, 2_905 + 4_000 + 16, 900)
    finding = next(f for f in built["findings"] if f["key"] == "NETFILTER_DROP")
    # ±2σ printed: 2·√(4,136·7) = 341
    assert "kfree_skb saw ~4,136 ± 341 NETFILTER_DROP at nft_do_chain" in finding["explanation"]
    assert finding["explanation"].endswith(", counting 1 in 8")
    assert "capture: the rate guard counted 1 in 8 drops, chosen at random in the kernel: counts are estimates" \
        " (a count C is within 2·√(C·7) of the true count 19 times in 20)" in built["notes"]


def test_an_exact_capture_has_no_tolerance(tmp_path: Path) -> None:
    """The same shortfall without sampling is unexplained, and the ledger has no sampling fields."""
    host = _host("exact", [drop("NO_SOCKET", "__udp4_lib_rcv", 2_899)], increases={"protocols": {"UdpNoPorts": 2_900}})
    ledger = _host_of(build_report(write_run(tmp_path / "run", [host])), "exact")["ledger"]
    assert (ledger["rows"][0]["unexplained"], ledger["unexplained"]) == (1, 1)
    assert not {"within_error", "sample_one_in", "sampling_excess"} & {*ledger, *ledger["rows"][0]}


def test_a_shared_sampled_kernel_counts_no_estimate_excess_in_the_fleet(tmp_path: Path) -> None:
    """Two hosts on one kernel-wide capture that counted 1 in 8: ~2,440 NO_SOCKET against their 1,200 + 1,200
    UdpNoPorts. The 40 beyond their counters are within 4σ of the estimate (4·√(2,440·7) = 523): not drops no
    counter shows. An exact capture of the same numbers has them capture-only."""
    def fleet(sampled: int) -> dict:
        hosts = [_host(name, [drop("NO_SOCKET", "__udp4_lib_rcv", 2_440)], scope="kernel", boot_id=SHARED,
                       increases={"protocols": {"UdpNoPorts": 1_200}}) for name in ("s1", "s2")]
        for host in hosts:
            host["capture"]["sample_one_in"] = sampled
        return build_report(write_run(tmp_path / f"run-{sampled}", hosts))["fleet"]["ledger"]

    assert fleet(8) == {"drops": 2_400, "explained": 2_400, "unexplained": 0}
    assert fleet(1) == {"drops": 2_440, "explained": 2_440, "unexplained": 0}
