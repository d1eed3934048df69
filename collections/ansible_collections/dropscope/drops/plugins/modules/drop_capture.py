#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: drop_capture
short_description: Capture where the kernel drops packets (skb:kfree_skb) for a few seconds
version_added: 0.1.0
description:
  - Records the C(skb:kfree_skb) tracepoint for O(duration) seconds with
    C(perf record -a -e skb:kfree_skb) and aggregates the events on the host, so only counts by drop
    reason, kernel location (function, with the offset kept separately) and protocol come back, plus
    the top kernel stacks when O(stacks=true).
  - Reason names come from the host's own C(events/skb/kfree_skb/format), since the enum differs
    between kernel versions.
  - The result is bounded in size whatever the drop rate (the top O(top) groups and an C(other) bucket),
    and the perf data file is bounded by O(max_size_mb).
  - The capture has its own deadline on the host (O(timeout)) and a guardian process that stops perf
    and removes the temporary files on every exit path, including the module being killed or its SSH
    connection being cut.
  - perf sees the whole kernel, not one network namespace; the result records this as
    RV(capture.scope=kernel) with the kernel's boot_id, so hosts that share one kernel (containers,
    network namespaces) are counted once in fleet totals.
  - When perf is not installed the module does not fail; it returns RV(capture.status=unavailable) with
    the reason.
options:
  duration:
    description:
      - How long to capture, in seconds.
    type: int
    default: 10
  backend:
    description:
      - How to capture. V(auto) picks the best way available on the host; today that is V(perf).
    type: str
    choices: [auto, perf]
    default: auto
  stacks:
    description:
      - Also record kernel call stacks (C(perf record -g)) and return the most frequent ones.
      - Costs much more on a host that drops many packets (about half the throughput at 200k drops/s).
    type: bool
    default: false
  top:
    description:
      - How many reason × location × protocol groups to return; the rest are summed in RV(capture.other).
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
attributes:
  check_mode:
    support: full
    description: In check mode only the pre-flight checks run (perf present, tracepoint readable) and the
      command that would run is returned; nothing is captured.
  diff_mode:
    support: none
    description: Nothing on the host is changed.
  platform:
    support: full
    platforms: linux
    description: Linux hosts with C(perf) (package C(linux-perf) on Debian/Ubuntu, C(perf) on RHEL/Fedora).
notes:
  - Needs root (C(become=true)) or C(kernel.perf_event_paranoid) low enough for system-wide tracepoints.
  - perf mounts tracefs at C(/sys/kernel/tracing) if it is not mounted yet.
seealso:
  - module: dropscope.drops.drop_counters
author:
  - dropscope maintainers (@dropscope)
"""

EXAMPLES = r"""
- name: Capture kernel packet drops for 10 seconds
  dropscope.drops.drop_capture:
  become: true
  register: capture

- name: Capture 30 seconds with kernel stacks, keep the top 20 groups
  dropscope.drops.drop_capture:
    duration: 30
    stacks: true
    top: 20
  become: true
  register: capture

