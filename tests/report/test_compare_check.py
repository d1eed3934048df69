"""`dropscope compare` and `dropscope check`: exit codes, compare.json, JUnit XML and the Prometheus textfile."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from dropscope.check import escape_label
from dropscope_lab.synthetic import drop, make_host, simple_host, write_run

HOSTILE = 'web"1\\x\nnext'


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dropscope", *args], capture_output=True, text=True, timeout=120)


def _fleet(noport: int, rcvbuf: int = 0, down: bool = False) -> list[dict]:
    hosts = [
        simple_host(
            "web1",
            [drop("NO_SOCKET", "__udp4_lib_rcv", noport)] if noport else [],
            protocols={"UdpNoPorts": noport} if noport else None,
        ),
        simple_host("web2", [drop("SOCKET_RCVBUFF", "__udp_enqueue_schedule_skb", rcvbuf)] if rcvbuf else []),
        simple_host(HOSTILE, [drop("QUEUE_PURGE", "sk_stream_kill_queues", 4)]),
    ]
    if down:
        hosts.append(make_host("db1", status="unreachable", error="ssh: connect to host db1: Connection refused"))
    return hosts


@pytest.fixture
def runs(tmp_path: Path) -> dict[str, Path]:
    return {
        "quiet": write_run(tmp_path / "quiet", _fleet(0), run_id="quiet"),
        "broken": write_run(tmp_path / "broken", _fleet(600, rcvbuf=300), run_id="broken"),
        "slightly": write_run(tmp_path / "slightly", _fleet(630, rcvbuf=300), run_id="slightly"),
        "down": write_run(tmp_path / "down", _fleet(0, down=True), run_id="down"),
    }


def test_compare_injected_change_is_worse_and_its_removal_better(runs: dict[str, Path], tmp_path: Path) -> None:
    worse = _run("compare", str(runs["quiet"]), str(runs["broken"]), "--output-dir", str(tmp_path / "w"))
    assert worse.returncode == 1, worse.stderr
    assert worse.stdout.startswith("worse: 2 host(s) worse, 0 better, 1 the same")
    comparison = json.loads((tmp_path / "w" / "compare.json").read_text())
    assert comparison["verdict"] == "worse"
    web1 = next(h for h in comparison["hosts"] if h["host"] == "web1")
    assert (web1["change"], web1["before_verdict"], web1["after_verdict"]) == ("worse", "ok", "problem")
    assert [f["key"] for f in web1["findings"]["new"]] == ["NO_SOCKET"]
    row = next(r for r in web1["rows"] if r["name"] == "NO_SOCKET")
    assert (row["before_rate"], row["after_rate"], row["change_pct"]) == (0.0, pytest.approx(59.94, 0.01), None)
    assert "NO_SOCKET" in (tmp_path / "w" / "compare.html").read_text()

    better = _run("compare", str(runs["broken"]), str(runs["quiet"]), "--output-dir", str(tmp_path / "b"))
    assert better.returncode == 0, better.stderr
    comparison = json.loads((tmp_path / "b" / "compare.json").read_text())
    assert comparison["verdict"] == "better"
    web1 = next(h for h in comparison["hosts"] if h["host"] == "web1")
    assert [f["key"] for f in web1["findings"]["vanished"]] == ["NO_SOCKET"]
    assert "Connection" not in better.stdout


def test_compare_threshold(runs: dict[str, Path], tmp_path: Path) -> None:
    """600 → 630 NO_SOCKET is +5 %: worse beyond 1 %, not beyond 10 %."""
    assert (
        _run(
            "compare",
            str(runs["broken"]),
            str(runs["slightly"]),
            "--threshold",
            "1",
            "--output-dir",
            str(tmp_path / "1"),
        ).returncode
        == 1
    )
    same = _run(
        "compare", str(runs["broken"]), str(runs["slightly"]), "--threshold", "10", "--output-dir", str(tmp_path / "10")
    )
    assert same.returncode == 0 and same.stdout.startswith("same:")


def _sampled(run_dir: Path, noport: int, sampled: int) -> Path:
    """A run whose web1 captured NOPORT NO_SOCKET drops; its capture counted 1 in SAMPLED (estimates)."""
    hosts = _fleet(noport)
    hosts[0]["capture"]["sample_one_in"] = sampled
    return write_run(run_dir, hosts)


def test_compare_holds_a_change_within_the_estimates_error_the_same(tmp_path: Path) -> None:
    """400 → 520 NO_SOCKET in 10.01 s is +30 % (> 20 %). Counted exactly, that is worse. Counted 1 in 8, the
    rates are ~40.0 ± 10.6/s and ~51.9 ± 12.1/s (±2σ: 2·√(400·7) = 106, 2·√(520·7) = 121 drops): the change
    (12.0/s) is within their margins together (√(10.6² + 12.1²) = 16.1/s), so it is the same; 400 → 700 is not."""
    exact = _run("compare", str(_sampled(tmp_path / "e1", 400, 1)), str(_sampled(tmp_path / "e2", 520, 1)),
                 "--output-dir", str(tmp_path / "exact"))  # fmt: skip
    assert exact.returncode == 1 and "web1: worse NO_SOCKET: 40.0 → 51.9 per s (problem)" in exact.stdout
    before = _sampled(tmp_path / "s1", 400, 8)
    within = _run("compare", str(before), str(_sampled(tmp_path / "s2", 520, 8)), "--output-dir", str(tmp_path / "w"))
    assert within.returncode == 0, within.stdout + within.stderr
    assert within.stdout.startswith("same: 0 host(s) worse, 0 better, 3 the same")
    web1 = next(h for h in json.loads((tmp_path / "w" / "compare.json").read_text())["hosts"] if h["host"] == "web1")
    (same,) = web1["findings"]["same"]
    assert {key: same["before"][key] for key in ("count", "rate", "sampled_one_in", "count_margin", "rate_margin")} \
        == {"count": 400, "rate": 39.96, "sampled_one_in": 8, "count_margin": 106, "rate_margin": 10.59}
    assert (same["after"]["count_margin"], same["after"]["rate_margin"]) == (121, 12.09)
    row = next(r for r in web1["rows"] if r["name"] == "NO_SOCKET")
    assert (row["before_count_margin"], row["after_count_margin"], row["after_rate_margin"]) == (106, 121, 12.09)
    counter = next(r for r in web1["rows"] if r["kind"] == "counter")  # a counter's delta is exact
    assert not {key for key in counter if "margin" in key}
    page = (tmp_path / "w" / "compare.html").read_text()
    assert '<td class="num">~40.0 ± 10.6</td>\n<td class="num">~51.9 ± 12.1</td>' in page  # the row, no finding
    beyond = _run("compare", str(before), str(_sampled(tmp_path / "s3", 700, 8)), "--output-dir", str(tmp_path / "b"))
    assert beyond.returncode == 1 and "web1: worse NO_SOCKET: ~40.0 ± 10.6 → ~69.9 ± 14.0 per s (problem)" in \
        beyond.stdout
    assert "~40.0 ± 10.6 → ~69.9 ± 14.0 per s." in (tmp_path / "b" / "compare.html").read_text()


def test_compare_bad_input_exits_2(runs: dict[str, Path], tmp_path: Path) -> None:
    missing = _run("compare", str(runs["quiet"]), str(tmp_path / "nope"))
    assert missing.returncode == 2 and "not a directory" in missing.stderr
    assert _run("compare", str(runs["quiet"]), str(runs["quiet"]), "--threshold", "-5").returncode == 2


THRESHOLDS = """
reasons:
  - reason: "*"
    max_rate: 50
  - reason: SOCKET_RCVBUFF
    max_count: 100
