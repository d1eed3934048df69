"""The report model: read a run directory, compute counter deltas and fleet totals, build report.json.

The data contract is docs/run-format.md (schema_version 1). Everything here is a pure function of the
documents except `load_run`, which reads the run directory.

Decisions the contract leaves open (kept deliberately simple):

- `counter_deltas` only compares counters present in both snapshots; a counter present on one side only
  (a driver that grew ethtool stats, an snmp line that appeared) gets no delta and no entry.
- Interfaces and qdiscs present in only one snapshot are listed under `appeared` / `vanished` and get no
  deltas. Sockets and firewall rules absent before count from 0: a socket is only listed while its drop
  counter is non-zero, and a rule that is new was created during the run, so its counters started at 0.
- Sockets are matched by inode under their "PROTO ADDR:PORT" key, and the deltas of all sockets under one
  key (SO_REUSEPORT groups) are summed. A socket that closed during the run is lost.
- Softnet deltas are taken per CPU (matched by `cpu`) and then summed, so an offlined CPU is not a reset.
- Fleet totals count the drops of the captures listed in each host's report (the capture's `other`
  remainder is not itemised and so is not counted; the HTML notes it). Captures whose scope is not
  "kernel" are counted per host. `fleet.kernels` lists every kernel-scope boot_id, shared or not.
- report.json lists hosts in manifest order (the HTML sorts them worst first). A manifest `command`
  given as a list of words is joined into one shell-quoted string.
- A host document that breaks the contract in a field the report uses gives that host status "failed"
  with an error naming the file and the field; a snapshot's own `errors` are notes, not failures.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
HOST_STATUSES = ("ok", "unreachable", "failed")
CAPTURE_STATUSES = ("ok", "unavailable", "failed")
COUNTER_SECTIONS = ("interfaces", "protocols", "softnet", "qdiscs", "sockets", "firewall")

PROTOCOL_GAUGES = frozenset(
    {"IpForwarding", "IpDefaultTTL", "TcpRtoAlgorithm", "TcpRtoMin", "TcpRtoMax", "TcpMaxConn", "TcpCurrEstab"}
)
ETHTOOL_GAUGES = frozenset({"peer_ifindex"})
SOFTNET_NOT_COUNTERS = frozenset({"cpu", "backlog_len"})
QDISC_GAUGES = ("backlog", "qlen")
SOFTNET_ALWAYS = ("dropped", "time_squeeze")
FIREWALL_COUNTERS = ("packets", "bytes")

Counters = dict[str, int]
JSON = dict[str, Any]


class RunError(Exception):
    """A fatal problem with the run directory itself (missing or corrupt manifest.json)."""


class HostDataError(ValueError):
    """A host document does not follow the contract; the message names the field and the problem."""


@dataclass
class HostRecord:
    """One host of a run: its document's parts, or the reason it could not be read."""

    host: str
    file: str
    status: str
    error: str | None = None
    before: JSON | None = None
    capture: JSON | None = None
    after: JSON | None = None
    capabilities: JSON | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class Run:
    """A loaded run directory: the manifest, its hosts in manifest order, and non-fatal warnings."""

    run_dir: Path
    manifest: JSON
    hosts: list[HostRecord]
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# Reading and validating documents


def _kind_of(value: Any) -> str:
    """The JSON name of a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def read_json(path: Path, label: str) -> Any:
    """Parse one JSON file; raise ValueError naming `label` and the problem (missing, truncated, ...)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{label}: file is missing") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{label}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ValueError(f"{label}: cannot be read ({exc.strerror or exc})") from None
    if not text.strip():
        raise ValueError(f"{label}: file is empty")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        # An unterminated string is reported where it starts, but it too means the text ran out.
        ends_early = exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string")
        hint = " (the file ends early: truncated?)" if ends_early else ""
        raise ValueError(f"{label}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}{hint}") from None
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"{label}: not valid JSON: {exc}") from None


def _field(obj: Mapping[str, Any], key: str, where: str) -> Any:
    """obj[key], or HostDataError naming the dotted field."""
    if key not in obj:
        raise HostDataError(f"required field '{where}{key}' is missing")
    return obj[key]


