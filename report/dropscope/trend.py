"""`dropscope trend RUNS_DIR`: the runs over time, from the run history (RUNS_DIR/history.sqlite).

Writes trend.json and trend.html into RUNS_DIR (or --output-dir): per host × drop reason / drop counter, the
series of its count and rate over the runs, and the first and last run that saw it (within the runs shown);
per host × finding, its severity in each run and the first and last run it was in. trend.html draws a small
chart per series (inline SVG: no script, nothing loaded from anywhere).

Run directories the index does not hold yet (e.g. runs from before the history, or copied in) are indexed
first; those that cannot be (half-written, another schema version, unreadable) are skipped, each named with
the reason.

Filters: --hosts GLOB[,GLOB…] (host names), --since WHEN (an ISO date or time, UTC unless it says otherwise,
or a run's name: runs started then or later), --last N (the newest N runs of those).

The newest run is compared with the baseline — the run before it, or --baseline RUN — by the rule of
`dropscope compare` (a finding attributed to the host, of severity warning or problem, is new, its severity
rose, or its rate grew by more than --threshold percent).

Exit codes: 0 not worse (better or the same), 1 the newest run is worse than the baseline, 2 bad input.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from dropscope.commands import add_command, knowledge_from, write_atomically
from dropscope.compare import DEFAULT_THRESHOLD_PCT, add_threshold_argument, counted, finding_change, host_change
from dropscope.formatting import format_rate
from dropscope.history import (
    ATTRIBUTION_OF,
    CHUNK,
    SAMPLED_OF,
    SEVERITY_OF,
    STATUS_OF,
    HistoryError,
    Run,
    grouped,
    host_names,
    index_path,
    index_runs,
    open_index,
    print_skipped,
    runs,
    series,
    start_time,
    titles,
)
from dropscope.knowledge_base import SEVERITY_RANK, KnowledgeError
from dropscope.load import JSON, SCHEMA_VERSION
from dropscope.sampling import estimate_fields

SUMMARY = "the runs over time from the run history: trend.json, trend.html; exit 1 if the newest run is worse"
EXIT_NOT_WORSE, EXIT_WORSE, EXIT_BAD_INPUT = 0, 1, 2
HTML_HOSTS = 200  # hosts drawn in trend.html (worst first); trend.json has all
HTML_SERIES = 12  # series drawn per host (largest newest rate first)
SPARK_WIDTH, SPARK_HEIGHT, SPARK_POINTS = 160, 28, 120
CHANGE_ORDER = {"worse": 0, "incomplete": 1, "better": 2, "same": 3}


class TrendError(ValueError):
    """Bad filters (the message says which)."""


def add_arguments(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register the `trend` sub-command."""
    parser = add_command(subparsers, "trend", run_trend, SUMMARY, __doc__)
    parser.add_argument("runs_dir", metavar="RUNS_DIR", type=Path, help="the directory that holds the runs")
    parser.add_argument(
        "--hosts", metavar="GLOBS", default=None, help="only hosts matching these globs (comma-separated)"
    )
    parser.add_argument("--since", metavar="WHEN", default=None, help="only runs started at WHEN or later")
    parser.add_argument("--last", metavar="N", type=int, default=None, help="only the newest N runs")
    parser.add_argument("--baseline", metavar="RUN", default=None, help="compare the newest run with this run")
    add_threshold_argument(parser)
    parser.add_argument(
        "--output-dir", metavar="DIR", type=Path, default=None, help="where trend.json/.html go (default RUNS_DIR)"
    )
    return parser


# --------------------------------------------------------------------------------------------------
# The trend document


def select_runs(indexed: Sequence[Run], since: str | None, last: int | None) -> list[Run]:
    """The runs the filters keep, oldest first."""
    selected = list(indexed)
    if since is not None:
        named = next((run for run in indexed if run.name == since), None)
        if named is not None:
            selected = [run for run in selected if run.order >= named.order]
        else:
            moment = start_time(since)
            if moment is None:
                raise TrendError(f"--since {since!r} is neither an ISO date or time nor the name of an indexed run")
            selected = [run for run in selected if run.order[0] >= moment]
    if last is not None:
        selected = selected[-last:] if last > 0 else []
    return selected


