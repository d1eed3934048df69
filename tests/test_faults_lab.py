"""Faults on a real lab: check mode, the controller killed mid-capture, the network cut, hostile names.

Each test fails if the protection it checks is removed: no guardian → perf outlives a killed
controller; no keepalives → the cut host hangs the play; no escaping → markup runs in the report.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import captures_ready, start_playbook, wait_for_captures

pytestmark = pytest.mark.lab

TRACING = Path("/sys/kernel/tracing")


def _host_processes(lab: dict) -> dict[str, list[str]]:
    """Per lab host, the commands of its processes other than its sshd listener and sessions."""
    found = {}
    for name, host in lab["hosts"].items():
        pids = subprocess.run(["ip", "netns", "pids", host["netns"]], capture_output=True, text=True).stdout.split()
        commands = []
        for pid in pids:
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z" and comm != "sshd":
                commands.append(" ".join(Path(f"/proc/{pid}/cmdline").read_text().split("\0")).strip() or comm)
        found[name] = commands
    return found


def _capture_dirs() -> set[str]:
    return {str(p) for p in Path("/tmp").glob("dropscope-capture-*")}


def _payload_dirs() -> set[str]:
    """Directories Ansible unpacked dropscope modules into (its wrapper removes them on return)."""
    return {str(p) for p in Path("/tmp").glob("ansible_dropscope.drops.*_payload_*")}


def _tracing_state() -> dict[str, str]:
    state = {}
    for path in (TRACING / "events/skb/kfree_skb/enable", TRACING / "events/skb/kfree_skb/filter"):
        state[str(path)] = path.read_text() if path.exists() else "absent"
    state["instances"] = " ".join(sorted(p.name for p in (TRACING / "instances").glob("*"))) \
        if (TRACING / "instances").exists() else ""
    return state


def _wait_until(predicate, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.2)
    return bool(predicate())


def test_check_mode_runs_the_whole_playbook_without_capturing(lab3, tmp_path):
    playbook = start_playbook(lab3["inventory"], "-e", "duration=2", runs_dir=tmp_path, run_id="check", check=True)
    captures_seen = 0
    while playbook.poll() is None:
        captures_seen = max(captures_seen, captures_ready(lab3))
        time.sleep(0.05)
    output = playbook.stdout.read()
    assert playbook.returncode == 0, output[-3000:]
    assert captures_seen == 0, "check mode started a capture"
    assert "Would capture 2 s of skb:kfree_skb drops on 3 host(s)" in output
    # The command the chosen backend would run (auto picks per host; bpftrace here).
    assert re.search(r"Capture commands: \[.*(bpftrace|perf record)", output, re.S), output[-2000:]
    assert list(tmp_path.iterdir()) == [], "check mode wrote a run directory"


def test_controller_killed_during_capture_leaves_nothing_on_the_hosts(lab3, tmp_path):
    tracing_before = _tracing_state()
    dirs_before = _capture_dirs()
    payloads_before = _payload_dirs()
    duration = 3
    playbook = start_playbook(lab3["inventory"], "-e", f"duration={duration}", runs_dir=tmp_path, run_id="killed")
    wait_for_captures(lab3, playbook)
    dirs_during = _capture_dirs() - dirs_before
    assert len(dirs_during) >= 3, "each host's capture keeps its files in a dropscope-capture-* directory"
    os.killpg(playbook.pid, signal.SIGKILL)
    playbook.wait()
    # Within the capture's own deadline plus a few seconds, every host is as it was.
    assert _wait_until(lambda: not any(_host_processes(lab3).values()), duration + 15), _host_processes(lab3)
    assert _wait_until(lambda: not (dirs_during & _capture_dirs()), 5), dirs_during & _capture_dirs()
    assert _wait_until(lambda: not (_payload_dirs() - payloads_before), 12), _payload_dirs() - payloads_before
    assert _tracing_state() == tracing_before
    assert not (tmp_path / "killed").exists(), "a killed run must not leave a run directory"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".killed")], "nor a half-written one"


def test_network_cut_during_capture_makes_the_host_unreachable_without_hanging(lab3, tmp_path):
    duration = 4
    veth = lab3["hosts"]["h2"]["veth"]
    playbook = start_playbook(lab3["inventory"], "-e", f"duration={duration}", runs_dir=tmp_path, run_id="cut")
    try:
        wait_for_captures(lab3, playbook)
        subprocess.run(["ip", "link", "set", "dev", veth, "down"], check=True)
        cut = time.monotonic()
        output, _ = playbook.communicate(timeout=120)
        waited = time.monotonic() - cut
    finally:
        subprocess.run(["ip", "link", "set", "dev", veth, "up"], check=True)
        if playbook.poll() is None:
            os.killpg(playbook.pid, signal.SIGKILL)
    # SSH keepalives (2 s x 3) give up on h2 a few seconds after the capture would have ended.
    assert waited < duration + 20, f"the play waited {waited:.1f} s after the cut"
    assert playbook.returncode == 2, output[-3000:]
    manifest = json.loads((tmp_path / "cut" / "manifest.json").read_text())
    statuses = {entry["host"]: entry["status"] for entry in manifest["hosts"]}
    assert statuses == {"h1": "ok", "h2": "unreachable", "h3": "ok"}, manifest["hosts"]
    h2 = json.loads((tmp_path / "cut" / "hosts" / "h2.json").read_text())
    assert h2["error"].startswith("capture: ") and h2["before"] is not None
    # h2's own capture still ended and cleaned up by itself, with nobody left to tell it.
    assert _wait_until(lambda: not _host_processes(lab3)["h2"], duration + 15), _host_processes(lab3)


HOSTILE_HOSTS = {
    "h1": "../../etc/x",
    "h2": "web 01 <img src=x onerror=window.__pwned=1>",
    "h3": "h\u00e9llo\u2603 <b>x\"'$(id)",
}
HOSTILE_INTERFACES = ['<b>x"', "a'$(id)"]


def test_hostile_host_and_interface_names(lab3, tmp_path, chromium_page):
    inventory = tmp_path / "hostile.yml"
    lab_vars = {}
    for line in Path(lab3["inventory"]).read_text().split("[lab:vars]", 1)[1].splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            lab_vars[key.strip()] = value.strip().strip("'")
    hosts = {name: {"ansible_host": lab3["hosts"][lab_name]["address"]} for lab_name, name in HOSTILE_HOSTS.items()}
    inventory.write_text(yaml.safe_dump({"all": {"children": {"lab": {"hosts": hosts, "vars": lab_vars}}}}))
    runs_dir = tmp_path / "runs"
    netns = lab3["hosts"]["h1"]["netns"]
    playbook = start_playbook(str(inventory), "-e", "duration=3", runs_dir=runs_dir, run_id="hostile")
    try:
        wait_for_captures(lab3, playbook)
        # Interfaces with markup and shell syntax in their names appear on h1 during the run.
        subprocess.run(["ip", "-n", netns, "link", "add", HOSTILE_INTERFACES[0], "type", "veth",
                        "peer", "name", HOSTILE_INTERFACES[1]], check=True)
        output, _ = playbook.communicate(timeout=120)
    finally:
        subprocess.run(["ip", "-n", netns, "link", "del", HOSTILE_INTERFACES[0]], check=False)
        if playbook.poll() is None:
            os.killpg(playbook.pid, signal.SIGKILL)
    assert playbook.returncode == 0, output[-3000:]
    # Nothing is written outside the run directory, whatever the host names.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hostile.yml", "runs"]
    assert sorted(p.name for p in runs_dir.iterdir()) == ["hostile"]
    run_dir = runs_dir / "hostile"
    for path in (run_dir / "hosts").iterdir():
        assert path.resolve().parent == (run_dir / "hosts").resolve()
    assert not Path("/etc/x.json").exists()
    report = json.loads((run_dir / "report.json").read_text())
    by_host = {host["host"]: host for host in report["hosts"]}
    assert sorted(by_host) == sorted(HOSTILE_HOSTS.values())
    assert all(host["status"] == "ok" for host in by_host.values())
    assert sorted(by_host["../../etc/x"]["appeared"]["interfaces"]) == sorted(HOSTILE_INTERFACES)

    page, errors = chromium_page
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto((run_dir / "report.html").as_uri())
    page.wait_for_timeout(300)
    text = page.inner_text("body")
    for name in HOSTILE_HOSTS.values():
        assert name in text, f"{name!r} is not shown literally"
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.evaluate("document.querySelectorAll('img[src=\"x\"]').length") == 0
    assert errors == []
    assert requests == [(run_dir / "report.html").as_uri()]


def _module_pids(netns: str) -> list[int]:
    """The Python processes running an Ansible module in NETNS (pipelined: python reads it from stdin)."""
    pids = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True).stdout.split()
    found = []
    for pid in pids:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]).startswith("python"):
            found.append(int(pid))
    return found


def test_module_killed_on_a_host_fails_that_host_and_its_guardian_cleans_up(lab3, tmp_path):
    """SIGKILL of the capture module itself: perf (20 s) is stopped at once, not when its sleep ends."""
    duration = 20
    netns = lab3["hosts"]["h3"]["netns"]
    dirs_before = _capture_dirs()
    payloads_before = _payload_dirs()
    playbook = start_playbook(lab3["inventory"], "-e", f"duration={duration}", runs_dir=tmp_path, run_id="modkill")
    try:
        wait_for_captures(lab3, playbook)
        # The module and its guardian are both Python; the guardian is in a session of its own.
        module = [pid for pid in _module_pids(netns) if os.getsid(pid) != pid]
        assert module, "no capture module found on h3"
        for pid in module:
            os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        assert _wait_until(lambda: not _host_processes(lab3)["h3"], 5), _host_processes(lab3)["h3"]
        cleaned_in = time.monotonic() - killed
        output, _ = playbook.communicate(timeout=120)
    finally:
        if playbook.poll() is None:
            os.killpg(playbook.pid, signal.SIGKILL)
    assert cleaned_in < 5 < duration
    assert not (_capture_dirs() - dirs_before), "the killed module's temp files are left"
    # Ansible unpacked the module into a payload dir its wrapper would remove; the guardian did it instead.
    assert _wait_until(lambda: not (_payload_dirs() - payloads_before), 12), _payload_dirs() - payloads_before
    assert playbook.returncode == 2, output[-3000:]
    manifest = json.loads((tmp_path / "modkill" / "manifest.json").read_text())
    statuses = {entry["host"]: entry["status"] for entry in manifest["hosts"]}
    assert statuses == {"h1": "ok", "h2": "ok", "h3": "failed"}
    h3 = next(entry for entry in manifest["hosts"] if entry["host"] == "h3")
    assert h3["error"].startswith("capture: ")
