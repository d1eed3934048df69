"""`dropscope trend RUNS_DIR`: series over the run history, first/last seen, filters, exit codes, the page."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from dropscope.trend import sparkline
from dropscope_lab.synthetic import drop, make_host, simple_host, write_run

HOSTILE = '<b>"db&1'


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dropscope", *args], capture_output=True, text=True, timeout=120)


def _night(runs_dir: Path, night: int, noport: int, *, web2_down: bool = False, sampled: int = 1) -> Path:
    """Run nightN: web1 drops NOPORT packets to a closed UDP port (SAMPLED: its capture counted 1 in that many);
    web2 is quiet (or unreachable); HOSTILE has a little known noise every night."""
    web1 = simple_host("web1", [drop("NO_SOCKET", "__udp4_lib_rcv", noport)] if noport else [],
                       protocols={"UdpNoPorts": noport} if noport else None)  # fmt: skip
    web1["capture"]["sample_one_in"] = sampled
    web2 = make_host("web2", status="unreachable", error="ssh: timed out") if web2_down else simple_host("web2")
    hosts = [web1, web2, simple_host(HOSTILE, [drop("QUEUE_PURGE", "sk_stream_kill_queues", 4)])]
    return write_run(runs_dir / f"night{night}", hosts, started=f"2026-11-{night:02d}T03:05:01+00:00")


@pytest.fixture
def growing(tmp_path: Path) -> Path:
    """Four nightly runs, each reported (and so recorded): web1's drops start on night 2 and double nightly."""
    runs_dir = tmp_path / "runs"
    for night, noport in ((1, 0), (2, 100), (3, 200), (4, 400)):
        proc = _run("report", str(_night(runs_dir, night, noport, web2_down=night == 2)))
        assert proc.returncode == 0, proc.stderr
    return runs_dir


def test_trend_of_a_growing_drop(growing: Path) -> None:
    proc = _run("trend", str(growing))
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.splitlines() == [
        "worse: night4 against night3: 1 host(s) worse, 0 better, 2 the same, 0 incomplete (4 runs, threshold 20 %)",
        "  web1: worse NO_SOCKET",
        str(growing / "trend.json"),
        str(growing / "trend.html"),
    ]
    trend = json.loads((growing / "trend.json").read_text())
    assert (trend["kind"], trend["schema_version"], trend["newest"], trend["baseline"]) == (
        "dropscope-trend", 1, "night4", "night3")  # fmt: skip
    assert [run["name"] for run in trend["runs"]] == ["night1", "night2", "night3", "night4"]
    assert [run["verdict"] for run in trend["runs"]] == ["ok", "warning", "problem", "problem"]
    assert (trend["verdict"], trend["hosts_by_change"]) == (
        "worse", {"worse": 1, "incomplete": 0, "better": 0, "same": 2})  # fmt: skip
    assert [host["host"] for host in trend["hosts"]] == ["web1", HOSTILE, "web2"]
    web1 = trend["hosts"][0]
    assert web1["statuses"] == ["ok", "ok", "ok", "ok"]
    assert web1["change"] == "worse"
    assert web1["findings_by_change"] == {"new": [], "worse": ["NO_SOCKET"], "better": [], "vanished": [], "same": []}
    assert web1["series"] == [
        {"kind": "counter", "name": "protocols UdpNoPorts", "section": "protocols", "object": None,
         "item": "UdpNoPorts", "count": [0, 100, 200, 400], "rate": [0.0, 20.0, 40.0, 80.0],
         "first_seen": "night2", "last_seen": "night4", "runs_seen": 3},
        {"kind": "reason", "name": "NO_SOCKET", "section": None, "object": None, "item": "NO_SOCKET",
         "count": [0, 100, 200, 400], "rate": [0.0, 9.99, 19.98, 39.96],
         "first_seen": "night2", "last_seen": "night4", "runs_seen": 3},
    ]  # fmt: skip
    assert web1["findings"] == [
        {"key": "NO_SOCKET", "title": "Nobody listens on the destination port", "first_seen": "night2",
         "last_seen": "night4", "runs_seen": 3, "severity": [None, "warning", "problem", "problem"],
         "rate": [None, 9.99, 19.98, 39.96], "change": "worse"},
    ]  # fmt: skip
    web2 = trend["hosts"][2]
    assert (web2["statuses"], web2["series"], web2["change"]) == (["ok", "unreachable", "ok", "ok"], [], "same")


