# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# The docstring samples are verbatim bpftrace output lines, some longer than 120 characters.
# ruff: noqa: E501
"""The `bpftrace` capture backend: drops counted in a kernel map, printed once at the end.

The map is keyed by network namespace inode, drop reason, location (address), protocol (ethertype),
L4 protocol and destination port, so the cost does not grow with events written to user space. Above
the rate guard's limit a lean program (no packet-header parsing; keyed by netns, reason, location and
protocol) runs instead. Program texts are constants; only validated integers (netns inode, port) are
substituted into them.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import select
import signal
import subprocess
import time

from ansible_collections.dropscope.drops.plugins.module_utils.capture_window import CaptureWindow
from ansible_collections.dropscope.drops.plugins.module_utils.kallsyms import Locator
from ansible_collections.dropscope.drops.plugins.module_utils.kfree_skb import DropAggregator

# {netns} and {port} are replaced by integers (0 = no filter); nothing else is ever substituted.
# netns (checked on kernel 6.18): skb->dev is right for receive drops before socket lookup, skb->sk for
# OUTPUT-chain drops (dev is NULL), args->rx_sk for TCP after socket lookup (only it is set then); the
# current task's netns would be the sender's, wrong for receive drops. Ports are read from the IP header at
# skb->head + skb->network_header (IPv4: header length from byte 0, protocol at byte 9; IPv6: next
# header at byte 6, no extension headers followed).
# Common to both programs: readiness and end markers, the packet's netns, and the exact netns filter.
_PROLOGUE = r"""
BEGIN { printf("READY\n"); }
END { printf("END\n"); }
tracepoint:skb:kfree_skb
{
  $skb = (struct sk_buff *)args->skbaddr;
  $ns = (uint64)0;
  if ($skb->dev != 0) {
    $ns = $skb->dev->nd_net.net->ns.inum;
  } else if ($skb->sk != 0) {
    $ns = $skb->sk->__sk_common.skc_net.net->ns.inum;
  } else if (args->rx_sk != 0) {
    $ns = ((struct sock *)args->rx_sk)->__sk_common.skc_net.net->ns.inum;
  }
  if (NETNS_FILTER == 0 || $ns == NETNS_FILTER) {
"""

PROGRAM = _PROLOGUE + r"""    $l4 = (uint64)0;
    $port = (uint64)0;
    if (args->protocol == 2048) {
      $nh = $skb->head + $skb->network_header;
      $b0 = *(uint8 *)$nh;
      $l4 = *(uint8 *)($nh + 9);
      if ($l4 == 6 || $l4 == 17) {
        $p = *(uint16 *)($nh + ($b0 & 15) * 4 + 2);
        $port = (($p & 255) << 8) | ($p >> 8);
      }
    } else if (args->protocol == 34525) {
      $nh = $skb->head + $skb->network_header;
      $l4 = *(uint8 *)($nh + 6);
      if ($l4 == 6 || $l4 == 17) {
        $p = *(uint16 *)($nh + 42);
        $port = (($p & 255) << 8) | ($p >> 8);
      }
    }
    if (PORT_FILTER == 0 || $port == PORT_FILTER) {
      @drops[$ns, args->reason, args->location, args->protocol, $l4, $port] = count();
    }
  }
}
"""

# The rate guard's cheaper program (measured at ~200k drops/s on kernel 6.18: a map without port parsing
# kept 0.92-1.01 of throughput, with it 0.80-0.95): no packet-header reads, keyed by netns inode, reason, location and
# protocol only. The netns filter stays an exact predicate; only {netns} is substituted (an integer).
LEAN_PROGRAM = _PROLOGUE + r"""    @drops[$ns, args->reason, args->location, args->protocol] = count();
  }
}
"""

L4_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp"}
# Map size: bpftrace silently drops new keys beyond it (4096 by default).
MAP_KEYS_MAX = 65536
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


# Defence in depth: bpftrace stops itself at the capture's hard deadline even if the module and its
# guardian were both killed (exit() runs END and prints the map like SIGINT does).
SELF_DEADLINE = """
interval:s:DEADLINE_S { exit(); }
"""


def program_text(netns=0, port=0, lean=False, deadline_s=0):
    """The bpftrace program with its integer filters (0 = none); refuses anything but integers.

    `lean` gives LEAN_PROGRAM (the rate guard's choice): no header parsing, so no port filter.
    `deadline_s` (> 0) adds a probe that makes bpftrace exit by itself after that many seconds.
    """
    for name, value, high in (("netns", netns, 2 ** 32 - 1), ("port", port, 65535),
                              ("deadline_s", deadline_s, 86400)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
            raise ValueError("%s filter must be an integer 0..%d, got %r" % (name, high, value))
    if lean:
        if port:
            raise ValueError("the lean program reads no packet headers: it cannot filter port %d" % port)
        text = LEAN_PROGRAM.replace("NETNS_FILTER", "%d" % netns)
    else:
        text = PROGRAM.replace("NETNS_FILTER", "%d" % netns).replace("PORT_FILTER", "%d" % port)
    if deadline_s:
        text += SELF_DEADLINE.replace("DEADLINE_S", "%d" % deadline_s)
    return text


def l4_name(number):
    """Name of an IP protocol number: 17 -> "udp"; 0 (not IP, or not read) -> None."""
    if not number:
        return None
    return L4_NAMES.get(number, str(number))


def parse_bpftrace_json(lines, map_name="@drops"):
    """Parse ``bpftrace -f json`` output lines; returns ``{"ready": bool, "entries": [...], "other": [...]}``.

    Samples (bpftrace 0.17 on kernel 6.18, ``tests/data/bpftrace_json.txt``)::

        {"type": "attached_probes", "data": {"probes": 3}}
        {"type": "printf", "data": "READY\\n"}
        {"type": "printf", "data": "END\\n"}
        {"type": "map", "data": {"@drops": {"4026532177,3,0xffffffff82046f4c,2048,17,9000": 300}}}

    give ``ready`` and ``ended`` True and entries ``{"netns": 4026532177, "reason_id": 3, "address":
    0xffffffff82046f4c, "protocol": 2048, "l4": 17, "port": 9000, "count": 300}``. Keys of the lean
    program (4 fields) get ``l4`` and ``port`` 0. Lines that are not JSON (bpftrace's warnings) go to
    ``other``.
    """
    result = {"ready": False, "ended": False, "entries": [], "other": [], "probes": None}
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            message = json.loads(line)
        except ValueError:
            result["other"].append(line)
            continue
        if not isinstance(message, dict):
            continue
        kind, data = message.get("type"), message.get("data")
        if kind == "printf" and isinstance(data, str) and data.strip() == "READY":
            result["ready"] = True
        elif kind == "printf" and isinstance(data, str) and data.strip() == "END":
            result["ended"] = True
        elif kind == "attached_probes" and isinstance(data, dict):
            result["probes"] = data.get("probes")
        elif kind == "map" and isinstance(data, dict) and isinstance(data.get(map_name), dict):
            for key, count in data[map_name].items():
                parts = key.split(",")
                if len(parts) == 4:  # LEAN_PROGRAM: no L4 protocol or port
                    parts += ["0", "0"]
                if len(parts) != 6:
                    raise ValueError("unexpected key %r in bpftrace map %s" % (key, map_name))
                netns, reason, address, protocol, l4, port = (int(part, 0) for part in parts)
                result["entries"].append({"netns": netns, "reason_id": reason, "address": address,
                                          "protocol": protocol, "l4": l4, "port": port, "count": int(count)})
        elif kind == "error" or kind == "warning":
            result["other"].append(str(data))
    return result


def group_drops(entries, reasons, locator, top=50, with_netns=False):
    """Turn map entries into the capture's ``events``, ``drops`` (largest first, at most `top`) and ``other``.

    Entries are named (reason, protocol, L4 protocol, port) and fed, with their counts and raw
    addresses, to the collection's one grouper (``kfree_skb.DropAggregator``), whose `locator`
    (``kallsyms.Locator``) names each address ``function`` + ``0xOFFSET``.
    """
    aggregator = DropAggregator(extra_fields=("l4", "port", "netns") if with_netns else ("l4", "port"))
    for entry in entries:
        reason = reasons.get(entry["reason_id"]) or "REASON_%d" % entry["reason_id"]
        l4 = l4_name(entry["l4"])
        port = (entry["port"] or None) if l4 in ("tcp", "udp") else None
        extra = (l4, port, entry["netns"]) if with_netns else (l4, port)
        aggregator.add(reason, "0x%x" % entry["address"], None, entry["protocol"], count=entry["count"], extra=extra)
    return aggregator.result(top=top, locator=locator)


def command(bpftrace, program="drops.bt"):
    """The bpftrace argument list (JSON output, the program file)."""
    return [bpftrace, "-f", "json", program]


def _read_lines(fd, buffer, until, want_ready=False):
    """Read from fd until EOF, `until` (monotonic), or (want_ready) a READY line. Returns (lines, eof, buffer)."""
    lines = []
    while True:
        remaining = until - time.monotonic()
        if remaining <= 0:
            return lines, False, buffer
        readable = select.select([fd], [], [], min(remaining, 0.2))[0]
        if not readable:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            if buffer:
                lines.append(buffer.decode("utf-8", "replace"))
            return lines, True, b""
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            text = line.decode("utf-8", "replace")
            lines.append(text)
            if want_ready and '"READY' in text:
                return lines, False, buffer


def run_bpftrace_capture(capture, guard, bpftrace, duration, netns=0, port=0, reasons=None, top=50,
                         kallsyms_text=None, lean=False, window=None):
    """Attach, wait for READY, count for `duration` s, SIGINT so END prints the map; fills `capture`.

    `lean` runs LEAN_PROGRAM (no packet-header parsing; the rate guard's choice). `window` (a
    ``CaptureWindow``) is told when READY came (live) and when the window ends, right before SIGINT.
    """
    window = window or CaptureWindow(guard)
    program = guard.path("drops.bt")
    with open(program, "w") as handle:
        # Its own deadline: the guard's, so it never outlives the capture even with nobody left to stop it.
        handle.write(program_text(netns, port, lean=lean, deadline_s=max(1, int(guard.remaining()))))
    capture["command"] = command(bpftrace)
    err_path = guard.path("bpftrace.err")
    lines = []
    with open(err_path, "wb") as err:
        proc = guard.start(command(bpftrace, program), stdout=subprocess.PIPE, stderr=err,
                           env_update={"BPFTRACE_MAP_KEYS_MAX": str(MAP_KEYS_MAX)})
        fd = proc.stdout.fileno()
        buffer = b""
        attach_started = time.monotonic()
        got, eof, buffer = _read_lines(fd, buffer, min(attach_started + READY_TIMEOUT_S,
                                                       guard.deadline - duration - 2), want_ready=True)
        lines.extend(got)
        parsed = parse_bpftrace_json(lines)
        if not parsed["ready"]:
            rc, _stopped = guard.wait(proc, timeout=0.1, stop_signal=signal.SIGKILL)
            proc.stdout.close()
            message = _tail(err_path)
            capture["status"] = "failed"
            capture["reason"] = "bpftrace did not attach%s: %s" % (
                "" if eof else " within %d s" % READY_TIMEOUT_S, message or "exit %s" % rc)
            return capture
        capture["attach_s"] = round(time.monotonic() - attach_started, 3)
        capture["started_wall"] = time.time()
        started = window.live()
        got, eof, buffer = _read_lines(fd, buffer, started + duration)
        lines.extend(got)
        # EOF before the end: bpftrace died mid-way (no AFTER counters; the capture fails below).
        capture["duration_s"] = round((time.monotonic() if eof else window.stopping()) - started, 3)
        if not eof:
            try:
                os.killpg(proc.pid, signal.SIGINT)
            except OSError:
                pass
            got, eof, buffer = _read_lines(fd, buffer, time.monotonic() + min(STOP_TIMEOUT_S,
                                                                              max(guard.remaining() - 1, 1)))
            lines.extend(got)
        proc.stdout.close()
        rc, stopped = guard.wait(proc, timeout=2, stop_signal=signal.SIGKILL)
    parsed = parse_bpftrace_json(lines)
    # END runs before bpftrace prints its maps (an empty map is not printed at all).
    if not parsed["ended"]:
        capture["status"] = "failed"
        capture["reason"] = "bpftrace did not finish (exit %s): %s" % (rc, _tail(err_path) or "no message")
        capture["truncated"] = True
        return capture
    locator = Locator(None if kallsyms_text is None else (lambda: kallsyms_text))
    capture.update(group_drops(parsed["entries"], reasons or {}, locator, top=top, with_netns=not netns))
    # A full map silently drops new keys: the counts are then a lower bound.
    capture["truncated"] = bool(stopped) or len(parsed["entries"]) >= MAP_KEYS_MAX
    return capture


def _read_file(path):
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except (IOError, OSError):
        return ""


def _tail(path, limit=600):
    text = _read_file(path)
    # bpftrace warns about RLIMIT_MEMLOCK on every start; it is harmless.
    kept = [line for line in text.splitlines() if "RLIMIT_MEMLOCK" not in line]
    return "\n".join(kept)[-limit:].strip()
