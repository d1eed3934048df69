"""Faults on a real lab: check mode, every way a capture's controller, session or module dies, the
network cut, hostile names.

Each test fails if the protection it checks is removed: no guardian, or a guardian that does not watch
the SSH channel → the tracer outlives a killed or interrupted controller; no keepalives → the cut host
hangs the play; no escaping → markup runs in the report.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import captures_ready, start_playbook, wait_for_captures

pytestmark = pytest.mark.lab

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


# ------------------------------------------------------------------ every way of dying, clean within 5 s
#
# Each test starts a real 120 s capture on every lab host, ends it one way (the controller's process tree
# SIGKILLed, Ctrl-C, the module SIGKILLed, the SSH ControlPersist master killed), and asserts that every
# host is clean within CLEAN_BOUND_S of that moment: no process but sshd, no capture temp dir, no Ansible
# payload dir, no ftrace instance, tracefs mounts as before. Times are printed (pytest -s).

LONG_S = 120
CLEAN_BOUND_S = 5.0


def _netns_inodes(lab: dict) -> dict[int, str]:
    return {os.stat(f"/run/netns/{host['netns']}").st_ino: name for name, host in lab["hosts"].items()}


def _sshd_listener(host: dict) -> int:
    """The host's sshd listener (its first process): its mount namespace is the one its sessions get."""
    pids = subprocess.run(["ip", "netns", "pids", host["netns"]], capture_output=True, text=True).stdout.split()
    return min(int(pid) for pid in pids)


def _host_tracefs_mounts(lab: dict) -> dict[str, list[str]]:
    """Per lab host, the tracefs mounts its sshd (and so a module it runs) sees in its mount namespace."""
    found = {}
    for name, host in lab["hosts"].items():
        mounts = Path(f"/proc/{_sshd_listener(host)}/mounts").read_text().splitlines()
        found[name] = sorted(line.split()[1] for line in mounts if line.split()[2:3] == ["tracefs"])
    return found


# The kernel's ftrace instances, listed through a tracefs mounted in a private mount namespace (the
# test's own mounts stay as they are, whoever else mounts tracefs meanwhile).
LIST_INSTANCES = ("mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null;"
                  " ls /sys/kernel/tracing/instances")


REMOVE_INSTANCE = ("mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null;"
                   " echo 0 > /sys/kernel/tracing/instances/$1/events/skb/kfree_skb/enable;"
                   " rmdir /sys/kernel/tracing/instances/$1")


def _instances() -> set[str]:
    listed = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", LIST_INSTANCES],
                            capture_output=True, text=True, check=True).stdout.split()
    return {name for name in listed if name.startswith("dropscope-")}


def _ansible_tmp(pids: set[int]) -> set[str]:
    """~/.ansible/tmp/ansible-tmp-TIME-PID-RANDOM directories made by one of `pids` (the run's processes)."""
    return {str(p) for p in (Path.home() / ".ansible" / "tmp").glob("ansible-tmp-*")
            if p.name.split("-")[3:4] and p.name.split("-")[3].isdigit() and int(p.name.split("-")[3]) in pids}


