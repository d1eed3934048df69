# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The capture backends: parsers on recorded samples (tests/data/README.md), the rate guard, and the plan
(check mode predicts the real run for every backend and filter on recorded capability ladders)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

import pytest
from ansible_collections.dropscope.drops.plugins.module_utils import bpftrace_capture as bt
from ansible_collections.dropscope.drops.plugins.module_utils import capture_backends as cb
from ansible_collections.dropscope.drops.plugins.module_utils import dropwatch_capture as dw
from ansible_collections.dropscope.drops.plugins.module_utils import tracefs_capture as tf
from ansible_collections.dropscope.drops.plugins.module_utils.capabilities import collect_capabilities
from ansible_collections.dropscope.drops.plugins.module_utils.capture_backends import guard_plan
from ansible_collections.dropscope.drops.plugins.module_utils.capture_guard import CaptureGuard
from ansible_collections.dropscope.drops.plugins.module_utils.kallsyms import Locator
from ansible_collections.dropscope.drops.plugins.module_utils.kfree_skb import (
    DropAggregator,
    aggregate_perf_script,
    parse_tracepoint_format,
)
from ansible_collections.dropscope.drops.tests.unit.plugins.module_utils.samples import (
    STATUS_USER,
    FakeReader,
    recorded,
    recorded_host,
)

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


def test_a_full_port_map_keeps_counts_exact_from_the_totals_map():
    """Recorded: @drops full at 16 keys (16 of 20 ports kept), @totals with all 20 (tests/data/README.md)."""
    parsed = bt.parse_bpftrace_json(recorded("bpftrace_json_map_full.txt").splitlines())
    assert len(parsed["entries"]) == 16 and sum(e["count"] for e in parsed["entries"]) == 16
    assert parsed["totals"] == [{"netns": 0, "reason_id": 3, "address": 0xffffffff820a726c, "protocol": 2048,
                                 "l4": 0, "port": 0, "count": 20}]
    entries, unitemised = bt.with_unitemised(parsed["entries"], parsed["totals"])
    assert unitemised == 4
    # The same machine's /proc/kallsyms line for the function the address falls in (+0x4bc).
    locator = Locator(lambda: "ffffffff820a6db0 T __udp4_lib_rcv\nffffffff820a7a00 T udp_v4_early_demux\n")
    grouped = bt.group_drops(entries, REASONS, locator, top=3)
    assert grouped["events"] == 20
    assert grouped["drops"][0] == {"reason": "NO_SOCKET", "location": "__udp4_lib_rcv", "offset": "0x4bc",
                                   "protocol": "IPv4", "l4": None, "port": None, "count": 4}
    assert [d["port"] for d in grouped["drops"][1:]] == [40000, 40001]
    assert grouped["other"] == {"count": 14, "groups": 14}


def test_bpftrace_groups_name_reasons_locations_ports():
    parsed = bt.parse_bpftrace_json(recorded("bpftrace_json.txt").splitlines())
    kallsyms = Locator(lambda: recorded("kallsyms_excerpt.txt"))
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
    # An address no symbol holds is "unresolved", never a pointer; the capture says why.
    grouped = bt.group_drops([{"netns": 1, "reason_id": 999, "address": 0xffffffffc0000000, "protocol": 0,
                               "l4": 0, "port": 0, "count": 2}], {}, Locator(lambda: ""))
    assert grouped["drops"] == [{"reason": "REASON_999", "location": "unresolved", "offset": None,
                                 "protocol": "none", "l4": None, "port": None, "count": 2}]
    assert grouped["locations"] == {"resolved_events": 0, "hashed_events": 0, "unresolved_events": 2,
                                    "why": "the tracepoint printed raw addresses that /proc/kallsyms did not hold"
                                           " (read it as root)"}


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
    assert text.endswith("""  $dev = $skb->dev;
  if ($dev != 0) {
    $ns = $dev->nd_net.net->ns.inum;
  } else {
    $sk = $skb->sk;
    if ($sk != 0) {
      $ns = $sk->__sk_common.skc_net.net->ns.inum;
    } else if ($rx_sk != 0) {
      $ns = ((struct sock *)$rx_sk)->__sk_common.skc_net.net->ns.inum;
    }
  }
  if (4026532177 == 0 || $ns == 4026532177) {
    @drops[$reason, $location, $protocol] = count();
  }
}
""")
    # Without a netns filter the key keeps the netns (the whole kernel's drops, per namespace).
    assert "@drops[$ns, $reason, $location, $protocol] = count();" in bt.program_text(0, lean=True)
    assert "if (4026532177 == 0 || $ns == 4026532177) {" in text
    assert "@drops[$reason, $location, $protocol] = count();" in text
    for parsing in ("network_header", "$skb->head", "$port", "$l4"):
        assert parsing not in text
    assert "network_header" in bt.program_text(4026532177)
    assert "NETNS_FILTER" not in bt.program_text(0, lean=True)
    with pytest.raises(ValueError):
        bt.program_text(1, 8000, lean=True)
    with pytest.raises(ValueError):
        bt.program_text("1 || 1", lean=True)


