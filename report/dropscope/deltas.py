"""Counter arithmetic: after − before per counter, resets, per-section deltas and rates.

Pure functions of two validated snapshots (dropscope.load). Decisions the contract leaves open (kept
deliberately simple):

- `counter_deltas` only compares counters present in both snapshots; a counter present on one side only
  (a driver that grew ethtool stats, an snmp line that appeared) gets no delta and no entry.
- Interfaces and qdiscs present in only one snapshot are listed under `appeared` / `vanished` and get no
  deltas. Sockets and firewall rules absent before count from 0: a socket is only listed while its drop
  counter is non-zero, and a rule that is new was created during the run, so its counters started at 0 —
  unless `before` cannot vouch for the absence: its read of that section failed (an `errors` entry of
  one of its sources: `nft …`, `iptables…`, `/proc/net/udp…`) or, for sockets, its list is full (the host
  lists only the SOCKETS_LISTED sockets with most drops: one left out may have had many). Then only
  sockets and rules present in both count, as for interfaces: a counter's whole life is never a delta.
- Sockets are matched by inode under their "PROTO ADDR:PORT" key, and the deltas of all sockets under one
  key (SO_REUSEPORT groups) are summed. A socket that closed during the run is lost.
- Softnet deltas are taken per CPU (matched by `cpu`) and then summed, so an offlined CPU is not a reset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from dropscope.load import CONNTRACK_GAUGES, FIREWALL_COUNTERS, JSON, QDISC_GAUGES

PROTOCOL_GAUGES = frozenset(
    {"IpForwarding", "IpDefaultTTL", "TcpRtoAlgorithm", "TcpRtoMin", "TcpRtoMax", "TcpMaxConn", "TcpCurrEstab"}
)
ETHTOOL_GAUGES = frozenset({"peer_ifindex", "conntrack_allowance_available"})  # levels, not counters (veth, ENA)
SOFTNET_NOT_COUNTERS = frozenset({"cpu", "backlog_len"})
SOFTNET_ALWAYS = ("dropped", "time_squeeze")
CONNTRACK_NOT_COUNTERS = frozenset({"entries", "cpus"})  # the table size and the number of CPU lines
GAUGE_SUFFIX = "_now"  # a qdisc's backlog/qlen at the end of the run: a level, not a delta

Counters = dict[str, int]
SOCKETS_LISTED = 200  # the most sockets a snapshot lists, largest drops first (the collection's MAX_SOCKETS)
# The sources (snapshot `errors`) of the sections whose objects absent before count from 0.
SECTION_SOURCES = {
    "sockets": ("/proc/net/udp",),
    "firewall": ("nft ", "iptables", "ip6tables"),
}


def per_second(delta: float, interval_s: float | None) -> float | None:
    """A counter's rate per second, rounded to 3 decimals; None without an interval.

    >>> per_second(500, 5.1), per_second(7, None), per_second(1, 3.0)
    (98.039, None, 0.333)
    """
    return round(delta / interval_s, 3) if interval_s else None


def counter_deltas(before: Mapping[str, int], after: Mapping[str, int]) -> tuple[Counters, list[JSON]]:
    """Deltas (after − before, non-zero only) of counters present in both; counters that went down are resets.

    Returns (deltas, resets) where each reset is {"counter", "before", "after"}. Counters present on one
    side only are ignored.
    """
    deltas: Counters = {}
    resets: list[JSON] = []
    for name, after_value in after.items():
        if name not in before:
            continue
        before_value = before[name]
        if after_value < before_value:
            resets.append({"counter": name, "before": before_value, "after": after_value})
        elif after_value > before_value:
            deltas[name] = after_value - before_value
    return deltas, resets


def _reset_entries(section: str, name: str | None, resets: Iterable[JSON]) -> list[JSON]:
    return [{"section": section, "name": name, **reset} for reset in resets]


def _interface_counters(interface: Mapping[str, Any]) -> Counters:
    """statistics and ethtool counters of one interface, ethtool ones prefixed "ethtool:"."""
    merged = dict(interface.get("statistics") or {})
    for name, value in (interface.get("ethtool") or {}).items():
        if name not in ETHTOOL_GAUGES:
            merged[f"ethtool:{name}"] = value
    return merged


def socket_key(socket: Mapping[str, Any]) -> str:
    """The socket's key, "PROTO ADDR:PORT", with an IPv6 address in brackets."""
    address = socket["local_address"]
    if ":" in address:
        address = f"[{address}]"
    return f"{socket['proto']} {address}:{socket['local_port']}"


