"""Findings: each drop reason a host's capture saw and each drop counter that moved becomes a finding.

A finding has a severity (info / warning / problem, from its rate and count and the thresholds in the
knowledge base), a plain-language explanation built from the evidence, the evidence itself (capture
drops and the counters that agree, with rates per second) and the advice. Host and fleet verdicts
follow from the findings.

Two passes, so a run can be streamed host by host:

1. `drop_counter_rows` picks the host's drop counters that moved (the knowledge base decides which are
   drops: `KnowledgeBase.drop_rule`); `host_findings` looks at one host alone (its report.json entry and
   those rows). The builder stores the same rows' marks in report.json (`drop_counters`), so the page and
   `dropscope check` see exactly the counters the findings saw.
2. `attribute_shared_kernels` then looks across hosts that share a kernel: a kernel-scope capture sees
   every network namespace of its kernel, so a captured drop that the host's own (per-namespace)
   counters do not corroborate is "seen kernel-wide (shared kernel), not attributed to this host"
   (severity info) on that host. The hosts whose own counters corroborate it keep it. A drop that no
   host's counters corroborate becomes a fleet finding of that kernel (at most a warning), and so do
   kernel-wide counters (softnet) of a shared kernel.
"""

from __future__ import annotations

import _string
import functools
import re
import string
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from dropscope.deltas import GAUGE_SUFFIX, iter_counters, per_second
from dropscope.formatting import rate_phrase
from dropscope.knowledge_base import REASONLESS, SEVERITIES, SEVERITY_RANK, CounterRule, KnowledgeBase
from dropscope.load import JSON
from dropscope.sampling import estimate_text, one_in

VERDICTS = ("ok", "warning", "problem")
VERDICT_OF_SEVERITY = {"info": "ok", "warning": "warning", "problem": "problem"}
UNKNOWN_VERDICT = "unknown"  # the host was not diagnosed (unreachable or failed)
RULE_PORT = re.compile(r"\b(udp|tcp|sctp|dccp)\s+dport\s+(\{[^}]*\}|\S+)")  # nft: "udp dport 8000"
# iptables-save: "-p udp -m udp --dport 8000", "-p tcp -m multiport --dports 80,443", "! --dport 53"
IPTABLES_PORT = re.compile(r"(?:^|\s)-p (udp|tcp|sctp|dccp)\b.*?(?:^|\s)(! )?--(?:dports?|destination-ports?) (\S+)")
SOCKET_PORT = re.compile(r"^(\w+) (.*):(\d+)$")
CHAIN_DIRECTION = {
    "input": "inbound ",
    "output": "outbound ",
    "forward": "forwarded ",
    "prerouting": "incoming ",
    "postrouting": "outgoing ",
}  # a word of the chain's name, lower-cased (iptables: INPUT)


def firewall_chain(key: str | None) -> str | None:
    """The chain of a firewall rule key: "nft inet t input #3" → "input", "iptables filter INPUT policy" → "INPUT"."""
    words = (key or "").split()
    return words[-2] if len(words) >= 2 else None


