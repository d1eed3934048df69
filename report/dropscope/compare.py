"""`dropscope compare RUN_BEFORE RUN_AFTER`: better or worse than last time, per host, reason and counter.

Rows list, per host, every drop reason the capture saw and every drop counter that moved, with the rate
before, after and the change. The verdict comes from the findings attributed to each host (severity
warning or problem; known noise and drops seen only kernel-wide on a shared kernel do not count):

- worse: a finding is new, its severity rose, or its rate grew by more than the threshold (percent);
- better: a finding vanished, its severity fell, or its rate fell by more than the threshold.

A rate from a sampled capture (the rate guard counted 1 in N drops) is an estimate: compare prints it as
`~R ± M` (±2σ), and a change within the two sides' margins together is not a change (the same).

Exit codes: 0 not worse (better or the same), 1 worse beyond the threshold, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import jinja2

from dropscope.build import build_report, drop_items
from dropscope.commands import add_command, knowledge_from, run_guarded, write_atomically
from dropscope.formatting import format_change, format_rate
from dropscope.knowledge_base import SEVERITY_RANK, KnowledgeBase, KnowledgeError
from dropscope.load import JSON, SCHEMA_VERSION, RunError
from dropscope.sampling import estimate_fields, finding_one_in, one_in

SUMMARY = "compare two runs: rates before/after per host, reason and counter; exit 1 if worse"
EXIT_NOT_WORSE, EXIT_WORSE, EXIT_BAD_INPUT = 0, 1, 2
DEFAULT_THRESHOLD_PCT = 20.0
HTML_ROWS = 5_000


def add_arguments(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register the `compare` sub-command."""
    parser = add_command(subparsers, "compare", run_compare, SUMMARY, __doc__)
    parser.add_argument("before", metavar="RUN_BEFORE", type=Path, help="the earlier run directory")
    parser.add_argument("after", metavar="RUN_AFTER", type=Path, help="the later run directory")
    add_threshold_argument(parser)
    parser.add_argument(
        "--output-dir", metavar="DIR", type=Path, default=None, help="where compare.json/.html go (default RUN_AFTER)"
    )
    return parser


def add_threshold_argument(parser: argparse.ArgumentParser) -> None:
    """`--threshold PCT`, the rule's one parameter (`finding_change`): compare's and trend's."""
    parser.add_argument(
        "--threshold",
        metavar="PCT",
        type=float,
        default=DEFAULT_THRESHOLD_PCT,
        help=f"a finding's rate must change by more than PCT percent to count (default {DEFAULT_THRESHOLD_PCT:g})",
    )


def counted(finding: JSON) -> bool:
    """Whether a finding counts in a comparison: attributed to the host, severity warning or problem."""
    return finding["attribution"] == "host" and SEVERITY_RANK[finding["severity"]] >= SEVERITY_RANK["warning"]


def _counted_findings(host: JSON) -> dict[str, JSON]:
    return {f["key"]: f for f in host.get("findings") or [] if counted(f)}


def finding_change(was: JSON | None, now: JSON | None, threshold_pct: float) -> str:
    """The rule: how one counted finding changed between two runs, from briefs with `severity`, `rate` and,
    for an estimate, `rate_margin` (its ±2σ).

    "new", "vanished", "worse" (severity rose or rate grew by more than THRESHOLD_PCT percent), "better"
    (severity fell or rate fell by more than it) or "same". A rate change within the margins of the two
    estimates together (√(m₁² + m₂²): independent samples) is the same. `dropscope trend` applies it to the
    run history.

    >>> brief = lambda rate, error=0.0: {"severity": "warning", "rate": rate, "rate_margin": error}
    >>> finding_change(brief(100), brief(125), 20), finding_change(brief(100, 30), brief(125, 30), 20)
    ('worse', 'same')
    >>> finding_change(brief(100, 30), brief(150, 30), 20), finding_change(brief(150, 30), brief(100, 30), 20)
    ('worse', 'better')
    """
    if was is None:
        return "new"
    if now is None:
        return "vanished"
    factor = threshold_pct / 100
    rank_change = SEVERITY_RANK[now["severity"]] - SEVERITY_RANK[was["severity"]]
    old_rate, new_rate = was["rate"] or 0, now["rate"] or 0
    error = math.hypot(was.get("rate_margin") or 0, now.get("rate_margin") or 0)
    if rank_change > 0 or (new_rate > old_rate * (1 + factor) and new_rate - old_rate > error):
        return "worse"
    if rank_change < 0 or (new_rate < old_rate * (1 - factor) and old_rate - new_rate > error):
        return "better"
    return "same"


