"""Shared pytest fixtures for dropscope's tests."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# --------------------------------------------------------------------------------------- lab fleet

# Two test runs on one machine must not share a lab: each `lab3` starts by removing its name's lab, so the
# name is claimed first (`lab_name`): a second run with the same name fails at once instead of taking the
# first one's lab down mid-test.
LAB3_NAME = os.environ.get("DROPSCOPE_TEST_LAB", "dstest")
LAB3_SUBNET = os.environ.get("DROPSCOPE_TEST_SUBNET", "198.18.1.0/24")
LAB_CLAIMS = Path(tempfile.gettempdir())


# The lab is a development tool (tests/support/dropscope_lab), run as the README says: tests/support/lab.
LAB_TOOL = Path(__file__).resolve().parent / "support" / "lab"


def run_lab(*args: str, check: bool = True, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run `tests/support/lab ARGS` with this interpreter; raise with its output if CHECK and it fails."""
    proc = subprocess.run([sys.executable, str(LAB_TOOL), *args], capture_output=True, text=True,
                          timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"lab {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return proc


def lab_can_run() -> str | None:
    """Why a lab cannot be built here (None if it can)."""
    if os.geteuid() != 0:
        return "the lab needs root"
    missing = [tool for tool in ("ip", "tc", "nft", "bridge", "unshare", "ssh", "ssh-keygen") if not shutil.which(tool)]
    if not Path("/usr/sbin/sshd").exists():
        missing.append("sshd")
    return f"missing {', '.join(missing)}" if missing else None


@contextlib.contextmanager
def claimed_lab_name(name: str, claims: Path = LAB_CLAIMS) -> Iterator[str]:
    """NAME held by this process (an exclusive lock on CLAIMS/dropscope-test-lab-NAME.lock, released when the
    process ends however it ends); fails the test at once when another process holds it."""
    path = claims / f"dropscope-test-lab-{name}.lock"
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            pytest.fail(f"the test lab name {name!r} is in use by {holder}: set DROPSCOPE_TEST_LAB and "
                        "DROPSCOPE_TEST_SUBNET to a lab of this run's own (docs/development.md)")
        handle.truncate(0)
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        try:
            yield name
        finally:
            path.unlink(missing_ok=True)  # the lock goes with the file's last descriptor, closed next


@pytest.fixture(scope="session")
def lab_name() -> Iterator[str]:
    """LAB3_NAME, claimed by this test run for the whole session (see `claimed_lab_name`)."""
    with claimed_lab_name(LAB3_NAME) as name:
        yield name


@pytest.fixture(scope="session")
def lab3(lab_name: str) -> Iterator[dict[str, Any]]:
    """A real 3-host lab (LAB3_NAME, LAB3_SUBNET): parsed lab.json plus "inventory" (path); removed at the end."""
    reason = lab_can_run()
    if reason:
        pytest.fail(f"the lab tests cannot run here: {reason} (run as root after `bash .ci/install`)")
    run_lab("down", "--name", LAB3_NAME)  # whatever a crashed session left behind
    try:
        up = run_lab("up", "--hosts", "3", "--name", LAB3_NAME, "--subnet", LAB3_SUBNET)
        inventory = Path(up.stdout.strip().splitlines()[-1])
        lab = json.loads((inventory.parent / "lab.json").read_text())
        lab["inventory"] = str(inventory)
        yield lab
    finally:
        down = run_lab("down", "--name", LAB3_NAME, check=False)
        assert down.returncode == 0, down.stderr


# ------------------------------------------------------------------------------------ tracefs

def _tracefs_mounts() -> list[str]:
    """The tracefs lines of /proc/mounts (mount point and options): the state a test must leave as found."""
    with open("/proc/mounts", encoding="utf-8") as handle:
        return sorted(" ".join(line.split()[1:4]) for line in handle if line.split()[2:3] == ["tracefs"])


@pytest.fixture(autouse=True)
def tracefs_left_as_found() -> Iterator[None]:
    """Every test leaves the tracefs mounts as it found them (a fresh machine has none mounted).

    A test that passes only because an earlier one mounted tracefs hides a broken fresh install; a test
    (or a capture) that mounts it and forgets to unmount changes what the next test sees.
    """
    before = _tracefs_mounts()
    yield
    after = _tracefs_mounts()
    assert after == before, f"tracefs mounts changed during the test: before {before}, after {after}"


def _run_argv(argv: list[str]) -> tuple[int, str, str]:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def tracefs() -> Iterator[str]:
    """tracefs mounted the way drop_capture mounts it (only if it is not mounted), unmounted afterwards."""
    from ansible_collections.dropscope.drops.plugins.module_utils.snapshot import HostReader
    from ansible_collections.dropscope.drops.plugins.module_utils.tracefs_capture import TracefsMount

    if os.geteuid() != 0:
        pytest.fail("this test needs root to mount tracefs (run as root after `bash .ci/install`)")
    with TracefsMount(HostReader(_run_argv, shutil.which)) as mount:
        if mount.root is None:
            pytest.fail("tracefs is not mounted and could not be mounted")
        yield mount.root


CHROMIUM = os.environ.get("DROPSCOPE_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Chromium from the system (playwright cannot download one here); never skipped."""
    from playwright.sync_api import sync_playwright

    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"Chromium not found at {CHROMIUM}: install it (apt-get install -y chromium) "
                    "or point DROPSCOPE_CHROMIUM at a chromium binary; browser tests must not be skipped")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def chromium_page(browser: Any) -> Iterator[tuple[Any, list[str]]]:
    """A fresh page and the list of page errors and console errors it reports."""
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)
    yield page, errors
    page.close()


