"""The knowledge base: what kernel drop reasons and drop counters mean, and what to change.

The content is data (knowledge/reasons.yml, knowledge/counters.yml and knowledge/knobs.yml, shipped in the
package); this module only loads it, merges a user's file over it (`--knowledge FILE`) and answers lookups.

It is the one place that says whether a counter counts drops (`KnowledgeBase.drop_rule`): the builder
marks each host's drop counters with it, and findings, the page and `dropscope check` read those marks.
It also holds the ledger's data: which captured reasons account for a counter (`CounterRule.ledger`),
where a drop happens (kernel or NIC), which direction a reason's drops go (`KnowledgeBase.direction`) and
the texts of unexplained drops (`KnowledgeBase.unexplained`), and the knobs findings name with the rule for
proposing their values (`KnowledgeBase.knob`, used by advice.py).

Captures without drop reasons (kernels before 5.17, dropwatch) are diagnosed from their locations:
knowledge/locations.yml says what a drop at a kernel function means (`KnowledgeBase.location`) and which
named reason it stands for (`KnowledgeBase.stand_in`, used by the ledger). Subsystem drop reasons (6.4+,
recorded raw as `0x30001`) are decoded from reasons.yml `subsystems` (`KnowledgeBase.subsystem_reason`).
Counter entries with `drivers` describe a counter only on interfaces that run one of those drivers.
"""

from __future__ import annotations

import copy
import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

SEVERITIES = ("info", "warning", "problem")
SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}
DIRECTIONS = ("receive", "transmit", "forward", "any")
WHERE = ("kernel", "nic")
SECTIONS = ("interfaces", "protocols", "softnet", "qdiscs", "sockets", "firewall", "conntrack")
TEXT_FIELDS = ("title", "direction", "meaning", "explain", "advice", "ledger_note", "label", "reason", "name")
LIST_FIELDS = ("causes", "next", "knobs", "corroborated_by", "benign_locations", "accounted_by", "functions", "drivers")
FLAG_FIELDS = ("drop", "generic", "benign", "ledger")
MAP_FIELDS = ("direction_at", "chain_direction")  # glob or word → receive | transmit
TEXT_MAP_FIELDS = ("chain_owners",)  # glob → sentence
JSON = dict[str, Any]
REASONLESS = "UNKNOWN"  # the reason of a capture group whose tracer gives none (kernels before 5.17, dropwatch)
# Compiler suffixes of a kernel symbol (`ip_rcv_finish_core.isra.0`, `gro_normal_list.part.0`, `foo.cold`).
SYMBOL_SUFFIX = re.compile(r"(?:\.(?:isra|part|constprop|cold|llvm|lto_priv)(?:\.\d+)*)+$")
SUBSYSTEM_SHIFT = 16  # include/net/dropreason.h: SKB_DROP_REASON_SUBSYS_SHIFT (the subsystem is the high 16 bits)
RAW_REASON = re.compile(r"^(?:0x([0-9a-fA-F]+)|REASON_(\d+))$")  # how the collection writes an unnamed reason
QUALIFIED_REASON = re.compile(r"^([A-Z0-9_]+):(0x[0-9a-f]+)$")  # a subsystem reason only its subsystem is known of
KNOB_SCOPES = ("kernel", "netns")
KNOB_RULES = {"buffer": ("drain_s", "bytes_per_drop"), "queue": ("drain_s",), "table": ("headroom",)}
KNOB_SOCKETS = ("default", "own", "any")
SYSCTL_NAME = re.compile(r"[a-z0-9_]+(\.[a-z0-9_]+)+")  # a knob `dropscope fix` may write: /proc/sys/<dots as />


class KnowledgeError(ValueError):
    """A knowledge file is not valid; the message names the file and the entry."""


