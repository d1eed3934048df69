"""Counter delta arithmetic (dropscope.deltas), with exact numbers."""

from __future__ import annotations

import copy

from dropscope.deltas import counter_deltas, snapshot_deltas, socket_key
from dropscope_lab.synthetic import (
    advance,
    make_interface,
    make_qdisc,
    make_rule,
    make_snapshot,
    make_socket,
    veth_ethtool,
)


def test_counter_deltas_keeps_only_growth_and_lists_resets() -> None:
    before = {"rx_dropped": 9, "tx_dropped": 4, "rx_packets": 100, "same": 7, "only_before": 3}
    after = {"rx_dropped": 1, "tx_dropped": 6, "rx_packets": 130, "same": 7, "only_after": 5}

    deltas, resets = counter_deltas(before, after)

    assert deltas == {"tx_dropped": 2, "rx_packets": 30}
    assert resets == [{"counter": "rx_dropped", "before": 9, "after": 1}]


def test_counter_deltas_empty() -> None:
    assert counter_deltas({}, {}) == ({}, [])


def _lab_snapshot() -> dict:
    """A snapshot shaped like the lab's: eth0 veth with a tbf qdisc, UDP sockets and an nft drop rule."""
    return make_snapshot(
        "h1",
        boot_id="0d6c-boot",
        monotonic=10_234.5,
        wall=1_795_748_401.25,
        interfaces={
            "lo": make_interface(base=50),
            "eth0": make_interface({"rx_dropped": 9}, ethtool=veth_ethtool(rx_queue_0_xdp_drops=1), base=4_000),
        },
        protocols={"UdpNoPorts": 10, "TcpCurrEstab": 6, "IpForwarding": 1},
        qdiscs=dict([make_qdisc("eth0", "tbf", "8001:", dropped=20, overlimits=25), make_qdisc("lo", "noqueue", "0:")]),
        sockets=[
            make_socket("udp", "0.0.0.0", 9000, 10, inode=1),  # noqa: S104
            make_socket("udp", "0.0.0.0", 8000, 5, inode=2),  # noqa: S104  (two SO_REUSEPORT sockets)
            make_socket("udp", "0.0.0.0", 8000, 1, inode=3),  # noqa: S104
        ],
        firewall=dict([make_rule("inet", "dropscope_lab", "input", 3, "udp dport 8000 drop", 40, 1_120)]),
    )


def test_snapshot_deltas_exact_numbers_for_every_section() -> None:
    before = _lab_snapshot()
    after = advance(
        before,
        5.1,
        interfaces={"eth0": {"rx_dropped": 2, "rx_packets": 310, "ethtool:rx_queue_0_xdp_drops": 5}},
        protocols={"UdpNoPorts": 300, "TcpCurrEstab": 34, "IpForwarding": 1},  # gauges: never deltas
        softnet={0: {"dropped": 3, "processed": 6}, 1: {"dropped": 4, "time_squeeze": 1, "processed": 4}},
        qdiscs={"eth0 tbf 8001:": {"dropped": 180, "overlimits": 181, "packets": 130, "bytes": 7_800}},
        sockets={1: 7, 2: 1, 3: 2},
        firewall={"nft inet dropscope_lab input #3": {"packets": 500, "bytes": 14_000}},
    )
    after["time"]["wall"] -= 3_600  # the wall clock stepped back an hour: the interval must ignore it
    after["softnet"][1]["backlog_len"] = 12  # a gauge
    after["interfaces"]["eth0"]["ethtool"]["peer_ifindex"] = 44  # a gauge
    after["qdiscs"]["eth0 tbf 8001:"].update(backlog=3_000, qlen=2)
    after["sockets"].append(make_socket("udp6", "::1", 53, 4, inode=9))  # new, or at 0 drops before
    key, rule = make_rule("inet", "dropscope_lab", "input", 4, "udp dport 8001 drop", 3, 180)
    after["firewall"][key] = rule  # rule added during the run: counts from 0

    result = snapshot_deltas(before, after)

    assert result == {
        "interval_s": 5.1,
        "counters": {
            "interfaces": {"eth0": {"rx_dropped": 2, "rx_packets": 310, "ethtool:rx_queue_0_xdp_drops": 5}},
            "protocols": {"UdpNoPorts": 300},
            "softnet": {"dropped": 7, "time_squeeze": 1, "processed": 10},
            "qdiscs": {
                "eth0 tbf 8001:": {
                    "bytes": 7_800,
                    "packets": 130,
                    "dropped": 180,
                    "overlimits": 181,
                    "backlog_now": 3_000,
                    "qlen_now": 2,
                }
            },
            "sockets": {
                "udp 0.0.0.0:9000": {"drops": 7},
                "udp 0.0.0.0:8000": {"drops": 3},
                "udp6 [::1]:53": {"drops": 4},
            },
            "firewall": {
                "nft inet dropscope_lab input #3": {"packets": 500, "bytes": 14_000},
                "nft inet dropscope_lab input #4": {"packets": 3, "bytes": 180},
            },
            "conntrack": {},  # not loaded on this host
        },
        "resets": [],
        "appeared": {"interfaces": [], "qdiscs": []},
        "vanished": {"interfaces": [], "qdiscs": []},
    }


