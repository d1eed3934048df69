"""Render report.json (see docs/run-format.md) as one self-contained HTML page.

The page needs no network: CSS and a small script are inline, and a Content-Security-Policy with the
script's sha256 hash forbids everything else. Every value is escaped by Jinja2's autoescape.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

import jinja2
from markupsafe import Markup

from dropscope import __version__
from dropscope.model import JSON, HostRecord, Run, host_drop_total, is_drop_counter

MATRIX_REASONS = 12  # reason columns in the host × reason table; the rest are summed in "other"
TOP_FLEET_ROWS = 10  # rows in the fleet's top reasons / top locations
SHARED_NAMES_SHOWN = 8  # host names listed in a "shares kernel with" note
PROBLEMS_SHOWN = 20  # failed/unreachable hosts listed in the fleet overview
STATUS_ORDER = {"failed": 0, "unreachable": 1, "ok": 2}


def csp_hash(script: str) -> str:
    """The CSP source expression ('sha256-…') that allows exactly this inline script."""
    digest = hashlib.sha256(script.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


def format_count(value: int | float | None) -> str:
    """1234567 → "1,234,567"; None → "–"."""
    if value is None:
        return "–"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def format_rate(value: float | None) -> str:
    """A per-second rate with sensible precision."""
    if value is None:
        return "–"
    if value == 0:
        return "0"
    if value < 0.01:
        return "<0.01"
    if value < 10:
        return f"{value:.2f}"
    if value < 100:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def format_seconds(value: float | None) -> str:
    """Seconds for display: 5.1 → "5.1 s"."""
    if value is None:
        return "–"
    return f"{value:,.1f} s" if value < 100 else f"{value:,.0f} s"


def heat_style(count: int, maximum: int) -> str:
    """Inline style shading a heat-map cell by its share of the largest cell (never from user data)."""
    if count <= 0 or maximum <= 0:
        return ""
    share = (count / maximum) ** 0.5  # square root: small counts still visible next to a huge one
    alpha = 0.10 + 0.80 * share
    color = "#fff" if alpha > 0.55 else "#1f2933"
    return f"background:rgba(200,40,40,{alpha:.2f});color:{color}"


def bar_style(count: int, maximum: int) -> str:
    """Inline style for a horizontal bar of count / maximum."""
    width = 0 if maximum <= 0 else max(1.0, 100 * count / maximum)
    return f"width:{width:.1f}%"


def _rate(delta: int, interval_s: float | None) -> float | None:
    return delta / interval_s if interval_s else None


_DROP_RULE = re.compile(r"\b(drop|reject)\b")


def _counter_rows(
    section: str, counters: Mapping[str, Any], interval_s: float | None, rule_texts: Mapping[str, str]
) -> list[JSON]:
    """Flat rows {section, object, detail, counter, delta, rate, gauge, drop, signal} for one counters section.

    `drop`: the counter counts lost packets (by its name; sockets always; firewall rules whose text drops or
    rejects). `signal`: worth showing first (drops, qdisc overlimits and non-zero queue gauges).
    """
    rows: list[JSON] = []
    dropping_rules = {key for key, text in rule_texts.items() if _DROP_RULE.search(text)}

    def add(obj: str | None, counter: str, value: int) -> None:
        gauge = section == "qdiscs" and counter.endswith("_now")
        if section == "sockets":
            drop = True
        elif section == "firewall":
            drop = counter == "packets" and bool(_DROP_RULE.search(rule_texts.get(obj or "", "")))
        else:
            drop = not gauge and counter != "overlimits" and is_drop_counter(counter)
        rows.append(
            {
                "section": section,
                "object": obj,
                "detail": rule_texts.get(obj or "") if section == "firewall" else None,
                "counter": counter,
                "delta": value,
                "rate": None if gauge else _rate(value, interval_s),
                "gauge": gauge,
                "drop": drop,
                "signal": drop or gauge or counter == "overlimits" or (section == "firewall" and obj in dropping_rules),
            }
        )

    if section in ("protocols", "softnet"):
        for counter, value in counters.items():
            if value:  # softnet always carries dropped/time_squeeze, even at 0
                add(None, counter, value)
    else:
        for obj, values in counters.items():
            for counter, value in values.items():
                add(obj, counter, value)
    rows.sort(key=lambda row: (not row["drop"], row["gauge"], -row["delta"]))
    return rows


def _rule_texts(record: HostRecord | None) -> dict[str, str]:
    """Firewall rule key → rule text, from the host's snapshots (report.json carries only the counters)."""
    texts: dict[str, str] = {}
    for snapshot in (record.before, record.after) if record is not None else ():
        for key, rule in ((snapshot or {}).get("firewall") or {}).items():
            if isinstance(rule, dict) and isinstance(rule.get("rule"), str):
                texts[key] = rule["rule"]
    return texts


SECTION_TITLES = {
    "interfaces": "Interfaces",
    "protocols": "Protocols",
    "softnet": "Softnet (all CPUs)",
    "qdiscs": "Qdiscs",
    "sockets": "UDP sockets",
    "firewall": "Firewall rules",
}
OBJECT_TITLES = {"interfaces": "Interface", "qdiscs": "Qdisc", "sockets": "Socket", "firewall": "Rule"}


def _kernel_notes(report: JSON) -> dict[str, JSON]:
    """host name → {shares_with, counted_from, boot_id} for hosts whose kernel is shared."""
    notes: dict[str, JSON] = {}
    for kernel in report["fleet"]["kernels"]:
        if len(kernel["hosts"]) < 2:
            continue
        for name in kernel["hosts"]:
            others = [other for other in kernel["hosts"] if other != name]
            notes[name] = {
                "boot_id": kernel["boot_id"],
                "shares_with": others[:SHARED_NAMES_SHOWN],
                "more": max(0, len(others) - SHARED_NAMES_SHOWN),
                "counted_from": kernel["counted_from"],
                "counted_here": kernel["counted_from"] == name,
            }
    return notes


