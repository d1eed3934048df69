"""`dropscope report RUN_DIR`: write report.json (the built report, as JSON) and report.html.

Then the run is recorded into the run history next to the runs, RUN_DIR/../history.sqlite (`--history FILE`
elsewhere, `--no-history` not at all); `dropscope trend` and `dropscope check`'s relative thresholds read it.
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

from dropscope.commands import add_command, knowledge_from, run_guarded
from dropscope.history import index_path
from dropscope.knowledge_base import KnowledgeBase, KnowledgeError, default_knowledge
from dropscope.load import RunError
from dropscope.pipeline import write_run_reports

SUMMARY = "write report.json and report.html for a run directory"
EXIT_FATAL = 2


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


def write_reports(
    run_dir: Path,
    output_dir: Path | None = None,
    knowledge: KnowledgeBase | None = None,
    history: Path | None = None,
    workers: int | None = None,
) -> tuple[Path, Path, list[str]]:
    """Build and write report.json and report.html; returns their paths and the run's warnings.

    Hosts are built in slices (in WORKERS processes for large fleets; dropscope.pipeline), so large fleets
    fit. With HISTORY (an index path), the built report is then recorded there as run RUN_DIR's name; a
    failure to do so is one more warning (the reports are written).
    """
    # The report's parts are trees of small objects that live until the end: the cyclic garbage collector
    # would walk them again and again (super-linear time) and find nothing to free.
    collecting = gc.isenabled()
    gc.disable()
    try:
        target = output_dir if output_dir is not None else run_dir
        return write_run_reports(Path(run_dir), Path(target), knowledge or default_knowledge(), history, workers)
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