def _typed(value: Any, types: type | tuple[type, ...], expected: str, where: str, nullable: bool = False) -> Any:
    """Check a value's JSON type (booleans are never numbers)."""
    if value is None and nullable:
        return value
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise HostDataError(f"'{where}' is a boolean, expected {expected}")
    if not isinstance(value, types):
        raise HostDataError(f"'{where}' is {_kind_of(value)}, expected {expected}")
    return value


def _object(obj: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    return _typed(_field(obj, key, where), dict, "an object", where + key)


def _check_version(doc: Mapping[str, Any], where: str) -> None:
    version = _field(doc, "schema_version", where)
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise HostDataError(f"{where}schema_version {json.dumps(version)} is not supported (this dropscope reads 1)")


def _check_counters(values: Any, where: str) -> None:
    _typed(values, dict, "an object", where)
    for name, value in values.items():
        _typed(value, int, "an integer", f"{where}.{name}")


def validate_snapshot(snapshot: Any, where: str) -> None:
    """Raise HostDataError if a snapshot (at dotted path `where`) breaks the contract in a field we use."""
    _typed(snapshot, dict, "an object", where)
    prefix = where + "."
    _check_version(snapshot, prefix)
    system = _object(snapshot, "system", prefix)
    _typed(_field(system, "kernel_release", prefix + "system."), str, "a string", prefix + "system.kernel_release")
    _typed(_field(system, "boot_id", prefix + "system."), str, "a string", prefix + "system.boot_id")
    time = _object(snapshot, "time", prefix)
    monotonic = _typed(_field(time, "monotonic", prefix + "time."), (int, float), "a number", prefix + "time.monotonic")
    if not math.isfinite(monotonic):
        raise HostDataError(f"'{prefix}time.monotonic' is not a finite number")

    for name, interface in _object(snapshot, "interfaces", prefix).items():
        at = f"{prefix}interfaces.{name}"
        _typed(interface, dict, "an object", at)
        _check_counters(_field(interface, "statistics", at + "."), at + ".statistics")
        if interface.get("ethtool") is not None:
            _check_counters(interface["ethtool"], at + ".ethtool")
    _check_counters(_field(snapshot, "protocols", prefix), prefix + "protocols")
    for index, cpu in enumerate(_typed(_field(snapshot, "softnet", prefix), list, "a list", prefix + "softnet")):
        _check_counters(cpu, f"{prefix}softnet[{index}]")
    for key, qdisc in _object(snapshot, "qdiscs", prefix).items():
        at = f"{prefix}qdiscs.{key}"
        _typed(qdisc, dict, "an object", at)
        for name in ("dropped", *QDISC_GAUGES):
            if name in qdisc:
                _typed(qdisc[name], int, "an integer", f"{at}.{name}")
    sockets = _typed(_field(snapshot, "sockets", prefix), list, "a list", prefix + "sockets")
    for index, socket in enumerate(sockets):
        at = f"{prefix}sockets[{index}]"
        _typed(socket, dict, "an object", at)
        _typed(_field(socket, "proto", at + "."), str, "a string", at + ".proto")
        _typed(_field(socket, "local_address", at + "."), str, "a string", at + ".local_address")
        _typed(_field(socket, "local_port", at + "."), int, "an integer", at + ".local_port")
        _typed(_field(socket, "drops", at + "."), int, "an integer", at + ".drops")
        _typed(socket.get("inode"), int, "an integer", at + ".inode", nullable=True)
    for key, rule in _object(snapshot, "firewall", prefix).items():
        at = f"{prefix}firewall.{key}"
        _typed(rule, dict, "an object", at)
        for name in FIREWALL_COUNTERS:
            _typed(_field(rule, name, at + "."), int, "an integer", f"{at}.{name}")
    if snapshot.get("errors") is not None:
        _typed(snapshot["errors"], list, "a list", prefix + "errors")


def validate_capture(capture: Any, where: str = "capture") -> None:
    """Raise HostDataError if a capture breaks the contract in a field we use."""
    _typed(capture, dict, "an object", where)
    prefix = where + "."
    _check_version(capture, prefix)
    _typed(_field(capture, "backend", prefix), str, "a string", prefix + "backend")
    status = _field(capture, "status", prefix)
    if status not in CAPTURE_STATUSES:
        raise HostDataError(f"'{prefix}status' is {json.dumps(status)}, expected one of {', '.join(CAPTURE_STATUSES)}")
    if status == "ok":
        _typed(_field(capture, "scope", prefix), str, "a string", prefix + "scope")
        _typed(_field(capture, "boot_id", prefix), str, "a string", prefix + "boot_id")
        _typed(_field(capture, "events", prefix), int, "an integer", prefix + "events")
        _typed(_field(capture, "lost_events", prefix), int, "an integer", prefix + "lost_events")
        _typed(_field(capture, "duration_s", prefix), (int, float), "a number", prefix + "duration_s", nullable=True)
        _field(capture, "drops", prefix)
    for name in ("events", "lost_events"):
        _typed(capture.get(name), int, "an integer", prefix + name, nullable=True)
    drops = _typed(capture.get("drops") or [], list, "a list", prefix + "drops")
    for index, drop in enumerate(drops):
        at = f"{prefix}drops[{index}]"
        _typed(drop, dict, "an object", at)
        _typed(_field(drop, "reason", at + "."), str, "a string", at + ".reason")
        _typed(_field(drop, "location", at + "."), str, "a string", at + ".location")
        _typed(drop.get("protocol"), str, "a string", at + ".protocol", nullable=True)
        _typed(_field(drop, "count", at + "."), int, "an integer", at + ".count")
    other = capture.get("other")
    if other is not None:
        _typed(other, dict, "an object", prefix + "other")
        _typed(other.get("count"), int, "an integer", prefix + "other.count", nullable=True)


def validate_host_document(document: Any) -> None:
    """Raise HostDataError if a hosts/*.json document breaks the contract in a field we use."""
    if not isinstance(document, dict):
        raise HostDataError(f"the document is {_kind_of(document)}, expected an object")
    _check_version(document, "")
    kind = _field(document, "kind", "")
    if kind != "dropscope-host":
        raise HostDataError(f"'kind' is {json.dumps(kind)}, expected \"dropscope-host\"")
    host = _typed(_field(document, "host", ""), str, "a string", "host")
    if not host:
        raise HostDataError("'host' is empty")
    status = _field(document, "status", "")
    if status not in HOST_STATUSES:
        raise HostDataError(f"'status' is {json.dumps(status)}, expected one of {', '.join(HOST_STATUSES)}")
    _typed(document.get("error"), str, "a string", "error", nullable=True)
    for part in ("before", "after"):
        if document.get(part) is not None:
            validate_snapshot(document[part], part)
        elif status == "ok":
            raise HostDataError(f"status is ok but '{part}' is missing or null")
    if document.get("capture") is not None:
        validate_capture(document["capture"])
    elif status == "ok":
        raise HostDataError("status is ok but 'capture' is missing or null")


def _snapshot_notes(snapshot: JSON | None, part: str) -> list[str]:
    """Non-fatal collection problems a snapshot reports about itself."""
    notes = []
    for entry in (snapshot or {}).get("errors") or []:
        if isinstance(entry, dict):
            notes.append(f"{part}: {entry.get('source', '?')}: {entry.get('error', '?')}")
        else:
            notes.append(f"{part}: {entry}")
    return notes


def _capture_notes(capture: JSON | None) -> list[str]:
    notes = []
    if not capture:
        return notes
    other = capture.get("other") or {}
    if other.get("count"):
        notes.append(
            f"capture: {other['count']} drops in {other.get('groups', '?')} smaller groups beyond the capture's "
            "top list are not itemised and not counted in the totals"
        )
    if capture.get("truncated"):
        notes.append("capture: the capture was truncated; counts are a lower bound")
    if capture.get("status") == "ok" and capture.get("lost_events"):
        notes.append(f"capture: {capture['lost_events']} events were lost; counts are a lower bound")
    return notes


def _load_manifest(run_dir: Path) -> JSON:
    label = str(run_dir / "manifest.json")
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: not a directory (expected a run directory with manifest.json)")
    try:
        manifest = read_json(run_dir / "manifest.json", label)
    except ValueError as exc:
        raise RunError(str(exc)) from None
    if not isinstance(manifest, dict):
        raise RunError(f"{label}: is {_kind_of(manifest)}, expected an object")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise RunError(f"{label}: schema_version {json.dumps(version)} is not supported (this dropscope reads 1)")
    if manifest.get("kind") != "dropscope-run":
        raise RunError(f"{label}: 'kind' is {json.dumps(manifest.get('kind'))}, expected \"dropscope-run\"")
    if not isinstance(manifest.get("hosts"), list):
        raise RunError(f"{label}: 'hosts' is {_kind_of(manifest.get('hosts'))}, expected a list")
    return manifest


def _load_host(run_dir: Path, index: int, entry: Any) -> HostRecord:
    """Read one manifest host entry's file; a bad file gives a failed record, never an exception."""
    if not isinstance(entry, dict):
        return HostRecord(f"hosts[{index}]", "", "failed", f"manifest.json: hosts[{index}] is {_kind_of(entry)}")
    name = entry.get("host") if isinstance(entry.get("host"), str) and entry.get("host") else f"hosts[{index}]"
    file = entry.get("file")
    if not isinstance(file, str) or not file:
        return HostRecord(name, "", "failed", f"manifest.json: hosts[{index}] has no 'file'")
    path = (run_dir / file).resolve()
    if not path.is_relative_to(run_dir.resolve()):
        return HostRecord(name, file, "failed", f"manifest.json: hosts[{index}] file {file!r} is outside the run")
    try:
        document = read_json(path, file)
        validate_host_document(document)
    except HostDataError as exc:
        return HostRecord(name, file, "failed", f"{file}: {exc}")
    except ValueError as exc:
        error = str(exc)
        if entry.get("status") in ("unreachable", "failed") and entry.get("error"):
            error += f" (manifest: {entry['status']}: {entry['error']})"
        return HostRecord(name, file, "failed", error)
    record = HostRecord(
        host=document["host"],
        file=file,
        status=document["status"],
        error=document.get("error"),
        before=document.get("before"),
        capture=document.get("capture"),
        after=document.get("after"),
        capabilities=document.get("capabilities") if isinstance(document.get("capabilities"), dict) else None,
    )
    if isinstance(entry.get("host"), str) and entry["host"] != record.host:
        record.notes.append(f"manifest.json names this host {entry['host']!r}; {file} says {record.host!r}")
    record.notes += _snapshot_notes(record.before, "before") + _snapshot_notes(record.after, "after")
    record.notes += _capture_notes(record.capture)
    return record


def load_run(run_dir: str | Path) -> Run:
    """Read manifest.json and every host file it lists. Raises RunError only for a bad manifest."""
    run_dir = Path(run_dir)
    manifest = _load_manifest(run_dir)
    hosts = [_load_host(run_dir, index, entry) for index, entry in enumerate(manifest["hosts"])]
    run = Run(run_dir=run_dir, manifest=manifest, hosts=hosts)
    run.warnings += run_warnings(run_dir, [host.file for host in hosts], [host.host for host in hosts])
    return run


def run_warnings(run_dir: Path, files: list[str], names: list[str]) -> list[str]:
    """Stray host files and hosts listed twice."""
    warnings = []
    listed = {(run_dir / file).resolve() for file in files if file}
    hosts_dir = run_dir / "hosts"
    if hosts_dir.is_dir():
        for path in sorted(hosts_dir.glob("*.json")):
            if path.resolve() not in listed:
                warnings.append(f"hosts/{path.name} is not listed in manifest.json and was ignored")
    seen: dict[str, int] = {}
    for name in names:
        seen[name] = seen.get(name, 0) + 1
    for name, count in seen.items():
        if count > 1:
            warnings.append(f"host {name!r} appears {count} times in this run")
    return warnings


def rule_texts(record: HostRecord | None) -> dict[str, str]:
    """Firewall rule key → rule text, from the host's snapshots (report.json carries only the counters)."""
    texts: dict[str, str] = {}
    for snapshot in (record.before, record.after) if record is not None else ():
        for key, rule in ((snapshot or {}).get("firewall") or {}).items():
            if isinstance(rule, dict) and isinstance(rule.get("rule"), str):
                texts[key] = rule["rule"]
    return texts


@dataclass
class StreamedReport:
    """A report built host by host: report.json, plus per host (run order) its notes and rule texts."""

    report: JSON
    notes: list[list[str]]
    rule_texts: list[dict[str, str]]
    warnings: list[str]


def build_report_streaming(run_dir: str | Path, knowledge: Any = None) -> StreamedReport:
    """report.json for a run, reading one host file at a time and keeping only its report parts.

    The same document as `build_report(load_run(run_dir))`, without holding every snapshot in memory.
    """
    from dropscope.findings import finish_findings, host_findings
    from dropscope.knowledge_base import default_knowledge

    knowledge = knowledge or default_knowledge()
    run_dir = Path(run_dir)
    manifest = _load_manifest(run_dir)
    hosts: list[JSON] = []
    notes: list[list[str]] = []
    texts: list[dict[str, str]] = []
    files: list[str] = []
    boot_ids: list[str | None] = []
    for index, entry in enumerate(manifest["hosts"]):
        record = _load_host(run_dir, index, entry)
        host = host_report(record)
        texts.append(rule_texts(record))
        host["findings"] = host_findings(host, texts[-1], knowledge)
        hosts.append(host)
        notes.append(record.notes)
        files.append(record.file)
        capture = record.capture or {}
        boot_ids.append(capture.get("boot_id") if capture.get("status") == "ok" else None)
    report = {
        "schema_version": SCHEMA_VERSION,
        "run": run_summary(manifest),
        "fleet": fleet_summary(hosts, boot_ids),
        "hosts": hosts,
    }
    finish_findings(report)
    return StreamedReport(report, notes, texts, run_warnings(run_dir, files, [host["host"] for host in hosts]))


# --------------------------------------------------------------------------------------------------
# Counter arithmetic


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
                deltas[f"{gauge}_now"] = qdisc[gauge]
        if deltas:
            result[key] = deltas
        resets += _reset_entries("qdiscs", key, qdisc_resets)
    return result, resets, appeared, vanished


def _sockets_deltas(before: list[JSON], after: list[JSON]) -> tuple[dict[str, Counters], list[JSON]]:
    """Drops per socket key; sockets matched by inode, summed per key, absent before = 0 before."""
    before_drops = {(socket_key(s), s.get("inode")): s["drops"] for s in before}
    totals: dict[str, int] = {}
    resets: list[JSON] = []
    for socket in after:
        key = socket_key(socket)
        before_value = before_drops.get((key, socket.get("inode")), 0)
        if socket["drops"] < before_value:
            reset = {"counter": "drops", "before": before_value, "after": socket["drops"]}
            resets.append({"section": "sockets", "name": key, **reset})
        elif socket["drops"] > before_value:
            totals[key] = totals.get(key, 0) + socket["drops"] - before_value
    return {key: {"drops": drops} for key, drops in totals.items()}, resets


def _firewall_deltas(before: JSON, after: JSON) -> tuple[dict[str, Counters], list[JSON]]:
    """packets/bytes per rule; a rule absent before was created during the run and counts from 0."""
    result: dict[str, Counters] = {}
    resets: list[JSON] = []
    for key, rule in after.items():
        previous = before.get(key) or dict.fromkeys(FIREWALL_COUNTERS, 0)
        deltas, rule_resets = counter_deltas(
            {k: previous[k] for k in FIREWALL_COUNTERS}, {k: rule[k] for k in FIREWALL_COUNTERS}
        )
        if deltas:
            result[key] = deltas
        resets += _reset_entries("firewall", key, rule_resets)
    return result, resets


def interval_seconds(before: JSON, after: JSON) -> float | None:
    """Seconds between two snapshots by their monotonic clocks; None across a reboot or if not positive."""
    if before["system"]["boot_id"] != after["system"]["boot_id"]:
        return None
    interval = after["time"]["monotonic"] - before["time"]["monotonic"]
    return round(interval, 6) if interval > 0 else None


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

    counters = result["counters"]
    resets: list[JSON] = []
    counters["interfaces"], interface_resets, appeared, vanished = _interfaces_deltas(
        before["interfaces"], after["interfaces"]
    )
    resets += interface_resets
    result["appeared"]["interfaces"], result["vanished"]["interfaces"] = appeared, vanished
    counters["protocols"], protocol_resets = _protocols_deltas(before["protocols"], after["protocols"])
    resets += protocol_resets
    counters["softnet"], softnet_resets = _softnet_deltas(before["softnet"], after["softnet"])
    resets += softnet_resets
    counters["qdiscs"], qdisc_resets, appeared, vanished = _qdiscs_deltas(before["qdiscs"], after["qdiscs"])
    resets += qdisc_resets
    result["appeared"]["qdiscs"], result["vanished"]["qdiscs"] = appeared, vanished
    counters["sockets"], socket_resets = _sockets_deltas(before["sockets"], after["sockets"])
    resets += socket_resets
    counters["firewall"], firewall_resets = _firewall_deltas(before["firewall"], after["firewall"])
    resets += firewall_resets
    result["resets"] = resets
    return result


# --------------------------------------------------------------------------------------------------
# Captures and the fleet


def group_drops(drops: Iterable[Mapping[str, Any]]) -> list[JSON]:
    """Drop groups summed by reason × location × protocol × port (offsets merged), largest first.

    `port` (the local L4 port, from backends that read packet headers) is kept only where known.
    """
    totals: dict[tuple[str, str, str | None, int | None], int] = {}
    for drop in drops:
        key = (drop["reason"], drop["location"], drop.get("protocol"), drop.get("port"))
        totals[key] = totals.get(key, 0) + drop["count"]
    ordered = sorted(totals.items(),
                     key=lambda item: (-item[1], item[0][0], item[0][1], item[0][2] or "", item[0][3] or 0))
    groups = []
    for (reason, location, protocol, port), count in ordered:
        if count:
            group = {"reason": reason, "location": location, "protocol": protocol, "count": count}
            if port is not None:
                group["port"] = port
            groups.append(group)
    return groups


def capture_summary(capture: JSON | None) -> JSON | None:
    """The report.json `capture` part of a host."""
    if capture is None:
        return None
    return {
        "backend": capture.get("backend"),
        "status": capture.get("status"),
        "reason": capture.get("reason"),
        "scope": capture.get("scope"),
        "duration_s": capture.get("duration_s"),
        "events": capture.get("events"),
        "lost_events": capture.get("lost_events"),
        "drops": group_drops(capture.get("drops") or []),
    }


def host_drop_total(host_report: Mapping[str, Any]) -> int:
    """Sum of a report host's itemised capture drops (0 without a capture)."""
    capture = host_report.get("capture") or {}
    return sum(drop["count"] for drop in capture.get("drops") or [])


def _ranked(totals: Mapping[str, int], key: str) -> list[JSON]:
    return [{key: name, "count": count} for name, count in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))]