def _interfaces_deltas(before: JSON, after: JSON) -> tuple[dict[str, Counters], list[JSON], list[str], list[str]]:
    counters: dict[str, Counters] = {}
    resets: list[JSON] = []
    appeared = [name for name in after if name not in before]
    vanished = [name for name in before if name not in after]
    for name, interface in after.items():
        if name in before:
            deltas, interface_resets = counter_deltas(_interface_counters(before[name]), _interface_counters(interface))
            if deltas:
                counters[name] = deltas
            resets += _reset_entries("interfaces", name, interface_resets)
    return counters, resets, appeared, vanished


def _protocols_deltas(before: Counters, after: Counters) -> tuple[Counters, list[JSON]]:
    deltas, resets = counter_deltas(
        {k: v for k, v in before.items() if k not in PROTOCOL_GAUGES},
        {k: v for k, v in after.items() if k not in PROTOCOL_GAUGES},
    )
    return deltas, _reset_entries("protocols", None, resets)


def _softnet_deltas(before: list[JSON], after: list[JSON]) -> tuple[Counters, list[JSON]]:
    """Per-CPU deltas (CPUs matched by `cpu`, else by position) summed over CPUs."""

    def by_cpu(rows: list[JSON]) -> dict[int, Counters]:
        return {
            row.get("cpu", index): {k: v for k, v in row.items() if k not in SOFTNET_NOT_COUNTERS}
            for index, row in enumerate(rows)
        }

    before_cpus = by_cpu(before)
    totals: Counters = dict.fromkeys(SOFTNET_ALWAYS, 0)
    resets: list[JSON] = []
    for cpu, counters in by_cpu(after).items():
        if cpu not in before_cpus:
            continue
        deltas, cpu_resets = counter_deltas(before_cpus[cpu], counters)
        for name, delta in deltas.items():
            totals[name] = totals.get(name, 0) + delta
        resets += _reset_entries("softnet", f"cpu{cpu}", cpu_resets)
    return totals, resets


def _qdiscs_deltas(before: JSON, after: JSON) -> tuple[dict[str, Counters], list[JSON], list[str], list[str]]:
    def counters_of(qdisc: JSON) -> Counters:
        return {
            k: v for k, v in qdisc.items() if isinstance(v, int) and not isinstance(v, bool) and k not in QDISC_GAUGES
        }

    result: dict[str, Counters] = {}
    resets: list[JSON] = []
    appeared = [key for key in after if key not in before]
    vanished = [key for key in before if key not in after]
    for key, qdisc in after.items():
        if key not in before:
            continue
        deltas, qdisc_resets = counter_deltas(counters_of(before[key]), counters_of(qdisc))
        for gauge in QDISC_GAUGES:
            if qdisc.get(gauge):
                deltas[gauge + GAUGE_SUFFIX] = qdisc[gauge]
        if deltas:
            result[key] = deltas
        resets += _reset_entries("qdiscs", key, qdisc_resets)
    return result, resets, appeared, vanished


def _sockets_deltas(
    before: list[JSON], after: list[JSON], whole: bool = True
) -> tuple[dict[str, Counters], list[JSON]]:
    """Drops per socket key; sockets matched by inode, summed per key, absent before = 0 before if WHOLE (the
    before list is complete), else not counted."""
    before_drops = {(socket_key(s), s.get("inode")): s["drops"] for s in before}
    totals: dict[str, int] = {}
    resets: list[JSON] = []
    for socket in after:
        key = socket_key(socket)
        before_value = before_drops.get((key, socket.get("inode")), 0 if whole else None)
        if before_value is None:
            continue
        if socket["drops"] < before_value:
            reset = {"counter": "drops", "before": before_value, "after": socket["drops"]}
            resets.append({"section": "sockets", "name": key, **reset})
        elif socket["drops"] > before_value:
            totals[key] = totals.get(key, 0) + socket["drops"] - before_value
    return {key: {"drops": drops} for key, drops in totals.items()}, resets


def _firewall_deltas(before: JSON, after: JSON, whole: bool = True) -> tuple[dict[str, Counters], list[JSON]]:
    """packets/bytes per rule; a rule absent before was created during the run and counts from 0 if WHOLE
    (the before ruleset was read), else it is not counted."""
    result: dict[str, Counters] = {}
    resets: list[JSON] = []
    for key, rule in after.items():
        if key not in before and not whole:
            continue
        previous = before.get(key) or dict.fromkeys(FIREWALL_COUNTERS, 0)
        deltas, rule_resets = counter_deltas(
            {k: previous[k] for k in FIREWALL_COUNTERS}, {k: rule[k] for k in FIREWALL_COUNTERS}
        )
        if deltas:
            result[key] = deltas
        resets += _reset_entries("firewall", key, rule_resets)
    return result, resets


