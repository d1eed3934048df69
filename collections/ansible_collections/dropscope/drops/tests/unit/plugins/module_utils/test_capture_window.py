# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One window for counters and capture: the hooks a backend calls at its live and stop moments, the
counters read then, and what a capture returns when the counters cannot be read or the tracer dies.

The tracers run for real on the lab (tests/test_backends_lab.py, tests/test_fleet.py); here a backend
that records what happens when stands in for them, under the real CaptureGuard and run_capture."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os

import pytest
from ansible_collections.dropscope.drops.plugins.module_utils import capture_backends as cb
from ansible_collections.dropscope.drops.plugins.module_utils.capture_window import CaptureWindow
from ansible_collections.dropscope.drops.plugins.module_utils.snapshot import collect_snapshot
from ansible_collections.dropscope.drops.tests.unit.plugins.module_utils.samples import FakeReader, recorded

SYSTEM = {"boot_id": "0d6c1c7e-5d1e-4c2a-9d44-6b1f0e2f7a10", "netns_inode": 4026532177}
PARAMS = {"duration": 2, "backend": "scripted", "netns": "self", "dport": 0, "exclude_reasons": [],
          "max_event_rate": 0, "stacks": False, "top": 50, "max_size_mb": 256, "timeout": 0, "tmpdir": None}


class Clock:
    """A monotonic clock that moves only when told (each call returns the current time)."""

    def __init__(self, start=100.0):
        self.now = start

    def __call__(self):
        return self.now


class ScriptedBackend(cb.Backend):
    """A tracer that logs its life: started, live (the window's hook), stopping (the hook), stopped.

    `die` makes it break off after it went live (as a tracer killed mid-way), before its window ends.
    """

    name = "scripted"

    def __init__(self, log, die=False):
        self.log = log
        self.die = die
        self.guard = None

    def command(self, reader, plan, duration):
        return ["scripted"]

    def run(self, capture, guard, reader, plan, rate_guard, window=None):
        self.guard = guard
        self.log.append("tracer started")
        window.live()
        self.log.append("ready marker written" if os.path.exists(guard.path("ready")) else "no ready marker")
        if self.die:
            raise OSError(errno.EIO, "the tracer died")
        self.log.append("counting")
        window.stopping()
        self.log.append("tracer stopped")
        capture["duration_s"] = 2.0
        return capture


def _counters(log, backend, reader):
    """read_counters for run_capture: logs each reading and whether the guard's ready marker existed then."""
    def read():
        marker = backend.guard is not None and os.path.exists(backend.guard.path("ready"))
        log.append("counters read (ready marker %s)" % ("already there" if marker else "not yet"))
        return collect_snapshot(reader, ethtool=False)
    return read


def _run(monkeypatch, reader, die=False, counters=True):
    log = []
    backend = ScriptedBackend(log, die=die)
    monkeypatch.setitem(cb.BACKENDS, "scripted", backend)
    plan = cb.CapturePlan(dict(PARAMS), None, SYSTEM, {}, None)
    plan.order = ["scripted"]
    capture, before, after = cb.run_capture(reader, plan, _counters(log, backend, reader) if counters else None)
    return log, capture, before, after


def _host(broken=False):
    """A host whose counters come from recorded files; `broken`: every file and command fails."""
    files = {"/proc/net/snmp": recorded("proc_net_snmp.txt"), "/proc/net/netstat": "", "/proc/net/snmp6": "",
             "/proc/net/softnet_stat": recorded("softnet_stat.txt"), "/proc/net/dev": recorded("proc_net_dev.txt"),
             "/proc/net/udp": recorded("proc_net_udp.txt"), "/proc/net/udp6": recorded("proc_net_udp6.txt")}
    return FakeReader({} if broken else files, {}, {})


def test_counters_are_read_when_the_tracer_is_live_and_right_before_it_stops(monkeypatch):
    log, capture, before, after = _run(monkeypatch, _host())
    assert log == ["tracer started",
                   "counters read (ready marker not yet)",   # BEFORE: the tracer is live, nobody told yet
                   "ready marker written",                    # then the capture is announced ready
                   "counting",
                   "counters read (ready marker already there)",  # AFTER: the tracer has not stopped yet
                   "tracer stopped"]
    assert capture["status"] == "ok" and capture["auto"]["tried"][0]["status"] == "ok"
    assert before["protocols"]["UdpNoPorts"] == after["protocols"]["UdpNoPorts"]
    window = capture["window"]
    assert window["complete"] is True
    # The counters' interval lies inside the capture's window and differs from it by the reading time.
    assert 0 <= window["before_at_s"] <= window["before_read_s"]
    assert window["counters_s"] == round(after["time"]["monotonic"] - before["time"]["monotonic"], 4)
    assert window["counters_s"] <= window["capture_s"]
    assert window["difference_s"] <= window["before_read_s"] + window["after_read_s"] + 0.001