def fleet_summary(host_reports: list[JSON], capture_boot_ids: list[str | None]) -> JSON:
    """Fleet part of report.json. `capture_boot_ids[i]` is host i's capture boot_id (None if no ok capture).

    Captures with scope "kernel" and the same boot_id saw the same drops: they are counted once, from the
    host with the most events (ties: the first in run order).
    """
    fleet: JSON = {"hosts": len(host_reports)}
    for status in HOST_STATUSES:
        fleet[status] = sum(1 for host in host_reports if host["status"] == status)

    kernels: dict[str, list[int]] = {}
    counted: list[int] = []
    for index, host in enumerate(host_reports):
        capture = host.get("capture")
        if not capture or capture.get("status") != "ok":
            continue
        boot_id = capture_boot_ids[index]
        if capture.get("scope") == "kernel" and boot_id:
            kernels.setdefault(boot_id, []).append(index)
        else:
            counted.append(index)
    kernel_entries = []
    for boot_id, members in kernels.items():
        chosen = max(members, key=lambda i: (host_reports[i]["capture"].get("events") or 0, -i))
        counted.append(chosen)
        kernel_entries.append(
            {
                "boot_id": boot_id,
                "hosts": [host_reports[i]["host"] for i in members],
                "counted_from": host_reports[chosen]["host"],
            }
        )

    reasons: dict[str, int] = {}
    locations: dict[str, int] = {}
    total = 0
    for index in sorted(counted):
        for drop in host_reports[index]["capture"]["drops"]:
            total += drop["count"]
            reasons[drop["reason"]] = reasons.get(drop["reason"], 0) + drop["count"]
            locations[drop["location"]] = locations.get(drop["location"], 0) + drop["count"]
    fleet["drops"] = total
    fleet["kernels"] = kernel_entries
    fleet["reasons"] = _ranked(reasons, "reason")
    fleet["locations"] = _ranked(locations, "location")
    return fleet


