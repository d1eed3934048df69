"""The wheel holds the report tool only: no lab, lab traffic or synthetic runs (those live in tests/support)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import REPO

REPORT = REPO / "report" / "dropscope"


def _build_wheel(tmp_path: Path) -> Path:
    """`pip wheel` of a copy of the project's build inputs (building in place would leave build/ in the tree)."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "report", source / "report",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"))
    out = tmp_path / "wheels"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", "-w", str(out), str(source)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = out.glob("dropscope-*.whl")
    return wheel


def test_the_wheel_holds_only_the_report_tool(tmp_path: Path) -> None:
    with zipfile.ZipFile(_build_wheel(tmp_path)) as wheel:
        names = wheel.namelist()
        dist_info = next(name.split("/")[0] for name in names if name.endswith(".dist-info/RECORD"))
        top_level = wheel.read(f"{dist_info}/top_level.txt").decode().split()
        entry_points = wheel.read(f"{dist_info}/entry_points.txt").decode()
    package = sorted(name for name in names if not name.startswith(dist_info + "/"))
    modules = sorted(f"dropscope/{path.name}" for path in REPORT.glob("*.py"))
    templates = sorted(f"dropscope/templates/{path.name}" for path in (REPORT / "templates").iterdir())
    knowledge = sorted(f"dropscope/knowledge/{path.name}" for path in (REPORT / "knowledge").glob("*.yml"))
    assert package == sorted([*modules, *templates, *knowledge, "dropscope/py.typed"])
    assert "dropscope/report.py" in modules and "dropscope/cli.py" in modules and templates and knowledge
    for name in package:  # the development tools stay out, under any name
        assert "lab" not in name and "synthetic" not in name and "traffic" not in name, name
    assert top_level == ["dropscope"]
    assert "dropscope = dropscope.cli:main" in entry_points


def test_the_dropscope_command_has_no_lab() -> None:
    proc = subprocess.run([sys.executable, "-m", "dropscope", "lab", "up"], capture_output=True, text=True)
    assert proc.returncode == 2 and "invalid choice: 'lab'" in proc.stderr