def _run_brief(run: Run) -> JSON:
    return {"name": run.name, "run_id": run.run_id, "started": run.started, "hosts": run.hosts, "verdict": run.verdict}


def _seen(values: Sequence[Any], names: Sequence[str], present: Any) -> tuple[str | None, str | None, int]:
    """First and last run name where PRESENT(value) holds, and how many runs."""
    hits = [index for index, value in enumerate(values) if present(value)]
    if not hits:
        return None, None, 0
    return names[hits[0]], names[hits[-1]], len(hits)


def trend_document(
    connection: sqlite3.Connection,
    *,
    hosts: Sequence[str] | None = None,
    since: str | None = None,
    last: int | None = None,
    baseline: str | None = None,
    threshold_pct: float = DEFAULT_THRESHOLD_PCT,
) -> JSON:
    """trend.json from the index (raises TrendError for bad filters or an empty selection)."""
    indexed = runs(connection)
    selected = select_runs(indexed, since, last)
    if not selected:
        raise TrendError("no indexed run matches the filters" if indexed else "the run history holds no run")
    newest = selected[-1]
    if baseline is not None:
        base = next((run for run in indexed if run.name == baseline), None)
        if base is None:
            raise TrendError(f"--baseline {baseline!r} is not an indexed run")
    else:
        base = selected[-2] if len(selected) > 1 else None
    names = [run.name for run in selected]
    column = {run.id: index for index, run in enumerate(selected)}
    width = len(selected)

    all_hosts = host_names(connection)
    wanted = {
        host_id: name
        for host_id, name in all_hosts.items()
        if hosts is None or any(fnmatch.fnmatchcase(name, pattern) for pattern in hosts)
    }
    host_filter = list(wanted) if hosts is not None else None
    extra = [base.id] if base is not None and base.id not in column else []
    run_filter = None if len(selected) == len(indexed) else [*column, *extra]
    base_id = base.id if base is not None else None

    dense = _dense_chunks(selected, column)

    statuses: dict[int, list[str | None]] = {}
    base_status: dict[int, str | None] = {}
    for host, run_ids, codes in grouped(connection, "statuses", run_filter, host_filter, decoded=False):
        row = statuses.setdefault(host, [None] * width)
        first = _span(run_ids, dense)
        if first is not None:
            row[first : first + len(codes)] = map(STATUS_OF.__getitem__, codes)
        else:
            for run, code in zip(run_ids, codes, strict=True):
                index = column.get(run)
                if index is not None:
                    row[index] = STATUS_OF[code]
        if base_id in run_ids:
            base_status[host] = STATUS_OF[codes[run_ids.index(base_id)]]
    statuses = {host: row for host, row in statuses.items() if any(row)}

    # Series: a run where the host was diagnosed and the item did not move is 0; not diagnosed is null.
    counts_template = {host: [0 if status == "ok" else None for status in row] for host, row in statuses.items()}
    rates_template = {host: [None if v is None else 0.0 for v in row] for host, row in counts_template.items()}
    all_series = series(connection)
    found: dict[int, JSON] = {}
    for series_id, run_ids, counts, rates in grouped(connection, "points", run_filter, host_filter):
        host = all_series[series_id][0]
        if host not in statuses:
            continue
        first = _span(run_ids, dense)
        if first is None and not any(run in column for run in run_ids):
            continue
        entry = found.get(series_id)
        if entry is None:
            _, kind, name, section, obj, item = all_series[series_id]
            entry = found[series_id] = {
                "host": host, "kind": kind, "name": name, "section": section, "object": obj, "item": item,
                "count": list(counts_template[host]), "rate": list(rates_template[host]),
            }  # fmt: skip
        if any(map(math.isnan, rates)):
            rates = [None if math.isnan(rate) else rate for rate in rates]
        if first is not None:
            entry["count"][first : first + len(counts)] = counts
            entry["rate"][first : first + len(rates)] = rates
            continue
        for run, count, rate in zip(run_ids, counts, rates, strict=True):
            index = column.get(run)
            if index is not None:
                entry["count"][index], entry["rate"][index] = count, rate
    host_series: dict[int, list[JSON]] = {}
    for entry in found.values():
        host_series.setdefault(entry.pop("host"), []).append(entry)

    finding_titles = titles(connection)
    host_findings: dict[int, dict[str, JSON]] = {}
    base_findings: dict[int, dict[str, JSON]] = {}
    for host, key, run_ids, codes, rates, counts in grouped(
        connection, "findings", run_filter, host_filter, decoded=False
    ):
        if host not in statuses:
            continue
        entry = host_findings.setdefault(host, {}).get(key)
        if entry is None:
            entry = {"key": key, "title": finding_titles.get(key), "severity": [None] * width, "rate": [None] * width,
                     "latest": None}  # fmt: skip
            host_findings[host][key] = entry
        if any(map(math.isnan, rates)):
            rates = [None if math.isnan(rate) else rate for rate in rates]

        def brief(at: int, key: str = key, entry: JSON = entry, codes: list = codes, rates: list = rates,
                  counts: list = counts) -> JSON:  # fmt: skip
            return {"key": key, "title": entry["title"], "severity": SEVERITY_OF[codes[at]],
                    "attribution": ATTRIBUTION_OF[codes[at]], "rate": rates[at], "count": counts[at],
                    **estimate_fields(counts[at], rates[at], SAMPLED_OF[codes[at]])}  # fmt: skip

        if base_id in run_ids:
            base_findings.setdefault(host, {})[key] = brief(run_ids.index(base_id))
        first = _span(run_ids, dense)
        if first is not None:
            entry["severity"][first : first + len(codes)] = map(SEVERITY_OF.__getitem__, codes)
            entry["rate"][first : first + len(rates)] = rates
            if first <= width - 1 < first + len(codes):
                entry["latest"] = brief(width - 1 - first)
            continue
        for at, run in enumerate(run_ids):
            index = column.get(run)
            if index is not None:
                entry["severity"][index], entry["rate"][index] = SEVERITY_OF[codes[at]], rates[at]
                if index == width - 1:
                    entry["latest"] = brief(at)
    for host, entries in host_findings.items():
        host_findings[host] = {key: entry for key, entry in entries.items() if any(entry["severity"])}

    newest_index = width - 1
    result_hosts = []
    for host, row in statuses.items():
        entries = host_series.get(host, [])
        for entry in entries:
            entry["first_seen"], entry["last_seen"], entry["runs_seen"] = _seen(entry["count"], names, bool)
        entries.sort(key=lambda e: (-(e["rate"][newest_index] or 0), -max(r or 0 for r in e["rate"]), e["kind"],
                                    e["name"]))  # fmt: skip
        change, by_change, finding_rows = _host_findings(
            row[newest_index], base_status.get(host) if base is not None else None, base is not None,
            host_findings.get(host, {}), base_findings.get(host, {}), names, threshold_pct,
        )  # fmt: skip
        result_hosts.append({"host": wanted[host], "change": change, "findings_by_change": by_change,
                             "statuses": row, "series": entries, "findings": finding_rows})  # fmt: skip
    result_hosts.sort(key=lambda h: (CHANGE_ORDER[h["change"]],
                                     -sum(e["rate"][newest_index] or 0 for e in h["series"]), h["host"]))  # fmt: skip
    changes = {change: sum(1 for h in result_hosts if h["change"] == change) for change in CHANGE_ORDER}
    verdict = "worse" if changes["worse"] else "better" if changes["better"] else "same"
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "dropscope-trend",
        "filters": {"hosts": list(hosts) if hosts is not None else None, "since": since, "last": last},
        "runs": [_run_brief(run) for run in selected],
        "newest": newest.name,
        "baseline": base.name if base is not None else None,
        "threshold_pct": threshold_pct,
        "verdict": verdict,
        "hosts_by_change": changes,
        "hosts": result_hosts,
    }