@dataclass
class CounterRule:
    """One counters.yml entry: which counters it matches and what they mean.

    `sections` are the sections it applies to; `rule` (firewall entries) is a regular expression the
    firewall rule's text must contain, so that only rules that drop or reject count drops.
    """

    id: str
    sections: tuple[str, ...]
    patterns: list[str]
    entry: JSON
    compiled: list[re.Pattern[str]] = field(default_factory=list)
    rule: re.Pattern[str] | None = None

    def matches(self, section: str, counter: str, rule_text: str | None = None, driver: str | None = None) -> bool:
        """Whether this entry describes SECTION/COUNTER (DRIVER: the interface's driver, `ethtool -i`).

        An entry with `drivers` (globs) matches an interface's counter only where the interface runs one of
        them; where the driver is not known (no `ethtool -i` record, older runs) the name alone decides.
        """
        if section not in self.sections or not any(pattern.match(counter) for pattern in self.compiled):
            return False
        drivers = self.entry.get("drivers")
        if drivers and section == "interfaces" and driver and not any(_glob(str(d)).match(driver) for d in drivers):
            return False
        return self.rule is None or bool(self.rule.search(rule_text or ""))

    @property
    def is_drop(self) -> bool:
        """Whether the counters it matches count drops (`drop: false` entries are evidence, not drops)."""
        return self.entry.get("drop") is not False

    @property
    def is_generic(self) -> bool:
        """A drop or error counter recognised by its name alone: the knowledge base knows nothing more."""
        return bool(self.entry.get("generic"))

    def ledger(self, counter: str) -> LedgerRule | None:
        """What the ledger knows about COUNTER (one this entry matches); None if it is not a packet count."""
        if self.entry.get("ledger") is False:
            return None
        where = _per_counter(self.entry.get("where"), counter) or "kernel"
        return LedgerRule(
            accounted_by=[_reason_pattern(item) for item in self.entry.get("accounted_by") or []],
            duplicate_of=[
                _sibling_pattern(item) for item in _per_counter(self.entry.get("duplicate_of"), counter) or []
            ],
            where=where,
            note=self.entry.get("ledger_note"),
        )


@dataclass
class LedgerRule:
    """A counter's ledger knowledge: the capture groups that account for it, its more precise siblings, where.

    `accounted_by`: (reason, location glob or None); `duplicate_of`: (section or None for the counter's own
    section and object, counter glob).
    """

    accounted_by: list[tuple[str, re.Pattern[str] | None]]
    duplicate_of: list[tuple[str | None, re.Pattern[str]]]
    where: str
    note: str | None
    # (section, counter, whether in the same section and object) of another row → whether it is a sibling
    _sibling_cache: dict[tuple[str, str, bool], bool] = field(default_factory=dict, repr=False, compare=False)

    def siblings(self, row: Mapping[str, Any], rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """The ROWS (drop counter rows: section, object, counter) that count ROW's packets more precisely."""
        if not self.duplicate_of:  # most counters have no more precise sibling: no walk over the rows
            return []
        found = []
        for other in rows:
            if other is row:
                continue
            key = (other["section"], other["counter"],
                   other["section"] == row["section"] and other["object"] == row["object"])  # fmt: skip
            if key not in self._sibling_cache:  # cached: hosts repeat the same counters
                self._sibling_cache[key] = self._is_sibling(*key)
            if self._sibling_cache[key]:
                found.append(other)
        return found

    def _is_sibling(self, section: str, counter: str, same_place: bool) -> bool:
        return any(pattern.match(counter) and (same_place if wanted is None else section == wanted)
                   for wanted, pattern in self.duplicate_of)  # fmt: skip


def _per_counter(value: Any, counter: str) -> Any:
    """A field's value for COUNTER: the value itself, or from a mapping counter-glob → value (first match)."""
    if isinstance(value, dict):
        return next((item for pattern, item in value.items() if _glob(str(pattern)).match(counter)), None)
    return value


def _reason_pattern(item: str) -> tuple[str, re.Pattern[str] | None]:
    reason, _, location = str(item).partition("@")
    return reason, _glob(location) if location else None


def _sibling_pattern(item: str) -> tuple[str | None, re.Pattern[str]]:
    section, _, counter = str(item).rpartition("/")
    return section or None, _glob(counter)


def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern), re.IGNORECASE)