def host_change(findings_by_change: dict[str, list]) -> str:
    """A host's change from its findings grouped by `finding_change`: worse, better or same."""
    if findings_by_change.get("new") or findings_by_change.get("worse"):
        return "worse"
    if findings_by_change.get("vanished") or findings_by_change.get("better"):
        return "better"
    return "same"


def _change_pct(before: float | None, after: float | None) -> float | None:
    if before is None or after is None:
        return None
    if before == 0:
        return None if after == 0 else float("inf")
    return round(100 * (after - before) / before, 1)


def _finding_brief(finding: JSON | None, capture: JSON | None) -> JSON | None:
    """What compare keeps of a finding (CAPTURE: its host's, which may have sampled)."""
    if finding is None:
        return None
    evidence = finding["evidence"]
    brief = {
        "key": finding["key"],
        "title": finding["title"],
        "severity": finding["severity"],
        "rate": evidence["rate"],
        "count": evidence["count"],
        "explanation": finding["explanation"],
    }
    brief.update(estimate_fields(evidence["count"], evidence["rate"], finding_one_in(finding, capture)))
    return brief


def _row_side(row: JSON, side: str, item: JSON | None, sampled: int) -> None:
    """ROW's SIDE ("before"/"after") from a drop item (None: it did not move); an estimate gets its margins."""
    row[f"{side}_rate"] = item["rate"] if item else 0.0
    row[f"{side}_count"] = item["count"] if item else 0
    if item and item["kind"] == "reason" and sampled > 1:  # a counter's delta is exact
        estimate = estimate_fields(item["count"], item["rate"], sampled)
        row[f"{side}_count_margin"], row[f"{side}_rate_margin"] = estimate["count_margin"], estimate["rate_margin"]


def compare_hosts(before: JSON, after: JSON, threshold_pct: float, before_items: dict, after_items: dict) -> JSON:
    """The comparison of one host present in either run."""
    result: JSON = {
        "host": (after or before)["host"],
        "before_verdict": before.get("verdict") if before else None,
        "after_verdict": after.get("verdict") if after else None,
        "change": "same",
        "findings": {"new": [], "vanished": [], "worse": [], "better": [], "same": []},
        "rows": [],
    }
    if not before or not after or before["status"] != "ok" or after["status"] != "ok":
        result["change"] = "incomplete"
        return result
    old, new = _counted_findings(before), _counted_findings(after)
    for key in sorted(set(old) | set(new)):
        was = _finding_brief(old.get(key), before.get("capture"))
        now = _finding_brief(new.get(key), after.get("capture"))
        result["findings"][finding_change(was, now, threshold_pct)].append({"key": key, "before": was, "after": now})
    for key in sorted(set(before_items) | set(after_items)):
        was, now = before_items.get(key), after_items.get(key)
        row: JSON = {"kind": (now or was)["kind"], "name": (now or was)["name"]}
        _row_side(row, "before", was, one_in(before.get("capture")))
        _row_side(row, "after", now, one_in(after.get("capture")))
        row["change_pct"] = _change_pct(row["before_rate"], row["after_rate"])
        result["rows"].append(row)
    result["rows"].sort(key=lambda row: -abs((row["after_rate"] or 0) - (row["before_rate"] or 0)))
    result["change"] = host_change(result["findings"])
    return result


