"""The ledger: every drop counter that moved on a host, set against the captured reasons that account for it.

The knowledge base says which capture groups count the same packets as a counter (counters.yml
`accounted_by`: "REASON" or "REASON@LOCATION"), which counters are duplicates of a more precise sibling
(`duplicate_of`), and whether a counter counts drops in the kernel or in the NIC (`where`). The matching
rule, so that no drop is counted twice:

- Counters that count the same packets as a more precise sibling that also moved (UdpInErrors beside
  UdpRcvbufErrors, a socket's drops beside UdpRcvbufErrors, IpOutDiscards beside a qdisc's dropped) are
  duplicates: only what they count beyond their siblings (`counted`) enters the totals.
- Each capture group's count is shared out once: counters in report order (protocols, softnet, interfaces,
  qdiscs, sockets, firewall; duplicates last), each taking from the groups its `accounted_by` names, in
  that order, as much as it still needs. What a counter cannot get is `unexplained`; what is left of the
  groups are the drops no counter shows (`capture_only`, reason → count).
- A capture group without a reason (kernels before 5.17, dropwatch: `UNKNOWN`) counts for the reason its
  kernel function stands for (locations.yml `reason`) and for `UNKNOWN@FUNCTION` items; the ledger names its
  drops `UNKNOWN@FUNCTION` (`ledger_key`).
- A host's `drops` are its counted counter drops plus its capture-only drops; `explained` are those with a
  reason (matched or capture-only; a group without one has its function's meaning from locations.yml, or
  none: those, `capture_only_unexplained`, are not explained); `unexplained` = drops − explained.
- A sampled capture (`sample_one_in` N > 1: the rate guard made bpftrace count 1 in N drops) gives estimates:
  a counter the capture can account for whose shortfall is within LEDGER_SIGMAS standard deviations of an
  estimate of its `counted` drops has that shortfall `within_error` (explained, not unexplained); what is left
  of a group that some counter took from, within the same spread of the group's estimate, is the estimate's
  excess (`sampling_excess`), not drops no counter shows (dropscope.sampling); so in the fleet's single count
  of a shared kernel.
- A kernel-scope capture shared by several hosts (same boot_id) saw every host's drops: each host matches
  only what its own counters show, its `capture_only` is null (the capture is not its own), and the fleet
  counts the kernel's capture-only drops and kernel-wide counters (softnet) once.

`host_ledger` also returns the host's unexplained findings (one per place: kernel, nic) and the counter each
capture group was matched to, from which `annotate_directions` says each group's direction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from dropscope.deltas import per_second
from dropscope.findings import firewall_chain, make_finding, render_template
from dropscope.knowledge_base import REASONLESS, KnowledgeBase
from dropscope.load import JSON
from dropscope.sampling import LEDGER_SIGMAS, one_in, spread

PLACES = ("kernel", "nic")
PHRASES_SHOWN = 3  # counters named in an unexplained finding's explanation; the ledger lists them all
SHARED_NOTE = (
    "kernel-wide capture shared with {hosts}: only this host's own counters are matched; captured drops no"
    " counter shows are counted once, in the fleet's ledger"
)


def _chain(row: Mapping[str, Any] | None) -> str | None:
    """The firewall chain of a rule row ("nft inet t input #3" → "input", "iptables filter INPUT #3" → "INPUT")."""
    if not row or row["section"] != "firewall":
        return None
    return firewall_chain(row["object"])


def ledger_key(group: Mapping[str, Any]) -> str:
    """How the ledger names a capture group's drops: its reason, or `UNKNOWN@FUNCTION` for a group without one."""
    return group["reason"] if group["reason"] != REASONLESS else f"{REASONLESS}@{group['location']}"


def _contained(row: Mapping[str, Any], entries: list[tuple[JSON, Any]]) -> list[JSON]:
    """For a qdisc's row: the rows of the same counter of the qdiscs directly inside it, which it counts again (a
    classful qdisc adds its children's drops to its own: tbf above pfifo, mq above its queues' qdiscs; a child
    that is classful itself already counts its own children)."""
    if row["section"] != "qdiscs":
        return []
    return [other for other, _ in entries
            if other is not row and other["section"] == "qdiscs" and other["counter"] == row["counter"]
            and other.get("_inside") == row["object"]]  # fmt: skip


