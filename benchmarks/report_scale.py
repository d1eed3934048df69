"""How `dropscope report` scales: time and peak memory for 100, 1,000 and 10,000 synthetic hosts.

    python3 benchmarks/report_scale.py [--sizes 100 1000 10000] [--rounds N] [--keep DIR]

Each size gets a synthetic run directory (tests/support/dropscope_lab/synthetic.py, written by the
collection's run_record as a real run is: realistic counters and 4 drop reasons per host, every 50th host
unreachable, 4 hosts per kernel), then a fresh child process does what `dropscope report` does:
report.json, report.html and the run recorded in a run history (`dropscope.report.write_reports`: slices
of hosts in worker processes, dropscope.pipeline); the child reports its wall time, its CPU time and its
workers' (per host: what the report costs whatever the cores) and its peak resident memory (ru_maxrss).
That is done ROUNDS times (`--rounds`, default 1) with nothing else running, for the time; then once more
while the memory of the child and its workers together is sampled every 20 ms (the sum of their
proportional set sizes, /proc/PID/smaps_rollup: shared pages counted once), and the peak of that sum is
the memory measured against the goal. (Sampling reads every process's page tables on the same cores: timed
with it, the 10,000-host report took ~30 % longer.) Then headless Chromium opens report.html
from file:// and the time until the host table's first rows are drawn is measured (the page carries the
fleet view; a host's details load from report-hosts/N.js when it is opened). Each size's numbers are
printed beside the goals (issue 13, for 10,000 hosts): report in < 5 s and < 300 MiB, page < 10 MiB,
opening in < 2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The report tool, the collection (run_record writes the synthetic runs) and the development tools.
sys.path[:0] = [str(REPO / "report"), str(REPO / "collections"), str(REPO / "tests" / "support")]

from dropscope_lab.synthetic import synthetic_fleet, write_run  # noqa: E402

CHILD = """
import json, resource, sys, time
sys.path.insert(0, sys.argv[2])
started = time.perf_counter()
from dropscope.report import write_reports
run_dir = __import__("pathlib").Path(sys.argv[1])
json_path, html_path, warnings = write_reports(run_dir, history=run_dir.parent / f"history-{run_dir.name}.sqlite")
elapsed = time.perf_counter() - started
details = sorted(html_path.parent.glob("report-hosts/*.js"))
own, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime  # the workers are reaped by now
print(json.dumps({"seconds": elapsed, "cpu_seconds": cpu, "peak_rss_kib": own.ru_maxrss,
                  "json_bytes": json_path.stat().st_size, "html_bytes": html_path.stat().st_size,
                  "detail_files": len(details), "detail_bytes": sum(path.stat().st_size for path in details)}))
"""


def report_once(run_dir: Path, sample_memory: bool) -> dict:
    """`dropscope report`'s work on RUN_DIR in a fresh child process: what it measured of itself, plus (with
    SAMPLE_MEMORY) the peak PSS of it and its workers together ("tree_pss_kib")."""
    history = run_dir.parent / f"history-{run_dir.name}.sqlite"
    for leftover in (history, *history.parent.glob(history.name + "-*")):  # each round records the run anew
        leftover.unlink(missing_ok=True)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(run_dir), str(REPO / "report")], stdout=subprocess.PIPE, text=True
    )
    peak = 0
    while sample_memory and child.poll() is None:
        peak = max(peak, tree_pss_kib(child.pid))
        time.sleep(0.02)
    stdout, _ = child.communicate()
    if child.returncode != 0:
        raise SystemExit(f"the report of {run_dir} failed (exit {child.returncode})")
    return {**json.loads(stdout.strip().splitlines()[-1]), "tree_pss_kib": peak}


def measure(size: int, workdir: Path, rounds: int) -> dict:
    """Write a synthetic run of SIZE hosts and report it: ROUNDS timed runs, then one with memory sampled."""
    run_dir = workdir / f"run-{size}"
    started = time.perf_counter()
    write_run(run_dir, synthetic_fleet(size, seed=size, hosts_per_kernel=4, unreachable_every=50))
    generated = time.perf_counter() - started
    timed = [report_once(run_dir, sample_memory=False) for _ in range(rounds)]
    result = report_once(run_dir, sample_memory=True)
    seconds = sorted(run["seconds"] for run in timed)
    result.update(hosts=size, generate_seconds=generated, sampled_seconds=result["seconds"],
                  seconds=statistics.median(seconds),
                  seconds_range=(seconds[0], seconds[-1]),
                  cpu_seconds=statistics.median(run["cpu_seconds"] for run in timed))  # fmt: skip
    return result


def tree_pss_kib(root: int) -> int:
    """The proportional set size (KiB) of process ROOT and its descendants together (0 once it is gone)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    tree, grown = {root}, True
    while grown:
        grown = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                grown = True
    total = 0
    for pid in tree:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


