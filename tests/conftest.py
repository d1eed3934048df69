"""Shared pytest fixtures for dropscope's tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# --------------------------------------------------------------------------------------- lab fleet

# Two test runs on one machine must not share a lab: each `lab3` starts by removing its name's lab.
LAB3_NAME = os.environ.get("DROPSCOPE_TEST_LAB", "dstest")
LAB3_SUBNET = os.environ.get("DROPSCOPE_TEST_SUBNET", "198.18.1.0/24")


def run_dropscope(*args: str, check: bool = True, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run `python -m dropscope ARGS` with this interpreter; raise with its output if CHECK and it fails."""
    proc = subprocess.run([sys.executable, "-m", "dropscope", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"dropscope {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return proc


def lab_can_run() -> str | None:
    """Why a lab cannot be built here (None if it can)."""
    if os.geteuid() != 0:
        return "the lab needs root"
    missing = [tool for tool in ("ip", "tc", "nft", "bridge", "unshare", "ssh", "ssh-keygen") if not shutil.which(tool)]
    if not Path("/usr/sbin/sshd").exists():
        missing.append("sshd")
    return f"missing {', '.join(missing)}" if missing else None


@pytest.fixture(scope="session")
def lab3() -> Iterator[dict[str, Any]]:
    """A real 3-host lab (`dstest`, 198.18.1.0/24): parsed lab.json plus "inventory" (path); removed at the end."""
    reason = lab_can_run()
    if reason:
        pytest.fail(f"the lab tests cannot run here: {reason} (run as root after `bash .ci/install`)")
    run_dropscope("lab", "down", "--name", LAB3_NAME)  # whatever a crashed session left behind
    try:
        up = run_dropscope("lab", "up", "--hosts", "3", "--name", LAB3_NAME, "--subnet", LAB3_SUBNET)
        inventory = Path(up.stdout.strip().splitlines()[-1])
        lab = json.loads((inventory.parent / "lab.json").read_text())
        lab["inventory"] = str(inventory)
        yield lab
    finally:
        down = run_dropscope("lab", "down", "--name", LAB3_NAME, check=False)
        assert down.returncode == 0, down.stderr


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
