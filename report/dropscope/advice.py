"""Advice: a proposed value, and why, for each knob a finding names, from what the run measured.

A build step (after findings and the ledger, before the report is finished): `advise_host` turns each finding's
`knobs` into `[{"name", "value", "proposed", "why"}]`. `value` is the knob's value on the host as the host
read it (`host["knobs"]`: sysctls as /proc/sys text; for SO_RCVBUF the buffer of the socket that dropped),
`proposed` the value dropscope proposes (text, like `value`) or None, `why` the reason for the proposal (or
why there is none) or None for a knob the knowledge base has no rule for.

The rules' numbers are data (knowledge/knobs.yml, `propose`); the arithmetic is here:

- buffer (net.core.rmem_default / rmem_max, SO_RCVBUF): the receive buffer that would have held the drops
  of `drain_s` seconds of not reading: the socket's buffer + rate × drain_s × bytes_per_drop. Whether the
  default or the application's own SO_RCVBUF is the one to raise depends on the socket: a socket whose
  buffer (`rcvbuf`, the kernel's sk_rcvbuf) differs from net.core.rmem_default set SO_RCVBUF itself, and
  the fix is in the application (net.core.rmem_max caps what it may ask for).
- queue (net.core.netdev_max_backlog, net.core.somaxconn): the queue's length + rate × drain_s.
- table (net.netfilter.nf_conntrack_max): the table's fill at the end of the run × headroom.

Each proposal is at least `min_factor` × the current value, rounded up to a power of two and capped at
`max`; a knob already at least that large gets no proposal (and says so).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from dropscope.findings import render_template
from dropscope.knowledge_base import KnowledgeBase
from dropscope.load import JSON

SOCKET_OBJECT = re.compile(r"^(\w+) (.*):(\d+)$")  # report.json sockets keys: "udp 0.0.0.0:9100"
RMEM_DEFAULT = "net.core.rmem_default"


def power_of_two_at_least(number: float) -> int:
    """The smallest power of two ≥ NUMBER (1 for anything ≤ 1).

    >>> power_of_two_at_least(756736), power_of_two_at_least(1024), power_of_two_at_least(0.5)
    (1048576, 1024, 1)
    """
    result = 1
    while result < number:
        result *= 2
    return result


def _int(text: Any) -> int | None:
    """A knob's value as an integer (None for text that is not one, e.g. "4096 87380 6291456")."""
    if isinstance(text, bool):
        return None
    if isinstance(text, int):
        return text
    try:
        return int(str(text).strip())
    except (TypeError, ValueError):
        return None


def _number(value: float) -> str:
    """A measured rate or interval for a sentence: "236", "12.5", "0.1"."""
    return f"{round(value, 1):g}"


def finding_sockets(finding: Mapping[str, Any], host: Mapping[str, Any]) -> list[JSON]:
    """The host's sockets (`host["knobs"]["sockets"]`) a finding's drops were for, most drops first.

    Matched by local port: the ports of the finding's socket counters ("udp 0.0.0.0:9100") and of its
    capture groups. UDP findings only look at UDP sockets (entries that say their protocol).
    """
    evidence = finding.get("evidence") or {}
    ports: set[int] = set()
    for row in evidence.get("counters") or []:
        match = SOCKET_OBJECT.match(str(row.get("object") or "")) if row.get("section") == "sockets" else None
        if match:
            ports.add(int(match.group(3)))
    ports.update(drop["port"] for drop in evidence.get("drops") or [] if isinstance(drop.get("port"), int))
    sockets = ((host.get("knobs") or {}).get("sockets")) or []
    found = []
    for entry in sockets:
        if not isinstance(entry, dict) or entry.get("local_port") not in ports:
            continue
        proto = str(entry.get("proto") or entry.get("netid") or "udp").lower()
        if proto.startswith("udp") or proto == "unknown":
            found.append(entry)
    return sorted(found, key=lambda entry: -(_int(entry.get("drops")) or 0))


def _knob_value(name: str, knob: JSON | None, host: Mapping[str, Any], socket: JSON | None) -> str | None:
    """The knob's value on the host: a sysctl as the host read it; SO_RCVBUF: the dropping socket's buffer."""
    sysctls = (host.get("knobs") or {}).get("sysctl") or {}
    if name in sysctls:
        return None if sysctls[name] is None else str(sysctls[name])
    if knob is not None and (knob.get("propose") or {}).get("rule") == "buffer" and socket is not None:
        rcvbuf = _int(socket.get("rcvbuf"))
        return None if rcvbuf is None else str(rcvbuf)
    return None


