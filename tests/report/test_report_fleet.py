"""Fleet totals: drops grouped per host, and counted once per kernel across the fleet."""

from __future__ import annotations

from pathlib import Path

from dropscope.build import build_report, group_drops
from dropscope_lab.synthetic import drop, make_capture, make_host, make_snapshot, simple_host, write_run

KERNEL_A = "aaaaaaaa-0000-0000-0000-000000000001"
KERNEL_B = "bbbbbbbb-0000-0000-0000-000000000002"


def test_group_drops_sums_offsets_and_keeps_protocols_apart() -> None:
    drops = [
        drop("NO_SOCKET", "__udp4_lib_rcv", 300, "IPv4", "0x4bc"),
        drop("NO_SOCKET", "__udp4_lib_rcv", 20, "IPv4", "0x512"),
        drop("NO_SOCKET", "__udp4_lib_rcv", 7, "IPv6", "0x4bc"),
        drop("NETFILTER_DROP", "nft_do_chain", 500, "IPv4", "0x9"),
        drop("QDISC_DROP", "__dev_xmit_skb", 0, "IPv4", "0x1"),
    ]

    assert group_drops(drops) == [
        {"reason": "NETFILTER_DROP", "location": "nft_do_chain", "protocol": "IPv4", "count": 500},
        {"reason": "NO_SOCKET", "location": "__udp4_lib_rcv", "protocol": "IPv4", "count": 320},
        {"reason": "NO_SOCKET", "location": "__udp4_lib_rcv", "protocol": "IPv6", "count": 7},
    ]


def _host_on_kernel(name: str, boot_id: str, drops: list[dict], events: int, scope: str = "kernel") -> dict:
    before = make_snapshot(name, boot_id=boot_id)
    after = make_snapshot(name, boot_id=boot_id, monotonic=before["time"]["monotonic"] + 5)
    capture = make_capture(boot_id, drops, events=events, scope=scope)
    return make_host(name, before=before, capture=capture, after=after)


def test_hosts_sharing_a_kernel_are_counted_once(tmp_path: Path) -> None:
    kernel_a_drops = [drop("NETFILTER_DROP", "nft_do_chain", 500), drop("NO_SOCKET", "__udp4_lib_rcv", 300)]
    kernel_a_later = [drop("NETFILTER_DROP", "nft_do_chain", 510), drop("NO_SOCKET", "__udp4_lib_rcv", 302)]
    hosts = [
        _host_on_kernel("c1", KERNEL_A, kernel_a_drops, events=800),
        _host_on_kernel("c2", KERNEL_A, kernel_a_later, events=812),  # most events: counted from here
        _host_on_kernel("c3", KERNEL_A, kernel_a_drops, events=805),
        _host_on_kernel("vm", KERNEL_B, [drop("QDISC_DROP", "__dev_xmit_skb", 180)], events=180),
        # Same boot_id but a per-namespace scope: not kernel-wide, so counted on its own.
        _host_on_kernel("ns", KERNEL_B, [drop("NO_SOCKET", "__udp4_lib_rcv", 11)], events=11, scope="netns"),
        make_host("down", status="unreachable", error="ssh: connect to host down port 22: No route to host"),
    ]
    unavailable = _host_on_kernel("old", KERNEL_B, [], events=0)
    unavailable["capture"] = make_capture(KERNEL_B, status="unavailable", reason="perf not installed")
    hosts.append(unavailable)
    report = build_report(write_run(tmp_path / "run", hosts))
    fleet = report["fleet"]

    # "old" is ok in its file but its capture did not run: the report makes it failed, never ok.
    assert (fleet["hosts"], fleet["ok"], fleet["unreachable"], fleet["failed"]) == (7, 5, 1, 1)
    assert fleet["kernels"] == [
        {"boot_id": KERNEL_A, "hosts": ["c1", "c2", "c3"], "counted_from": "c2"},
        {"boot_id": KERNEL_B, "hosts": ["vm"], "counted_from": "vm"},
    ]
    assert fleet["drops"] == 510 + 302 + 180 + 11
    assert fleet["reasons"] == [
        {"reason": "NETFILTER_DROP", "count": 510},
        {"reason": "NO_SOCKET", "count": 313},
        {"reason": "QDISC_DROP", "count": 180},
    ]
    assert fleet["locations"] == [
        {"location": "nft_do_chain", "count": 510},
        {"location": "__udp4_lib_rcv", "count": 313},
        {"location": "__dev_xmit_skb", "count": 180},
    ]
    # Each host still shows its own capture.
    by_name = {host["host"]: host for host in report["hosts"]}
    assert by_name["c1"]["capture"]["drops"][0] == {
        "reason": "NETFILTER_DROP",
        "location": "nft_do_chain",
        "protocol": "IPv4",
        "count": 500,
        "direction": "unknown",  # nft_do_chain, and no counted rule says which chain
    }
    assert by_name["old"]["capture"]["status"] == "unavailable"
    assert by_name["old"]["capture"]["reason"] == "perf not installed"
    assert (by_name["old"]["status"], by_name["old"]["error"]) == (
        "failed", "capture failed: perf unavailable: perf not installed")
    assert by_name["down"]["capture"] is None


def test_tied_events_count_the_first_host(tmp_path: Path) -> None:
    drops = [drop("NO_SOCKET", "__udp4_lib_rcv", 40)]
    hosts = [_host_on_kernel(name, KERNEL_A, drops, events=40) for name in ("b", "a", "c")]

    fleet = build_report(write_run(tmp_path / "run", hosts))["fleet"]

    assert fleet["kernels"] == [{"boot_id": KERNEL_A, "hosts": ["b", "a", "c"], "counted_from": "b"}]
    assert fleet["drops"] == 40


def test_separate_kernels_add_up(tmp_path: Path) -> None:
    hosts = [
        simple_host("h1", [drop("NO_SOCKET", "__udp4_lib_rcv", 300)]),
        simple_host("h2", [drop("NO_SOCKET", "__udp4_lib_rcv", 25), drop("TCP_OLD_DATA", "tcp_data_queue", 2)]),
    ]

    fleet = build_report(write_run(tmp_path / "run", hosts))["fleet"]

    assert fleet["drops"] == 327
    assert fleet["reasons"] == [{"reason": "NO_SOCKET", "count": 325}, {"reason": "TCP_OLD_DATA", "count": 2}]
    assert [kernel["hosts"] for kernel in fleet["kernels"]] == [["h1"], ["h2"]]