GOALS = {"seconds": 5.0, "peak_rss_mib": 300.0, "page_mib": 10.0, "open_seconds": 2.0}  # at 10,000 hosts
CHROMIUM = os.environ.get("DROPSCOPE_CHROMIUM", "/usr/bin/chromium")


def open_seconds(html: Path) -> float | None:
    """Seconds from navigating headless Chromium to report.html until the host table has rows; None without
    Playwright or Chromium."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not Path(CHROMIUM).exists():
        return None
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            started = time.perf_counter()
            page.goto(html.as_uri(), timeout=120_000)
            page.locator("#host-matrix tbody tr").first.wait_for(timeout=120_000)
            return time.perf_counter() - started
        finally:
            browser.close()


def _versus(value: float | None, goal: float, unit: str, digits: int = 2) -> str:
    if value is None:
        return "not measured"
    return f"{value:.{digits}f} {unit} ({'met' if value < goal else 'NOT met'}: < {goal:g} {unit})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1_000, 10_000])
    parser.add_argument("--rounds", type=int, default=1, help="timed reports per size (the median is printed)")
    parser.add_argument("--keep", type=Path, help="write the run directories here and keep them")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dropscope-scale-") as temporary:
        workdir = args.keep or Path(temporary)
        workdir.mkdir(parents=True, exist_ok=True)
        print(
            f"Goals at 10,000 hosts: report < 5 s, peak memory < 300 MiB, page < 10 MiB, page opens in < 2 s "
            f"({os.cpu_count()} cores here)"
        )
        print(
            "| hosts | report time (median, range) | CPU per host (all processes) | peak memory (all processes, PSS) "
            "| controller process peak RSS | time per host | report.json | report.html "
            "| host detail files | page opens in Chromium |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        notes = []
        for size in args.sizes:
            r = measure(size, workdir, max(1, args.rounds))
            opened = open_seconds(workdir / f"run-{size}" / "report.html")
            low, high = r["seconds_range"]
            print(
                f"| {size:,} | {_versus(r['seconds'], GOALS['seconds'], 's')} ({low:.2f}–{high:.2f}) "
                f"| {1000 * r['cpu_seconds'] / size:.2f} ms "
                f"| {_versus(r['tree_pss_kib'] / 1024, GOALS['peak_rss_mib'], 'MiB', 0)} "
                f"| {r['peak_rss_kib'] / 1024:.0f} MiB "
                f"| {1000 * r['seconds'] / size:.2f} ms | {r['json_bytes'] / 2**20:.1f} MiB "
                f"| {_versus(r['html_bytes'] / 2**20, GOALS['page_mib'], 'MiB', 1)} "
                f"| {r['detail_files']} files, {r['detail_bytes'] / 2**20:.1f} MiB "
                f"| {_versus(opened, GOALS['open_seconds'], 's')} |",
                flush=True,
            )
            notes.append(f"{size:,} hosts: the report with its memory sampled took {r['sampled_seconds']:.2f} s")
        for note in notes:
            print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