def _process_tree(root: int) -> dict[int, int]:
    """Every process in ROOT's session or descending from ROOT, as pid -> process group."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry.name)] = (int(fields[1]), int(fields[2]), int(fields[3]))  # ppid, pgrp, session
    tree = {pid for pid, (_ppid, _pgrp, sid) in stats.items() if sid == root}
    tree.add(root)
    grew = True
    while grew:
        more = {pid for pid, (ppid, _pgrp, _sid) in stats.items() if ppid in tree} - tree
        tree |= more
        grew = bool(more)
    return {pid: stats[pid][1] for pid in tree if pid in stats}


class LongCapture:
    """A real playbook run with a LONG_S capture live on every lab host, and what it holds there."""

    def __init__(self, lab: dict, tmp_path: Path, run_id: str, *extra: str, inventory: str | None = None):
        self.lab = lab
        self.mounts_before = _host_tracefs_mounts(lab)
        self.dirs_before = set(Path("/tmp").glob("dropscope-capture-*"))
        self.dirs: dict[str, str] = {}
        self.payloads: dict[str, str] = {}
        self.instances: dict[str, set[str]] = {}
        # Every host captures LONG_S, or what its host variable `duration` says in INVENTORY.
        duration = () if inventory else ("-e", f"duration={LONG_S}")
        self.playbook = start_playbook(inventory or lab["inventory"], *duration, *extra, runs_dir=tmp_path,
                                       run_id=run_id)

    def wait_live(self) -> None:
        """Wait until every host's capture is live; note its dir and (from the guard's `payload` and `dirs`)
        its Ansible payload dir and ftrace instances, the playbook's processes and the hosts' mounts."""
        wait_for_captures(self.lab, self.playbook)
        inodes = _netns_inodes(self.lab)
        deadline = time.monotonic() + 30
        while len(self.dirs) < len(self.lab["hosts"]):
            assert time.monotonic() < deadline and self.playbook.poll() is None, "captures did not all start"
            for path in set(Path("/tmp").glob("dropscope-capture-*")) - self.dirs_before:
                try:
                    host = inodes.get(int((path / "ready").read_text().strip() or 0))
                    payload = (path / "payload").read_text().strip()
                    registered = (path / "dirs").read_text().split()
                except (OSError, ValueError):
                    continue
                if host:
                    self.dirs[host], self.payloads[host] = str(path), payload
                    self.instances[host] = {os.path.basename(p) for p in registered if "/instances/" in p}
            time.sleep(0.05)
        assert all(self.payloads.values()), f"each module runs from an Ansible payload dir: {self.payloads}"
        self.tree = _process_tree(self.playbook.pid)
        self.mounts_during = _host_tracefs_mounts(self.lab)

    def left_on(self, host: str) -> list[str]:
        """What HOST still has of this capture (empty when clean)."""
        left = _host_processes(self.lab)[host]
        left += [path for path in (self.dirs[host], self.payloads[host]) if os.path.exists(path)]
        left += sorted(self.instances[host] & _instances())
        mounts = _host_tracefs_mounts(self.lab)[host]
        if mounts != self.mounts_before[host]:
            left.append(f"tracefs mounts {mounts} (before: {self.mounts_before[host]})")
        return left

    def left_anywhere(self) -> list[str]:
        """What the run left that belongs to no one host: Ansible remote tmp dirs of its processes."""
        return sorted(_ansible_tmp(set(self.tree)))

    def wait_clean(self, event: float, hosts: list[str] | None = None) -> dict[str, float]:
        """Seconds from EVENT until each host was clean; fails listing what was left after CLEAN_BOUND_S."""
        hosts = hosts or sorted(self.lab["hosts"])
        clean: dict[str, float] = {}
        while True:
            now = time.monotonic()
            for host in hosts:
                if host not in clean and not self.left_on(host):
                    clean[host] = round(time.monotonic() - event, 2)
            if len(clean) == len(hosts) and not self.left_anywhere():
                break
            if now - event > CLEAN_BOUND_S:
                left = {host: self.left_on(host) for host in hosts if host not in clean}
                raise AssertionError(f"not clean {CLEAN_BOUND_S} s after the event: {left}, "
                                     f"anywhere: {self.left_anywhere()}")
            time.sleep(0.1)
        print(f"clean after (s): {clean}")
        return clean

    def kill_tree(self) -> None:
        """SIGKILL every process of the controller at once (as a cancelled CI job or AWX container)."""
        tree = _process_tree(self.playbook.pid)
        while True:  # freeze, so nothing forks past the snapshot
            for pid in tree:
                try:
                    os.kill(pid, signal.SIGSTOP)
                except ProcessLookupError:
                    pass
            again = _process_tree(self.playbook.pid)
            if set(again) <= set(tree):
                break
            tree = again
        for pgid in set(tree.values()):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in tree:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def finish(self) -> str:
        """Wait for the playbook (killed: reaped at once); returns its output."""
        try:
            output, _ = self.playbook.communicate(timeout=60)
        finally:
            if self.playbook.poll() is None:
                self.kill_tree()
                self.playbook.wait()
        return output or ""


@pytest.fixture
def long_capture(lab3, tmp_path):
    """Start LongCapture(run_id, *extra) on the lab; whatever a failed test left is removed afterwards."""
    started: list[LongCapture] = []

    def start(run_id: str, *extra: str, inventory: str | None = None) -> LongCapture:
        started.append(LongCapture(lab3, tmp_path, run_id, *extra, inventory=inventory))
        started[-1].wait_live()
        return started[-1]

    yield start
    for run in started:
        if run.playbook.poll() is None:
            run.kill_tree()
            run.playbook.wait()
        # A failure must not spill into the next test: stop what is left on the hosts.
        for host in lab3["hosts"].values():
            for pid in subprocess.run(["ip", "netns", "pids", host["netns"]], capture_output=True,
                                      text=True).stdout.split():
                try:
                    if Path(f"/proc/{pid}/comm").read_text().strip() != "sshd":
                        os.kill(int(pid), signal.SIGKILL)
                except (OSError, ValueError):
                    pass
        for name, mounts in _host_tracefs_mounts(lab3).items():
            listener = str(_sshd_listener(lab3["hosts"][name]))
            for mount in sorted(set(mounts) - set(run.mounts_before[name])):
                subprocess.run(["nsenter", "-t", listener, "-m", "umount", mount], check=False)
        for path in [*run.dirs.values(), *run.payloads.values()]:
            shutil.rmtree(path, ignore_errors=True)
        for name in sorted(set().union(*run.instances.values()) & _instances()):
            subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", REMOVE_INSTANCE, "-", name],
                           check=False)


# become: the module runs under sudo (as production runs capture), between the SSH channel and the module;
# Ansible skips become from root to root unless told not to.
@pytest.mark.parametrize("backend, become", [("auto", False), ("perf", False), ("auto", True)])
def test_controller_tree_killed_every_host_is_clean_within_5_s(long_capture, tmp_path, monkeypatch, backend, become):
    """SIGKILL of ansible-playbook, its workers and their ssh clients at once; the ControlPersist masters
    live on, so each host learns it only from its stdout (the SSH channel) hanging up."""
    if become:
        if not shutil.which("sudo"):
            pytest.fail("sudo is missing: .ci/install installs it (become is how production runs capture)")
        monkeypatch.setenv("ANSIBLE_BECOME_ALLOW_SAME_USER", "1")
    run = long_capture("killed", "-e", f"backend={backend}", *(["-e", "become_root=true"] if become else []))
    under_sudo = {name: any(command.startswith("sudo ") for command in commands)
                  for name, commands in _host_processes(run.lab).items()}
    assert under_sudo == {name: become for name in run.lab["hosts"]}, under_sudo
    run.kill_tree()
    event = time.monotonic()
    run.wait_clean(event)
    run.finish()
    assert not (tmp_path / "killed").exists(), "a killed run must not leave a run directory"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".killed")], "nor a half-written one"


def test_ctrl_c_every_host_is_clean_within_5_s(long_capture):
    """SIGINT to ansible-playbook's process group, as Ctrl-C sends it (the workers have groups of their own)."""
    run = long_capture("interrupted")
    os.killpg(run.playbook.pid, signal.SIGINT)
    event = time.monotonic()
    try:
        run.playbook.wait(timeout=3)
    except subprocess.TimeoutExpired:
        os.killpg(run.playbook.pid, signal.SIGINT)  # Ansible waits for its tasks: Ctrl-C again
    run.wait_clean(event)
    output = run.finish()
    assert "User interrupted execution" in output, output[-2000:]


