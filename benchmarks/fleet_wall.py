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
import statistics
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


def _close_masters(control_dir: str) -> None:
    """Stop the SSH ControlPersist masters a measured command left (they would serve the next one warm)."""
    for socket in Path(control_dir).iterdir():
        subprocess.run(["ssh", "-o", f"ControlPath={socket}", "-O", "exit", "dropscope-bench"],
                       capture_output=True, timeout=10)


def _timed(argv: list[str]) -> tuple[float, float, float, int]:
    """(wall s, controller CPU s, machine CPU s, exit code) of one run of the controller command.

    Each command starts with no SSH master to reuse (its own ControlPath directory), as a scheduled run
    would: otherwise the first command of a round pays every host's SSH handshake and the next ones not.
    """
    with tempfile.TemporaryDirectory(prefix="dsbench-cp-") as control_dir:
        env = dict(os.environ, ANSIBLE_SSH_CONTROL_PATH_DIR=control_dir)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        machine = _machine_cpu_s()
        started = time.monotonic()
        proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, env=env)
        wall = time.monotonic() - started
        machine = _machine_cpu_s() - machine
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        _close_masters(control_dir)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        print(proc.stdout[-2000:], file=sys.stderr)
    return wall, cpu, machine, proc.returncode


def _cell(per_round: list[dict], name: str, digits: int) -> str:
    """The median of one measure over the rounds, with its range when there are several."""
    values = sorted(r[name] for r in per_round)
    median = statistics.median(values)
    if len(values) == 1:
        return f"{median:.{digits}f}"
    return f"{median:.{digits}f} ({values[0]:.{digits}f}–{values[-1]:.{digits}f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="3,10,30")
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--backends", default="auto,perf")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (floor, then each backend)")
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
                common = ["-i", inventory, "-e", f"duration={args.duration}", *forks]
                measured = {backend: [] for backend in args.backends.split(",")}
                for round_ in range(args.rounds):
                    # Each round: the floor, then every backend right after it (the same minutes' machine).
                    floor = _timed(["ansible", "all", "-i", inventory, *forks, "-m", "ansible.builtin.command",
                                    "-a", f"sleep {args.duration}"])
                    for backend in measured:
                        run_id = f"{backend}-{round_}"
                        diagnose = _timed(["ansible-playbook", "playbooks/diagnose-drops.yml", *common,
                                           "-e", f"backend={backend}", "-e", f"runs_dir={runs}",
                                           "-e", f"run_id={run_id}"])
                        hosts_dir = Path(runs, run_id, "hosts")
                        size_kb = sum(p.stat().st_size for p in hosts_dir.glob("*.json")) / size / 1024
                        measured[backend].append((floor, diagnose, size_kb))
                rows.extend((size, backend, rounds) for backend, rounds in measured.items())
        finally:
            _lab("down", *LAB)
    print(f"capture {args.duration} s; floor: ansible all -m command -a 'sleep {args.duration}'; per host: "
          "controller CPU, and host CPU (machine minus controller) beyond the floor's; each command with cold "
          f"SSH masters; median of {args.rounds} interleaved rounds (range)")
    print("| hosts | backend | floor wall s | diagnose wall s | wall / floor | floor controller s/host "
          "| controller s/host | host CPU s/host beyond floor | result KiB/host |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size, backend, rounds in rows:
        per_round = [{"floor wall": floor[0], "diagnose wall": diagnose[0], "wall / floor": diagnose[0] / floor[0],
                      "floor controller s/host": floor[1] / size, "controller s/host": diagnose[1] / size,
                      "host CPU s/host beyond floor": ((diagnose[2] - diagnose[1]) - (floor[2] - floor[1])) / size,
                      "exit": (floor[3], diagnose[3]), "KiB": size_kb}
                     for floor, diagnose, size_kb in rounds]

        exits = sorted({r["exit"] for r in per_round} - {(0, 0)})
        status = f" (exits {exits})" if exits else ""
        cells = " | ".join(_cell(per_round, name, digits) for name, digits in (
            ("floor wall", 1), ("diagnose wall", 1), ("wall / floor", 2), ("floor controller s/host", 2),
            ("controller s/host", 2), ("host CPU s/host beyond floor", 2)))
        print(f"| {size} | {backend} | {cells} | {statistics.median(r['KiB'] for r in per_round):.0f}{status} |")
        met = ", ".join(f"{name} {'met' if statistics.median(r[name] for r in per_round) <= goal else 'NOT met'}"
                        for name, goal in GOALS.items())
        print(f"  goals at {size} hosts, {backend} (medians): {met}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
