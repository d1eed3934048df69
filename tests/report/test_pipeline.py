"""`dropscope report` streams the builder over slices of hosts in worker processes (dropscope.pipeline):
what it writes is what the in-memory builder and renderers make of the same run, byte for byte — with
kernels shared across slice boundaries, unreachable hosts and a corrupt host file inside a worker's slice."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from dropscope import render_html
from dropscope.build import build_report
from dropscope.history import record_report
from dropscope.render_json import host_text, indented, report_chunks
from dropscope.report import write_reports
from dropscope_lab.synthetic import synthetic_fleet, write_run

HOSTS = 45  # 3 slices of 15 (DETAIL_CHUNK 3 × 5 chunks), kernels of 4 hosts straddle the slice boundaries


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render_html, "DETAIL_CHUNK", 3)


def _run(tmp_path: Path) -> Path:
    return write_run(
        tmp_path / "runs" / "night1", synthetic_fleet(HOSTS, seed=7, hosts_per_kernel=4, unreachable_every=7)
    )


def _in_memory(run_dir: Path, out: Path) -> tuple[str, str, dict[str, str]]:
    """report.json's text, the page and its detail files as the in-memory builder and renderers make them."""
    report = build_report(run_dir)
    head = {key: report[key] for key in ("schema_version", "run", "fleet")}
    tail = {key: report[key] for key in ("warnings", "knowledge")}
    texts = (host_text(host, position, indented(HOSTS)) for position, host in enumerate(report["hosts"]))
    files: dict[str, str] = {}
    page = render_html.render_html(report, lambda name, text: files.__setitem__(name, text))
    return "".join(report_chunks(head, texts, tail, indented(HOSTS))), page, files


def _written(out: Path) -> tuple[str, str, dict[str, str]]:
    details = out / render_html.DETAILS_DIR
    files = (
        {f"{details.name}/{path.name}": path.read_text() for path in sorted(details.iterdir())}
        if details.exists()
        else {}
    )
    return (out / "report.json").read_text(), (out / "report.html").read_text(), files


@pytest.mark.parametrize("details_inline", [True, False], ids=["details-in-page", "details-in-files"])
def test_the_streamed_report_is_the_built_report(
    tmp_path: Path, small_chunks: None, monkeypatch: pytest.MonkeyPatch, details_inline: bool
) -> None:
    monkeypatch.setattr(render_html, "DETAILS_INLINE_MAX_BYTES", 4 * 2**20 if details_inline else 0)
    run_dir = _run(tmp_path)
    expected = _in_memory(run_dir, tmp_path / "memory")
    for workers in (1, 2):
        out = tmp_path / f"workers-{workers}"
        write_reports(run_dir, out, workers=workers)
        assert _written(out) == expected, f"workers={workers}"
        assert [path.name for path in out.iterdir() if path.name.startswith(".")] == []  # the spool is gone

    report = json.loads(expected[0])
    assert len(report["hosts"]) == HOSTS and report["fleet"]["unreachable"] == 6  # hosts 7, 14, … 42
    assert [host["host"] for host in report["hosts"]] == [f"host{n:05d}.dc{n % 3 + 1}.example" for n in range(HOSTS)]
    shared = [kernel for kernel in report["fleet"]["kernels"] if len(kernel["hosts"]) > 1]
    assert any({"host00014.dc3.example", "host00015.dc1.example"} <= set(kernel["hosts"]) for kernel in shared)
    assert report["fleet"]["findings"]  # kernel-wide findings no host's own counters show, made across slices
    assert (len(expected[2]) == 0) == details_inline
    if not details_inline:
        assert sorted(expected[2]) == [f"report-hosts/{n}.js" for n in sorted(range(15), key=str)]


def test_a_corrupt_host_file_in_a_worker_fails_that_host_only(tmp_path: Path, small_chunks: None) -> None:
    run_dir = _run(tmp_path)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    broken = run_dir / manifest["hosts"][19]["file"]  # in the second slice
    broken.write_text(broken.read_text()[:500])  # truncated
    expected = _in_memory(run_dir, tmp_path / "memory")
    write_reports(run_dir, tmp_path / "streamed", workers=2)
    assert _written(tmp_path / "streamed") == expected

    hosts = json.loads(expected[0])["hosts"]
    assert hosts[19]["status"] == "failed"
    assert manifest["hosts"][19]["file"] in hosts[19]["error"] and "ends early" in hosts[19]["error"]
    assert sum(host["status"] == "ok" for host in hosts) == HOSTS - 6 - 1


def _index_rows(path: Path) -> dict[str, list[tuple]]:
    connection = sqlite3.connect(path)
    try:
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {
            table: sorted(connection.execute(f"SELECT * FROM {table}").fetchall(), key=repr)  # noqa: S608 (names from the schema)
            for table in tables
            if table != "runs"
        } | {"runs": connection.execute("SELECT name, run_id, started, time, hosts, verdict FROM runs").fetchall()}
    finally:
        connection.close()


def test_the_history_recorded_by_a_worker_is_the_built_reports(tmp_path: Path, small_chunks: None) -> None:
    run_dir = _run(tmp_path)
    _, _, warnings = write_reports(run_dir, tmp_path / "streamed", history=tmp_path / "streamed.sqlite", workers=2)
    assert warnings == []
    record_report(tmp_path / "memory.sqlite", "night1", build_report(run_dir))
    streamed = _index_rows(tmp_path / "streamed.sqlite")
    assert streamed == _index_rows(tmp_path / "memory.sqlite")
    assert streamed["runs"][0][0] == "night1" and streamed["runs"][0][4] == HOSTS


CHILD = """
import sys
from pathlib import Path
from dropscope import render_html
from dropscope.report import write_reports
render_html.DETAIL_CHUNK = 3  # 3 slices of 15 hosts, as above
json_path, _, warnings = write_reports(Path(sys.argv[1]), Path(sys.argv[2]), workers=2)
print(json_path.read_text(), end="")
"""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare(1)")
def test_without_working_shared_memory_the_report_is_built_in_one_process(tmp_path: Path) -> None:
    """Worker processes need POSIX semaphores (/dev/shm); where they cannot start (some containers), the
    same report is built in this process, and its warnings say so."""
    run_dir = _run(tmp_path)
    script = 'mount -t tmpfs -o ro tmpfs /dev/shm && exec "$@"'  # a read-only /dev/shm: sem_open fails
    argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh",
            sys.executable, "-c", CHILD, str(run_dir), str(tmp_path / "one-process")]  # fmt: skip
    streamed = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
    built = build_report(run_dir)
    assert streamed["warnings"] == [
        "the report was built in one process: worker processes could not start ([Errno 30] Read-only file system)"
    ]
    assert {**streamed, "warnings": []} == {**built, "warnings": []}
