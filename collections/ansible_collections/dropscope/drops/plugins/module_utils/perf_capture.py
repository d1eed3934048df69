# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The `perf` capture backend: `perf record -a -e skb:kfree_skb`, aggregated on the host.

perf starts with its events disabled (``-D -1``) and is driven through its control FIFOs
(``--control fifo:ctl,ack``, perf 5.11 or later): ``enable`` and its ack mark the moment the tracer is
live, ``disable`` and its ack the end of the window; then SIGINT makes it write its file. Its workload
``sleep DEADLINE`` (the capture's hard deadline) ends it by itself if nobody is left to stop it.

Older perf (RHEL 8's 4.18, Ubuntu 18.04's 4.15) has neither option: it records from its start for
``sleep DURATION``. The window is then taken from the moment its workload runs (perf enables its
events just before it starts the workload) to the moment perf exits, and the capture says so
(``perf_control: false``).

The raw `perf script` text never leaves the host: it is streamed line by line into a bounded
aggregator, and only counts by reason × location × protocol (and top stacks) are returned.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import select
import signal
import subprocess
import time

from ansible_collections.dropscope.drops.plugins.module_utils.capture_guard import child_exited
from ansible_collections.dropscope.drops.plugins.module_utils.capture_window import CaptureWindow
from ansible_collections.dropscope.drops.plugins.module_utils.kfree_skb import aggregate_perf_script

# perf record's line when --max-size stops it:
#   [ perf record: perf size limit reached (262144 KB), stopping session ]
_SIZE_LIMIT = "size limit reached"

# Seconds that perf gets, once stopped, to write its file.
RECORD_GRACE_S = 15
# Seconds perf gets to acknowledge `enable` (its setup: opening the event on every CPU).
READY_TIMEOUT_S = 30.0
# Seconds perf gets to acknowledge `disable`.
ACK_TIMEOUT_S = 2.0
# The control FIFOs, in the capture's temporary directory.
CTL_FIFO, ACK_FIFO = "perf.ctl", "perf.ack"
# The first perf release with `record -D -1` and `--control fifo:` (Linux 5.11's tools).
CONTROL_SINCE = (5, 11)


def has_control(version):
    """Whether a perf of `version` ("6.1.76", "4.18.0", None when unknown) takes ``-D -1 --control``.

    >>> has_control("6.1.76"), has_control("5.11"), has_control("4.18.0"), has_control(None)
    (True, True, False, True)
    """
    if not version:
        return True  # unknown: try it; a perf that refuses exits at once and the capture says why
    numbers = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
    return numbers >= CONTROL_SINCE


def record_command(perf, sleep, output, deadline_s, stacks=False, max_size_mb=256, ctl=CTL_FIFO, ack=ACK_FIFO,
                   control=True):
    """The `perf record` argument list: whole system, one tracepoint, events off until `enable` on the
    control FIFO, and its own deadline via `sleep deadline_s`. Without `control` (perf before 5.11) it
    records from its start and `deadline_s` is the capture's duration."""
    argv = [perf, "record", "-a", "-e", "skb:kfree_skb"]
    if stacks:
        argv.append("-g")
    # No build-id pass at exit: perf would read perf.data again and copy the vDSO to /tmp/perf-vdso.so-XXXXXX,
    # a file left behind whenever perf is killed there; `perf script` on the same host does not need build-ids.
    argv += ["--max-size", "%dM" % max_size_mb, "--no-buildid"]
    if control:
        argv += ["-D", "-1", "--control", "fifo:%s,%s" % (ctl, ack)]
    argv += ["-o", output, "--", sleep, str(deadline_s)]
    return argv


def script_command(perf, data, stacks=False):
    """The `perf script` argument list that prints only what the aggregator reads."""
    fields = "trace,ip,sym" if stacks else "trace"
    return [perf, "script", "-i", data, "-F", fields, "--show-lost-events"]


def _tail(path, limit=600):
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as handle:
            return handle.read()[-limit:].strip()
    except (IOError, OSError):
        return ""


def _workload_started(pid, name, proc_root="/proc"):
    """Whether a child of `pid` runs program `name` (perf's workload has been exec'd)."""
    for entry in os.listdir(proc_root):
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(proc_root, entry, "stat"), "r") as handle:
                stat = handle.read()
        except (IOError, OSError):
            continue
        comm = stat[stat.find("(") + 1:stat.rfind(")")]
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and fields[1] == str(pid) and comm == name[:15]:
            return True
    return False


