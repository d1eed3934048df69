# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""drop_capture's logic: pick a backend (the capabilities ladder), plan the rate guard, run, say why.

Every backend runs under a CaptureGuard (its own deadline; children, temporary files and the ftrace
instance cleaned up on every exit path).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math
import os
import time

from ansible_collections.dropscope.drops.plugins.module_utils.bpftrace_capture import run_bpftrace_capture
from ansible_collections.dropscope.drops.plugins.module_utils.capabilities import BACKEND_ORDER
from ansible_collections.dropscope.drops.plugins.module_utils.capture_guard import CaptureGuard
from ansible_collections.dropscope.drops.plugins.module_utils.dropwatch_capture import run_dropwatch_capture
from ansible_collections.dropscope.drops.plugins.module_utils.perf_capture import (
    record_command,
    run_perf_capture,
)
from ansible_collections.dropscope.drops.plugins.module_utils.tracefs_capture import (
    ensure_tracefs,
    find_tracefs,
    mounted_tracefs,
    probe_rate,
    reason_filter,
    run_tracefs_capture,
)

BACKENDS = ("auto",) + BACKEND_ORDER
DEFAULT_MAX_EVENT_RATE = 50000
PROBE_S = 0.25


LEAN_ACTION = ("bpftrace: lean program (map keyed by netns, reason, location, protocol; no packet-header"
               " parsing, so no l4/port columns)")
FULL_KEPT_ACTION = "bpftrace: full program kept (the port filter needs the packet headers)"


def guard_plan(duration, stacks, max_event_rate, rate, backend=None, port=0):
    """What the rate guard does for a capture of `duration` s with `backend` at `rate` kfree_skb events/s.

    Every backend pays a fixed cost per event while attached (here ~0.5 µs on the CPU that drops the
    packet, LAB.md/README "Performance"). Above `max_event_rate` the guard turns stacks off, makes
    bpftrace run its lean program (no packet-header parsing: the per-packet work that costs most;
    kept full when a `port` filter needs the headers) and captures a window of
    ``duration * max_event_rate / rate`` seconds (at least 1) instead of the whole duration, so the
    cost stays about that of `max_event_rate` events/s. `max_event_rate` 0 turns the guard off.
    ``bpftrace_program`` is "full" or "lean" (None for other backends).

    >>> guard_plan(10, True, 50000, 200000)["window_s"]
    3
    >>> guard_plan(10, False, 50000, 200000, backend="bpftrace")["bpftrace_program"]
    'lean'
    """
    plan = {"max_event_rate": max_event_rate, "measured_rate": None if rate is None else int(round(rate)),
            "active": False, "actions": [], "window_s": duration, "stacks": stacks,
            "bpftrace_program": "full" if backend == "bpftrace" else None}
    if not max_event_rate or rate is None or rate <= max_event_rate:
        return plan
    plan["active"] = True
    if stacks:
        plan["stacks"] = False
        plan["actions"].append("stacks off")
    if backend == "bpftrace":
        if port:
            plan["actions"].append(FULL_KEPT_ACTION)
        else:
            plan["bpftrace_program"] = "lean"
            plan["actions"].append(LEAN_ACTION)
    window = max(1, int(math.ceil(duration * float(max_event_rate) / rate)))
    if window < duration:
        plan["window_s"] = window
        plan["actions"].append("captured %d s of %d s (sampling in time): counts cover the window only"
                               % (window, duration))
    return plan


def new_capture(backend, duration, stacks, boot_id, netns_inode, reason_names):
    return {
        "schema_version": 1, "backend": backend, "status": "ok", "reason": None, "scope": "kernel",
        "boot_id": boot_id, "netns_inode": netns_inode, "requested_duration_s": duration, "duration_s": 0.0,
        "started_wall": None, "stacks_requested": stacks, "command": [], "events": 0, "lost_events": 0,
        "truncated": False, "drops": [], "other": {"count": 0, "groups": 0}, "stacks": [],
        "reason_names": reason_names,
    }


def candidates(backend, ladder):
    """(backends to try in order, [why each skipped one was skipped]) for `backend` (auto or a name)."""
    if backend != "auto":
        return [backend], []
    order, skipped = [], []
    for rung in ladder:
        if rung["available"]:
            order.append(rung["backend"])
        else:
            skipped.append({"backend": rung["backend"], "status": "unavailable", "reason": rung["reason"]})
    return order, skipped


def rung_reason(ladder, backend):
    for rung in ladder:
        if rung["backend"] == backend and not rung["available"]:
            return rung["reason"]
    return None