counters:
  - counter: UdpNoPorts
    section: protocols
    max_count: 1000
"""


def _check(
    run_dir: Path, tmp_path: Path, thresholds: str = THRESHOLDS
) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    limits, junit, prom = tmp_path / "limits.yml", tmp_path / "junit.xml", tmp_path / "drops.prom"
    limits.write_text(thresholds)
    proc = _run("check", str(run_dir), "--thresholds", str(limits), "--junit", str(junit), "--prometheus", str(prom))
    return proc, junit, prom


def test_check_exit_codes(runs: dict[str, Path], tmp_path: Path) -> None:
    assert _check(runs["quiet"], tmp_path / "q")[0].returncode == 0
    violated = _check(runs["broken"], tmp_path / "b")[0]
    assert violated.returncode == 1
    assert "web1: reasons[0] reason=*: NO_SOCKET: rate 59.94/s > max_rate 50/s" in violated.stdout
    assert "web2: reasons[1] reason=SOCKET_RCVBUFF: SOCKET_RCVBUFF: count 300 > max_count 100" in violated.stdout
    incomplete = _check(runs["down"], tmp_path / "d")[0]
    assert incomplete.returncode == 3 and "db1: unreachable" in incomplete.stdout
    # A violation wins over an incomplete run (the more urgent news).
    both = write_run(tmp_path / "both", _fleet(600, down=True))
    assert _check(both, tmp_path / "x")[0].returncode == 1
    # Bad thresholds are bad input.
    for text in (
        "reasons: [{reason: X}]",
        "counters: [{max_rate: 1}]",
        "nonsense: 1",
        "reasons: [{reason: X, max_rate: -1}]",
    ):
        assert _check(runs["quiet"], tmp_path / "bad", text)[0].returncode == 2, text
    verdict = _check(runs["broken"], tmp_path / "v", "verdict: problem\n")[0]
    assert verdict.returncode == 1 and "web1: verdict problem: verdict: verdict problem" in verdict.stdout


def test_check_labels_a_sampled_captures_estimates(tmp_path: Path) -> None:
    """The same 600 NO_SOCKET drops counted 1 in 8: the limit holds against the estimate, and the message says
    it is one, with its ±2σ (2·√(600·7) = 130 drops, 12.99/s)."""
    violated = _check(_sampled(tmp_path / "run", 600, 8), tmp_path / "c")[0]
    assert violated.returncode == 1
    assert ("web1: reasons[0] reason=*: NO_SOCKET: rate ~59.94/s ± 12.99/s > max_rate 50/s (an estimate: the capture "
            "counted 1 in 8 drops)") in violated.stdout.splitlines()
    limits = "reasons: [{reason: NO_SOCKET, max_count: 500}]"
    counted = _check(_sampled(tmp_path / "run2", 600, 8), tmp_path / "d", limits)
    assert ("web1: reasons[0] reason=NO_SOCKET: NO_SOCKET: count ~600 ± 130 > max_count 500 (an estimate: the capture "
            "counted 1 in 8 drops)") in counted[0].stdout.splitlines()


@pytest.mark.parametrize(("sampled", "count"), [(1, "900"), (8, "~900 ± 159")])
def test_check_judges_a_shared_kernels_unattributed_drops_in_a_case_of_their_own(
    tmp_path: Path, sampled: int, count: str
) -> None:
    """Two hosts on one kernel whose kernel-wide capture saw 900 NO_SOCKET drops their counters do not show: no
    host's case holds them; the kernel's case does, counted from the capture that saw them (an estimate when it
    counted 1 in 8: 2·√(900·7) = 159)."""
    shared = "5b0f4c3e-0000-4000-8000-00000000beef"
    hosts = [simple_host(name, [drop("NO_SOCKET", "__udp4_lib_rcv", 900)], boot_id=shared) for name in ("c1", "c2")]
    for host in hosts:
        host["capture"]["sample_one_in"] = sampled
    proc, junit, _ = _check(write_run(tmp_path / "run", hosts), tmp_path / "c",
                            "reasons: [{reason: NO_SOCKET, max_count: 100}]")  # fmt: skip
    assert proc.returncode == 1
    estimated = " (an estimate: the capture counted 1 in 8 drops)" if sampled > 1 else ""
    assert [line for line in proc.stdout.splitlines() if not line.startswith("{")] == [
        f"kernel {shared}: reasons[0] reason=NO_SOCKET: NO_SOCKET: count {count} > max_count 100{estimated}"]
    cases = {case.get("name"): case for case in ET.parse(junit).getroot().iter("testcase")}
    assert (cases["c1"].find("failure"), cases["c2"].find("failure")) == (None, None)
    assert cases[f"kernel {shared}"].find("failure") is not None


def test_check_junit_has_one_test_case_per_host(runs: dict[str, Path], tmp_path: Path) -> None:
    both = write_run(tmp_path / "nightly", _fleet(600, rcvbuf=300, down=True))  # the run id is the directory name
    _, junit, _ = _check(both, tmp_path)
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    cases = {case.get("name"): case for case in suite.findall("testcase")}
    assert set(cases) == {"web1", "web2", HOSTILE, "db1"}
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("4", "2", "1")
    assert (
        cases["web1"].find("failure").get("message") == "reasons[0] reason=*: NO_SOCKET: rate 59.94/s > max_rate 50/s"
    )
    assert cases["web1"].find("failure").get("type") == "threshold"
    web2 = cases["web2"].find("failure")
    assert web2.text == "reasons[1] reason=SOCKET_RCVBUFF: SOCKET_RCVBUFF: count 300 > max_count 100"  # 30/s < 50/s
    assert cases[HOSTILE].find("failure") is None and cases[HOSTILE].find("error") is None
    assert cases["db1"].find("error").get("type") == "unreachable"
    assert all(case.get("classname") == "dropscope.nightly" for case in cases.values())


SAMPLE = re.compile(r"^([a-z_]+)(\{(.*)\})? (-?[0-9.e+]+|[+-]Inf)$")
LABEL = re.compile(r'([a-z_]+)="((?:[^"\\]|\\[\\"n])*)"(,|$)')


def _parse_prometheus(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """A strict parser of the text exposition format (the subset dropscope writes)."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    typed = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("gauge", "counter") and name not in typed
            typed.add(name)
            continue
        match = SAMPLE.match(line)
        assert match, line
        name, _, labels_text, value = match.groups()
        assert name in typed, name
        labels = {}
        position = 0
        while labels_text and position < len(labels_text):
            label = LABEL.match(labels_text, position)
            assert label, (line, position)
            raw = label.group(2)
            labels[label.group(1)] = re.sub(r"\\(.)", lambda m: {"n": "\n", "\\": "\\", '"': '"'}[m.group(1)], raw)
            position = label.end()
        samples.setdefault(name, []).append((labels, float(value)))
    return samples


