"""Render report.json (see docs/run-format.md) as one self-contained HTML page.

The page needs no network: CSS and one script are inline, and a Content-Security-Policy with the
script's sha256 hash forbids everything else. The fleet overview (verdict, cards, top reasons, fleet
findings) is rendered here with Jinja2's autoescape; the hosts are embedded once as JSON in a
`<script type="application/json">` block (every `<`, `>` and `&` written as \\u escapes) and the
script draws only the visible rows of the host table and the one host that is opened, with
textContent (never innerHTML), so 10,000 hosts stay a small DOM.

It reads the built report only (dropscope.build, the same document as report.json): which counters are
highlighted as drops is the knowledge base's mark (`drop_counters`), never a decision of the page.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import jinja2
from markupsafe import Markup

from dropscope import __version__
from dropscope.build import counter_items, host_drop_total, kernel_notes
from dropscope.formatting import format_count, format_rate, format_seconds
from dropscope.load import JSON

MATRIX_REASONS = 12  # reason columns in the host × reason heat-map; the rest are summed in "other"
TOP_FLEET_ROWS = 10  # rows in the fleet's top reasons / top locations
PROBLEMS_SHOWN = 20  # failed/unreachable hosts listed in the fleet overview
FLEET_FINDINGS_SHOWN = 50
OTHER_ROWS_UP_TO_HOSTS = 2_000  # larger fleets leave traffic counters to report.json (page size)
# When the hosts' details would add more than DETAILS_INLINE_MAX_BYTES to the page, they go to files instead:
# DETAIL_CHUNK hosts per file DETAILS_DIR/N.js next to report.html, loaded (a <script> element: works from
# file://, where fetch does not) when a host is opened. The page then carries what the fleet view needs.
DETAILS_INLINE_MAX_BYTES = 4 * 2**20
DETAIL_CHUNK = 100
DETAILS_DIR = "report-hosts"
COHORTS_SHOWN = 20
COHORT_HOSTS_SHOWN = 8
COHORT_FACTS_SHOWN = 4
OUTLIERS_SHOWN = 20
STATUS_ORDER = {"failed": 0, "unreachable": 1, "ok": 2}
VERDICT_ORDER = {"problem": 0, "warning": 1, "unknown": 2, "ok": 3}
SECTION_TITLES = {
    "interfaces": "Interfaces",
    "protocols": "Protocols",
    "softnet": "Softnet (all CPUs)",
    "qdiscs": "Qdiscs",
    "sockets": "UDP sockets",
    "firewall": "Firewall rules",
    "conntrack": "Connection tracking",
}
OBJECT_TITLES = {"interfaces": "Interface", "qdiscs": "Qdisc", "sockets": "Socket", "firewall": "Rule"}


def knob_text(knob: Any) -> str:
    """A finding's knob for the page: "net.core.rmem_default = 212992 → 1048576 (why)" (a bare name as it is)."""
    if isinstance(knob, str):
        return knob
    text = knob["name"] + (f" = {knob['value']}" if knob.get("value") is not None else "")
    if knob.get("proposed") is not None:
        text += f" → {knob['proposed']}"
    return text + (f" ({knob['why']})" if knob.get("why") else "")