@dataclass
class KnowledgeBase:
    """Reasons by name, counter rules in match order, and the default severity thresholds."""

    reasons: dict[str, JSON]
    counters: list[CounterRule]
    severity: JSON
    sources: list[str]
    unexplained: dict[str, JSON] = field(default_factory=dict)
    knobs: dict[str, JSON] = field(default_factory=dict)
    locations: dict[str, JSON] = field(default_factory=dict)
    subsystems: dict[int, JSON] = field(default_factory=dict)
    _counter_cache: dict[tuple[str, str, str | None, str | None], CounterRule | None] = field(
        default_factory=dict, repr=False
    )
    _location_cache: dict[str, tuple[str, JSON] | None] = field(default_factory=dict, repr=False)
    _corroboration: dict[str, list[tuple[str, re.Pattern[str]]]] = field(default_factory=dict, repr=False)
    _ledger_cache: dict[tuple[str, str], LedgerRule | None] = field(default_factory=dict, repr=False)
    _direction_cache: dict[tuple[str, str, str | None], str] = field(default_factory=dict, repr=False)
    _corroborates_cache: dict[tuple[str, str, str], bool] = field(default_factory=dict, repr=False)
    _knob_cache: dict[str, JSON | None] = field(default_factory=dict, repr=False)
    _accounts_cache: dict[tuple[str, str, str, re.Pattern[str] | None], bool] = field(default_factory=dict, repr=False)

    def reason(self, name: str) -> JSON | None:
        """The entry of a kernel drop reason, or None if the knowledge base does not know it.

        A subsystem reason (named, `OVS_DROP_LAST_ACTION`; qualified, `OPENVSWITCH:0x20063`; or raw, `0x30001`)
        gets its own entry if reasons.yml has one, else its subsystem's (see `subsystem_reason`).
        """
        entry = self.reasons.get(name)
        if entry is None and self.subsystems:
            decoded = self.subsystem_reason(name)
            if decoded is not None:
                entry = self.reasons.get(decoded["reason"]) or decoded["_entry"]
        return entry

    def subsystem_reason(self, name: str) -> JSON | None:
        """{reason, reason_raw, subsystem} of a subsystem drop reason (and its `_entry`), None for any other.

        NAME is the reason as a capture group has it: raw (`0x30001`: perf and tracefs print a value missing
        from the tracepoint's names in hex, the collection writes bpftrace's numbers so too; `REASON_196609`
        from older runs), qualified by the host (`OPENVSWITCH:0x20063`: its BTF named the subsystem only), or
        a name a subsystem lists (dropwatch prints the kernel's names; `reason_raw` is then None). Raw values
        are decoded by reasons.yml `subsystems` (the subsystem is the high 16 bits; its reasons are numbered
        from 1 in the order its kernel header lists them); a number past the list becomes `SUBSYSTEM:0x…`,
        an unknown subsystem stays raw with `subsystem` `SUBSYS_N`. The host's own names (BTF) come first:
        findings.decode_reasons.
        """
        qualified = QUALIFIED_REASON.match(name)
        if qualified:
            entry = next((item for item in self.subsystems.values() if item["name"] == qualified.group(1)), None)
            return {"reason": name, "reason_raw": qualified.group(2), "subsystem": qualified.group(1), "_entry": entry}
        match = RAW_REASON.match(name)
        if match is None:
            for subsystem in self.subsystems.values():
                if name in (subsystem.get("base"), *(subsystem.get("reasons") or [])):
                    return {"reason": name, "reason_raw": None, "subsystem": subsystem["name"], "_entry": subsystem}
            return None
        value = int(match.group(1), 16) if match.group(1) else int(match.group(2))
        subsystem_id, index = value >> SUBSYSTEM_SHIFT, value & ((1 << SUBSYSTEM_SHIFT) - 1)
        raw = f"0x{value:x}"
        if subsystem_id == 0:
            return None  # a core reason the host could not name (no format file): not a subsystem's
        subsystem = self.subsystems.get(subsystem_id)
        if subsystem is None:
            return {"reason": raw, "reason_raw": raw, "subsystem": f"SUBSYS_{subsystem_id}", "_entry": None}
        names = [subsystem.get("base"), *(subsystem.get("reasons") or [])]
        decoded = names[index] if index < len(names) and names[index] else f"{subsystem['name']}:{raw}"
        return {"reason": decoded, "reason_raw": raw, "subsystem": subsystem["name"], "_entry": subsystem}

    def location(self, function: str) -> tuple[str, JSON] | None:
        """(id, entry) of locations.yml that explains drops at kernel FUNCTION, None if none does.

        Compiler suffixes (`.isra.0`, `.part.0`, `.constprop.0`, `.cold`) are ignored; exact names win over globs.
        """
        if function not in self._location_cache:
            name = SYMBOL_SUFFIX.sub("", function or "")
            found = next(
                ((key, entry) for key, entry in self.locations.items() if name in (entry.get("functions") or [])), None
            )
            if found is None:
                globbed = (
                    (key, entry, pattern)
                    for key, entry in self.locations.items()
                    for pattern in map(str, entry.get("functions") or [])
                    if "*" in pattern
                )
                found = next(((key, entry) for key, entry, glob in globbed if fnmatch.fnmatchcase(name, glob)), None)
            self._location_cache[function] = found
        return self._location_cache[function]

    def accounts(self, group: Mapping[str, Any], reason: str, location: re.Pattern[str] | None) -> bool:
        """Whether a ledger's accounted_by item REASON@LOCATION (a glob's pattern, None: anywhere) names capture
        GROUP: its reason, or for a group without one (kernels before 5.17, dropwatch) the reason its location
        stands for (locations.yml `reason`) or `UNKNOWN` itself. Cached: every host asks it for each of its
        counters × capture groups."""
        key = (group["reason"], group["location"], reason, location)
        if key not in self._accounts_cache:
            self._accounts_cache[key] = (location is None or bool(location.match(group["location"]))) and (
                group["reason"] == reason or self.stand_in(group["reason"], group["location"]) == reason
            )
        return self._accounts_cache[key]

    def stand_in(self, reason: str, location: str) -> str | None:
        """The named reason a reasonless drop at LOCATION stands for (locations.yml `reason`), else None."""
        if reason != REASONLESS:
            return None
        found = self.location(location)
        return (found[1].get("reason") or None) if found else None

    def counter_rule(
        self, section: str, counter: str, rule_text: str | None = None, driver: str | None = None
    ) -> CounterRule | None:
        """The first counters.yml entry matching SECTION/COUNTER (cached: fleets repeat names).

        RULE_TEXT is a firewall rule's text (entries with a `rule` pattern match only rules it matches);
        DRIVER the interface's driver (entries with `drivers` match only those drivers' interfaces).
        """
        key = (section, counter, rule_text, driver)
        if key not in self._counter_cache:
            self._counter_cache[key] = next(
                (rule for rule in self.counters if rule.matches(section, counter, rule_text, driver)), None
            )
        return self._counter_cache[key]

    def drop_rule(
        self, section: str, counter: str, rule_text: str | None = None, driver: str | None = None
    ) -> CounterRule | None:
        """The entry that makes SECTION/COUNTER a drop counter, or None if it does not count drops.

        The only answer to "is this counter a drop?": findings, the page and `dropscope check` all use it
        (through the marks the builder puts into report.json).
        """
        rule = self.counter_rule(section, counter, rule_text, driver)
        return rule if rule is not None and rule.is_drop else None

    def corroborates(self, reason: str, section: str, counter: str) -> bool:
        """Whether counter SECTION/COUNTER moves together with drops of REASON (its `corroborated_by`).

        REASON may also be a location finding's key (`location:ID`: that locations.yml entry's list). Cached:
        every host asks it for each of its reasons × drop counters, and fleets repeat both.
        """
        key = (reason, section, counter)
        if key not in self._corroborates_cache:
            self._corroborates_cache[key] = self._corroborates(reason, section, counter)
        return self._corroborates_cache[key]

    def _corroborates(self, reason: str, section: str, counter: str) -> bool:
        if reason not in self._corroboration:
            patterns = []
            entry = self.reasons.get(reason) or self.locations.get(reason.removeprefix("location:")) or {}
            for item in entry.get("corroborated_by") or []:
                item_section, _, item_counter = str(item).partition("/")
                patterns.append((item_section, _glob(item_counter)))
            self._corroboration[reason] = patterns
        return any(section == s and pattern.match(counter) for s, pattern in self._corroboration[reason])

    def is_benign(self, reason: str, location: str) -> bool:
        """Known noise: the whole reason, or drops of it at one of its benign kernel locations.

        A reasonless drop is noise when its location's entry (locations.yml) says so.
        """
        if reason == REASONLESS:
            found = self.location(location)
            return bool(found and found[1].get("benign"))
        entry = self.reasons.get(reason) or {}
        return bool(entry.get("benign")) or location in (entry.get("benign_locations") or [])

    def knob(self, name: str) -> JSON | None:
        """The knobs.yml entry of a knob a finding names (by its name or one of its `aliases`), or None (cached:
        a name not in knobs.yml would walk every entry's aliases each time)."""
        if name in self.knobs:
            return self.knobs[name]
        if name not in self._knob_cache:
            self._knob_cache[name] = next(
                (entry for entry in self.knobs.values() if name in (entry.get("aliases") or [])), None
            )
        return self._knob_cache[name]

    def ledger_rule(self, rule: CounterRule, counter: str) -> LedgerRule | None:
        """RULE's ledger knowledge for COUNTER (cached; None: not a count of dropped packets)."""
        key = (rule.id, counter)
        if key not in self._ledger_cache:
            self._ledger_cache[key] = rule.ledger(counter)
        return self._ledger_cache[key]

    def direction(self, reason: str, location: str, chain: str | None = None) -> str:
        """rx, tx or unknown for drops of REASON at LOCATION (CHAIN: the firewall chain of the rule they matched).

        The reason's `chain_direction` (a word of the chain's name), then its `direction_at` (kernel function
        globs), then its `direction` (receive → rx, transmit → tx, anything else → unknown).
        """
        key = (reason, location, chain)
        if key not in self._direction_cache:
            self._direction_cache[key] = self._direction(reason, location, chain)
        return self._direction_cache[key]

    def _direction(self, reason: str, location: str, chain: str | None) -> str:
        entry = self.reason(reason) or {}
        if reason == REASONLESS:  # no reason: the location's entry says which way, else its stand-in reason's
            found = self.location(location)
            stand_in = (found[1].get("reason") if found else None) or ""
            own = {"direction": found[1].get("direction")} if found else {}
            entry = {**(self.reasons.get(stand_in) or {}), **own}
        found = None
        if chain:
            words = chain.lower()
            found = next((d for word, d in (entry.get("chain_direction") or {}).items() if str(word) in words), None)
        if found is None:
            at = entry.get("direction_at") or {}
            found = next((d for pattern, d in at.items() if _glob(str(pattern)).match(location)), None)
        if found is None and not (chain and entry.get("chain_direction")):
            found = entry.get("direction")
        return {"receive": "rx", "transmit": "tx"}.get(found or "", "unknown")

    def chain_owner(self, reason: str, chain: str | None) -> str | None:
        """Whose generated rules a firewall CHAIN holds (Docker, Kubernetes), from REASON's `chain_owners`.

        Globs match case-sensitively, as iptables and nft chain names are (first match wins); None if none.
        """
        owners = (self.reasons.get(reason) or {}).get("chain_owners") or {}
        return next((text for pattern, text in owners.items() if chain and fnmatch.fnmatchcase(chain, pattern)), None)

    def thresholds(self, entry: Mapping[str, Any] | None) -> JSON:
        """Severity thresholds for an entry: the defaults with the entry's own `severity` on top."""
        own = (entry or {}).get("severity")
        if not own:
            return self.severity
        merged = copy.deepcopy(self.severity)
        for level, values in ((entry or {}).get("severity") or {}).items():
            merged.setdefault(level, {}).update(values)
        return merged


