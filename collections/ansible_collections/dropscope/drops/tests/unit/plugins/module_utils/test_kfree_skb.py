# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""skb:kfree_skb: format file and perf script output recorded with perf 6.1 on kernel 6.18."""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type


import pytest
from ansible_collections.dropscope.drops.plugins.module_utils.kfree_skb import (
    ETHERTYPES,
    DropAggregator,
    aggregate_perf_script,
    parse_perf_lost_line,
    parse_perf_script_line,
    parse_perf_stack_line,
    parse_tracepoint_format,
    protocol_name,
)
from ansible_collections.dropscope.drops.tests.unit.plugins.module_utils.samples import recorded


def _lines(name):
    return recorded(name).splitlines(True)


REASONS = parse_tracepoint_format(recorded("kfree_skb_format.txt"))["reasons"]

# The frames of the recorded NO_SOCKET @ tcp_v4_rcv event (a SYN to a closed port on loopback).
TCP_FRAMES = [
    "sk_skb_reason_drop", "tcp_v4_rcv", "ip_protocol_deliver_rcu", "ip_local_deliver_finish",
    "__netif_receive_skb_one_core", "process_backlog", "__napi_poll", "net_rx_action", "handle_softirqs",
    "do_softirq.part.0", "__local_bh_enable_ip", "__dev_queue_xmit", "ip_finish_output2", "ip_output",
    "__ip_queue_xmit", "__tcp_transmit_skb", "tcp_connect", "tcp_v4_connect", "__inet_stream_connect",
    "inet_stream_connect", "__sys_connect", "__x64_sys_connect", "do_syscall_64",
    "entry_SYSCALL_64_after_hwframe", "__libc_connect", "[unknown]",
]

TRACE_DROPS = [
    {"reason": "NO_SOCKET", "location": "__udp4_lib_rcv", "offset": "0x4bc", "protocol": "IPv4", "count": 20},
    {"reason": "NETFILTER_DROP", "location": "nft_do_chain", "offset": "0x3e8", "protocol": "IPv4", "count": 5},
    {"reason": "NO_SOCKET", "location": "__udp6_lib_rcv", "offset": "0xe1", "protocol": "IPv6", "count": 5},
    {"reason": "NO_SOCKET", "location": "tcp_v4_rcv", "offset": "0x91", "protocol": "IPv4", "count": 3},
    {"reason": "SOCKET_RCVBUFF", "location": "udp_queue_rcv_one_skb", "offset": "0x437", "protocol": "IPv4",
     "count": 3},
]


# ------------------------------------------------------------------------------------- format file

def test_recorded_format():
    result = parse_tracepoint_format(recorded("kfree_skb_format.txt"))
    assert result["fields"] == ["skbaddr", "location", "rx_sk", "protocol", "reason"]
    reasons = result["reasons"]
    assert len(reasons) == 127
    assert min(reasons) == 2
    assert reasons[2] == "NOT_SPECIFIED"
    assert reasons[3] == "NO_SOCKET"
    assert reasons[6] == "SOCKET_RCVBUFF"
    assert reasons[12] == "NETFILTER_DROP"
    assert reasons[64] == "QDISC_DROP"
    assert reasons[71] == "CPU_BACKLOG"
    assert reasons[127] == "RECURSION_LIMIT"
    assert reasons[128] == "MAX"


# Not recorded here: the format file of a kernel before 5.17, written after include/trace/events/skb.h
# of Linux 5.4 (no reason field; location printed with %p).
OLD_FORMAT = """name: kfree_skb
ID: 1370
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:void * location;\toffset:16;\tsize:8;\tsigned:0;
\tfield:unsigned short protocol;\toffset:24;\tsize:2;\tsigned:0;

print fmt: "skbaddr=%p protocol=%u location=%p", REC->skbaddr, REC->protocol, REC->location
"""


def test_old_format_without_reason():
    assert parse_tracepoint_format(OLD_FORMAT) == {"fields": ["skbaddr", "location", "protocol"], "reasons": {}}


def test_format_errors_name_the_source():
    with pytest.raises(ValueError, match="^/sys/kernel/tracing/events/skb/kfree_skb/format: no 'format:' section"):
        parse_tracepoint_format("")
    with pytest.raises(ValueError, match="^fmt: no 'print fmt:' line"):
        parse_tracepoint_format(OLD_FORMAT.split("print fmt", maxsplit=1)[0], source="fmt")


def test_protocol_name():
    assert ETHERTYPES[2048] == "IPv4"
    assert protocol_name(2048) == "IPv4"
    assert protocol_name(34525) == "IPv6"
    assert protocol_name(2054) == "ARP"
    assert protocol_name(0) == "none"
    assert protocol_name(0x88cc) == "0x88cc"
    assert protocol_name(0x8100) == "0x8100"
    assert protocol_name(None) == "unknown"


# ---------------------------------------------------------------------------------- one line each

NO_SOCKET = {"reason": "NO_SOCKET", "location": "__udp4_lib_rcv", "offset": "0x4bc", "protocol": 2048}


