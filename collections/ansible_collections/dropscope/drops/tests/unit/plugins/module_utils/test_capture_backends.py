# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Parsers of the bpftrace, tracefs and dropwatch backends on recorded samples (tests/data/README.md)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


import pytest
from ansible_collections.dropscope.drops.plugins.module_utils import bpftrace_capture as bt
from ansible_collections.dropscope.drops.plugins.module_utils import capture_backends as cb
from ansible_collections.dropscope.drops.plugins.module_utils import dropwatch_capture as dw
from ansible_collections.dropscope.drops.plugins.module_utils import tracefs_capture as tf
from ansible_collections.dropscope.drops.plugins.module_utils.capture_backends import guard_plan
from ansible_collections.dropscope.drops.plugins.module_utils.kfree_skb import (
    DropAggregator,
    aggregate_perf_script,
    parse_tracepoint_format,
)
from ansible_collections.dropscope.drops.tests.unit.plugins.module_utils.samples import recorded

REASONS = parse_tracepoint_format(recorded("kfree_skb_format.txt"))["reasons"]


# ------------------------------------------------------------------------------------------ bpftrace

def test_bpftrace_json_sample_is_parsed():
    parsed = bt.parse_bpftrace_json(recorded("bpftrace_json.txt").splitlines())
    assert parsed["ready"] and parsed["ended"] and parsed["probes"] == 3
    by_port = dict((e["port"], e) for e in parsed["entries"])
    assert sorted(by_port) == [8000, 9000, 9006]
    assert by_port[9000] == {"netns": 4026532177, "reason_id": 3, "address": 0xffffffff82046f4c,
                             "protocol": 2048, "l4": 17, "port": 9000, "count": 300}
    assert by_port[8000]["reason_id"] == 12 and by_port[8000]["count"] == 50
    assert by_port[9006]["protocol"] == 34525 and by_port[9006]["count"] == 7


def test_bpftrace_groups_name_reasons_locations_ports():
    parsed = bt.parse_bpftrace_json(recorded("bpftrace_json.txt").splitlines())
    kallsyms = bt.Kallsyms(recorded("kallsyms_excerpt.txt"))
    grouped = bt.group_drops(parsed["entries"], REASONS, kallsyms, top=2)
    assert grouped["events"] == 357
    assert grouped["drops"] == [
        {"reason": "NO_SOCKET", "location": "__udp4_lib_rcv", "offset": "0x4bc", "protocol": "IPv4",
         "l4": "udp", "port": 9000, "count": 300},
        {"reason": "NETFILTER_DROP", "location": "nft_do_chain", "offset": "0x3e8", "protocol": "IPv4",
         "l4": "udp", "port": 8000, "count": 50},
    ]
    assert grouped["other"] == {"count": 7, "groups": 1}
    everything = bt.group_drops(parsed["entries"], REASONS, kallsyms, with_netns=True)
    assert everything["drops"][2]["location"] == "__udp6_lib_rcv" and everything["drops"][2]["netns"] == 4026532177


def test_bpftrace_unknown_address_and_reason_stay_visible():
    kallsyms = bt.Kallsyms("")
    grouped = bt.group_drops([{"netns": 1, "reason_id": 999, "address": 0xffffffffc0000000, "protocol": 0,
                               "l4": 0, "port": 0, "count": 2}], {}, kallsyms)
    assert grouped["drops"] == [{"reason": "REASON_999", "location": "0xffffffffc0000000", "offset": None,
                                 "protocol": "none", "l4": None, "port": None, "count": 2}]


def test_bpftrace_program_takes_only_integers():
    text = bt.program_text(4026532177, 8000)
    assert "$ns == 4026532177" in text and "$port == 8000" in text
    assert "NETNS_FILTER" not in text and "PORT_FILTER" not in text
    for bad in ("1; system(\"x\")", -1, 2 ** 32, True, 1.5):
        with pytest.raises(ValueError):
            bt.program_text(bad, 0)
    with pytest.raises(ValueError):
        bt.program_text(0, 65536)


