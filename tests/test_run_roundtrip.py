"""The run format round trip: the collection's snapshot and capture -> run_record -> `dropscope report`.

The snapshots are real (snapshot.collect_snapshot on this machine, in a network namespace of the test's
own so the counters move by exactly what the test sends); the capture is the collection's capture
skeleton with known drops. run_record writes the run as the playbook does, and the report must show
exactly those drops and counters, and the host whose capture did not run as failed with the reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from ansible_collections.dropscope.drops.plugins.module_utils import run_record
from ansible_collections.dropscope.drops.plugins.module_utils.capture_backends import new_capture
from conftest import REPO

DATAGRAMS = 7
CLOSED_PORT = 9
NO_NET_DM = "kernel has no NET_DM (CONFIG_NET_DROP_MONITOR)"

# Runs in a fresh network namespace: snapshot, DATAGRAMS to a closed UDP port on loopback, snapshot.
SNAPSHOTS = f"""
import json, shutil, socket, subprocess, sys, time
from ansible_collections.dropscope.drops.plugins.module_utils.snapshot import C_LOCALE, HostReader, collect_snapshot

def run(argv):
    env = dict(C_LOCALE, PATH="/usr/sbin:/usr/bin:/sbin:/bin")
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    return proc.returncode, proc.stdout, proc.stderr

def no_ports():
    lines = [line.split() for line in open("/proc/net/snmp") if line.startswith("Udp:")]
    return int(lines[1][lines[0].index("NoPorts")])

subprocess.run(["ip", "link", "set", "dev", "lo", "up"], check=True)
reader = HostReader(run, shutil.which)
before = collect_snapshot(reader)
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
    for _ in range({DATAGRAMS}):
        sock.sendto(b"dropscope round trip", ("127.0.0.1", {CLOSED_PORT}))
deadline = time.monotonic() + 5
while no_ports() < {DATAGRAMS} and time.monotonic() < deadline:
    time.sleep(0.01)
