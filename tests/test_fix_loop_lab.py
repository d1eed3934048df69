"""The loop on the lab (issue 12): diagnose → `dropscope fix` → `ansible-playbook fix.yml` → diagnose → compare.

A UDP receiver on h1 whose socket takes the default buffer (net.core.rmem_default, 212992 B here) never
reads; a burst of BURST datagrams overflows it (SOCKET_RCVBUFF). `dropscope fix` proposes a larger
default from the measured drop rate; `ansible-playbook fix.yml --check --diff` on the lab shows the change
for h1 only and changes nothing; applied (`-e dropscope_apply=true`) it raises the value; the receiver is
restarted (a socket takes the default when it is created, as fix.yml says); the same burst now fits; the
second run has no receive-buffer finding on h1 and `dropscope compare` exits 0.

net.core.rmem_default and rmem_max are one value per kernel on 6.18 (a network namespace shows them
read-only, docs/drops.md): on a container or namespace host the change belongs on the machine. So the
check-mode run goes to the lab hosts over SSH, and the applying run to h1 mapped onto this machine
(`ansible_connection=local`), where the kernel takes it. The test saves both values first and restores
them, and keeps the sysctl file under its tmp_path (`-e dropscope_sysctl_file`), never in /etc.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, run_playbook_injecting
from dropscope.advice import power_of_two_at_least
from dropscope_lab.traffic import send_udp

pytestmark = pytest.mark.lab

DURATION = 3
BURST = 1000  # datagrams of 64 B: 256 fit the default 212992 B (832 B each in the kernel), all fit 1 MiB
PORT = 9200
SYSCTLS = ("net.core.rmem_default", "net.core.rmem_max")


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def _receiver(netns: str, address: str) -> tuple[subprocess.Popen, int]:
    """The never-reading receiver with the default buffer in NETNS: (process, its socket's SO_RCVBUF)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests" / "support")}
    proc = subprocess.Popen(
        ["ip", "netns", "exec", netns, sys.executable, "-m", "dropscope_lab.traffic", "receive", "--bind", address,
         "--port", str(PORT), "--rcvbuf", "0", "--lifetime", "300"],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 10.0)
    line = proc.stdout.readline() if ready else b""
    assert line, "the receiver did not start"
    return proc, int(json.loads(line)["rcvbuf"])


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


def _dropscope(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dropscope", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip


def _ansible_playbook(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ansible-playbook", *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          check=False)  # fmt: skip


def _rcvbuf_finding(report: dict, host: str) -> dict | None:
    findings = next(h for h in report["hosts"] if h["host"] == host)["findings"]
    return next((f for f in findings if f["key"] == "SOCKET_RCVBUFF" and f["attribution"] == "host"), None)


def test_apply_rerun_compare(lab3, tmp_path):
    h1 = lab3["hosts"]["h1"]
    saved = {name: _sysctl_path(name).read_text() for name in SYSCTLS}
    default = int(saved["net.core.rmem_default"])
    runs = tmp_path / "runs"
    sysctl_file = tmp_path / "90-dropscope.conf"
    receiver = None
    try:
        receiver, rcvbuf = _receiver(h1["netns"], h1["address"])
        assert rcvbuf == default  # the socket takes the default

        def burst() -> dict:
            return {"sent": send_udp(h1["address"], PORT, BURST, timeout=10)}

        before = run_playbook_injecting(lab3, burst, "-e", f"duration={DURATION}", runs_dir=runs, run_id="before")
        assert before["rc"] == 0, before["output"][-4000:]
        assert before["injected"]["sent"] == BURST
        report = json.loads((runs / "before" / "report.json").read_text())
        finding = _rcvbuf_finding(report, "h1")
        assert finding is not None and finding["severity"] == "problem", finding
        knobs = {knob["name"]: knob for knob in finding["knobs"]}
        rate = finding["evidence"]["rate"]
        expected = power_of_two_at_least(max(default + rate * 1.0 * 2304, 2 * default))  # knobs.yml's buffer rule
        assert knobs["net.core.rmem_default"]["value"] == str(default)
        assert knobs["net.core.rmem_default"]["proposed"] == str(expected), knobs["net.core.rmem_default"]
        assert expected >= BURST * 832  # the burst fits the proposed buffer

        fixed = _dropscope("fix", str(runs / "before"))
        assert fixed.returncode == 0, fixed.stderr
        playbook = runs / "before" / "fix.yml"
        assert _ansible_playbook("--syntax-check", "-i", lab3["inventory"], str(playbook)).returncode == 0

        # Check mode on the lab hosts: the diff for h1, nothing for h2 and h3, nothing written.
        check = _ansible_playbook("-i", lab3["inventory"], str(playbook), "--check", "--diff",
                                  "-e", f"dropscope_sysctl_file={sysctl_file}")  # fmt: skip
        assert check.returncode == 0, check.stdout + check.stderr
        assert f"+net.core.rmem_default = {expected}" in check.stdout
        recap = {line.split()[0]: line for line in check.stdout.splitlines() if " : ok=" in line}
        assert "changed=2" in recap["h1"] and "skipped=3" in recap["h2"] and "skipped=3" in recap["h3"], recap
        assert int(_sysctl_path("net.core.rmem_default").read_text()) == default and not sysctl_file.exists()

        # Applied where the kernel keeps the value (see the module doc).
        local = tmp_path / "machine.ini"
        local.write_text(f"h1 ansible_connection=local ansible_python_interpreter={sys.executable}\n")
        applied = _ansible_playbook("-i", str(local), str(playbook), "-e", "dropscope_apply=true",
                                    "-e", f"dropscope_sysctl_file={sysctl_file}")  # fmt: skip
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert int(_sysctl_path("net.core.rmem_default").read_text()) == expected
        assert sysctl_file.read_text() == f"net.core.rmem_default = {expected}\n"
        again = _ansible_playbook("-i", str(local), str(playbook), "-e", "dropscope_apply=true",
                                  "-e", f"dropscope_sysctl_file={sysctl_file}")  # fmt: skip
        assert again.returncode == 0 and "changed=0" in again.stdout  # idempotent: already raised

        _stop(receiver)  # the application re-opens its socket and takes the new default
        receiver, rcvbuf = _receiver(h1["netns"], h1["address"])
        assert rcvbuf == expected

        after = run_playbook_injecting(lab3, burst, "-e", f"duration={DURATION}", runs_dir=runs, run_id="after")
        assert after["rc"] == 0, after["output"][-4000:]
        report = json.loads((runs / "after" / "report.json").read_text())
        assert _rcvbuf_finding(report, "h1") is None  # every datagram of the burst fit
        h1_after = next(h for h in report["hosts"] if h["host"] == "h1")
        assert "udp-rcvbuf" not in json.dumps(h1_after["drop_counters"])

        compared = _dropscope("compare", str(runs / "before"), str(runs / "after"))
        assert compared.returncode == 0, compared.stdout + compared.stderr
        comparison = json.loads((runs / "after" / "compare.json").read_text())
        h1_change = next(host for host in comparison["hosts"] if host["host"] == "h1")
        assert h1_change["change"] == "better" and h1_change["after_verdict"] == "ok"
        assert [item["key"] for item in h1_change["findings"]["vanished"]] == ["SOCKET_RCVBUFF"]
    finally:
        _stop(receiver)
        for name, value in saved.items():
            _sysctl_path(name).write_text(value)
        assert {name: _sysctl_path(name).read_text() for name in SYSCTLS} == saved