def _check_entry(entry: Any, where: str) -> JSON:
    if not isinstance(entry, dict):
        raise KnowledgeError(f"{where}: expected a mapping, got {type(entry).__name__}")
    for name in TEXT_FIELDS:
        if name in entry and entry[name] is not None and not isinstance(entry[name], str):
            raise KnowledgeError(f"{where}.{name}: expected a string")
    for name in LIST_FIELDS:
        if name in entry and not isinstance(entry[name], list):
            raise KnowledgeError(f"{where}.{name}: expected a list")
    for name in FLAG_FIELDS:
        if name in entry and not isinstance(entry[name], bool):
            raise KnowledgeError(f"{where}.{name}: expected true or false")
    if entry.get("direction") not in (None, *DIRECTIONS):
        raise KnowledgeError(f"{where}.direction: {entry['direction']!r} is not one of {', '.join(DIRECTIONS)}")
    for name in MAP_FIELDS:
        value = entry.get(name)
        if value is not None and (
            not isinstance(value, dict) or any(item not in ("receive", "transmit") for item in value.values())
        ):
            raise KnowledgeError(f"{where}.{name}: expected a mapping of names to receive or transmit")
    for name in TEXT_MAP_FIELDS:
        value = entry.get(name)
        if value is not None and (
            not isinstance(value, dict) or not all(isinstance(item, str) for item in (*value, *value.values()))
        ):
            raise KnowledgeError(f"{where}.{name}: expected a mapping of chain globs to sentences")
    for name, allowed in (("where", WHERE), ("duplicate_of", None)):
        value = entry.get(name)
        values = list(value.values()) if isinstance(value, dict) else [value]
        for item in values:
            if allowed is None and item is not None and not isinstance(item, list):
                raise KnowledgeError(f"{where}.{name}: expected a list (or a mapping of counter globs to lists)")
            if allowed is not None and item not in (None, *allowed):
                raise KnowledgeError(f"{where}.{name}: {item!r} is not one of {', '.join(allowed)}")
    if entry.get("max_severity") not in (None, *SEVERITIES):
        raise KnowledgeError(f"{where}.max_severity: {entry['max_severity']!r} is not one of {', '.join(SEVERITIES)}")
    severity = entry.get("severity")
    if severity is not None:
        _check_severity(severity, f"{where}.severity")
    return entry


