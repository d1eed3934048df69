"""bpftrace stops by itself at the capture's deadline, with nobody left to stop it (real bpftrace)."""

from __future__ import annotations

import json
import subprocess
import time

from ansible_collections.dropscope.drops.plugins.module_utils import bpftrace_capture as bt


def test_bpftrace_exits_by_itself_at_its_deadline(tmp_path, tracefs):
    # bpftrace finds skb:kfree_skb through tracefs, which a fresh machine has not mounted.
    program = tmp_path / "drops.bt"
    program.write_text(bt.program_text(0, 0, lean=True, deadline_s=2))
    started = time.monotonic()
    proc = subprocess.run(["bpftrace", "-f", "json", str(program)], capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    printed = [e["data"].strip() for e in events if e.get("type") == "printf"]
    assert proc.returncode == 0, proc.stderr
    assert printed[0] == "READY" and "END" in printed, printed  # exit() ran END, like SIGINT does
    assert 2 <= elapsed < 20, elapsed
