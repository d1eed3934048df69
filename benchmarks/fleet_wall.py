"""Wall time and controller CPU of the diagnose playbook against its floor, on a lab of 3, 10 and 30 hosts.

    python3 benchmarks/fleet_wall.py [--sizes 3,10,30] [--duration 5]

For each size it builds a lab (`tests/support/lab up`, name `dsbench`, 198.18.5.0/24), runs the floor play
(benchmarks/floor.yml: the same number of tasks, a plain `sleep DURATION` as the capture) and the real
diagnose playbook once per backend (default: auto, which is bpftrace here, and perf) in the same run,
and prints wall time, wall/floor ratio and controller CPU per host.
Controller CPU is the CPU time of ansible-playbook and its children (workers, ssh clients); the lab
hosts' own work (sshd, modules, perf) is not in it. Needs root. Lab hosts share this machine's cores
with the controller, so from 10 hosts up the wall time also measures the hosts' CPU.
"""

from __future__ import annotations

import argparse
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


def _timed(argv: list[str]) -> tuple[float, float, int]:
    """(wall s, controller CPU s, exit code) of one ansible-playbook run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        print(proc.stdout[-2000:], file=sys.stderr)
    return wall, cpu, proc.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="3,10,30")
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--backends", default="auto,perf")
    args = parser.parse_args()
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        _lab("down", *LAB)
        try:
            inventory = _lab("up", "--hosts", str(size), *LAB, "--subnet", "198.18.5.0/24").split()[-1]
            with tempfile.TemporaryDirectory() as runs:
                common = ["-i", inventory, "-e", f"duration={args.duration}", "-f", str(max(size, 5))]
                floor = _timed(["ansible-playbook", "benchmarks/floor.yml", *common])
                for backend in args.backends.split(","):
                    diagnose = _timed(["ansible-playbook", "playbooks/diagnose-drops.yml", *common,
                                       "-e", f"backend={backend}", "-e", f"runs_dir={runs}", "-e", f"run_id={backend}"])
                    hosts_dir = Path(runs, backend, "hosts")
                    size_kb = sum(p.stat().st_size for p in hosts_dir.glob("*.json")) / size / 1024
                    rows.append((size, backend, floor, diagnose, size_kb))
        finally:
            _lab("down", *LAB)
    print(f"capture {args.duration} s; CPU = controller (ansible-playbook and its children), per host")
    print("| hosts | backend | floor wall s | diagnose wall s | wall / floor | floor CPU s/host "
          "| diagnose CPU s/host | result KiB/host |")
    print("|---|---|---|---|---|---|---|---|")
    for size, backend, floor, diagnose, size_kb in rows:
        status = "" if floor[2] == diagnose[2] == 0 else f" (exit {floor[2]}/{diagnose[2]})"
        print(f"| {size} | {backend} | {floor[0]:.1f} | {diagnose[0]:.1f} | {diagnose[0] / floor[0]:.2f} | "
              f"{floor[1] / size:.2f} | {diagnose[1] / size:.2f} | {size_kb:.0f}{status} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