def host_report(record: HostRecord) -> JSON:
    """The report.json entry of one host."""
    latest = record.after or record.before
    if latest is not None:
        kernel = {"release": latest["system"]["kernel_release"], "boot_id": latest["system"]["boot_id"]}
    else:
        kernel = {"release": None, "boot_id": (record.capture or {}).get("boot_id")}
    report: JSON = {
        "host": record.host,
        "status": record.status,
        "error": record.error,
        "kernel": kernel,
        "interval_s": None,
        "capture": capture_summary(record.capture),
        "counters": {},
        "resets": [],
        "appeared": {"interfaces": [], "qdiscs": []},
        "vanished": {"interfaces": [], "qdiscs": []},
        "capabilities": capabilities_summary(record.capabilities),
    }
    if record.before is not None and record.after is not None:
        report.update(snapshot_deltas(record.before, record.after))
    return report


def capabilities_summary(capabilities: JSON | None) -> JSON | None:
    """The report.json `capabilities` part: which capture backend was chosen and why the others were not."""
    if not capabilities:
        return None
    ladder = [
        {"backend": rung.get("backend"), "available": bool(rung.get("available")), "reason": rung.get("reason")}
        for rung in capabilities.get("ladder") or []
        if isinstance(rung, dict)
    ]
    return {"chosen": capabilities.get("chosen"), "ladder": ladder}