def test_a_host_whose_counters_cannot_be_read_still_captures_and_says_so(monkeypatch):
    log, capture, before, after = _run(monkeypatch, _host(broken=True))
    assert capture["status"] == "ok" and log[-1] == "tracer stopped"
    sources = [error["source"] for error in before["errors"]]
    assert "/proc/net/snmp" in sources and "/proc/net/softnet_stat" in sources
    assert before["protocols"] == {} and before["schema_version"] == 1 and before["time"]["monotonic"] > 0
    assert [error["source"] for error in after["errors"]] == sources


def test_a_capture_that_dies_mid_way_keeps_the_counters_read_before_it(monkeypatch):
    log, capture, before, after = _run(monkeypatch, _host(), die=True)
    assert log == ["tracer started", "counters read (ready marker not yet)", "ready marker written"]
    assert (capture["status"], capture["reason"]) == ("failed", "scripted capture failed: [Errno 5] the tracer died")
    assert "UdpNoPorts" in before["protocols"] and before["errors"] == [] and after is None
    window = capture["window"]
    assert window["complete"] is False and window["capture_s"] is None and window["counters_s"] is None
    assert window["before_read_s"] is not None


def test_without_counters_the_window_is_still_recorded(monkeypatch):
    log, capture, before, after = _run(monkeypatch, _host(), counters=False)
    assert (before, after) == (None, None) and "counters read" not in " ".join(log)
    assert capture["window"]["capture_s"] is not None and capture["window"]["counters_s"] is None


def test_an_attempt_that_died_mid_way_is_not_replaced_by_the_next_backend(monkeypatch):
    log = []
    dying = ScriptedBackend(log, die=True)
    monkeypatch.setitem(cb.BACKENDS, "scripted", dying)
    monkeypatch.setitem(cb.BACKENDS, "second", ScriptedBackend(log))
    plan = cb.CapturePlan(dict(PARAMS, backend="auto"), None, SYSTEM, {}, None)
    plan.order = ["scripted", "second"]
    capture, before, after = cb.run_capture(_host(), plan, _counters(log, dying, _host()))
    assert [tried["backend"] for tried in capture["auto"]["tried"]] == ["scripted"]
    assert capture["status"] == "failed" and before is not None and after is None


def test_window_record_from_the_snapshots_own_clock():
    clock = Clock()

    class Guard:
        def mark_ready(self):
            clock.now += 0.001

    readings = []

    def read():
        snapshot = {"time": {"monotonic": clock.now + 0.0002}}
        clock.now += 0.1  # reading takes 0.1 s
        readings.append(snapshot)
        return snapshot

    window = CaptureWindow(Guard(), read, clock=clock)
    assert window.live() == 100.0
    clock.now = 104.0
    assert window.stopping() == 104.1
    assert window.record() == {"capture_s": 4.1, "counters_s": 4.0, "before_at_s": 0.0002, "after_at_s": 4.0002,
                               "before_read_s": 0.1, "after_read_s": 0.1, "difference_s": 0.1, "complete": True}
    assert (window.before, window.after) == tuple(readings)


def test_a_command_that_cannot_start_is_a_snapshot_error_not_a_failure():
    class Unstartable(FakeReader):
        def run(self, argv):
            raise OSError(errno.ENOEXEC, "Exec format error", argv[0])

    reader = Unstartable({}, {"tc": "/usr/sbin/tc", "nft": "/usr/sbin/nft", "ethtool": "/usr/sbin/ethtool"}, {})
    snapshot = collect_snapshot(reader)
    sources = [error["source"] for error in snapshot["errors"]]
    assert "tc -s -j qdisc show" in sources and "nft -a list ruleset" in sources
    assert snapshot["qdiscs"] == {} and snapshot["firewall"] == {}


@pytest.mark.parametrize("name", ["bpftrace", "perf", "tracefs", "dropwatch"])
def test_every_backend_passes_its_window_on(monkeypatch, name):
    """Each registered backend hands the window to its tracer's run function (where the hooks are called)."""
    from ansible_collections.dropscope.drops.plugins.module_utils import (
        bpftrace_capture,
        dropwatch_capture,
        perf_capture,
        tracefs_capture,
    )
    modules = {"bpftrace": (bpftrace_capture, "run_bpftrace_capture"), "perf": (perf_capture, "run_perf_capture"),
               "tracefs": (tracefs_capture, "run_tracefs_capture"),
               "dropwatch": (dropwatch_capture, "run_dropwatch_capture")}
    module, function = modules[name]
    seen = {}
    monkeypatch.setattr(module, function, lambda *args, **kwargs: seen.update(kwargs))
    plan = cb.CapturePlan(dict(PARAMS, backend=name), None, SYSTEM, {}, "/sys/kernel/tracing")
    reader = FakeReader({}, {}, {})
    cb.BACKENDS[name].run(cb._attempt(plan, name), None, reader, plan,
                          cb.guard_plan(2, False, 0, None, backend=name), window="the window")
    assert seen["window"] == "the window"