def test_recorded_trace_line():
    first = _lines("perf_script_trace.txt")[0]
    assert first.startswith("skbaddr=0x")
    assert parse_perf_script_line(first) == NO_SOCKET


def test_recorded_default_line():
    first = _lines("perf_script_default.txt")[0]
    assert ": skb:kfree_skb: skbaddr=" in first
    assert parse_perf_script_line(first) == NO_SOCKET


def test_every_recorded_event_line_parses():
    for name in ("perf_script_trace.txt", "perf_script_default.txt"):
        events = [parse_perf_script_line(line, REASONS) for line in _lines(name)]
        assert len(events) == 36
        assert all(event is not None and event["reason"] in REASONS.values() for event in events)


def test_reason_numbers_and_missing_reasons():
    line = "skbaddr=0xffff888100cdf6e0 rx_sk=(nil) protocol=34525 location=ip6_mc_input+0x1c0 reason: %s"
    assert parse_perf_script_line(line % "2", REASONS)["reason"] == "NOT_SPECIFIED"
    assert parse_perf_script_line(line % "2")["reason"] == "REASON_2"
    assert parse_perf_script_line(line % "999", REASONS)["reason"] == "REASON_999"
    assert parse_perf_script_line(line % "NO_SOCKET", REASONS)["reason"] == "NO_SOCKET"
    old = "skbaddr=0xffff888100cdf6e0 protocol=2048 location=0xffffffff81a1b2cc"  # kernel < 5.17
    assert parse_perf_script_line(old) == {
        "reason": "UNKNOWN", "location": "0xffffffff81a1b2cc", "offset": None, "protocol": 2048}


def test_tracefs_line():
    line = ("          <idle>-0       [001] ..s1.   577.635830: kfree_skb: skbaddr=00000000a1b2c3d4 "
            "rx_sk=0000000000000000 protocol=2048 location=nft_do_chain+0x3e8/0x5a0 [nf_tables] reason: NETFILTER_DROP")
    assert parse_perf_script_line(line) == {
        "reason": "NETFILTER_DROP", "location": "nft_do_chain", "offset": "0x3e8", "protocol": 2048}


def test_other_lines_are_not_events():
    assert parse_perf_script_line("") is None
    assert parse_perf_script_line("\n") is None
    assert parse_perf_script_line("PERF_RECORD_LOST lost 94\n") is None
    assert parse_perf_script_line("\tffffffff81e42e50 sk_skb_reason_drop\n") is None
    consume = ("         python3  5885 [001]   577.635830: skb:consume_skb: skbaddr=0xffff88814c09aa00 "
               "location=skb_free_datagram+0x1d")
    assert parse_perf_script_line(consume) is None


def test_recorded_lost_lines():
    lost = [parse_perf_lost_line(line) for line in _lines("perf_script_lost_trace.txt")]
    assert [count for count in lost if count is not None] == [94, 570]
    lost = [parse_perf_lost_line(line) for line in _lines("perf_script_lost_default.txt")]
    assert [count for count in lost if count is not None] == [15]
    assert parse_perf_lost_line("PERF_RECORD_LOST_SAMPLES lost 2232") is None
    assert parse_perf_lost_line(_lines("perf_script_trace.txt")[0]) is None


def test_recorded_stack_lines():
    blocks = recorded("perf_script_g_trace_ip_sym.txt").split("\n\n")
    frames = [parse_perf_stack_line(line) for line in blocks[1].splitlines()]
    assert frames[0] is None  # the event line
    assert frames[1:] == TCP_FRAMES
    blocks = recorded("perf_script_g_default.txt").split("\n\n")
    frames = [parse_perf_stack_line(line) for line in blocks[1].splitlines()]
    assert frames[0] is None
    assert frames[1:] == TCP_FRAMES  # the same event printed with offsets and DSOs
    assert parse_perf_stack_line("\t ffffffff81a1b2cc kfree_skb_reason+0x5c") == "kfree_skb_reason"
    assert parse_perf_stack_line("") is None
    assert parse_perf_stack_line("PERF_RECORD_LOST lost 1") is None
    assert parse_perf_stack_line(_lines("perf_script_default.txt")[0]) is None


# ----------------------------------------------------------------------------------- aggregation

def test_aggregate_recorded_trace():
    aggregator, lost = aggregate_perf_script(iter(_lines("perf_script_trace.txt")), REASONS)
    assert lost == 0
    assert aggregator.result() == {"events": 36, "drops": TRACE_DROPS, "other": {"count": 0, "groups": 0},
                                   "stacks": []}
    assert aggregator.result(top=2) == {"events": 36, "drops": TRACE_DROPS[:2], "other": {"count": 11, "groups": 3},
                                        "stacks": []}
    assert not aggregator.truncated


def test_aggregate_recorded_default_format():
    aggregator, lost = aggregate_perf_script(_lines("perf_script_default.txt"), REASONS)
    assert (aggregator.result()["drops"], lost) == (TRACE_DROPS, 0)