def _check_severity(severity: Any, where: str) -> None:
    if not isinstance(severity, dict):
        raise KnowledgeError(f"{where}: expected a mapping of problem/warning thresholds")
    for level, values in severity.items():
        if level not in ("problem", "warning") or not isinstance(values, dict):
            raise KnowledgeError(f"{where}.{level}: expected problem/warning with rate/count")
        for key, value in values.items():
            if key not in ("rate", "count") or isinstance(value, bool) or not isinstance(value, int | float):
                raise KnowledgeError(f"{where}.{level}.{key}: expected rate or count with a number")


# libyaml's safe loader where PyYAML has it (the same documents, ten times faster), else the Python one.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read_yaml(text: str, source: str) -> JSON:
    try:
        document = yaml.load(text, Loader=SAFE_LOADER)  # noqa: S506 (a safe loader: SafeLoader or its C version)
    except yaml.YAMLError as exc:
        raise KnowledgeError(f"{source}: not valid YAML: {exc}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise KnowledgeError(f"{source}: expected a mapping at the top")
    unknown = set(document) - {
        "schema_version",
        "severity",
        "reasons",
        "counters",
        "unexplained",
        "knobs",
        "locations",
        "subsystems",
    }
    if unknown:
        raise KnowledgeError(f"{source}: unknown top-level keys: {', '.join(sorted(map(str, unknown)))}")
    return document


def _check_knob(name: str, entry: Any, where: str) -> JSON:
    """A knobs.yml entry, validated (see the field list at the top of knobs.yml)."""
    if not isinstance(entry, dict):
        raise KnowledgeError(f"{where}: expected a mapping, got {type(entry).__name__}")
    if entry.get("sysctl") not in (None, True, False):
        raise KnowledgeError(f"{where}.sysctl: expected true or false")
    if entry.get("sysctl") and not SYSCTL_NAME.fullmatch(name):
        raise KnowledgeError(f"{where}: {name!r} is not a sysctl name (dotted lower-case words)")
    if entry.get("scope") not in (None, *KNOB_SCOPES):
        raise KnowledgeError(f"{where}.scope: {entry['scope']!r} is not one of {', '.join(KNOB_SCOPES)}")
    for text in ("why", "after", "unit"):
        if entry.get(text) is not None and not isinstance(entry[text], str):
            raise KnowledgeError(f"{where}.{text}: expected a string")
    aliases = entry.get("aliases")
    if aliases is not None and (not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases)):
        raise KnowledgeError(f"{where}.aliases: expected a list of names")
    propose = entry.get("propose")
    if propose is None:
        return entry
    if not isinstance(propose, dict) or propose.get("rule") not in KNOB_RULES:
        raise KnowledgeError(f"{where}.propose.rule: expected one of {', '.join(KNOB_RULES)}")
    numbers = (*KNOB_RULES[propose["rule"]], "min_factor", "max")
    for key, value in propose.items():
        if key == "rule":
            continue
        if key == "socket":
            if value not in KNOB_SOCKETS:
                raise KnowledgeError(f"{where}.propose.socket: {value!r} is not one of {', '.join(KNOB_SOCKETS)}")
        elif key not in numbers:
            raise KnowledgeError(f"{where}.propose.{key}: not a field of rule {propose['rule']}")
        elif isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise KnowledgeError(f"{where}.propose.{key}: expected a positive number")
    missing = [key for key in (*KNOB_RULES[propose["rule"]], "max") if key not in propose]
    if missing:
        raise KnowledgeError(f"{where}.propose: rule {propose['rule']} needs {', '.join(missing)}")
    return entry


