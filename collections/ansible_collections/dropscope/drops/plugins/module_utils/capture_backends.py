# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""drop_capture's logic: one interface over the capture backends, one plan, then run or describe it.

- ``BACKENDS``: one object per backend (bpftrace, perf, tracefs, dropwatch), all with the same
  methods: ``refusal`` (why it cannot run with these options on this host, beyond its rung of the
  capabilities ladder), ``scope``, ``command`` (what it would run: check mode) and ``run`` (the real
  capture, under the capture's one CaptureGuard). A new backend is a module that drives its tracer
  and feeds ``kfree_skb.DropAggregator``, a class here and a rung in ``capabilities.BACKEND_ORDER``.
- ``plan_capture``: the one place that decides which backends a capture tries, in which order, and
  every refusal (the asked backend unavailable here, a port filter without bpftrace, netns=self with an
  unknown namespace, tracefs not mountable, perf missing).
- ``describe_capture`` (check mode) and ``run_capture`` (a real run) both follow that plan, so check
  mode says exactly what a real run does, refusals included.

Every real run is under one CaptureGuard (its own deadline; children, temporary files and the
ftrace instance cleaned up on every exit path) and reads the counters itself, in the capture's window:
each backend calls its ``CaptureWindow``'s ``live()`` when its tracer is live and ``stopping()`` right
before it stops it (capture_window.py), so one module run gives the counters before, the capture and
the counters after, over the same interval.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math
import os
import time

from ansible_collections.dropscope.drops.plugins.module_utils import bpftrace_capture, tracefs_capture
from ansible_collections.dropscope.drops.plugins.module_utils.capabilities import BACKEND_ORDER
from ansible_collections.dropscope.drops.plugins.module_utils.capture_guard import CaptureGuard
from ansible_collections.dropscope.drops.plugins.module_utils.capture_window import CaptureWindow
from ansible_collections.dropscope.drops.plugins.module_utils.host_knobs import sysctl_name_problem
from ansible_collections.dropscope.drops.plugins.module_utils.run_record import SCHEMA_VERSION

BACKEND_CHOICES = ("auto",) + BACKEND_ORDER
DEFAULT_MAX_EVENT_RATE = 50000
PROBE_S = 0.25

PERF_MISSING = ("perf not found: install linux-perf (Debian/Ubuntu) or perf (RHEL/Fedora), or run the playbook"
                " with -e install_perf=true")
PORT_NEEDS_BPFTRACE = "port filter needs the bpftrace backend (only it reads packet headers)"
NETNS_UNKNOWN = "netns=self but the module's network namespace inode is unknown"
TRACEFS_UNMOUNTABLE = "tracefs is not mounted and could not be mounted"


LEAN_ACTION = ("bpftrace: lean program (map keyed by netns, reason, location, protocol; no packet-header"
               " parsing, so no l4/port columns)")
FULL_KEPT_ACTION = "bpftrace: full program kept (the port filter needs the packet headers)"
# How far bpftrace samples at most: beyond 64 x max_event_rate the window shortens instead.
SAMPLE_ONE_IN_MAX = 64
SAMPLED_ACTION = ("bpftrace: counted 1 in %d drops, chosen at random in the kernel: counts are estimates"
                  " (a count C is within 2*sqrt(C*%d) of the true count 19 times in 20)")


def guard_plan(duration, stacks, max_event_rate, rate, backend=None, port=0):
    """What the rate guard does for a capture of `duration` s with `backend` at `rate` kfree_skb events/s.

    Every backend pays a fixed cost per event while attached (measured on kernel 6.18: ~0.3-0.5 µs on
    the CPU that drops the packet, see README "Performance"). Above `max_event_rate` the guard keeps the
    events it processes in full at about `max_event_rate` per second: it turns stacks off; bpftrace runs
    its lean program (no packet-header parsing: the per-packet work that costs most; kept full when a
    `port` filter needs the headers) on 1 in ``sample_one_in`` events chosen at random in the kernel (a
    power of two, at most SAMPLE_ONE_IN_MAX: the others cost a random number and a compare, ~0.1 of the
    full cost), so its counts are estimates; what sampling cannot cover, and every other backend, captures a
    window of ``duration * max_event_rate * sample_one_in / rate`` seconds (at least 1) instead of the whole
    duration. `max_event_rate` 0 turns the guard off. ``bpftrace_program`` is "full" or "lean" (None for
    other backends).

    >>> guard_plan(10, True, 50000, 200000)["window_s"]
    3
    >>> plan = guard_plan(10, False, 50000, 200000, backend="bpftrace")
    >>> plan["bpftrace_program"], plan["sample_one_in"], plan["window_s"]
    ('lean', 4, 10)
    """
    plan = {"max_event_rate": max_event_rate, "measured_rate": None if rate is None else int(round(rate)),
            "active": False, "actions": [], "window_s": duration, "stacks": stacks,
            "bpftrace_program": "full" if backend == "bpftrace" else None, "sample_one_in": 1}
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
        plan["sample_one_in"] = sample_one_in(rate, max_event_rate)
        plan["actions"].append(SAMPLED_ACTION % (plan["sample_one_in"], plan["sample_one_in"] - 1))
    window = max(1, int(math.ceil(duration * float(max_event_rate) * plan["sample_one_in"] / rate)))
    if window < duration:
        plan["window_s"] = window
        plan["actions"].append("captured %d s of %d s (sampling in time): counts cover the window only"
                               % (window, duration))
    return plan


def sample_one_in(rate, max_event_rate):
    """The smallest power of two N (at most SAMPLE_ONE_IN_MAX) with `rate` / N <= `max_event_rate`.

    >>> sample_one_in(269000, 50000), sample_one_in(60000, 50000), sample_one_in(10 ** 9, 50000)
    (8, 2, 64)
    """
    one_in = 2
    while one_in < SAMPLE_ONE_IN_MAX and rate > max_event_rate * one_in:
        one_in *= 2
    return one_in


def deadline_s(params):
    """The capture's hard deadline on the host, in seconds: `timeout`, or `duration` + 60."""
    return params["timeout"] or params["duration"] + 60


def new_capture(backend, duration, stacks, boot_id, netns_inode, reason_names):
    return {
        "schema_version": SCHEMA_VERSION, "backend": backend, "status": "ok", "reason": None, "scope": "kernel",
        "boot_id": boot_id, "netns_inode": netns_inode, "requested_duration_s": duration, "duration_s": 0.0,
        "started_wall": None, "stacks_requested": stacks, "command": [], "events": 0, "lost_events": 0,
        "truncated": False, "drops": [], "other": {"count": 0, "groups": 0}, "stacks": [],
        "reason_names": reason_names,
    }


# ------------------------------------------------------------------------------------------ backends

class Backend:
    """One capture backend. Subclasses set ``name`` and the flags, and implement ``command`` and ``run``."""

    name = None
    # Reads packet headers, so it can filter by destination port.
    reads_headers = False
    # Applies exclude_reasons in the kernel (the others leave those groups out of the result afterwards).
    excludes_in_kernel = False

    def refusal(self, plan, rung):
        """``(status, reason)`` when this backend cannot capture as `plan` asks on this host, else None.

        `rung` is this backend's rung of the capabilities ladder. The order of the checks is the order
        of the reasons a user reads: an option it cannot honour, then the ladder, then the rest.
        """
        if plan.params["dport"] and not self.reads_headers:
            return "failed", PORT_NEEDS_BPFTRACE
        if rung is None or not rung["available"]:
            return "unavailable", self.missing(plan.caps, rung)
        return self.precondition(plan)

    def missing(self, caps, rung):
        """Why the rung is unavailable, as the capture says it."""
        return rung["reason"] if rung else "%s is not in the capabilities ladder" % self.name

    def precondition(self, plan):
        """A refusal beyond the ladder (``(status, reason)``), or None."""
        return None

    def scope(self, params):
        """``kernel`` (every network namespace of the kernel) or ``netns`` (only the module's own)."""
        return "kernel"

    def command(self, reader, plan, duration):
        """The command it runs, as the capture reports it (check mode shows this)."""
        raise NotImplementedError

    def run(self, capture, guard, reader, plan, rate_guard, window=None):
        """Capture for ``rate_guard["window_s"]`` seconds under `guard`; fills `capture`.

        `window` (a ``CaptureWindow``) is told when the tracer is live and right before it is stopped.
        """
        raise NotImplementedError


def _binary(reader, name):
    return reader.find_bin(name) or name


# perf and dropwatch are imported when a capture plans or runs them: a module run compiles every module it
# imports from the zip Ansible sends (no cached bytecode), and most runs use bpftrace only.
def _perf_capture():
    from ansible_collections.dropscope.drops.plugins.module_utils import perf_capture
    return perf_capture


def _dropwatch_capture():
    from ansible_collections.dropscope.drops.plugins.module_utils import dropwatch_capture
    return dropwatch_capture


class BpftraceBackend(Backend):
    name = "bpftrace"
    reads_headers = True

    def precondition(self, plan):
        if plan.params["netns"] == "self" and not plan.system["netns_inode"]:
            return "failed", NETNS_UNKNOWN
        return None

    def scope(self, params):
        return "netns" if params["netns"] == "self" else "kernel"

    def command(self, reader, plan, duration):
        return bpftrace_capture.command(_binary(reader, "bpftrace"))

    def run(self, capture, guard, reader, plan, rate_guard, window=None):
        params = plan.params
        bpftrace_capture.run_bpftrace_capture(
            capture, guard, _binary(reader, "bpftrace"), rate_guard["window_s"],
            netns=plan.system["netns_inode"] if params["netns"] == "self" else 0, port=params["dport"],
            reasons=plan.reasons, top=params["top"], lean=rate_guard["bpftrace_program"] == "lean", window=window,
            sample_one_in=rate_guard["sample_one_in"],
            peers=params.get("peers") or "exact",
            fields=(((plan.caps or {}).get("kfree_skb") or {}).get("fields") or None))


class PerfBackend(Backend):
    name = "perf"

    def missing(self, caps, rung):
        if caps["tools"]["perf"]["path"] is None:
            return PERF_MISSING
        return Backend.missing(self, caps, rung)

    def command(self, reader, plan, duration):
        control = _perf_control(plan)
        return _perf_capture().record_command(_binary(reader, "perf"), _binary(reader, "sleep"), "perf.data",
                                              deadline_s(plan.params) if control else duration, plan.params["stacks"],
                                              plan.params["max_size_mb"], control=control)

    def run(self, capture, guard, reader, plan, rate_guard, window=None):
        params = plan.params
        _perf_capture().run_perf_capture(capture, guard, _binary(reader, "perf"), _binary(reader, "sleep"),
                                         rate_guard["window_s"], stacks=rate_guard["stacks"], top=params["top"],
                                         max_size_mb=params["max_size_mb"], reasons=plan.reasons,
                                         deadline_s=deadline_s(params), window=window, control=_perf_control(plan))


def _perf_control(plan):
    """Whether this host's perf takes -D -1 --control (5.11 and later), from the version capabilities read."""
    return _perf_capture().has_control((((plan.caps or {}).get("tools") or {}).get("perf") or {}).get("version"))


class TracefsBackend(Backend):
    name = "tracefs"
    excludes_in_kernel = True

    def precondition(self, plan):
        if plan.tracefs_root is None:
            return "unavailable", TRACEFS_UNMOUNTABLE
        return None

    def command(self, reader, plan, duration):
        return tracefs_capture.command(tracefs_capture.INSTANCE_PREFIX + "<random>")

    def run(self, capture, guard, reader, plan, rate_guard, window=None):
        names = dict((name, number) for number, name in plan.reasons.items())
        exclude = [names[name] for name in plan.params["exclude_reasons"] if name in names]
        tracefs_capture.run_tracefs_capture(capture, guard, plan.tracefs_root, rate_guard["window_s"],
                                            reasons=plan.reasons, top=plan.params["top"],
                                            event_filter=tracefs_capture.reason_filter(exclude), window=window)


class DropwatchBackend(Backend):
    name = "dropwatch"

    def command(self, reader, plan, duration):
        return _dropwatch_capture().command(_binary(reader, "dropwatch"))

    def run(self, capture, guard, reader, plan, rate_guard, window=None):
        _dropwatch_capture().run_dropwatch_capture(capture, guard, _binary(reader, "dropwatch"),
                                                   rate_guard["window_s"], top=plan.params["top"], window=window)


# The registry: backend name -> its object.
BACKENDS = dict((backend.name, backend)
                for backend in (BpftraceBackend(), PerfBackend(), TracefsBackend(), DropwatchBackend()))


# ------------------------------------------------------------------------------------------ the plan

class CapturePlan:
    """What a capture will do on this host, decided before anything runs (see ``plan_capture``).

    ``order``: the backends a real run tries, in order (auto moves to the next when one fails).
    ``skipped``: the rungs refused before anything runs, ``{"backend", "status", "reason"}``.
    ``refusal``: ``{"backend", "status", "reason"}`` when nothing can run, else None.
    """

    def __init__(self, params, caps, system, reasons, tracefs_root):
        self.params = params
        self.caps = caps
        self.system = system
        self.reasons = reasons
        self.tracefs_root = tracefs_root
        self.order = []
        self.skipped = []
        self.refusal = None

    @property
    def backend(self):
        """The backend a real run starts with, or the one refused (``none`` when auto found none)."""
        return self.order[0] if self.order else self.refusal["backend"]


def plan_capture(params, caps, system, reasons, tracefs_root):
    """Decide which backends to try and every refusal, for check mode and a real run alike.

    `params` are drop_capture's options, `caps` what ``capabilities.collect_capabilities`` read (its
    ``ladder``), `system` ``snapshot.read_system``'s host identity, `reasons` the reason names
    (``kfree_skb.read_reason_names``) and `tracefs_root` the usable tracefs directory or None.
    """
    plan = CapturePlan(params, caps, system, reasons, tracefs_root)
    rungs = dict((rung["backend"], rung) for rung in caps["ladder"])
    requested = params["backend"]
    for name in (BACKEND_ORDER if requested == "auto" else (requested,)):
        refused = BACKENDS[name].refusal(plan, rungs.get(name))
        if refused:
            plan.skipped.append({"backend": name, "status": refused[0], "reason": refused[1]})
        else:
            plan.order.append(name)
    if plan.order:
        return plan
    if requested == "auto":
        plan.refusal = {"backend": "none", "status": "unavailable",
                        "reason": "no capture backend works on this host: " + "; ".join(
                            "%s: %s" % (skip["backend"], skip["reason"]) for skip in plan.skipped)}
    else:
        plan.refusal = dict(plan.skipped[0])
    return plan


def _attempt(plan, name):
    """A new capture dict for backend `name` as `plan` asks for it."""
    params = plan.params
    capture = new_capture(name, params["duration"], params["stacks"], plan.system["boot_id"],
                          plan.system["netns_inode"], len(plan.reasons))
    if name in BACKENDS:
        capture["scope"] = BACKENDS[name].scope(params)
    if name == "bpftrace" and params["dport"]:
        capture["port_filter"] = params["dport"]
    return capture


def _planned(plan):
    """The capture dict before anything runs: the first backend, or the refusal with its reason."""
    capture = _attempt(plan, plan.backend)
    capture["auto"] = {"requested": plan.params["backend"], "chosen": None, "tried": list(plan.skipped)}
    if plan.refusal:
        capture["status"] = plan.refusal["status"]
        capture["reason"] = plan.refusal["reason"]
    return capture


def _finish(capture, plan):
    capture["auto"]["chosen"] = capture["backend"] if capture["status"] in ("ok", "check_mode") else None
    capture["auto"]["why"] = _why(plan, capture)
    return capture


def _why(plan, capture):
    if plan.params["backend"] != "auto":
        return "backend %s was asked for" % plan.params["backend"]
    parts = ["%s %s: %s" % (t["backend"], t["status"], t["reason"])
             for t in capture["auto"]["tried"] if t["status"] != "ok"]
    if capture["status"] in ("ok", "check_mode"):
        parts.insert(0, "%s is the cheapest rung that works here" % capture["backend"])
    return "; ".join(parts) or None


def describe_capture(reader, plan):
    """Check mode: the capture a real run would start (status ``check_mode`` and its command), or the
    refusal a real run would return (status ``unavailable`` or ``failed`` with the same reason)."""
    capture = _planned(plan)
    if not plan.refusal:
        capture["status"] = "check_mode"
        capture["command"] = BACKENDS[plan.backend].command(reader, plan, plan.params["duration"])
    return _finish(capture, plan)


def run_capture(reader, plan, read_counters=None):
    """Run the capture `plan` decided on; returns ``(capture, before, after)`` (docs/run-format.md).

    Under one CaptureGuard: the rate guard's probe, then each backend of ``plan.order`` until one works
    (auto) or the asked one has run. `read_counters` (a callable returning a snapshot, or None) is
    called when the tracer is live (``before``) and right before it stops (``after``); the capture's
    ``window`` records both intervals. A backend that went live and then failed ends the run: its
    capture is ``failed`` with the reason, and the counters read before it are kept.
    """
    capture = _planned(plan)
    if plan.refusal:
        return _finish(capture, plan), None, None
    params = plan.params
    rate_guard = window = None
    with CaptureGuard(deadline_s=deadline_s(params), tmp_root=params["tmpdir"]) as guard:
        rate = None
        if params["max_event_rate"] and plan.tracefs_root:
            try:
                rate, _name = tracefs_capture.probe_rate(guard, plan.tracefs_root, PROBE_S)
            except (IOError, OSError):
                rate = None
        auto = capture["auto"]
        for name in plan.order:
            rate_guard = guard_plan(params["duration"], params["stacks"], params["max_event_rate"], rate,
                                    backend=name, port=params["dport"])
            capture = _attempt(plan, name)
            capture["auto"] = auto
            window = CaptureWindow(guard, read_counters)
            started = time.monotonic()
            try:
                BACKENDS[name].run(capture, guard, reader, plan, rate_guard, window=window)
            except Exception as exc:  # pylint: disable=broad-except
                # Whatever broke, the capture says so and the counters read before it are kept.
                capture["status"] = "failed"
                capture["reason"] = "%s capture failed: %s" % (name, exc)
            auto["tried"].append({"backend": name, "status": capture["status"], "reason": capture["reason"],
                                  "seconds": round(time.monotonic() - started, 3)})
            if window.went_live:
                capture["window"] = window.record()
            if capture["status"] == "ok" or guard.remaining() < params["duration"] + 5:
                break
            if window.went_live and capture["status"] == "failed":
                break  # died mid-way: reported as it is, not replaced by another backend's capture
    capture["guard"] = rate_guard
    if capture["status"] == "ok" and "peers" not in capture:
        capture["peers"] = bpftrace_capture.peers_off(
            "%s reads no packet headers: only bpftrace records addresses" % capture["backend"], params.get("peers"))
    if rate_guard["active"]:
        capture["truncated"] = capture["truncated"] or rate_guard["window_s"] < params["duration"]
    _post_filter(capture, params)
    return _finish(capture, plan), window.before, window.after


def _post_filter(capture, params):
    """Filters a backend could not apply in the kernel, applied to the groups (and said so)."""
    if params["exclude_reasons"] and not BACKENDS[capture["backend"]].excludes_in_kernel:
        kept = [d for d in capture["drops"] if d["reason"] not in params["exclude_reasons"]]
        capture["events"] -= sum(d["count"] for d in capture["drops"]) - sum(d["count"] for d in kept)
        capture["drops"] = kept


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
    if not 0 <= params["dport"] <= 65535:
        return "dport must be between 0 (no filter) and 65535, got %d" % params["dport"]
    if params["max_event_rate"] < 0:
        return "max_event_rate must be 0 (guard off) or a positive number of events per second, got %d" % (
            params["max_event_rate"])
    for name in params["exclude_reasons"]:
        if not name or not all(c.isupper() or c.isdigit() or c == "_" for c in name):
            return "exclude_reasons: %r is not a drop reason name (upper case, digits and _)" % name
    for name in params.get("sysctls") or ():
        if sysctl_name_problem(name):
            return sysctl_name_problem(name)
    return None
