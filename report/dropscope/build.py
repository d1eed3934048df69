"""The one report builder: a run directory in, the built report (report.json's document) out.

    load (read + validate) -> deltas (counter arithmetic) -> findings (knowledge base) -> ledger -> build
    -> renderers

`build_report(run_dir)` reads host files one at a time and keeps only each host's report parts, so a large
fleet fits in memory. The built report holds everything the renderers (report.json writer, report.html,
compare, check) need: besides counters, captures, findings and verdicts, each host's collection `notes`,
the texts of its firewall rules that moved (`firewall_rules`) and its drop counters (`drop_counters`,
marked by the knowledge base), its `ledger` (drop counters set against the captured reasons, ledger.py)
and each capture group's `direction`; the fleet's ledger totals; the run's `warnings`; and the knowledge
base's background text of every finding (`knowledge`). Renderers read the built report only (and
`counter_items` to walk a host's counters).

Decisions the contract leaves open (kept deliberately simple):

- Fleet totals count the drops of the captures listed in each host's report (the capture's `other`
  remainder is not itemised and so is not counted; the HTML notes it). Captures whose scope is not
  "kernel" are counted per host. `fleet.kernels` lists every kernel-scope boot_id, shared or not.
- report.json lists hosts in manifest order (the HTML sorts them worst first). A manifest `command`
  given as a list of words is joined into one shell-quoted string.
"""

from __future__ import annotations

import fnmatch
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from dropscope.advice import advise_host
from dropscope.cohorts import cohorts, outliers
from dropscope.deltas import GAUGE_SUFFIX, OBJECT_SECTIONS, iter_counters, per_second, snapshot_deltas
from dropscope.findings import (
    decode_reasons,
    drop_counter_rows,
    finding_background,
    finish_host_findings,
    fleet_findings,
    fleet_verdict,
    host_findings,
    shared_kernel_plan,
    sort_findings,
)
from dropscope.knowledge_base import KnowledgeBase, default_knowledge
from dropscope.ledger import LEDGER_PARTS, annotate_directions, fleet_ledger, host_ledger, public_ledger, share_ledger
from dropscope.load import (
    HOST_STATUSES,
    JSON,
    SCHEMA_VERSION,
    HostRecord,
    load_host,
    load_manifest,
    qdisc_containers,
    rule_texts,
    run_warnings,
)
from dropscope.sampling import one_in
from dropscope.who import knob_sysctl_patterns, name_who, usable_knobs

SHARED_NAMES_SHOWN = 8  # host names listed in a "shares kernel with" note
FLEET_CAPTURE_PARTS = ("status", "scope", "events", "drops", "sample_one_in")  # what the fleet pass reads of a capture


def group_drops(drops: Iterable[Mapping[str, Any]]) -> list[JSON]:
    """Drop groups summed by reason × location × protocol × port (offsets merged), largest first.

    `port` (the local L4 port, from backends that read packet headers) is kept only where known.
    """
    totals: dict[tuple[str, str, str | None, int | None], int] = {}
    for drop in drops:
        key = (drop["reason"], drop["location"], drop.get("protocol"), drop.get("port"))
        totals[key] = totals.get(key, 0) + drop["count"]
    ordered = sorted(
        totals.items(), key=lambda item: (-item[1], item[0][0], item[0][1], item[0][2] or "", item[0][3] or 0)
    )
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
    summary = {
        "backend": capture.get("backend"),
        "status": capture.get("status"),
        "reason": capture.get("reason"),
        "scope": capture.get("scope"),
        "duration_s": capture.get("duration_s"),
        "events": capture.get("events"),
        "lost_events": capture.get("lost_events"),
        "drops": group_drops(capture.get("drops") or []),
    }
    # How well counters and capture share one window, and which locations could not be named: only
    # where the host recorded them (runs before the one-window capture have no `window`).
    for key in ("window", "locations", "peers", "subsystem_reasons"):
        if isinstance(capture.get(key), dict):
            summary[key] = capture[key]
    if one_in(capture) > 1:  # the rate guard sampled: the counts are estimates
        summary["sample_one_in"] = capture["sample_one_in"]
    return summary


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


def system_summary(snapshot: Mapping[str, Any] | None) -> JSON:
    """report.json's `system` of a host, from its latest snapshot (None: every fact unknown).

    `nics` lists the interfaces with a driver record (`ethtool -i`), each with its driver, version and
    firmware; snapshots from before `distro` was read give None for it.
    """
    system = (snapshot or {}).get("system") or {}
    nics = {}
    for name, interface in sorted(((snapshot or {}).get("interfaces") or {}).items()):
        driver = interface.get("driver") if isinstance(interface, dict) else None
        if isinstance(driver, dict):
            nics[name] = {key: driver.get(key) for key in ("driver", "version", "firmware_version")}
    return {
        "kernel_release": system.get("kernel_release"),
        "distro": system.get("distro"),
        "python": system.get("python"),
        "nics": nics,
    }


