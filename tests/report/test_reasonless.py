"""Captures without drop reasons (kernels before 5.17, dropwatch): diagnosed from the kernel function.

Real outputs of such kernels (tests/data, sources in its README) go through the collection's own parsers
and grouper (dropwatch summary and packet mode, perf of a 4.10 kernel with its kallsyms, tracefs of a 5.4
kernel), into synthetic run directories written by the collection's run_record; every value exact. The
knowledge is knowledge/locations.yml; the ledger matches reasonless groups by their location.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible_collections.dropscope.drops.plugins.module_utils.dropwatch_capture import parse_dropwatch_output
from ansible_collections.dropscope.drops.plugins.module_utils.iptables_save import parse_iptables_save
from ansible_collections.dropscope.drops.plugins.module_utils.kallsyms import Locator
from ansible_collections.dropscope.drops.plugins.module_utils.kfree_skb import DropAggregator, aggregate_perf_script
from dropscope.build import build_report
from dropscope.knowledge_base import KnowledgeError, default_knowledge, load_knowledge
from dropscope_lab.synthetic import advance, make_capture, make_host, make_snapshot, write_run

DATA = Path(__file__).resolve().parents[1] / "data"
SECONDS = 10.0


def _recorded(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


def _dropwatch(name: str) -> list[dict]:
    """Capture groups of a recorded dropwatch output, as the host groups them (no raw addresses in these)."""
    aggregator = DropAggregator()
    for group in parse_dropwatch_output(_recorded(name))["drops"]:
        aggregator.add(group["reason"], group["location"], group["offset"], group["protocol"], count=group["count"])
    return aggregator.result(locator=Locator(lambda: ""))["drops"]


def _host(tmp_path: Path, drops: list[dict], backend: str = "dropwatch", **increases: dict) -> dict:
    """One report host: its capture's groups DROPS and its counters grown by INCREASES over 10 s."""
    protocols = dict.fromkeys(increases.get("protocols") or {}, 0)
    before = make_snapshot("old", protocols=protocols)
    after = advance(before, SECONDS, **increases)
    capture = make_capture(before["system"]["boot_id"], drops, backend=backend, duration_s=SECONDS)
    report = build_report(write_run(tmp_path / "run", [make_host("old", before=before, capture=capture, after=after)]))
    return report["hosts"][0] | {"__knowledge__": report["knowledge"]}


def _keys(host: dict) -> list[tuple[str, str, str, int]]:
    return [(f["key"], f["kind"], f["severity"], f["evidence"]["count"]) for f in host["findings"]]


def test_dropwatch_on_4_19_gives_one_finding_per_meaning_not_one_unknown_reason(tmp_path: Path) -> None:
    """nhorman/dropwatch#3 (kernel 4.19.30): 33 at tcp_v4_do_rcv, 413 at skb_release_data, no ` [software]`."""
    drops = _dropwatch("dropwatch_summary_4.19_issue3.txt")
    assert [(d["reason"], d["location"], d["offset"], d["count"]) for d in drops] == [
        ("UNKNOWN", "skb_release_data", "0xb1", 413), ("UNKNOWN", "tcp_v4_do_rcv", "0x8e", 33)]  # fmt: skip
    host = _host(tmp_path, drops)
    assert _keys(host) == [("location:tcp-socket-discard", "location", "warning", 33),
                           ("location:queue-purge", "location", "info", 413)]  # fmt: skip
    tcp, noise = host["findings"]
    assert (tcp["reason"], tcp["known"], tcp["benign"], tcp["title"]) == (
        None, True, False, "A TCP socket discarded a segment")
    assert tcp["explanation"] == (
        "old: TCP sockets discard received segments at tcp_v4_do_rcv (this kernel names no reason) — kfree_skb"
        " saw 33 drops (this capture has no drop reasons) at tcp_v4_do_rcv (3.3/s)"
    )
    assert noise["benign"] and noise["title"].startswith("Known noise")
    assert [d["direction"] for d in host["capture"]["drops"]] == ["unknown", "rx"]
    assert host["ledger"]["capture_only"] == {"UNKNOWN@skb_release_data": 413, "UNKNOWN@tcp_v4_do_rcv": 33}
    background = host["__knowledge__"]["findings"]["location:tcp-socket-discard"]
    assert background["meaning"].startswith("The segment reached its socket but was discarded there")


