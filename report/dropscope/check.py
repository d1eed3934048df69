"""`dropscope check RUN_DIR --thresholds FILE`: a yes/no for scheduled runs and CI.

Thresholds (YAML) on drop reasons and counters, as rates per second and/or counts:

    reasons:                     # capture drops attributed to the host (see the findings)
      - reason: "*"              # glob on the reason (default "*")
        location: "*"            # glob on the kernel function (default "*")
        hosts: "*"               # glob on the host name (default "*")
        max_rate: 50             # drops per second (capture duration)
        max_count: 1000          # drops during the capture
        include_benign: false    # known noise is left out unless true
    counters:
      - counter: UdpRcvbufErrors # glob on the counter name
        section: protocols       # optional: interfaces, protocols, softnet, qdiscs, sockets, firewall
        object: "*"              # optional glob: interface, qdisc, socket or rule
        drop: true               # optional: only drop counters (as the knowledge base and the page say)
        max_rate: 1              # per second (snapshot interval)
        max_count: 100
    verdict: problem             # optional: a host whose verdict is at least this violates

Relative to the run history (RUNS_DIR/history.sqlite, which `dropscope report` feeds; --history FILE
elsewhere), in the same entries (alone or beside max_rate / max_count):

      - reason: "*"
        max_ratio: 3             # rate more than 3x this host's median rate over its last baseline_runs runs
        baseline_runs: 7         # default 7: the host's last 7 runs before this one where it was diagnosed
        new: true                # the reason / counter moved now and not in the host's last run
        min_rate: 0.1            # optional: max_ratio and new ignore rates up to this (default 0)

They compare a reason's capture rate (all its locations; `location` must stay "*") or a drop counter's rate
with the same item in earlier runs (a run where it did not move counts as 0). A host with no earlier
diagnosed run is not judged by them. --prometheus then also writes each item's baseline (the median rate)
and ratio (rate / median).

On a kernel shared by several hosts, a reason threshold counts only the drops attributed to the host;
drops no host's counters account for are checked once per kernel, as a test case "kernel BOOT_ID".

Exit codes: 0 every threshold holds; 1 a threshold is violated; 3 no violation, but the run is
incomplete (a host unreachable or failed); 2 bad input (run directory or thresholds file).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import re
import sqlite3
import statistics
import xml.etree.ElementTree as ET  # noqa: S405 (we only write XML)
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from dropscope.build import build_report, counter_items
from dropscope.commands import add_command, knowledge_from, run_guarded, write_atomically
from dropscope.history import Baseline, HistoryError, baselines, host_items, index_path, open_index
from dropscope.knowledge_base import SECTIONS, KnowledgeError
from dropscope.load import JSON, RunError
from dropscope.sampling import estimate_text, one_in, rate_margin

SUMMARY = "check a run against thresholds (exit 0 ok, 1 violated, 3 incomplete); JUnit and Prometheus output"
EXIT_OK, EXIT_VIOLATED, EXIT_BAD_INPUT, EXIT_INCOMPLETE = 0, 1, 2, 3
VERDICT_RANK = {"ok": 0, "warning": 1, "problem": 2}
VERDICT_VALUE = {"ok": 0, "warning": 1, "problem": 2}
DEFAULT_BASELINE_RUNS = 7
XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


RELATIVE_KEYS = ("max_ratio", "baseline_runs", "new", "min_rate")


class ThresholdError(ValueError):
    """The thresholds file is not valid; the message names the entry."""


def add_arguments(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register the `check` sub-command."""
    parser = add_command(subparsers, "check", run_check, SUMMARY, __doc__)
    parser.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="a run directory")
    parser.add_argument("--thresholds", metavar="FILE", type=Path, required=True, help="thresholds (YAML)")
    parser.add_argument("--junit", metavar="FILE", type=Path, help="write JUnit XML (one test case per host)")
    parser.add_argument("--prometheus", metavar="FILE", type=Path, help="write a Prometheus textfile (.prom)")
    parser.add_argument(
        "--history",
        metavar="FILE",
        type=Path,
        default=None,
        help="the run history for relative thresholds and baseline ratios (default: RUN_DIR/../history.sqlite)",
    )
    return parser