class Host:
    """What the capture needs from the module: commands, binaries and files (tests replace it)."""

    def __init__(self, run_command, find_bin):
        self.run = run_command
        self.find_bin = find_bin

    def read(self, path):
        with open(path, "r", encoding="utf-8", errors="replace") as handle:
            return handle.read()


def check_mode_command(backend, host, params):
    """The command a capture would run (check mode)."""
    if backend == "perf":
        return record_command(host.find_bin("perf") or "perf", host.find_bin("sleep") or "sleep", "perf.data",
                              params["duration"], params["stacks"], params["max_size_mb"])
    if backend == "bpftrace":
        return [host.find_bin("bpftrace") or "bpftrace", "-f", "json", "drops.bt"]
    if backend == "dropwatch":
        return [host.find_bin("dropwatch") or "dropwatch", "-l", "kas"]
    return ["tracefs", "instances/dropscope-<random>", "events/skb/kfree_skb"]


def _run_one(backend, capture, guard, host, params, plan, reasons, tracefs_root):
    duration = plan["window_s"]
    if backend == "perf":
        perf, sleep = host.find_bin("perf"), host.find_bin("sleep")
        # perf has its own guard (its temporary directory); its deadline stays inside ours.
        run_perf_capture(capture, perf, sleep, duration, stacks=plan["stacks"], top=params["top"],
                         max_size_mb=params["max_size_mb"], deadline_s=max(guard.remaining() - 1, duration + 5),
                         reasons=reasons, tmp_root=params["tmpdir"])
    elif backend == "bpftrace":
        netns = capture["netns_inode"] if params["netns"] == "self" else 0
        if params["netns"] == "self" and not netns:
            capture["status"] = "failed"
            capture["reason"] = "netns=self but the module's network namespace inode is unknown"
            return capture
        run_bpftrace_capture(capture, guard, host.find_bin("bpftrace"), duration, netns=netns or 0,
                             port=params["port"] or 0, reasons=reasons, top=params["top"],
                             lean=plan["bpftrace_program"] == "lean")
        if params["netns"] == "self":
            capture["scope"] = "netns"
    elif backend == "tracefs":
        if tracefs_root is None:
            capture["status"] = "unavailable"
            capture["reason"] = "tracefs is not mounted and could not be mounted"
            return capture
        names = dict((name, number) for number, name in reasons.items())
        exclude = [names[name] for name in params["exclude_reasons"] if name in names]
        run_tracefs_capture(capture, guard, tracefs_root, duration, reasons=reasons, top=params["top"],
                            event_filter=reason_filter(exclude))
    elif backend == "dropwatch":
        run_dropwatch_capture(capture, guard, host.find_bin("dropwatch"), duration, top=params["top"])
    return capture


def _post_filter(capture, params):
    """Filters a backend could not apply in the kernel, applied to the groups (and said so)."""
    if params["exclude_reasons"] and capture["backend"] != "tracefs":
        kept = [d for d in capture["drops"] if d["reason"] not in params["exclude_reasons"]]
        capture["events"] -= sum(d["count"] for d in capture["drops"]) - sum(d["count"] for d in kept)
        capture["drops"] = kept