def test_compiler_suffixes_are_ignored_and_the_ledger_explains_the_counter_by_location(tmp_path: Path) -> None:
    """nhorman/dropwatch#77 packet mode: two drops at ip_rcv_finish_core.isra.0 (no drop reason line)."""
    drops = _dropwatch("dropwatch_packet_issue77.txt")
    assert [(d["reason"], d["location"], d["offset"], d["protocol"], d["count"]) for d in drops] == [
        ("UNKNOWN", "ip_rcv_finish_core.isra.0", "0x1de", "IPv4", 2)]  # fmt: skip
    host = _host(tmp_path, drops, protocols={"TcpExtIPReversePathFilter": 2})
    assert _keys(host) == [("location:ip-route-input", "location", "warning", 2)]
    finding = host["findings"][0]
    assert finding["explanation"] == (
        "old drops received packets it has no usable route for (drops at ip_rcv_finish_core.isra.0; this kernel"
        " names no reason) — TcpExtIPReversePathFilter +2 (0.2/s); kfree_skb saw 2 drops (this capture has no drop"
        " reasons) at ip_rcv_finish_core.isra.0 (0.2/s)"
    )
    # counters.yml rp-filter: accounted_by "UNKNOWN@ip_rcv_finish_core*"
    assert host["ledger"]["rows"] == [
        {"section": "protocols", "object": None, "counter": "TcpExtIPReversePathFilter", "delta": 2,
         "explained_by": {"UNKNOWN@ip_rcv_finish_core.isra.0": 2}, "unexplained": 0, "where": "kernel"}]  # fmt: skip
    assert (host["ledger"]["drops"], host["ledger"]["explained"], host["ledger"]["capture_only"]) == (2, 2, {})


def test_net_tx_action_is_driver_transmit_completion_not_a_problem(tmp_path: Path) -> None:
    """nhorman/dropwatch#77's summary mode: 18 drops at net_tx_action+0 (drivers' dev_kfree_skb_irq)."""
    host = _host(tmp_path, _dropwatch("dropwatch_summary_issue77.txt"))
    assert _keys(host) == [("location:driver-tx-completion", "location", "info", 18)]
    assert host["verdict"] == "ok"
    assert host["capture"]["drops"][0]["direction"] == "tx"


def test_udp_noports_is_explained_by_drops_at_udp_rcv_without_a_reason(tmp_path: Path) -> None:
    """A reasonless group at __udp4_lib_rcv stands for NO_SOCKET (locations.yml `reason`): UdpNoPorts matched."""
    drops = [{"reason": "UNKNOWN", "location": "__udp4_lib_rcv", "offset": "0x4bc", "protocol": "IPv4", "count": 300}]
    host = _host(tmp_path, drops, backend="perf", protocols={"UdpNoPorts": 300})
    assert _keys(host) == [("location:udp-no-socket", "location", "problem", 300)]
    udp = host["findings"][0]
    assert [c["counter"] for c in udp["evidence"]["counters"]] == ["UdpNoPorts"]
    assert udp["explanation"].startswith("old receives UDP datagrams for ports nobody listens on (drops at __udp4_lib")
    assert host["ledger"]["rows"][0]["explained_by"] == {"UNKNOWN@__udp4_lib_rcv": 300}
    assert (host["ledger"]["unexplained"], host["ledger"]["capture_only"]) == (0, {})


def test_a_function_the_knowledge_base_does_not_know_is_kept_with_its_count(tmp_path: Path) -> None:
    """tsuyopon/memo's `dropwatch -l kas` (RHEL/CentOS package): ip_recv_error is in no locations.yml entry."""
    drops = _dropwatch("dropwatch_summary_kas_tsuyopon.txt")
    assert [(d["location"], d["offset"], d["count"]) for d in drops] == [
        ("ip_recv_error", "0x81", 3), ("skb_queue_purge", "0x18", 1)]  # fmt: skip
    host = _host(tmp_path, drops)
    assert _keys(host) == [("location:ip_recv_error", "location", "warning", 3),
                           ("location:queue-purge", "location", "info", 1)]  # fmt: skip
    unknown = host["findings"][0]
    assert (unknown["title"], unknown["known"], unknown["reason"]) == ("Drops in ip_recv_error", False, None)
    assert unknown["explanation"] == (
        "old drops packets at ip_recv_error (this capture has no drop reasons) — kfree_skb saw 3 drops (this capture"
        " has no drop reasons) at ip_recv_error (0.3/s)"
    )
    assert unknown["advice"].startswith("dropscope has no advice for this reason yet: look at the kernel function")
    assert "location:ip_recv_error" not in host["__knowledge__"]["findings"]  # nothing known about it


def test_dropwatch_without_symbols_never_shows_a_pointer(tmp_path: Path) -> None:
    """The same host without `-l kas`: addresses only; no symbol holds them here, so they are `unresolved`."""
    drops = _dropwatch("dropwatch_summary_null_tsuyopon.txt")
    assert [(d["location"], d["count"]) for d in drops] == [("unresolved", 6)]
    host = _host(tmp_path, drops)
    assert _keys(host) == [("location:unavailable", "location", "warning", 6)]
    assert "0xffffffff" not in str(host["findings"])


