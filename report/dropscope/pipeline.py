"""`dropscope report` at fleet scale: the one builder's steps (dropscope.build) run over slices of hosts,
in worker processes, so that time scales down with the controller's cores and memory holds one slice.

    pass 1, per slice (worker)   prepare_host → the prepared hosts to a spool file (marshal); their fleet
                                 parts back
    fleet pass (this process)    plan_fleet → the fleet so far, each host's share of it
    pass 2, per slice (worker)   finish_host → each host's report.json text, its page details and its
                                 history row (spool files); back: its finished part, page row, supplied findings
    last (this process)          judge_fleet → the fleet's verdict; the run history is then recorded (a
                                 worker) while describe_fleet (cohorts, outliers) runs and report.json =
                                 head + hosts' texts + tail, report.html and its detail files are written

The result is the document `build_report` builds in memory, byte for byte (tests/report/test_pipeline.py).
Of all hosts at once, only their small parts are held (fleet parts, page rows, supplied fleet findings:
~10 KB a host, ~200 MiB at 10,000 synthetic hosts; the history rows come after them). Small runs
(under PARALLEL_FROM_HOSTS) take the same steps in this process.
"""

from __future__ import annotations

import gc
import json
import marshal
import multiprocessing
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from dropscope.build import (
    describe_fleet,
    finish_host,
    fleet_part,
    fleet_part_finished,
    inventory_groups,
    judge_fleet,
    plan_fleet,
    prepare_host,
    run_summary,
)
from dropscope.commands import ReplacedFolder, write_atomically
from dropscope.history import HistoryError, host_row, record_report
from dropscope.knowledge_base import KnowledgeBase
from dropscope.load import JSON, SCHEMA_VERSION, load_manifest, run_warnings
from dropscope.render_html import (
    DETAILS_DIR,
    detail_script,
    detail_text,
    details_inline,
    host_views,
    page_view,
    render_page,
    with_other_rows,
)
from dropscope.render_json import host_text, indented, report_head, report_tail

PARALLEL_FROM_HOSTS = 2_000  # below this, worker processes cost more than they save
SLICE_CHUNKS = 5  # a slice is this many chunks of the page's details (render_html.DETAIL_CHUNK hosts each)
READ_BYTES = 1 << 20
SPOOL_LENGTH_BYTES = 4  # the length before each value in a spool file (a host's is ~15 KB)
_CONTAINERS = frozenset((dict, list, tuple))

_knowledge: KnowledgeBase | None = None  # the knowledge base of this worker (set by _start_worker)


def _start_worker(knowledge: KnowledgeBase) -> None:
    global _knowledge  # noqa: PLW0603 (one worker process, one knowledge base)
    _knowledge = knowledge


def _start_worker_process(knowledge: KnowledgeBase) -> None:
    gc.disable()  # hosts are trees without cycles: reference counting frees them; see report.write_reports
    _start_worker(knowledge)


def _shared(value: Any, strings: dict[str, str]) -> Any:
    """VALUE (JSON-like: dicts, lists, tuples) with each string replaced by the first equal one in STRINGS
    (text → that string; filled as it goes). Hosts repeat the same names, keys and titles: a slice's result,
    shared so, is pickled with one copy of each and unpickled so (10,000 synthetic hosts: what this process
    holds of them, ~16 KB a host, becomes ~10 KB)."""
    # Strings and atoms inside a container are handled in place, without a call each (most values are leaves).
    # (No nested helper: a recursive closure is a reference cycle, which would keep STRINGS alive in a
    # worker, where the cyclic collector is off.)
    share = strings.setdefault
    kind = type(value)
    if kind is dict:
        return {share(key, key) if type(key) is str else key:
                share(item, item) if type(item) is str else _shared(item, strings) if type(item) in _CONTAINERS
                else item for key, item in value.items()}  # fmt: skip
    if kind is list or kind is tuple:
        items = [share(item, item) if type(item) is str else _shared(item, strings) if type(item) in _CONTAINERS
                 else item for item in value]  # fmt: skip
        return items if kind is list else tuple(items)
    return share(value, value) if kind is str else value


def _spool_write(handle: BinaryIO, value: Any) -> None:
    """Append VALUE (JSON-like) to a spool file: its length, then its marshal bytes (marshal: the spool is read
    back by this same Python, and both ways take about half the time of pickle)."""
    data = marshal.dumps(value)
    handle.write(len(data).to_bytes(SPOOL_LENGTH_BYTES, "little"))
    handle.write(data)


