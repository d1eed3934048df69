# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The `dropwatch` capture backend: drive `dropwatch -l kas` and parse what it prints.

dropwatch needs the kernel's NET_DM generic-netlink family (CONFIG_NET_DROP_MONITOR). Without it,
dropwatch prints "Unable to find NET_DM family, dropwatch can't work" and exits before reading any
command; the capture is then `unavailable` with that reason, and `auto` moves on.

How dropwatch 1.5.5 is driven (src/main.c): commands are read with readline() at the
`dropwatch> ` prompt (enter_command_line_mode); `start` enables monitoring and the state loop stops
reading stdin while it receives; SIGINT (sigint_handler) sends the deactivation request, and after
its ack dropwatch is back at the prompt, where `exit` (or end of input) ends it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import signal
import subprocess
import time

from ansible_collections.dropscope.drops.plugins.module_utils.capture_window import CaptureWindow
from ansible_collections.dropscope.drops.plugins.module_utils.kfree_skb import DropAggregator

NO_NET_DM = "Unable to find NET_DM family"
NO_NET_DM_REASON = "kernel has no NET_DM (CONFIG_NET_DROP_MONITOR)"

# main.c handle_dm_alert_msg:  "%d drops at %s+%llx (%p) [software]"; dropwatch before 1.5.2 (RHEL 7's 1.4)
# prints no " [software]" (tests/data/dropwatch_summary_4.19_issue3.txt)
_SUMMARY = re.compile(r"^(\d+) drops at (\S+?)\+([0-9a-fA-F]+) \((0x[0-9a-fA-F]+|\(nil\))\)(?: \[(software)\])?\s*$")
# main.c handle_dm_alert_msg, symbol not found:  "%d drops at location %p [software]"
_SUMMARY_ADDR = re.compile(r"^(\d+) drops at location (0x[0-9a-fA-F]+|\(nil\))(?: \[(software)\])?\s*$")
# main.c print_nested_hw_entry:  "%d drops at %s [hardware]"
_SUMMARY_HW = re.compile(r"^(\d+) drops at (.+?) \[(hardware)\]\s*$")
# main.c handle_dm_packet_alert_msg:  "drop at: %s (0x%" PRIx64 ")"  or  "drop at: %s (%s)" (hardware)
_PACKET_AT = re.compile(r"^drop at: (\S+) \(([^)]*)\)\s*$")
# The kernel's symbol in packet mode is "%pS": "__udp4_lib_rcv+0x4bc/0xd00".
_SYMBOL = re.compile(r"^([^+\s]+)(?:\+(0x[0-9a-fA-F]+))?(?:/0x[0-9a-fA-F]+)?$")
_PROMPT = "dropwatch> "


def _strip_prompt(line):
    while line.startswith(_PROMPT):
        line = line[len(_PROMPT):]
    return line.rstrip("\r\n")


def parse_dropwatch_output(text):
    """Parse dropwatch's stdout (summary or packet alert mode); returns a dict.

    Summary mode lines (formats from dropwatch 1.5.5 src/main.c, see tests/data/README.md)::

        3 drops at __udp4_lib_rcv+4bc (0xffffffff82046f4c) [software]
        2 drops at location 0xffffffffc0a1b2c3 [software]
        7 drops at rx_dropped_trap [hardware]

    Packet mode blocks (one per dropped packet, ended by a blank line)::

        drop at: __udp4_lib_rcv+0x4bc/0xd00 (0xffffffff82046f4c)
        origin: software
        input port ifindex: 2
        timestamp: Fri Nov 27 03:05:01 2026 123456789 nsec
        protocol: 0x800
        length: 128
        original length: 128
        drop reason: NO_SOCKET

    Returns ``{"no_net_dm": bool, "drops": [{"reason", "location", "offset", "protocol", "origin",
    "count"}], "events": N, "packet_mode": bool}``; offsets are "0x…" strings, reasons "UNKNOWN" in
    summary mode (it has none), protocol an ethertype number or None.
    """
    result = {"no_net_dm": NO_NET_DM in text, "drops": [], "events": 0, "packet_mode": False,
              "alert_limit_reached": False}
    packet = None

    def flush():
        if packet is not None and packet.get("location"):
            result["drops"].append(packet)

    for raw in text.splitlines():
        line = _strip_prompt(raw)
        match = _SUMMARY.match(line)
        if match:
            count, symbol, offset, _address, origin = match.groups()
            result["drops"].append({"reason": "UNKNOWN", "location": symbol, "offset": "0x%x" % int(offset, 16),
                                    "protocol": None, "origin": origin or "software", "count": int(count)})
            continue
        match = _SUMMARY_ADDR.match(line)
        if match:
            count, address, origin = match.groups()
            result["drops"].append({"reason": "UNKNOWN", "location": address, "offset": None,
                                    "protocol": None, "origin": origin or "software", "count": int(count)})
            continue
        match = _SUMMARY_HW.match(line)
        if match:
            count, name, origin = match.groups()
            result["drops"].append({"reason": "UNKNOWN", "location": name, "offset": None,
                                    "protocol": None, "origin": origin, "count": int(count)})
            continue
        if line.startswith("Alert limit reached"):
            result["alert_limit_reached"] = True
            continue
        match = _PACKET_AT.match(line)
        if match:
            flush()
            result["packet_mode"] = True
            symbol = _SYMBOL.match(match.group(1))
            packet = {"reason": "UNKNOWN", "location": symbol.group(1) if symbol else match.group(1),
                      "offset": symbol.group(2) if symbol else None, "protocol": None,
                      "origin": "software" if match.group(2).startswith("0x") else "hardware", "count": 1}
            continue
        if packet is None:
            continue
        if not line.strip():
            flush()
            packet = None
        elif line.startswith("origin: "):
            packet["origin"] = line[len("origin: "):].strip()
        elif line.startswith("protocol: "):
            try:
                packet["protocol"] = int(line[len("protocol: "):].strip(), 16)
            except ValueError:
                pass
        elif line.startswith("drop reason: "):
            packet["reason"] = line[len("drop reason: "):].strip() or "UNKNOWN"
    flush()
    result["events"] = sum(drop["count"] for drop in result["drops"])
    return result