- name: Say where packets died
  ansible.builtin.debug:
    msg: "{{ item.count }} x {{ item.reason }} at {{ item.location }}"
  loop: "{{ capture.capture.drops }}"
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
      description: The way the drops were captured.
      type: str
      sample: perf
    status:
      description: V(ok), V(unavailable) (no way to capture on this host; see RV(capture.reason)), V(failed),
        or V(check_mode).
      type: str
      sample: ok
    reason:
      description: Why the capture is unavailable or failed; null when it is ok.
      type: str
      sample: "perf not found: install linux-perf (Debian/Ubuntu) or perf (RHEL/Fedora)"
    scope:
      description: V(kernel) when the backend sees every network namespace of the kernel.
      type: str
      sample: kernel
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
      description: How long perf actually recorded, in seconds.
      type: float
      sample: 10.02
    started_wall:
      description: Wall-clock time when recording started (seconds since the epoch).
      type: float
    command:
      description: The perf command that ran, as a list of arguments.
      type: list
      elements: str
      sample: ["/usr/bin/perf", "record", "-a", "-e", "skb:kfree_skb", "--max-size", "256M", "-o", "perf.data",
               "--", "/usr/bin/sleep", "10"]
    events:
      description: Number of kfree_skb events seen.
      type: int
      sample: 812
    lost_events:
      description: Events perf could not keep up with.
      type: int
      sample: 0
    truncated:
      description: True when the capture was cut short (deadline or O(max_size_mb)); counts are then a lower bound.
      type: bool
    drops:
      description: Counts by reason, location, offset and protocol, largest first, at most O(top).
      type: list
      elements: dict
      sample: [{"reason": "NO_SOCKET", "location": "__udp4_lib_rcv", "offset": "0x4bc", "protocol": "IPv4", "count": 300}]
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
"""

import os
import signal

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.dropscope.drops.plugins.module_utils.perf_capture import (
    new_capture,
    read_reason_names,
    record_command,
    run_perf_capture,
)
from ansible_collections.dropscope.drops.plugins.module_utils.snapshot import HostReader, read_system

MAX_DURATION = 3600
PERF_MISSING = "perf not found: install linux-perf (Debian/Ubuntu) or perf (RHEL/Fedora), or run the playbook with dropscope_install_perf=true"


def _exit_on_signal(signum, frame):
    # Turn SIGTERM/SIGHUP into SystemExit so the capture's cleanup (finally blocks) runs.
    raise SystemExit(128 + signum)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            duration=dict(type="int", default=10),
            backend=dict(type="str", default="auto", choices=["auto", "perf"]),
            stacks=dict(type="bool", default=False),
            top=dict(type="int", default=50),
            max_size_mb=dict(type="int", default=256),
            timeout=dict(type="int", default=0),
            tmpdir=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if not 1 <= params["duration"] <= MAX_DURATION:
        module.fail_json(msg="duration must be between 1 and %d seconds, got %d" % (MAX_DURATION, params["duration"]))
    if not 1 <= params["top"] <= 10000:
        module.fail_json(msg="top must be between 1 and 10000, got %d" % params["top"])
    if not 1 <= params["max_size_mb"] <= 65536:
        module.fail_json(msg="max_size_mb must be between 1 and 65536, got %d" % params["max_size_mb"])
    if params["timeout"] and params["timeout"] <= params["duration"]:
        module.fail_json(msg="timeout (%d s) must be longer than duration (%d s)" % (params["timeout"], params["duration"]))
    if params["tmpdir"] is not None and not os.path.isdir(params["tmpdir"]):
        module.fail_json(msg="tmpdir %s is not a directory" % params["tmpdir"])

    reader = HostReader(run_command=module.run_command, find_bin=module.get_bin_path)
    system = read_system(reader)
    capture = new_capture(params["duration"], params["stacks"], system["boot_id"], system["netns_inode"])
    format_info = read_reason_names(reader.read_text)
    capture["reason_names"] = len(format_info["reasons"])

    perf = module.get_bin_path("perf", opt_dirs=["/usr/sbin", "/sbin"])
    if perf is None:
        capture["status"] = "unavailable"
        capture["reason"] = PERF_MISSING
        module.exit_json(changed=False, capture=capture)
    rc, out, err = module.run_command([perf, "--version"])
    if rc != 0:
        capture["status"] = "unavailable"
        capture["reason"] = "perf does not run on this kernel: %s" % (err or out).strip()[:300]
        module.exit_json(changed=False, capture=capture)

    sleep = module.get_bin_path("sleep", required=True)
    if module.check_mode:
        capture["status"] = "check_mode"
        capture["command"] = record_command(perf, sleep, "perf.data", params["duration"], params["stacks"],
                                            params["max_size_mb"])
        module.exit_json(changed=False, capture=capture)

    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, _exit_on_signal)
    try:
        run_perf_capture(
            capture, perf, sleep, params["duration"], stacks=params["stacks"], top=params["top"],
            max_size_mb=params["max_size_mb"], deadline_s=params["timeout"] or params["duration"] + 60,
            reasons=format_info["reasons"], tmp_root=params["tmpdir"],
        )
    except (IOError, OSError) as exc:
        module.fail_json(msg="Capture with perf failed: %s" % exc, capture=capture)
    # A capture that is unavailable or failed is data for the report, not a task failure.
    module.exit_json(changed=False, capture=capture)


if __name__ == "__main__":
    main()
