"""Who: the socket and process behind a socket-level drop, what listens where nothing did, who sent the packets.

A build step after findings and the ledger's directions (`name_who`): each finding of a host gets `who`
(see docs/run-format.md) and its explanation names what the host read about it (`host["knobs"]`, read by
drop_capture right after the capture; `capture.peers`, the senders bpftrace recorded):

- socket-level drops (a full receive buffer, backlog, memory, a socket filter; the counters that count
  them): the sockets on the drops' ports (or, without a port, the host's dropping UDP sockets) with their
  buffer, what was queued, and their owners — comm, pid, user, cgroup, systemd unit, container, pod — or
  "owner not found" with what is known;
- NO_SOCKET on a port: whether anything listens on it in this namespace on another address, or in another
  network namespace of the kernel;
- every finding with captured drops: the top senders (receive drops) or destinations (transmit drops);
- the values of the sysctls the finding's knobs name (as the host read them).

Process names, cgroup paths and addresses are data: they are put into sentences as they are (renderers
escape them) and never interpreted.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from typing import Any

from dropscope.load import JSON

# Reasons (and counters) of a packet that reached its socket and could not be taken: the drop's port is the
# socket's local port.
SOCKET_REASONS = frozenset(
    ("SOCKET_RCVBUFF", "SOCKET_BACKLOG", "PROTO_MEM", "SOCKET_FILTER", "TCP_LISTEN_OVERFLOW", "TCP_REQQFULLDROP",
     "SOCKET_CLOSE", "TCP_ZEROWINDOW", "TCP_OVERWINDOW", "TCP_OFOMERGE")
)  # fmt: skip
SOCKET_COUNTERS = re.compile(
    r"^(Udp6?(RcvbufErrors|InErrors|MemErrors)|TcpExtListen(Overflows|Drops)|TcpExtTCPRcvQDrop)$"
)
SOCKET_OBJECT = re.compile(r"^(\w+) (.*):(\d+)$")  # report.json sockets keys: "udp 0.0.0.0:9100"
SYSCTL_NAME = re.compile(r"^((?:net|vm|kernel)\.[A-Za-z0-9_.*/-]+)")
MAX_SOCKETS_NAMED = 3
MAX_PEERS_NAMED = 3
MAX_VALUES_NAMED = 6


def knob_name(knob: Any) -> str:
    """A finding knob's name: the string itself, or a knob object's `name` (after advice)."""
    return str(knob.get("name") or "") if isinstance(knob, Mapping) else str(knob)


def knob_sysctl_patterns(findings: Iterable[Mapping[str, Any]]) -> set[str]:
    """The sysctl names (glob patterns) the findings' knobs name: "net.ipv4.conf.*.rp_filter (0 off, …)" → its name.

    >>> knobs = ["net.core.rmem_max", "SO_RCVBUF", {"name": "net.ipv4.conf.*.rp_filter (0 off)"}]
    >>> sorted(knob_sysctl_patterns([{"knobs": knobs}]))
    ['net.core.rmem_max', 'net.ipv4.conf.*.rp_filter']
    """
    patterns = set()
    for finding in findings:
        for knob in finding.get("knobs") or []:
            match = SYSCTL_NAME.match(knob_name(knob))
            if match:
                patterns.add(match.group(1).rstrip("."))
    return patterns


def _bytes(value: Any) -> str:
    return f"{value:,} B" if isinstance(value, int) and not isinstance(value, bool) else "?"


def _owners(entry: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    owners = entry.get("owners")
    return [owner for owner in owners if isinstance(owner, Mapping)] if isinstance(owners, list) else []


def owner_phrase(owner: Mapping[str, Any]) -> str:
    """ "udp-rx (pid 4242, user app, unit udp-rx.service)" — the process as the host read it."""
    parts = [f"pid {owner.get('pid')}"]
    if owner.get("user") or owner.get("uid") is not None:
        parts.append(f"user {owner.get('user') or owner.get('uid')}")
    container, pod = owner.get("container"), owner.get("pod")
    if isinstance(container, Mapping):
        parts.append(f"{container.get('runtime') or 'container'} container {str(container.get('id') or '')[:12]}")
    if isinstance(pod, Mapping):
        parts.append(f"pod {pod.get('uid')}")
    if owner.get("unit"):
        parts.append(f"unit {owner['unit']}")
    elif owner.get("cgroup") and not container and not pod:
        parts.append(f"cgroup {owner['cgroup']}")
    return f"{owner.get('comm')!s} ({', '.join(parts)})"


def socket_phrase(sock: Mapping[str, Any]) -> str:
    """One socket with its buffer and owners, for a finding's explanation."""
    name = f"{sock.get('proto')} {sock.get('local_address')}:{sock.get('local_port')}"
    facts = [f"receive buffer {_bytes(sock.get('rcvbuf'))}"]
    if sock.get("rx_queue") is not None:
        facts.append(f"{_bytes(sock.get('rx_queue'))} queued")
    if sock.get("backlog_max") is not None:
        facts.append(f"accept queue {sock.get('backlog')} of {sock.get('backlog_max')}")
    owners = _owners(sock)
    if owners:
        held = ", ".join(owner_phrase(owner) for owner in owners)
        if sock.get("owners_more"):
            held += f" and {sock['owners_more']} more"
        whose = f"held by {held}"
    else:
        whose = sock.get("owner_note") or "owner not found"
    return f"socket {name} ({', '.join(facts)}) {whose}"


