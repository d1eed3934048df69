"""`dropscope report RUN_DIR`: write report.json and report.html for a run directory."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

from dropscope.model import RunError, build_report, load_run
from dropscope.render_html import render_html

EXIT_FATAL = 2


def add_arguments(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register the `report` sub-command."""
    parser = subparsers.add_parser(
        "report",
        help="write report.json and report.html for a run directory",
        description="Read RUN_DIR/manifest.json and RUN_DIR/hosts/*.json; write report.json and report.html.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="a run directory (runs/<RUN_ID>)")
    parser.add_argument(
        "--output-dir", metavar="DIR", type=Path, default=None, help="write the reports here instead of RUN_DIR"
    )
    parser.set_defaults(func=run_report)
    return parser


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomically(path: Path, text: str) -> None:
    """Write text to path via a temporary file in the same directory and os.replace (readers never see half)."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def write_reports(run_dir: Path, output_dir: Path | None = None) -> tuple[Path, Path, list[str]]:
    """Build and write report.json and report.html; returns their paths and the run's warnings."""
    run = load_run(run_dir)
    report = build_report(run)
    target = output_dir if output_dir is not None else run_dir
    target.mkdir(parents=True, exist_ok=True)
    json_path, html_path = target / "report.json", target / "report.html"
    write_atomically(json_path, json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    write_atomically(html_path, render_html(report, run))
    return json_path, html_path, run.warnings


def run_report(args: argparse.Namespace) -> int:
    """Entry point of `dropscope report`; 0 on success, 2 on a fatal error."""
    try:
        json_path, html_path, warnings = write_reports(args.run_dir, args.output_dir)
    except RunError as exc:
        print(f"dropscope report: {exc}", file=sys.stderr)
        return EXIT_FATAL
    except OSError as exc:
        print(f"dropscope report: cannot write the report: {exc}", file=sys.stderr)
        return EXIT_FATAL
    for warning in warnings:
        print(f"dropscope report: warning: {warning}", file=sys.stderr)
    print(json_path)
    print(html_path)
    return 0