def csp_hash(script: str) -> str:
    """The CSP source expression ('sha256-…') that allows exactly this inline script."""
    digest = hashlib.sha256(script.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


def bar_style(count: int, maximum: int) -> str:
    """Inline style for a horizontal bar of count / maximum."""
    width = 0 if maximum <= 0 else max(1.0, 100 * count / maximum)
    return f"width:{width:.1f}%"


# check_circular=False: the page's data is a tree, see render_json._COMPACT
_EMBEDDED = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode


def embed_json(data: Any) -> Markup:
    """JSON safe inside <script type="application/json">: no `<`, `>` or `&` can end or alter the element."""
    text = _EMBEDDED(data)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return Markup(text)  # noqa: S704 (escaped above: the only markup-significant characters are gone)


def _counter_rows(host: JSON) -> dict[str, list]:
    """Per section, rows [object, counter, delta, rate, gauge, drop, signal, detail] of the host's counters.

    `drop` is the knowledge base's mark from report.json (`drop_counters`); `signal` rows (drops, qdisc
    levels, and the other counters of a qdisc or firewall rule that drops) go to the section's table.
    """
    rules = host.get("firewall_rules") or {}
    marks = host.get("drop_counters") or {}
    rows: dict[str, list] = {section: [] for section in SECTION_TITLES}
    for section, obj, counter, delta, rate, key in counter_items(host, levels=True):
        gauge = counter.endswith("_now")
        drop = key is not None
        dropping_object = section in ("qdiscs", "firewall") and obj in (marks.get(section) or {})
        detail = rules.get(obj or "") if section == "firewall" else None
        signal = drop or gauge or dropping_object
        rows[section].append([obj, counter, delta, None if gauge else rate, gauge, drop, signal, detail])
    for section_rows in rows.values():
        section_rows.sort(key=lambda row: (not row[5], row[4], -row[2]))
    return rows


def _reason_counts(host: JSON) -> dict[str, int]:
    counts: dict[str, int] = {}
    for drop in (host.get("capture") or {}).get("drops") or []:
        counts[drop["reason"]] = counts.get(drop["reason"], 0) + drop["count"]
    return counts


class _StringTable:
    """Texts that repeat across hosts (titles, advice, knobs) stored once in the page, referred to by index."""

    def __init__(self, strings: list[str] | None = None) -> None:
        self.strings: list[str] = strings if strings is not None else []
        self._index: dict[str, int] = {}

    def __call__(self, text: str) -> int:
        if text not in self._index:
            self._index[text] = len(self.strings)
            self.strings.append(text)
        return self._index[text]


def _finding_view(finding: JSON, strings: _StringTable) -> JSON:
    """A finding for the page (its knowledge text is in report.json's `knowledge`); repeated texts in STRINGS."""
    evidence = finding["evidence"]
    return {
        "k": finding["key"],
        "t": strings(finding["title"]),
        "s": finding["severity"],
        "a": finding["attribution"],
        "to": finding.get("attributed_to") or [],
        "r": finding.get("reason"),
        "kn": finding["known"],
        "b": finding["benign"],
        "dir": finding["direction"],
        "e": finding["explanation"],
        "w": list((finding.get("who") or {}).get("lines") or []),  # socket, owner, senders, knob values
        "adv": strings(finding["advice"]),
        "knobs": [strings(knob_text(knob)) for knob in finding["knobs"]],
        "c": evidence["count"],
        "rate": evidence["rate"],
        "ev": [[row["section"], row["object"], row["counter"], row["delta"], row["rate"], row.get("detail")]
               for row in evidence["counters"]],
        "dr": [[d["reason"], d["location"], d.get("protocol"), d["count"], d["rate"]] for d in evidence["drops"]],
    }  # fmt: skip


def _ledger_view(ledger: JSON | None) -> list | None:
    """[drops, explained, unexplained, rows, capture_only, note]; a row is [object, counter, delta,
    [[reason, count]…], unexplained, where, duplicate, note]."""
    if not ledger:
        return None
    rows = [[row["object"], row["counter"], row["delta"], list(row["explained_by"].items()), row["unexplained"],
             row["where"], "duplicate_of" in row, _ledger_row_note(row, ledger)] for row in ledger["rows"]]  # fmt: skip
    only = list((ledger.get("capture_only") or {}).items())
    notes = [ledger.get("note")]
    if ledger.get("sample_one_in"):
        notes.append(
            f"the capture counted 1 in {ledger['sample_one_in']} drops (rate guard): its counts are estimates;"
            f" differences within their error are not unexplained ({ledger['sampling_excess']:,} estimated beyond"
            " the counters)"
        )
    return [ledger["drops"], ledger["explained"], ledger["unexplained"], rows, only,
            " · ".join(note for note in notes if note) or None]  # fmt: skip


def _ledger_row_note(row: Mapping[str, Any], ledger: Mapping[str, Any]) -> str | None:
    """A ledger row's note, and how much of its delta a sampled capture's error covers."""
    notes = [row.get("note")]
    if row.get("within_error"):
        notes.append(f"{row['within_error']:,} within the sampled estimates' error (1 in {ledger['sample_one_in']})")
    return "; ".join(note for note in notes if note) or None


def fact_text(fact: Mapping[str, Any]) -> str:
    """A cohort's or outlier's attribute in words: "ixgbe firmware 0x800009e0", "kernel 6.1.0-18-amd64".

    >>> fact_text({"attribute": "nic_firmware", "value": "ixgbe 0x800009e0"})
    'ixgbe firmware 0x800009e0'
    >>> fact_text({"attribute": "sysctl net.core.rmem_max", "value": "212992"})
    'net.core.rmem_max = 212992'
    """
    attribute, value = fact["attribute"], str(fact["value"])
    driver, _, rest = value.partition(" ")
    if attribute == "nic_firmware":
        return f"{driver} firmware {rest}"
    if attribute == "nic_driver_version":
        return f"{driver} driver {rest}"
    if attribute.startswith("sysctl "):
        return f"{attribute.removeprefix('sysctl ')} = {value}"
    prefix = {"kernel_release": "kernel ", "boot_id": "one kernel, boot ", "nic_driver": "NIC driver ",
              "python": "Python ", "group": "inventory group "}.get(attribute, "")  # fmt: skip
    return prefix + (value[:8] if attribute == "boot_id" else value)


def _cohort_views(fleet: JSON) -> JSON:
    """The fleet's cohorts and outliers as the page shows them (the first ones; report.json has them all)."""
    cohorts = fleet.get("cohorts") or []
    outliers = fleet.get("outliers") or []
    shown = []
    for cohort in cohorts[:COHORTS_SHOWN]:
        facts = [
            fact_text(fact)
            + (f" (and {format_count(fact['elsewhere'])} more)" if fact["elsewhere"] else " (only they)")
            for fact in cohort["shared"][:COHORT_FACTS_SHOWN]
        ]
        shown.append({
            "size": len(cohort["hosts"]),
            "findings": cohort["findings"],
            "facts": facts,
            "hosts": cohort["hosts"][:COHORT_HOSTS_SHOWN],
            "more_hosts": max(0, len(cohort["hosts"]) - COHORT_HOSTS_SHOWN),
        })  # fmt: skip
    return {
        "cohorts": shown,
        "more_cohorts": max(0, len(cohorts) - COHORTS_SHOWN),
        "outliers": [
            {**outlier, "facts": [fact_text(fact) for fact in outlier["attributes"]]}
            for outlier in outliers[:OUTLIERS_SHOWN]
        ],
        "more_outliers": max(0, len(outliers) - OUTLIERS_SHOWN),
        "diagnosed": fleet.get("ok", 0),
    }


def detail_text(chunk: JSON) -> str:
    """A chunk of hosts' details ({strings, hosts}) as the JSON text the page or its file carries."""
    return str(embed_json(chunk))


def detail_script(number: int, text: str) -> str:
    """The text of DETAILS_DIR/NUMBER.js: hands the page chunk NUMBER (`detail_text`) of the hosts' details."""
    return f"dropscopeDetails({number},{text});\n"


def details_inline(sizes: Iterable[int]) -> bool:
    """Whether the hosts' details (chunks of these text SIZES) go into the page rather than files beside it."""
    return sum(sizes) <= DETAILS_INLINE_MAX_BYTES


def host_view(
    host: JSON, index: int, note: JSON | None, with_other_rows: bool, strings: _StringTable
) -> tuple[JSON, JSON]:
    """(row, details) of host INDEX for the page: its row in the host table (with `rc`, its capture's count per
    reason, and `err`, its error: `page_view` takes both out) and what its opened section shows. NOTE: its
    shared-kernel note (dropscope.build.kernel_notes); STRINGS: the texts of its details' chunk."""
    capture = host.get("capture")
    drops_total = host_drop_total(host)
    sections, other_rows, drop_rows = [], [], []
    other_count = 0
    for section, section_rows in _counter_rows(host).items():
        signal = [row for row in section_rows if row[6]]
        other_count += len(section_rows) - len(signal)
        if with_other_rows:
            other_rows += [[section, *row] for row in section_rows if not row[6]]
        drop_rows += [row for row in signal if row[5]]
        if signal:
            sections.append([section, SECTION_TITLES[section], OBJECT_TITLES.get(section), signal])
    top_counter = max(drop_rows, key=lambda row: row[2], default=None)
    findings = host.get("findings") or []
    top_finding = next((f for f in findings if f["severity"] != "info"), None)
    severities = [sum(1 for f in findings if f["severity"] == level) for level in ("problem", "warning", "info")]
    row = {
        "i": index, "n": host["host"], "s": host["status"], "v": host.get("verdict", "unknown"),
        "d": drops_total if capture else -1, "rc": _reason_counts(host),
        "f": top_finding["title"] if top_finding else None, "fs": severities,
        "tc": [top_counter[1], top_counter[0]] if top_counter else None,
        "td": top_counter[2] if top_counter else -1,
        "nc": bool(host["counters"]),
        "l": (capture or {}).get("lost_events"),
        "sh": bool(note and not note["counted_here"]),
        "err": host.get("error"),
    }  # fmt: skip
    duration = (capture or {}).get("duration_s")
    details = {
        "error": host.get("error"), "kernel": host["kernel"], "interval": host.get("interval_s"),
        "capture": None if capture is None else {k: v for k, v in capture.items() if k != "drops"},
        "drops": [[d["reason"], d["location"], d.get("protocol"), d["count"],
                   round(100 * d["count"] / drops_total, 1) if drops_total else 0,
                   round(d["count"] / duration, 3) if duration else None, d.get("port"),
                   d.get("direction"), d.get("qdisc") or d.get("dev")]
                  for d in (capture or {}).get("drops") or []],
        "ledger": _ledger_view(host.get("ledger")),
        "ladder": [[rung["backend"], rung["available"], rung["reason"]]
                   for rung in (host.get("capabilities") or {}).get("ladder") or []],
        "findings": [_finding_view(f, strings) for f in findings],
        "sections": sections,
        "other": other_rows if with_other_rows else None,
        "other_count": other_count,
        "resets": host.get("resets") or [],
        "appeared": {k: v for k, v in (host.get("appeared") or {}).items() if v},
        "vanished": {k: v for k, v in (host.get("vanished") or {}).items() if v},
        "kernel_note": note,
        "notes": host.get("notes") or [],
    }  # fmt: skip
    return row, details


def host_views(
    hosts: Iterable[tuple[int, JSON, JSON | None]], with_other_rows: bool
) -> Iterator[tuple[list[JSON], JSON]]:
    """(rows, chunk) for every DETAIL_CHUNK hosts of HOSTS ((index, host, kernel note), in order, starting on
    a chunk boundary): their `host_view` rows and their details' chunk {strings, hosts}."""
    rows: list[JSON] = []
    chunk: JSON = {"strings": [], "hosts": []}
    strings = _StringTable(chunk["strings"])
    for index, host, note in hosts:
        row, details = host_view(host, index, note, with_other_rows, strings)
        rows.append(row)
        chunk["hosts"].append(details)
        if len(chunk["hosts"]) == DETAIL_CHUNK:
            yield rows, chunk
            rows, chunk = [], {"strings": [], "hosts": []}
            strings = _StringTable(chunk["strings"])
    if rows:
        yield rows, chunk


def with_other_rows(hosts: int) -> bool:
    """Whether the page lists a host's other (traffic) counters, for a fleet of HOSTS hosts."""
    return hosts <= OTHER_ROWS_UP_TO_HOSTS


def page_view(report: Mapping[str, Any], rows: list[JSON], details: list[JSON] | None) -> JSON:
    """Everything the template shows: the overview from the built report's `run`, `fleet`, `warnings` and
    `knowledge`, the host table from ROWS (`host_view`, manifest order), the hosts' DETAILS chunks (None:
    they are in files beside the page)."""
    fleet = report["fleet"]
    reason_totals: dict[str, int] = {}
    for row in rows:
        for reason, count in row["rc"].items():
            reason_totals[reason] = reason_totals.get(reason, 0) + count
    ranked_reasons = sorted(reason_totals, key=lambda r: (-reason_totals[r], r))
    columns = ranked_reasons[:MATRIX_REASONS]
    column_index = {reason: index for index, reason in enumerate(columns)}
    errors: dict[int, Any] = {}
    for row in rows:
        cells = [0] * len(columns)
        other = 0
        for reason, count in row.pop("rc").items():
            if reason in column_index:
                cells[column_index[reason]] = count
            else:
                other += count
        row["c"], row["o"] = cells, other
        errors[row["i"]] = row.pop("err")

    order = sorted(
        range(len(rows)),
        key=lambda i: (
            VERDICT_ORDER.get(rows[i]["v"], 4),
            -rows[i]["d"],
            -rows[i]["td"],
            STATUS_ORDER.get(rows[i]["s"], 3),
            rows[i]["n"],
        ),
    )
    hosts_sorted = [rows[i] for i in order]
    top_reasons = fleet["reasons"][:TOP_FLEET_ROWS]
    top_locations = fleet["locations"][:TOP_FLEET_ROWS]
    problems = sorted(
        (row for row in rows if row["s"] != "ok"), key=lambda row: (STATUS_ORDER.get(row["s"], 3), row["n"])
    )
    cell_max = max((count for row in rows for count in row["c"]), default=0)
    cell_max = max([cell_max, *(row["o"] for row in rows)])
    return {
        "version": __version__,
        "run": report["run"],
        "fleet": fleet,
        "ledger": fleet.get("ledger") or {"drops": 0, "explained": 0, "unexplained": 0},
        "verdict": fleet.get("verdict", "unknown"),
        "verdicts": fleet.get("verdicts") or {},
        "fleet_findings": (fleet.get("findings") or [])[:FLEET_FINDINGS_SHOWN],
        "more_fleet_findings": max(0, len(fleet.get("findings") or []) - FLEET_FINDINGS_SHOWN),
        "shared_kernels": sum(1 for kernel in fleet["kernels"] if len(kernel["hosts"]) > 1),
        "hosts_on_shared": sum(len(kernel["hosts"]) for kernel in fleet["kernels"] if len(kernel["hosts"]) > 1),
        "top_reasons": [(row, bar_style(row["count"], top_reasons[0]["count"])) for row in top_reasons],
        "top_locations": [(row, bar_style(row["count"], top_locations[0]["count"])) for row in top_locations],
        "more_reasons": max(0, len(fleet["reasons"]) - TOP_FLEET_ROWS),
        "more_locations": max(0, len(fleet["locations"]) - TOP_FLEET_ROWS),
        "columns": columns,
        "other_column": len(ranked_reasons) > MATRIX_REASONS,
        "problems": [(row, errors.get(row["i"])) for row in problems[:PROBLEMS_SHOWN]],
        "problem_count": len(problems),
        "warnings": report.get("warnings") or [],
        "cohorts": _cohort_views(fleet),
        "detail_files": details is None,
        "data": {
            "columns": columns,
            "other_column": len(ranked_reasons) > MATRIX_REASONS,
            "cell_max": cell_max,
            "hosts": hosts_sorted,
            "details": details,  # None: in DETAILS_DIR, DETAIL_CHUNK hosts per file
            "detail_dir": None if details is not None else DETAILS_DIR,
            "detail_chunk": DETAIL_CHUNK,
            "knowledge": (report.get("knowledge") or {}).get("findings") or {},
        },
    }


def render_page(view: JSON) -> str:
    """The report page for a `page_view`."""
    return _environment().get_template("report.html.j2").render(view=view)


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
    env.filters["embed_json"] = embed_json
    return env


def render_html(report: JSON, emit: Callable[[str, str], None] | None = None) -> str:
    """The report page for a built report in memory (dropscope.build.build_report; the same document as
    report.json); `dropscope report` streams the same views (dropscope.pipeline).

    Without EMIT the page holds everything. With it, hosts' details that would add more than
    DETAILS_INLINE_MAX_BYTES to the page go to files next to it, handed to emit(relative name, text).
    """
    notes = kernel_notes(report["fleet"]["kernels"])
    rows: list[JSON] = []
    chunks: list[JSON] = []
    indexed = ((index, host, notes.get(host["host"])) for index, host in enumerate(report["hosts"]))
    for chunk_rows, chunk in host_views(indexed, with_other_rows(len(report["hosts"]))):
        rows += chunk_rows
        chunks.append(chunk)
    texts = [detail_text(chunk) for chunk in chunks]
    inline = emit is None or details_inline(len(text) for text in texts)
    if not inline:
        for number, text in enumerate(texts):
            emit(f"{DETAILS_DIR}/{number}.js", detail_script(number, text))  # type: ignore[misc]
    return render_page(page_view(report, rows, chunks if inline else None))