def _control_masters(lab: dict) -> list[int]:
    """The ssh ControlPersist masters (`ssh: PATH [mux]`) connected to the lab's hosts."""
    masters = set()
    for host in lab["hosts"].values():
        ss = subprocess.run(["ss", "-Htnp", "state", "established", "dst", f"{host['address']}:22"],
                            capture_output=True, text=True).stdout
        for pid in re.findall(r"pid=(\d+)", ss):
            try:
                if "[mux]" in Path(f"/proc/{pid}/cmdline").read_text():
                    masters.add(int(pid))
            except OSError:
                pass
    return sorted(masters)


def test_ssh_session_closed_every_host_is_clean_within_5_s(long_capture, lab3):
    """The ssh ControlPersist masters killed: every SSH session ends; the tracefs backend's ftrace
    instance and the tracefs mount the module made go with the rest."""
    run = long_capture("session", "-e", "backend=tracefs")
    assert all(run.instances.values()), f"the tracefs backend captures in an ftrace instance: {run.instances}"
    assert all(run.mounts_during[host] != run.mounts_before[host] for host in lab3["hosts"]), (
        "the module mounts tracefs on the lab's hosts (their mount namespaces have none)", run.mounts_during)
    masters = _control_masters(lab3)
    assert len(masters) == len(lab3["hosts"]), masters
    for pid in masters:
        os.kill(pid, signal.SIGKILL)
    event = time.monotonic()
    run.wait_clean(event)
    output = run.finish()
    assert run.playbook.returncode != 0, output[-2000:]
    # Ansible does not run the capture again on a new connection: nothing came back.
    assert not run.left_anywhere() and not any(_host_processes(lab3).values()), _host_processes(lab3)


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


def test_module_killed_on_a_host_fails_that_host_and_its_guardian_cleans_up(lab3, long_capture, tmp_path):
    """SIGKILL of the capture module itself on h3: its guardian sees end-of-file on its pipe and cleans
    up h3 within 5 s; the other hosts capture 3 s (a host variable) so the run ends and says h3 failed."""
    inventory = tmp_path / "mixed.ini"
    lines = Path(lab3["inventory"]).read_text().splitlines()
    inventory.write_text("\n".join(
        f"{line} duration={LONG_S if line.startswith('h3 ') else 3}" if re.match(r"h\d+ ", line) else line
        for line in lines) + "\n")
    run = long_capture("modkill", inventory=str(inventory))
    netns = lab3["hosts"]["h3"]["netns"]
    # The module and its guardian are both Python; the guardian is in a session of its own.
    module = [pid for pid in _module_pids(netns) if os.getsid(pid) != pid]
    assert module, "no capture module found on h3"
    for pid in module:
        os.kill(pid, signal.SIGKILL)
    event = time.monotonic()
    run.wait_clean(event, hosts=["h3"])
    output = run.finish()
    assert run.playbook.returncode == 2, output[-3000:]
    manifest = json.loads((tmp_path / "modkill" / "manifest.json").read_text())
    statuses = {entry["host"]: entry["status"] for entry in manifest["hosts"]}
    assert statuses == {"h1": "ok", "h2": "ok", "h3": "failed"}
    h3 = next(entry for entry in manifest["hosts"] if entry["host"] == "h3")
    assert h3["error"].startswith("capture: ")


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
    # One module run reads the counters and captures: nothing came back from h2, its counters neither.
    assert h2["error"].startswith("capture: ") and h2["before"] is None
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
    assert sorted(p.name for p in runs_dir.iterdir()) == ["history.sqlite", "hostile"]  # the run history beside it
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