def aggregate_dropwatch(parsed, top=50):
    """Group parsed dropwatch drops by reason × location × offset × protocol, largest first (at most `top`).

    The drops are fed, with their counts, to the collection's one grouper (``kfree_skb.DropAggregator``).
    """
    aggregator = DropAggregator()
    for drop in parsed["drops"]:
        aggregator.add(drop["reason"], drop["location"], drop["offset"], drop["protocol"], count=drop["count"])
    return aggregator.result(top=top)


def command(dropwatch):
    """The dropwatch argument list: read kernel symbols from /proc/kallsyms (``-l kas``)."""
    return [dropwatch, "-l", "kas"]


def run_dropwatch_capture(capture, guard, dropwatch, duration, packet_mode=True, top=50, window=None):
    """Run `dropwatch -l kas`, drive it for `duration` s, parse; fills and returns `capture`.

    `window` (a ``CaptureWindow``) is told it is live once `start` is sent (dropwatch prints its
    activation ack block-buffered into a file, so it cannot be seen in time) and when the window ends,
    right before SIGINT.
    """
    window = window or CaptureWindow(guard)
    argv = command(dropwatch)
    capture["command"] = argv
    out_path = guard.path("dropwatch.out")
    with open(out_path, "wb") as out:
        proc = guard.start(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.PIPE,
                           env_update={"TERM": "dumb"})
        commands = (b"set alertmode packet\n" if packet_mode else b"") + b"start\n"
        try:
            proc.stdin.write(commands)
            proc.stdin.flush()
        except (IOError, OSError):
            pass  # it exited already (no NET_DM): its output says why
        capture["started_wall"] = time.time()
        started = window.live()
        end = started + duration
        while time.monotonic() < end and proc.poll() is None:
            time.sleep(0.05)
        running = proc.poll() is None
        capture["duration_s"] = round((window.stopping() if running else time.monotonic()) - started, 3)
        if running:
            # While receiving, dropwatch does not read stdin: SIGINT deactivates, then `exit` ends it.
            try:
                os.kill(proc.pid, signal.SIGINT)
            except OSError:
                pass
            time.sleep(0.2)
            try:
                proc.stdin.write(b"exit\n")
                proc.stdin.flush()
            except (IOError, OSError):
                pass
        try:
            proc.stdin.close()
        except (IOError, OSError):
            pass
        rc, stopped = guard.wait(proc, timeout=5, stop_signal=signal.SIGTERM, stop_grace=2)
    with open(out_path, "r", encoding="utf-8", errors="replace") as handle:
        text = handle.read()
    parsed = parse_dropwatch_output(text)
    if parsed["no_net_dm"]:
        capture["status"] = "unavailable"
        capture["reason"] = NO_NET_DM_REASON
        capture["duration_s"] = 0.0
        return capture
    if rc not in (0, None) and not parsed["drops"]:
        capture["status"] = "failed"
        capture["reason"] = "dropwatch exited %s: %s" % (rc, text.strip()[-400:] or "no message")
        return capture
    capture.update(aggregate_dropwatch(parsed, top=top))
    capture["truncated"] = bool(stopped) or parsed["alert_limit_reached"]
    return capture
