"""report.json and the synthetic documents have exactly the shapes of docs/run-format.md; the report command."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from dropscope import report as report_command
from dropscope.build import build_report
from dropscope_lab.synthetic import (
    advance,
    drop,
    make_host,
    make_qdisc,
    make_rule,
    make_snapshot,
    make_socket,
    simple_host,
    synthetic_fleet,
    write_run,
)

RUN_FORMAT = Path(__file__).resolve().parents[2] / "docs" / "run-format.md"


def _doc_examples() -> dict[str, dict]:
    """The JSON examples of docs/run-format.md by what they are (placeholders in the host example → null)."""
    examples = {}
    for block in re.findall(r"```json\n(.*?)\n```", RUN_FORMAT.read_text(encoding="utf-8"), re.S):
        document = json.loads(re.sub(r"\b(SNAPSHOT|CAPTURE|CAPABILITIES|KNOBS)\b", "null", block))
        if "system" in document:
            examples["snapshot"] = document
        elif "backend" in document:
            examples["capture"] = document
        elif document.get("kind") == "dropscope-run":
            examples["manifest"] = document
        elif document.get("kind") == "dropscope-host":
            examples["host"] = document
        elif "fleet" in document:
            examples["report"] = document
    assert set(examples) == {"snapshot", "capture", "manifest", "host", "report"}, "docs/run-format.md changed"
    return examples


DOC = _doc_examples()


def _first(mapping: dict) -> dict:
    return next(iter(mapping.values()))


def _lab_like_run(run_dir: Path) -> Path:
    """A run exercising every section: drops, interfaces, qdiscs, sockets, firewall, a reset, appeared devices."""
    qdiscs = dict([make_qdisc("eth0", "tbf", "8001:", dropped=2), make_qdisc("lo", "noqueue", "0:")])
    firewall = dict([make_rule("inet", "dropscope_lab", "input", 3, "udp dport 8000 drop")])
    sockets = [make_socket("udp", "0.0.0.0", 9000, 1, inode=77)]  # noqa: S104
    before = make_snapshot("h1", boot_id="k1", qdiscs=qdiscs, firewall=firewall, sockets=sockets)
    host = simple_host("h1", [drop("NETFILTER_DROP", "nft_do_chain", 500, port=8000)], boot_id="k1")
    host["before"] = before
    after = advance(
        before,
        5.1,
        interfaces={"eth0": {"rx_dropped": 2}},
        protocols={"UdpNoPorts": 300},
        qdiscs={"eth0 tbf 8001:": {"dropped": 180}},
        sockets={77: 7},
        firewall={"nft inet dropscope_lab input #3": {"packets": 500, "bytes": 14000}},
    )
    after["interfaces"]["eth0"]["statistics"]["tx_dropped"] = 0
    before["interfaces"]["eth0"]["statistics"]["tx_dropped"] = 9
    after["interfaces"]["veth9"] = after["interfaces"]["lo"]
    host["after"] = after
    return write_run(run_dir, [host, simple_host("h2", [drop("NO_SOCKET", "__udp4_lib_rcv", 3)])])


def test_report_json_has_exactly_the_documented_shape(tmp_path: Path) -> None:
    documented = DOC["report"]
    report = build_report(_lab_like_run(tmp_path / "run"))

    assert report.keys() == documented.keys()
    assert report["schema_version"] == 1
    assert report["run"].keys() == documented["run"].keys()
    assert report["fleet"].keys() == documented["fleet"].keys()
    for part in ("kernels", "reasons", "locations"):
        assert report["fleet"][part][0].keys() == documented["fleet"][part][0].keys()
    host, doc_host = report["hosts"][0], documented["hosts"][0]
    assert host.keys() == doc_host.keys()
    assert host["kernel"].keys() == doc_host["kernel"].keys()
    assert host["capture"].keys() == doc_host["capture"].keys()
    assert host["capture"]["drops"][0].keys() == doc_host["capture"]["drops"][0].keys()
    assert host["counters"].keys() == doc_host["counters"].keys()
    for section in ("interfaces", "qdiscs", "sockets", "firewall"):
        assert _first(host["counters"][section]).keys() == _first(doc_host["counters"][section]).keys()
    assert host["counters"]["softnet"].keys() == doc_host["counters"]["softnet"].keys()
    assert host["resets"][0].keys() == doc_host["resets"][0].keys()
    assert host["appeared"].keys() == doc_host["appeared"].keys()
    assert host["vanished"].keys() == doc_host["vanished"].keys()
    assert host["verdict"] == doc_host["verdict"] == "problem"
    finding = next(f for f in host["findings"] if f["key"] == "NETFILTER_DROP")
    doc_finding = doc_host["findings"][0]
    assert finding.keys() == doc_finding.keys()
    assert finding["evidence"].keys() == doc_finding["evidence"].keys()
    assert finding["evidence"]["drops"][0].keys() == doc_finding["evidence"]["drops"][0].keys()
    assert finding["evidence"]["counters"][0].keys() == doc_finding["evidence"]["counters"][0].keys()
    assert finding["explanation"].split(" (")[0] == doc_finding["explanation"].split(" (")[0]
    assert report["fleet"]["verdicts"].keys() == documented["fleet"]["verdicts"].keys()
    # The numbers of the documented example, reproduced.
    assert host["interval_s"] == 5.1
    assert host["counters"] == {
        "interfaces": {"eth0": {"rx_dropped": 2}},
        "protocols": {"UdpNoPorts": 300},
        "softnet": {"dropped": 0, "time_squeeze": 0},
        "qdiscs": {"eth0 tbf 8001:": {"dropped": 180}},
        "sockets": {"udp 0.0.0.0:9000": {"drops": 7}},
        "firewall": {"nft inet dropscope_lab input #3": {"packets": 500, "bytes": 14000}},
        "conntrack": {},
    }
    assert host["resets"] == [
        {"section": "interfaces", "name": "eth0", "counter": "tx_dropped", "before": 9, "after": 0}
    ]
    assert host["appeared"] == {"interfaces": ["veth9"], "qdiscs": []}
    assert host["drop_counters"] == doc_host["drop_counters"]
    assert host["firewall_rules"] == doc_host["firewall_rules"]
    assert report["knowledge"]["sources"] == documented["knowledge"]["sources"]
    json.dumps(report, allow_nan=False)  # strict JSON


def test_synthetic_documents_follow_the_contract(tmp_path: Path) -> None:
    snapshot, doc_snapshot = make_snapshot("h1", sockets=[make_socket("udp", "::", 53, 1, 5)]), DOC["snapshot"]
    snapshot["firewall"] = dict([make_rule("inet", "dropscope_lab", "input", 3, "udp dport 8000 drop")])
    assert snapshot.keys() == doc_snapshot.keys()
    for part in ("system", "time"):
        assert snapshot[part].keys() == doc_snapshot[part].keys()
    assert snapshot["interfaces"]["eth0"].keys() == doc_snapshot["interfaces"]["eth0"].keys()
    assert snapshot["softnet"][0].keys() == doc_snapshot["softnet"][0].keys()
    assert _first(snapshot["qdiscs"]).keys() == _first(doc_snapshot["qdiscs"]).keys()
    assert snapshot["sockets"][0].keys() == doc_snapshot["sockets"][0].keys()
    assert _first(snapshot["firewall"]).keys() == _first(doc_snapshot["firewall"]).keys()
    assert set(doc_snapshot["protocols"]) <= set(snapshot["protocols"])

    documents = synthetic_fleet(6, hosts_per_kernel=2, unreachable_every=3)
    assert documents[0]["capture"].keys() == DOC["capture"].keys()
    assert documents[0]["capture"]["drops"][0].keys() == DOC["capture"]["drops"][0].keys()
    # "capabilities" is optional: run_record writes it when the capture task returned the ladder; "knobs"
    # when drop_capture read them (synthetic hosts have none).
    assert all(document.keys() == DOC["host"].keys() - {"knobs"} for document in documents
               if document["status"] == "ok")
    assert all(document.keys() == DOC["host"].keys() - {"capabilities", "knobs"} for document in documents
               if document["status"] != "ok")
    run_dir = write_run(tmp_path / "run", documents + [make_host("a/b c", status="unreachable", error="x")])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest.keys() == DOC["manifest"].keys()
    assert manifest["hosts"][0].keys() == DOC["manifest"]["hosts"][0].keys()
    # run_record's safe name: a changed name gets a hash of the real one (no clash with a host called "a_b_c").
    assert manifest["hosts"][-1]["file"] == "hosts/a_b_c-%s.json" % hashlib.sha256(b"a/b c").hexdigest()[:8]
    report = build_report(run_dir)
    assert [host["status"] for host in report["hosts"]].count("unreachable") == 3
    assert report["fleet"]["failed"] == 0


def test_command_given_as_a_list_becomes_one_string(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "run", [simple_host("h1")])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["command"] = ["ansible-playbook", "playbooks/diagnose-drops.yml", "-e", "note=two words"]
    (run_dir / "manifest.json").write_text(json.dumps(manifest))

    run = build_report(run_dir)["run"]

    assert run["command"] == "ansible-playbook playbooks/diagnose-drops.yml -e 'note=two words'"


def test_the_report_reads_the_schema_version_the_collection_writes() -> None:
    from ansible_collections.dropscope.drops.plugins.module_utils import run_record
    from dropscope import load

    assert load.SCHEMA_VERSION == run_record.SCHEMA_VERSION == DOC["report"]["schema_version"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dropscope")
    report_command.add_arguments(parser.add_subparsers(dest="command", required=True))
    return parser


def test_report_command_writes_both_files_atomically(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = _lab_like_run(tmp_path / "run")
    (run_dir / "report.json").write_text("old")
    args = _parser().parse_args(["report", str(run_dir)])

    assert args.func(args) == 0

    out = capsys.readouterr().out.split()
    assert out == [str(run_dir / "report.json"), str(run_dir / "report.html")]
    assert json.loads((run_dir / "report.json").read_text()) == build_report(run_dir)
    assert (run_dir / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert sorted(path.name for path in run_dir.iterdir()) == ["hosts", "manifest.json", "report.html", "report.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((run_dir / "report.json").stat().st_mode) == 0o666 & ~umask


def test_report_command_output_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = _lab_like_run(tmp_path / "run")
    output_dir = tmp_path / "out" / "nested"
    args = _parser().parse_args(["report", str(run_dir), "--output-dir", str(output_dir)])

    assert args.func(args) == 0

    assert capsys.readouterr().out.split() == [str(output_dir / "report.json"), str(output_dir / "report.html")]
    assert not (run_dir / "report.json").exists()
    assert sorted(path.name for path in output_dir.iterdir()) == ["report.html", "report.json"]


def test_report_command_fatal_error_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = _lab_like_run(tmp_path / "run")
    (run_dir / "manifest.json").unlink()
    args = _parser().parse_args(["report", str(run_dir)])

    assert args.func(args) == 2

    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"dropscope report: {run_dir / 'manifest.json'}: file is missing\n"
    assert not (run_dir / "report.json").exists() and not (run_dir / "report.html").exists()


def test_report_command_prints_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = _lab_like_run(tmp_path / "run")
    (run_dir / "hosts" / "old.json").write_text("{}")
    args = _parser().parse_args(["report", str(run_dir)])

    assert args.func(args) == 0

    assert "warning: hosts/old.json is not listed in manifest.json and was ignored" in capsys.readouterr().err


def test_dropscope_cli_runs_report(tmp_path: Path) -> None:
    run_dir = _lab_like_run(tmp_path / "run")

    result = subprocess.run(
        [sys.executable, "-m", "dropscope", "report", str(run_dir)], capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(run_dir / "report.json"), str(run_dir / "report.html")]

    missing = subprocess.run(
        [sys.executable, "-m", "dropscope", "report", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 2
    assert "not a directory" in missing.stderr