def test_the_rate_guards_sampling_is_a_predicate_before_any_read():
    assert "tracepoint:skb:kfree_skb\n{" in bt.program_text(4026532177, lean=True)
    text = bt.program_text(4026532177, lean=True, sample_one_in=8)
    assert "tracepoint:skb:kfree_skb /rand % 8 == 0/\n{\n  $args = args;\n  $skb = (struct sk_buff *)$args->skbaddr;" in text
    assert text.count("rand") == 1
    assert "/rand % 64 == 0/" in bt.program_text(0, 8000, sample_one_in=64)  # the full program samples the same way
    for wrong in (0, -8, True, 8.0, "8 == 0 || 1", 65537):
        with pytest.raises(ValueError):
            bt.program_text(1, lean=True, sample_one_in=wrong)


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
    sampled = cb.SAMPLED_ACTION % (4, 3)
    # bpftrace samples 1 in 4 events in the kernel (200,000/s / 4 <= 50,000/s): no shorter window.
    assert guard_plan(10, False, 50000, 200000, backend="bpftrace") == {
        "max_event_rate": 50000, "measured_rate": 200000, "active": True, "window_s": 10, "stacks": False,
        "bpftrace_program": "lean", "sample_one_in": 4, "actions": [cb.LEAN_ACTION, sampled]}
    # A port filter needs the packet headers: the full program stays, and the result says so.
    assert guard_plan(10, False, 50000, 200000, backend="bpftrace", port=8000) == {
        "max_event_rate": 50000, "measured_rate": 200000, "active": True, "window_s": 10, "stacks": False,
        "bpftrace_program": "full", "sample_one_in": 4, "actions": [cb.FULL_KEPT_ACTION, sampled]}
    assert guard_plan(10, False, 50000, 40000, backend="bpftrace") == {
        "max_event_rate": 50000, "measured_rate": 40000, "active": False, "window_s": 10, "stacks": False,
        "bpftrace_program": "full", "sample_one_in": 1, "actions": []}
    # Beyond 64 x max_event_rate sampling is not enough: the window shortens too (10 s * 64 * 50,000 / 10**7).
    beyond = guard_plan(10, False, 50000, 10 ** 7, backend="bpftrace")
    assert (beyond["sample_one_in"], beyond["window_s"]) == (64, 4)
    assert beyond["actions"][-1] == "captured 4 s of 10 s (sampling in time): counts cover the window only"
    assert guard_plan(10, False, 0, 10 ** 6, backend="bpftrace")["bpftrace_program"] == "full"
    assert guard_plan(10, False, 50000, None, backend="bpftrace")["bpftrace_program"] == "full"
    # Other backends cannot sample in the kernel: they capture a window.
    assert guard_plan(10, True, 50000, 200000, backend="perf") == {
        "max_event_rate": 50000, "measured_rate": 200000, "active": True, "window_s": 3, "stacks": False,
        "bpftrace_program": None, "sample_one_in": 1, "actions": ["stacks off", window]}