def test_bpftrace_lean_program_has_no_header_parsing_and_keeps_the_netns_predicate():
    text = bt.program_text(4026532177, lean=True)
    assert text == bt.LEAN_PROGRAM.replace("NETNS_FILTER", "4026532177")
    assert "if (4026532177 == 0 || $ns == 4026532177) {" in text
    assert "@drops[$ns, args->reason, args->location, args->protocol] = count();" in text
    for parsing in ("network_header", "$skb->head", "$port", "$l4"):
        assert parsing not in text
    assert "network_header" in bt.program_text(4026532177)
    assert "NETNS_FILTER" not in bt.program_text(0, lean=True)
    with pytest.raises(ValueError):
        bt.program_text(1, 8000, lean=True)
    with pytest.raises(ValueError):
        bt.program_text("1 || 1", lean=True)


def test_bpftrace_lean_map_keys_parse_without_port():
    line = '{"type": "map", "data": {"@drops": {"4026532177,2,0xffffffff82046f4c,2048": 5}}}'
    assert bt.parse_bpftrace_json([line])["entries"] == [
        {"netns": 4026532177, "reason_id": 2, "address": 0xffffffff82046f4c, "protocol": 2048, "l4": 0,
         "port": 0, "count": 5}]


def test_bpftrace_json_with_bad_key_is_refused():
    with pytest.raises(ValueError):
        bt.parse_bpftrace_json(['{"type": "map", "data": {"@drops": {"1,2": 3}}}'])


# ------------------------------------------------------------------------------------------- tracefs

def test_tracefs_cpu_stats():
    assert tf.parse_cpu_stats(recorded("tracefs_cpu_stats.txt")) == {
        "entries": 0, "overrun": 0, "commit_overrun": 0, "bytes": 0, "dropped_events": 0, "read_events": 0}
    stats = tf.parse_cpu_stats(recorded("tracefs_cpu_stats_overrun.txt"))
    assert (stats["entries"], stats["overrun"], stats["bytes"]) == (160, 1840, 7072)


def test_tracefs_trace_pipe_lines_aggregate():
    agg, lost = aggregate_perf_script(recorded("tracefs_trace_pipe.txt").splitlines(), REASONS,
                                      aggregator=DropAggregator())
    result = agg.result()
    assert lost == 0 and result["events"] == 3
    assert result["drops"] == [{"reason": "NO_SOCKET", "location": "__udp4_lib_rcv", "offset": "0x4bc",
                                "protocol": "IPv4", "count": 3}]


def test_tracefs_filter_is_numeric():
    assert tf.reason_filter([2, 4], 2048) == "reason != 2 && reason != 4 && protocol == 2048"
    assert tf.reason_filter() == ""
    with pytest.raises(ValueError):
        tf.reason_filter(["2 || 1"])


def test_mounted_tracefs():
    mounts = "sysfs /sys sysfs rw 0 0\ntracefs /sys/kernel/tracing tracefs rw,nosuid 0 0\n"
    assert tf.mounted_tracefs(mounts) == "/sys/kernel/tracing"
    assert tf.mounted_tracefs("sysfs /sys sysfs rw 0 0\n") is None


# ----------------------------------------------------------------------------------------- dropwatch

def test_dropwatch_without_net_dm_real_output():
    parsed = dw.parse_dropwatch_output(recorded("dropwatch_no_net_dm.txt"))
    assert parsed["no_net_dm"] is True and parsed["drops"] == []


def test_dropwatch_summary_mode():
    parsed = dw.parse_dropwatch_output(recorded("dropwatch_summary.txt"))
    assert not parsed["no_net_dm"] and not parsed["packet_mode"]
    assert parsed["drops"] == [
        {"reason": "UNKNOWN", "location": "__udp4_lib_rcv", "offset": "0x4bc", "protocol": None,
         "origin": "software", "count": 3},
        {"reason": "UNKNOWN", "location": "nft_do_chain", "offset": "0x3e8", "protocol": None,
         "origin": "software", "count": 1},
        {"reason": "UNKNOWN", "location": "0xffffffffc0a1b2c3", "offset": None, "protocol": None,
         "origin": "software", "count": 2},
        {"reason": "UNKNOWN", "location": "rx_dropped_trap", "offset": None, "protocol": None,
         "origin": "hardware", "count": 7},
    ]
    assert parsed["events"] == 13