def test_rates_use_the_monotonic_interval() -> None:
    before = make_snapshot("h1", monotonic=100.25, wall=5_000.0)
    after = advance(before, 2.5, protocols={"UdpNoPorts": 10})
    after["time"]["wall"] = 9_999_999.0

    result = snapshot_deltas(before, after)

    assert result["interval_s"] == 2.5
    assert result["counters"]["protocols"]["UdpNoPorts"] / result["interval_s"] == 4.0


def test_counter_that_went_down_is_a_reset_not_a_delta() -> None:
    before = _lab_snapshot()
    after = advance(before, 5.0, interfaces={"eth0": {"tx_dropped": 3}})
    after["interfaces"]["eth0"]["statistics"]["rx_dropped"] = 1  # was 9
    after["qdiscs"]["eth0 tbf 8001:"]["dropped"] = 0  # qdisc replaced with the same handle: was 20
    after["protocols"]["UdpNoPorts"] = 2  # was 10
    after["sockets"][0]["drops"] = 4  # same inode, was 10

    result = snapshot_deltas(before, after)

    assert result["counters"]["interfaces"] == {"eth0": {"tx_dropped": 3}}
    assert result["counters"]["qdiscs"] == {}
    assert result["counters"]["protocols"] == {}
    assert "udp 0.0.0.0:9000" not in result["counters"]["sockets"]
    assert result["resets"] == [
        {"section": "interfaces", "name": "eth0", "counter": "rx_dropped", "before": 9, "after": 1},
        {"section": "protocols", "name": None, "counter": "UdpNoPorts", "before": 10, "after": 2},
        {"section": "qdiscs", "name": "eth0 tbf 8001:", "counter": "dropped", "before": 20, "after": 0},
        {"section": "sockets", "name": "udp 0.0.0.0:9000", "counter": "drops", "before": 10, "after": 4},
    ]


def test_reboot_between_snapshots_gives_no_counters() -> None:
    before = _lab_snapshot()
    after = advance(before, 60.0, protocols={"UdpNoPorts": 5})
    after["system"]["boot_id"] = "new-boot"
    after["time"]["monotonic"] = 12.0  # the monotonic clock restarted

    result = snapshot_deltas(before, after)

    assert result == {
        "interval_s": None,
        "counters": {},
        "resets": [
            {"section": "system", "name": None, "counter": "boot_id", "before": "0d6c-boot", "after": "new-boot"}
        ],
        "appeared": {"interfaces": [], "qdiscs": []},
        "vanished": {"interfaces": [], "qdiscs": []},
    }


def test_devices_and_qdiscs_that_appear_or_vanish_get_no_delta() -> None:
    before = _lab_snapshot()
    before["interfaces"]["veth-old"] = make_interface({"rx_dropped": 4}, base=10)
    after = advance(before, 5.0, interfaces={"eth0": {"rx_dropped": 1}})
    del after["interfaces"]["veth-old"]
    after["interfaces"]["veth-new"] = make_interface({"rx_dropped": 70}, base=900)
    del after["qdiscs"]["eth0 tbf 8001:"]
    key, qdisc = make_qdisc("eth0", "netem", "8002:", dropped=33)
    after["qdiscs"][key] = qdisc

    result = snapshot_deltas(before, after)

    assert result["appeared"] == {"interfaces": ["veth-new"], "qdiscs": ["eth0 netem 8002:"]}
    assert result["vanished"] == {"interfaces": ["veth-old"], "qdiscs": ["eth0 tbf 8001:"]}
    assert result["counters"]["interfaces"] == {"eth0": {"rx_dropped": 1}}
    assert result["counters"]["qdiscs"] == {}
    assert result["resets"] == []


