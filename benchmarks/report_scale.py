"""How `dropscope report` scales: time and peak memory for 100, 1,000 and 10,000 synthetic hosts.

    python3 benchmarks/report_scale.py [--sizes 100 1000 10000] [--keep DIR]

Each size gets a synthetic run directory (tests/support/dropscope_lab/synthetic.py, written by the
collection's run_record as a real run is: realistic counters and 4 drop reasons per host, every 50th host
unreachable, 4 hosts per kernel), then a fresh child process renders report.json and report.html
(`dropscope.report.write_reports`, which streams host files one at a time); the child reports its wall
time and peak resident memory (ru_maxrss). Goal: 10,000 hosts under 20 s and 1 GiB, growing linearly.
"""

from __future__ import annotations

import argparse
import json
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
json_path, html_path, warnings = write_reports(__import__("pathlib").Path(sys.argv[1]))
elapsed = time.perf_counter() - started
print(json.dumps({"seconds": elapsed, "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "json_bytes": json_path.stat().st_size, "html_bytes": html_path.stat().st_size}))
"""


def measure(size: int, workdir: Path) -> dict:
    """Write a synthetic run of SIZE hosts and time its report in a child process."""
    run_dir = workdir / f"run-{size}"
    started = time.perf_counter()
    write_run(run_dir, synthetic_fleet(size, seed=size, hosts_per_kernel=4, unreachable_every=50))
    generated = time.perf_counter() - started
    child = subprocess.run([sys.executable, "-c", CHILD, str(run_dir), str(REPO / "report")],
                           capture_output=True, text=True, check=True)
    result = json.loads(child.stdout.strip().splitlines()[-1])
    result.update(hosts=size, generate_seconds=generated)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1_000, 10_000])
    parser.add_argument("--keep", type=Path, help="write the run directories here and keep them")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dropscope-scale-") as temporary:
        workdir = args.keep or Path(temporary)
        workdir.mkdir(parents=True, exist_ok=True)
        print("| hosts | report time | peak memory (RSS) | time per host | report.json | report.html |")
        print("|---:|---:|---:|---:|---:|---:|")
        for size in args.sizes:
            r = measure(size, workdir)
            print(f"| {size:,} | {r['seconds']:.2f} s | {r['peak_rss_kib'] / 1024:.0f} MiB | "
                  f"{1000 * r['seconds'] / size:.2f} ms | {r['json_bytes'] / 2**20:.1f} MiB | "
                  f"{r['html_bytes'] / 2**20:.1f} MiB |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