@pytest.mark.parametrize(("sampled", "exit_code", "change"), [(1, 1, "worse"), (8, 0, "same"), (5, 0, "same")])
def test_trend_judges_sampled_runs_as_compare_does(tmp_path: Path, sampled: int, exit_code: int, change: str) -> None:
    """400 → 520 NO_SOCKET (+30 %): worse counted exactly; counted 1 in 8, within the two estimates' margins
    (tests/report/test_compare_check.py): the same, from the run history as from the runs. An N that is not a
    power of two is kept rounded up (5 → 8): a margin as wide or wider."""
    runs_dir = tmp_path / "runs"
    for night, noport in ((1, 400), (2, 520)):
        assert _run("report", str(_night(runs_dir, night, noport, sampled=sampled))).returncode == 0
    compared = _run("compare", str(runs_dir / "night1"), str(runs_dir / "night2"), "--output-dir", str(tmp_path))
    trend = _run("trend", str(runs_dir))
    assert (compared.returncode, trend.returncode) == (exit_code, exit_code), trend.stdout + trend.stderr
    web1 = next(host for host in json.loads((runs_dir / "trend.json").read_text())["hosts"] if host["host"] == "web1")
    assert [(finding["key"], finding["change"]) for finding in web1["findings"]] == [("NO_SOCKET", change)]


def test_trend_filters_and_baseline(growing: Path, tmp_path: Path) -> None:
    last2 = _run("trend", str(growing), "--last", "2", "--output-dir", str(tmp_path / "last2"))
    assert last2.returncode == 1
    trend = json.loads((tmp_path / "last2" / "trend.json").read_text())
    assert [run["name"] for run in trend["runs"]] == ["night3", "night4"]
    assert trend["filters"] == {"hosts": None, "since": None, "last": 2}
    assert trend["hosts"][0]["series"][1]["count"] == [200, 400]
    assert trend["hosts"][0]["series"][1]["first_seen"] == "night3"  # within the runs shown

    web2 = _run("trend", str(growing), "--hosts", "web2,nothing*", "--output-dir", str(tmp_path / "web2"))
    assert web2.returncode == 0
    assert web2.stdout.startswith("same: night4 against night3: 0 host(s) worse, 0 better, 1 the same")
    trend = json.loads((tmp_path / "web2" / "trend.json").read_text())
    assert [host["host"] for host in trend["hosts"]] == ["web2"]

    since = _run("trend", str(growing), "--since", "2026-11-03", "--output-dir", str(tmp_path / "since"))
    assert since.returncode == 1
    trend = json.loads((tmp_path / "since" / "trend.json").read_text())
    assert [run["name"] for run in trend["runs"]] == ["night3", "night4"]
    by_name = _run("trend", str(growing), "--since", "night2", "--output-dir", str(tmp_path / "by_name"))
    assert [run["name"] for run in json.loads((tmp_path / "by_name" / "trend.json").read_text())["runs"]] == [
        "night2", "night3", "night4"]  # fmt: skip
    assert by_name.returncode == 1

    # The baseline's host was unreachable: not comparable. Against night1 the drop is new.
    against2 = _run("trend", str(growing), "--baseline", "night2", "--output-dir", str(tmp_path / "b2"))
    assert against2.stdout.startswith(
        "worse: night4 against night2: 1 host(s) worse, 0 better, 1 the same, 1 incomplete"
    )
    against1 = _run("trend", str(growing), "--baseline", "night1", "--output-dir", str(tmp_path / "b1"))
    assert against1.returncode == 1 and "  web1: new NO_SOCKET" in against1.stdout.splitlines()
    # Newest equal to its baseline, or only one run: not worse.
    alone = _run("trend", str(growing), "--last", "1", "--output-dir", str(tmp_path / "alone"))
    assert alone.returncode == 0 and alone.stdout.startswith("same: night4 against no baseline: 0 host(s) worse")
    # Not worse beyond a generous threshold (+100 % is not more than 150 %).
    assert _run("trend", str(growing), "--threshold", "150", "--output-dir", str(tmp_path / "t")).returncode == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "last tuesday"], "--since 'last tuesday' is neither an ISO date or time nor the name"),
        (["--last", "0"], "--last must be at least 1"),
        (["--baseline", "night9"], "--baseline 'night9' is not an indexed run"),
        (["--threshold", "-1"], "--threshold must be a percentage ≥ 0"),
        (["--hosts", ","], "--hosts needs at least one glob"),
        (["--since", "2027-01-01"], "no indexed run matches the filters"),
    ],
)
def test_trend_bad_input_exits_2(growing: Path, args: list[str], message: str) -> None:
    proc = _run("trend", str(growing), *args)
    assert proc.returncode == 2 and proc.stderr.startswith(f"dropscope trend: {message}"), proc.stderr
    assert not (growing / "trend.json").exists()