def test_offline_cpu_and_one_sided_counters_are_ignored() -> None:
    before = make_snapshot("h1", cpus=4)
    after = advance(before, 1.0, softnet={0: {"dropped": 2}})
    after["softnet"] = after["softnet"][:2]  # CPUs 2 and 3 went offline
    after["protocols"]["TcpExtNewCounter"] = 77  # appeared in /proc/net/netstat
    del after["protocols"]["UdpInErrors"]

    result = snapshot_deltas(before, after)

    assert result["counters"]["softnet"] == {"dropped": 2, "time_squeeze": 0}
    assert result["counters"]["protocols"] == {}
    assert result["resets"] == []


def test_ethtool_counters_only_when_both_snapshots_have_them() -> None:
    before = make_snapshot("h1")
    before["interfaces"]["eth0"].update(ethtool=None, ethtool_status="ethtool not installed")
    after = copy.deepcopy(before)
    after["time"]["monotonic"] += 3
    after["interfaces"]["eth0"].update(ethtool=veth_ethtool(rx_queue_0_drops=50), ethtool_status="ok")

    assert snapshot_deltas(before, after)["counters"]["interfaces"] == {}


def test_recreated_socket_counts_from_zero() -> None:
    before = make_snapshot("h1", sockets=[make_socket("udp", "10.0.0.1", 53, 100, inode=5)])
    after = advance(before, 2.0)
    after["sockets"] = [make_socket("udp", "10.0.0.1", 53, 6, inode=6)]  # closed and reopened

    result = snapshot_deltas(before, after)

    assert result["counters"]["sockets"] == {"udp 10.0.0.1:53": {"drops": 6}}
    assert result["resets"] == []


def test_socket_key_brackets_ipv6() -> None:
    assert socket_key({"proto": "udp", "local_address": "0.0.0.0", "local_port": 9000}) == "udp 0.0.0.0:9000"  # noqa: S104
    assert socket_key({"proto": "udp6", "local_address": "fe80::1", "local_port": 53}) == "udp6 [fe80::1]:53"


def test_a_before_that_could_not_read_a_section_never_makes_a_counters_whole_life_a_delta() -> None:
    """The ruleset or /proc/net/udp could not be read before: rules and sockets it does not list may have been
    there, with counts from long before the run. Only those listed on both sides count (40 → 45 packets and
    5 → 8 drops), not the 1,000,000 packets and 7,000 drops they had counted before the run began."""
    before = _lab_snapshot()
    after = advance(before, 5.0, firewall={"nft inet dropscope_lab input #3": {"packets": 5, "bytes": 140}},
                    sockets={2: 3})  # fmt: skip
    after["firewall"].update([make_rule("inet", "filter", "input", 9, "tcp dport 22 drop", 1_000_000, 60_000_000)])
    after["sockets"].append(make_socket("udp", "127.0.0.1", 53, 7_000, inode=9))
    before["sockets"] = before["sockets"][1:2]  # what was read of the sockets before: inode 2 only
    before["errors"] = [
        {"source": "nft -a list ruleset", "error": "exit 1: netlink: Error: cache initialization failed"},
        {"source": "/proc/net/udp6", "error": "Permission denied"},
    ]

    counters = snapshot_deltas(before, after)["counters"]
    assert counters["firewall"] == {"nft inet dropscope_lab input #3": {"packets": 5, "bytes": 140}}
    assert counters["sockets"] == {"udp 0.0.0.0:8000": {"drops": 3}}

    before["errors"] = []  # read whole: a rule or socket it does not list was created during the run
    counters = snapshot_deltas(before, after)["counters"]
    assert counters["firewall"]["nft inet filter input #9"] == {"packets": 1_000_000, "bytes": 60_000_000}
    assert counters["sockets"]["udp 127.0.0.1:53"] == {"drops": 7_000}


def test_a_full_socket_list_before_cannot_vouch_for_a_socket_it_left_out() -> None:
    """The host lists the 200 sockets with most drops: a socket missing from a full list may have had drops."""
    before = make_snapshot("h1", sockets=[make_socket("udp", "10.0.0.1", 1_000 + n, 500, inode=n) for n in range(200)])
    after = advance(before, 2.0)
    after["sockets"] = [*before["sockets"][:199], make_socket("udp", "10.0.0.2", 53, 450, inode=999)]
    after["sockets"][0] = make_socket("udp", "10.0.0.1", 1_000, 510, inode=0)

    assert snapshot_deltas(before, after)["counters"]["sockets"] == {"udp 10.0.0.1:1000": {"drops": 10}}
    before["sockets"] = before["sockets"][:199]  # not full: the socket was not there, or had no drops
    assert snapshot_deltas(before, after)["counters"]["sockets"]["udp 10.0.0.2:53"] == {"drops": 450}