def _needed(
    rule: Mapping[str, Any],
    name: str,
    value: int | None,
    finding: Mapping[str, Any],
    host: Mapping[str, Any],
    socket: JSON | None,
) -> tuple[float | None, JSON, str | None]:
    """(what the drops need, the sentence's fields, why there is no proposal) for one knob's rule."""
    evidence = finding.get("evidence") or {}
    rate = evidence.get("rate")
    fields: JSON = {"rate": _number(rate) if rate is not None else "?", "count": evidence.get("count")}
    kind = rule["rule"]
    if kind == "table":
        conntrack = (host.get("counters") or {}).get("conntrack") or {}
        count = _int(conntrack.get("count_now"))
        if count is None:
            return None, fields, "the table's fill was not read"
        fields.update(count=count, headroom=_number(rule["headroom"]))
        return count * rule["headroom"], fields, None
    if rate is None:
        return None, fields, "no drop rate (the run has no interval)"
    if kind == "queue":
        if value is None:
            return None, fields, "its value was not read on the host"
        fields["drain_s"] = _number(rule["drain_s"])
        return value + rate * rule["drain_s"], fields, None
    # buffer: the socket that dropped, or (not read) a socket that takes the default
    default = _int(((host.get("knobs") or {}).get("sysctl") or {}).get(RMEM_DEFAULT))
    buffer = _int((socket or {}).get("rcvbuf"))
    assumed = ""
    if buffer is None:
        buffer, assumed = default, " (the socket's own buffer was not read: assumed the default)"
    if buffer is None:
        return None, fields, "neither the socket's buffer nor net.core.rmem_default was read on the host"
    own = default is not None and buffer != default
    wanted = rule.get("socket", "any")
    if wanted == "default" and own:
        return (
            None,
            fields,
            (
                f"the application sets SO_RCVBUF itself ({buffer} B, the default is {default} B): the default does not "
                "change its buffer"
            ),
        )
    if wanted == "own" and not own:
        return None, fields, f"the socket takes the default buffer ({buffer} B): see {RMEM_DEFAULT}"
    fields.update(drain_s=_number(rule["drain_s"]), bytes_per_drop=rule["bytes_per_drop"], buffer=buffer)
    needed = buffer + rate * rule["drain_s"] * rule["bytes_per_drop"]
    return needed, {**fields, "assumed": assumed}, None


def advise_knob(
    name: str,
    value: str | None,
    finding: Mapping[str, Any],
    host: Mapping[str, Any],
    knowledge: KnowledgeBase,
    socket: JSON | None = None,
) -> JSON:
    """One entry of a finding's `knobs`: {name, value, proposed, why}."""
    knob = knowledge.knob(name)
    if value is None:
        value = _knob_value(name, knob, host, socket)
    entry: JSON = {"name": name, "value": value, "proposed": None, "why": None}
    rule = (knob or {}).get("propose")
    if not rule:
        return entry
    if value is None and rule["rule"] == "table":  # the table's size as the snapshot read it (conntrack max)
        size = _int(((host.get("counters") or {}).get("conntrack") or {}).get("max_now"))
        value = entry["value"] = None if size is None else str(size)
    current = _int(value)
    needed, fields, none_because = _needed(rule, name, current, finding, host, socket)
    if needed is None:
        entry["why"] = f"no proposal: {none_because}"
        return entry
    target = needed
    if current is not None and needed > current:
        target = max(needed, current * rule.get("min_factor", 1))
    rounded = power_of_two_at_least(target)
    proposed = min(rounded, int(rule["max"]))
    if current is not None and proposed <= current:
        entry["why"] = f"no change: {current} is at least what the drops need ({int(needed)})"
        return entry
    fields.update(
        name=name,
        value=value,
        proposed=proposed,
        needed=int(needed),
        max=int(rule["max"]),
        capped=f", capped at {int(rule['max'])}" if rounded > proposed else "",
    )
    entry["proposed"] = str(proposed)
    entry["why"] = render_template(knob.get("why") or "{needed} needed", fields) + fields.get("assumed", "")
    return entry


def advise_host(host: JSON, knowledge: KnowledgeBase) -> None:
    """Give every knob of every finding of HOST its value, proposed value and why (in place).

    Knob entries may be names (the knowledge base's `knobs`) or {name, value} entries; a value already
    there is kept.
    """
    for finding in host.get("findings") or []:
        knobs = finding.get("knobs") or []
        sockets = finding_sockets(finding, host) if knobs else []
        socket = sockets[0] if sockets else None
        advised = []
        for item in knobs:
            name = item.get("name") if isinstance(item, dict) else item
            value = item.get("value") if isinstance(item, dict) else None
            advised.append(advise_knob(str(name), value, finding, host, knowledge, socket))
        finding["knobs"] = advised