def _nic_words(row: Mapping[str, Any]) -> str:
    """How the NIC names a counter: an ethtool counter in the driver's words, else the kernel's name."""
    counter = row["counter"]
    if counter.startswith("ethtool:"):
        return f"the driver counts it as `{counter.removeprefix('ethtool:')}` (ethtool -S {row['object']})"
    return f"`{counter}` of {row['object']}"


def host_ledger(host: Mapping[str, Any], rows: list[JSON], knowledge: KnowledgeBase) -> tuple[JSON | None, list[JSON]]:
    """(ledger, unexplained findings) of one host; ROWS are its `drop_counter_rows` (None, [] if not diagnosed).

    The capture groups matched to a counter are remembered in the ledger's internal `_matched` (group index →
    counter row) for `annotate_directions`, which takes it out.
    """
    if host.get("status") != "ok":
        return None, []
    capture = host.get("capture") or {}
    groups = (capture.get("drops") or []) if capture.get("status") == "ok" else []
    sampled = one_in(capture) if capture.get("status") == "ok" else 1
    left = [group["count"] for group in groups]
    matched: dict[int, JSON] = {}

    entries = []
    for row in rows:
        rule = knowledge.drop_rule(row["section"], row["counter"], row.get("detail"), row.get("_driver"))
        known = knowledge.ledger_rule(rule, row["counter"]) if rule else None
        if known is not None:
            entries.append((row, known))
    plan = []
    for row, known in entries:
        siblings = known.siblings(row, [other for other, _ in entries]) + _contained(row, entries)
        counted = max(0, row["delta"] - sum(other["delta"] for other in siblings)) if siblings else row["delta"]
        plan.append((row, known, siblings, counted))

    ledger_rows: list[JSON] = [{} for _ in plan]
    scopes: list[str] = [row["scope"] for row, *_ in plan]
    explained_reasons: dict[str, int] = {}
    for index in sorted(range(len(plan)), key=lambda i: bool(plan[i][2])):  # precise counters first
        row, known, siblings, counted = plan[index]
        need = counted
        explained: dict[str, int] = {}
        for reason, location in known.accounted_by:
            for number, group in enumerate(groups):
                if not need:
                    break
                if left[number] and knowledge.accounts(group, reason, location):
                    take = min(need, left[number])
                    left[number] -= take
                    need -= take
                    key = ledger_key(group)
                    explained[key] = explained.get(key, 0) + take
                    matched.setdefault(number, row)
        for reason, count in explained.items():
            explained_reasons[reason] = explained_reasons.get(reason, 0) + count
        within_error = need if sampled > 1 and known.accounted_by and need <= spread(
            counted, sampled, LEDGER_SIGMAS) else 0
        need -= within_error
        entry: JSON = {
            "section": row["section"],
            "object": row["object"],
            "counter": row["counter"],
            "delta": row["delta"],
            "explained_by": explained,
            "unexplained": need,
            "where": known.where,
        }
        if siblings:
            entry["duplicate_of"] = [[other["section"], other["object"], other["counter"]] for other in siblings]
            entry["counted"] = counted
        if within_error:
            entry["within_error"] = within_error
        if known.note and need:
            entry["note"] = known.note
        ledger_rows[index] = entry

    capture_only: dict[str, int] = {}
    meaningless: set[str] = set()  # ledger keys of groups without a reason at a function nobody explains
    excess = 0  # what is left of sampled groups that counters took from, within the estimate's spread
    for number, group in enumerate(groups):
        if sampled > 1 and left[number] and number in matched and left[number] <= spread(
                group["count"], sampled, LEDGER_SIGMAS):
            excess += left[number]
            left[number] = 0
        if left[number]:
            key = ledger_key(group)
            capture_only[key] = capture_only.get(key, 0) + left[number]
            if group["reason"] == REASONLESS and knowledge.location(group["location"]) is None:
                meaningless.add(key)
    counted_total = sum(item[3] for item in plan)
    unexplained = sum(entry["unexplained"] for entry in ledger_rows)
    only = sum(capture_only.values())
    only_unexplained = sum(capture_only[key] for key in meaningless)
    kernel_rows = [entry for entry, scope in zip(ledger_rows, scopes, strict=True) if scope == "kernel"]
    ledger: JSON = {
        "drops": counted_total + only,
        "explained": counted_total - unexplained + only - only_unexplained,
        "unexplained": unexplained + only_unexplained,
        "rows": ledger_rows,
        "capture_only": dict(sorted(capture_only.items(), key=lambda item: (-item[1], item[0]))),
        "capture_only_unexplained": only_unexplained,
        **({"sample_one_in": sampled, "sampling_excess": excess} if sampled > 1 else {}),
        "_meaningless": sorted(meaningless),
        "_matched": matched,
        "_explained_reasons": explained_reasons,
        "_kernel": (
            sum(entry.get("counted", entry["delta"]) for entry in kernel_rows),
            sum(entry["unexplained"] for entry in kernel_rows),
        ),
    }
    return ledger, _unexplained_findings(host, ledger_rows, scopes, knowledge)


