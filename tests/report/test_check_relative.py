"""`dropscope check` thresholds relative to the run history: max_ratio (× the host's median), new since the
last run, and the Prometheus baseline ratio."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from dropscope_lab.synthetic import drop, make_host, simple_host, write_run


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dropscope", *args], capture_output=True, text=True, timeout=120)


def _night(runs_dir: Path, night: int, noport: int, *, web1_down: bool = False, sampled: int = 1) -> Path:
    """Run nightN: web1 drops NOPORT packets to a closed UDP port (or is unreachable; SAMPLED: its capture counted
    1 in that many); web2 is quiet."""
    if web1_down:
        web1 = make_host("web1", status="unreachable", error="ssh: timed out")
    else:
        web1 = simple_host("web1", [drop("NO_SOCKET", "__udp4_lib_rcv", noport)] if noport else [],
                           protocols={"UdpNoPorts": noport} if noport else None)  # fmt: skip
        web1["capture"]["sample_one_in"] = sampled
    hosts = [web1, simple_host("web2")]
    return write_run(runs_dir / f"night{night}", hosts, started=f"2026-11-{night:02d}T03:05:01+00:00")


def _check(run_dir: Path, thresholds: str, *extra: str) -> subprocess.CompletedProcess[str]:
    limits = run_dir.parent / "limits.yml"
    limits.write_text(thresholds)
    return _run("check", str(run_dir), "--thresholds", str(limits), *extra)


RATIO = """
reasons:
  - reason: "*"
    max_ratio: 3
counters:
  - counter: UdpNoPorts
    max_ratio: 3
    baseline_runs: 2
