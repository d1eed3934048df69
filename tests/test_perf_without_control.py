"""perf before 5.11 has no `-D -1 --control`: the capture records from perf's start and still counts
exactly, with the counters read at its live moment (real perf, run in the mode old perf needs)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from ansible_collections.dropscope.drops.plugins.module_utils import perf_capture
from ansible_collections.dropscope.drops.plugins.module_utils.capture_guard import CaptureGuard
from ansible_collections.dropscope.drops.plugins.module_utils.capture_window import CaptureWindow

SENDER = """
import socket, subprocess
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
probe.bind(("127.0.0.1", 0))
port = probe.getsockname()[1]
probe.close()
sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(20):
    sender.sendto(b"x", ("127.0.0.1", port))
"""


def test_uncontrolled_perf_counts_the_drops_sent_after_it_went_live(tracefs):
    if os.geteuid() != 0 or not shutil.which("perf"):
        pytest.fail("needs root and perf (bash .ci/install)")
    sent = []

    def at_live_then_at_stop():
        # Called by the window at the live moment (and again at the stop): 20 datagrams to a closed port,
        # in a network namespace of their own, once.
        if not sent:
            subprocess.run(["unshare", "--net", sys.executable, "-c", SENDER], check=True, timeout=30)
            sent.append(20)
        return {}

    capture = {"status": "ok", "reason": None, "truncated": False}
    with CaptureGuard(deadline_s=60) as guard:
        window = CaptureWindow(guard, read_counters=at_live_then_at_stop)
        perf_capture.run_perf_capture(capture, guard, shutil.which("perf"), shutil.which("sleep"), 2,
                                      window=window, control=False)
    assert capture["status"] == "ok", capture["reason"]
    assert capture["perf_control"] is False and "--control" not in capture["command"]
    assert capture["command"][-2:] == [shutil.which("sleep"), "2"]
    counted = sum(d["count"] for d in capture["drops"]
                  if (d["reason"], d["location"]) == ("NO_SOCKET", "__udp4_lib_rcv"))
    assert sent == [20] and counted == 20, capture["drops"]


def test_perf_versions_with_and_without_control():
    assert [perf_capture.has_control(v) for v in ("4.15.18", "4.18.0", "5.10.0", "5.11", "6.1.76")] == [
        False, False, False, True, True]
    legacy = perf_capture.record_command("perf", "sleep", "perf.data", 10, control=False)
    assert legacy == ["perf", "record", "-a", "-e", "skb:kfree_skb", "--max-size", "256M", "--no-buildid",
                      "-o", "perf.data", "--", "sleep", "10"]