def _counter_rule(entry: JSON, where: str) -> CounterRule:
    entry = _check_entry(entry, where)
    rule_id = entry.get("id")
    sections = entry.get("section")
    patterns = entry.get("counter")
    if isinstance(patterns, str):
        patterns = [patterns]
    if isinstance(sections, str):
        sections = [sections]
    if not isinstance(rule_id, str) or not rule_id:
        raise KnowledgeError(f"{where}: needs an `id`")
    if not isinstance(sections, list) or not sections or any(section not in SECTIONS for section in sections):
        raise KnowledgeError(
            f"{where} ({rule_id}): section {entry.get('section')!r} is not one (or a list) of {', '.join(SECTIONS)}"
        )
    if not isinstance(patterns, list) or not patterns or not all(isinstance(p, str) for p in patterns):
        raise KnowledgeError(f"{where} ({rule_id}): `counter` must be a name or a list of names/globs")
    if entry.get("scope", "netns") not in ("netns", "kernel"):
        raise KnowledgeError(f"{where} ({rule_id}): scope must be netns or kernel")
    rule = entry.get("rule")
    try:
        compiled_rule = None if rule is None else re.compile(rule)
    except (re.error, TypeError) as exc:
        raise KnowledgeError(f"{where} ({rule_id}): `rule` must be a regular expression: {exc}") from None
    return CounterRule(rule_id, tuple(sections), list(patterns), entry, [_glob(p) for p in patterns], compiled_rule)