"""


def test_max_ratio_fires_on_the_night_the_rate_jumps_and_not_before(tmp_path: Path) -> None:
    """Nightly as cron does it: report (records the run), then check against the history before it."""
    runs_dir = tmp_path / "runs"
    outcomes = []
    for night, noport in enumerate((100, 110, 90, 100, 400), start=1):
        run_dir = _night(runs_dir, night, noport, web1_down=night == 4)
        assert _run("report", str(run_dir)).returncode == 0
        outcomes.append(_check(run_dir, RATIO))
    assert [proc.returncode for proc in outcomes] == [0, 0, 0, 3, 1]
    violations = [line for line in outcomes[4].stdout.splitlines() if line.startswith("web1:")]
    # Night 4 (web1 unreachable) is passed over: the median of 9.99, 10.989, 8.991 (capture) and of the last
    # two diagnosed nights' counters, 18.0 and 22.0 per s.
    assert violations == [
        "web1: reasons[0] reason=*: NO_SOCKET: rate 39.96/s > 3x the median 9.99/s of the host's last 3 run(s) (4.0x)",
        "web1: counters[0] counter=UdpNoPorts: protocols UdpNoPorts: rate 80.00/s > 3x the median 20.00/s of the "
        "host's last 2 run(s) (4.0x)",
    ]
    # Checked again later, with nights after it in the index: only the runs before it count.
    assert _check(runs_dir / "night3", RATIO).returncode == 0
    assert _check(runs_dir / "night5", RATIO).returncode == 1


def test_max_ratio_labels_a_sampled_nights_rate_an_estimate(tmp_path: Path) -> None:
    """The jump night's capture counted 1 in 8: the rate is held against the median as it is, and printed as
    the estimate it is (±2σ: 2·√(400·7) = 106 drops, 10.59/s)."""
    runs_dir = tmp_path / "runs"
    for night, noport in enumerate((100, 110, 90, 400), start=1):
        run_dir = _night(runs_dir, night, noport, sampled=8 if night == 4 else 1)
        assert _run("report", str(run_dir)).returncode == 0
    violations = [line for line in _check(run_dir, "reasons: [{reason: '*', max_ratio: 3}]").stdout.splitlines()
                  if line.startswith("web1:")]  # fmt: skip
    assert violations == [
        "web1: reasons[0] reason=*: NO_SOCKET: rate ~39.96/s ± 10.59/s > 3x the median 9.99/s of the host's last "
        "3 run(s) (4.0x) (an estimate: the capture counted 1 in 8 drops)"
    ]


def test_new_since_the_last_run(tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    thresholds = "reasons:\n  - reason: NO_SOCKET\n    new: true\n"
    codes = []
    for night, noport in enumerate((0, 50, 60, 0, 5), start=1):
        run_dir = _night(runs_dir, night, noport)
        assert _run("report", str(run_dir)).returncode == 0
        proc = _check(run_dir, thresholds)
        codes.append(proc.returncode)
        if night == 2:
            assert "web1: reasons[0] reason=NO_SOCKET: NO_SOCKET: new since the host's last run (night1)" in proc.stdout
    assert codes == [0, 1, 0, 0, 1]
    # min_rate: rates up to it are not judged (5 drops in 10.01 s is 0.5/s).
    assert _check(runs_dir / "night5", thresholds + "    min_rate: 1\n").returncode == 0


def test_prometheus_gains_the_baseline_ratio(tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    for night, noport in enumerate((100, 100, 300), start=1):
        assert _run("report", str(_night(runs_dir, night, noport))).returncode == 0
    prom = tmp_path / "drops.prom"
    proc = _check(runs_dir / "night3", "reasons:\n  - max_rate: 1000\n", "--prometheus", str(prom))
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in prom.read_text().splitlines() if "baseline" in line]
    assert lines == [
        "# HELP dropscope_baseline_rate Median rate per second of the drop reason or counter over the host's last "
        "diagnosed runs before this one (0 where it did not move).",
        "# TYPE dropscope_baseline_rate gauge",
        'dropscope_baseline_rate{host="web1",kind="reason",name="NO_SOCKET"} 9.99',
        'dropscope_baseline_rate{host="web1",kind="counter",name="protocols UdpNoPorts"} 20.0',
        "# HELP dropscope_baseline_ratio This run's rate divided by the baseline rate (+Inf: none before).",
        "# TYPE dropscope_baseline_ratio gauge",
        'dropscope_baseline_ratio{host="web1",kind="reason",name="NO_SOCKET"} 3.0',
        'dropscope_baseline_ratio{host="web1",kind="counter",name="protocols UdpNoPorts"} 3.0',
    ]
    # The first run has no baseline: no such lines (and no history at all is no error without relative limits).
    _check(runs_dir / "night1", "reasons:\n  - max_rate: 1000\n", "--prometheus", str(prom))
    assert "baseline" not in prom.read_text()
    assert _check(runs_dir / "night1", "reasons:\n  - max_rate: 1000\n", "--history", str(tmp_path / "no.sqlite"),
                  "--prometheus", str(prom)).returncode == 0  # fmt: skip


@pytest.mark.parametrize(
    ("thresholds", "message"),
    [
        ("reasons: [{reason: X, max_ratio: 3, location: tcp_v4_rcv}]",
         "max_ratio and new compare a reason over all its locations"),
        ("reasons: [{reason: X, max_ratio: 3, baseline_runs: 0}]", "baseline_runs: expected a whole number ≥ 1"),
        ("reasons: [{reason: X, new: yes please}]", "new: expected true or false"),
        ("counters: [{counter: X, max_count: 1, min_rate: 1}]", "baseline_runs and min_rate go with max_ratio or new"),
        ("reasons: [{reason: X, new: false}]", "needs max_rate, max_count, max_ratio and/or new"),
    ],
)  # fmt: skip
def test_bad_relative_thresholds_exit_2(tmp_path: Path, thresholds: str, message: str) -> None:
    run_dir = _night(tmp_path / "runs", 1, 100)
    proc = _check(run_dir, thresholds)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_relative_thresholds_need_the_history(tmp_path: Path) -> None:
    run_dir = _night(tmp_path / "runs", 1, 100)  # never reported: no history next to it
    proc = _check(run_dir, RATIO)
    assert proc.returncode == 2
    assert proc.stderr == (
        f"dropscope check: {tmp_path / 'runs' / 'history.sqlite'}: no history index (`dropscope report` records each "
        "run into it; `dropscope history rebuild RUNS_DIR` creates it from the run directories)\n"
    )