# --------------------------------------------------------------------------------------------------
# Thresholds


def _number(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ThresholdError(f"{where}: expected a number ≥ 0, got {value!r}")
    return float(value)


def load_thresholds(path: Path) -> JSON:
    """Read and check a thresholds file."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ThresholdError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise ThresholdError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise ThresholdError(f"{path}: expected a mapping with reasons, counters and/or verdict")
    unknown = set(document) - {"reasons", "counters", "verdict"}
    if unknown:
        raise ThresholdError(f"{path}: unknown keys {', '.join(sorted(map(str, unknown)))}")
    result: JSON = {"reasons": [], "counters": [], "verdict": document.get("verdict")}
    if result["verdict"] is not None and result["verdict"] not in ("warning", "problem"):
        raise ThresholdError(f"{path}: verdict must be warning or problem")
    for kind, fields in (
        ("reasons", ("reason", "location", "hosts")),
        ("counters", ("counter", "section", "object", "hosts")),
    ):
        entries = document.get(kind) or []
        if not isinstance(entries, list):
            raise ThresholdError(f"{path}: {kind} must be a list")
        for index, entry in enumerate(entries):
            where = f"{path}: {kind}[{index}]"
            if not isinstance(entry, dict):
                raise ThresholdError(f"{where}: expected a mapping")
            allowed = {*fields, "max_rate", "max_count", "include_benign", "name", *RELATIVE_KEYS}
            if kind == "counters":
                allowed.add("drop")
            if set(entry) - allowed:
                raise ThresholdError(f"{where}: unknown keys {', '.join(sorted(map(str, set(entry) - allowed)))}")
            checked = {name: str(entry.get(name, "*")) for name in fields}
            if kind == "counters" and "counter" not in entry:
                raise ThresholdError(f"{where}: needs `counter`")
            if kind == "counters" and checked["section"] != "*" and checked["section"] not in SECTIONS:
                raise ThresholdError(f"{where}: section must be one of {', '.join(SECTIONS)}")
            checked["max_rate"] = _number(entry.get("max_rate"), f"{where}.max_rate")
            checked["max_count"] = _number(entry.get("max_count"), f"{where}.max_count")
            _relative_limits(entry, checked, where)
            if checked["max_rate"] is None and checked["max_count"] is None and not checked["relative"]:
                raise ThresholdError(f"{where}: needs max_rate, max_count, max_ratio and/or new")
            checked["include_benign"] = bool(entry.get("include_benign", False))
            checked["drop"] = bool(entry.get("drop", False))
            label = entry.get("name") or " ".join(
                f"{name}={checked[name]}" for name in fields if checked[name] != "*" or name == fields[0]
            )
            checked["label"] = f"{kind}[{index}] {label}"
            result[kind].append(checked)
    return result


def _relative_limits(entry: JSON, checked: JSON, where: str) -> None:
    """The relative part of a threshold entry (max_ratio, baseline_runs, new, min_rate) into CHECKED."""
    checked["max_ratio"] = _number(entry.get("max_ratio"), f"{where}.max_ratio")
    runs = entry.get("baseline_runs", DEFAULT_BASELINE_RUNS)
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ThresholdError(f"{where}.baseline_runs: expected a whole number ≥ 1, got {runs!r}")
    checked["baseline_runs"] = runs
    new = entry.get("new", False)
    if not isinstance(new, bool):
        raise ThresholdError(f"{where}.new: expected true or false, got {new!r}")
    checked["new"] = new
    checked["min_rate"] = _number(entry.get("min_rate"), f"{where}.min_rate") or 0.0
    checked["relative"] = checked["max_ratio"] is not None or new
    if checked["relative"] and checked.get("location", "*") != "*":
        raise ThresholdError(f'{where}: max_ratio and new compare a reason over all its locations (location: "*")')
    if not checked["relative"] and ("baseline_runs" in entry or "min_rate" in entry):
        raise ThresholdError(f"{where}: baseline_runs and min_rate go with max_ratio or new")


def baseline_depth(thresholds: JSON) -> int:
    """How many earlier runs per host the relative thresholds look at (0: they need no history)."""
    return max((limit["baseline_runs"] for kind in ("reasons", "counters") for limit in thresholds[kind]
                if limit["relative"]), default=0)  # fmt: skip


def _glob(value: str | None, pattern: str) -> bool:
    return fnmatch.fnmatchcase(value or "", pattern)


def _estimated(sampled: int) -> str:
    """What a message about a sampled capture's count says after it (nothing for exact counts)."""
    return f" (an estimate: the capture counted 1 in {sampled} drops)" if sampled > 1 else ""


def _rate_text(count: float, rate: float, sampled: int) -> str:
    if sampled > 1:
        return f"~{rate:,.2f}/s ± {rate_margin(int(count), rate, sampled):,.2f}/s"
    return f"{rate:,.2f}/s"


def _over(limit: JSON, count: float, rate: float | None, sampled: int = 1) -> list[str]:
    """What of LIMIT's max_count and max_rate COUNT and RATE exceed. SAMPLED > 1: they are a sampled capture's
    estimates, held against the limit as they are and printed with their ±2σ."""
    problems = []
    if limit["max_count"] is not None and count > limit["max_count"]:
        text = estimate_text(int(count), sampled) if sampled > 1 else f"{count:,.0f}"
        problems.append(f"count {text} > max_count {limit['max_count']:,g}{_estimated(sampled)}")
    if limit["max_rate"] is not None and rate is not None and rate > limit["max_rate"]:
        problems.append(f"rate {_rate_text(count, rate, sampled)} > max_rate {limit['max_rate']:,g}/s"
                        f"{_estimated(sampled)}")  # fmt: skip
    return problems


def _host_drops(findings: Iterable[JSON], include_benign: bool) -> list[JSON]:
    drops = []
    for finding in findings:
        if finding["attribution"] in ("host", "kernel") and (include_benign or not finding["benign"]):
            drops += finding["evidence"]["drops"]
    return drops


def _reason_violations(
    name: str, findings: list[JSON], duration: float | None, limits: list[JSON], sampled: int
) -> list[JSON]:
    """Violations of the reason LIMITS by the capture drops of FINDINGS (SAMPLED: the capture's 1 in N)."""
    violations = []
    for limit in limits:
        if not _glob(name, limit["hosts"]):
            continue
        totals: dict[str, int] = {}
        for drop in _host_drops(findings, limit["include_benign"]):
            if _glob(drop["reason"], limit["reason"]) and _glob(drop["location"], limit["location"]):
                totals[drop["reason"]] = totals.get(drop["reason"], 0) + drop["count"]
        for reason, count in sorted(totals.items()):
            for problem in _over(limit, count, count / duration if duration else None, sampled):
                violations.append({"threshold": limit["label"], "subject": reason, "message": problem})
    return violations


def _moved_counters(host: JSON) -> Iterable[tuple[str, str | None, str, int, float | None, str | None]]:
    """(section, object, counter, delta, rate, drop) of every counter that moved on a host (exact rates)."""
    interval = host.get("interval_s")
    for section, obj, counter, delta, _, drop in counter_items(host):
        yield section, obj, counter, delta, (delta / interval if interval else None), drop


def _counter_violations(host: JSON, limits: list[JSON]) -> list[JSON]:
    violations = []
    for limit in limits:
        if not _glob(host["host"], limit["hosts"]):
            continue
        for section, obj, counter, delta, rate, drop in _moved_counters(host):
            if (
                (drop or not limit["drop"])
                and _glob(counter, limit["counter"])
                and _glob(section, limit["section"])
                and (obj is None and limit["object"] == "*" or _glob(obj, limit["object"]))
            ):
                subject = " ".join(part for part in (section, obj, counter) if part)
                for problem in _over(limit, delta, rate):
                    violations.append({"threshold": limit["label"], "subject": subject, "message": problem})
    return violations


def _median_rate(key: tuple[str, str], baseline: Baseline, runs: int) -> float:
    """The median rate of an item over a host's last RUNS runs (0 where it did not move)."""
    return statistics.median((values.get(key, (0, 0.0))[1] or 0.0) for _, values in baseline[:runs])


def _relative_problems(limit: JSON, key: tuple[str, str], item: JSON, baseline: Baseline, sampled: int) -> list[str]:
    """What of LIMIT's max_ratio and new ITEM (SAMPLED: its count is a capture's estimate, 1 in N) exceeds
    against the host's BASELINE."""
    rate = item["rate"]
    if not baseline or rate is None or rate <= limit["min_rate"]:
        return []
    problems = []
    if limit["max_ratio"] is not None:
        runs = min(limit["baseline_runs"], len(baseline))
        median = _median_rate(key, baseline, runs)
        if rate > limit["max_ratio"] * median:
            ratio = f"{rate / median:,.1f}x" if median else "from 0"
            problems.append(f"rate {_rate_text(item['count'], rate, sampled)} > {limit['max_ratio']:g}x the median "
                            f"{median:,.2f}/s of the host's last {runs} run(s) ({ratio})"
                            + _estimated(sampled))  # fmt: skip
    if limit["new"] and item["count"] > 0 and baseline[0][1].get(key, (0, None))[0] == 0:
        problems.append(f"new since the host's last run ({baseline[0][0]})")
    return problems


def _relative_violations(host: JSON, findings: list[JSON], thresholds: JSON, baseline: Baseline) -> list[JSON]:
    """Violations of the relative thresholds (max_ratio, new): the host's items against its BASELINE."""
    violations = []
    items = host_items(host)
    sampled = one_in(host.get("capture"))
    for limit in thresholds["reasons"]:
        if not limit["relative"] or not _glob(host["host"], limit["hosts"]):
            continue
        attributed = {drop["reason"] for drop in _host_drops(findings, limit["include_benign"])}
        for key, item in items.items():
            if key[0] == "reason" and key[1] in attributed and _glob(key[1], limit["reason"]):
                for problem in _relative_problems(limit, key, item, baseline, sampled):
                    violations.append({"threshold": limit["label"], "subject": key[1], "message": problem})
    for limit in thresholds["counters"]:
        if not limit["relative"] or not _glob(host["host"], limit["hosts"]):
            continue
        for key, item in items.items():
            if (
                key[0] == "counter"
                and _glob(item["item"], limit["counter"])
                and _glob(item["section"], limit["section"])
                and (item["object"] is None and limit["object"] == "*" or _glob(item["object"], limit["object"]))
            ):
                for problem in _relative_problems(limit, key, item, baseline, 1):  # a counter's delta is exact
                    violations.append({"threshold": limit["label"], "subject": key[1], "message": problem})
    return violations


def check_report(report: JSON, thresholds: JSON, history: Mapping[str, Baseline] | None = None) -> JSON:
    """Test cases (one per host, plus one per shared kernel with unattributed drops) and the outcome.

    HISTORY (host → its earlier diagnosed runs, newest first: `history.baselines`) is what the relative
    thresholds compare with; without it they are not checked.
    """
    cases = []
    for host in report["hosts"]:
        case: JSON = {"name": host["host"], "status": host["status"], "error": host.get("error"), "violations": []}
        if host["status"] == "ok":
            duration = (host.get("capture") or {}).get("duration_s")
            findings = [f for f in host.get("findings") or [] if f["attribution"] == "host"]
            sampled = one_in(host.get("capture"))
            case["violations"] += _reason_violations(host["host"], findings, duration, thresholds["reasons"], sampled)
            case["violations"] += _counter_violations(host, thresholds["counters"])
            if history is not None:
                case["violations"] += _relative_violations(host, findings, thresholds, history.get(host["host"], []))
            wanted = thresholds.get("verdict")
            if wanted and VERDICT_RANK.get(host.get("verdict", "ok"), 0) >= VERDICT_RANK[wanted]:
                worst = next((f for f in host.get("findings") or [] if f["severity"] == host["verdict"]), None)
                case["violations"].append({
                    "threshold": f"verdict {wanted}", "subject": "verdict",
                    "message": f"verdict {host['verdict']}" + (f": {worst['explanation']}" if worst else ""),
                })  # fmt: skip
        cases.append(case)
    kernels = {kernel["boot_id"]: kernel for kernel in report["fleet"]["kernels"]}
    by_kernel: dict[str, list[JSON]] = {}
    for finding in report["fleet"].get("findings") or []:
        by_kernel.setdefault(finding["kernel"], []).append(finding)
    captures = {h["host"]: h.get("capture") or {} for h in report["hosts"]}
    for boot_id, findings in by_kernel.items():
        counted_from = kernels.get(boot_id, {}).get("counted_from")
        violations = []
        for limit in thresholds["reasons"]:
            hosts = kernels.get(boot_id, {}).get("hosts") or []
            if any(_glob(name, limit["hosts"]) for name in hosts):
                violations += _reason_violations(
                    counted_from or "", findings, captures.get(counted_from, {}).get("duration_s"),
                    [{**limit, "hosts": "*"}], one_in(captures.get(counted_from)),
                )
        cases.append({"name": f"kernel {boot_id}", "status": "ok", "error": None, "violations": violations})
    violated = any(case["violations"] for case in cases)
    incomplete = any(host["status"] != "ok" for host in report["hosts"])
    exit_code = EXIT_VIOLATED if violated else EXIT_INCOMPLETE if incomplete else EXIT_OK
    return {"cases": cases, "violated": violated, "incomplete": incomplete, "exit_code": exit_code}


# --------------------------------------------------------------------------------------------------
# Outputs


def _xml_text(value: Any) -> str:
    """Text XML 1.0 can carry (control characters and lone surrogates replaced)."""
    return XML_INVALID.sub("\ufffd", str(value))


def junit_xml(report: JSON, outcome: JSON) -> str:
    """JUnit XML: a testsuite "dropscope check", one testcase per host (failure per violated threshold)."""
    run_id = _xml_text(report["run"].get("run_id") or "run")
    cases = outcome["cases"]
    failures = sum(1 for case in cases if case["violations"])
    errors = sum(1 for case in cases if case["status"] != "ok")
    suites = ET.Element("testsuites", name="dropscope", tests=str(len(cases)), failures=str(failures),
                        errors=str(errors))  # fmt: skip
    suite = ET.SubElement(suites, "testsuite", name=f"dropscope check {run_id}", tests=str(len(cases)),
                          failures=str(failures), errors=str(errors), skipped="0")  # fmt: skip
    for case in cases:
        element = ET.SubElement(suite, "testcase", classname=f"dropscope.{run_id}", name=_xml_text(case["name"]))
        if case["status"] != "ok":
            error = ET.SubElement(element, "error", type=case["status"],
                                  message=_xml_text(f"{case['status']}: {case['error'] or 'no data'}"))  # fmt: skip
            error.text = _xml_text(case["error"] or "")
        if case["violations"]:
            first = case["violations"][0]
            more = f" (and {len(case['violations']) - 1} more)" if len(case["violations"]) > 1 else ""
            message = _xml_text(f"{first['threshold']}: {first['subject']}: {first['message']}{more}")
            failure = ET.SubElement(element, "failure", type="threshold", message=message)
            failure.text = _xml_text(
                "\n".join(f"{v['threshold']}: {v['subject']}: {v['message']}" for v in case["violations"])
            )
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def escape_label(value: Any) -> str:
    """A Prometheus label value: backslash, double quote and newline escaped (text exposition format)."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Mapping[str, Any]) -> str:
    return "{" + ",".join(f'{name}="{escape_label(value)}"' for name, value in labels.items()) + "}"


def _number_text(value: float | int) -> str:
    if isinstance(value, float):
        return repr(round(value, 6)) if math.isfinite(value) else ("+Inf" if value > 0 else "-Inf")
    return str(value)


def prometheus_text(
    report: JSON, outcome: JSON, history: Mapping[str, Baseline] | None = None, runs: int = DEFAULT_BASELINE_RUNS
) -> str:
    """A node_exporter textfile: drops, counter deltas, host up, verdicts, check outcome; with HISTORY, each
    drop reason's and drop counter's baseline (median rate over the host's last RUNS runs) and ratio."""
    metrics: dict[str, tuple[str, str, list[str]]] = {}

    def add(name: str, kind: str, help_text: str, labels: Mapping[str, Any], value: float | int) -> None:
        metrics.setdefault(name, (kind, help_text, []))[2].append(
            f"{name}{_labels(labels) if labels else ''} {_number_text(value)}"
        )

    verdict_value = {**VERDICT_VALUE, "unknown": -1}
    for host in report["hosts"]:
        name = host["host"]
        add("dropscope_host_up", "gauge", "1 if the host was diagnosed (status ok), 0 if unreachable or failed.",
            {"host": name}, 1 if host["status"] == "ok" else 0)  # fmt: skip
        add("dropscope_verdict", "gauge", "Host verdict: 0 ok, 1 warning, 2 problem, -1 not diagnosed.",
            {"host": name}, verdict_value.get(host.get("verdict", "unknown"), -1))  # fmt: skip
        capture = host.get("capture") or {}
        duration = capture.get("duration_s")
        if host.get("capture"):
            add("dropscope_capture_sample_one_in", "gauge", "1 in how many drops the host's capture counted: 1, exact "
                "counts; N > 1 (the rate guard), its drops and drop rates are estimates within 2*sqrt(C*(N-1)) of the "
                "true count C 19 times in 20.", {"host": name}, one_in(capture))  # fmt: skip
        for drop in capture.get("drops") or []:
            labels = {"host": name, "reason": drop["reason"], "location": drop["location"]}
            add("dropscope_drops_total", "gauge",
                "kfree_skb drops seen by the host's capture in the last run (scope kernel: hosts sharing a kernel "
                "see the same drops).", labels, drop["count"])  # fmt: skip
            if duration:
                add("dropscope_drop_rate", "gauge", "kfree_skb drops per second during the last run's capture.",
                    labels, drop["count"] / duration)  # fmt: skip
        for section, obj, counter, delta, rate, _ in _moved_counters(host):
            labels = {"host": name, "section": section, "object": obj or "", "counter": counter}
            add("dropscope_counter_delta", "gauge", "Counter increase between the host's two snapshots.", labels, delta)
            if rate is not None:
                add("dropscope_counter_rate", "gauge", "Counter increase per second (monotonic clock).", labels, rate)
        severities: dict[str, int] = dict.fromkeys(("info", "warning", "problem"), 0)
        for finding in host.get("findings") or []:
            severities[finding["severity"]] += 1
        for severity, number in severities.items():
            labels = {"host": name, "severity": severity}
            add("dropscope_findings", "gauge", "Findings of the host by severity.", labels, number)
        baseline = (history or {}).get(name) if host["status"] == "ok" else None
        for key, item in host_items(host).items() if baseline else ():
            median = _median_rate(key, baseline, runs)
            labels = {"host": name, "kind": key[0], "name": key[1]}
            add("dropscope_baseline_rate", "gauge", "Median rate per second of the drop reason or counter over the "
                "host's last diagnosed runs before this one (0 where it did not move).", labels, median)  # fmt: skip
            if item["rate"] is not None and (median or item["rate"]):
                add("dropscope_baseline_ratio", "gauge", "This run's rate divided by the baseline rate (+Inf: none "
                    "before).", labels, item["rate"] / median if median else float("inf"))  # fmt: skip
    for case in outcome["cases"]:
        add("dropscope_threshold_violations", "gauge", "Thresholds violated, per host (or shared kernel).",
            {"host": case["name"]}, len(case["violations"]))  # fmt: skip
    add("dropscope_fleet_verdict", "gauge", "Fleet verdict: 0 ok, 1 warning, 2 problem, -1 not diagnosed.", {},
        verdict_value.get(report["fleet"].get("verdict", "unknown"), -1))  # fmt: skip
    add("dropscope_check_exit_code", "gauge", "Exit code of dropscope check: 0 ok, 1 violated, 3 incomplete.", {},
        outcome["exit_code"])  # fmt: skip
    lines = []
    for name, (kind, help_text, samples) in metrics.items():
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines += samples
    return "\n".join(lines) + "\n"


def _history(args: argparse.Namespace, report: JSON, depth: int, required: bool) -> dict[str, Baseline] | None:
    """Each host's last DEPTH diagnosed runs before this one, from the run history; None when no history is
    there (HistoryError when REQUIRED: relative thresholds need it)."""
    path = args.history if args.history is not None else index_path(args.run_dir.resolve().parent)
    if not required and not path.is_file():
        return None
    try:
        connection = open_index(path, create=False)
    except HistoryError:
        if required:
            raise
        return None
    try:
        found, _ = baselines(connection, args.run_dir.resolve().name, report["run"].get("started"), max(depth, 1))
    except sqlite3.Error as exc:
        raise HistoryError(f"{path}: cannot be read ({exc})") from None
    finally:
        connection.close()
    return found


def run_check(args: argparse.Namespace) -> int:
    """Entry point of `dropscope check`."""

    def check_and_write() -> tuple[JSON, JSON]:
        thresholds = load_thresholds(args.thresholds)
        report = build_report(args.run_dir, knowledge_from(args))
        depth = baseline_depth(thresholds)
        history = _history(args, report, depth, required=depth > 0)
        outcome = check_report(report, thresholds, history)
        if args.junit is not None:
            write_atomically(args.junit, junit_xml(report, outcome))
        if args.prometheus is not None:
            if history is None or depth < DEFAULT_BASELINE_RUNS:
                history = _history(args, report, DEFAULT_BASELINE_RUNS, required=False)
            write_atomically(args.prometheus, prometheus_text(report, outcome, history))
        return report, outcome

    bad_input = (ThresholdError, RunError, KnowledgeError, HistoryError)
    checked = run_guarded("check", "the outputs", check_and_write, bad_input)
    if checked is None:
        return EXIT_BAD_INPUT
    report, outcome = checked
    for case in outcome["cases"]:
        if case["status"] != "ok":
            print(f"{case['name']}: {case['status']}: {case['error'] or 'no data'}")
        for violation in case["violations"]:
            print(f"{case['name']}: {violation['threshold']}: {violation['subject']}: {violation['message']}")
    state = {EXIT_OK: "ok", EXIT_VIOLATED: "violated", EXIT_INCOMPLETE: "incomplete"}[outcome["exit_code"]]
    print(json.dumps({"check": state, "hosts": len(report["hosts"]), "fleet_verdict": report["fleet"].get("verdict"),
                      "violations": sum(len(c["violations"]) for c in outcome["cases"])}))  # fmt: skip
    return int(outcome["exit_code"])