def _mapping(document: Mapping[str, Any], key: str, source: str, what: str) -> dict:
    """Section KEY of a knowledge document (absent: empty); KnowledgeError naming the file unless a mapping."""
    section = document.get(key) or {}
    if not isinstance(section, dict):
        raise KnowledgeError(f"{source}: `{key}` must be a mapping of {what}")
    return section


def _merge(base: JSON, document: JSON, source: str) -> None:
    """Merge one knowledge document into BASE (reasons field by field, counters by id, user rules first)."""
    if "severity" in document:
        _check_severity(document["severity"], f"{source}: severity")
        for level, values in document["severity"].items():
            base["severity"].setdefault(level, {}).update(values)
    unexplained = _mapping(document, "unexplained", source, "kernel / nic")
    for name, entry in unexplained.items():
        if name not in WHERE:
            raise KnowledgeError(f"{source}: unexplained.{name}: expected one of {', '.join(WHERE)}")
        merged = {**base["unexplained"].get(name, {}), **_check_entry(entry or {}, f"{source}: unexplained.{name}")}
        base["unexplained"][name] = merged
    knobs = _mapping(document, "knobs", source, "knob names")
    for name, entry in knobs.items():
        merged = {**base["knobs"].get(str(name), {}), **(entry or {})} if isinstance(entry or {}, dict) else entry
        base["knobs"][str(name)] = _check_knob(str(name), merged, f"{source}: knobs.{name}")
    reasons = _mapping(document, "reasons", source, "reason names")
    for name, entry in reasons.items():
        merged = {**base["reasons"].get(str(name), {}), **_check_entry(entry or {}, f"{source}: reasons.{name}")}
        base["reasons"][str(name)] = merged
    locations = _mapping(document, "locations", source, "ids to entries")
    for name, entry in locations.items():
        where = f"{source}: locations.{name}"
        merged = {**base["locations"].get(str(name), {}), **_check_entry(entry or {}, where)}
        functions = merged.get("functions")
        if not functions or not all(isinstance(item, str) and item for item in functions):
            raise KnowledgeError(f"{where}.functions: expected a list of kernel function names (globs allowed)")
        base["locations"][str(name)] = merged
    subsystems = _mapping(document, "subsystems", source, "subsystem numbers to entries")
    for number, entry in subsystems.items():
        where = f"{source}: subsystems.{number}"
        if isinstance(number, bool) or not isinstance(number, int) or not 0 < number < 1 << 16:
            raise KnowledgeError(f"{where}: the key must be the subsystem's number (1-65535)")
        merged = {**base["subsystems"].get(number, {}), **_check_entry(entry or {}, where)}
        names = merged.get("reasons")
        if (
            not isinstance(merged.get("name"), str)
            or not isinstance(names, list)
            or not all(isinstance(item, str) for item in names)
        ):
            raise KnowledgeError(f"{where}: needs a `name` and `reasons` (the subsystem's reason names, from 1)")
        base["subsystems"][number] = merged
    counters = document.get("counters") or []
    if not isinstance(counters, list):
        raise KnowledgeError(f"{source}: `counters` must be a list")
    by_id = {rule.id: index for index, rule in enumerate(base["counters"])}
    added: list[CounterRule] = []
    for index, entry in enumerate(counters):
        where = f"{source}: counters[{index}]"
        if isinstance(entry, dict) and entry.get("id") in by_id:
            existing = base["counters"][by_id[entry["id"]]]
            base["counters"][by_id[entry["id"]]] = _counter_rule(
                {**existing.entry, "counter": existing.patterns, **entry}, where
            )
        else:
            added.append(_counter_rule(entry, where))
    base["counters"][:0] = added