def _reason_counts(host: JSON) -> dict[str, int]:
    counts: dict[str, int] = {}
    for drop in (host.get("capture") or {}).get("drops") or []:
        counts[drop["reason"]] = counts.get(drop["reason"], 0) + drop["count"]
    return counts


def build_view(report: JSON, run: Run | None = None) -> JSON:
    """Everything the template shows, precomputed (the template only lays it out)."""
    fleet = report["fleet"]
    notes_by_index = [record.notes for record in run.hosts] if run is not None else []
    kernel_notes = _kernel_notes(report)

    hosts: list[JSON] = []
    for index, host in enumerate(report["hosts"]):
        capture = host.get("capture")
        drops_total = host_drop_total(host)
        duration = (capture or {}).get("duration_s")
        drop_rows = [
            {
                **drop,
                "share": 100 * drop["count"] / drops_total if drops_total else 0,
                "rate": drop["count"] / duration if duration else None,
            }
            for drop in (capture or {}).get("drops") or []
        ]
        record = run.hosts[index] if run is not None and index < len(run.hosts) else None
        rule_texts = _rule_texts(record)
        sections, other_rows = [], []
        for section in SECTION_TITLES:
            rows = _counter_rows(section, host["counters"].get(section) or {}, host.get("interval_s"), rule_texts)
            other_rows += [row for row in rows if not row["signal"]]
            signal_rows = [row for row in rows if row["signal"]]
            if signal_rows:
                sections.append(
                    {
                        "name": section,
                        "title": SECTION_TITLES[section],
                        "object": OBJECT_TITLES.get(section),
                        "rows": signal_rows,
                    }
                )
        drop_rows_by_size = sorted(
            (row for section in sections for row in section["rows"] if row["drop"]), key=lambda row: -row["delta"]
        )
        hosts.append(
            {
                "anchor": f"host-{index + 1}",
                "report": host,
                "drops": drops_total,
                "reasons": _reason_counts(host),
                "drop_rows": drop_rows,
                "sections": sections,
                "other_rows": other_rows,
                "top_counter": drop_rows_by_size[0] if drop_rows_by_size else None,
                "kernel_note": kernel_notes.get(host["host"]),
                "notes": notes_by_index[index] if index < len(notes_by_index) else [],
                "appeared": [(k, v) for k, v in host["appeared"].items() if v],
                "vanished": [(k, v) for k, v in host["vanished"].items() if v],
            }
        )
    hosts.sort(
        key=lambda h: (
            -h["drops"],
            -(h["top_counter"] or {}).get("delta", 0),
            STATUS_ORDER.get(h["report"]["status"], 3),
            h["report"]["host"],
        )
    )

    reason_totals: dict[str, int] = {}
    for host in hosts:
        for reason, count in host["reasons"].items():
            reason_totals[reason] = reason_totals.get(reason, 0) + count
    ranked_reasons = sorted(reason_totals, key=lambda r: (-reason_totals[r], r))
    columns = ranked_reasons[:MATRIX_REASONS]
    cell_max = max((count for host in hosts for count in host["reasons"].values()), default=0)
    for host in hosts:
        host["cells"] = [
            (host["reasons"].get(reason, 0), heat_style(host["reasons"].get(reason, 0), cell_max)) for reason in columns
        ]
        other = sum(count for reason, count in host["reasons"].items() if reason not in columns)
        host["other_cell"] = (other, heat_style(other, cell_max))

    top_reasons = fleet["reasons"][:TOP_FLEET_ROWS]
    top_locations = fleet["locations"][:TOP_FLEET_ROWS]
    return {
        "version": __version__,
        "run": report["run"],
        "fleet": fleet,
        "shared_kernels": sum(1 for kernel in fleet["kernels"] if len(kernel["hosts"]) > 1),
        "hosts_on_shared": sum(len(kernel["hosts"]) for kernel in fleet["kernels"] if len(kernel["hosts"]) > 1),
        "top_reasons": [(row, bar_style(row["count"], top_reasons[0]["count"])) for row in top_reasons],
        "top_locations": [(row, bar_style(row["count"], top_locations[0]["count"])) for row in top_locations],
        "more_reasons": max(0, len(fleet["reasons"]) - TOP_FLEET_ROWS),
        "more_locations": max(0, len(fleet["locations"]) - TOP_FLEET_ROWS),
        "columns": columns,
        "other_column": len(ranked_reasons) > MATRIX_REASONS,
        "hosts": hosts,
        "problems": sorted(
            (h for h in hosts if h["report"]["status"] != "ok"),
            key=lambda h: (STATUS_ORDER.get(h["report"]["status"], 3), h["report"]["host"]),
        ),
        "problems_shown": PROBLEMS_SHOWN,
        "warnings": list(run.warnings) if run is not None else [],
    }


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("dropscope", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["count"] = format_count
    env.filters["rate"] = format_rate
    env.filters["seconds"] = format_seconds
    env.filters["jsonish"] = lambda value: value if isinstance(value, str) else json.dumps(value)
    env.filters["csp_hash"] = lambda script: Markup(csp_hash(str(script)))  # noqa: S704 (base64 and quotes only)
    return env


def render_html(report: JSON, run: Run | None = None) -> str:
    """The report page for a report.json document; `run` adds per-host collection notes and warnings."""
    view = build_view(report, run)
    return _environment().get_template("report.html.j2").render(view=view)
