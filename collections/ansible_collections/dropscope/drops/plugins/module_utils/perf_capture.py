# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The `perf` capture backend: `perf record -a -e skb:kfree_skb`, aggregated on the host.

The raw `perf script` text never leaves the host: it is streamed line by line into a bounded
aggregator, and only counts by reason × location × protocol (and top stacks) are returned.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import subprocess
import time

from ansible_collections.dropscope.drops.plugins.module_utils.kfree_skb import aggregate_perf_script

# perf record's line when --max-size stops it:
#   [ perf record: perf size limit reached (262144 KB), stopping session ]
_SIZE_LIMIT = "size limit reached"

# Seconds that perf gets beyond the capture to stop and write its file.
RECORD_GRACE_S = 15


def record_command(perf, sleep, output, duration, stacks=False, max_size_mb=256):
    """The `perf record` argument list: whole system, one tracepoint, its own deadline via `sleep`."""
    argv = [perf, "record", "-a", "-e", "skb:kfree_skb"]
    if stacks:
        argv.append("-g")
    argv += ["--max-size", "%dM" % max_size_mb, "-o", output, "--", sleep, str(duration)]
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


def run_perf_capture(capture, guard, perf, sleep, duration, stacks=False, top=50, max_size_mb=256, reasons=None):
    """Record, then aggregate; fills and returns `capture`.

    Runs under the capture's `guard`: its files are in the guard's temporary directory (the data file is
    removed as soon as it is read, so a backend tried after perf has the room) and its processes stop
    at the guard's deadline at the latest.
    """
    data = guard.path("perf.data")
    argv = record_command(perf, sleep, data, duration, stacks, max_size_mb)
    capture["command"] = record_command(perf, sleep, "perf.data", duration, stacks, max_size_mb)
    try:
        with open(guard.path("record.err"), "wb") as err:
            capture["started_wall"] = time.time()
            started = time.monotonic()
            proc = guard.start(argv, stdout=subprocess.DEVNULL, stderr=err)
            rc, stopped = guard.wait(proc, timeout=duration + RECORD_GRACE_S)
            capture["duration_s"] = round(time.monotonic() - started, 3)
        record_err = _tail(guard.path("record.err"))
        # Stopped by the deadline, or perf's own --max-size: the counts are a lower bound.
        capture["truncated"] = stopped or _SIZE_LIMIT in record_err
        if rc != 0 or not os.path.exists(data):
            capture["status"] = "unavailable" if not os.path.exists(data) else "failed"
            capture["reason"] = "perf record exited %d: %s" % (rc, record_err or "no message")
            return capture

        with open(guard.path("script.err"), "wb") as err:
            script = guard.start(script_command(perf, data, stacks), stdout=subprocess.PIPE, stderr=err)
            try:
                lines = (raw.decode("utf-8", "replace") for raw in script.stdout)
                aggregator, lost = aggregate_perf_script(lines, reasons or {})
            finally:
                script.stdout.close()
                rc, stopped = guard.wait(script, timeout=max(guard.remaining() - 1, 1))
    finally:
        if os.path.exists(data):
            os.remove(data)
    capture["truncated"] = capture["truncated"] or stopped
    if rc != 0:
        capture["status"] = "failed"
        capture["reason"] = "perf script exited %d: %s" % (rc, _tail(guard.path("script.err")) or "no message")
    capture.update(aggregator.result(top=top))
    capture["lost_events"] = lost
    return capture