def inventory_groups(manifest: Mapping[str, Any]) -> dict[str, list[str]]:
    """Each host's inventory groups as the manifest records them ({} for a manifest without `groups`)."""
    groups = manifest.get("groups")
    if not isinstance(groups, dict):
        return {}
    return {
        host: sorted(names)
        for host, names in groups.items()
        if isinstance(names, list) and all(isinstance(name, str) for name in names)
    }


def host_report(record: HostRecord, groups: list[str] | None = None) -> JSON:
    """The report.json entry of one host (`groups`: its inventory groups, None when the run does not say)."""
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
        "system": system_summary(latest),
        "groups": groups,
        "interval_s": None,
        "capture": capture_summary(record.capture),
        "counters": {},
        "resets": [],
        "appeared": {"interfaces": [], "qdiscs": []},
        "vanished": {"interfaces": [], "qdiscs": []},
        "capabilities": capabilities_summary(record.capabilities),
        "knobs": usable_knobs(record.knobs),  # the knobs' values, the sockets and their owners (see trim_knobs)
        "notes": record.notes,
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


def trim_knobs(host: JSON) -> None:
    """Keep in report.json only what the host's findings can use (the host file has it all).

    A host reads ~50–300 sysctls (per-interface ones for every interface) and every interface's settings;
    report.json keeps the sysctls a finding's knobs name (`net.ipv4.conf.*.rp_filter` keeps every
    interface's) and the interfaces with ring or channel settings or named by a finding's counters, so an
    idle host of many veths carries little. Sockets and listeners are kept (bounded on the host).
    """
    knobs = host.get("knobs")
    if not isinstance(knobs, dict):
        return
    findings = host.get("findings") or []
    patterns = knob_sysctl_patterns(findings)
    knobs["sysctl"] = {
        name: value for name, value in knobs["sysctl"].items() if any(fnmatch.fnmatchcase(name, p) for p in patterns)
    }
    named = {
        str(row.get("object") or "").split(" ")[0]
        for finding in findings
        for row in finding["evidence"]["counters"]
        if row.get("section") in ("interfaces", "qdiscs")
    }
    knobs["interfaces"] = {
        name: entry
        for name, entry in knobs["interfaces"].items()
        if name in named or (isinstance(entry, dict) and (entry.get("rings") or entry.get("channels")))
    }


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


def drop_counter_marks(rows: Iterable[Mapping[str, Any]]) -> JSON:
    """report.json's `drop_counters`: the `counters` shape, drop counters only, each → its counters.yml id.

    >>> rows = [{"section": "protocols", "object": None, "counter": "UdpNoPorts", "_key": "udp-noports"},
    ...         {"section": "qdiscs", "object": "eth0 tbf 1:", "counter": "dropped", "_key": "qdisc-dropped"}]
    >>> drop_counter_marks(rows)
    {'protocols': {'UdpNoPorts': 'udp-noports'}, 'qdiscs': {'eth0 tbf 1:': {'dropped': 'qdisc-dropped'}}}
    """
    marks: JSON = {}
    for row in rows:
        section = marks.setdefault(row["section"], {})
        target = section if row["object"] is None else section.setdefault(row["object"], {})
        target[row["counter"]] = row["_key"]
    return marks


def counter_items(
    host: Mapping[str, Any], levels: bool = False
) -> Iterable[tuple[str, str | None, str, int, float | None, str | None]]:
    """(section, object, counter, delta, rate, drop) of every counter that moved on a report host.

    `rate` is per second (3 decimals; None without an interval); `drop` is the counters.yml id of a drop
    counter (the knowledge base's mark in `drop_counters`), None for any other counter. LEVELS adds the
    qdiscs' levels at the end of the run (`backlog_now`, `qlen_now`: not counters, never drops). How every
    renderer walks a host's counters.
    """
    interval = host.get("interval_s")
    marks = host.get("drop_counters") or {}
    for section, obj, counter, delta in iter_counters(host.get("counters") or {}):
        if not levels and counter.endswith(GAUGE_SUFFIX):
            continue
        marked = marks.get(section) or {}
        if obj is not None:
            marked = marked.get(obj) or {}
        yield section, obj, counter, delta, per_second(delta, interval), marked.get(counter)


