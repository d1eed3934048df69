"""Read and validate a run directory: manifest.json and the host documents it lists.

The data contract is docs/run-format.md; `SCHEMA_VERSION` is the one place that says which
schema_version this dropscope reads. Nothing here computes anything: the next steps are
dropscope.deltas (counter arithmetic), dropscope.findings and dropscope.build (the one builder).

- A bad manifest is fatal (`RunError`). A host document that breaks the contract in a field the report
  uses gives that host status "failed" with an error naming the file and the field (`HostDataError`);
  a snapshot's own `errors` are notes, not failures.
- Host files are read one at a time (`load_host`), so a large fleet never sits in memory at once.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dropscope.sampling import one_in

SCHEMA_VERSION = 1
HOST_STATUSES = ("ok", "unreachable", "failed")
CAPTURE_STATUSES = ("ok", "unavailable", "failed")
QDISC_GAUGES = ("backlog", "qlen")
FIREWALL_COUNTERS = ("packets", "bytes")
CONNTRACK_GAUGES = ("count", "max", "buckets")  # levels of the conntrack table, not counters

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
    knobs: JSON | None = None  # drop_capture's knobs: sysctl values, interfaces, sockets and their owners
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# Reading and validating documents

_KINDS: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"), (list, "a list"),
    (dict, "an object"),
)  # fmt: skip


def _kind_of(value: Any) -> str:
    """The JSON name of a value's type, for error messages.

    >>> _kind_of(None), _kind_of(True), _kind_of(3), _kind_of([1])
    ('null', 'a boolean', 'an integer', 'a list')
    """
    if value is None:
        return "null"
    return next((name for kind, name in _KINDS if isinstance(value, kind)), type(value).__name__)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)  # made once: json.loads makes one per call


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
        return _DECODER.decode(text)
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
        raise HostDataError(
            f"{where}schema_version {json.dumps(version)} is not supported (this dropscope reads {SCHEMA_VERSION})"
        )


_INT_ONLY = {int}


def _check_counters(values: Any, where: str) -> None:
    _typed(values, dict, "an object", where)
    if set(map(type, values.values())) <= _INT_ONLY:
        return  # the usual case, checked in one pass without a message per counter (a host has hundreds)
    for name, value in values.items():
        _typed(value, int, "an integer", f"{where}.{name}")


class _Absent:
    """The value `_check_items` sees for a field an item lacks."""


_ABSENT = _Absent()
_STRING, _INTEGER = frozenset({str}), frozenset({int})
_STRING_OR_NULL, _INTEGER_OR_NULL = frozenset({str, type(None), _Absent}), frozenset({int, type(None), _Absent})
_INTEGER_IF_PRESENT = frozenset({int, _Absent})
# The fields of the items a host has dozens of, each → the types it may have (_Absent: it may be missing).
SOCKET_FIELDS = {"proto": _STRING, "local_address": _STRING, "local_port": _INTEGER, "drops": _INTEGER,
                 "inode": _INTEGER_OR_NULL}  # fmt: skip
FIREWALL_FIELDS = dict.fromkeys(FIREWALL_COUNTERS, _INTEGER)
QDISC_FIELDS = dict.fromkeys(("dropped", *QDISC_GAUGES), _INTEGER_IF_PRESENT)
DROP_FIELDS = {"reason": _STRING, "location": _STRING, "protocol": _STRING_OR_NULL, "count": _INTEGER}
_EXPECTED = {str: "a string", int: "an integer"}  # the field types' names in messages


def _check_items(items: dict[str, Any] | list[Any], fields: Mapping[str, frozenset[type]], where: str) -> None:
    """Raise HostDataError if one of ITEMS (an object's members or a list's, at WHERE) is not an object whose
    FIELDS have one of their types. All are first checked in one pass without a message per field (the usual
    case: they fit); else they are checked field by field, and the first problem is named."""
    named = isinstance(items, dict)
    if all(type(item) is dict and all(type(item.get(name, _ABSENT)) in kinds for name, kinds in fields.items())
           for item in (items.values() if named else items)):  # fmt: skip
        return
    for key, item in items.items() if named else enumerate(items):
        at = f"{where}.{key}" if named else f"{where}[{key}]"
        _typed(item, dict, "an object", at)
        for name, kinds in fields.items():
            if _Absent not in kinds:
                _field(item, name, at + ".")
            elif name not in item:
                continue
            kind = next(kind for kind in _EXPECTED if kind in kinds)
            _typed(item[name], kind, _EXPECTED[kind], f"{at}.{name}", nullable=type(None) in kinds)


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
    _check_items(_object(snapshot, "qdiscs", prefix), QDISC_FIELDS, prefix + "qdiscs")
    sockets = _typed(_field(snapshot, "sockets", prefix), list, "a list", prefix + "sockets")
    _check_items(sockets, SOCKET_FIELDS, prefix + "sockets")
    _check_items(_object(snapshot, "firewall", prefix), FIREWALL_FIELDS, prefix + "firewall")
    conntrack = snapshot.get("conntrack")  # null where nf_conntrack is not loaded; absent from older snapshots
    if conntrack is not None:
        _typed(conntrack, dict, "an object", prefix + "conntrack")
        _check_counters(_field(conntrack, "stat", prefix + "conntrack."), prefix + "conntrack.stat")
        for name in CONNTRACK_GAUGES:
            _typed(conntrack.get(name), int, "an integer", f"{prefix}conntrack.{name}", nullable=True)
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
    for name in ("events", "lost_events", "unitemised"):
        _typed(capture.get(name), int, "an integer", prefix + name, nullable=True)
    sampled = _typed(capture.get("sample_one_in"), int, "an integer", prefix + "sample_one_in", nullable=True)
    if sampled is not None and sampled < 1:
        raise HostDataError(f"'{prefix}sample_one_in' is {sampled}, expected 1 or more (1 in how many drops counted)")
    drops = _typed(capture.get("drops") or [], list, "a list", prefix + "drops")
    _check_items(drops, DROP_FIELDS, prefix + "drops")
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
    if capture.get("unitemised"):
        notes.append(
            f"capture: {capture['unitemised']} drops are counted without their L4 protocol and port (bpftrace's"
            " per-port map was full, as under a port scan); every count by reason and location is exact"
        )
    sampled = one_in(capture)
    if sampled > 1:
        notes.append(
            f"capture: the rate guard counted 1 in {sampled} drops, chosen at random in the kernel:"
            f" counts are estimates (a count C is within 2·√(C·{sampled - 1}) of the true count 19 times in 20)"
        )
    if capture.get("status") == "ok" and capture.get("lost_events"):
        notes.append(f"capture: {capture['lost_events']} events were lost; counts are a lower bound")
    locations = capture.get("locations")
    if isinstance(locations, dict) and locations.get("why"):
        unnamed = (locations.get("hashed_events") or 0) + (locations.get("unresolved_events") or 0)
        notes.append(f"capture: {unnamed} drops have no location: {locations['why']}")
    return notes


def load_manifest(run_dir: Path) -> JSON:
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
        raise RunError(
            f"{label}: schema_version {json.dumps(version)} is not supported (this dropscope reads {SCHEMA_VERSION})"
        )
    if manifest.get("kind") != "dropscope-run":
        raise RunError(f"{label}: 'kind' is {json.dumps(manifest.get('kind'))}, expected \"dropscope-run\"")
    if not isinstance(manifest.get("hosts"), list):
        raise RunError(f"{label}: 'hosts' is {_kind_of(manifest.get('hosts'))}, expected a list")
    return manifest


@functools.lru_cache(maxsize=16)
def _resolved(run_dir: Path) -> Path:
    """RUN_DIR's (or its hosts directory's) real path, resolved once per run rather than once per host."""
    return run_dir.resolve()


def _real_path(path: Path) -> Path:
    """PATH resolved, its directory once per run (every host file sits in hosts/: one lstat per host rather
    than one per component)."""
    if path.name in ("", ".", "..") or os.path.islink(path):
        return path.resolve()
    return _resolved(path.parent) / path.name


def load_host(run_dir: Path, index: int, entry: Any) -> HostRecord:
    """Read one manifest host entry's file; a bad file gives a failed record, never an exception."""
    if not isinstance(entry, dict):
        return HostRecord(f"hosts[{index}]", "", "failed", f"manifest.json: hosts[{index}] is {_kind_of(entry)}")
    name = entry.get("host") if isinstance(entry.get("host"), str) and entry.get("host") else f"hosts[{index}]"
    file = entry.get("file")
    if not isinstance(file, str) or not file:
        return HostRecord(name, "", "failed", f"manifest.json: hosts[{index}] has no 'file'")
    path = _real_path(run_dir / file)
    if not path.is_relative_to(_resolved(run_dir)):
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
        knobs=document.get("knobs") if isinstance(document.get("knobs"), dict) else None,
    )
    capture_status = (record.capture or {}).get("status")
    if record.status == "ok" and record.capture is not None and capture_status != "ok":
        # A capture that did not run never leaves its host ok. run_record writes such hosts as failed;
        # a run directory from before that rule (or edited by hand) gets the same verdict here.
        record.status = "failed"
        record.error = "capture failed: %s %s: %s" % (
            record.capture.get("backend") or "capture",
            capture_status or "without a status",
            record.capture.get("reason") or "no reason given",
        )
    if isinstance(entry.get("host"), str) and entry["host"] != record.host:
        record.notes.append(f"manifest.json names this host {entry['host']!r}; {file} says {record.host!r}")
    record.notes += _snapshot_notes(record.before, "before") + _snapshot_notes(record.after, "after")
    record.notes += _capture_notes(record.capture)
    return record


