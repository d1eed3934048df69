"""The diagnose playbook against the least a fleet run can cost, on a lab of 3, 10 and 30 hosts.

    python3 benchmarks/fleet_wall.py [--sizes 3,10,30] [--duration 5] [--backends auto,perf]

For each size it builds a lab (`tests/support/lab up`, name `dsbench`, 198.18.5.0/24) and runs, in the same
invocation and with the same inventory and forks, the floor `ansible all -m command -a "sleep DURATION"`
and the real diagnose playbook once per backend (default: auto, which is bpftrace here, and perf). It
prints wall time and wall / floor, controller CPU per host (ansible-playbook or ansible and their
children: workers, ssh clients) and host CPU per host beyond the floor's (the whole machine's CPU from
/proc/stat minus the controller's: sshd, modules, tracers). Goals (issue 11): wall <= 2.0x the floor,
controller <= 0.25 s/host, host CPU <= 1.2 s/host beyond the floor. Needs root and a quiet machine: lab
hosts share this machine's cores with the controller, so from 10 hosts up the wall time also measures
the hosts' CPU.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAB = ["--name", "dsbench"]


def _lab(*args: str) -> str:
    """`tests/support/lab ARGS` (the lab is a development tool of the repository); returns its output."""
    return subprocess.run([sys.executable, str(REPO / "tests" / "support" / "lab"), *args], check=True,
                          capture_output=True, text=True, cwd=REPO).stdout


GOALS = {"wall / floor": 2.0, "controller s/host": 0.25, "host CPU s/host beyond floor": 1.2}


def _machine_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy (all cores; /proc/stat, idle and iowait left out)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    busy = sum(fields) - fields[3] - fields[4] - sum(fields[7:8])  # minus idle, iowait, steal
    return busy / os.sysconf("SC_CLK_TCK")


def _timed(argv: list[str]) -> tuple[float, float, float, int]:
    """(wall s, controller CPU s, machine CPU s, exit code) of one run of the controller command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    machine = _machine_cpu_s()
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    wall = time.monotonic() - started
    machine = _machine_cpu_s() - machine
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        print(proc.stdout[-2000:], file=sys.stderr)
    return wall, cpu, machine, proc.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="3,10,30")
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--backends", default="auto,perf")
    args = parser.parse_args()
    # Bytecode as a pip install leaves it (this sandbox sets PYTHONDONTWRITEBYTECODE, so the repository's
    # own modules would otherwise be compiled from source by every dropscope process of every run).
    subprocess.run([sys.executable, "-m", "compileall", "-q", "report/dropscope", "collections"], cwd=REPO,
                   check=True, capture_output=True)
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        _lab("down", *LAB)
        try:
            inventory = _lab("up", "--hosts", str(size), *LAB, "--subnet", "198.18.5.0/24").split()[-1]
            with tempfile.TemporaryDirectory() as runs:
                forks = ["-f", str(max(size, 5))]
                floor = _timed(["ansible", "all", "-i", inventory, *forks, "-m", "ansible.builtin.command",
                                "-a", f"sleep {args.duration}"])
                common = ["-i", inventory, "-e", f"duration={args.duration}", *forks]
                for backend in args.backends.split(","):
                    diagnose = _timed(["ansible-playbook", "playbooks/diagnose-drops.yml", *common,
                                       "-e", f"backend={backend}", "-e", f"runs_dir={runs}", "-e", f"run_id={backend}"])
                    hosts_dir = Path(runs, backend, "hosts")
                    size_kb = sum(p.stat().st_size for p in hosts_dir.glob("*.json")) / size / 1024
                    rows.append((size, backend, floor, diagnose, size_kb))
        finally:
            _lab("down", *LAB)
    print(f"capture {args.duration} s; floor: ansible all -m command -a 'sleep {args.duration}'; per host: "
          "controller CPU, and host CPU (machine minus controller) beyond the floor's")
    print("| hosts | backend | floor wall s | diagnose wall s | wall / floor | floor controller s/host "
          "| controller s/host | host CPU s/host beyond floor | result KiB/host |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size, backend, floor, diagnose, size_kb in rows:
        status = "" if floor[3] == diagnose[3] == 0 else f" (exit {floor[3]}/{diagnose[3]})"
        host_beyond = ((diagnose[2] - diagnose[1]) - (floor[2] - floor[1])) / size
        measured = {"wall / floor": diagnose[0] / floor[0], "controller s/host": diagnose[1] / size,
                    "host CPU s/host beyond floor": host_beyond}
        met = ", ".join(f"{name} {'met' if value <= GOALS[name] else 'NOT met'}" for name, value in measured.items())
        print(f"| {size} | {backend} | {floor[0]:.1f} | {diagnose[0]:.1f} | {diagnose[0] / floor[0]:.2f} | "
              f"{floor[1] / size:.2f} | {diagnose[1] / size:.2f} | {host_beyond:.2f} | {size_kb:.0f}{status} |")
        print(f"  goals at {size} hosts, {backend}: {met}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