def drop_counter_items(host: Mapping[str, Any]) -> Iterable[tuple[str, str | None, str, int, float | None, str]]:
    """`counter_items` of a report host's drop counters only, in the same order: walked from its marks
    (`drop_counters`, made in that order), not over every counter of the host (a few of its ~30)."""
    interval = host.get("interval_s")
    counters = host.get("counters") or {}
    for section, marked in (host.get("drop_counters") or {}).items():
        values = counters.get(section) or {}
        by_object = marked.items() if section in OBJECT_SECTIONS else [(None, marked)]
        for obj, marks in by_object:
            deltas = values if obj is None else values.get(obj) or {}
            for counter, drop in marks.items():
                delta = deltas.get(counter)
                if delta and drop:
                    yield section, obj, counter, delta, per_second(delta, interval), drop


def drop_items(host: Mapping[str, Any]) -> dict[str, JSON]:
    """A report host's drops as items: "reason NAME" / "counter SECTION OBJECT COUNTER" → {kind, name, count,
    rate, section, object, item}.

    Reasons are the capture's drops summed over locations (rate: count / capture duration); counters are the
    host's drop counters (the knowledge base's marks). What compare sets side by side and the run history
    keeps per host.
    """
    items: dict[str, JSON] = {}
    capture = host.get("capture") or {}
    duration = capture.get("duration_s")
    for drop in capture.get("drops") or []:
        reason = drop["reason"]
        item = items.setdefault(
            f"reason {reason}",
            {"kind": "reason", "name": reason, "count": 0, "section": None, "object": None, "item": reason},
        )
        item["count"] += drop["count"]
    for item in items.values():
        item["rate"] = item["count"] / duration if duration else None
    for section, obj, counter, delta, rate, _ in drop_counter_items(host):
        name = " ".join(part for part in (section, obj, counter) if part)
        items[f"counter {name}"] = {"kind": "counter", "name": name, "count": delta, "rate": rate,
                                    "section": section, "object": obj, "item": counter}  # fmt: skip
    return items


def prepare_host(
    run_dir: Path, index: int, entry: Any, groups: Mapping[str, list[str]], knowledge: KnowledgeBase
) -> tuple[JSON, str, str | None]:
    """Pass 1 of one host: its report entry before the fleet is known (findings keep their internal fields,
    the ledger its own), the file it was read from and its ok capture's boot_id (None without one)."""
    record = load_host(run_dir, index, entry)
    host = host_report(record, groups.get(record.host))
    texts = rule_texts(record)
    moved_rules = host["counters"].get("firewall") or {}
    host["firewall_rules"] = {key: texts[key] for key in moved_rules if key in texts}
    decode_reasons(host, knowledge)
    rows = drop_counter_rows(host, texts, knowledge, qdisc_containers(record))
    host["drop_counters"] = drop_counter_marks(rows)
    ledger, unexplained = host_ledger(host, rows, knowledge)
    host["findings"] = sort_findings([*host_findings(host, rows, knowledge), *unexplained])
    advise_host(host, knowledge)  # each knob a finding names: its value, a proposed value, why
    annotate_directions(host, ledger, knowledge)
    name_who(host)  # the sockets, owners, listeners, senders and knob values behind each finding
    trim_knobs(host)
    host["ledger"] = ledger
    capture = record.capture or {}
    return host, record.file, capture.get("boot_id") if capture.get("status") == "ok" else None


def fleet_part(host: Mapping[str, Any]) -> JSON:
    """What the fleet's pass reads of a prepared host (`fleet_summary`, `fleet_ledger`, `shared_kernel_plan`)."""
    capture = host.get("capture")
    ledger = host.get("ledger")
    findings = host.get("findings")
    return {
        "host": host["host"],
        "status": host["status"],
        "capture": None if capture is None else {key: capture.get(key) for key in FLEET_CAPTURE_PARTS},
        "ledger": None if not ledger else {key: ledger[key] for key in LEDGER_PARTS},
        "findings": None if findings is None else [
            {"key": f["key"], "_owned": f["_owned"], "benign": f["benign"]} for f in findings
        ],
    }  # fmt: skip


def plan_fleet(parts: list[JSON], boot_ids: list[str | None]) -> tuple[JSON, list[JSON | None]]:
    """The fleet part of the report so far (hosts, statuses, drops, kernels, ledger) and, per host, what its
    pass 2 (`finish_host`) needs to know of the others (None for a host that shares no kernel)."""
    fleet = fleet_summary(parts, boot_ids)
    fleet["ledger"], ledger_shares = fleet_ledger(parts, fleet["kernels"])
    plan = shared_kernel_plan(parts, fleet["kernels"])
    notes = kernel_notes(fleet["kernels"])
    shares: list[JSON | None] = []
    for index, part in enumerate(parts):
        share = {"findings": plan.get(index), "ledger": ledger_shares.get(index), "note": notes.get(part["host"])}
        shares.append(share if any(value is not None for value in share.values()) else None)
    return fleet, shares