def test_perf_on_4_10_names_the_bpf_program_and_the_knowledge_says_what_it_is(tmp_path: Path) -> None:
    """cilium's doc sample: perf of kernel 4.10 gives a raw address; the host's kallsyms names bpf_prog_…."""
    aggregator, _lost = aggregate_perf_script(_recorded("perf_script_location_hex_4.10.txt").splitlines())
    drops = aggregator.result(locator=Locator(lambda: _recorded("kallsyms_cilium_doc_4.10.txt")))["drops"]
    host = _host(tmp_path, drops, backend="perf")
    assert _keys(host) == [("location:bpf-program", "location", "warning", 1)]
    assert host["findings"][0]["title"] == "A tc or BPF program dropped the packet"


def test_tracefs_on_5_4_cannot_name_the_location_and_says_which_backend_can(tmp_path: Path) -> None:
    """A 5.4-era `trace` (hashed location, no reason); its stack names ip_error, which locations.yml knows."""
    lines = _recorded("tracefs_trace_stacktrace_5.4.txt").splitlines()
    aggregator, _lost = aggregate_perf_script(lines)
    result = aggregator.result(locator=Locator(lambda: _recorded("kallsyms_excerpt.txt")))
    assert result["drops"] == [{"reason": "UNKNOWN", "location": "unavailable", "offset": None, "protocol": "IPv4",
                                "count": 1}]  # fmt: skip
    host = _host(tmp_path, result["drops"], backend="tracefs")
    assert _keys(host) == [("location:unavailable", "location", "warning", 1)]
    assert host["findings"][0]["advice"].startswith("Capture again with perf or bpftrace (-e backend=perf)")
    # What perf or bpftrace would have named on that kernel: the first frame under kfree_skb.
    frames = [line.strip().removeprefix("=> ") for line in lines if line.startswith(" => ")]
    assert frames[:2] == ["kfree_skb", "ip_error"]
    assert default_knowledge().location(frames[1])[0] == "ip-route-input"


@pytest.mark.parametrize(
    ("function", "meaning"),
    [("__udp4_lib_rcv", "udp-no-socket"), ("udp_queue_rcv_one_skb", "udp-socket-full"), ("tcp_v4_rcv", "tcp-receive"),
     ("nf_hook_slow", "firewall"), ("__dev_queue_xmit", "qdisc"), ("kfree_skb_list", "freed-as-list"),
     ("enqueue_to_backlog", "backlog"), ("ip_rcv_core.isra.0", "ip-receive"), ("sk_filter_trim_cap", "socket-filter"),
     ("unix_stream_connect", "unix-socket"), ("skb_release_data", "queue-purge"), ("gro_normal_list.part.0", None),
     ("tpacket_rcv", "packet-socket-copies"), ("bpf_prog_0123456789abcdef", "bpf-program")],
)  # fmt: skip
def test_functions_map_to_their_meaning(function: str, meaning: str | None) -> None:
    found = default_knowledge().location(function)
    assert (found[0] if found else None) == meaning


def test_a_user_file_adds_a_function_and_bad_entries_are_refused(tmp_path: Path) -> None:
    site = tmp_path / "site.yml"
    site.write_text("locations:\n  firewall:\n    functions: [nf_hook_slow, my_fw_hook]\n", encoding="utf-8")
    assert load_knowledge(site).location("my_fw_hook")[0] == "firewall"
    site.write_text("locations:\n  broken:\n    title: no functions\n", encoding="utf-8")
    with pytest.raises(KnowledgeError, match=r"site.yml: locations.broken.functions: expected a list"):
        load_knowledge(site)