def _conntrack_deltas(before: JSON | None, after: JSON | None) -> tuple[Counters, list[JSON]]:
    """Deltas of the conntrack statistics (summed over CPUs) and the table's levels at the end (`count_now`,
    `max_now`, `buckets_now`); nothing where conntrack was not loaded in both snapshots."""
    if not before or not after:
        return {}, []

    def counters_of(conntrack: JSON) -> Counters:
        return {k: v for k, v in (conntrack.get("stat") or {}).items() if k not in CONNTRACK_NOT_COUNTERS}

    deltas, resets = counter_deltas(counters_of(before), counters_of(after))
    for gauge in CONNTRACK_GAUGES:
        if after.get(gauge) is not None:
            deltas[gauge + GAUGE_SUFFIX] = after[gauge]
    return deltas, _reset_entries("conntrack", None, resets)


def interval_seconds(before: JSON, after: JSON) -> float | None:
    """Seconds between two snapshots by their monotonic clocks; None across a reboot or if not positive."""
    if before["system"]["boot_id"] != after["system"]["boot_id"]:
        return None
    interval = after["time"]["monotonic"] - before["time"]["monotonic"]
    return round(interval, 6) if interval > 0 else None


SECTION_DELTAS: tuple[tuple[str, Callable[[Any, Any], tuple[Any, ...]]], ...] = (
    ("interfaces", _interfaces_deltas),
    ("protocols", _protocols_deltas),
    ("softnet", _softnet_deltas),
    ("qdiscs", _qdiscs_deltas),
    ("sockets", _sockets_deltas),
    ("firewall", _firewall_deltas),
    ("conntrack", _conntrack_deltas),
)


def read_whole(snapshot: Mapping[str, Any], section: str) -> bool:
    """Whether SNAPSHOT vouches that an object of SECTION (sockets, firewall) it does not list was not there
    (or, for sockets, had no drops): every source of the section was read, and the socket list is not full.

    >>> read_whole({"errors": [{"source": "nft -a list ruleset", "error": "exit 1: …"}]}, "firewall")
    False
    >>> read_whole({"errors": [], "sockets": [{"drops": 1}] * 200}, "sockets"), read_whole({"errors": []}, "firewall")
    (False, True)
    """
    sources = SECTION_SOURCES[section]
    if any(str(error.get("source") or "").startswith(sources) for error in snapshot.get("errors") or []):
        return False
    return not (section == "sockets" and len(snapshot.get("sockets") or []) >= SOCKETS_LISTED)


def snapshot_deltas(before: JSON, after: JSON) -> JSON:
    """The counters, resets, appeared, vanished and interval_s parts of a report.json host."""
    result: JSON = {
        "interval_s": interval_seconds(before, after),
        "counters": {},
        "resets": [],
        "appeared": {"interfaces": [], "qdiscs": []},
        "vanished": {"interfaces": [], "qdiscs": []},
    }
    before_boot, after_boot = before["system"]["boot_id"], after["system"]["boot_id"]
    if before_boot != after_boot:
        result["resets"] = [
            {"section": "system", "name": None, "counter": "boot_id", "before": before_boot, "after": after_boot}
        ]
        return result

    resets: list[JSON] = []
    for section, deltas_of in SECTION_DELTAS:
        whole = (read_whole(before, section),) if section in SECTION_SOURCES else ()
        result["counters"][section], section_resets, *changes = deltas_of(
            before.get(section), after.get(section), *whole
        )
        resets += section_resets
        if changes:  # interfaces and qdiscs: the ones that appeared and vanished during the run
            result["appeared"][section], result["vanished"][section] = changes
    result["resets"] = resets
    return result


OBJECT_SECTIONS = ("interfaces", "qdiscs", "sockets", "firewall")


def iter_counters(counters: Mapping[str, Any]) -> Iterable[tuple[str, str | None, str, int]]:
    """(section, object, counter, delta) of every non-zero entry of a report host's `counters`.

    Protocols, softnet and conntrack first (object None), then the object sections; levels (`*_now`) included.

    >>> list(iter_counters({"softnet": {"dropped": 0, "processed": 9}, "qdiscs": {"eth0 tbf 1:": {"dropped": 2}}}))
    [('softnet', None, 'processed', 9), ('qdiscs', 'eth0 tbf 1:', 'dropped', 2)]
    """
    for section in ("protocols", "softnet", "conntrack"):
        for counter, delta in (counters.get(section) or {}).items():
            if delta:
                yield section, None, counter, delta
    for section in OBJECT_SECTIONS:
        for obj, values in (counters.get(section) or {}).items():
            for counter, delta in values.items():
                if delta:
                    yield section, obj, counter, delta
