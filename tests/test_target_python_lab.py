"""End to end with the oldest Python the modules claim (3.8): real SSH, real playbook, exact drops.

Managed hosts run the Python their distribution ships (RHEL 8 has 3.8 as its newest module stream);
`ansible_python_interpreter` makes every lab host run the modules with it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import lab_cli, run_playbook_injecting

pytestmark = pytest.mark.lab

OLDEST = "3.8"


def _oldest_python() -> str:
    found = sorted((Path.home() / ".pyenv" / "versions").glob(f"{OLDEST}.*/bin/python{OLDEST}"))
    assert found, f"no python{OLDEST} under ~/.pyenv/versions (.ci/install checks for it)"
    version = subprocess.run([str(found[-1]), "-c", "import sys; print(sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert version == "(3, 8)", version
    return str(found[-1])


def test_a_run_on_python_38_hosts_counts_exactly(lab3, tmp_path):
    python = _oldest_python()
    run = run_playbook_injecting(lab3, lambda: lab_cli("inject", "udp-noport", "--host", "h2", "--packets", "120"),
                                 "-e", "duration=3", "-e", f"ansible_python_interpreter={python}",
                                 runs_dir=tmp_path, run_id="py38")
    assert run["rc"] == 0, run["output"][-4000:]
    report = json.loads((tmp_path / "py38" / "report.json").read_text())
    assert [(h["host"], h["status"]) for h in report["hosts"]] == [("h1", "ok"), ("h2", "ok"), ("h3", "ok")]
    for name in ("h1", "h2", "h3"):
        document = json.loads(next((tmp_path / "py38" / "hosts").glob(f"{name}*.json")).read_text())
        assert document["before"]["system"]["python"].startswith(OLDEST + "."), document["before"]["system"]
        assert document["capture"]["status"] == "ok", document["capture"]["reason"]
    by_host = {h["host"]: h for h in report["hosts"]}
    assert by_host["h2"]["counters"]["protocols"]["UdpNoPorts"] == 120
    assert {(d["reason"], d["location"], d["count"]) for d in by_host["h2"]["capture"]["drops"]} == {
        ("NO_SOCKET", "__udp4_lib_rcv", 120)}
    assert by_host["h1"]["capture"]["drops"] == [] and by_host["h3"]["capture"]["drops"] == []
