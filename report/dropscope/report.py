"""`dropscope report RUN_DIR`: write report.json (the built report, as JSON) and report.html.

Then the run is recorded into the run history next to the runs, RUN_DIR/../history.sqlite (`--history FILE`
elsewhere, `--no-history` not at all); `dropscope trend` and `dropscope check`'s relative thresholds read it.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from collections.abc import Iterable
from pathlib import Path

from dropscope.build import build_report
from dropscope.commands import ReplacedFolder, add_command, knowledge_from, run_guarded, write_atomically
from dropscope.history import HistoryError, index_path, record_report
from dropscope.knowledge_base import KnowledgeBase, KnowledgeError
from dropscope.load import JSON, RunError
from dropscope.render_html import DETAILS_DIR, render_html

SUMMARY = "write report.json and report.html for a run directory"
EXIT_FATAL = 2
INDENTED_UP_TO_HOSTS = 1_000


def add_arguments(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register the `report` sub-command."""
    parser = add_command(subparsers, "report", run_report, SUMMARY, __doc__)
    parser.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="a run directory (runs/<RUN_ID>)")
    parser.add_argument(
        "--output-dir", metavar="DIR", type=Path, default=None, help="write the reports here instead of RUN_DIR"
    )
    parser.add_argument(
        "--history",
        metavar="FILE",
        type=Path,
        default=None,
        help="the run history index to record the run into (default: RUN_DIR/../history.sqlite)",
    )
    parser.add_argument("--no-history", action="store_true", help="do not record the run into the run history")
    return parser


def json_chunks(report: JSON) -> Iterable[str]:
    """report.json's text in chunks: small runs indented for people, large ones compact (the same JSON).

    A large report is encoded host by host with the C encoder (json.dumps; iterencode is pure Python and
    several times slower), so no chunk is larger than one host.
    """
    if len(report["hosts"]) <= INDENTED_UP_TO_HOSTS:
        yield from json.JSONEncoder(indent=1, ensure_ascii=False).iterencode(report)
        yield "\n"
        return
    encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    yield "{"
    for position, (key, value) in enumerate(report.items()):
        yield ("," if position else "") + encode(key) + ":"
        if key == "hosts":
            yield "[" + ",".join(encode(host) for host in value[:1])
            for host in value[1:]:
                yield "," + encode(host)
            yield "]"
        else:
            yield encode(value)
    yield "}\n"


def write_reports(
    run_dir: Path, output_dir: Path | None = None, knowledge: KnowledgeBase | None = None, history: Path | None = None
) -> tuple[Path, Path, list[str]]:
    """Build and write report.json and report.html; returns their paths and the run's warnings.

    Host files are read one at a time (only each host's report parts are kept), so large fleets fit. With
    HISTORY (an index path), the built report is then recorded there as run RUN_DIR's name; a failure to do
    so is one more warning (the reports are written).
    """
    # The report is a large tree of small objects that all live until the end: the cyclic garbage collector
    # would walk it again and again (super-linear time) and find nothing to free.
    collecting = gc.isenabled()
    gc.disable()
    try:
        report = build_report(run_dir, knowledge)
        target = output_dir if output_dir is not None else run_dir
        target.mkdir(parents=True, exist_ok=True)
        json_path, html_path = target / "report.json", target / "report.html"
        write_atomically(json_path, json_chunks(report))
        with ReplacedFolder(target / DETAILS_DIR) as details:
            write_atomically(html_path, render_html(report, details.write))
        warnings = list(report["warnings"])
        if history is not None:
            try:
                record_report(history, Path(run_dir).resolve().name, report)
            except (HistoryError, OSError) as exc:
                warnings.append(f"the run was not recorded in the run history: {exc}")
        return json_path, html_path, warnings
    finally:
        if collecting:
            gc.enable()


def _history_path(args: argparse.Namespace) -> Path | None:
    if args.no_history:
        return None
    return args.history if args.history is not None else index_path(args.run_dir.resolve().parent)


def run_report(args: argparse.Namespace) -> int:
    """Entry point of `dropscope report`; 0 on success, 2 on a fatal error."""
    written = run_guarded(
        "report",
        "the report",
        lambda: write_reports(args.run_dir, args.output_dir, knowledge_from(args), _history_path(args)),
        (RunError, KnowledgeError),
    )
    if written is None:
        return EXIT_FATAL
    json_path, html_path, warnings = written
    for warning in warnings:
        print(f"dropscope report: warning: {warning}", file=sys.stderr)
    print(json_path)
    print(html_path)
    return 0