def run_capture(host, params, system, reasons, caps, tracefs_root):
    """Run the capture asked for by `params`; returns the capture dict (docs/run-format.md)."""
    ladder = caps["ladder"]
    order, tried = candidates(params["backend"], ladder)
    first = order[0] if order else (params["backend"] if params["backend"] != "auto" else "none")
    capture = new_capture(first, params["duration"], params["stacks"], system["boot_id"], system["netns_inode"],
                          len(reasons))
    capture["auto"] = {"requested": params["backend"], "chosen": None, "tried": list(tried)}
    if params["port"] and params["backend"] not in ("auto", "bpftrace"):
        capture["status"] = "failed"
        capture["reason"] = "port filter needs the bpftrace backend (only it reads packet headers)"
        return capture
    if not order:
        capture["status"] = "unavailable"
        capture["reason"] = "no capture backend works on this host: " + "; ".join(
            "%s: %s" % (t["backend"], t["reason"]) for t in tried)
        return capture
    if params["backend"] != "auto":
        reason = rung_reason(ladder, params["backend"])
        if reason:
            capture["status"] = "unavailable"
            capture["reason"] = reason
            capture["auto"]["tried"] = [{"backend": params["backend"], "status": "unavailable", "reason": reason}]
            return capture
    if params["port"]:
        order = [b for b in order if b == "bpftrace"] or order[:0]
        if not order:
            capture["status"] = "unavailable"
            capture["reason"] = "port filter needs the bpftrace backend, which is not available here"
            return capture

    deadline = params["timeout"] or params["duration"] + 60
    with CaptureGuard(deadline_s=deadline, tmp_root=params["tmpdir"]) as guard:
        rate = None
        if params["max_event_rate"] and tracefs_root:
            try:
                rate, _name = probe_rate(guard, tracefs_root, PROBE_S)
            except (IOError, OSError):
                rate = None
        plan = None
        for backend in order:
            plan = guard_plan(params["duration"], params["stacks"], params["max_event_rate"], rate,
                              backend=backend, port=params["port"])
            attempt = new_capture(backend, params["duration"], params["stacks"], system["boot_id"],
                                  system["netns_inode"], len(reasons))
            started = time.monotonic()
            try:
                _run_one(backend, attempt, guard, host, params, plan, reasons, tracefs_root)
            except (IOError, OSError, ValueError) as exc:
                attempt["status"] = "failed"
                attempt["reason"] = "%s capture failed: %s" % (backend, exc)
            attempt["auto"] = capture["auto"]
            capture = attempt
            capture["auto"]["tried"].append({"backend": backend, "status": capture["status"],
                                             "reason": capture["reason"],
                                             "seconds": round(time.monotonic() - started, 3)})
            if capture["status"] == "ok" or params["backend"] != "auto":
                break
            if guard.remaining() < params["duration"] + 5:
                break
    capture["auto"]["chosen"] = capture["backend"] if capture["status"] == "ok" else None
    capture["auto"]["why"] = _why(params, capture)
    capture["guard"] = plan
    if plan["active"]:
        capture["truncated"] = capture["truncated"] or plan["window_s"] < params["duration"]
    _post_filter(capture, params)
    if capture["backend"] == "bpftrace" and params["port"]:
        capture["port_filter"] = params["port"]
    return capture


def _why(params, capture):
    if params["backend"] != "auto":
        return "backend %s was asked for" % params["backend"]
    parts = ["%s %s: %s" % (t["backend"], t["status"], t["reason"])
             for t in capture["auto"]["tried"] if t["status"] != "ok"]
    if capture["status"] == "ok":
        parts.insert(0, "%s is the cheapest rung that works here" % capture["backend"])
    return "; ".join(parts) or None


def check_params(params):
    """A message for the first invalid parameter, or None."""
    if not 1 <= params["duration"] <= 3600:
        return "duration must be between 1 and 3600 seconds, got %d" % params["duration"]
    if not 1 <= params["top"] <= 10000:
        return "top must be between 1 and 10000, got %d" % params["top"]
    if not 1 <= params["max_size_mb"] <= 65536:
        return "max_size_mb must be between 1 and 65536, got %d" % params["max_size_mb"]
    if params["timeout"] and params["timeout"] <= params["duration"]:
        return "timeout (%d s) must be longer than duration (%d s)" % (params["timeout"], params["duration"])
    if params["tmpdir"] is not None and not os.path.isdir(params["tmpdir"]):
        return "tmpdir %s is not a directory" % params["tmpdir"]
    if not 0 <= params["port"] <= 65535:
        return "port must be between 0 (no filter) and 65535, got %d" % params["port"]
    if params["max_event_rate"] < 0:
        return "max_event_rate must be 0 (guard off) or a positive number of events per second, got %d" % (
            params["max_event_rate"])
    for name in params["exclude_reasons"]:
        if not name or not all(c.isupper() or c.isdigit() or c == "_" for c in name):
            return "exclude_reasons: %r is not a drop reason name (upper case, digits and _)" % name
    return None


class TracefsMount:
    """Mount tracefs for the duration of a `with` block when it is not mounted (as perf does), then unmount."""

    def __init__(self, host, allowed=True):
        self.host = host
        self.allowed = allowed
        self.root = None
        self.mounted_here = False

    def __enter__(self):
        try:
            mounts = self.host.read("/proc/mounts")
        except (IOError, OSError):
            mounts = ""
        if self.allowed and os.geteuid() == 0:
            root, self.mounted_here = ensure_tracefs(self.host.run, self.host.find_bin("mount"), mounts)
        else:
            root = mounted_tracefs(mounts)
        self.root = find_tracefs() if root else None
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.mounted_here:
            umount = self.host.find_bin("umount")
            if umount:
                self.host.run([umount, "/sys/kernel/tracing"])
        return False
