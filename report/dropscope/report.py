"""`dropscope report RUN_DIR`: write report.json (the built report, as JSON) and report.html."""

from __future__ import annotations

import argparse
import gc
import json
import sys
from collections.abc import Iterable
from pathlib import Path

from dropscope.build import build_report
from dropscope.commands import add_command, knowledge_from, run_guarded, write_atomically
from dropscope.knowledge_base import KnowledgeBase, KnowledgeError
from dropscope.load import JSON, RunError
from dropscope.render_html import render_html

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
    return parser


def json_chunks(report: JSON) -> Iterable[str]:
    """report.json's text in chunks: small runs indented for people, large ones compact (the same JSON)."""
    indent = 1 if len(report["hosts"]) <= INDENTED_UP_TO_HOSTS else None
    encoder = json.JSONEncoder(indent=indent, ensure_ascii=False, separators=None if indent else (",", ":"))
    yield from encoder.iterencode(report)
    yield "\n"


def write_reports(
    run_dir: Path, output_dir: Path | None = None, knowledge: KnowledgeBase | None = None
) -> tuple[Path, Path, list[str]]:
    """Build and write report.json and report.html; returns their paths and the run's warnings.

    Host files are read one at a time (only each host's report parts are kept), so large fleets fit.
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
        write_atomically(html_path, render_html(report))
        return json_path, html_path, report["warnings"]
    finally:
        if collecting:
            gc.enable()


def run_report(args: argparse.Namespace) -> int:
    """Entry point of `dropscope report`; 0 on success, 2 on a fatal error."""
    written = run_guarded(
        "report",
        "the report",
        lambda: write_reports(args.run_dir, args.output_dir, knowledge_from(args)),
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