def test_aggregate_recorded_stacks():
    aggregator, lost = aggregate_perf_script(_lines("perf_script_g_trace_ip_sym.txt"), REASONS)
    result = aggregator.result()
    assert result["events"] == 2
    assert result["drops"] == [
        {"reason": "NETFILTER_DROP", "location": "nft_do_chain", "offset": "0x3e8", "protocol": "IPv4", "count": 1},
        {"reason": "NO_SOCKET", "location": "tcp_v4_rcv", "offset": "0x91", "protocol": "IPv4", "count": 1},
    ]
    summary = [(stack["reason"], stack["location"], stack["count"], len(stack["frames"])) for stack in result["stacks"]]
    assert summary == [
        ("NETFILTER_DROP", "nft_do_chain", 1, 23),
        ("NO_SOCKET", "tcp_v4_rcv", 1, 26),
    ]
    assert result["stacks"][0]["frames"][:4] == ["sk_skb_reason_drop", "nft_do_chain", "nft_do_chain_inet",
                                                 "nf_hook_slow"]
    assert result["stacks"][1]["frames"] == TCP_FRAMES
    aggregator, _lost = aggregate_perf_script(_lines("perf_script_g_default.txt"), REASONS)
    assert aggregator.result()["stacks"][1]["frames"] == TCP_FRAMES


def test_aggregate_recorded_lost_events():
    aggregator, lost = aggregate_perf_script(_lines("perf_script_lost_trace.txt"), REASONS)
    assert (aggregator.events, lost) == (54, 94 + 570)
    aggregator, lost = aggregate_perf_script(_lines("perf_script_lost_default.txt"), REASONS)
    assert (aggregator.events, lost) == (13, 15)


def test_aggregate_ignores_other_events_and_blank_lines():
    lines = [
        "\n",
        "         python3  5885 [001]   577.635830: skb:consume_skb: skbaddr=0xffff88814c09aa00 location=x+0x1\n",
        "       python3  5885 [001]   577.635830: skb:other: protocol=2048 location=__udp4_lib_rcv+0x4bc reason: X\n",
        _lines("perf_script_default.txt")[0],
        "       python3  5885 [001]   577.635830: skb:other: protocol=2048 location=__udp4_lib_rcv+0x4bc "
        "reason: NO_SOCKET\n",
    ]
    aggregator, lost = aggregate_perf_script(lines)
    assert (aggregator.events, lost) == (1, 0)


def test_group_cap_counts_into_other():
    aggregator = DropAggregator(max_groups=2)
    for location in ("a", "b", "a", "c", "d", "c"):
        aggregator.add("NO_SOCKET", location, "0x1", 2048)
    assert aggregator.truncated
    assert aggregator.overflow_events == 3
    assert aggregator.result() == {
        "events": 6,
        "drops": [{"reason": "NO_SOCKET", "location": "a", "offset": "0x1", "protocol": "IPv4", "count": 2},
                  {"reason": "NO_SOCKET", "location": "b", "offset": "0x1", "protocol": "IPv4", "count": 1}],
        "other": {"count": 3, "groups": 1},
        "stacks": [],
    }


def test_stack_caps():
    aggregator = DropAggregator(max_stacks=1)
    frames = ["f%d" % index for index in range(40)]
    aggregator.add("NO_SOCKET", "x", "0x1", 2048, frames)
    aggregator.add("NO_SOCKET", "x", "0x1", 2048, frames[:35])  # same first 32 frames: same stack
    aggregator.add("NO_SOCKET", "x", "0x1", 2048, ["other"])  # a second distinct stack: over the cap
    result = aggregator.result()
    assert result["stacks"] == [{"reason": "NO_SOCKET", "location": "x", "frames": frames[:32], "count": 2}]
    assert aggregator.overflow_stacks == 1
    assert aggregator.truncated


def test_ordering_and_top_stacks():
    aggregator = DropAggregator()
    for reason, location, protocol, frames in [
        ("B", "y", 2048, ["s1"]), ("A", "z", 34525, ["s2"]), ("A", "y", 2048, ["s1"]),
        ("A", "y", 0x88cc, ["s3"]), ("B", "y", 2048, ["s1"]),
    ]:
        aggregator.add(reason, location, "0x10", protocol, frames)
    result = aggregator.result(top_stacks=2)
    assert [(d["reason"], d["location"], d["protocol"], d["count"]) for d in result["drops"]] == [
        ("B", "y", "IPv4", 2), ("A", "y", "IPv4", 1), ("A", "y", "0x88cc", 1), ("A", "z", "IPv6", 1)]
    assert [(s["reason"], s["location"], s["frames"], s["count"]) for s in result["stacks"]] == [
        ("B", "y", ["s1"], 2), ("A", "y", ["s1"], 1)]


def test_stack_of_last_event_is_kept():
    lines = ["skbaddr=0x1 rx_sk=(nil) protocol=2048 location=a+0x1 reason: NO_SOCKET",
             "\tffffffff81e42e50 sk_skb_reason_drop",
             "\tffffffff82046f4c a"]
    aggregator, _lost = aggregate_perf_script(line for line in lines)
    assert aggregator.result()["stacks"] == [
        {"reason": "NO_SOCKET", "location": "a", "frames": ["sk_skb_reason_drop", "a"], "count": 1}]
