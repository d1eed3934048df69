"""Plumbing every sub-command shares: registering it (with `--knowledge`), the knowledge base it asked
for, and writing output files so that readers never see half a file.

A leaf module: it imports only the knowledge base, so any command module may use it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from dropscope.knowledge_base import KnowledgeBase, default_knowledge, load_knowledge

T = TypeVar("T")


def add_command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    func: Callable[[argparse.Namespace], int],
    summary: str,
    description: str | None,
) -> argparse.ArgumentParser:
    """Register sub-command NAME (run by FUNC; SUMMARY for `dropscope --help`, DESCRIPTION for its own) with
    its `--knowledge FILE` option; the command adds its own arguments to the parser returned."""
    parser = subparsers.add_parser(
        name, help=summary, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--knowledge",
        metavar="FILE",
        type=Path,
        default=None,
        help="YAML file overriding or extending the knowledge base (reasons, counters, severity thresholds)",
    )
    parser.set_defaults(func=func)
    return parser


def knowledge_from(args: argparse.Namespace) -> KnowledgeBase:
    """The knowledge base for a command's arguments (raises KnowledgeError for a bad user file)."""
    path = getattr(args, "knowledge", None)
    return load_knowledge(path) if path is not None else default_knowledge()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomically(path: Path, text: str | Iterable[str] | Iterable[bytes], binary: bool = False) -> None:
    """Write text (or its chunks; BINARY: chunks of UTF-8 bytes) to path via a temporary file in the same
    directory and os.replace.

    Readers never see half a file.
    """
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as handle:
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


class ReplacedFolder:
    """A folder of output files written as a whole: files go to a new folder beside PATH, which takes PATH's
    place when the `with` block ends without an error (a block that wrote nothing removes an old PATH)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.building: Path | None = None

    def write(self, name: str, text: str) -> None:
        """Write file NAME, relative to PATH's parent and inside PATH (e.g. "report-hosts/0.js")."""
        if self.building is None:
            self.building = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
            os.chmod(self.building, 0o777 & ~_umask())
        (self.building / Path(name).relative_to(self.path.name)).write_text(text, encoding="utf-8")

    def __enter__(self) -> ReplacedFolder:
        return self

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        if kind is None and self.path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.old-", dir=self.path.parent))
            self.path.rename(old / self.path.name)
            shutil.rmtree(old)
        if self.building is not None:
            if kind is None:
                self.building.rename(self.path)
            else:
                shutil.rmtree(self.building, ignore_errors=True)


def run_guarded(
    command: str, writing: str, action: Callable[[], T], bad_input: tuple[type[Exception], ...]
) -> T | None:
    """ACTION's result; None after printing "dropscope COMMAND: …" for a BAD_INPUT error or one writing WRITING."""
    try:
        return action()
    except bad_input as exc:
        print(f"dropscope {command}: {exc}", file=sys.stderr)
    except OSError as exc:
        print(f"dropscope {command}: cannot write {writing}: {exc}", file=sys.stderr)
    return None