def _finding_ports(finding: Mapping[str, Any]) -> set[int]:
    evidence = finding.get("evidence") or {}
    ports = {drop["port"] for drop in evidence.get("drops") or [] if isinstance(drop.get("port"), int)}
    for row in evidence.get("counters") or []:
        match = SOCKET_OBJECT.match(str(row.get("object") or "")) if row.get("section") == "sockets" else None
        if match:
            ports.add(int(match.group(3)))
    return ports


def _socket_level(finding: Mapping[str, Any]) -> bool:
    if finding.get("reason") in SOCKET_REASONS:
        return True
    rows = (finding.get("evidence") or {}).get("counters") or []
    return any(row.get("section") == "sockets" or SOCKET_COUNTERS.match(str(row.get("counter") or "")) for row in rows)


def finding_sockets(finding: Mapping[str, Any], knobs: Mapping[str, Any]) -> list[JSON]:
    """The host's sockets behind a socket-level finding: those on its ports, else the dropping UDP sockets."""
    if not _socket_level(finding):
        return []
    sockets = [sock for sock in knobs.get("sockets") or [] if isinstance(sock, Mapping)]
    ports = _finding_ports(finding)
    chosen = [sock for sock in sockets if sock.get("local_port") in ports] if ports else []
    rows = (finding.get("evidence") or {}).get("counters") or []
    listen = finding.get("reason") == "TCP_LISTEN_OVERFLOW" or any(
        str(row.get("counter") or "").startswith("TcpExtListen") for row in rows
    )
    if not chosen and listen:  # no port: the listeners whose accept queue was fullest after the run
        chosen = [sock for sock in sockets if any(str(why).startswith("TcpExtListen") for why in sock.get("why") or [])]
        return sorted(chosen, key=lambda sock: -(sock.get("backlog") or 0))[:MAX_SOCKETS_NAMED]
    if not chosen:
        chosen = [sock for sock in sockets if "drops" in (sock.get("why") or [])]
    return sorted(chosen, key=lambda sock: -(sock.get("drops") or 0))[:MAX_SOCKETS_NAMED]


def listener_phrase(listener: Mapping[str, Any]) -> str:
    """What listens on a port that got NO_SOCKET drops."""
    port = listener.get("port")
    here = listener.get("here") or []
    others = listener.get("other_netns") or []

    def held(entry: Mapping[str, Any]) -> str:
        owners = _owners(entry)
        return f" by {', '.join(owner_phrase(owner) for owner in owners)}" if owners else ""

    parts = []
    if here:
        parts.append(
            f"port {port} is bound here only on "
            + "; ".join(f"{entry.get('proto')} {entry.get('local_address')}{held(entry)}" for entry in here)
        )
    if others:
        parts.append(
            f"port {port} is bound in another network namespace: "
            + "; ".join(
                f"{entry.get('proto')} {entry.get('local_address')} (netns {entry.get('netns_inode')}){held(entry)}"
                for entry in others
            )
        )
    if not parts:
        parts.append(f"nothing listens on port {port} here or in another network namespace of this kernel")
    if listener.get("note"):
        parts.append(str(listener["note"]))
    return "; ".join(parts)


