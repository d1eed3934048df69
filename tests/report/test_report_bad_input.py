"""Bad input never loses the other hosts; a bad manifest is a clear fatal error."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from dropscope.build import build_report
from dropscope.load import RunError
from dropscope.render_html import render_html
from dropscope_lab.synthetic import drop, make_capture, make_host, make_snapshot, simple_host, write_run


def _hosts() -> list[dict]:
    return [
        simple_host("h1", [drop("NO_SOCKET", "__udp4_lib_rcv", 300)], protocols={"UdpNoPorts": 300}),
        simple_host("h2", [drop("NETFILTER_DROP", "nft_do_chain", 500)], interfaces={"eth0": {"rx_dropped": 4}}),
        simple_host("h3", [drop("QDISC_DROP", "__dev_xmit_skb", 180)], interfaces={"eth0": {"tx_dropped": 180}}),
    ]


@pytest.fixture
def baseline(tmp_path: Path) -> dict:
    """The report of the same run with every host intact."""
    return build_report(write_run(tmp_path / "good", _hosts()))


def _edit_json(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def corrupt(path: Path) -> None:
        document = json.loads(path.read_text())
        edit(document)
        path.write_text(json.dumps(document))

    return corrupt


def _delete(*keys: str) -> Callable[[dict], None]:
    def edit(document: dict) -> None:
        target = document
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]

    return edit


def _set(value: object, *keys: str) -> Callable[[dict], None]:
    def edit(document: dict) -> None:
        target = document
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return edit


CORRUPTIONS: dict[str, tuple[Callable[[Path], None], str]] = {
    "missing file": (lambda path: path.unlink(), "hosts/h2.json: file is missing"),
    "empty file": (lambda path: path.write_text(""), "hosts/h2.json: file is empty"),
    "truncated": (
        lambda path: path.write_text(path.read_text()[:700]),
        "(the file ends early: truncated?)",
    ),
    "not json": (lambda path: path.write_text("<html>502 Bad Gateway</html>"), "hosts/h2.json: not valid JSON: "),
    "not utf-8": (lambda path: path.write_bytes(b'{"host": "\xff\xfe"}'), "hosts/h2.json: not UTF-8 text"),
    "json list": (lambda path: path.write_text("[]"), "hosts/h2.json: the document is a list, expected an object"),
    "unknown schema_version": (
        _edit_json(_set(7, "schema_version")),
        "hosts/h2.json: schema_version 7 is not supported (this dropscope reads 1)",
    ),
    "unknown snapshot schema_version": (
        _edit_json(_set(2, "after", "schema_version")),
        "hosts/h2.json: after.schema_version 2 is not supported (this dropscope reads 1)",
    ),
    "capture without schema_version": (
        _edit_json(_delete("capture", "schema_version")),
        "hosts/h2.json: required field 'capture.schema_version' is missing",
    ),
    "missing host": (_edit_json(_delete("host")), "hosts/h2.json: required field 'host' is missing"),
    "missing monotonic": (
        _edit_json(_delete("before", "time", "monotonic")),
        "hosts/h2.json: required field 'before.time.monotonic' is missing",
    ),
    "missing interfaces": (
        _edit_json(_delete("after", "interfaces")),
        "hosts/h2.json: required field 'after.interfaces' is missing",
    ),
    "counter is a string": (
        _edit_json(_set("12", "after", "interfaces", "eth0", "statistics", "rx_dropped")),
        "hosts/h2.json: 'after.interfaces.eth0.statistics.rx_dropped' is a string, expected an integer",
    ),
    "drop count missing": (
        _edit_json(_delete("capture", "drops")),
        "hosts/h2.json: required field 'capture.drops' is missing",
    ),
    "sampling of 0": (
        _edit_json(_set(0, "capture", "sample_one_in")),
        "hosts/h2.json: 'capture.sample_one_in' is 0, expected 1 or more (1 in how many drops counted)",
    ),
    "sampling as text": (
        _edit_json(_set("8", "capture", "sample_one_in")),
        "hosts/h2.json: 'capture.sample_one_in' is a string, expected an integer",
    ),
    "unknown status": (
        _edit_json(_set("great", "status")),
        "hosts/h2.json: 'status' is \"great\", expected one of ok, unreachable, failed",
    ),
    "wrong kind": (
        _edit_json(_set("dropscope-run", "kind")),
        'hosts/h2.json: \'kind\' is "dropscope-run", expected "dropscope-host"',
    ),
    "ok without after": (
        _edit_json(_set(None, "after")),
        "hosts/h2.json: status is ok but 'after' is missing or null",
    ),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_bad_host_file_fails_only_that_host(tmp_path: Path, baseline: dict, case: str) -> None:
    corrupt, expected_error = CORRUPTIONS[case]
    run_dir = write_run(tmp_path / "run", _hosts())
    corrupt(run_dir / "hosts" / "h2.json")

    report = build_report(run_dir)

    h1, h2, h3 = report["hosts"]
    assert h2["host"] == "h2"
    assert h2["status"] == "failed"
    assert h2["error"].startswith("hosts/h2.json: ") and expected_error in h2["error"], h2["error"]
    assert h2["capture"] is None and h2["counters"] == {} and h2["interval_s"] is None
    assert h1 == baseline["hosts"][0]
    assert h3 == baseline["hosts"][2]
    assert (report["fleet"]["ok"], report["fleet"]["failed"]) == (2, 1)
    assert report["fleet"]["drops"] == 300 + 180
    html = render_html(report)
    assert "hosts/h2.json" in html and "NO_SOCKET" in html and "QDISC_DROP" in html


def test_file_outside_the_run_is_refused(tmp_path: Path, baseline: dict) -> None:
    run_dir = write_run(tmp_path / "run", _hosts())
    (tmp_path / "secret.json").write_text(json.dumps(_hosts()[1]))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["hosts"][1]["file"] = "../secret.json"
    (run_dir / "manifest.json").write_text(json.dumps(manifest))

    report = build_report(run_dir)

    assert report["hosts"][1]["status"] == "failed"
    assert report["hosts"][1]["error"] == "manifest.json: hosts[1] file '../secret.json' is outside the run"
    assert report["hosts"][0] == baseline["hosts"][0] and report["hosts"][2] == baseline["hosts"][2]


def test_host_file_not_in_manifest_is_ignored_with_a_warning(tmp_path: Path, baseline: dict) -> None:
    run_dir = write_run(tmp_path / "run", _hosts())
    (run_dir / "hosts" / "stray.json").write_text(json.dumps(simple_host("stray", [drop("XDP", "xdp", 9)])))

    report = build_report(run_dir)

    assert report["warnings"] == ["hosts/stray.json is not listed in manifest.json and was ignored"]
    assert report["hosts"] == baseline["hosts"]
    assert report["fleet"] == baseline["fleet"]
    assert "hosts/stray.json is not listed in manifest.json" in render_html(report)


def test_partial_hosts_keep_what_they_have(tmp_path: Path) -> None:
    before = make_snapshot("half")
    capture = make_capture(before["system"]["boot_id"], [drop("NO_SOCKET", "__udp4_lib_rcv", 12)])
    hosts = [
        make_host(
            "half", status="failed", error="drop_counters failed after the capture", before=before, capture=capture
        ),
        make_host("gone", status="unreachable", error="ssh: connect to host gone port 22: Connection timed out"),
    ]

    report = build_report(write_run(tmp_path / "run", hosts))

    half, gone = report["hosts"]
    # run_record's error names the stage that did not succeed.
    assert half["status"] == "failed" and half["error"] == "after: drop_counters failed after the capture"
    assert half["kernel"] == {"release": "6.18.44", "boot_id": before["system"]["boot_id"]}
    assert half["counters"] == {} and half["interval_s"] is None
    assert half["capture"]["drops"][0]["count"] == 12
    assert report["fleet"]["drops"] == 12
    assert gone == {
        "host": "gone",
        "status": "unreachable",
        "error": "before: ssh: connect to host gone port 22: Connection timed out",
        "kernel": {"release": None, "boot_id": None},
        "system": {"kernel_release": None, "distro": None, "python": None, "nics": {}},
        "groups": None,
        "interval_s": None,
        "capture": None,
        "counters": {},
        "resets": [],
        "appeared": {"interfaces": [], "qdiscs": []},
        "vanished": {"interfaces": [], "qdiscs": []},
        "capabilities": None,
        "knobs": None,
        "notes": [],
        "firewall_rules": {},
        "drop_counters": {},
        "ledger": None,
        "findings": [],
        "verdict": "unknown",
    }
    html = render_html(report)
    assert "Connection timed out" in html


def test_collection_errors_become_notes(tmp_path: Path) -> None:
    host = simple_host("h1", [drop("NO_SOCKET", "__udp4_lib_rcv", 3)])
    host["after"]["errors"] = [{"source": "ethtool -S eth0", "error": "Operation not supported"}]
    host["capture"]["other"] = {"count": 17, "groups": 4}

    report = build_report(write_run(tmp_path / "run", [host]))

    assert report["hosts"][0]["notes"][0] == "after: ethtool -S eth0: Operation not supported"
    assert "17 drops in 4 smaller groups" in report["hosts"][0]["notes"][1]
    assert "Operation not supported" in render_html(report)


def test_drops_counted_without_their_port_are_a_note_and_a_bad_count_names_the_field(tmp_path: Path) -> None:
    host = simple_host("h1", [drop("NO_SOCKET", "__udp4_lib_rcv", 808)])
    host["capture"]["unitemised"] = 808
    report = build_report(write_run(tmp_path / "run", [host]))
    assert report["hosts"][0]["notes"] == [
        "capture: 808 drops are counted without their L4 protocol and port (bpftrace's per-port map was full, as"
        " under a port scan); every count by reason and location is exact"]

    host["capture"]["unitemised"] = "808"
    report = build_report(write_run(tmp_path / "bad", [host]))
    assert report["hosts"][0]["status"] == "failed"
    assert report["hosts"][0]["error"] == "hosts/h1.json: 'capture.unitemised' is a string, expected an integer"


def test_missing_manifest_is_fatal_and_names_the_file(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "run", _hosts())
    (run_dir / "manifest.json").unlink()

    with pytest.raises(RunError, match=r"manifest\.json: file is missing"):
        build_report(run_dir)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"schema_version": 1, "kind": "dropscope-run", "hosts": [', r"manifest\.json: not valid JSON: .*truncated"),
        ('{"schema_version": 3, "kind": "dropscope-run", "hosts": []}', r"manifest\.json: schema_version 3 is not sup"),
        ('{"schema_version": 1, "kind": "dropscope-run"}', r"manifest\.json: 'hosts' is null, expected a list"),
        (
            '{"schema_version": 1, "kind": "dropscope-host", "hosts": []}',
            r"manifest\.json: 'kind' is \"dropscope-host\"",
        ),
        ("[1, 2]", r"manifest\.json: is a list, expected an object"),
    ],
)
def test_corrupt_manifest_is_fatal(tmp_path: Path, content: str, message: str) -> None:
    run_dir = write_run(tmp_path / "run", _hosts())
    (run_dir / "manifest.json").write_text(content)

    with pytest.raises(RunError, match=message):
        build_report(run_dir)


def test_run_dir_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="not a directory"):
        build_report(tmp_path / "nope")