def kernel_notes(kernels: Iterable[Mapping[str, Any]]) -> dict[str, JSON]:
    """host name → {boot_id, shares_with, more, counted_from, counted_here} for hosts whose kernel is shared."""
    notes: dict[str, JSON] = {}
    for kernel in kernels:
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


def finish_host(host: JSON, share: Mapping[str, Any] | None) -> list[tuple[tuple[int, int], JSON]]:
    """Pass 2 of one host (SHARE: its `plan_fleet` entry): shared-kernel attribution, ledger, public fields,
    verdict. Returns the fleet findings it supplies, each with its place."""
    share = share or {}
    supplied = finish_host_findings(host, share.get("findings"))
    if host.get("ledger") and share.get("ledger") is not None:
        share_ledger(host["ledger"], share["ledger"])
    public_ledger(host.get("ledger"))
    return supplied


def fleet_part_finished(host: Mapping[str, Any]) -> JSON:
    """What the fleet's last steps read of a finished host (`finish_fleet`: cohorts, outliers, verdicts, the
    knowledge of its findings)."""
    return {
        "host": host["host"],
        "status": host["status"],
        "verdict": host["verdict"],
        "system": host["system"],
        "kernel": host["kernel"],
        "groups": host["groups"],
        "knobs": {"sysctl": ((host.get("knobs") or {}).get("sysctl")) or {}},
        "findings": [{key: f[key] for key in ("key", "kind", "reason", "title", "severity")} for f in host["findings"]],
    }


def finish_fleet(
    fleet: JSON, hosts: list[JSON], supplied: Iterable[tuple[tuple[int, int], JSON]], knowledge: KnowledgeBase
) -> JSON:
    """The fleet's verdict, findings, cohorts and outliers, from its finished HOSTS (entries or their
    `fleet_part_finished`) and the fleet findings they supplied; returns report.json's `knowledge`."""
    judge_fleet(fleet, hosts, supplied)
    return describe_fleet(fleet, hosts, knowledge)


def judge_fleet(fleet: JSON, hosts: list[JSON], supplied: Iterable[tuple[tuple[int, int], JSON]]) -> None:
    """`finish_fleet`'s first step: the fleet's findings and verdict (all the run history needs of the fleet)."""
    found = fleet_findings(supplied)
    fleet["verdict"], fleet["verdicts"] = fleet_verdict((host["verdict"] for host in hosts), found)
    fleet["findings"] = found


def describe_fleet(fleet: JSON, hosts: list[JSON], knowledge: KnowledgeBase) -> JSON:
    """`finish_fleet`'s second step, after `judge_fleet`: cohorts and outliers; returns report.json's
    `knowledge`."""
    fleet["cohorts"] = cohorts(hosts)
    fleet["outliers"] = outliers(hosts)
    background: JSON = {}
    for finding in [*(f for host in hosts for f in host["findings"]), *fleet["findings"]]:
        if finding["key"] not in background:
            background[finding["key"]] = finding_background(finding, knowledge)
    return {
        "sources": list(knowledge.sources),
        "findings": {key: entry for key, entry in background.items() if entry},
    }


def build_report(run_dir: str | Path, knowledge: KnowledgeBase | None = None) -> JSON:
    """The built report (report.json's document) of a run directory, in memory; raises RunError for a bad
    manifest. `knowledge` is the knowledge base (default: the shipped one).

    `dropscope report` streams the same steps (dropscope.pipeline) so that a large fleet fits in memory.
    """
    knowledge = knowledge or default_knowledge()
    run_dir = Path(run_dir)
    manifest = load_manifest(run_dir)
    groups = inventory_groups(manifest)
    prepared = [prepare_host(run_dir, index, entry, groups, knowledge) for index, entry in enumerate(manifest["hosts"])]
    hosts = [host for host, _, _ in prepared]
    fleet, shares = plan_fleet([fleet_part(host) for host in hosts], [boot_id for _, _, boot_id in prepared])
    supplied = [item for host, share in zip(hosts, shares, strict=True) for item in finish_host(host, share)]
    report = {"schema_version": SCHEMA_VERSION, "run": run_summary(manifest), "fleet": fleet, "hosts": hosts}
    knowledge_part = finish_fleet(fleet, hosts, supplied, knowledge)
    report["warnings"] = run_warnings(run_dir, [file for _, file, _ in prepared], [host["host"] for host in hosts])
    report["knowledge"] = knowledge_part
    return report
