"""The run history: an index of built reports next to the runs, RUNS_DIR/history.sqlite (Python's sqlite3).

`dropscope report RUN_DIR` records its built report here after writing report.json and report.html;
`dropscope history rebuild RUNS_DIR` recreates the index from the run directories (each run's report.json
when it is a built report of this run, else the report built again). Data flows one way: the index is fed
from built reports only, never from host files; `dropscope trend` and `dropscope check`'s relative
thresholds read it. Tables: docs/run-format.md.

- Per run and host: the host's status and verdict; per host × item (a drop reason of the capture, or a drop
  counter: `build.drop_items`) its count and rate; per host × finding its severity, attribution, rate and
  count.
- A run is keyed by its directory's name and is never held twice: recording a run again replaces it, in
  one transaction.
- Concurrent writers (two reports at once, a report during a rebuild) take turns: WAL journal, one writer at
  a time (`BEGIN IMMEDIATE`), a busy timeout of BUSY_TIMEOUT_S seconds.
- Run directories that cannot be indexed (half-written, another schema version, unreadable) are skipped
  with their name and the reason.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import json
import math
import operator
import os
import sqlite3
import struct
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dropscope.build import build_report, drop_items
from dropscope.commands import add_command, knowledge_from
from dropscope.knowledge_base import KnowledgeBase, KnowledgeError
from dropscope.load import JSON, SCHEMA_VERSION, RunError, load_manifest, read_json
from dropscope.sampling import finding_one_in

INDEX_NAME = "history.sqlite"
INDEX_SCHEMA = 1
BUSY_TIMEOUT_S = 120.0
RATE_DECIMALS = 3
EXIT_OK, EXIT_BAD_INPUT = 0, 2
SUMMARY = "the run history index (RUNS_DIR/history.sqlite): rebuild it from the run directories"

CHUNK = 64  # runs per packed row: a row holds one host's (or series') values of up to CHUNK consecutive run ids
TABLES = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, run_id TEXT, started TEXT, time REAL,
                   hosts INTEGER NOT NULL, verdict TEXT, recorded REAL NOT NULL);
CREATE TABLE hosts (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE series (id INTEGER PRIMARY KEY, host INTEGER NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL,
                     section TEXT, object TEXT, item TEXT NOT NULL, UNIQUE (host, kind, name));
CREATE TABLE titles (key TEXT PRIMARY KEY, title TEXT) WITHOUT ROWID;
CREATE TABLE host_runs (host INTEGER NOT NULL, chunk INTEGER NOT NULL, runs BLOB NOT NULL, codes BLOB NOT NULL,
                        PRIMARY KEY (host, chunk));
CREATE INDEX host_runs_by_chunk ON host_runs (chunk);
CREATE TABLE points (series INTEGER NOT NULL, chunk INTEGER NOT NULL, runs BLOB NOT NULL, counts BLOB NOT NULL,
                     rates BLOB NOT NULL, PRIMARY KEY (series, chunk));
CREATE INDEX points_by_chunk ON points (chunk);
CREATE TABLE findings (host INTEGER NOT NULL, key TEXT NOT NULL, chunk INTEGER NOT NULL, runs BLOB NOT NULL,
                       codes BLOB NOT NULL, rates BLOB NOT NULL, counts BLOB NOT NULL,
                       PRIMARY KEY (host, key, chunk));
CREATE INDEX findings_by_chunk ON findings (chunk);
"""
# Packed rows: per key, the run ids of its chunk and one value per run id, each column an array (machine
# byte order: the index stays on the machine that wrote it; `history rebuild` makes a new one elsewhere).
PACKED = {
    "host_runs": (("host",), "iB"),  # runs, codes: status × 8 + verdict
    "points": (("series",), "iqd"),  # runs, counts, rates (NaN: no rate)
    # runs, codes: sampling × 16 + severity × 4 + attribution, rates (NaN: none), counts
    "findings": (("host", "key"), "iBdq"),
}
PACKED_SQL = {
    "host_runs": (
        "SELECT host, runs, codes FROM host_runs WHERE chunk = ?",
        "INSERT OR REPLACE INTO host_runs VALUES (?, ?, ?, ?)",
        "DELETE FROM host_runs WHERE host = ? AND chunk = ?",
    ),
    "points": (
        "SELECT series, runs, counts, rates FROM points WHERE chunk = ?",
        "INSERT OR REPLACE INTO points VALUES (?, ?, ?, ?, ?)",
        "DELETE FROM points WHERE series = ? AND chunk = ?",
    ),
    "findings": (
        "SELECT host, key, runs, codes, rates, counts FROM findings WHERE chunk = ?",
        "INSERT OR REPLACE INTO findings VALUES (?, ?, ?, ?, ?, ?, ?)",
        "DELETE FROM findings WHERE host = ? AND key = ? AND chunk = ?",
    ),
}
STATUSES = ("ok", "unreachable", "failed")
VERDICTS = ("ok", "warning", "problem", "unknown", None)
SEVERITIES = ("info", "warning", "problem")
ATTRIBUTIONS = ("host", "kernel-wide", "kernel")
# A stored code (one byte) → its words.
STATUS_OF = tuple(STATUSES[code // 8] if code // 8 < len(STATUSES) else None for code in range(256))
VERDICT_OF = tuple(VERDICTS[code % 8] if code % 8 < len(VERDICTS) else None for code in range(256))
SEVERITY_OF = tuple(SEVERITIES[code % 16 // 4] if code % 16 // 4 < len(SEVERITIES) else None for code in range(256))
ATTRIBUTION_OF = tuple(ATTRIBUTIONS[code % 4] if code % 4 < len(ATTRIBUTIONS) else None for code in range(256))
# A finding's sampling (its count an estimate of 1 in N drops counted: sampling.finding_one_in) is kept as
# log2(N), rounded up (the rate guard's N is a power of two ≤ 64), in the code's high bits: 0, exact, is
# what indexes written before it hold.
SAMPLED_OF = tuple(1 << (code // 16) for code in range(256))
# Words → their codes.
STATUS_CODE, VERDICT_CODE, SEVERITY_CODE, ATTRIBUTION_CODE = (
    {word: code for code, word in enumerate(words)} for words in (STATUSES, VERDICTS, SEVERITIES, ATTRIBUTIONS)
)


class HistoryError(Exception):
    """The index cannot be used (missing, not an index, another index schema, locked for too long)."""


@dataclass(frozen=True)
class Run:
    """One indexed run; `order` sorts runs by start time (then name)."""

    id: int
    name: str
    run_id: str | None
    started: str | None
    time: float | None
    hosts: int
    verdict: str | None
    recorded: float

    @property
    def order(self) -> tuple[float, str]:
        return (self.time if self.time is not None else self.recorded, self.name)


def index_path(runs_dir: Path) -> Path:
    """The index of the runs in RUNS_DIR."""
    return runs_dir / INDEX_NAME


def start_time(started: Any) -> float | None:
    """Seconds since the epoch of a manifest's `started` (ISO 8601; UTC without a zone), None if unknown.

    >>> start_time("2026-11-27T03:05:01.20+00:00"), start_time("2026-11-27"), start_time("soon")
    (1795748701.2, 1795737600.0, None)
    """
    if not isinstance(started, str):
        return None
    try:
        moment = datetime.fromisoformat(started)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def host_items(host: Mapping[str, Any]) -> dict[tuple[str, str], JSON]:
    """(kind, name) → {section, object, item, count, rate} of a report host, as the index keeps them (rates
    rounded to RATE_DECIMALS). Check compares a run with its history through this one function."""
    items = {}
    for item in drop_items(host).values():
        rate = item["rate"]
        items[(item["kind"], item["name"])] = {
            "section": item["section"], "object": item["object"], "item": item["item"], "count": item["count"],
            "rate": None if rate is None else round(rate, RATE_DECIMALS),
        }  # fmt: skip
    return items


# --------------------------------------------------------------------------------------------------
# Opening the index


def _fail(path: Path, exc: sqlite3.Error) -> HistoryError:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return HistoryError(f"{path}: the history index stayed locked by another writer for {BUSY_TIMEOUT_S:g} s")
    return HistoryError(f"{path}: not a usable history index ({text}); `dropscope history rebuild` recreates it")


@contextlib.contextmanager
def write_transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One writer at a time: BEGIN IMMEDIATE (waits up to the busy timeout), COMMIT or ROLLBACK."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _schema_state(connection: sqlite3.Connection) -> str:
    """The state of the file: "empty", "ok" or a description of what else it holds."""
    tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        return "empty"
    if "meta" not in tables:
        return f"tables {', '.join(sorted(tables))} (not a dropscope history index)"
    row = connection.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    if row is None or row[0] != str(INDEX_SCHEMA):
        return f"index schema {row[0] if row else 'unknown'} (this dropscope keeps schema {INDEX_SCHEMA})"
    return "ok"


def _create_tables(connection: sqlite3.Connection) -> None:
    for statement in TABLES.split(";"):
        if statement.strip():
            connection.execute(statement)
    connection.execute("INSERT INTO meta (key, value) VALUES ('schema', ?)", (str(INDEX_SCHEMA),))


def open_index(path: Path, *, create: bool = True, recreate: bool = False) -> sqlite3.Connection:
    """A connection to the index at PATH (autocommit: writers use `write_transaction`).

    CREATE makes a missing index; RECREATE drops whatever tables the file holds (another index schema) and
    starts empty. Raises HistoryError for a missing index (without CREATE), a file that is not an index,
    or one of another schema.
    """
    if not create and not path.is_file():
        raise HistoryError(
            f"{path}: no history index (`dropscope report` records each run into it; "
            "`dropscope history rebuild RUNS_DIR` creates it from the run directories)"
        )
    try:
        connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as exc:
        raise _fail(path, exc) from None
    try:
        connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        if connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")
        state = _schema_state(connection)
        if state == "ok" and not recreate:
            return connection
        if state != "empty" and not recreate:
            raise HistoryError(f"{path}: holds {state}; `dropscope history rebuild RUNS_DIR` recreates it")
        with write_transaction(connection):
            state = _schema_state(connection)  # another writer may have created it meanwhile
            if recreate:
                for (table,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
                    connection.execute(f'DROP TABLE "{table}"')
                state = "empty"
            if state == "empty":
                _create_tables(connection)
            elif state != "ok":
                raise HistoryError(f"{path}: holds {state}; `dropscope history rebuild RUNS_DIR` recreates it")
        return connection
    except sqlite3.Error as exc:
        connection.close()
        raise _fail(path, exc) from None
    except BaseException:
        connection.close()
        raise


# --------------------------------------------------------------------------------------------------
# Writing


def host_row(host: Mapping[str, Any]) -> JSON:
    """What the index keeps of one built host entry."""
    findings: dict[str, JSON] = {}
    for finding in host.get("findings") or []:
        findings.setdefault(finding["key"], finding)  # findings are worst first: the first of a key wins
    return {
        "host": host["host"], "status": host["status"], "verdict": host.get("verdict"),
        "items": [(kind, name, item["section"], item["object"], item["item"], item["count"], item["rate"])
                  for (kind, name), item in (host_items(host) if host["status"] == "ok" else {}).items()],
        "findings": [(key, f.get("title"), f["severity"], f["attribution"], f["evidence"].get("rate"),
                      f["evidence"].get("count"), finding_one_in(f, host.get("capture")))
                     for key, f in findings.items()],
    }  # fmt: skip


def run_rows(report: Mapping[str, Any], hosts: list[JSON] | None = None) -> JSON:
    """What the index keeps of a built report (computed before the write transaction, which stays short);
    HOSTS: its hosts' `host_row`s where already made (the report's own hosts are then not read)."""
    run = report.get("run") or {}
    return {"run_id": run.get("run_id"), "started": run.get("started"),
            "hosts": hosts if hosts is not None else [host_row(host) for host in report["hosts"]],
            "verdict": (report.get("fleet") or {}).get("verdict")}  # fmt: skip


ID_STATEMENTS = {
    "hosts": ("INSERT OR IGNORE INTO hosts (name) VALUES (?)", "SELECT id, name FROM hosts"),
    "series": (
        "INSERT OR IGNORE INTO series (host, kind, name, section, object, item) VALUES (?, ?, ?, ?, ?, ?)",
        "SELECT id, host, kind, name, section, object, item FROM series",
    ),
}


def _ids(connection: sqlite3.Connection, table: str, keys: list[tuple]) -> dict[tuple, int]:
    """KEYS (the key columns of TABLE, hosts or series) → their row ids, inserting the missing ones."""
    insert, select = ID_STATEMENTS[table]
    connection.executemany(insert, keys)
    found: dict[tuple, int] = dict.fromkeys(keys)  # type: ignore[arg-type]  (each filled in below)
    for row in connection.execute(select):
        key = row[1:]
        if key in found:  # the caller's own key object stays the key (not a copy of its strings per row)
            found[key] = row[0]
    return found


def record_run(
    connection: sqlite3.Connection, name: str, report: Mapping[str, Any], hosts: list[JSON] | None = None
) -> bool:
    """Record the built REPORT of run directory NAME (HOSTS: see `run_rows`); True if it replaced an earlier
    record of that run."""
    rows = run_rows(report, hosts)
    with write_transaction(connection):
        return _write_rows(connection, name, rows)


def _code(codes: dict[Any, int], value: Any, what: str) -> int:
    try:
        return codes[value]
    except (KeyError, TypeError):  # TypeError: not even hashable
        raise HistoryError(f"the run history does not know the {what} {value!r}") from None


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _write_rows(connection: sqlite3.Connection, name: str, rows: JSON) -> bool:
    replaced = _delete_run(connection, name)
    cursor = connection.execute(
        "INSERT INTO runs (name, run_id, started, time, hosts, verdict, recorded) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (name, rows["run_id"], rows["started"], start_time(rows["started"]), len(rows["hosts"]), rows["verdict"],
         time.time()),
    )  # fmt: skip
    run = cursor.lastrowid
    host_ids = _ids(connection, "hosts", [(host["host"],) for host in rows["hosts"]])
    host_runs: dict[tuple, tuple] = {}
    findings: dict[tuple, tuple] = {}
    titles: dict[str, str | None] = {}
    points: dict[tuple, tuple] = {}
    for host in rows["hosts"]:
        host_id = host_ids[(host["host"],)]
        if (host_id,) in host_runs:  # a host listed twice in one run: the first entry counts (as in compare)
            continue
        status = _code(STATUS_CODE, host["status"], "host status") * 8 + _code(VERDICT_CODE, host["verdict"], "verdict")
        host_runs[(host_id,)] = (status,)
        for key, title, severity, attribution, rate, count, sampled in host["findings"]:
            code = _code(SEVERITY_CODE, severity, "severity") * 4 + _code(ATTRIBUTION_CODE, attribution, "attribution")
            code += min((sampled - 1).bit_length(), 15) * 16
            findings[(host_id, key)] = (code, _nan(rate), count or 0)
            titles[key] = title
        for kind, item_name, section, obj, item, count, rate in host["items"]:
            points[(host_id, kind, item_name, section, obj, item)] = (count, _nan(rate))
    series_ids = _ids(connection, "series", list(points))
    _append(connection, "host_runs", run, host_runs.items())
    _append(connection, "points", run, (((series_ids[key],), values) for key, values in points.items()))
    _append(connection, "findings", run, findings.items())
    connection.executemany("INSERT OR REPLACE INTO titles VALUES (?, ?)", list(titles.items()))
    return replaced


def _unpack(table: str, blobs: Sequence[bytes]) -> list[array.array]:
    columns = []
    for typecode, blob in zip(PACKED[table][1], blobs, strict=True):
        column = array.array(typecode)
        column.frombytes(blob)
        columns.append(column)
    return columns


def _append(connection: sqlite3.Connection, table: str, run: int, entries: Iterable[tuple[tuple, tuple]]) -> None:
    """Add run RUN's values ((key, values) pairs, one per key) to the packed rows of TABLE (each column's bytes
    extended). The rows go to SQLite as they are made (a run of 10,000 hosts has ~100,000 points)."""
    chunk = run // CHUNK
    keys, typecodes = len(PACKED[table][0]), PACKED[table][1]
    packers = [struct.Struct("=" + typecode).pack for typecode in typecodes[1:]]  # array's sizes, native order
    run_bytes = struct.pack("=" + typecodes[0], run)
    select, upsert, _ = PACKED_SQL[table]
    existing = {row[:keys]: row[keys:] for row in connection.execute(select, (chunk,))}

    # map(), not a comprehension per row: ~200,000 rows for a run of 10,000 hosts
    def rows() -> Iterator[tuple]:
        for key, values in entries:
            old = existing.get(key)
            if old is None:  # the key's first run in this chunk (every key of a new chunk): no bytes to extend
                yield (*key, chunk, run_bytes, *map(operator.call, packers, values))
            else:
                added = map(operator.add, old[1:], map(operator.call, packers, values))
                yield (*key, chunk, old[0] + run_bytes, *added)

    connection.executemany(upsert, rows())


def _remove(connection: sqlite3.Connection, table: str, run: int) -> None:
    """Take run RUN's values out of the packed rows of TABLE."""
    chunk = run // CHUNK
    keys = len(PACKED[table][0])
    select, upsert, delete = PACKED_SQL[table]
    for row in connection.execute(select, (chunk,)).fetchall():
        columns = _unpack(table, row[keys:])
        if run not in columns[0]:
            continue
        keep = [index for index, value in enumerate(columns[0]) if value != run]
        if not keep:
            connection.execute(delete, (*row[:keys], chunk))
            continue
        kept = [array.array(column.typecode, [column[index] for index in keep]) for column in columns]
        connection.execute(upsert, (*row[:keys], chunk, *(column.tobytes() for column in kept)))


def _delete_run(connection: sqlite3.Connection, name: str) -> bool:
    row = connection.execute("SELECT id FROM runs WHERE name = ?", (name,)).fetchone()
    if row is None:
        return False
    for table in PACKED:
        _remove(connection, table, row[0])
    connection.execute("DELETE FROM runs WHERE id = ?", row)
    return True


# --------------------------------------------------------------------------------------------------
# Reading


def runs(connection: sqlite3.Connection) -> list[Run]:
    """Every indexed run, oldest first (by start time, then name)."""
    found = [Run(*row) for row in connection.execute(
        "SELECT id, name, run_id, started, time, hosts, verdict, recorded FROM runs")]  # fmt: skip
    return sorted(found, key=lambda run: run.order)


def host_names(connection: sqlite3.Connection) -> dict[int, str]:
    """Host id → name."""
    return dict(connection.execute("SELECT id, name FROM hosts"))


def _id_list(values: Iterable[int]) -> str:
    """A JSON list of ids for `IN (SELECT value FROM json_each(?))`."""
    return json.dumps([int(value) for value in values])


READ_SQL = {
    "statuses": ("SELECT host, runs, codes FROM host_runs", "host IN (SELECT value FROM json_each(?))"),
    "points": (
        "SELECT series, runs, counts, rates FROM points",
        "series IN (SELECT id FROM series WHERE host IN (SELECT value FROM json_each(?)))",
    ),
    "findings": (
        "SELECT host, key, runs, codes, rates, counts FROM findings",
        "host IN (SELECT value FROM json_each(?))",
    ),
}
READ_TABLE = {"statuses": "host_runs", "points": "points", "findings": "findings"}


def grouped(
    connection: sqlite3.Connection,
    what: str,
    run_ids: Iterable[int] | None,
    host_ids: Iterable[int] | None,
    decoded: bool = True,
) -> Iterator[tuple]:
    """Values of WHAT ("statuses", "points" or "findings"), one row per key and chunk of runs, for the chunks
    of the given runs and the given hosts (None: all); rows may hold other runs of their chunk too:

    - statuses: (host, [run…], [status…], [verdict…])
    - points: (series, [run…], [count…], [rate…])  (rate NaN: none)
    - findings: (host, key, [run…], [severity…], [attribution…], [rate…], [count…])  (rate NaN: none)

    Not DECODED: statuses (host, [run…], [code…]) and findings (host, key, [run…], [code…], [rate…], [count…]),
    each code the index of its words in STATUS_OF / VERDICT_OF, SEVERITY_OF / ATTRIBUTION_OF (and SAMPLED_OF).
    """
    select, host_condition = READ_SQL[what]
    table = READ_TABLE[what]
    keys = len(PACKED[table][0])
    conditions, parameters = [], []
    if run_ids is not None:
        conditions.append("chunk IN (SELECT value FROM json_each(?))")
        parameters.append(json.dumps(sorted({int(run) // CHUNK for run in run_ids})))
    if host_ids is not None:
        conditions.append(host_condition)
        parameters.append(_id_list(host_ids))
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    for row in connection.execute(f"{select}{where}", parameters):  # noqa: S608 (constant fragments; values are parameters)
        columns = [column.tolist() for column in _unpack(table, row[keys:])]
        if decoded and what == "statuses":
            codes = columns.pop()
            columns += [[STATUS_OF[code] for code in codes], [VERDICT_OF[code] for code in codes]]
        elif decoded and what == "findings":
            codes = columns.pop(1)
            columns[1:1] = [[SEVERITY_OF[code] for code in codes], [ATTRIBUTION_OF[code] for code in codes]]
        yield (*row[:keys], *columns)


def series(connection: sqlite3.Connection) -> dict[int, tuple[int, str, str, str | None, str | None, str]]:
    """Series id → (host, kind, name, section, object, item)."""
    return {row[0]: row[1:] for row in connection.execute(
        "SELECT id, host, kind, name, section, object, item FROM series")}  # fmt: skip


def titles(connection: sqlite3.Connection) -> dict[str, str | None]:
    """Finding key → its title (as last recorded)."""
    return dict(connection.execute("SELECT key, title FROM titles"))


Baseline = list[tuple[str, dict[tuple[str, str], tuple[int, float | None]]]]


def baselines(
    connection: sqlite3.Connection, current: str, started: str | None, depth: int
) -> tuple[dict[str, Baseline], int]:
    """For each host, its last DEPTH diagnosed runs before run CURRENT, newest first: [(run name,
    {(kind, name): (count, rate)})]; and how many runs come before CURRENT.

    "Before" is by start time (STARTED, the current run's manifest time), then name; CURRENT itself (if it
    is indexed) never counts. A run where the host was not diagnosed (unreachable, failed) is passed over.
    """
    indexed = runs(connection)
    mine = next((run for run in indexed if run.name == current), None)
    moment = start_time(started)
    order = mine.order if mine is not None else (moment if moment is not None else time.time(), current)
    earlier = [run for run in indexed if run.order < order and run.name != current]
    if not earlier or depth <= 0:
        return {}, len(earlier)
    rank = {run.id: index for index, run in enumerate(earlier)}
    wanted: dict[int, list[int]] = {}
    for host, run_ids, statuses, _ in grouped(connection, "statuses", rank, None):
        diagnosed = [run for run, status in zip(run_ids, statuses, strict=True) if status == "ok" and run in rank]
        wanted.setdefault(host, []).extend(diagnosed)
    for host, diagnosed in wanted.items():
        wanted[host] = sorted(diagnosed, key=lambda run: -rank[run])[:depth]
    values: dict[tuple[int, int], dict[tuple[str, str], tuple[int, float | None]]] = {}
    all_series = series(connection)
    needed = {run for host_runs in wanted.values() for run in host_runs}
    for series_id, run_ids, counts, rates in grouped(connection, "points", needed, None):
        host, kind, name = all_series[series_id][:3]
        for run, count, rate in zip(run_ids, counts, rates, strict=True):
            values.setdefault((run, host), {})[(kind, name)] = (count, None if math.isnan(rate) else rate)
    names = host_names(connection)
    by_id = {run.id: run.name for run in earlier}
    result = {
        names[host]: [(by_id[run], values.get((run, host), {})) for run in host_runs]
        for host, host_runs in wanted.items()
        if host_runs
    }
    return result, len(earlier)


# --------------------------------------------------------------------------------------------------
# Run directories → the index


def run_directories(runs_dir: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """The run directories under RUNS_DIR (sorted by name) and the half-written ones (name, reason).

    A run directory is written under a hidden `.RUN_ID.partial-…` name and renamed when complete; other
    hidden directories are not runs.
    """
    candidates, half = [], []
    for path in sorted(runs_dir.iterdir()):
        if not path.is_dir():
            continue
        if path.name.startswith("."):
            if ".partial-" in path.name:
                half.append((path.name, "half-written (a run being written, or left by an interrupted one)"))
            continue
        candidates.append(path)
    return candidates, half


def indexable_report(run_dir: Path, knowledge: KnowledgeBase | None) -> tuple[JSON, str]:
    """The built report of RUN_DIR and where it came from ("report.json" or "built"); RunError if the run
    directory cannot be indexed (no manifest: half-written or not a run; another schema; unreadable)."""
    manifest = load_manifest(run_dir)
    if knowledge is None and (run_dir / "report.json").is_file():
        try:
            report = read_json(run_dir / "report.json", str(run_dir / "report.json"))
        except ValueError:
            report = None
        if (
            isinstance(report, dict)
            and report.get("schema_version") == SCHEMA_VERSION
            and isinstance(report.get("run"), dict)
            and report["run"].get("run_id") == manifest.get("run_id")
            and isinstance(report.get("hosts"), list)
        ):
            return report, "report.json"
    return build_report(run_dir, knowledge), "built"


def index_runs(
    connection: sqlite3.Connection,
    runs_dir: Path,
    knowledge: KnowledgeBase | None = None,
    only_missing: bool = True,
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Index the run directories of RUNS_DIR (ONLY_MISSING: those the index does not hold yet).

    Returns (indexed: [(name, source)], skipped: [(name, reason)]).
    """
    candidates, skipped = run_directories(runs_dir)
    known = {run.name for run in runs(connection)} if only_missing else set()
    indexed = []
    for run_dir in candidates:
        if run_dir.name in known:
            continue
        try:
            report, source = indexable_report(run_dir, knowledge)
            rows = run_rows(report)
        except RunError as exc:
            skipped.append((run_dir.name, _reason(run_dir, str(exc))))
            continue
        except (KeyError, TypeError, ValueError) as exc:
            skipped.append((run_dir.name, f"report.json is not a built report ({type(exc).__name__}: {exc})"))
            continue
        with write_transaction(connection):
            _write_rows(connection, run_dir.name, rows)
        indexed.append((run_dir.name, source))
    return indexed, sorted(skipped)


def _reason(run_dir: Path, message: str) -> str:
    """A RunError's message, with the run directory's path left out (the name is printed beside it)."""
    prefix = f"{run_dir}/"
    message = message.replace(prefix, "")
    if message.startswith("manifest.json: file is missing"):
        return "no manifest.json (half-written, or not a run directory)"
    return message


def record_report(path: Path, name: str, report: Mapping[str, Any], hosts: list[JSON] | None = None) -> bool:
    """Open (or create) the index at PATH and record the built REPORT of run NAME (HOSTS: see `run_rows`);
    True if it replaced one."""
    connection = open_index(path)
    try:
        return record_run(connection, name, report, hosts)
    except sqlite3.Error as exc:
        raise _fail(path, exc) from None
    finally:
        connection.close()


# --------------------------------------------------------------------------------------------------
# `dropscope history rebuild RUNS_DIR`


def add_arguments(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register the `history` sub-command (`history rebuild RUNS_DIR`)."""
    parser = add_command(subparsers, "history", _needs_action, SUMMARY, __doc__)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    rebuild = actions.add_parser(
        "rebuild", help="recreate RUNS_DIR/history.sqlite from the run directories in RUNS_DIR",
        description="Recreate RUNS_DIR/history.sqlite from the run directories in RUNS_DIR. Run directories "
        "that cannot be indexed are skipped, each with its name and the reason.",
    )  # fmt: skip
    rebuild.add_argument("runs_dir", metavar="RUNS_DIR", type=Path, help="the directory that holds the runs")
    rebuild.set_defaults(func=run_rebuild)
    return parser


def _needs_action(args: argparse.Namespace) -> int:  # argparse requires ACTION; kept for completeness
    print("dropscope history: an action is needed (rebuild)", file=sys.stderr)
    return EXIT_BAD_INPUT


def print_skipped(command: str, skipped: Iterable[tuple[str, str]]) -> None:
    """One line per run directory that was not indexed: its name and the reason."""
    for name, reason in skipped:
        print(f"dropscope {command}: skipped {name}: {reason}", file=sys.stderr)


def run_rebuild(args: argparse.Namespace) -> int:
    """Entry point of `dropscope history rebuild`: 0 rebuilt (skipped runs are listed), 2 bad input."""
    runs_dir: Path = args.runs_dir
    if not runs_dir.is_dir():
        print(f"dropscope history: {runs_dir}: not a directory (expected the directory holding the runs)",
              file=sys.stderr)  # fmt: skip
        return EXIT_BAD_INPUT
    path = index_path(runs_dir)
    try:
        knowledge = knowledge_from(args) if args.knowledge is not None else None
        if path.is_file() and not _is_sqlite(path):
            remove_index(path)  # not a database at all (a copy gone wrong): nothing in it to keep
        connection = open_index(path, recreate=True)
    except (HistoryError, KnowledgeError, OSError) as exc:
        print(f"dropscope history: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        indexed, skipped = index_runs(connection, runs_dir, knowledge, only_missing=False)
    except sqlite3.Error as exc:
        print(f"dropscope history: {_fail(path, exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        print(f"dropscope history: cannot read {runs_dir}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        connection.close()
    print_skipped("history", skipped)
    print(json.dumps({"index": str(path), "runs": len(indexed), "skipped": len(skipped)}))
    return EXIT_OK


def _is_sqlite(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(16) == b"SQLite format 3\x00"


def remove_index(path: Path) -> None:
    """Delete an index file and its WAL companions (tests and benchmarks start afresh with it)."""
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")