def test_sampling_keeps_the_counted_rate_under_the_limit():
    assert [cb.sample_one_in(rate, 50000) for rate in (50001, 100000, 100001, 269000, 3200000, 3200001)] == [
        2, 2, 4, 8, 64, 64]


@pytest.mark.parametrize("rate,port,lean", [(200000, 0, True), (1000, 0, False), (200000, 8000, False)])
def test_bpftrace_backend_passes_the_program_choice(monkeypatch, rate, port, lean):
    seen = {}

    def fake_run(capture, guard, bpftrace, duration, **kwargs):
        seen.update(kwargs, duration=duration, bpftrace=bpftrace)
        return capture

    monkeypatch.setattr(bt, "run_bpftrace_capture", fake_run)
    reader = FakeReader({}, {"bpftrace": "/usr/bin/bpftrace"}, {})
    plan = cb.CapturePlan(_params(backend="bpftrace", dport=port, duration=10), None, SYSTEM, {}, None)
    rate_guard = guard_plan(10, False, 50000, rate, backend="bpftrace", port=port)
    capture = cb._attempt(plan, "bpftrace")
    cb.BACKENDS["bpftrace"].run(capture, None, reader, plan, rate_guard, window="the window")
    assert seen["lean"] is lean and seen["window"] == "the window" and seen["netns"] == 4026532177 and seen["port"] == port
    assert seen["sample_one_in"] == (4 if rate > 50000 else 1)
    assert seen["duration"] == 10 and seen["bpftrace"] == "/usr/bin/bpftrace"
    assert capture["scope"] == "netns"


# ------------------------------------------------------------------------- check mode == real run

SYSTEM = {"boot_id": "0d6c1c7e-5d1e-4c2a-9d44-6b1f0e2f7a10", "netns_inode": 4026532177}
NO_INODE = {"boot_id": SYSTEM["boot_id"], "netns_inode": None}
REASONS = parse_tracepoint_format(recorded("kfree_skb_format.txt"))["reasons"]


def _params(**changes):
    params = {"duration": 3, "backend": "auto", "netns": "self", "dport": 0, "exclude_reasons": [],
              "max_event_rate": 0, "stacks": False, "top": 50, "max_size_mb": 256, "timeout": 0, "tmpdir": None}
    params.update(changes)
    return params


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    """Recorded hosts: (reader, capabilities, tracefs root as TracefsMount would find it) per ladder.

    "everything": bpftrace with BTF, perf, tracefs with instances/, dropwatch with NET_DM, as root.
    "only perf": perf alone (no bpftrace, tracefs without instances/, no dropwatch).
    "nothing": no tool, tracefs not mounted, not root.
    """
    root = tmp_path_factory.mktemp("host")
    (root / "sys/kernel/btf").mkdir(parents=True)
    (root / "sys/kernel/btf/vmlinux").write_text("")
    (root / "sys/kernel/tracing/instances").mkdir(parents=True)
    tracefs_root = tmp_path_factory.mktemp("tracefs")
    (tracefs_root / "instances").mkdir()
    everything = recorded_host(tools=("perf", "bpftrace", "dropwatch"), root=str(root))
    only_perf = recorded_host(tools=("perf",))
    nothing = recorded_host(mounted=False, tools=(), status=STATUS_USER)
    return {
        "everything": (everything, collect_capabilities(everything, genl_family=lambda name: 29, euid=0),
                       str(tracefs_root)),
        "only perf": (only_perf, collect_capabilities(only_perf, genl_family=lambda name: None, euid=0), None),
        "nothing": (nothing, collect_capabilities(nothing, genl_family=lambda name: None, euid=1000), None),
    }


def test_recorded_ladders(hosts):
    available = dict((name, [rung["backend"] for rung in caps["ladder"] if rung["available"]])
                     for name, (_reader, caps, _root) in hosts.items())
    assert available == {"everything": ["bpftrace", "perf", "tracefs", "dropwatch"], "only perf": ["perf"],
                         "nothing": []}


