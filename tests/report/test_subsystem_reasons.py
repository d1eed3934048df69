"""Subsystem drop reasons (kernels 6.4+: `0x20001`): kept raw on the host, named from its BTF or the knowledge base.

The tracepoint's format (recorded: tests/data/kfree_skb_format.txt, kernel 6.18) names only the core reasons,
so the kernel prints a subsystem's value in hex (trace_print_symbols_seq: "0x%lx"; perf's libtraceevent the
same). This machine runs no Open vSwitch or Wi-Fi, so the lines with such a value are built here from the
recorded ones (tests/data/perf_script_trace.txt, bpftrace_json.txt) with only the reason changed; the rest of
each line is as recorded. The subsystem numbers changed between kernels (include/net/dropreason.h of 6.4:
MAC80211_UNUSABLE 1, MAC80211_MONITOR 2, OPENVSWITCH 3; this 6.18 kernel's BTF, recorded in
tests/data/btf_skb_drop_reason_subsys_6.18.txt: OPENVSWITCH 2), which is why the host names them from its own
BTF; reasons within a subsystem are numbered from 1 (net/openvswitch/drop.h, net/mac80211/drop.h).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from ansible_collections.dropscope.drops.plugins.module_utils.bpftrace_capture import group_drops, parse_bpftrace_json
from ansible_collections.dropscope.drops.plugins.module_utils.kallsyms import Locator
from ansible_collections.dropscope.drops.plugins.module_utils.kernel_btf import build_btf, enums
from ansible_collections.dropscope.drops.plugins.module_utils.kfree_skb import (
    DropAggregator,
    parse_perf_script_line,
    parse_tracepoint_format,
    subsystem_reason_names,
)
from dropscope.build import build_report
from dropscope.knowledge_base import KnowledgeError, default_knowledge, load_knowledge
from dropscope_lab.synthetic import drop, make_capture, make_host, make_snapshot, write_run

DATA = Path(__file__).resolve().parents[1] / "data"


def _recorded(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


def test_the_format_names_no_subsystem_reason_so_the_kernel_prints_hex() -> None:
    reasons = parse_tracepoint_format(_recorded("kfree_skb_format.txt"))["reasons"]
    assert (min(reasons), max(reasons), len(reasons)) == (2, 128, 127)
    assert not [number for number in reasons if number >> 16]


def test_perf_and_tracefs_keep_a_hex_reason_as_data() -> None:
    line = _recorded("perf_script_trace.txt").splitlines()[0]
    assert line.endswith("reason: NO_SOCKET")
    ovs = line.replace("reason: NO_SOCKET", "reason: 0x30001")
    assert parse_perf_script_line(ovs) == {"reason": "0x30001", "location": "__udp4_lib_rcv", "offset": "0x4bc",
                                           "protocol": 2048}  # fmt: skip
    assert parse_perf_script_line(ovs.replace("0x30001", "0X30001"))["reason"] == "0x30001"
    assert parse_perf_script_line(line.replace("NO_SOCKET", "3"), {3: "NO_SOCKET"})["reason"] == "NO_SOCKET"
    assert parse_perf_script_line(line.replace("NO_SOCKET", "7"), {})["reason"] == "REASON_7"


def test_bpftrace_numbers_become_the_same_hex_text() -> None:
    key = '"4026532177,3,0xffffffff82046f4c'  # the 300 datagrams to closed 127.0.0.1:9000 (NO_SOCKET, 3)
    lines = _recorded("bpftrace_json.txt").replace(key, key.replace(",3,", ",196609,"))
    entries = parse_bpftrace_json(lines.splitlines())["entries"]
    locator = Locator(lambda: _recorded("kallsyms_excerpt.txt"))
    result = group_drops(entries, {3: "NO_SOCKET", 12: "NETFILTER_DROP"}, locator)
    assert [(d["reason"], d["location"], d["count"]) for d in result["drops"]] == [
        ("0x30001", "__udp4_lib_rcv", 300), ("NETFILTER_DROP", "nft_do_chain", 50),
        ("NO_SOCKET", "__udp6_lib_rcv", 7)]  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [("0x30001", ("OVS_DROP_LAST_ACTION", "0x30001", "OPENVSWITCH")),
     ("REASON_196609", ("OVS_DROP_LAST_ACTION", "0x30001", "OPENVSWITCH")),
     ("0x3000b", ("OVS_DROP_IP_TTL", "0x3000b", "OPENVSWITCH")),
     ("0x30063", ("OPENVSWITCH:0x30063", "0x30063", "OPENVSWITCH")),  # a number past the list: the subsystem named
     ("0x10000", ("RX_DROP_UNUSABLE", "0x10000", "MAC80211_UNUSABLE")),
     ("0x10002", ("RX_DROP_U_REPLAY", "0x10002", "MAC80211_UNUSABLE")),
     ("0x10020", ("RX_DROP_U_MMIC_FAIL", "0x10020", "MAC80211_UNUSABLE")),  # the header's "/* 0x20 */" mark
     # 2 was MAC80211_MONITOR on 6.4 and is OPENVSWITCH on 6.18: without the host's BTF it is not guessed
     ("0x20001", ("MAC80211_MONITOR_OR_OPENVSWITCH:0x20001", "0x20001", "MAC80211_MONITOR_OR_OPENVSWITCH")),
     ("OPENVSWITCH:0x20063", ("OPENVSWITCH:0x20063", "0x20063", "OPENVSWITCH")),  # the host named the subsystem
     ("0x90001", ("0x90001", "0x90001", "SUBSYS_9")),  # a subsystem this knowledge base does not know
     ("RX_DROP_U_DUP", ("RX_DROP_U_DUP", None, "MAC80211_UNUSABLE")),  # dropwatch prints the kernel's name
     ("NO_SOCKET", None), ("REASON_7", None)],
)  # fmt: skip
def test_subsystem_reasons_decode(raw: str, decoded: tuple[str, str, str] | None) -> None:
    found = default_knowledge().subsystem_reason(raw)
    assert (None if found is None else (found["reason"], found["reason_raw"], found["subsystem"])) == decoded


def test_the_report_names_them_and_keeps_the_raw_value(tmp_path: Path) -> None:
    before = make_snapshot("ovn1")
    after = make_snapshot("ovn1", boot_id=before["system"]["boot_id"], wall=before["time"]["wall"] + 10,
                          monotonic=before["time"]["monotonic"] + 10)  # fmt: skip
    drops = [drop("0x30001", "do_execute_actions", 400), drop("0x30063", "ovs_dp_process_packet", 3),
             drop("0x90001", "some_new_subsystem_rx", 2)]  # fmt: skip
    capture = make_capture(before["system"]["boot_id"], drops, duration_s=10.0)
    report = build_report(write_run(tmp_path / "run", [make_host("ovn1", before=before, capture=capture, after=after)]))
    host = report["hosts"][0]
    assert [(d["reason"], d.get("reason_raw"), d.get("subsystem"), d["count"]) for d in host["capture"]["drops"]] == [
        ("OVS_DROP_LAST_ACTION", "0x30001", "OPENVSWITCH", 400), ("OPENVSWITCH:0x30063", "0x30063", "OPENVSWITCH", 3),
        ("0x90001", "0x90001", "SUBSYS_9", 2)]  # fmt: skip
    assert report["fleet"]["reasons"][0] == {"reason": "OVS_DROP_LAST_ACTION", "count": 400}
    findings = {f["key"]: f for f in host["findings"]}
    assert [(f["key"], f["severity"], f["known"]) for f in host["findings"]] == [
        ("OVS_DROP_LAST_ACTION", "problem", True), ("OPENVSWITCH:0x30063", "warning", True),
        ("0x90001", "warning", False)]  # fmt: skip
    assert findings["OVS_DROP_LAST_ACTION"]["title"] == "Open vSwitch dropped the packet"
    assert findings["OVS_DROP_LAST_ACTION"]["explanation"].startswith(
        "ovn1: Open vSwitch drops IPv4 packets (OVS_DROP_LAST_ACTION) — kfree_skb saw 400 OVS_DROP_LAST_ACTION")
    assert findings["0x90001"]["title"] == "Dropped with reason 0x90001"
    assert report["knowledge"]["findings"]["OVS_DROP_LAST_ACTION"]["next"][0].startswith("ovs-dpctl dump-flows")


def test_bad_subsystem_entries_are_refused(tmp_path: Path) -> None:
    site = tmp_path / "site.yml"
    site.write_text("subsystems:\n  OPENVSWITCH:\n    name: OPENVSWITCH\n    reasons: []\n", encoding="utf-8")
    with pytest.raises(KnowledgeError, match=r"subsystems.OPENVSWITCH: the key must be the subsystem's number"):
        load_knowledge(site)
    site.write_text("subsystems:\n  4:\n    name: NEW\n", encoding="utf-8")
    with pytest.raises(KnowledgeError, match=r"subsystems.4: needs a `name` and `reasons`"):
        load_knowledge(site)
    site.write_text("subsystems:\n  4:\n    name: QDISC\n    reasons: [QDISC_DROP_GENERIC]\n", encoding="utf-8")
    assert load_knowledge(site).subsystem_reason("0x40001")["reason"] == "QDISC_DROP_GENERIC"


# ----------------------------------------------------------------------------- the host's own names (BTF)

RECORDED_SUBSYS = [(line.split(" = ")[0], int(line.split(" = ")[1]))
                   for line in _recorded("btf_skb_drop_reason_subsys_6.18.txt").splitlines()]  # fmt: skip


def _split_btf(base: bytes, enum: str, members: list[tuple[str, int]]) -> bytes:
    """A module's split BTF with one enum: its string offsets continue the base's (as the kernel writes it)."""
    base_strings = struct.unpack_from("<I", base, 20)[0]
    strings, types = bytearray(b"\0"), bytearray()

    def name(text: str) -> int:
        strings.extend(text.encode("ascii") + b"\0")
        return base_strings + len(strings) - len(text) - 1

    types += struct.pack("<III", name(enum), (6 << 24) | len(members), 4)
    for member, value in members:
        types += struct.pack("<Ii", name(member), value)
    return struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings)) + types + strings


def test_the_host_names_subsystem_reasons_from_its_own_btf() -> None:
    """6.18's enum skb_drop_reason_subsys (recorded) numbers OPENVSWITCH 2; the openvswitch module's BTF names
    its reasons (net/openvswitch/drop.h order, from the subsystem's base)."""
    assert [(name.removeprefix("SKB_DROP_REASON_SUBSYS_"), value) for name, value in RECORDED_SUBSYS] == [
        ("CORE", 0), ("MAC80211_UNUSABLE", 1), ("OPENVSWITCH", 2), ("NUM", 3)]  # fmt: skip
    vmlinux = build_btf([("ENUM", "skb_drop_reason_subsys", 4, RECORDED_SUBSYS)])
    ovs = [("__OVS_DROP_REASON", 2 << 16), ("OVS_DROP_LAST_ACTION", (2 << 16) + 1),
           ("OVS_DROP_ACTION_ERROR", (2 << 16) + 2), ("OVS_DROP_MAX", (2 << 16) + 3)]  # fmt: skip
    files = {"/btf/vmlinux": vmlinux, "/btf/openvswitch": _split_btf(vmlinux, "ovs_drop_reason", ovs)}

    def read(path: str) -> bytes:
        if path not in files:
            raise FileNotFoundError(path)
        return files[path]

    named = subsystem_reason_names(["0x20001", "0x20063", "0x10002", "0x30001"], read, "/btf")
    assert named == {"0x20001": {"name": "OVS_DROP_LAST_ACTION", "subsystem": "OPENVSWITCH"},
                     "0x20063": {"name": None, "subsystem": "OPENVSWITCH"},
                     "0x10002": {"name": None, "subsystem": "MAC80211_UNUSABLE"}}  # fmt: skip
    assert subsystem_reason_names(["0x20001"], read, "/nonexistent") == {}  # no BTF: the report's knowledge decides
    # the one grouper asks only when a group has such a reason, and the capture carries the answer
    aggregator = DropAggregator()
    aggregator.add("0x20001", "do_execute_actions", "0x3c", 2048, count=4)
    aggregator.add("NO_SOCKET", "__udp4_lib_rcv", "0x4bc", 2048, count=1)
    names = lambda raw: subsystem_reason_names(raw, read, "/btf")  # noqa: E731
    result = aggregator.result(locator=Locator(lambda: ""), subsystem_names=names)
    assert [d["reason"] for d in result["drops"]] == ["0x20001", "NO_SOCKET"]
    assert result["subsystem_reasons"] == {"0x20001": {"name": "OVS_DROP_LAST_ACTION", "subsystem": "OPENVSWITCH"}}


@pytest.mark.skipif(not Path("/sys/kernel/btf/vmlinux").is_file() or not os.uname().release.startswith("6.18."),
                    reason="the recorded enum is this project's 6.18 kernel's")
def test_this_kernels_btf_is_the_recorded_one() -> None:
    assert enums(Path("/sys/kernel/btf/vmlinux").read_bytes(), lambda name: name == "skb_drop_reason_subsys") == {
        "skb_drop_reason_subsys": RECORDED_SUBSYS}
    assert subsystem_reason_names(["0x20001"]) == {"0x20001": {"name": None, "subsystem": "OPENVSWITCH"}}


def test_the_report_prefers_the_hosts_names(tmp_path: Path) -> None:
    before = make_snapshot("ovs18")
    after = make_snapshot("ovs18", boot_id=before["system"]["boot_id"], wall=before["time"]["wall"] + 10,
                          monotonic=before["time"]["monotonic"] + 10)  # fmt: skip
    capture = make_capture(before["system"]["boot_id"], [drop("0x20001", "do_execute_actions", 40),
                                                         drop("0x20063", "do_execute_actions", 2)], duration_s=10.0)
    capture["subsystem_reasons"] = {"0x20001": {"name": "OVS_DROP_LAST_ACTION", "subsystem": "OPENVSWITCH"},
                                    "0x20063": {"name": None, "subsystem": "OPENVSWITCH"}}  # fmt: skip
    before2 = make_snapshot("nobtf")
    after2 = make_snapshot("nobtf", boot_id=before2["system"]["boot_id"], wall=before2["time"]["wall"] + 10,
                           monotonic=before2["time"]["monotonic"] + 10)  # fmt: skip
    other = make_capture(before2["system"]["boot_id"], [drop("0x20001", "do_execute_actions", 40)], duration_s=10.0)
    hosts = [make_host("ovs18", before=before, capture=capture, after=after),
             make_host("nobtf", before=before2, capture=other, after=after2)]  # fmt: skip
    report = build_report(write_run(tmp_path / "run", hosts))
    named, guessed = report["hosts"]
    assert [(d["reason"], d["reason_raw"], d["subsystem"]) for d in named["capture"]["drops"]] == [
        ("OVS_DROP_LAST_ACTION", "0x20001", "OPENVSWITCH"), ("OPENVSWITCH:0x20063", "0x20063", "OPENVSWITCH")]
    assert named["capture"]["subsystem_reasons"] == capture["subsystem_reasons"]
    assert [f["title"] for f in named["findings"]] == ["Open vSwitch dropped the packet"] * 2
    assert [(d["reason"], d["subsystem"]) for d in guessed["capture"]["drops"]] == [
        ("MAC80211_MONITOR_OR_OPENVSWITCH:0x20001", "MAC80211_MONITOR_OR_OPENVSWITCH")]
    assert guessed["findings"][0]["severity"] == "warning"  # capped: what it is is not known