def test_prometheus_textfile(runs: dict[str, Path], tmp_path: Path) -> None:
    both = write_run(tmp_path / "both", _fleet(600, rcvbuf=300, down=True))
    _, _, prom = _check(both, tmp_path)
    metrics = _parse_prometheus(prom.read_text())
    up = {labels["host"]: value for labels, value in metrics["dropscope_host_up"]}
    assert up == {"web1": 1, "web2": 1, HOSTILE: 1, "db1": 0}  # the hostile name survives escaping exactly
    verdicts = {labels["host"]: value for labels, value in metrics["dropscope_verdict"]}
    assert verdicts == {"web1": 2, "web2": 2, HOSTILE: 0, "db1": -1}
    drops = {(lab["host"], lab["reason"], lab["location"]): v for lab, v in metrics["dropscope_drops_total"]}
    assert drops[("web1", "NO_SOCKET", "__udp4_lib_rcv")] == 600
    assert drops[(HOSTILE, "QUEUE_PURGE", "sk_stream_kill_queues")] == 4
    deltas = {
        (lab["host"], lab["section"], lab["object"], lab["counter"]): v for lab, v in metrics["dropscope_counter_delta"]
    }
    assert deltas[("web1", "protocols", "", "UdpNoPorts")] == 600
    assert dict((lab["host"], v) for lab, v in metrics["dropscope_threshold_violations"])["web2"] == 1
    # every capture's sampling (db1 has none); a sampled one's counts are estimates
    sampling = {lab["host"]: v for lab, v in metrics["dropscope_capture_sample_one_in"]}
    assert sampling == {"web1": 1, "web2": 1, HOSTILE: 1}
    sampled = _parse_prometheus(_check(_sampled(tmp_path / "sampled", 600, 8), tmp_path / "s")[2].read_text())
    assert {lab["host"]: v for lab, v in sampled["dropscope_capture_sample_one_in"]}["web1"] == 8
    assert metrics["dropscope_check_exit_code"] == [({}, 1.0)]
    assert metrics["dropscope_fleet_verdict"] == [({}, 2.0)]


def test_label_escaping() -> None:
    assert escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
