"""The run history (RUNS_DIR/history.sqlite): what `dropscope report` records, concurrent writers, rebuild."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from dropscope.history import grouped, host_names, index_path, open_index, record_run, runs, series, write_transaction
from dropscope_lab.synthetic import drop, make_host, simple_host, write_run


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dropscope", *args], capture_output=True, text=True, timeout=120)


def _night(runs_dir: Path, night: int, noport: int, *, web2_down: bool = False) -> Path:
    """Run nightN of RUNS_DIR: web1 drops NOPORT packets to a closed UDP port, web2 is quiet (or unreachable)."""
    web1 = simple_host("web1", [drop("NO_SOCKET", "__udp4_lib_rcv", noport)] if noport else [],
                       protocols={"UdpNoPorts": noport} if noport else None)  # fmt: skip
    web2 = make_host("web2", status="unreachable", error="ssh: timed out") if web2_down else simple_host("web2")
    return write_run(runs_dir / f"night{night}", [web1, web2], started=f"2026-11-{night:02d}T03:05:01+00:00")


def _rows(path: Path, query: str) -> list[tuple]:
    with sqlite3.connect(path) as connection:
        return connection.execute(query).fetchall()


def _index(path: Path, what: str) -> list[tuple]:
    """Every value of WHAT in the index ("statuses", "points", "findings") with run and host names, sorted."""
    connection = open_index(path, create=False)
    try:
        run_names, hosts, all_series = {run.id: run.name for run in runs(connection)}, host_names(connection), {}
        if what == "points":
            all_series = series(connection)
        rows = []
        for key, *more in grouped(connection, what, None, None):
            if what == "points":
                host, kind, name = all_series[key][:3]
                prefix = (hosts[host], kind, name)
            elif what == "findings":
                prefix, more = (hosts[key], more[0]), more[1:]
            else:
                prefix = (hosts[key],)
            rows += [(run_names[values[0]], *prefix, *values[1:]) for values in zip(*more, strict=True)]
        return sorted(rows)
    finally:
        connection.close()


def test_report_records_each_run_once_from_the_built_report(tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    for night, noport in ((1, 0), (2, 100), (3, 200)):
        proc = _run("report", str(_night(runs_dir, night, noport, web2_down=night == 3)))
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == ""
    again = _run("report", str(runs_dir / "night2"))  # rendered again: replaced, never held twice
    assert again.returncode == 0, again.stderr

    path = index_path(runs_dir)
    assert path == runs_dir / "history.sqlite" and path.is_file()
    assert _rows(path, "SELECT name, run_id, started, time, hosts, verdict FROM runs ORDER BY name") == [
        ("night1", "night1", "2026-11-01T03:05:01+00:00", 1793502301.0, 2, "ok"),
        ("night2", "night2", "2026-11-02T03:05:01+00:00", 1793588701.0, 2, "warning"),
        ("night3", "night3", "2026-11-03T03:05:01+00:00", 1793675101.0, 2, "problem"),
    ]
    assert _index(path, "statuses") == [
        ("night1", "web1", "ok", "ok"), ("night1", "web2", "ok", "ok"),
        ("night2", "web1", "ok", "warning"), ("night2", "web2", "ok", "ok"),
        ("night3", "web1", "ok", "problem"), ("night3", "web2", "unreachable", "unknown"),
    ]  # fmt: skip
    # Capture reasons: count / capture duration (10.01 s); drop counters: delta / snapshot interval (5 s).
    assert _index(path, "points") == [
        ("night2", "web1", "counter", "protocols UdpNoPorts", 100, 20.0),
        ("night2", "web1", "reason", "NO_SOCKET", 100, 9.99),
        ("night3", "web1", "counter", "protocols UdpNoPorts", 200, 40.0),
        ("night3", "web1", "reason", "NO_SOCKET", 200, 19.98),
    ]
    assert _index(path, "findings") == [
        ("night2", "web1", "NO_SOCKET", "warning", "host", 9.99, 100),
        ("night3", "web1", "NO_SOCKET", "problem", "host", 19.98, 200),
    ]
    assert _rows(path, "PRAGMA journal_mode") == [("wal",)]
    assert _rows(path, "PRAGMA integrity_check") == [("ok",)]


def test_report_options_history_and_no_history(tmp_path: Path) -> None:
    run_dir = _night(tmp_path / "runs", 1, 50)
    assert _run("report", str(run_dir), "--no-history").returncode == 0
    assert not index_path(tmp_path / "runs").exists()
    elsewhere = tmp_path / "elsewhere.sqlite"
    assert _run("report", str(run_dir), "--history", str(elsewhere)).returncode == 0
    assert _rows(elsewhere, "SELECT name FROM runs") == [("night1",)]
    # An index of another kind is left alone: the report is written, the run is not recorded, and it says why.
    (tmp_path / "other.sqlite").unlink(missing_ok=True)
    with sqlite3.connect(tmp_path / "other.sqlite") as other:
        other.execute("CREATE TABLE notes (text TEXT)")
    refused = _run("report", str(run_dir), "--history", str(tmp_path / "other.sqlite"))
    assert refused.returncode == 0
    assert refused.stderr == (
        f"dropscope report: warning: the run was not recorded in the run history: {tmp_path / 'other.sqlite'}: "
        "holds tables notes (not a dropscope history index); `dropscope history rebuild RUNS_DIR` recreates it\n"
    )


def test_two_reports_at_once_each_run_once_no_corruption(tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    first, second = _night(runs_dir, 1, 100), _night(runs_dir, 2, 300)
    # Three processes at once, two of them on the same run.
    procs = [subprocess.Popen([sys.executable, "-m", "dropscope", "report", str(run_dir)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for run_dir in (first, second, first)]  # fmt: skip
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and err == "", err
    path = index_path(runs_dir)
    assert _rows(path, "PRAGMA integrity_check") == [("ok",)]
    assert _rows(path, "SELECT name FROM runs ORDER BY name") == [("night1",), ("night2",)]
    assert [row[:5] for row in _index(path, "points")] == [
        ("night1", "web1", "counter", "protocols UdpNoPorts", 100),
        ("night1", "web1", "reason", "NO_SOCKET", 100),
        ("night2", "web1", "counter", "protocols UdpNoPorts", 300),
        ("night2", "web1", "reason", "NO_SOCKET", 300),
    ]


def test_a_report_waits_for_the_writer_that_holds_the_index(tmp_path: Path) -> None:
    """One writer at a time: while another writer's transaction is open, the report has written its files and
    waits for the index; both runs are there afterwards, once each."""
    runs_dir = tmp_path / "runs"
    waiting, held = _night(runs_dir, 1, 100), _night(runs_dir, 2, 300)
    assert _run("report", str(held), "--no-history").returncode == 0
    built = json.loads((held / "report.json").read_text())
    connection = open_index(index_path(runs_dir))
    try:
        with write_transaction(connection):
            connection.execute("INSERT INTO meta (key, value) VALUES ('held', 'by the test')")
            proc = subprocess.Popen([sys.executable, "-m", "dropscope", "report", str(waiting)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
            deadline = time.monotonic() + 60
            while not (waiting / "report.html").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert (waiting / "report.html").exists()
            assert proc.poll() is None  # it cannot record while this transaction holds the index
        record_run(connection, "night2", built)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and err == "", err
        assert [run.name for run in runs(connection)] == ["night1", "night2"]
    finally:
        connection.close()
    assert _rows(index_path(runs_dir), "PRAGMA integrity_check") == [("ok",)]


def test_history_rebuild_skips_bad_run_directories_with_name_and_reason(tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    good1, good2 = _night(runs_dir, 1, 0), _night(runs_dir, 2, 100)
    assert _run("report", str(good2), "--no-history").returncode == 0  # indexed from its report.json
    (runs_dir / ".night3.partial-x1y2").mkdir()  # run_record writes here, then renames
    (runs_dir / "lab").mkdir()  # not a run
    other = _night(runs_dir, 4, 7)
    manifest = json.loads((other / "manifest.json").read_text())
    (other / "manifest.json").write_text(json.dumps({**manifest, "schema_version": 2}))
    torn = _night(runs_dir, 5, 7)
    (torn / "manifest.json").write_text((torn / "manifest.json").read_text()[:40])
    (runs_dir / "history.sqlite").write_text("not a database, e.g. a copy gone wrong")
    for suffix in ("-wal", "-shm"):
        (runs_dir / f"history.sqlite{suffix}").unlink(missing_ok=True)

    refused = _run("trend", str(runs_dir))
    assert refused.returncode == 2
    assert "history.sqlite: not a usable history index (file is not a database)" in refused.stderr

    rebuilt = _run("history", "rebuild", str(runs_dir))
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert json.loads(rebuilt.stdout) == {"index": str(runs_dir / "history.sqlite"), "runs": 2, "skipped": 4}
    assert rebuilt.stderr.splitlines() == [
        "dropscope history: skipped .night3.partial-x1y2: half-written (a run being written, or left by an "
        "interrupted one)",
        "dropscope history: skipped lab: no manifest.json (half-written, or not a run directory)",
        "dropscope history: skipped night4: manifest.json: schema_version 2 is not supported (this dropscope reads 1)",
        "dropscope history: skipped night5: manifest.json: not valid JSON: Expecting value at line 4 column 3 "
        "(the file ends early: truncated?)",
    ]
    path = index_path(runs_dir)
    assert _rows(path, "SELECT name FROM runs ORDER BY name") == [("night1",), ("night2",)]
    assert [row[:5] for row in _index(path, "points")] == [
        ("night2", "web1", "counter", "protocols UdpNoPorts", 100),
        ("night2", "web1", "reason", "NO_SOCKET", 100),
    ]
    assert good1.is_dir()
    again = _run("history", "rebuild", str(runs_dir))  # from scratch again: still each run once
    assert json.loads(again.stdout)["runs"] == 2
    assert _rows(path, "SELECT count(*) FROM runs") == [(2,)]
    missing = _run("history", "rebuild", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "not a directory" in missing.stderr