def _command(proc, ctl, ack, command, timeout):
    """Send a control command to perf and wait for its ack; False if perf exited or did not answer."""
    os.write(ctl, command.encode("ascii") + b"\n")
    end = time.monotonic() + timeout
    received = b""
    while time.monotonic() < end:
        if select.select([ack], [], [], 0.05)[0]:
            try:
                received += os.read(ack, 64)
            except BlockingIOError:
                continue
            if b"ack" in received:
                return True
        elif child_exited(proc.pid):
            return False
    return False


def run_perf_capture(capture, guard, perf, sleep, duration, stacks=False, top=50, max_size_mb=256, reasons=None,
                     deadline_s=None, window=None, control=True):
    """Record, then aggregate; fills and returns `capture`.

    Runs under the capture's `guard`: its files are in the guard's temporary directory (the data file is
    removed as soon as it is read, so a backend tried after perf has the room) and its processes stop
    at the guard's deadline at the latest (`deadline_s`, the workload's `sleep`, defaults to it).
    `window` (a ``CaptureWindow``) is told when perf acknowledged ``enable`` (live) and when the window
    ends, right before ``disable``.
    """
    window = window or CaptureWindow(guard)
    deadline_s = deadline_s or max(1, int(guard.remaining()))
    if not control:
        return _run_uncontrolled(capture, guard, perf, sleep, duration, stacks, top, max_size_mb, reasons, window)
    data = guard.path("perf.data")
    ctl_path, ack_path = guard.path(CTL_FIFO), guard.path(ACK_FIFO)
    argv = record_command(perf, sleep, data, deadline_s, stacks, max_size_mb, ctl=ctl_path, ack=ack_path)
    capture["command"] = record_command(perf, sleep, "perf.data", deadline_s, stacks, max_size_mb)
    fds = []
    try:
        os.mkfifo(ctl_path, 0o600)
        os.mkfifo(ack_path, 0o600)
        # Read-write: opening never blocks, and perf's writes never meet a FIFO without a reader.
        ctl = os.open(ctl_path, os.O_RDWR | os.O_NONBLOCK)
        fds.append(ctl)
        ack = os.open(ack_path, os.O_RDWR | os.O_NONBLOCK)
        fds.append(ack)
        with open(guard.path("record.err"), "wb") as err:
            attach_started = time.monotonic()
            proc = guard.start(argv, stdout=subprocess.DEVNULL, stderr=err)
            if not _command(proc, ctl, ack, "enable", min(READY_TIMEOUT_S, max(guard.remaining() - duration - 2, 1))):
                # Exited by itself (no permission, a perf without -D -1 / --control): auto moves on.
                return _not_started(capture, guard, proc)
            started = _went_live(capture, window, attach_started)
            end = started + duration
            while time.monotonic() < end and not child_exited(proc.pid):
                time.sleep(0.05)
            died = child_exited(proc.pid)
            # perf's own --max-size stops it early: a truncated capture (a lower bound), its window ends now.
            size_limited = died and _SIZE_LIMIT in _tail(guard.path("record.err"))
            capture["duration_s"] = round((time.monotonic() if died and not size_limited else window.stopping())
                                          - started, 3)
            if not died:
                _command(proc, ctl, ack, "disable", ACK_TIMEOUT_S)
                try:
                    os.killpg(proc.pid, signal.SIGINT)  # perf writes its file and exits
                except OSError:
                    pass
            rc, stopped = guard.wait(proc, timeout=RECORD_GRACE_S, stop_signal=signal.SIGKILL, stop_grace=1)
        record_err = _tail(guard.path("record.err"))
        # Killed after the grace, or perf's own --max-size: the counts are a lower bound.
        capture["truncated"] = stopped or _SIZE_LIMIT in record_err
        # Stopped by our SIGINT, perf exits with it once its file is written.
        if (died and not size_limited) or rc not in (0, -signal.SIGINT) or not os.path.exists(data):
            capture["status"] = "failed"
            capture["reason"] = "perf record %s (exit %s): %s" % (
                "ended before the window did" if died else "failed", rc, record_err or "no message")
            return capture

        _script(capture, guard, perf, data, stacks, top, reasons)
    finally:
        for fd in fds:
            os.close(fd)
        if os.path.exists(data):
            os.remove(data)
    return capture