# ------------------------------------------------------------------- real playbook runs on the lab

REPO = Path(__file__).resolve().parents[1]


def lab_cli(*args: str) -> dict:
    """Run `tests/support/lab …` on the test lab and return the JSON line it prints last."""
    out = run_lab(*args, "--name", LAB3_NAME, timeout=60).stdout
    lines = [line for line in out.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def _netns_inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def captures_ready(lab: dict) -> int:
    """How many of the lab's hosts have a live capture: its guard wrote `ready` with the host's netns inode."""
    lab_netns = {_netns_inode(f"/run/netns/{host['netns']}") for host in lab["hosts"].values()}
    live = set()
    for marker in Path(tempfile.gettempdir()).glob("dropscope-capture-*/ready"):
        try:
            inode = int(marker.read_text().strip() or 0)
        except (OSError, ValueError):
            continue
        if inode in lab_netns:
            live.add(inode)
    return len(live)


def start_playbook(inventory: str, *extra: str, runs_dir: Path, run_id: str, check: bool = False) -> subprocess.Popen:
    """The real diagnose playbook in its own session (a test can SIGKILL the whole controller at once)."""
    argv = ["ansible-playbook", "playbooks/diagnose-drops.yml", "-i", inventory,
            "-e", f"runs_dir={runs_dir}", "-e", f"run_id={run_id}", *extra]
    if check:
        argv.append("--check")
    return subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def wait_for_captures(lab: dict, playbook: subprocess.Popen, hosts: int = 3, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while captures_ready(lab) < hosts:
        assert playbook.poll() is None, playbook.stdout.read()
        assert time.monotonic() < deadline, f"captures did not start on {hosts} hosts within {timeout} s"
        time.sleep(0.05)


def run_playbook_injecting(lab: dict, inject: Callable[[], dict], *extra: str, runs_dir: Path,
                           run_id: str) -> dict:
    """Run the playbook on the lab, call `inject` once every capture is live, wait for the end.

    Returns the exit code, the output, the wall time and what `inject` returned.
    """
    started = time.monotonic()
    playbook = start_playbook(lab["inventory"], *extra, runs_dir=runs_dir, run_id=run_id)
    try:
        wait_for_captures(lab, playbook)
        injected = inject()
        output, _ = playbook.communicate(timeout=180)
    finally:
        if playbook.poll() is None:
            os.killpg(playbook.pid, signal.SIGKILL)
            playbook.wait()
    return {"rc": playbook.returncode, "output": output, "wall_s": time.monotonic() - started,
            "injected": injected}