def _round_rate(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


_FIELD_NAME = re.compile(r"\w+")


class _SafeFormatter(string.Formatter):
    """str.format for knowledge templates: plain {names} only, unknown names left visible."""

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
        if not _FIELD_NAME.fullmatch(field_name):
            return "{" + field_name + "}", field_name
        return kwargs.get(field_name, "{" + field_name + "}"), field_name


_FORMATTER = _SafeFormatter()


@functools.lru_cache(maxsize=1024)
def _plain_fields(template: str) -> tuple[tuple[str, str | None, str], ...] | None:
    """TEMPLATE as (text, field name, format spec) pieces when every field is a plain {name} (the knowledge
    base's templates: filled without string.Formatter, which is slow), else None."""
    try:
        pieces = tuple(_string.formatter_parser(template))
    except ValueError:
        return None
    for _, name, spec, conversion in pieces:
        if name is not None and (conversion or "{" in (spec or "") or not _FIELD_NAME.fullmatch(name)):
            return None
    return tuple((text, name, spec or "") for text, name, spec, _ in pieces)


def render_template(template: str, values: Mapping[str, Any]) -> str:
    """Fill a knowledge-base sentence template; a broken template is returned as it is.

    >>> render_template("{host} drops {count} at {where}", {"host": "h1", "count": "5"})
    'h1 drops 5 at {where}'
    """
    pieces = _plain_fields(template)
    try:
        if pieces is None:
            return _FORMATTER.vformat(template, (), dict(values))
        return "".join(
            text if name is None else text + format(values.get(name, "{" + name + "}"), spec)
            for text, name, spec in pieces
        )
    except (ValueError, IndexError, KeyError, TypeError):
        return template


# --------------------------------------------------------------------------------------------------
# Counter rows of one host


def drop_counter_rows(
    host: Mapping[str, Any],
    rule_texts: Mapping[str, str],
    knowledge: KnowledgeBase,
    containers: Mapping[str, str] | None = None,
) -> list[JSON]:
    """The host's drop counters that moved: {section, object, counter, delta, rate, detail, scope, _key, _rule}.

    A counter is a drop counter when the knowledge base says so (`KnowledgeBase.drop_rule`; a firewall
    rule's packets only when its text in RULE_TEXTS drops or rejects). `_key` is the counters.yml entry;
    `_rule` is that entry unless it is `generic` (a name-only match the knowledge base knows nothing about).
    A qdisc's row has `_inside`: the classful qdisc it sits in (CONTAINERS, `load.qdisc_containers`), if any.
    """
    interval = host.get("interval_s")
    rows: list[JSON] = []
    for section, obj, counter, delta in iter_counters(host.get("counters") or {}):
        if counter.endswith(GAUGE_SUFFIX):
            continue
        text = rule_texts.get(obj or "") if section == "firewall" else None
        if section == "conntrack":
            text = conntrack_table(host.get("counters") or {})
        driver = nic_driver(host, obj) if section == "interfaces" else None
        matched = knowledge.drop_rule(section, counter, text, driver)
        if matched is None:
            continue
        rule = None if matched.is_generic else matched
        owner = knowledge.chain_owner(matched.entry.get("reason") or "", firewall_chain(obj)) if text else None
        rows.append(
            {
                "section": section,
                "object": obj,
                "counter": counter,
                "delta": delta,
                "rate": per_second(delta, interval),
                "detail": text,
                "scope": (rule.entry.get("scope") if rule else None) or ("kernel" if section == "softnet" else "netns"),
                "_key": matched.id,
                "_rule": rule,
                "_owner": owner,
                "_driver": driver,
                "_inside": (containers or {}).get(obj or "") if section == "qdiscs" else None,
            }
        )
    return rows


def _public_row(row: Mapping[str, Any]) -> JSON:
    return {key: value for key, value in row.items() if key[:1] != "_" and key != "scope"}


# --------------------------------------------------------------------------------------------------
# Sentences


def _traffic(drops: list[JSON], rows: list[JSON]) -> str:
    """What was dropped, as precisely as the evidence allows: "inbound UDP to port 8000", "UDP datagrams"."""
    for row in rows:
        if row["section"] == "firewall" and row.get("detail"):
            ports = _rule_ports(row["detail"])
            if ports:
                chain_name = (firewall_chain(row["object"]) or "").lower()
                direction = next((text for name, text in CHAIN_DIRECTION.items() if name in chain_name), "")
                return f"{direction}{ports}"
    counters = {row["counter"] for row in rows}
    locations = " ".join(drop["location"] for drop in drops).lower()
    if "udp" in locations or any(name.startswith("Udp") for name in counters):
        return "UDP datagrams"
    if "tcp" in locations or any(name.startswith("Tcp") for name in counters):
        return "TCP segments"
    protocols = sorted({drop.get("protocol") for drop in drops if drop.get("protocol") not in (None, "unknown")})
    return f"{'/'.join(protocols)} packets" if protocols else "packets"


def _rule_ports(rule: str) -> str | None:
    """ "UDP to port 8000" from a rule's text (nft or iptables-save), None if it names no destination port."""
    match = RULE_PORT.search(rule)
    if match:
        return f"{match.group(1).upper()} to port {match.group(2)}"
    match = IPTABLES_PORT.search(rule)
    if match is None:
        return None
    proto, negated, ports = match.group(1).upper(), match.group(2), match.group(3)
    several = "," in ports or ":" in ports
    if negated:
        return f"{proto} to ports other than {ports}"
    return f"{proto} to port{'s' if several else ''} {ports}"


def _socket_words(rows: list[JSON]) -> tuple[str, str]:
    """("UDP port 9100", "9100") from socket rows; generic words without them."""
    ports: list[tuple[str, str]] = []
    for row in rows:
        if row["section"] == "sockets":
            match = SOCKET_PORT.match(row["object"] or "")
            if match and (match.group(1), match.group(3)) not in ports:
                ports.append((match.group(1), match.group(3)))
    if not ports:
        udp = any(row["counter"].startswith("Udp") for row in rows)
        return ("a UDP socket" if udp else "a socket"), ""
    proto = ports[0][0].upper()
    numbers = ", ".join(port for _, port in ports)
    return f"{proto} port{'s' if len(ports) > 1 else ''} {numbers}", ports[0][1]


def _qdisc_words(rows: list[JSON]) -> tuple[str, str]:
    """("the tbf qdisc of tx0", "tx0") from qdisc rows."""
    for row in rows:
        if row["section"] == "qdiscs":
            parts = (row["object"] or "").split(" ")
            if len(parts) >= 2:
                return f"the {parts[1]} qdisc of {parts[0]}", parts[0]
    for row in rows:
        if row["section"] == "interfaces":
            return f"the transmit queue of {row['object']}", row["object"] or ""
    return "a transmit queue (qdisc)", ""


def conntrack_table(counters: Mapping[str, Any]) -> str | None:
    """The conntrack table's fill at the end of the run, in the sysctls' names (None where not read).

    >>> conntrack_table({"conntrack": {"drop": 3, "count_now": 512, "max_now": 512, "buckets_now": 1024}})
    'nf_conntrack_count 512 of nf_conntrack_max 512 (nf_conntrack_buckets 1,024)'
    """
    table = counters.get("conntrack") or {}
    count, maximum, buckets = (table.get(name + GAUGE_SUFFIX) for name in ("count", "max", "buckets"))
    if count is None or maximum is None:
        return None
    text = f"nf_conntrack_count {count:,} of nf_conntrack_max {maximum:,}"
    return text + (f" (nf_conntrack_buckets {buckets:,})" if buckets is not None else "")


def _row_phrase(row: JSON) -> str:
    rate = f" ({rate_phrase(row['rate'])})" if row.get("rate") is not None else ""
    delta = f"{row['delta']:,}"
    if row["section"] == "firewall":
        rule = f"rule `{row['detail']}` ({row['object']})" if row.get("detail") else f"rule {row['object']}"
        owner = f", {row['_owner']}" if row.get("_owner") else ""
        return f"{rule} counted {delta} packets{rate}{owner}"
    if row["section"] == "sockets":
        return f"socket {row['object']} dropped {delta} datagrams{rate}"
    if row["section"] == "qdiscs":
        return f"qdisc {row['object']} {row['counter']} +{delta}{rate}"
    if row["section"] == "interfaces":
        return f"{row['object']} {row['counter']} +{delta}{rate}"
    if row["section"] == "softnet":
        return f"softnet {row['counter']} +{delta} (all CPUs, kernel-wide){rate}"
    if row["section"] == "conntrack":
        return f"conntrack {row['counter']} +{delta}{rate}"
    return f"{row['counter']} +{delta}{rate}"


def _capture_phrase(reason: str | None, drops: list[JSON], duration: float | None, sampled: int = 1) -> str:
    count = sum(drop["count"] for drop in drops)
    locations = ", ".join(dict.fromkeys(drop["location"] for drop in drops))
    rate = f" ({rate_phrase(count / duration)})" if duration else ""
    what = reason or "drops (this capture has no drop reasons)"
    if sampled > 1:  # an estimate: its ±2σ and how it was sampled
        return f"kfree_skb saw {estimate_text(count, sampled)} {what} at {locations}{rate}, counting 1 in {sampled}"
    return f"kfree_skb saw {count:,} {what} at {locations}{rate}"


class _Evidence(NamedTuple):
    """What a finding's sentence is made from (`_CONTEXT_VALUES`)."""

    count: int
    rate: float | None
    reason: str | None
    drops: list[JSON]
    rows: list[JSON]
    sampled: int


def _first(rows: list[JSON], name: str) -> str:
    return (rows[0].get(name) or "") if rows else ""


def _first_detail(rows: list[JSON], section: str) -> str:
    return next((row["detail"] for row in rows if row.get("detail") and row["section"] == section), "")


# The fields a knowledge-base sentence (`explain`) may name besides {host}, each worked out from the evidence.
_CONTEXT_VALUES: dict[str, Callable[[_Evidence], str]] = {
    "count": lambda e: f"~{e.count:,}" if e.drops and e.sampled > 1 else f"{e.count:,}",
    "rate": lambda e: rate_phrase(e.rate),
    "reason": lambda e: e.reason or "",
    "location": lambda e: ", ".join(dict.fromkeys(drop["location"] for drop in e.drops)) or "–",
    "protocol": lambda e: ", ".join(sorted({drop.get("protocol") or "?" for drop in e.drops})),
    "traffic": lambda e: _traffic(e.drops, e.rows),
    "socket": lambda e: _socket_words(e.rows)[0],
    "port": lambda e: _socket_words(e.rows)[1],
    "qdisc": lambda e: _qdisc_words(e.rows)[0],
    "dev": lambda e: _qdisc_words(e.rows)[1] or _first(e.rows, "object"),
    "rule": lambda e: _first_detail(e.rows, "firewall"),
    "table": lambda e: _first_detail(e.rows, "conntrack"),
    "object": lambda e: _first(e.rows, "object"),
    "counter": lambda e: _first(e.rows, "counter"),
}


@functools.lru_cache(maxsize=1024)
def _template_fields(template: str) -> tuple[str, ...]:
    """The `_CONTEXT_VALUES` fields TEMPLATE names (all of them for a template that is not plain {name}s): a
    finding works out only what its sentence says (most name two or three)."""
    pieces = _plain_fields(template)
    if pieces is None:
        return tuple(_CONTEXT_VALUES)
    return tuple(dict.fromkeys(name for _, name, _ in pieces if name in _CONTEXT_VALUES))


# --------------------------------------------------------------------------------------------------
# Severity


def severity_for(thresholds: Mapping[str, Any], count: int, rate: float | None) -> str:
    """problem / warning / info from a count and a rate (None: unknown rate, judged on the count)."""
    for level in ("problem", "warning"):
        limits = thresholds.get(level) or {}
        if count >= limits.get("count", 0) and (rate is None or rate >= limits.get("rate", 0)):
            return level
    return "info"


def _cap(severity: str, cap: str | None) -> str:
    if cap in SEVERITY_RANK and SEVERITY_RANK[severity] > SEVERITY_RANK[cap]:
        return cap
    return severity


# --------------------------------------------------------------------------------------------------
# One host


def make_finding(
    *,
    host: str,
    key: str,
    kind: str,
    reason: str | None,
    entry: JSON | None,
    known: bool,
    benign: bool,
    drops: list[JSON],
    rows: list[JSON],
    duration: float | None,
    knowledge: KnowledgeBase,
    owned: bool,
    fallback_title: str,
    default_cap: str | None = None,
    summed: bool = False,
    sampled: int = 1,
) -> JSON:
    """One finding from its capture drops and/or counter rows (SUMMED: rows count different drops: add them;
    SAMPLED > 1: the capture counted 1 in that many drops, its counts are estimates)."""
    entry = entry or {}
    if drops:
        count = sum(drop["count"] for drop in drops)
        rate = count / duration if duration else None
        basis = "capture"
    elif summed:
        count = sum(row["delta"] for row in rows)
        rates = [row["rate"] for row in rows]
        rate, basis = (None if None in rates else sum(rates)), "counters"
    else:
        top = max(rows, key=lambda row: row["delta"])
        count, rate, basis = top["delta"], top["rate"], "counters"
    severity = severity_for(knowledge.thresholds(entry), count, rate)
    severity = _cap(severity, entry.get("max_severity") or default_cap)
    if benign or entry.get("benign"):
        severity = "info"
    first = rows[0] if rows else {}
    template = entry.get("explain")
    if not template:
        if reason:
            template = "{host} drops {traffic} with reason {reason} at {location}"
        elif drops:
            template = "{host} drops {traffic} at {location} (this capture has no drop reasons)"
        else:
            template = "{host}: counter {counter} grew" + (" on {object}" if first.get("object") else "")
    evidence = _Evidence(count, rate, reason, drops, rows, sampled)
    context = {name: _CONTEXT_VALUES[name](evidence) for name in _template_fields(template)}
    phrases = [_row_phrase(row) for row in rows]
    if drops:
        phrases.append(_capture_phrase(reason, drops, duration, sampled))
    advice = entry.get("advice") or (
        "dropscope has no advice for this reason yet: look at the kernel function and its call stack."
        if reason or drops
        else "dropscope has no advice for this counter yet: look up its meaning in the driver/kernel documentation."
    )
    if benign and not entry.get("benign"):
        advice = f"Known noise at this location. {advice}"
    return {
        "key": key,
        "kind": kind,
        "reason": reason,
        "known": known,
        "title": entry.get("title") or fallback_title,
        "severity": severity,
        "benign": bool(benign or entry.get("benign")),
        "attribution": "host",
        "attributed_to": [host],
        "direction": entry.get("direction") or "any",
        "explanation": render_template(template, {**context, "host": host}) + (" — " + "; ".join(phrases)),
        "advice": advice,
        "knobs": list(entry.get("knobs") or []),
        "evidence": {
            "basis": basis,
            "count": count,
            "rate": _round_rate(rate),
            "drops": [{**drop, "rate": _round_rate(drop["count"] / duration) if duration else None} for drop in drops],
            "counters": [_public_row(row) for row in rows],
        },
        "_owned": owned,
        "_template": template,
        "_context": context,
        "_phrases": phrases,
    }


def capture_group_key(drop: Mapping[str, Any], knowledge: KnowledgeBase) -> str:
    """Which finding a capture group belongs to: its reason, or for a group without one (REASONLESS: kernels
    before 5.17, dropwatch) `location:ID` of the locations.yml entry of its function, else `location:FUNCTION`.
    """
    if drop["reason"] != REASONLESS:
        return drop["reason"]
    found = knowledge.location(drop["location"])
    return f"location:{found[0] if found else drop['location']}"


def nic_driver(host: Mapping[str, Any], interface: str | None) -> str | None:
    """The driver of a report host's INTERFACE (`system.nics`, from `ethtool -i`), None where unknown."""
    nics = (host.get("system") or {}).get("nics") or {}
    return ((nics.get(interface or "") or {}).get("driver")) or None


def decode_reasons(host: Mapping[str, Any], knowledge: KnowledgeBase) -> None:
    """Name the subsystem reasons of a report host's capture groups (`0x20001` → OVS_DROP_LAST_ACTION).

    The host's own names come first (capture `subsystem_reasons`, read from its kernel's BTF: subsystem numbers
    changed between kernels), else the knowledge base's (reasons.yml `subsystems`). A decoded group keeps what
    the host recorded in `reason_raw` and names the subsystem in `subsystem`; a value nobody can name stays
    raw, with its subsystem named where known.
    """
    capture = host.get("capture") or {}
    own = capture.get("subsystem_reasons") or {}
    for drop in capture.get("drops") or []:
        named = own.get(drop["reason"])
        if named and named.get("subsystem"):
            name = named.get("name") or f"{named['subsystem']}:{drop['reason']}"
            decoded = {"reason": name, "reason_raw": drop["reason"], "subsystem": named["subsystem"]}
        else:
            decoded = knowledge.subsystem_reason(drop["reason"])
        if decoded is not None:
            drop.update({key: value for key, value in decoded.items() if not key.startswith("_") and value})


def _counter_entry(rule: CounterRule | None, knowledge: KnowledgeBase) -> tuple[str | None, JSON | None]:
    """(reason, entry) a counter rule stands for: its reason's entry if it names one, else its own."""
    if rule is None:
        return None, None
    reason = rule.entry.get("reason")
    if reason:
        return reason, knowledge.reason(reason) or rule.entry
    return None, rule.entry


def _counter_group(row: Mapping[str, Any]) -> str:
    """The key of a counter finding of its own: `counter:ID` of its counters.yml entry, else SECTION/COUNTER."""
    rule = row["_rule"]
    return f"counter:{rule.id}" if rule else f"counter:{row['section']}/{row['counter']}"


def _folded_counters(
    rows: list[JSON], indexes: list[int], grouped: set[int], knowledge: KnowledgeBase
) -> dict[int, int]:
    """Among ROWS[INDEXES] not yet GROUPED, the counters that count nothing beyond a more precise sibling among
    ROWS[INDEXES] that also moved (the ledger's `duplicate_of`: an interface's rx_missed_errors beside the
    driver's own ethtool rx_missed_errors), each → the row index of the sibling whose finding it joins (one NIC
    problem, one finding)."""
    candidates = [rows[index] for index in indexes]
    folded: dict[int, int] = {}
    for index in indexes:
        if index in grouped:
            continue
        row = rows[index]
        known = knowledge.ledger_rule(row["_rule"], row["counter"]) if row["_rule"] else None
        siblings = known.siblings(row, candidates) if known else []
        if siblings and row["delta"] <= sum(other["delta"] for other in siblings):
            folded[index] = next(i for i in indexes if rows[i] is siblings[0])
    for index in list(folded):  # a chain (A joins B, B joins C) ends at a row that is not folded
        seen = {index}
        while folded[index] in folded and folded[index] not in seen:
            seen.add(folded[index])
            folded[index] = folded[folded[index]]
        if folded[index] in folded:  # a circle: the first of it keeps its own finding
            del folded[index]
    return folded


def host_findings(host: Mapping[str, Any], rows: list[JSON], knowledge: KnowledgeBase) -> list[JSON]:
    """Findings of one host as if it owned its kernel (pass 2 corrects hosts that share one).

    ROWS are the host's `drop_counter_rows`.
    """
    if host.get("status") != "ok":
        return []
    name = host["host"]
    capture = host.get("capture") or {}
    duration = capture.get("duration_s") if capture.get("status") == "ok" else None
    used: set[int] = set()
    findings: list[JSON] = []

    groups: dict[tuple[str, bool], list[JSON]] = {}
    if capture.get("status") == "ok":
        for drop in capture.get("drops") or []:
            benign = knowledge.is_benign(drop["reason"], drop["location"])
            groups.setdefault((capture_group_key(drop, knowledge), benign), []).append(drop)
    for (group, benign), drops in groups.items():
        location = group.startswith("location:")  # a capture without reasons: diagnosed from the location
        reason = None if location else group
        found = knowledge.location(drops[0]["location"]) if location else None
        entry = found[1] if found else (None if location else knowledge.reason(group))
        agreeing = [
            index
            for index, row in enumerate(rows)
            if not benign and knowledge.corroborates(group, row["section"], row["counter"])
        ]
        used.update(agreeing)
        agreeing_rows = [rows[index] for index in agreeing]
        findings.append(
            make_finding(
                host=name,
                key=f"{group}@noise" if benign and not (entry or {}).get("benign") else group,
                kind="location" if location else "reason",
                reason=reason,
                entry=entry,
                known=entry is not None,
                benign=benign,
                drops=drops,
                rows=agreeing_rows,
                duration=duration,
                knowledge=knowledge,
                owned=any(row["scope"] == "netns" for row in agreeing_rows),
                fallback_title=(
                    f"Drops in {group.removeprefix('location:')}" if location else f"Dropped with reason {group}"
                ),
                default_cap=None if entry is not None else "warning",
                sampled=one_in(capture),
            )
        )

    # Counters no captured drop explains: grouped by the reason they stand for, else by their own entry.
    leftover = [index for index in range(len(rows)) if index not in used]
    by_group: dict[str, list[int]] = {}
    for index in leftover:
        reason, _ = _counter_entry(rows[index]["_rule"], knowledge)
        if reason:
            by_group.setdefault(reason, []).append(index)
    folded = _folded_counters(rows, leftover, {i for members in by_group.values() for i in members}, knowledge)
    for index in leftover:
        if index in folded or any(index in members for members in by_group.values()):
            continue
        home = next(
            (r for r in by_group if knowledge.corroborates(r, rows[index]["section"], rows[index]["counter"])), None
        )
        if home is not None:
            by_group[home].append(index)
            continue
        by_group.setdefault(_counter_group(rows[index]), []).append(index)
    for index, sibling in folded.items():
        home = next((group for group, members in by_group.items() if sibling in members), None)
        # (a sibling always has a group by now; its own group is the fallback so that no row is ever lost)
        by_group.setdefault(home or _counter_group(rows[index]), []).append(index)
    for group, members in by_group.items():
        group_rows = [rows[index] for index in members]
        rule = group_rows[0]["_rule"]
        if group.startswith("counter:"):
            reason, entry = None, (rule.entry if rule else None)
            title = f"Counter {group_rows[0]['counter']} grew"
        else:
            reason, entry = group, knowledge.reason(group) or (rule.entry if rule else None)
            title = f"Dropped with reason {group}"
        findings.append(
            make_finding(
                host=name,
                key=group,
                kind="counter",
                reason=reason,
                entry=entry,
                known=entry is not None,
                benign=False,
                drops=[],
                rows=group_rows,
                duration=None,
                knowledge=knowledge,
                owned=any(row["scope"] == "netns" for row in group_rows),
                fallback_title=title,
                default_cap=None if rule is not None else "info",
            )
        )
    return sort_findings(findings)


def sort_findings(findings: Iterable[JSON]) -> list[JSON]:
    """Worst first, then largest."""
    return sorted(findings, key=lambda f: (-SEVERITY_RANK[f["severity"]], -f["evidence"]["count"], f["key"]))


# --------------------------------------------------------------------------------------------------
# Across hosts: shared kernels, verdicts


def _names(hosts: list[str], limit: int = 5) -> str:
    shown = ", ".join(hosts[:limit])
    return shown + (f" and {len(hosts) - limit} more" if len(hosts) > limit else "")


def shared_kernel_plan(hosts: list[Mapping[str, Any]], kernels: list[JSON]) -> dict[int, JSON]:
    """Per position in HOSTS, how `attribute_shared_host` corrects the findings of a host that shares its
    kernel-wide capture (see the module doc): {names, owners, supplies, kernel, label}.

    HOSTS are host entries or their fleet parts (`host`, `findings` with `key`, `_owned`, `benign`). Among
    the hosts sharing a kernel, a finding no host's own counters show becomes one fleet finding, made from
    the kernel's counted-from host's finding if it has one, else the first host's (`supplies`: key → its
    place among the fleet findings before they are sorted, (kernel, first seen)).
    """
    by_name: dict[str, list[int]] = {}
    for index, host in enumerate(hosts):
        by_name.setdefault(host["host"], []).append(index)
    plan: dict[int, JSON] = {}
    for position, kernel in enumerate(kernels):
        names = list(dict.fromkeys(kernel["hosts"]))
        if len(names) < 2:
            continue
        members = [
            index for name in names for index in by_name.get(name, []) if hosts[index].get("findings") is not None
        ]
        owners: dict[str, list[str]] = {}
        for index in members:
            for finding in hosts[index]["findings"]:
                if finding["_owned"]:
                    owners.setdefault(finding["key"], []).append(hosts[index]["host"])
        supplier: dict[str, int] = {}
        for index in members:
            for finding in hosts[index]["findings"]:
                key = finding["key"]
                if (
                    finding["_owned"]
                    or finding["benign"]
                    or any(n != hosts[index]["host"] for n in owners.get(key, []))
                ):
                    continue
                if key not in supplier or hosts[index]["host"] == kernel.get("counted_from"):
                    supplier[key] = index
        label = f"kernel {kernel['boot_id'][:8]} (shared by {_names(names)})"
        for index in members:
            plan[index] = {"names": names, "owners": owners, "kernel": kernel["boot_id"], "label": label,
                           "supplies": {key: (position, rank) for rank, (key, by) in enumerate(supplier.items())
                                        if by == index}}  # fmt: skip
    return plan


def attribute_shared_host(host: JSON, share: Mapping[str, Any]) -> list[JSON]:
    """Correct the findings of a host that shares a kernel-wide capture (SHARE: its `shared_kernel_plan`
    entry); returns the fleet findings this host's findings supply."""
    supplied: list[JSON] = []
    for finding in host["findings"]:
        if finding["_owned"]:
            continue
        owned_by = [name for name in share["owners"].get(finding["key"], []) if name != host["host"]]
        label = finding["reason"] or finding["title"]
        if owned_by:
            whose = f"{_names(owned_by)}'s own counters show it"
        else:
            whose = "no host's own counters show it (see the fleet findings)"
        finding["explanation"] = (
            f"{label} seen kernel-wide (shared kernel), not attributed to this host: {whose} — "
            + "; ".join(finding["_phrases"])
        )
        finding["severity"] = "info"
        finding["attribution"] = "kernel-wide"
        finding["attributed_to"] = owned_by
        if finding["key"] in share["supplies"]:
            capture_only = finding["evidence"]["basis"] == "capture"
            supplied.append({
                **finding,
                "severity": _cap(finding["_severity"], "warning" if capture_only else None),
                "attribution": "kernel",
                "attributed_to": [],
                "kernel": share["kernel"],
                "hosts": share["names"],
                "explanation": render_template(finding["_template"], {**finding["_context"], "host": share["label"]})
                + " — "
                + "; ".join(finding["_phrases"])
                + ". No host's own counters show it: it may come from a namespace outside the inventory.",
            })  # fmt: skip
    host["findings"] = sort_findings(host["findings"])
    return supplied


def host_verdict(host: Mapping[str, Any]) -> str:
    """ok / warning / problem from the host's findings; unknown when the host was not diagnosed."""
    if host.get("status") != "ok":
        return UNKNOWN_VERDICT
    worst = max((SEVERITY_RANK[f["severity"]] for f in host.get("findings") or []), default=0)
    return VERDICT_OF_SEVERITY[SEVERITIES[worst]]


def fleet_verdict(host_verdicts: Iterable[str], found: Iterable[JSON]) -> tuple[str, JSON]:
    """(verdict, counts per verdict): the worst diagnosed host or fleet finding; unknown if no host was."""
    counts = dict.fromkeys((*VERDICTS, UNKNOWN_VERDICT), 0)
    for verdict in host_verdicts:
        counts[verdict] += 1
    ranks = [VERDICTS.index(v) for v in VERDICTS if counts[v]]
    ranks += [VERDICTS.index(VERDICT_OF_SEVERITY[f["severity"]]) for f in found]
    if not ranks:
        return UNKNOWN_VERDICT, counts
    return VERDICTS[max(ranks)], counts


def public_finding(finding: Mapping[str, Any]) -> JSON:
    """A finding without its internal (underscore) fields, for report.json."""
    return {key: value for key, value in finding.items() if key[:1] != "_"}  # (a slice: no method call per key)


def finding_background(finding: Mapping[str, Any], knowledge: KnowledgeBase) -> JSON | None:
    """The knowledge behind a finding (meaning, causes, next) for the page's drill-down; None if none."""
    entry = knowledge.reason(finding["reason"]) if finding.get("reason") else None
    if finding["kind"] == "unexplained":
        entry = knowledge.unexplained.get(finding["key"].removeprefix("unexplained:"))
    if entry is None and finding["kind"] == "location":  # `location:ID` (locations.yml), or an unknown function
        entry = knowledge.locations.get(finding["key"].removeprefix("location:"))
    if entry is None and finding["key"].startswith("counter:"):
        rule_id = finding["key"].removeprefix("counter:")
        entry = next((rule.entry for rule in knowledge.counters if rule.id == rule_id), None)
    if entry is None:
        return None
    return {name: entry.get(name) for name in ("meaning", "causes", "next") if entry.get(name)}


def finish_host_findings(host: JSON, share: Mapping[str, Any] | None) -> list[tuple[tuple[int, int], JSON]]:
    """Pass 2 and the verdict of one host whose `findings` pass 1 set (SHARE: its `shared_kernel_plan` entry,
    None when it shares no kernel); returns the fleet findings it supplies (public), each with its place
    (`fleet_findings` orders them)."""
    for finding in host.get("findings") or []:
        finding["_severity"] = finding["severity"]
    supplied = attribute_shared_host(host, share) if share is not None else []
    host["findings"] = [public_finding(f) for f in host.get("findings") or []]
    host["verdict"] = host_verdict(host)
    return [(share["supplies"][f["key"]], public_finding(f)) for f in supplied]  # type: ignore[index]


def fleet_findings(supplied: Iterable[tuple[tuple[int, int], JSON]]) -> list[JSON]:
    """The fleet findings from what hosts supplied (`finish_host_findings`), worst first."""
    return sort_findings(finding for _, finding in sorted(supplied, key=lambda item: item[0]))