class _NotStarted(OSError):
    pass


@pytest.fixture
def nothing_starts(monkeypatch):
    """The real run goes through the plan and the backend's real code up to starting its tracer, which is
    refused here (the tracers run for real in tests/test_backends_lab.py); returns the argv lists asked for."""
    asked = []

    def start(guard, argv, **kwargs):
        asked.append(list(argv))
        raise _NotStarted("not started in unit tests: %s" % argv[0])

    monkeypatch.setattr(CaptureGuard, "start", start)
    return asked


COMBINATIONS = [(ladder, backend, dport, netns, stacks, system)
                for ladder in ("everything", "only perf", "nothing")
                for backend in ("auto", "bpftrace", "perf", "tracefs", "dropwatch")
                for dport in (0, 8000)
                for netns in ("self", "all")
                for stacks in (False, True)
                for system in ("inode known", "inode unknown")]


@pytest.mark.parametrize("ladder,backend,dport,netns,stacks,system", COMBINATIONS)
def test_check_mode_predicts_the_real_run(hosts, nothing_starts, ladder, backend, dport, netns, stacks, system):
    reader, caps, tracefs_root = hosts[ladder]
    params = _params(backend=backend, dport=dport, netns=netns, stacks=stacks)
    host = SYSTEM if system == "inode known" else NO_INODE

    check = cb.describe_capture(reader, cb.plan_capture(params, caps, host, REASONS, tracefs_root))
    plan = cb.plan_capture(params, caps, host, REASONS, tracefs_root)
    real, before, after = cb.run_capture(reader, plan, read_counters=lambda: pytest.fail("no tracer went live"))
    assert (before, after) == (None, None) and "window" not in real

    skipped = check["auto"]["tried"]
    assert real["auto"]["tried"][:len(skipped)] == skipped
    if check["status"] in ("unavailable", "failed"):
        # A refusal: the real run returns the very same capture and starts nothing.
        assert check["reason"] and nothing_starts == []
        assert real == check
        return
    assert check["status"] == "check_mode" and check["auto"]["chosen"] == check["backend"]
    started = [tried["backend"] for tried in real["auto"]["tried"][len(skipped):]]
    # The real run starts the backend check mode named first, then (auto) the rest of the plan.
    assert started[0] == check["backend"] and started == plan.order
    if backend != "auto":
        assert (real["scope"], real.get("port_filter")) == (check["scope"], check.get("port_filter"))
        assert real["backend"] == check["backend"] == backend
        # tracefs starts no process: its command names the private instance (a random name).
        assert [re.sub(r"dropscope-[0-9a-f]{12}$", "dropscope-<random>", arg) for arg in real["command"]] == \
            check["command"]
        assert real["status"] == "failed"
        assert ("trace_pipe" if backend == "tracefs" else "not started in unit tests") in real["reason"]