def compare_runs(before_dir: Path, after_dir: Path, threshold_pct: float, knowledge: KnowledgeBase) -> JSON:
    """compare.json for two run directories (raises RunError for a bad one)."""
    sides = []
    for run_dir in (before_dir, after_dir):
        report = build_report(run_dir, knowledge)
        hosts = {}
        for host in report["hosts"]:
            hosts.setdefault(host["host"], (host, drop_items(host)))
        sides.append((report, hosts))
    (before_report, before_hosts), (after_report, after_hosts) = sides
    names = list(after_hosts) + [name for name in before_hosts if name not in after_hosts]
    hosts = []
    for name in names:
        before, before_items = before_hosts.get(name, (None, {}))
        after, after_items = after_hosts.get(name, (None, {}))
        hosts.append(compare_hosts(before, after, threshold_pct, before_items, after_items))
    changes = {
        change: sum(1 for h in hosts if h["change"] == change) for change in ("worse", "better", "same", "incomplete")
    }
    verdict = "worse" if changes["worse"] else "better" if changes["better"] else "same"
    order = {"worse": 0, "incomplete": 1, "better": 2, "same": 3}
    hosts.sort(key=lambda h: (order[h["change"]], h["host"]))
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "dropscope-compare",
        "before": {"run_dir": str(before_dir), "run_id": before_report["run"]["run_id"],
                   "verdict": before_report["fleet"].get("verdict")},
        "after": {"run_dir": str(after_dir), "run_id": after_report["run"]["run_id"],
                  "verdict": after_report["fleet"].get("verdict")},
        "threshold_pct": threshold_pct,
        "verdict": verdict,
        "hosts_by_change": changes,
        "hosts": hosts,
    }  # fmt: skip


def render_compare_html(comparison: JSON) -> str:
    """compare.html: one static page (no script), every value escaped."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("dropscope", "templates"), autoescape=True, undefined=jinja2.StrictUndefined
    )
    template = env.get_template("compare.html.j2")
    return template.render(c=comparison, rate=format_rate, pct=format_change, max_hosts=500, max_rows=200)


def _json_safe(value: Any) -> Any:
    """Infinite percentages (0 → something) become null with the row's rates telling the story."""
    if isinstance(value, float) and value == float("inf"):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def run_compare(args: argparse.Namespace) -> int:
    """Entry point of `dropscope compare`."""
    if not args.threshold >= 0:
        print("dropscope compare: --threshold must be a percentage ≥ 0", file=sys.stderr)
        return EXIT_BAD_INPUT
    target = args.output_dir if args.output_dir is not None else args.after

    def compare_and_write() -> JSON:
        comparison = compare_runs(args.before, args.after, args.threshold, knowledge_from(args))
        target.mkdir(parents=True, exist_ok=True)
        write_atomically(
            target / "compare.json", json.dumps(_json_safe(comparison), indent=1, ensure_ascii=False) + "\n"
        )
        write_atomically(target / "compare.html", render_compare_html(comparison))
        return comparison

    comparison = run_guarded("compare", "the comparison", compare_and_write, (RunError, KnowledgeError))
    if comparison is None:
        return EXIT_BAD_INPUT
    counts = comparison["hosts_by_change"]
    print(
        f"{comparison['verdict']}: {counts['worse']} host(s) worse, {counts['better']} better, "
        f"{counts['same']} the same, {counts['incomplete']} incomplete (threshold {args.threshold:g} %)"
    )
    for host in comparison["hosts"]:
        for kind in ("new", "worse"):
            for finding in host["findings"][kind]:
                before, after = finding["before"] or {}, finding["after"]
                print(
                    f"  {host['host']}: {kind} {finding['key']}: "
                    f"{format_rate(before.get('rate'), before.get('rate_margin'))} → "
                    f"{format_rate(after['rate'], after.get('rate_margin'))} per s ({after['severity']})"
                )
    print(target / "compare.json")
    print(target / "compare.html")
    return EXIT_WORSE if comparison["verdict"] == "worse" else EXIT_NOT_WORSE
