"""`dropscope report RUN_DIR`: write report.json and report.html for a run directory."""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from dropscope.knowledge_base import KnowledgeBase, KnowledgeError, default_knowledge, load_knowledge
from dropscope.model import RunError, build_report_streaming
from dropscope.render_html import render_html

EXIT_FATAL = 2
INDENTED_UP_TO_HOSTS = 1_000


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
    add_knowledge_argument(parser)
    parser.set_defaults(func=run_report)
    return parser


def add_knowledge_argument(parser: argparse.ArgumentParser) -> None:
    """`--knowledge FILE`: a YAML file that overrides or extends the shipped knowledge base."""
    parser.add_argument(
        "--knowledge",
        metavar="FILE",
        type=Path,
        default=None,
        help="YAML file overriding or extending the knowledge base (reasons, counters, severity thresholds)",
    )


def knowledge_from(args: argparse.Namespace) -> KnowledgeBase:
    """The knowledge base for a command's arguments (raises KnowledgeError for a bad user file)."""
    path = getattr(args, "knowledge", None)
    return load_knowledge(path) if path is not None else default_knowledge()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomically(path: Path, text: str | Iterable[str]) -> None:
    """Write text (or its chunks) to path via a temporary file in the same directory and os.replace.

    Readers never see half a file.
    """
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            if isinstance(text, str):
                handle.write(text)
            else:
                handle.writelines(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def write_reports(
    run_dir: Path, output_dir: Path | None = None, knowledge: KnowledgeBase | None = None
) -> tuple[Path, Path, list[str]]:
    """Build and write report.json and report.html; returns their paths and the run's warnings.

    Host files are read one at a time (only each host's report parts are kept), so large fleets fit.
    """
    knowledge = knowledge or default_knowledge()
    # The report is a large tree of small objects that all live until the end: the cyclic garbage collector
    # would walk it again and again (super-linear time) and find nothing to free.
    collecting = gc.isenabled()
    gc.disable()
    try:
        built = build_report_streaming(run_dir, knowledge)
        target = output_dir if output_dir is not None else run_dir
        target.mkdir(parents=True, exist_ok=True)
        json_path, html_path = target / "report.json", target / "report.html"
        # Small runs are indented for people; large ones compact (same JSON), written in chunks.
        indent = 1 if len(built.report["hosts"]) <= INDENTED_UP_TO_HOSTS else None
        encoder = json.JSONEncoder(indent=indent, ensure_ascii=False, separators=None if indent else (",", ":"))
        write_atomically(json_path, _with_newline(encoder.iterencode(built.report)))
        html = render_html(
            built.report, notes=built.notes, texts=built.rule_texts, warnings=built.warnings, knowledge=knowledge
        )
        write_atomically(html_path, html)
        return json_path, html_path, built.warnings
    finally:
        if collecting:
            gc.enable()


def _with_newline(chunks: Iterable[str]) -> Iterable[str]:
    yield from chunks
    yield "\n"


def run_report(args: argparse.Namespace) -> int:
    """Entry point of `dropscope report`; 0 on success, 2 on a fatal error."""
    try:
        json_path, html_path, warnings = write_reports(args.run_dir, args.output_dir, knowledge_from(args))
    except (RunError, KnowledgeError) as exc:
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