def test_dropwatch_packet_mode_has_reasons():
    parsed = dw.parse_dropwatch_output(recorded("dropwatch_packet.txt"))
    assert parsed["packet_mode"] and parsed["events"] == 4
    grouped = dw.aggregate_dropwatch(parsed)
    assert grouped["drops"] == [
        {"reason": "NO_SOCKET", "location": "__udp4_lib_rcv", "offset": "0x4bc", "protocol": "IPv4", "count": 2},
        {"reason": "NETFILTER_DROP", "location": "nft_do_chain", "offset": "0x3e8", "protocol": "IPv6", "count": 1},
        {"reason": "UNKNOWN", "location": "rx_dropped_trap", "offset": None, "protocol": "IPv4", "count": 1},
    ]


# ------------------------------------------------------------------------------------------- guard

def test_guard_plan():
    off = guard_plan(10, True, 0, 500000)
    assert off["active"] is False and off["window_s"] == 10 and off["stacks"] is True
    calm = guard_plan(10, True, 50000, 1000)
    assert calm["active"] is False and calm["measured_rate"] == 1000
    busy = guard_plan(10, True, 50000, 200000)
    assert busy["active"] and busy["stacks"] is False and busy["window_s"] == 3
    assert busy["actions"][0] == "stacks off" and "3 s of 10 s" in busy["actions"][1]
    assert guard_plan(1, False, 50000, 10 ** 7)["window_s"] == 1
    assert guard_plan(5, False, 50000, None)["active"] is False


def test_guard_plan_bpftrace_switches_to_the_lean_program():
    window = "captured 3 s of 10 s (sampling in time): counts cover the window only"
    assert guard_plan(10, False, 50000, 200000, backend="bpftrace") == {
        "max_event_rate": 50000, "measured_rate": 200000, "active": True, "window_s": 3, "stacks": False,
        "bpftrace_program": "lean", "actions": [cb.LEAN_ACTION, window]}
    # A port filter needs the packet headers: the full program stays, and the result says so.
    assert guard_plan(10, False, 50000, 200000, backend="bpftrace", port=8000) == {
        "max_event_rate": 50000, "measured_rate": 200000, "active": True, "window_s": 3, "stacks": False,
        "bpftrace_program": "full", "actions": [cb.FULL_KEPT_ACTION, window]}
    assert guard_plan(10, False, 50000, 40000, backend="bpftrace") == {
        "max_event_rate": 50000, "measured_rate": 40000, "active": False, "window_s": 10, "stacks": False,
        "bpftrace_program": "full", "actions": []}
    assert guard_plan(10, False, 0, 10 ** 6, backend="bpftrace")["bpftrace_program"] == "full"
    assert guard_plan(10, False, 50000, None, backend="bpftrace")["bpftrace_program"] == "full"
    assert guard_plan(10, True, 50000, 200000, backend="perf") == {
        "max_event_rate": 50000, "measured_rate": 200000, "active": True, "window_s": 3, "stacks": False,
        "bpftrace_program": None, "actions": ["stacks off", window]}


@pytest.mark.parametrize("rate,port,lean", [(200000, 0, True), (1000, 0, False), (200000, 8000, False)])
def test_run_one_passes_the_program_choice_to_bpftrace(monkeypatch, rate, port, lean):
    seen = {}

    def fake_run(capture, guard, bpftrace, duration, **kwargs):
        seen.update(kwargs, duration=duration, bpftrace=bpftrace)
        return capture

    monkeypatch.setattr(cb, "run_bpftrace_capture", fake_run)
    host = cb.Host(run_command=None, find_bin=lambda name: "/usr/bin/" + name)
    params = {"netns": "self", "port": port, "top": 50, "duration": 10}
    plan = guard_plan(10, False, 50000, rate, backend="bpftrace", port=port)
    capture = cb.new_capture("bpftrace", 10, False, "boot", 4026532177, 0)
    cb._run_one("bpftrace", capture, None, host, params, plan, {}, None)
    assert seen["lean"] is lean and seen["netns"] == 4026532177 and seen["port"] == port
    assert seen["duration"] == (3 if rate > 50000 else 10) and seen["bpftrace"] == "/usr/bin/bpftrace"
    assert capture["scope"] == "netns"


def test_bpftrace_program_self_deadline():
    text = bt.program_text(4026532177, 8000, deadline_s=70)
    assert text.rstrip().endswith("interval:s:70 { exit(); }")
    assert "interval:s:" not in bt.program_text(4026532177, 8000)
    for bad in (-1, "70; system(\"id\")", 1.5, True):
        with pytest.raises(ValueError, match="deadline_s"):
            bt.program_text(0, 0, deadline_s=bad)
