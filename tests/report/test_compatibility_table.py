"""The README's compatibility table claims only what recorded samples and tests cover.

Each row's last cell names recorded samples and, in parentheses after them, the tests that read them
("`a.txt`, `b.txt` (`test_x.py`, `test_y.py`)"). Every sample must exist in tests/data, be documented in
tests/data/README.md (where it comes from) and be read by every test named after it; every row names a test
that exists. A row without such evidence, or a sample no named test reads, fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
TEST_DIRS = [
    ROOT / "tests",
    ROOT / "tests" / "report",
    ROOT / "tests" / "lab",
    ROOT / "collections/ansible_collections/dropscope/drops/tests/unit/plugins/module_utils",
]
GROUP = re.compile(r"((?:`[^`]+`(?:,\s*)?)*)\s*\(([^()]*)\)")
TICKED = re.compile(r"`([^`]+)`")


def _section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("\n## Compatibility\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def _rows() -> list[list[str]]:
    rows = []
    for line in _section().splitlines():
        if not line.startswith("|") or set(line) <= set("|-") or line.startswith("| kernel (") or line.startswith(
            "| tool or part"
        ):
            continue
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


def _test_file(name: str) -> Path:
    found = [directory / name for directory in TEST_DIRS if (directory / name).is_file()]
    assert len(found) == 1, f"{name}: expected one test file of that name in {[str(d) for d in TEST_DIRS]}"
    return found[0]


def _evidence(cell: str) -> list[tuple[list[str], list[str]]]:
    """(samples, tests) groups of a row's last cell."""
    groups = []
    for samples, tests in GROUP.findall(cell):
        named = [name for name in TICKED.findall(tests) if re.fullmatch(r"test_\w+\.py", name)]
        groups.append((TICKED.findall(samples), named))
    return groups


def test_the_table_has_the_kernel_families_and_tools_the_issue_asks_for() -> None:
    first = [row[0] for row in _rows()]
    assert [cell.split(" ")[0] for cell in first] == [
        "4.x", "5.4–5.16", "5.17–5.19", "6.x", "dropwatch,",
        "iproute2", "firewall", "NIC", "conntrack", "Python"]  # fmt: skip


@pytest.mark.parametrize("row", _rows(), ids=lambda row: row[0][:30])
def test_every_row_rests_on_recorded_samples_read_by_its_tests(row: list[str]) -> None:
    groups = _evidence(row[-1])
    assert groups and all(tests for _, tests in groups), f"row {row[0]!r} names no test: {row[-1]!r}"
    documented = (DATA / "README.md").read_text(encoding="utf-8")
    for samples, tests in groups:
        for test in tests:
            source = _test_file(test).read_text(encoding="utf-8")
            for sample in samples:
                assert (DATA / sample).is_file(), f"{sample}: not in tests/data"
                assert f"`{sample}`" in documented or f"`{sample}`," in documented, f"{sample}: no source in README"
                assert sample in source, f"row {row[0]!r}: {test} does not read {sample}"


def test_the_python_row_matches_what_the_collection_claims() -> None:
    config = (ROOT / "collections/ansible_collections/dropscope/drops/tests/config.yml").read_text(encoding="utf-8")
    lowest = re.search(r'python_requires:\s*">=(\d+\.\d+)"', config).group(1)
    python = next(row for row in _rows() if row[0].startswith("Python"))
    assert python[1].startswith(f"{lowest} to 3.13")
    assert f'OLDEST = "{lowest}"' in _test_file("test_target_python_lab.py").read_text(encoding="utf-8")