def _directions(host: Mapping[str, Any], reason: str | None) -> set[str]:
    groups = (host.get("capture") or {}).get("drops") or []
    return {group.get("direction") or "unknown" for group in groups if group.get("reason") == reason}


def finding_peers(finding: Mapping[str, Any], host: Mapping[str, Any]) -> JSON | None:
    """{"status", "senders": [{"address", "count"}], "destinations": [...], "other": n} of a finding's reason."""
    peers = (host.get("capture") or {}).get("peers")
    reason = finding.get("reason")
    if not isinstance(peers, Mapping) or not reason or finding.get("evidence", {}).get("basis") != "capture":
        return None
    if peers.get("status") != "ok":
        return {"status": peers.get("status"), "why": peers.get("why"), "senders": [], "destinations": [], "other": 0}
    senders: dict[str, int] = {}
    destinations: dict[str, int] = {}
    for group in peers.get("groups") or []:
        if not isinstance(group, Mapping) or group.get("reason") != reason or not isinstance(group.get("count"), int):
            continue
        senders[group["src"]] = senders.get(group["src"], 0) + group["count"]
        destinations[group["dst"]] = destinations.get(group["dst"], 0) + group["count"]

    def ranked(totals: dict[str, int]) -> list[JSON]:
        return [{"address": a, "count": c} for a, c in sorted(totals.items(), key=lambda item: (-item[1], item[0]))]

    other = ((peers.get("other") or {}).get(reason) or {}).get("count", 0)
    return {"status": "ok", "why": None, "mode": peers.get("mode"), "senders": ranked(senders),
            "destinations": ranked(destinations), "other": other}  # fmt: skip


def peers_phrase(peers: Mapping[str, Any], directions: set[str]) -> str | None:
    if peers.get("status") != "ok":
        return f"senders not recorded: {peers.get('why')}" if peers.get("why") else None
    tx = directions == {"tx"}
    entries = peers["destinations"] if tx else peers["senders"]
    if not entries:
        return None
    shown = ", ".join(f"{entry['address']} ({entry['count']:,})" for entry in entries[:MAX_PEERS_NAMED])
    rest = sum(entry["count"] for entry in entries[MAX_PEERS_NAMED:]) + (peers.get("other") or 0)
    label = "top destinations" if tx else "top senders"
    prefix = " (/24, /64 prefixes)" if peers.get("mode") == "prefix" else ""
    return f"{label}{prefix}: {shown}" + (f" and {rest:,} from others" if rest else "")


def _settings(values: Mapping[str, Any], kinds: Iterable[str]) -> str:
    """ "rx 256 of 4096, tx 256 of 4096" from ethtool's {rx, rx_max, …} (kinds the driver has)."""
    parts = []
    for kind in kinds:
        if kind in values:
            top = values.get(kind + "_max")
            parts.append(f"{kind} {values[kind]}" + (f" of {top}" if top is not None else ""))
    return ", ".join(parts)