def load_knowledge(user_file: str | Path | None = None) -> KnowledgeBase:
    """The shipped knowledge base, with USER_FILE (YAML, same shape) merged over it."""
    base: JSON = {
        "severity": {},
        "reasons": {},
        "counters": [],
        "unexplained": {},
        "knobs": {},
        "locations": {},
        "subsystems": {},
    }
    sources = []
    package = resources.files("dropscope") / "knowledge"
    for name in ("reasons.yml", "counters.yml", "knobs.yml", "locations.yml"):
        _merge(base, _read_yaml(package.joinpath(name).read_text(encoding="utf-8"), name), name)
        sources.append(f"dropscope/knowledge/{name}")
    if user_file is not None:
        path = Path(user_file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise KnowledgeError(f"{path}: cannot be read ({exc.strerror or exc})") from None
        _merge(base, _read_yaml(text, str(path)), str(path))
        sources.append(str(path))
    return KnowledgeBase(
        base["reasons"],
        base["counters"],
        base["severity"],
        sources,
        base["unexplained"],
        knobs=base["knobs"],
        locations=base["locations"],
        subsystems=base["subsystems"],
    )


_DEFAULT: KnowledgeBase | None = None


def default_knowledge() -> KnowledgeBase:
    """The shipped knowledge base (loaded once)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = load_knowledge()
    return _DEFAULT
