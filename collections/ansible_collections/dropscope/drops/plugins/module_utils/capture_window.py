# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One window for the counters and the capture: the two hooks every capture backend calls.

- ``live()`` when its tracer is live (bpftrace printed READY, perf acknowledged ``enable``, the tracefs
  event is enabled, dropwatch was told ``start``): the counters are read (the BEFORE snapshot), then
  the guard's ``ready`` marker is written;
- ``stopping()`` at the end of its counting window, right before it stops its tracer: the counters
  are read again (the AFTER snapshot).

So the counters' interval lies inside the capture's window: every drop the counters count happened
while the tracer was live. The two differ by the reading time (``record()`` says by how much).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time


def _seconds(value):
    return None if value is None else round(value, 4)


class CaptureWindow:
    """The window of one capture attempt and the counters read at both ends.

    `guard` is the capture's ``CaptureGuard``; `read_counters` a callable that returns a snapshot
    (``snapshot.collect_snapshot`` on the module's reader), or None to read no counters.
    ``before`` and ``after`` are the snapshots (None until read); ``live_at`` and ``stop_at`` the
    monotonic times of the hooks.
    """

    def __init__(self, guard, read_counters=None, clock=time.monotonic):
        self.guard = guard
        self.read_counters = read_counters
        self.clock = clock
        self.before = None
        self.after = None
        self.live_at = None
        self.stop_at = None
        self.before_read_s = None
        self.after_read_s = None

    def live(self):
        """The tracer is live: read the BEFORE counters, then mark the capture ready. Returns the live time."""
        self.live_at = self.clock()
        if self.read_counters is not None:
            self.before = self.read_counters()
            self.before_read_s = self.clock() - self.live_at
        self.guard.mark_ready()
        return self.live_at

    def stopping(self):
        """The counting window ends: read the AFTER counters; the tracer is stopped next. Returns the stop time."""
        started = self.clock()
        if self.read_counters is not None:
            self.after = self.read_counters()
            self.after_read_s = self.clock() - started
        self.stop_at = self.clock()
        return self.stop_at

    @property
    def went_live(self):
        return self.live_at is not None

    def record(self):
        """The capture's ``window`` (docs/run-format.md): seconds, relative to the moment the tracer was live.

        ``capture_s``: live to stop; ``counters_s``: between the two snapshots' own ``time.monotonic``;
        ``difference_s``: how much the two differ (the reading time); each is None when unknown (no
        counters read, or the capture ended before its window did).
        """
        counters_s = before_at = after_at = None
        if self.before is not None:
            before_at = self.before["time"]["monotonic"] - self.live_at
        if self.after is not None:
            after_at = self.after["time"]["monotonic"] - self.live_at
        if before_at is not None and after_at is not None:
            counters_s = after_at - before_at
        capture_s = None if self.stop_at is None else self.stop_at - self.live_at
        difference = None if capture_s is None or counters_s is None else abs(capture_s - counters_s)
        return {"capture_s": _seconds(capture_s), "counters_s": _seconds(counters_s),
                "before_at_s": _seconds(before_at), "after_at_s": _seconds(after_at),
                "before_read_s": _seconds(self.before_read_s), "after_read_s": _seconds(self.after_read_s),
                "difference_s": _seconds(difference), "complete": self.stop_at is not None}
