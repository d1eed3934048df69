# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The `tracefs` capture backend and the drop-rate probe, both in a private ftrace instance.

Everything happens in ``instances/dropscope-<random>`` under tracefs, never in the global buffer that
other tools may be using. The instance is registered with the CaptureGuard before it is created, so
it is removed on every exit path (the guardian rmdirs it even when the module is SIGKILLed).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import binascii
import errno
import os
import re
import select
import time

from ansible_collections.dropscope.drops.plugins.module_utils.capture_window import CaptureWindow
from ansible_collections.dropscope.drops.plugins.module_utils.kfree_skb import (
    TRACEFS_ROOTS,
    DropAggregator,
    aggregate_perf_script,
)

EVENT = os.path.join("events", "skb", "kfree_skb")
INSTANCE_PREFIX = "dropscope-"
# Per-CPU buffer of the capture instance (KiB): room for ~1 s of 200k events/s across the reads.
BUFFER_KB = 8192
# Per-CPU buffer of the rate probe: the probe only counts (entries + overrun), it reads nothing.
PROBE_BUFFER_KB = 64
READ_CHUNK = 1 << 20
_STAT = re.compile(r"^([a-z][a-z ]*[a-z]):\s+(\d+)(?:\.\d+)?\s*$")
_LOST = re.compile(r"\[LOST (\d+) EVENTS\]")


def find_tracefs(exists=os.path.isdir):
    """The mounted tracefs directory that has ``instances/`` and the kfree_skb event, or None."""
    for root in TRACEFS_ROOTS:
        if exists(os.path.join(root, "instances")) and exists(os.path.join(root, EVENT)):
            return root
    return None


def parse_cpu_stats(text):
    """Integer fields of ``per_cpu/cpuN/stats``, keyed by name with spaces as underscores.

    Sample (kernel 6.18)::

        entries: 0
        overrun: 41
        commit overrun: 0
        bytes: 0
        oldest event ts:     0.000000
        now ts:  2290.522241
        dropped events: 0
        read events: 12

    gives ``{"entries": 0, "overrun": 41, "commit_overrun": 0, "bytes": 0, "dropped_events": 0,
    "read_events": 12}`` (the two timestamps are left out).
    """
    stats = {}
    for line in text.splitlines():
        match = _STAT.match(line.strip())
        if match and not match.group(1).endswith(" ts"):
            stats[match.group(1).replace(" ", "_")] = int(match.group(2))
    return stats


def reason_filter(exclude_ids=(), protocol=None):
    """A numeric ftrace event filter from validated integers (names give EINVAL), or "" for none.

    >>> reason_filter([2, 4], 2048)
    'reason != 2 && reason != 4 && protocol == 2048'
    """
    parts = ["reason != %d" % int(value) for value in exclude_ids]
    if protocol is not None:
        parts.append("protocol == %d" % int(protocol))
    return " && ".join(parts)


def _write(path, text):
    with open(path, "w") as handle:
        handle.write(text)


def _read(path):
    with open(path, "r") as handle:
        return handle.read()


def new_instance(guard, root):
    """Create a private ftrace instance registered with `guard` for removal; returns its path."""
    name = INSTANCE_PREFIX + binascii.hexlify(os.urandom(6)).decode("ascii")
    path = os.path.join(root, "instances", name)
    guard.remove_dir_on_exit(path)
    os.mkdir(path)
    return path


def instance_stats(path):
    """Sum of every CPU's stats of an instance."""
    total = {}
    per_cpu = os.path.join(path, "per_cpu")
    for cpu in sorted(os.listdir(per_cpu)):
        try:
            stats = parse_cpu_stats(_read(os.path.join(per_cpu, cpu, "stats")))
        except (IOError, OSError):
            continue
        for key, value in stats.items():
            total[key] = total.get(key, 0) + value
    return total


def probe_rate(guard, root, seconds=0.25):
    """Kernel-wide kfree_skb events per second, counted in a private instance for `seconds`.

    Counting costs one ring-buffer write per event for the probe's duration; nothing is read or
    formatted. Returns (events_per_s, instance_name).
    """
    path = new_instance(guard, root)
    try:
        _write(os.path.join(path, "buffer_size_kb"), "%d" % PROBE_BUFFER_KB)
        enable = os.path.join(path, EVENT, "enable")
        _write(enable, "1")
        started = time.monotonic()
        time.sleep(seconds)
        _write(enable, "0")
        elapsed = time.monotonic() - started
        stats = instance_stats(path)
    finally:
        guard.remove_dir_now(path)
    events = stats.get("entries", 0) + stats.get("overrun", 0) + stats.get("dropped_events", 0)
    return events / max(elapsed, 1e-6), os.path.basename(path)


def global_event_enabled(root):
    """The global buffer's kfree_skb enable flag ("0", "1", or with '*' when mixed), to check we left it alone."""
    try:
        return _read(os.path.join(root, EVENT, "enable")).strip()
    except (IOError, OSError):
        return None


def command(instance_name):
    """What the tracefs backend "runs": no process, a private instance and its kfree_skb event."""
    return ["tracefs", "instances/" + instance_name, EVENT]