def _dense_chunks(selected: Sequence[Run], column: dict[int, int]) -> dict[int, tuple[list[int], int]]:
    """Chunk → (its selected run ids, by id; their first column) where those ids sit in consecutive columns:
    a packed row holding exactly those runs is copied into the series with one slice."""
    by_chunk: dict[int, list[int]] = {}
    for run in selected:
        by_chunk.setdefault(run.id // CHUNK, []).append(run.id)
    dense = {}
    for chunk, ids in by_chunk.items():
        ids.sort()
        columns = [column[run] for run in ids]
        if columns == list(range(columns[0], columns[0] + len(columns))):
            dense[chunk] = (ids, columns[0])
    return dense


def _span(run_ids: list[int], dense: dict[int, tuple[list[int], int]]) -> int | None:
    """The first column for a packed row whose runs are exactly its chunk's selected runs in column order."""
    if not run_ids:
        return None
    found = dense.get(run_ids[0] // CHUNK)
    return found[1] if found is not None and found[0] == run_ids else None


def _host_findings(
    newest_status: str | None,
    base_status: str | None,
    has_base: bool,
    seen: dict[str, JSON],
    before: dict[str, JSON],
    names: Sequence[str],
    threshold_pct: float,
) -> tuple[str, dict[str, list[str]], list[JSON]]:
    """A host's change (compare's rule: newest run against the baseline), its finding keys by change, and
    its findings with first/last seen."""
    by_change: dict[str, list[str]] = {"new": [], "worse": [], "better": [], "vanished": [], "same": []}
    rows = []
    comparable = has_base and newest_status == "ok" and base_status == "ok"
    old = {key: brief for key, brief in before.items() if counted(brief)} if comparable else {}
    new = {key: entry["latest"] for key, entry in seen.items() if entry["latest"] and counted(entry["latest"])}
    changes = {}
    if comparable:
        for key in sorted(set(old) | set(new)):
            changes[key] = finding_change(old.get(key), new.get(key), threshold_pct)
            by_change[changes[key]].append(key)
    for key, entry in seen.items():
        first, last, count = _seen(entry["severity"], names, lambda value: value is not None)
        rows.append({"key": key, "title": entry["title"], "first_seen": first, "last_seen": last, "runs_seen": count,
                     "severity": entry["severity"], "rate": entry["rate"], "change": changes.get(key)})  # fmt: skip
    for key in sorted(set(changes) - set(seen)):  # counted in the baseline only (outside the runs shown)
        rows.append({"key": key, "title": old[key]["title"], "first_seen": None, "last_seen": None, "runs_seen": 0,
                     "severity": [None] * len(names), "rate": [None] * len(names), "change": changes[key]})  # fmt: skip
    rows.sort(key=lambda r: (-max((SEVERITY_RANK.get(s, -1) for s in r["severity"] if s), default=-1), r["key"]))
    change = host_change(by_change) if comparable else ("same" if not has_base else "incomplete")
    return change, by_change, rows


# --------------------------------------------------------------------------------------------------
# trend.html


def sparkline(values: Sequence[float | None]) -> Markup:
    """An inline SVG line of VALUES (gaps where a value is None); only numbers go into the markup.

    >>> line = str(sparkline([0, 1, None, 2]))
    >>> line[line.index("<polyline") :].split("/>")[0]
    '<polyline points="2.0,26.0 54.0,14.0"'
    """
    if len(values) > SPARK_POINTS:  # one point per bucket: its largest value
        size = len(values) / SPARK_POINTS
        buckets = [values[int(i * size) : max(int((i + 1) * size), int(i * size) + 1)] for i in range(SPARK_POINTS)]
        values = [max((v for v in bucket if v is not None), default=None) for bucket in buckets]
    top = max((v for v in values if v is not None), default=0) or 1
    step = (SPARK_WIDTH - 4) / max(len(values) - 1, 1)
    segments: list[list[str]] = [[]]
    dots = []
    for index, value in enumerate(values):
        if value is None:
            if segments[-1]:
                segments.append([])
            continue
        x = 2 + index * step
        y = SPARK_HEIGHT - 2 - (SPARK_HEIGHT - 4) * value / top
        segments[-1].append(f"{x:.1f},{y:.1f}")
        if index == len(values) - 1:
            dots.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2"/>')
    lines = "".join(f'<polyline points="{" ".join(s)}"/>' for s in segments if len(s) > 1)
    singles = "".join(f'<circle cx="{s[0].split(",")[0]}" cy="{s[0].split(",")[1]}" r="1.5"/>'
                      for s in segments if len(s) == 1)  # fmt: skip
    return Markup(  # noqa: S704 (numbers only)
        f'<svg class="spark" width="{SPARK_WIDTH}" height="{SPARK_HEIGHT}" viewBox="0 0 {SPARK_WIDTH} {SPARK_HEIGHT}"'
        f' role="img">{lines}{singles}{"".join(dots)}</svg>'
    )


def render_trend_html(trend: JSON) -> str:
    """trend.html: one static page (no script), every value escaped, charts as inline SVG."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("dropscope", "templates"), autoescape=True, undefined=jinja2.StrictUndefined
    )
    template = env.get_template("trend.html.j2")
    return template.render(t=trend, rate=format_rate, spark=sparkline, max_hosts=HTML_HOSTS, max_series=HTML_SERIES)


# --------------------------------------------------------------------------------------------------
# The command


def _host_globs(text: str | None) -> list[str] | None:
    if text is None:
        return None
    globs = [part.strip() for part in text.split(",") if part.strip()]
    if not globs:
        raise TrendError("--hosts needs at least one glob")
    return globs


def run_trend(args: argparse.Namespace) -> int:
    """Entry point of `dropscope trend`."""
    runs_dir: Path = args.runs_dir
    target = args.output_dir if args.output_dir is not None else runs_dir
    try:
        if not runs_dir.is_dir():
            raise TrendError(f"{runs_dir}: not a directory (expected the directory holding the runs)")
        if not args.threshold >= 0:
            raise TrendError("--threshold must be a percentage ≥ 0")
        if args.last is not None and args.last < 1:
            raise TrendError("--last must be at least 1")
        globs = _host_globs(args.hosts)
        knowledge = knowledge_from(args) if args.knowledge is not None else None
        connection = open_index(index_path(runs_dir))
        try:
            _, skipped = index_runs(connection, runs_dir, knowledge)
            trend = trend_document(connection, hosts=globs, since=args.since, last=args.last,
                                   baseline=args.baseline, threshold_pct=args.threshold)  # fmt: skip
        finally:
            connection.close()
    except (TrendError, HistoryError, KnowledgeError) as exc:
        print(f"dropscope trend: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except sqlite3.Error as exc:
        print(f"dropscope trend: {index_path(runs_dir)}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print_skipped("trend", skipped)
    try:
        target.mkdir(parents=True, exist_ok=True)
        write_atomically(target / "trend.json", json.dumps(trend, ensure_ascii=False, separators=(",", ":")) + "\n")
        write_atomically(target / "trend.html", render_trend_html(trend))
    except OSError as exc:
        print(f"dropscope trend: cannot write the trend: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    counts = trend["hosts_by_change"]
    print(
        f"{trend['verdict']}: {trend['newest']} against {trend['baseline'] or 'no baseline'}: "
        f"{counts['worse']} host(s) worse, {counts['better']} better, {counts['same']} the same, "
        f"{counts['incomplete']} incomplete ({len(trend['runs'])} runs, threshold {args.threshold:g} %)"
    )
    for host in trend["hosts"]:
        if host["change"] != "worse":
            break
        for kind in ("new", "worse"):
            for key in host["findings_by_change"][kind]:
                print(f"  {host['host']}: {kind} {key}")
    print(target / "trend.json")
    print(target / "trend.html")
    return EXIT_WORSE if trend["verdict"] == "worse" else EXIT_NOT_WORSE