def _spooled(path: Path) -> Iterator[Any]:
    """The values `_spool_write` appended to PATH, in order (read one by one: a whole slice's bytes at once
    would stay in the worker's heap after they are freed)."""
    with open(path, "rb") as handle:
        while length := handle.read(SPOOL_LENGTH_BYTES):
            yield marshal.loads(handle.read(int.from_bytes(length, "little")))  # noqa: S302 (this run's own 0700 spool)


def _prepare_slice(task: tuple[Path, Path, int, list[Any], dict[str, list[str]]]) -> list[tuple[JSON, str, Any]]:
    """Pass 1 of hosts START… (ENTRIES of the manifest): their prepared entries to SPOOL/START.prepared."""
    run_dir, spool, start, entries, groups = task
    assert _knowledge is not None
    parts = []
    with open(spool / f"{start}.prepared", "wb") as prepared:
        for offset, entry in enumerate(entries):
            host, file, boot_id = prepare_host(run_dir, start + offset, entry, groups, _knowledge)
            _spool_write(prepared, host)
            parts.append((fleet_part(host), file, boot_id))
    return _shared(parts, {})


def _finish_slice(task: tuple[Path, int, list[JSON | None], bool, bool, int, bool]) -> JSON:
    """Pass 2 of hosts START… (SHARES: their `plan_fleet` shares): each host's report.json text to
    SPOOL/START.hosts, its details' chunks to SPOOL/details-N.json and (HISTORY) its run history row to
    SPOOL/START.history; returns the rest."""
    spool, start, shares, indent, other_rows, chunk_size, history = task
    out: JSON = {"finished": [], "supplied": [], "rows": [], "chunks": []}
    history_rows: list[JSON] = []

    def finished_hosts() -> Iterator[tuple[int, JSON, JSON | None]]:
        with open(spool / f"{start}.hosts", "w", encoding="utf-8") as texts:
            prepared = _spooled(spool / f"{start}.prepared")
            for offset, (share, host) in enumerate(zip(shares, prepared, strict=True)):
                out["supplied"] += finish_host(host, share)
                texts.write(host_text(host, start + offset, indent))
                out["finished"].append(fleet_part_finished(host))
                if history:
                    history_rows.append(host_row(host))
                yield start + offset, host, (share or {}).get("note")
        (spool / f"{start}.prepared").unlink()  # read: see _read_once

    for number, (rows, chunk) in enumerate(host_views(finished_hosts(), other_rows), start // chunk_size):
        text = detail_text(chunk)
        (spool / f"details-{number}.json").write_text(text, encoding="utf-8")
        out["rows"] += rows
        out["chunks"].append((number, len(text)))
    strings: dict[str, str] = {}
    if history:
        rows = _shared(history_rows, strings)
        with open(spool / f"{start}.history", "wb") as handle:
            _spool_write(handle, rows)
    return _shared(out, strings)


def _record_history(task: tuple[Path, str, JSON, Path, list[int]]) -> bool:
    """Record the run into the run history from the hosts' rows pass 2 spooled (SPOOL/START.history)."""
    history, name, recorded, spool, starts = task
    rows = [row for start in starts for rows in _spooled(spool / f"{start}.history") for row in rows]
    return record_report(history, name, recorded, rows)


class _Workers:
    """The worker processes of one report (none for WORKERS <= 1: the same functions run in this process)."""

    def __init__(self, knowledge: KnowledgeBase, workers: int) -> None:
        self.pool = None
        self.warning: str | None = None
        if workers > 1:
            # fork where it is safe (Linux): the workers start at once with this process's modules and knowledge
            context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
            try:
                self.pool = context.Pool(workers, _start_worker_process, (knowledge,))
            except (OSError, ImportError, NotImplementedError) as exc:  # e.g. a container without /dev/shm
                self.warning = f"the report was built in one process: worker processes could not start ({exc})"
        if self.pool is None:
            _start_worker(knowledge)

    def map(self, function: Any, tasks: list[Any]) -> list[Any]:
        """FUNCTION over TASKS, results in order."""
        if self.pool is None:
            return [function(task) for task in tasks]
        return self.pool.map(function, tasks, chunksize=1)

    def start(self, function: Any, task: Any) -> Callable[[], Any]:
        """FUNCTION(TASK) begun in a worker while this process goes on; returns what waits for its result."""
        if self.pool is None:
            return lambda: function(task)
        return self.pool.apply_async(function, (task,)).get

    def __enter__(self) -> _Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.terminate()  # every result was waited for; on an error, workers stop now
            self.pool.join()


def _read_once(path: Path) -> str:
    """The text of spool file PATH, which goes once read: the spool (~350 MB at 10,000 synthetic hosts) is
    freed as the reports are written, not all at the end while the run history is waited for."""
    text = path.read_text(encoding="utf-8")
    path.unlink()
    return text


def _report_bytes(head: JSON, spool: Path, starts: list[int], tail: JSON, indent: bool) -> Iterator[bytes]:
    """report.json's bytes: HEAD, the host texts pass 2 spooled for each slice (copied as they are), TAIL."""
    for text in report_head(head, indent):
        yield text.encode("utf-8")
    for start in starts:
        with open(spool / f"{start}.hosts", "rb") as handle:
            while data := handle.read(READ_BYTES):
                yield data
        (spool / f"{start}.hosts").unlink()  # copied: see _read_once
    yield report_tail(tail, indent, empty=not starts).encode("utf-8")


def write_run_reports(
    run_dir: Path, target: Path, knowledge: KnowledgeBase, history: Path | None = None, workers: int | None = None
) -> tuple[Path, Path, list[str]]:
    """Write TARGET/report.json and TARGET/report.html of RUN_DIR (and record it in HISTORY, an index path);
    returns their paths and the run's warnings. WORKERS: processes for the host passes (default: one per
    core from PARALLEL_FROM_HOSTS hosts, else none)."""
    from dropscope import render_html  # its DETAIL_CHUNK as set now (tests make it small)

    manifest = load_manifest(run_dir)
    entries = manifest["hosts"]
    groups = inventory_groups(manifest)
    chunk_size = render_html.DETAIL_CHUNK
    size = chunk_size * SLICE_CHUNKS
    starts = list(range(0, len(entries), size))
    if workers is None:
        workers = (os.cpu_count() or 1) if len(entries) >= PARALLEL_FROM_HOSTS else 1
    workers = max(1, min(workers, len(starts)))
    indent = indented(len(entries))
    target.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix=".dropscope-spool-", dir=target) as spool_name,
        _Workers(knowledge, workers) as pool,
    ):
        spool = Path(spool_name)
        tasks = [(run_dir, spool, start, entries[start : start + size], groups) for start in starts]
        prepared = pool.map(_prepare_slice, tasks)
        parts = [item for slice_parts in prepared for item in slice_parts]
        del prepared
        fleet, shares = plan_fleet([part for part, _, _ in parts], [boot_id for _, _, boot_id in parts])
        files = [file for _, file, _ in parts]
        del parts  # the fleet parts are done with (pass 2 holds more)
        other_rows = with_other_rows(len(entries))
        tasks = [(spool, start, shares[start : start + size], indent, other_rows, chunk_size, history is not None)
                 for start in starts]  # fmt: skip
        finished = pool.map(_finish_slice, tasks)
        del tasks, shares

        report: JSON = {"schema_version": SCHEMA_VERSION, "run": run_summary(manifest), "fleet": fleet}
        hosts = [part for out in finished for part in out["finished"]]
        judge_fleet(fleet, hosts, [item for out in finished for item in out["supplied"]])
        recorded = None
        if history is not None:  # recorded in a worker while this process describes the fleet and writes the reports
            task = (history, run_dir.resolve().name, {"run": report["run"], "fleet": {"verdict": fleet["verdict"]}},
                    spool, starts)  # fmt: skip
            recorded = pool.start(_record_history, task)
        knowledge_part = describe_fleet(fleet, hosts, knowledge)
        warnings = run_warnings(run_dir, files, [host["host"] for host in hosts])
        warnings += [pool.warning] if pool.warning else []
        tail = {"warnings": warnings, "knowledge": knowledge_part}
        json_path, html_path = target / "report.json", target / "report.html"
        write_atomically(json_path, _report_bytes(report, spool, starts, tail, indent), binary=True)

        report.update(tail)
        chunks = [chunk for out in finished for chunk in out["chunks"]]
        inline = details_inline(length for _, length in chunks)
        with ReplacedFolder(target / DETAILS_DIR) as details:
            for number, _ in chunks if not inline else []:
                text = _read_once(spool / f"details-{number}.json")
                details.write(f"{DETAILS_DIR}/{number}.js", detail_script(number, text))
            page_details = (
                [json.loads(_read_once(spool / f"details-{number}.json")) for number, _ in chunks]
                if inline
                else None
            )
            rows = [row for out in finished for row in out["rows"]]
            write_atomically(html_path, render_page(page_view(report, rows, page_details)))
        # What report.json and the page needed goes before the history rows may come (peak memory).
        del finished, hosts, rows, files, report, fleet, page_details, knowledge_part, tail
        if recorded is not None:
            try:
                recorded()
            except (HistoryError, OSError) as exc:
                warnings = [*warnings, f"the run was not recorded in the run history: {exc}"]
    return json_path, html_path, list(warnings)