def _finding_devices(finding: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(interfaces, qdisc keys) the finding's counters name."""
    devices: list[str] = []
    qdiscs: list[str] = []
    for row in (finding.get("evidence") or {}).get("counters") or []:
        obj = str(row.get("object") or "")
        if row.get("section") == "interfaces" and obj and obj not in devices:
            devices.append(obj)
        elif row.get("section") == "qdiscs" and obj:
            qdiscs.append(obj)
            if obj.split(" ")[0] not in devices:
                devices.append(obj.split(" ")[0])
    return devices, qdiscs


def knob_values(finding: Mapping[str, Any], knobs: Mapping[str, Any]) -> JSON:
    """The values of what the finding's knobs name, as the host read them: each sysctl (wildcards expanded)
    → its value; for the interfaces and qdiscs of its counters, "IF rings" (ethtool -G), "IF channels"
    (ethtool -L), "IF txqueuelen" and "QDISC limit" when the knobs name them."""
    sysctl = knobs.get("sysctl") or {}
    values: JSON = {}
    for pattern in sorted(knob_sysctl_patterns([finding])):
        for name in sorted(sysctl):
            if fnmatch.fnmatchcase(name, pattern):
                values[name] = sysctl[name]
    names = " ".join(knob_name(knob) for knob in finding.get("knobs") or [])
    devices, qdiscs = _finding_devices(finding)
    interfaces = knobs.get("interfaces") or {}
    for dev in devices:
        entry = interfaces.get(dev) if isinstance(interfaces.get(dev), Mapping) else {}
        if "ethtool -G" in names and entry.get("rings"):
            values[f"{dev} rings"] = _settings(entry["rings"], ("rx", "rx_mini", "rx_jumbo", "tx"))
        if "ethtool -L" in names and entry.get("channels"):
            values[f"{dev} channels"] = _settings(entry["channels"], ("combined", "rx", "tx", "other"))
        if "txqueuelen" in names and entry.get("txqueuelen") is not None:
            values[f"{dev} txqueuelen"] = str(entry["txqueuelen"])
        for key in qdiscs:
            limit = ((entry.get("qdiscs") or {}).get(key) or {}) if key.startswith(dev + " ") else None
            if "qdisc limit" in names and limit:
                number = limit.get("limit")
                values[f"{key} limit"] = "none (follows txqueuelen)" if number is None else str(number)
    return values


def usable_knobs(knobs: Any) -> JSON | None:
    """A host file's `knobs` with only the parts of the expected types (a host file is data: anything else is
    left out), as report.json carries it; None when the host file has none."""
    if not isinstance(knobs, Mapping):
        return None
    sysctl = knobs.get("sysctl") if isinstance(knobs.get("sysctl"), Mapping) else {}
    return {
        "schema_version": knobs.get("schema_version"),
        "sysctl": {str(name): value for name, value in sysctl.items() if isinstance(value, str)},
        "interfaces": knobs.get("interfaces") if isinstance(knobs.get("interfaces"), Mapping) else {},
        "sockets": [s for s in knobs.get("sockets") or [] if isinstance(s, Mapping)]
        if isinstance(knobs.get("sockets"), list)
        else [],
        "listeners": [entry for entry in knobs.get("listeners") or [] if isinstance(entry, Mapping)]
        if isinstance(knobs.get("listeners"), list)
        else [],
        "errors": list(knobs.get("errors")) if isinstance(knobs.get("errors"), list) else [],
    }


def name_who(host: JSON) -> None:
    """Give each finding of a report host its `who` and name it in the explanation (see the module doc)."""
    knobs = host.get("knobs") if isinstance(host.get("knobs"), Mapping) else None
    for finding in host.get("findings") or []:
        who: JSON = {"sockets": [], "listeners": [], "peers": None, "values": {}}
        phrases: list[str] = []
        if knobs is not None:
            who["sockets"] = finding_sockets(finding, knobs)
            phrases += [socket_phrase(sock) for sock in who["sockets"]]
            if finding.get("reason") == "NO_SOCKET":
                ports = _finding_ports(finding)
                who["listeners"] = [entry for entry in knobs.get("listeners") or [] if entry.get("port") in ports]
                phrases += [listener_phrase(entry) for entry in who["listeners"]]
            who["values"] = knob_values(finding, knobs)
        peers = finding_peers(finding, host)
        if peers is not None:
            who["peers"] = peers
            phrase = peers_phrase(peers, _directions(host, finding.get("reason")))
            if phrase:
                phrases.append(phrase)
        if who["values"]:
            shown = list(who["values"].items())
            text = ", ".join(f"{name} = {value}" for name, value in shown[:MAX_VALUES_NAMED])
            more = len(shown) - MAX_VALUES_NAMED
            phrases.append("now " + text + (f" and {more} more" if more > 0 else ""))
        who["lines"] = phrases
        finding["who"] = who
        if phrases:
            finding["explanation"] += "; " + "; ".join(phrases)
            if isinstance(finding.get("_phrases"), list):
                finding["_phrases"].extend(phrases)