@pytest.mark.parametrize("ladder,backend,dport,netns,system,expected", [
    ("everything", "auto", 0, "self", SYSTEM, ("check_mode", "bpftrace", None)),
    ("everything", "auto", 8000, "all", SYSTEM, ("check_mode", "bpftrace", None)),
    ("everything", "auto", 0, "self", NO_INODE, ("check_mode", "perf", None)),
    ("everything", "bpftrace", 0, "self", NO_INODE, ("failed", "bpftrace", cb.NETNS_UNKNOWN)),
    ("everything", "bpftrace", 0, "all", NO_INODE, ("check_mode", "bpftrace", None)),
    ("everything", "perf", 8000, "self", SYSTEM, ("failed", "perf", cb.PORT_NEEDS_BPFTRACE)),
    ("everything", "tracefs", 8000, "self", SYSTEM, ("failed", "tracefs", cb.PORT_NEEDS_BPFTRACE)),
    ("everything", "dropwatch", 0, "self", SYSTEM, ("check_mode", "dropwatch", None)),
    ("only perf", "auto", 0, "self", SYSTEM, ("check_mode", "perf", None)),
    ("only perf", "auto", 8000, "self", SYSTEM, (
        "unavailable", "none", "no capture backend works on this host: bpftrace: bpftrace not installed (package"
        " bpftrace); perf: %s; tracefs: %s; dropwatch: %s" % ((cb.PORT_NEEDS_BPFTRACE,) * 3))),
    ("only perf", "bpftrace", 0, "self", SYSTEM, ("unavailable", "bpftrace", "bpftrace not installed (package bpftrace)")),
    ("only perf", "tracefs", 0, "self", SYSTEM, ("unavailable", "tracefs", "tracefs has no instances/ directory")),
    ("only perf", "dropwatch", 0, "self", SYSTEM,
     ("unavailable", "dropwatch", "dropwatch not installed (role dropscope.drops.dropwatch)")),
    ("nothing", "perf", 0, "self", SYSTEM, ("unavailable", "perf", cb.PERF_MISSING)),
    ("nothing", "perf", 8000, "self", SYSTEM, ("failed", "perf", cb.PORT_NEEDS_BPFTRACE)),
])
def test_plans_on_recorded_ladders(hosts, ladder, backend, dport, netns, system, expected):
    reader, caps, tracefs_root = hosts[ladder]
    plan = cb.plan_capture(_params(backend=backend, dport=dport, netns=netns), caps, system, REASONS, tracefs_root)
    check = cb.describe_capture(reader, plan)
    assert (check["status"], check["backend"], check["reason"]) == expected


def test_check_mode_names_the_command_and_why(hosts):
    reader, caps, tracefs_root = hosts["only perf"]
    plan = cb.plan_capture(_params(stacks=True, duration=7), caps, SYSTEM, REASONS, tracefs_root)
    check = cb.describe_capture(reader, plan)
    # Events off until `enable` on the control FIFO; `sleep` is the capture's own deadline (duration + 60 s).
    assert check["command"] == ["/usr/bin/perf", "record", "-a", "-e", "skb:kfree_skb", "-g", "--max-size", "256M",
                                "--no-buildid", "-D", "-1", "--control", "fifo:perf.ctl,perf.ack", "-o", "perf.data", "--", "sleep", "67"]
    assert check["auto"] == {
        "requested": "auto", "chosen": "perf",
        "why": "perf is the cheapest rung that works here; bpftrace unavailable: bpftrace not installed (package"
               " bpftrace); tracefs unavailable: tracefs has no instances/ directory; dropwatch unavailable:"
               " dropwatch not installed (role dropscope.drops.dropwatch)",
        "tried": [{"backend": "bpftrace", "status": "unavailable", "reason": "bpftrace not installed (package bpftrace)"},
                  {"backend": "tracefs", "status": "unavailable", "reason": "tracefs has no instances/ directory"},
                  {"backend": "dropwatch", "status": "unavailable",
                   "reason": "dropwatch not installed (role dropscope.drops.dropwatch)"}]}


def test_tracefs_that_cannot_be_mounted_is_refused(hosts):
    reader, caps, _root = hosts["everything"]
    plan = cb.plan_capture(_params(backend="tracefs"), caps, SYSTEM, REASONS, None)
    assert (plan.refusal["status"], plan.refusal["reason"]) == ("unavailable", cb.TRACEFS_UNMOUNTABLE)
    assert cb.run_capture(reader, plan) == (cb.describe_capture(reader, plan), None, None)


def test_bpftrace_program_self_deadline():
    text = bt.program_text(4026532177, 8000, deadline_s=70)
    assert text.rstrip().endswith("interval:s:70 { exit(); }")
    assert "interval:s:" not in bt.program_text(4026532177, 8000)
    for bad in (-1, "70; system(\"id\")", 1.5, True):
        with pytest.raises(ValueError, match="deadline_s"):
            bt.program_text(0, 0, deadline_s=bad)