def test_on_a_shared_kernel_the_host_whose_counters_agree_owns_the_reasonless_drops(tmp_path: Path) -> None:
    """perf sees the whole kernel: UdpNoPorts of host a claims the drops at __udp4_lib_rcv; b's are kernel-wide."""
    shared = "5a4ed000-0000-4000-8000-0000000000d1"
    drops = [{"reason": "UNKNOWN", "location": "__udp4_lib_rcv", "offset": "0x4bc", "protocol": "IPv4", "count": 300},
             {"reason": "UNKNOWN", "location": "nf_hook_slow", "offset": "0x10", "protocol": "IPv4", "count": 50}]
    hosts = []
    for name, increases in (("a", {"UdpNoPorts": 300}), ("b", {})):
        before = make_snapshot(name, boot_id=shared, protocols={"UdpNoPorts": 0})
        after = advance(before, SECONDS, protocols=increases)
        capture = make_capture(shared, drops, backend="perf", duration_s=SECONDS)
        hosts.append(make_host(name, before=before, capture=capture, after=after))
    report = build_report(write_run(tmp_path / "run", hosts))
    a, b = report["hosts"]
    assert [(f["key"], f["severity"], f["attribution"]) for f in a["findings"]] == [
        ("location:udp-no-socket", "problem", "host"), ("location:firewall", "info", "kernel-wide")]  # fmt: skip
    assert [(f["key"], f["attribution"], f["attributed_to"]) for f in b["findings"]] == [
        ("location:udp-no-socket", "kernel-wide", ["a"]), ("location:firewall", "kernel-wide", [])]  # fmt: skip
    assert (a["verdict"], b["verdict"]) == ("problem", "ok")
    # the kernel's capture-only drops (50 at nf_hook_slow) are counted once, in the fleet's ledger
    assert report["fleet"]["ledger"] == {"drops": 350, "explained": 350, "unexplained": 0}
    assert [(f["key"], f["severity"], f["attribution"]) for f in report["fleet"]["findings"]] == [
        ("location:firewall", "warning", "kernel")]  # fmt: skip


def test_firewall_drops_of_5_17_to_5_19_are_explained_by_not_specified_at_nf_hook_slow(tmp_path: Path) -> None:
    """Those kernels have reasons but nf_hook_slow freed NF_DROP verdicts with plain kfree_skb (NOT_SPECIFIED)."""
    rules = parse_iptables_save(_recorded("iptables_legacy_save_c.txt"), "ipv4")
    key = next(key for key, rule in rules.items() if rule["rule"].endswith("--dport 8001 -j REJECT"
                                                                           " --reject-with icmp-port-unreachable"))
    before = make_snapshot("fw", protocols={})
    before["firewall"] = {key: dict(rules[key], packets=0, bytes=0)}
    after = advance(before, SECONDS)
    after["firewall"][key]["packets"] = 12
    drops = [{"reason": "NOT_SPECIFIED", "location": "nf_hook_slow", "offset": "0xa1", "protocol": "IPv4", "count": 12}]
    capture = make_capture(before["system"]["boot_id"], drops, backend="perf", duration_s=SECONDS)
    report = build_report(write_run(tmp_path / "run", [make_host("fw", before=before, capture=capture, after=after)]))
    ledger = report["hosts"][0]["ledger"]
    assert [(row["object"], row["explained_by"], row["unexplained"]) for row in ledger["rows"]] == [
        (key, {"NOT_SPECIFIED": 12}, 0)]  # fmt: skip


def test_drops_without_a_reason_at_a_function_nobody_explains_are_not_explained(tmp_path: Path) -> None:
    """No reason and no locations.yml meaning (vxlan_rcv): the capture saw 40 drops, nothing says why. The
    ledger counts them as unexplained (`capture_only_unexplained`); 33 at tcp_v4_do_rcv have a meaning. On a
    kernel shared by two hosts the fleet counts both once, with the same split."""
    drops = [
        {"reason": "UNKNOWN", "location": "tcp_v4_do_rcv", "offset": "0x8e", "protocol": "IPv4", "count": 33},
        {"reason": "UNKNOWN", "location": "vxlan_rcv", "offset": "0x1d2", "protocol": "IPv4", "count": 40},
    ]
    host = _host(tmp_path / "one", drops)
    assert [(f["key"], f["known"], f["evidence"]["count"]) for f in host["findings"]] == [
        ("location:vxlan_rcv", False, 40), ("location:tcp-socket-discard", True, 33)]  # fmt: skip
    ledger = host["ledger"]
    assert (ledger["drops"], ledger["explained"], ledger["unexplained"]) == (73, 33, 40)
    assert ledger["capture_only"] == {"UNKNOWN@vxlan_rcv": 40, "UNKNOWN@tcp_v4_do_rcv": 33}
    assert ledger["capture_only_unexplained"] == 40

    shared = "5a4ed000-0000-4000-8000-0000000000d2"
    hosts = []
    for name in ("a", "b"):
        before = make_snapshot(name, boot_id=shared)
        capture = make_capture(shared, drops, backend="perf", duration_s=SECONDS)
        hosts.append(make_host(name, before=before, capture=capture, after=advance(before, SECONDS)))
    report = build_report(write_run(tmp_path / "shared" / "run", hosts))
    assert report["fleet"]["ledger"] == {"drops": 73, "explained": 33, "unexplained": 40}
    for host in report["hosts"]:  # the kernel's capture-only drops are the fleet's, counted once
        ledger = host["ledger"]
        assert (ledger["drops"], ledger["explained"], ledger["unexplained"]) == (0, 0, 0)
        assert (ledger["capture_only"], ledger["capture_only_unexplained"]) == (None, None)