def test_trend_indexes_unrecorded_runs_and_skips_bad_ones(tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    assert _run("trend", str(tmp_path / "nope")).returncode == 2
    runs_dir.mkdir()
    empty = _run("trend", str(runs_dir))
    assert empty.returncode == 2 and empty.stderr == "dropscope trend: the run history holds no run\n"
    for night, noport in ((1, 0), (2, 300)):
        _night(runs_dir, night, noport)  # never reported: trend indexes them itself
    (runs_dir / ".night3.partial-a1b2c3").mkdir()
    other = _night(runs_dir, 4, 7)
    manifest = json.loads((other / "manifest.json").read_text())
    (other / "manifest.json").write_text(json.dumps({**manifest, "schema_version": 99}))
    proc = _run("trend", str(runs_dir))
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "dropscope trend: skipped .night3.partial-a1b2c3: half-written (a run being written, or left by an "
        "interrupted one)",
        "dropscope trend: skipped night4: manifest.json: schema_version 99 is not supported (this dropscope reads 1)",
    ]
    trend = json.loads((runs_dir / "trend.json").read_text())
    assert [run["name"] for run in trend["runs"]] == ["night1", "night2"]
    assert trend["hosts"][0]["findings_by_change"]["new"] == ["NO_SOCKET"]


def test_trend_page_is_self_contained_and_escaped(growing: Path) -> None:
    assert _run("trend", str(growing)).returncode == 1
    page = (growing / "trend.html").read_text()
    assert (
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        in page
    )
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert HOSTILE not in page
    assert "<h2>&lt;b&gt;&#34;db&amp;1 <span" in page
    assert page.count('<svg class="spark"') == 3  # web1: NO_SOCKET and UdpNoPorts; HOSTILE: QUEUE_PURGE; web2: none
    # The growing series: 0, 9.99, 19.98, 39.96 per s, scaled to the chart's 24 px.
    assert '<polyline points="2.0,26.0 54.0,20.0 106.0,14.0 158.0,2.0"/>' in page
    assert re.search(r"<td><code>night2</code></td><td><code>night4</code></td>", page)


def test_sparkline_gaps_and_long_series() -> None:
    gap = str(sparkline([1.0, None, 2.0, 2.0]))
    assert '<circle cx="2.0" cy="14.0" r="1.5"/>' in gap  # a lone point before the gap
    assert '<polyline points="106.0,2.0 158.0,2.0"/>' in gap
    long = str(sparkline([float(i % 7) for i in range(365)]))
    assert long.count(",") == 120  # 120 points (one per bucket of 3 runs) in one line