def run_tracefs_capture(capture, guard, root, duration, reasons=None, top=50, event_filter="", window=None):
    """Capture in a private instance for `duration` s, reading trace_pipe with poll and a deadline.

    Fills `capture` (see docs/run-format.md) and returns it; the instance is removed before returning
    (and by the guardian on any other exit path). `window` (a ``CaptureWindow``) is told when the event
    is enabled (live) and when the window ends, right before it is disabled.
    """
    window = window or CaptureWindow(guard)
    path = new_instance(guard, root)
    capture["command"] = command(os.path.basename(path))
    aggregator = DropAggregator()
    lost_lines = 0
    fd = None
    try:
        _write(os.path.join(path, "buffer_size_kb"), "%d" % BUFFER_KB)
        if event_filter:
            _write(os.path.join(path, EVENT, "filter"), event_filter)
        fd = os.open(os.path.join(path, "trace_pipe"), os.O_RDONLY | os.O_NONBLOCK)
        enable = os.path.join(path, EVENT, "enable")
        _write(enable, "1")
        capture["started_wall"] = time.time()
        started = window.live()
        end = started + duration
        pending = b""
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        stopping_at = None
        while True:
            now = time.monotonic()
            if stopping_at is None and (now >= end or guard.remaining() < 5):
                capture["truncated"] = now < end
                now = window.stopping()
                _write(enable, "0")
                capture["duration_s"] = round(now - started, 3)
                # Drain what is left in the buffer, bounded in time.
                stopping_at = now + 2.0
            if stopping_at is not None and now >= stopping_at:
                break
            timeout = (stopping_at if stopping_at is not None else end) - now
            ready = poller.poll(max(0.0, min(timeout, 0.2)) * 1000)
            if not ready:
                if stopping_at is not None:
                    break  # disabled and nothing more to read
                continue
            try:
                chunk = os.read(fd, READ_CHUNK)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EINTR):
                    continue
                raise
            if not chunk:
                if stopping_at is not None:
                    break
                continue
            data = pending + chunk
            cut = data.rfind(b"\n")
            if cut < 0:
                pending = data
                continue
            pending = data[cut + 1:]
            lines = data[:cut].decode("utf-8", "replace").split("\n")
            for line in lines:
                if "[LOST" in line:
                    match = _LOST.search(line)
                    if match:
                        lost_lines += int(match.group(1))
            aggregate_perf_script(lines, reasons or {}, aggregator=aggregator)
        if pending:
            aggregate_perf_script([pending.decode("utf-8", "replace")], reasons or {}, aggregator=aggregator)
        stats = instance_stats(path)
    finally:
        if fd is not None:
            os.close(fd)
        guard.remove_dir_now(path)
    capture["lost_events"] = max(stats.get("overrun", 0) + stats.get("dropped_events", 0), lost_lines)
    capture.update(aggregator.result(top=top))
    return capture


def mounted_tracefs(mounts_text):
    """Where tracefs is mounted (one of TRACEFS_ROOTS) according to /proc/mounts text, or None."""
    for line in (mounts_text or "").splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2] == "tracefs" and parts[1] in TRACEFS_ROOTS:
            return parts[1]
    return None


def ensure_tracefs(run, mount_bin, mounts_text):
    """Mount tracefs at /sys/kernel/tracing if it is not mounted (as perf does). Returns (root, mounted_here).

    `run` takes an argument list and returns (rc, out, err). Inside `ip netns exec` (the lab's hosts)
    /sys is a fresh sysfs without tracefs, so bpftrace and the tracefs backend need this.
    """
    root = mounted_tracefs(mounts_text)
    if root:
        return root, False
    if not mount_bin:
        return None, False
    rc, _out, _err = run([mount_bin, "-t", "tracefs", "nodev", TRACEFS_ROOTS[0]])
    return (TRACEFS_ROOTS[0], True) if rc == 0 else (None, False)


class TracefsMount:
    """Mount tracefs for the duration of a `with` block when it is not mounted (as perf does), then unmount.

    `reader` is a ``snapshot.HostReader`` (files, binaries, commands). ``root`` is the usable tracefs
    directory inside the block (None when tracefs is neither mounted nor mountable here);
    ``mounted_here`` says whether this block mounted it. Without `allowed` (or without root) it only
    looks.
    """

    def __init__(self, reader, allowed=True):
        self.reader = reader
        self.allowed = allowed
        self.root = None
        self.mounted_here = False

    def __enter__(self):
        try:
            mounts = self.reader.read_text("/proc/mounts")
        except (IOError, OSError):
            mounts = ""
        if self.allowed and os.geteuid() == 0:
            root, self.mounted_here = ensure_tracefs(self.reader.run, self.reader.find_bin("mount"), mounts)
        else:
            root = mounted_tracefs(mounts)
        self.root = find_tracefs() if root else None
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.mounted_here:
            umount = self.reader.find_bin("umount")
            if umount:
                self.reader.run([umount, TRACEFS_ROOTS[0]])
        return False