after = collect_snapshot(reader)
json.dump({{"before": before, "after": after}}, sys.stdout)
"""


def _snapshots() -> dict:
    """Real before/after snapshots from a network namespace of our own (root: `unshare --net`)."""
    if os.geteuid() != 0:
        pytest.fail("this test needs root for a network namespace of its own (run as root after `bash .ci/install`)")
    env = dict(os.environ, PYTHONPATH=str(REPO / "collections"))
    proc = subprocess.run(["unshare", "--net", sys.executable, "-c", SNAPSHOTS], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _capture(snapshot: dict, backend: str) -> dict:
    system = snapshot["system"]
    return new_capture(backend, 1, False, system["boot_id"], system["netns_inode"], 128)


def test_collection_snapshot_and_capture_through_run_record_to_the_report(tmp_path):
    snapshots = _snapshots()
    before, after = snapshots["before"], snapshots["after"]

    captured = _capture(before, "bpftrace")
    drop = {"reason": "NO_SOCKET", "location": "__udp4_lib_rcv", "offset": "0x4bc", "protocol": "IPv4",
            "l4": "udp", "port": CLOSED_PORT, "count": DATAGRAMS}
    captured.update(scope="netns", duration_s=1.0, started_wall=before["time"]["wall"], events=DATAGRAMS,
                    drops=[drop], command=["bpftrace", "-f", "json", "drops.bt"])
    unavailable = _capture(before, "dropwatch")
    unavailable.update(status="unavailable", reason=NO_NET_DM)
    results = {
        "h1": {"before": {"snapshot": before, "changed": False},
               "capture": {"capture": captured, "changed": False},
               "after": {"snapshot": after, "changed": False}},
        "h2": {"before": {"snapshot": before, "changed": False},
               "capture": {"capture": unavailable, "changed": False},
               "after": {"snapshot": after, "changed": False}},
    }
    run_dir, manifest = run_record.write_run(str(tmp_path), "roundtrip", results,
                                             {"parameters": {"duration": 1, "backend": "auto", "dport": 0}})
    error = "capture failed: dropwatch unavailable: " + NO_NET_DM
    assert [(h["host"], h["status"], h["error"]) for h in manifest["hosts"]] == [("h1", "ok", None),
                                                                                  ("h2", "failed", error)]

    proc = subprocess.run([sys.executable, "-m", "dropscope", "report", run_dir], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "roundtrip" / "report.json").read_text())
    hosts = {host["host"]: host for host in report["hosts"]}
    h1, h2 = hosts["h1"], hosts["h2"]
    assert (h1["status"], h1["error"]) == ("ok", None)
    assert [(d["reason"], d["location"], d["port"], d["count"]) for d in h1["capture"]["drops"]] == [
        ("NO_SOCKET", "__udp4_lib_rcv", CLOSED_PORT, DATAGRAMS)]
    assert h1["counters"]["protocols"]["UdpNoPorts"] == DATAGRAMS  # the real counters moved by what was sent
    assert h1["kernel"]["boot_id"] == before["system"]["boot_id"]
    assert (h2["status"], h2["error"]) == ("failed", error)
    assert (report["fleet"]["ok"], report["fleet"]["failed"]) == (1, 1)

    # An incomplete run, no threshold violated: `dropscope check` exits 3 and names the failed host.
    thresholds = tmp_path / "thresholds.yml"
    thresholds.write_text("reasons:\n  - reason: \"*\"\n    max_rate: 1000000\n")
    check = subprocess.run([sys.executable, "-m", "dropscope", "check", run_dir, "--thresholds", str(thresholds)],
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 3, check.stdout + check.stderr
    assert "h2: failed" in check.stdout


def _run_record_task(tmp_path, *args: str) -> subprocess.CompletedProcess:
    """run_record as a real ad-hoc Ansible task on the controller (its action plugin), verbose."""
    results = json.dumps({"h1": {"capture": {"capture": dict(CAPTURE_OK), "before": {}, "after": {}}}})
    argv = ["ansible", "localhost", "-m", "dropscope.drops.run_record", "-vvv",
            "-a", json.dumps({"runs_dir": str(tmp_path), "run_id": "adhoc", "results": json.loads(results)}), *args]
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)


CAPTURE_OK = {"schema_version": 1, "backend": "bpftrace", "status": "ok", "reason": None, "drops": [],
              "window": {"counters_s": 1.2, "capture_s": 1.0, "difference_s": 0.2, "complete": True}}


def test_run_record_runs_in_the_controller_process_and_predicts_in_check_mode(tmp_path):
    """The action plugin writes the run itself: no module payload is built or started, and check mode
    writes nothing but says what a real run would record; a second run with the same id fails, naming it."""
    checked = _run_record_task(tmp_path, "--check")
    assert checked.returncode == 0, checked.stdout[-2000:]
    assert "AnsiballZ" not in checked.stdout + checked.stderr and not (tmp_path / "adhoc").exists()
    # The YAML callback of ansible.cfg prints the task result.
    assert "\n    incomplete: []\n" in checked.stdout and "localhost | SUCCESS" in checked.stdout
    real = _run_record_task(tmp_path)
    assert real.returncode == 0 and "AnsiballZ" not in real.stdout + real.stderr, real.stdout[-2000:]
    assert "localhost | CHANGED" in real.stdout and "\n    window_difference_s: 0.2\n" in real.stdout
    host = json.loads((tmp_path / "adhoc" / "hosts" / "h1.json").read_text())
    assert (host["status"], host["capture"]) == ("ok", CAPTURE_OK)
    again = _run_record_task(tmp_path)
    assert again.returncode == 2
    assert f"Failed to write run {tmp_path}/adhoc: run directory {tmp_path}/adhoc already exists" in again.stdout


def test_the_report_task_renders_in_the_controller_process_and_fails_with_the_reason(tmp_path):
    """dropscope.drops.report runs `dropscope report` itself (no module payload, no shell): it writes the
    report of a real run directory, and a directory that is not a run fails the task with dropscope's reason."""
    assert _run_record_task(tmp_path).returncode == 0

    def report(run_dir: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["ansible", "localhost", "-m", "dropscope.drops.report", "-vvv",
                               "-a", json.dumps({"run_dir": run_dir}), *args],
                              cwd=REPO, capture_output=True, text=True, timeout=120)

    checked = report(str(tmp_path / "adhoc"), "--check")
    assert checked.returncode == 0 and "check mode: nothing rendered" in checked.stdout, checked.stdout[-2000:]
    assert not (tmp_path / "adhoc" / "report.json").exists()
    rendered = report(str(tmp_path / "adhoc"))
    assert rendered.returncode == 0 and "AnsiballZ" not in rendered.stdout + rendered.stderr, rendered.stdout[-2000:]
    assert [host["host"] for host in json.loads((tmp_path / "adhoc" / "report.json").read_text())["hosts"]] == ["h1"]
    assert (tmp_path / "adhoc" / "report.html").exists()
    (tmp_path / "not-a-run").mkdir()
    refused = report(str(tmp_path / "not-a-run"))
    assert refused.returncode == 2
    assert (f"dropscope report {tmp_path}/not-a-run failed (exit 2): dropscope report: {tmp_path}/not-a-run/"
            "manifest.json: file is missing") in " ".join((refused.stdout + refused.stderr).split())