def run_warnings(run_dir: Path, files: list[str], names: list[str]) -> list[str]:
    """Stray host files and hosts listed twice."""
    warnings = []
    # Compared by name first; only a file no listed name matches is compared by its real path (symlinks).
    # (Names as strings: a Path object per host costs more than the rest of this at 10,000 hosts.)
    named = {os.path.normpath(os.path.join(run_dir, file)) for file in files if file}
    listed: set[Path] | None = None
    hosts_dir = run_dir / "hosts"
    if hosts_dir.is_dir():
        for name in sorted(name for name in os.listdir(hosts_dir) if name.endswith(".json")):  # glob("*.json")
            path = os.path.join(hosts_dir, name)
            if os.path.normpath(path) in named:
                continue
            if listed is None:
                listed = {(run_dir / file).resolve() for file in files if file}
            if Path(path).resolve() not in listed:
                warnings.append(f"hosts/{name} is not listed in manifest.json and was ignored")
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


def qdisc_containers(record: HostRecord | None) -> dict[str, str]:
    """Qdisc key → the key of the classful qdisc it sits in (same device, the handle of its parent class's
    major), from the host's latest snapshot. A classful qdisc counts its children's drops as its own too (tbf
    2: dropped 194 above its pfifo 20: dropped 194, tests/data/tc_qdisc_text_iproute2_4.14.txt; mq sums its
    queues' qdiscs).

    >>> snapshot = {"qdiscs": {"eth0 mq 1:": {"dev": "eth0", "handle": "1:", "parent": "root"},
    ...     "eth0 pfifo_fast 0: parent 1:1": {"dev": "eth0", "handle": "0:", "parent": "1:1"},
    ...     "eth0 pfifo_fast 0: parent 1:2": {"dev": "eth0", "handle": "0:", "parent": "1:2"}}}
    >>> record = HostRecord("h", "h.json", "ok", after=snapshot)
    >>> qdisc_containers(record)["eth0 pfifo_fast 0: parent 1:2"]
    'eth0 mq 1:'
    """
    snapshot = (record.after or record.before) if record is not None else None
    qdiscs = {key: q for key, q in ((snapshot or {}).get("qdiscs") or {}).items() if isinstance(q, dict)}
    by_handle: dict[tuple[Any, str], list[str]] = {}  # (dev, handle) → keys (mq's children share one handle)
    for key, qdisc in qdiscs.items():
        by_handle.setdefault((qdisc.get("dev"), _handle(qdisc.get("handle"))), []).append(key)
    containers: dict[str, str] = {}
    for key, qdisc in qdiscs.items():
        parent = str(qdisc.get("parent") or "")
        if ":" not in parent or parent == "root":
            continue
        major = _handle(parent)
        found = [
            other
            for other in by_handle.get((qdisc.get("dev"), major), [])
            if other != key and _handle(qdiscs[other].get("parent")) != major  # a sibling sits in it too
        ]
        if len(found) == 1:
            containers[key] = found[0]
    return containers


def _handle(handle: Any) -> str:
    """The major number of a qdisc handle or class id as tc prints it, in one form ("0:", ":" and ":1" all
    give "0:"; "1:2" gives "1:"; hex digits lower case; "root" stays "root:")."""
    major = str(handle or "").split(":")[0].lower().lstrip("0")
    return (major or "0") + ":"
