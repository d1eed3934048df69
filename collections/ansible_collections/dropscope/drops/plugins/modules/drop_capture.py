#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: drop_capture
short_description: Capture where the kernel drops packets (skb:kfree_skb) and read the drop counters, in one window
version_added: 0.1.0
description:
  - Counts the C(skb:kfree_skb) tracepoint for O(duration) seconds and aggregates on the host, so only
    counts by drop reason, kernel location (function, with the offset kept separately) and protocol
    come back (plus L4 protocol and destination port with bpftrace, and the top kernel stacks with
    perf and O(stacks=true)).
  - "Backends: V(bpftrace) (a kernel map, printed once at the end; exact per network namespace),
    V(perf) (C(perf record -a -e skb:kfree_skb), streamed through an aggregator), V(tracefs) (a private
    ftrace instance read through C(trace_pipe)), V(dropwatch) (needs the kernel's NET_DM). V(auto)
    tries them in that order, skipping those M(dropscope.drops.drop_capabilities) finds unavailable, and
    says why in RV(capture.auto)."
  - With O(counters=true) (the default) it also reads every drop counter, as M(dropscope.drops.drop_counters)
    does, twice in the capture's own window - right after the tracer is live (RV(before)) and right before
    it is stopped (RV(after)) - so the counters' interval and the capture's window are the same, and one
    module run per host gives the whole diagnosis. RV(capture.window) records both intervals and how much
    they differ (the reading time).
  - A counter source that cannot be read is listed in the snapshot's C(errors) and the capture goes on. A
    capture that dies mid-way returns RV(capture.status=failed) with the reason, and the counters read
    before it (RV(before); RV(after) is null).
  - Reason names come from the host's own C(events/skb/kfree_skb/format), since the enum differs
    between kernel versions.
  - The result is bounded in size whatever the drop rate (the top O(top) groups and an C(other) bucket).
  - A rate guard measures the kernel-wide drop rate for 0.25 s in a private ftrace instance first; above
    O(max_event_rate) it turns stacks off, makes bpftrace run a lean program (no packet-header parsing;
    keyed by netns, reason, location and protocol, without C(l4) and C(port)) on 1 in N drops chosen at
    random in the kernel (RV(capture.sample_one_in); counts are N times the sampled ones, estimates), makes
    other backends capture only a window of the duration, and says so in RV(capture.guard).
  - The capture has its own deadline on the host (O(timeout)) and a guardian process that stops the
    tracer, removes the temporary files and the ftrace instance on every exit path, including the module
    being killed or its SSH connection being cut.
  - When the capture cannot run (no backend works, the asked one is unavailable, or an option needs
    another backend) the module does not fail; it returns RV(capture.status=unavailable) or
    RV(capture.status=failed) with the reason, never V(ok).
options:
  duration:
    description:
      - How long to capture, in seconds.
    type: int
    default: 10
  backend:
    description:
      - How to capture. V(auto) picks the cheapest backend that works on the host (bpftrace with BTF, then
        perf, tracefs, dropwatch) and moves on to the next when one is unavailable.
    type: str
    choices: [auto, bpftrace, perf, tracefs, dropwatch]
    default: auto
  netns:
    description:
      - V(self) counts only drops in the network namespace the module runs in (RV(capture.scope=netns)),
        which gives exact per-host counts when hosts share a kernel (containers, network namespaces).
      - V(all) counts every namespace of the kernel (RV(capture.scope=kernel)); each drop group then has a
        C(netns) field.
      - Only V(bpftrace) can tell namespaces apart; the other backends always have scope V(kernel).
    type: str
    choices: [self, all]
    default: self
  dport:
    description:
      - Count only packets to this TCP/UDP destination port (read from the packet headers); V(0) counts all.
      - Needs the V(bpftrace) backend; with another one the capture is refused (RV(capture.status=failed)).
    type: int
    default: 0
    aliases: [port]
  exclude_reasons:
    description:
      - Drop reason names not to count, for example V(NOT_SPECIFIED). The V(tracefs) backend filters them
        in the kernel (by number); the others leave them out of the result.
    type: list
    elements: str
    default: []
  max_event_rate:
    description:
      - Rate guard, in kfree_skb events per second, measured kernel-wide for 0.25 s before the capture.
        Above it, stacks are turned off; bpftrace runs its lean program (no C(l4)/C(port); kept full when
        O(dport) filters) on 1 in N drops chosen at random in the kernel, N the smallest power of two (at
        most 64) with rate / N <= O(max_event_rate), so its counts are estimates (RV(capture.sample_one_in));
        other backends, and bpftrace beyond 64 times the limit, capture only a window of O(duration)
        (O(duration) * O(max_event_rate) * N / rate seconds, at least 1). So the capture processes in full
        about O(max_event_rate) events per second. V(0) turns the guard off.
    type: int
    default: 50000
  stacks:
    description:
      - Also record kernel call stacks (C(perf record -g), perf backend only) and return the most frequent ones.
      - Costs much more on a host that drops many packets (about half the throughput at 200k drops/s).
    type: bool
    default: false
  top:
    description:
      - How many reason × location × protocol (× L4 protocol × port with bpftrace) groups to return; the rest
        are summed in RV(capture.other).
    type: int
    default: 50
  max_size_mb:
    description:
      - Upper bound of the temporary perf data file, in MiB. perf stops recording when it is reached and
        the result is marked RV(capture.truncated).
    type: int
    default: 256
  timeout:
    description:
      - Hard deadline of the whole capture on the host, in seconds, after which every process it started
        is killed and its files removed. V(0) means O(duration) plus 60 seconds.
    type: int
    default: 0
  tmpdir:
    description:
      - Directory for the temporary perf data file. Defaults to the system's temporary directory.
    type: path
  counters:
    description:
      - Read the drop counters when the tracer is live and right before it stops (RV(before), RV(after)).
      - V(false) captures only; RV(before) and RV(after) are then null.
    type: bool
    default: true
  peers:
    description:
      - Who sends the dropped packets and where they go (bpftrace, full program only). V(exact) records the
        source and destination addresses of each drop (never anything else of the packet), and returns per
        reason the 10 largest (source, destination) pairs, the rest summed (RV(capture.peers)). V(prefix)
        records them as /24 (IPv4) and /64 (IPv6) prefixes. V(off) records none.
      - Under the rate guard (the lean program) and with other backends no addresses are recorded and
        RV(capture.peers) says so.
    type: str
    choices: [exact, prefix, "off"]
    default: exact
  knobs:
    description:
      - After the capture, read once what the advice of a finding names (RV(knobs)) - the knobs' sysctls,
        per interface the ring sizes and channels (C(ethtool -g), C(ethtool -l), device-backed interfaces
        only), txqueuelen and qdisc limits - and the sockets behind socket-level drops with their own
        receive buffer and backlog (C(ss -m)), the processes that hold them (comm, pid, user, cgroup,
        container, pod), and what listens elsewhere on ports that got NO_SOCKET drops.
      - V(false) reads none of it; RV(knobs) is then null.
    type: bool
    default: true
  sysctls:
    description:
      - More sysctl names to read into RV(knobs.sysctl), besides the ones the knowledge base's advice names
        (C(net.core.rmem_max) and the others). C(*) stands for C(all), C(default) and each interface, as in
        C(net.ipv4.conf.*.rp_filter).
    type: list
    elements: str
    default: []
extends_documentation_fragment:
  - dropscope.drops.attributes
  - dropscope.drops.attributes.read_only
  - dropscope.drops.attributes.linux
attributes:
  check_mode:
    details:
      - Check mode reads the host's capabilities and plans the capture exactly as a real run does, then
        returns the command the run would start (RV(capture.status=check_mode)) or the refusal the run
        would return (RV(capture.status=unavailable) or V(failed), with the same reason). Nothing is captured
        and no counters are read (RV(before) and RV(after) are null).
  platform:
    details:
      - Hosts with bpftrace (and kernel BTF), perf, tracefs or dropwatch (with NET_DM).
notes:
  - Needs root (C(become=true)); perf alone can also work with C(kernel.perf_event_paranoid=-1).
  - When tracefs is not mounted (for example inside C(ip netns exec)), the module mounts it at
    C(/sys/kernel/tracing) for the capture and unmounts it afterwards, as perf does for itself.
seealso:
  - module: dropscope.drops.drop_counters
  - module: dropscope.drops.drop_capabilities
author:
  - dropscope maintainers (@dropscope)
"""

EXAMPLES = r"""
- name: Capture kernel packet drops for 10 seconds
  dropscope.drops.drop_capture:
  become: true
  register: capture

- name: Capture 30 seconds with perf and kernel stacks, keep the top 20 groups
  dropscope.drops.drop_capture:
    duration: 30
    backend: perf
    stacks: true
    top: 20
  become: true
  register: capture

- name: Count drops of packets to port 8000 in this host's network namespace only
  dropscope.drops.drop_capture:
    backend: bpftrace
    netns: self
    dport: 8000
  become: true
  register: capture

- name: Say where packets died
  ansible.builtin.debug:
    msg: "{{ item.count }} x {{ item.reason }} at {{ item.location }}"
  loop: "{{ capture.capture.drops }}"

- name: Show UDP packets that found no socket, counted in the capture's window
  ansible.builtin.debug:
    msg: "{{ capture.after.protocols.UdpNoPorts - capture.before.protocols.UdpNoPorts }}"
"""

RETURN = r"""
capture:
  description: What the capture saw (see docs/run-format.md).
  returned: always
  type: dict
  contains:
    schema_version:
      description: Version of this layout.
      type: int
      sample: 1
    backend:
      description: The way the drops were captured (V(bpftrace), V(perf), V(tracefs) or V(dropwatch)).
      type: str
      sample: bpftrace
    status:
      description: V(ok), V(unavailable) (no way to capture on this host; see RV(capture.reason)), V(failed)
        (the capture could not run or broke off; see RV(capture.reason)), or V(check_mode) (check mode, when
        a real run would start the capture).
      type: str
      sample: ok
    reason:
      description: Why the capture is unavailable or failed; null when it is ok (or would run, in check mode).
      type: str
      sample: "perf not found: install linux-perf (Debian/Ubuntu) or perf (RHEL/Fedora)"
    scope:
      description: V(kernel) when the counts cover every network namespace of the kernel, V(netns) when
        they cover only the host's own (O(netns=self) with bpftrace).
      type: str
      sample: netns
    boot_id:
      description: The kernel's boot_id; hosts with the same one share the kernel.
      type: str
    netns_inode:
      description: Inode of the network namespace the module ran in.
      type: int
    requested_duration_s:
      description: The O(duration) asked for.
      type: int
    duration_s:
      description: How long the backend actually recorded, in seconds.
      type: float
      sample: 10.02
    started_wall:
      description: Wall-clock time when recording started (seconds since the epoch).
      type: float
    command:
      description: The command that ran, as a list of arguments (for tracefs, the instance and event).
      type: list
      elements: str
      sample: ["/usr/bin/perf", "record", "-a", "-e", "skb:kfree_skb", "--max-size", "256M", "--no-buildid",
               "-o", "perf.data", "--", "/usr/bin/sleep", "10"]
    events:
      description: Number of kfree_skb events seen.
      type: int
      sample: 812
    lost_events:
      description: Events the backend could not keep up with (perf lost chunks, tracefs ring-buffer overruns).
      type: int
      sample: 0
    truncated:
      description: True when the capture was cut short (deadline, O(max_size_mb), a full bpftrace map, or the
        rate guard's window); counts are then a lower bound.
      type: bool
    unitemised:
      description:
        - bpftrace only. How many counted drops are in RV(capture.drops) without C(l4) and C(port) because the
          map keyed by port was full (8192 keys, as under a port scan). A second map counts every drop by
          reason, location and protocol, so counts stay exact; V(0) normally.
      type: int
      sample: 0
    drops:
      description:
        - Counts by reason, location, offset and protocol, largest first, at most O(top).
        - With bpftrace also C(l4) (V(udp), V(tcp), V(icmp)… or null) and C(port) (TCP/UDP destination port or
          null), and with O(netns=all) C(netns) (the namespace inode).
      type: list
      elements: dict
      sample: [{"reason": "NO_SOCKET", "location": "__udp4_lib_rcv", "offset": "0x4bc", "protocol": "IPv4",
                "l4": "udp", "port": 9000, "count": 300}]
    other:
      description: Events in groups beyond O(top).
      type: dict
      sample: {"count": 0, "groups": 0}
    stacks:
      description: Most frequent kernel stacks (only with O(stacks=true)).
      type: list
      elements: dict
    reason_names:
      description: How many drop reason names the host's tracepoint format lists.
      type: int
      sample: 127
    auto:
      description: How the backend was chosen. C(requested) (O(backend)), C(chosen) (null when none worked),
        C(why) (a sentence), and C(tried), the rungs skipped or tried with their status and reason.
      type: dict
      sample: {"requested": "auto", "chosen": "bpftrace", "why": "bpftrace is the cheapest rung that works here",
               "tried": [{"backend": "bpftrace", "status": "ok", "reason": null, "seconds": 4.3}]}
    guard:
      description: The rate guard. C(max_event_rate), C(measured_rate) (kernel-wide events/s, null if not
        measured), C(active), C(actions) (what it changed, as sentences), C(window_s) (seconds captured),
        C(stacks) (whether stacks were recorded), C(bpftrace_program) (V(full) or V(lean); null for other
        backends) and C(sample_one_in) (bpftrace counted 1 in that many drops; 1 for exact counts).
      type: dict
      sample: {"max_event_rate": 50000, "measured_rate": 212000, "active": true, "window_s": 10, "stacks": false,
               "bpftrace_program": "lean", "sample_one_in": 8,
               "actions": ["bpftrace: lean program (map keyed by netns, reason, location, protocol; no packet-header parsing, so no l4/port columns)",
                           "bpftrace: counted 1 in 8 drops, chosen at random in the kernel: counts are estimates
                            (a count C is within 2*sqrt(C*7) of the true count 19 times in 20)"]}
    sample_one_in:
      description: Present when the rate guard made bpftrace count 1 in this many drops, chosen at random in the
        kernel. Every count is then this many times the sampled count, an estimate.
      type: int
      returned: when sampled
      sample: 8
    peers:
      description:
        - Who sent the dropped packets and where they were going (O(peers)). C(status) (V(ok) or V(off)),
          C(mode), C(why) (why it is off - the rate guard's lean program, another backend, O(peers=off)), C(top),
          C(groups) (per reason the largest (C(src), C(dst)) address pairs with their C(count)), C(other) (per
          reason the C(count) and number of C(pairs) beyond the top) and C(truncated) (the map was full; pairs
          that came after are not kept, their drops are counted in C(other)).
      type: dict
      sample: {"status": "ok", "mode": "exact", "why": null, "top": 10, "truncated": false, "other": {},
               "groups": [{"reason": "NETFILTER_DROP", "src": "198.18.23.1", "dst": "198.18.23.2", "count": 500}]}
    window:
      description:
        - The counting window and the counters' interval, in seconds, relative to the moment the tracer was
          live (absent in check mode and when no backend went live). C(capture_s) (live to stop),
          C(counters_s) (between the two snapshots' C(time.monotonic)), C(before_at_s) and C(after_at_s) (when
          each snapshot began), C(before_read_s) and C(after_read_s) (how long each took to read),
          C(difference_s) (how much the two intervals differ; about the reading time) and C(complete)
          (false when the capture ended before its window did). Counter fields are null without O(counters).
      type: dict
      sample: {"capture_s": 4.112, "counters_s": 4.004, "before_at_s": 0.0001, "after_at_s": 4.0041,
               "before_read_s": 0.103, "after_read_s": 0.1078, "difference_s": 0.108, "complete": true}
knobs:
  description:
    - The values of the knobs the advice names, read once right after the capture, and the sockets behind
      socket-level drops with their owners (layout in docs/run-format.md, "Knobs and socket owners").
    - Null in check mode and with O(knobs=false). Sources that could not be read are in its C(errors).
  returned: always
  type: dict
  sample: {"schema_version": 1, "sysctl": {"net.core.rmem_max": "212992"}, "interfaces": {}, "listeners": [],
           "sockets": [{"proto": "udp", "local_address": "127.0.0.1", "local_port": 9000, "rcvbuf": 2304,
                        "owners": [{"pid": 4242, "comm": "udp-rx", "user": "app"}]}], "errors": []}
  contains:
    sysctl:
      description: Sysctl name to its value as C(/proc/sys) gives it (whitespace runs made one space).
      type: dict
      sample: {"net.core.rmem_max": "212992", "net.ipv4.udp_mem": "45318 60424 90636"}
    interfaces:
      description: Per interface C(rings) and C(channels) (C(ethtool -g), C(ethtool -l); null where not read),
        C(txqueuelen) and C(qdiscs) (qdisc key to its C(kind) and C(limit)).
      type: dict
    sockets:
      description: The sockets behind socket-level drops (at most 50) with C(rcvbuf), C(rx_queue), C(backlog),
        C(backlog_max), C(owners) (pid, comm, uid, user, cgroup, unit, container, pod) or C(owner_note).
      type: list
      elements: dict
    listeners:
      description: For ports that got NO_SOCKET drops, the sockets bound to them here (C(here)) and in other
        network namespaces (C(other_netns)).
      type: list
      elements: dict
    errors:
      description: Sources that could not be read, as C(source) and C(error).
      type: list
      elements: dict
before:
  description:
    - The drop counters read right after the tracer was live, as M(dropscope.drops.drop_counters) returns its
      snapshot (see docs/run-format.md); sources that could not be read are in its C(errors).
    - Null in check mode, with O(counters=false), and when no backend went live.
  returned: always
  type: dict
  sample: {"schema_version": 1, "time": {"wall": 1795748401.25, "monotonic": 10234.5}, "protocols": {"UdpNoPorts": 0}}
after:
  description:
    - The drop counters read right before the tracer was stopped (same layout as RV(before)).
    - Null in check mode, with O(counters=false), and when the capture ended before its window did.
  returned: always
  type: dict
  sample: {"schema_version": 1, "time": {"wall": 1795748405.35, "monotonic": 10238.6}, "protocols": {"UdpNoPorts": 300}}
capabilities:
  description:
    - What the host offers for capturing, as M(dropscope.drops.drop_capabilities) returns it; the ladder
      that V(auto) chose from (see RV(capture.auto)).
  returned: always
  type: dict
  sample: {"chosen": "bpftrace", "ladder": [{"backend": "bpftrace", "available": true, "reason": null}]}
"""


import signal

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.dropscope.drops.plugins.module_utils.capabilities import collect_capabilities
from ansible_collections.dropscope.drops.plugins.module_utils.capture_backends import (
    BACKEND_CHOICES,
    DEFAULT_MAX_EVENT_RATE,
    check_params,
    describe_capture,
    plan_capture,
    run_capture,
)
from ansible_collections.dropscope.drops.plugins.module_utils.capture_guard import (
    unmount_if_owner_dies,
    watch_controller,
)
from ansible_collections.dropscope.drops.plugins.module_utils.host_knobs import read_knobs_safely
from ansible_collections.dropscope.drops.plugins.module_utils.kfree_skb import TRACEFS_ROOTS, read_reason_names
from ansible_collections.dropscope.drops.plugins.module_utils.snapshot import (
    DeviceMemo,
    HostReader,
    collect_snapshot,
    read_system,
)
from ansible_collections.dropscope.drops.plugins.module_utils.tracefs_capture import TracefsMount


def _exit_on_signal(signum, frame):
    # Turn SIGTERM/SIGHUP into SystemExit so the capture's cleanup (finally blocks) runs.
    raise SystemExit(128 + signum)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            duration=dict(type="int", default=10),
            backend=dict(type="str", default="auto", choices=list(BACKEND_CHOICES)),
            netns=dict(type="str", default="self", choices=["self", "all"]),
            dport=dict(type="int", default=0, aliases=["port"]),
            exclude_reasons=dict(type="list", elements="str", default=[]),
            max_event_rate=dict(type="int", default=DEFAULT_MAX_EVENT_RATE),
            stacks=dict(type="bool", default=False),
            top=dict(type="int", default=50),
            max_size_mb=dict(type="int", default=256),
            timeout=dict(type="int", default=0),
            tmpdir=dict(type="path"),
            counters=dict(type="bool", default=True),
            knobs=dict(type="bool", default=True),
            peers=dict(type="str", default="exact", choices=["exact", "prefix", "off"]),
            sysctls=dict(type="list", elements="str", default=[]),
        ),
        supports_check_mode=True,
    )
    problem = check_params(module.params)
    if problem:
        module.fail_json(msg=problem)
    reader = HostReader.for_module(module)
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, _exit_on_signal)
    # No signal comes when the SSH channel (stdout) closes: the capture's guardian watches it and ends this module.
    watch_controller(1)
    # Inside `ip netns exec` tracefs is not mounted: mount it for the capture, and in check mode just
    # long enough to read the tracepoint, so the plan is the same in both.
    with TracefsMount(reader) as mount:
        if mount.mounted_here:  # unmounted on leaving the block; by the guardian if this module dies first
            unmount_if_owner_dies(TRACEFS_ROOTS[0], reader.find_bin("umount"))
        caps = collect_capabilities(reader)
        plan = plan_capture(module.params, caps, read_system(reader), read_reason_names(reader.read_text),
                            mount.root)
        before = after = knobs = None
        if module.check_mode:
            capture = describe_capture(reader, plan)
        else:
            # The counters are read in the capture's window: when its tracer is live and before it stops.
            # One DeviceMemo for both readings: driver info is read once per device (see snapshot.DeviceMemo).
            memo = DeviceMemo()
            read_counters = (lambda: collect_snapshot(reader, memo=memo)) if module.params["counters"] else None
            try:
                capture, before, after = run_capture(reader, plan, read_counters)
            except (IOError, OSError) as exc:
                module.fail_json(msg="Capture failed: %s" % exc, capabilities=caps)
            if module.params["knobs"]:  # once, after the tracer stopped: it is not counted in the window
                knobs = read_knobs_safely(reader, capture, after or before, module.params["sysctls"], before)
    # A capture that is unavailable or failed is data for the report (its status and reason say so),
    # not a task failure. The capabilities it chose from come back too (no separate drop_capabilities task).
    module.exit_json(changed=False, capture=capture, before=before, after=after, capabilities=caps, knobs=knobs)


if __name__ == "__main__":
    main()