def run_summary(manifest: Mapping[str, Any]) -> JSON:
    """The report.json `run` part."""
    command = manifest.get("command")
    if isinstance(command, list) and all(isinstance(word, str) for word in command):
        command = shlex.join(command)  # report.json's command is one string
    return {
        "run_id": manifest.get("run_id"),
        "started": manifest.get("started"),
        "duration_s": manifest.get("duration_s"),
        "command": command,
        "parameters": manifest.get("parameters") or {},
    }


def build_report(run: Run, knowledge: Any = None) -> JSON:
    """The whole report.json document (hosts in manifest order), with findings and verdicts.

    `knowledge` is a dropscope.knowledge_base.KnowledgeBase (default: the shipped one).
    """
    from dropscope.findings import add_findings
    from dropscope.knowledge_base import default_knowledge

    hosts = [host_report(record) for record in run.hosts]
    boot_ids = [
        (record.capture or {}).get("boot_id") if (record.capture or {}).get("status") == "ok" else None
        for record in run.hosts
    ]
    report = {
        "schema_version": SCHEMA_VERSION,
        "run": run_summary(run.manifest),
        "fleet": fleet_summary(hosts, boot_ids),
        "hosts": hosts,
    }
    add_findings(report, [rule_texts(record) for record in run.hosts], knowledge or default_knowledge())
    return report


_DROPISH = re.compile(
    r"drop|discard|miss|err|fail|overflow|overrun|noport|squeeze|overlimit|prune|fifo|lost|limit",
    re.IGNORECASE,
)


def is_drop_counter(name: str) -> bool:
    """Whether a counter's name says it counts lost/dropped/erroneous packets (for highlighting)."""
    return bool(_DROPISH.search(name))