def _not_started(capture, guard, proc):
    """perf never went live: "unavailable" when it exited by itself (no permission, options this perf
    lacks: auto moves on), "failed" when it hung and had to be killed."""
    exited = child_exited(proc.pid)
    rc, _stopped = guard.wait(proc, timeout=0.1, stop_signal=signal.SIGKILL)
    capture["status"] = "unavailable" if exited else "failed"
    capture["reason"] = "perf record did not start (exit %s): %s" % (
        rc, _tail(guard.path("record.err")) or "no message")
    return capture


def _went_live(capture, window, attach_started):
    """perf counts from now: note how long it took and open the window (the counters are read here)."""
    capture["attach_s"] = round(time.monotonic() - attach_started, 3)
    capture["started_wall"] = time.time()
    return window.live()


def _script(capture, guard, perf, data, stacks, top, reasons):
    """`perf script` of the data file, aggregated as it streams; fills `capture`."""
    with open(guard.path("script.err"), "wb") as err:
        script = guard.start(script_command(perf, data, stacks), stdout=subprocess.PIPE, stderr=err)
        try:
            lines = (raw.decode("utf-8", "replace") for raw in script.stdout)
            aggregator, lost = aggregate_perf_script(lines, reasons or {})
        finally:
            script.stdout.close()
            rc, stopped = guard.wait(script, timeout=max(guard.remaining() - 1, 1))
    capture["truncated"] = capture["truncated"] or stopped
    if rc != 0:
        capture["status"] = "failed"
        capture["reason"] = "perf script exited %d: %s" % (rc, _tail(guard.path("script.err")) or "no message")
    capture.update(aggregator.result(top=top))
    capture["lost_events"] = lost


def _run_uncontrolled(capture, guard, perf, sleep, duration, stacks, top, max_size_mb, reasons, window):
    """perf before 5.11: record from its start for `duration` s; live when its workload runs."""
    data = guard.path("perf.data")
    capture["command"] = record_command(perf, sleep, "perf.data", duration, stacks, max_size_mb, control=False)
    capture["perf_control"] = False
    try:
        with open(guard.path("record.err"), "wb") as err:
            attach_started = time.monotonic()
            proc = guard.start(record_command(perf, sleep, data, duration, stacks, max_size_mb, control=False),
                               stdout=subprocess.DEVNULL, stderr=err)
            ready_by = attach_started + min(READY_TIMEOUT_S, max(guard.remaining() - duration - 2, 1))
            # perf enables its system-wide events, then starts its workload: `sleep` running as perf's
            # child marks the moment it counts (its data file appears earlier, while it is still setting up).
            while not _workload_started(proc.pid, os.path.basename(sleep)) and not child_exited(proc.pid):
                if time.monotonic() > ready_by:
                    break
                time.sleep(0.01)
            if child_exited(proc.pid) or not _workload_started(proc.pid, os.path.basename(sleep)):
                return _not_started(capture, guard, proc)
            started = _went_live(capture, window, attach_started)
            rc, stopped = guard.wait(proc, timeout=duration + RECORD_GRACE_S, stop_signal=signal.SIGINT, stop_grace=1)
            capture["duration_s"] = round(window.stopping() - started, 3)
        capture["truncated"] = stopped or _SIZE_LIMIT in _tail(guard.path("record.err"))
        if rc != 0 or not os.path.exists(data):
            capture["status"] = "failed"
            capture["reason"] = "perf record failed (exit %s): %s" % (
                rc, _tail(guard.path("record.err")) or "no message")
            return capture
        _script(capture, guard, perf, data, stacks, top, reasons)
    finally:
        if os.path.exists(data):
            os.remove(data)
    return capture