def _unexplained_findings(
    host: Mapping[str, Any], ledger_rows: list[JSON], scopes: list[str], knowledge: KnowledgeBase
) -> list[JSON]:
    """One finding per place (kernel, nic) whose counters counted drops no captured reason accounts for."""
    findings = []
    interval = host.get("interval_s")
    for place in PLACES:
        members = [
            (entry, scope)
            for entry, scope in zip(ledger_rows, scopes, strict=True)
            if entry["unexplained"] and entry["where"] == place
        ]
        if not members:
            continue
        entry_text = knowledge.unexplained.get(place) or {}
        rows = [
            {"section": e["section"], "object": e["object"], "counter": e["counter"], "delta": e["unexplained"],
             "rate": per_second(e["unexplained"], interval), "detail": None, "scope": scope}
            for e, scope in members
        ]  # fmt: skip
        finding = make_finding(
            host=host["host"],
            key=f"unexplained:{place}",
            kind="unexplained",
            reason=None,
            entry=entry_text,
            known=True,
            benign=False,
            drops=[],
            rows=rows,
            duration=None,
            knowledge=knowledge,
            owned=any(scope == "netns" for _, scope in members),
            fallback_title=f"Unexplained drops ({place})",
            summed=True,
        )
        phrases = []
        for ledger_row, _ in members:
            name = f"{ledger_row['object']} {ledger_row['counter']}" if ledger_row["object"] else ledger_row["counter"]
            phrase = f"{name} +{ledger_row['unexplained']:,}"
            if ledger_row["unexplained"] != ledger_row["delta"]:
                phrase += f" of +{ledger_row['delta']:,}"
            if place == "nic":
                phrase += f" ({_nic_words(ledger_row)})"
            elif ledger_row.get("note"):
                phrase += f" ({ledger_row['note']})"
            phrases.append(phrase)
        if len(phrases) > PHRASES_SHOWN:
            phrases[PHRASES_SHOWN - 1 :] = [f"{len(phrases) - PHRASES_SHOWN + 1} more counters (see the ledger)"]
        finding["_phrases"] = phrases
        finding["evidence"]["counters"] = []  # the ledger's rows are the evidence (report.json stays small)
        finding["explanation"] = (
            render_template(finding["_template"], {**finding["_context"], "host": host["host"]})
            + " — "
            + "; ".join(phrases)
        )
        findings.append(finding)
    return findings


def annotate_directions(host: Mapping[str, Any], ledger: JSON | None, knowledge: KnowledgeBase) -> None:
    """Give every capture group of a report host its `direction` (rx, tx, unknown) from the knowledge base.

    A group the ledger matched to a firewall rule takes the rule chain's direction; a transmit group matched
    to a qdisc or an interface counter names it (`dev`, and `qdisc`: the qdisc's key). Takes the ledger's
    `_matched` out (its job is done; its rows hold knowledge base objects).
    """
    matched = (ledger or {}).pop("_matched", None) or {}
    for number, group in enumerate((host.get("capture") or {}).get("drops") or []):
        row = matched.get(number)
        group["direction"] = knowledge.direction(group["reason"], group["location"], _chain(row))
        if group["direction"] == "tx" and row and row["section"] in ("qdiscs", "interfaces") and row["object"]:
            group["dev"] = row["object"].split()[0]
            if row["section"] == "qdiscs":
                group["qdisc"] = row["object"]


def share_ledger(ledger: JSON, others: list[str]) -> None:
    """A ledger of a host whose kernel-wide capture is shared with OTHERS: its `capture_only` drops leave it
    (the fleet's ledger counts them once) and its note names the others."""
    only, only_unexplained = sum(ledger["capture_only"].values()), ledger["capture_only_unexplained"]
    ledger["drops"] -= only
    ledger["explained"] -= only - only_unexplained
    ledger["unexplained"] -= only_unexplained
    ledger["capture_only"] = ledger["capture_only_unexplained"] = None
    ledger["note"] = SHARED_NOTE.format(hosts=", ".join(others[:5]) + (" …" if len(others) > 5 else ""))


def public_ledger(ledger: JSON | None) -> None:
    """Remove a ledger's internal (underscore) fields, for report.json."""
    for key in [key for key in ledger or {} if key.startswith("_")]:
        del ledger[key]  # type: ignore[union-attr]


LEDGER_PARTS = ("drops", "explained", "unexplained", "capture_only", "capture_only_unexplained", "_meaningless",
                "_explained_reasons", "_kernel")  # fmt: skip


def fleet_ledger(hosts: Iterable[JSON], kernels: Iterable[Mapping[str, Any]]) -> tuple[JSON, dict[int, list[str]]]:
    """The fleet's ledger {drops, explained, unexplained} and, per position in HOSTS, the other hosts of the
    kernel-wide capture it shares (`share_ledger`'s OTHERS).

    HOSTS are host entries or their fleet parts (`host`, `capture.drops`, `ledger` with LEDGER_PARTS); their
    ledgers are not changed.
    """
    hosts = list(hosts)
    by_name = {host["host"]: index for index, host in enumerate(hosts)}
    ledgers = {index: dict(host["ledger"]) for index, host in enumerate(hosts) if host.get("ledger")}
    shares: dict[int, list[str]] = {}
    dedup: dict[int, tuple[int, int]] = {}  # host → (kernel-scope counted, unexplained) counted by another host
    kernel_only = kernel_unexplained = 0  # the kernels' capture-only drops, and those without a meaning
    for kernel in kernels:
        names = list(dict.fromkeys(kernel["hosts"]))
        members = [by_name[name] for name in names if by_name.get(name) in ledgers]
        if len(names) < 2 or not members:
            continue
        counted_from = by_name.get(kernel["counted_from"])
        if counted_from not in ledgers:  # counted from a host that was not diagnosed (no ledger)
            counted_from = members[0]
        captured: dict[str, int] = {}
        for group in (hosts[counted_from].get("capture") or {}).get("drops") or []:
            captured[ledger_key(group)] = captured.get(ledger_key(group), 0) + group["count"]
        estimates = dict(captured)
        for member in members:
            for reason, count in ledgers[member]["_explained_reasons"].items():
                captured[reason] = captured.get(reason, 0) - count
        sampled = one_in(hosts[counted_from].get("capture"))
        for key, count in captured.items():  # a sampled estimate's excess over what the hosts' counters took
            taken = 0 < count < estimates.get(key, 0)
            if sampled > 1 and taken and count <= spread(estimates[key], sampled, LEDGER_SIGMAS):
                captured[key] = 0
        meaningless = set(ledgers[counted_from]["_meaningless"])
        kernel_only += sum(count for count in captured.values() if count > 0)
        kernel_unexplained += sum(count for key, count in captured.items() if count > 0 and key in meaningless)
        for member in members:
            shares[member] = [name for name in names if name != hosts[member]["host"]]
            share_ledger(ledgers[member], shares[member])
            if member != counted_from:
                dedup[member] = ledgers[member]["_kernel"]
    fleet = {"drops": kernel_only, "explained": kernel_only - kernel_unexplained, "unexplained": kernel_unexplained}
    for index, ledger in ledgers.items():
        counted, unexplained = dedup.get(index, (0, 0))
        fleet["drops"] += ledger["drops"] - counted
        fleet["explained"] += ledger["explained"] - (counted - unexplained)
        fleet["unexplained"] += ledger["unexplained"] - unexplained
    return fleet, shares
