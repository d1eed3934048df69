"""Cohorts and outliers: what the hosts with the same drops have in common (part of the build stage).

Pure functions over built host entries (report.json's `hosts`: `status`, `findings`, `system`, `kernel`,
`groups`, and `knobs` where the run read them); build.py calls `fleet_cohorts` once.

- A finding **fires** on a host when its severity is `warning` or `problem` (info findings are noise or
  kernel-wide drops attributed elsewhere). Only diagnosed hosts (status `ok`) take part.
- A **cohort** is a set of at least two hosts and the findings that fire on exactly those hosts: every
  finding key that fires somewhere gives the set of hosts it fires on, and keys with the same set are one
  cohort. So "12 of 400 hosts drop rx_missed_errors" is the cohort of that key's 12 hosts.
- Its **shared** attributes are the facts every host of the cohort has and not every other diagnosed host
  has: kernel release, kernel (boot_id: hosts on one kernel), distribution, Python, NIC driver, driver
  version and firmware (`ethtool -i`), inventory groups and sysctl values read in the run. `elsewhere` says
  how many diagnosed hosts outside the cohort have it too (0: only the cohort has it), most telling first.
  An attribute counts as not shared by the rest only where other hosts are known to differ: at least one
  host outside the cohort has another value for it (a host that did not read it, e.g. a sysctl report.json
  keeps only where a finding names it, does not count).
- An **outlier** is a host whose firing findings differ from those most hosts of one of its inventory
  groups share (a group of at least three diagnosed hosts where more than half have the same findings),
  named with the findings it has extra, those it lacks, and where it differs from a value most of that
  group has (e.g. the group's kernel release), its own value.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

JSON = dict[str, Any]

FIRING = ("warning", "problem")
SEVERITY_RANK = {"info": 0, "warning": 1, "problem": 2}
MIN_COHORT = 2
MIN_GROUP = 3
# Attribute kinds, in the order they are listed when equally telling.
ATTRIBUTES = (
    "kernel_release", "boot_id", "nic_firmware", "nic_driver_version", "nic_driver", "distro", "python", "group",
    "sysctl",
)  # fmt: skip
_ORDER = {name: rank for rank, name in enumerate(ATTRIBUTES)}


def host_attributes(host: Mapping[str, Any]) -> set[tuple[str, str]]:
    """The (attribute, value) facts of one built host entry; unknown facts are left out.

    >>> sorted(host_attributes({"system": {"kernel_release": "6.1.0", "distro": None, "python": "3.11.2",
    ...     "nics": {"eth0": {"driver": "ixgbe", "version": "5.19.6-k", "firmware_version": "0x800009e0"}}},
    ...     "kernel": {"boot_id": "0d6c"}, "groups": ["web"]}))
    ... # doctest: +NORMALIZE_WHITESPACE
    [('boot_id', '0d6c'), ('group', 'web'), ('kernel_release', '6.1.0'), ('nic_driver', 'ixgbe'),
     ('nic_driver_version', 'ixgbe 5.19.6-k'), ('nic_firmware', 'ixgbe 0x800009e0'), ('python', '3.11.2')]
    """
    system = host.get("system") or {}
    facts: set[tuple[str, str]] = set()
    for name in ("kernel_release", "distro", "python"):
        if system.get(name):
            facts.add((name, str(system[name])))
    boot_id = (host.get("kernel") or {}).get("boot_id")
    if boot_id:
        facts.add(("boot_id", str(boot_id)))
    for nic in (system.get("nics") or {}).values():
        driver = nic.get("driver")
        if not driver:
            continue
        facts.add(("nic_driver", driver))
        if nic.get("version"):
            facts.add(("nic_driver_version", f"{driver} {nic['version']}"))
        if nic.get("firmware_version"):
            facts.add(("nic_firmware", f"{driver} {nic['firmware_version']}"))
    for group in host.get("groups") or []:
        facts.add(("group", group))
    for name, value in ((host.get("knobs") or {}).get("sysctl") or {}).items():
        facts.add((f"sysctl {name}", str(value)))
    return facts


def _known(host: Mapping[str, Any], facts: set[tuple[str, str]]) -> set[str]:
    """The attributes a host has a value for; its inventory groups are known whenever the run recorded them."""
    return {attribute for attribute, _ in facts} | ({"group"} if isinstance(host.get("groups"), list) else set())


def firing(host: Mapping[str, Any]) -> dict[str, JSON]:
    """key → finding of the host's findings that fire (warning or problem)."""
    return {f["key"]: f for f in host.get("findings") or [] if f.get("severity") in FIRING}


def _fact(attribute: tuple[str, str], elsewhere: int) -> JSON:
    return {"attribute": attribute[0], "value": attribute[1], "elsewhere": elsewhere}


def _rank(attribute: str) -> int:
    return _ORDER.get(attribute.split(" ")[0], len(_ORDER))


def _fact_order(fact: Mapping[str, Any]) -> tuple[int, int, str, str]:
    return fact["elsewhere"], _rank(fact["attribute"]), fact["attribute"], fact["value"]


def cohorts(hosts: Iterable[Mapping[str, Any]]) -> list[JSON]:
    """report.json's `fleet.cohorts`: [{hosts, shared, findings}], largest first (see the module doc)."""
    diagnosed = [host for host in hosts if host.get("status") == "ok"]
    facts = [host_attributes(host) for host in diagnosed]
    everywhere = Counter(fact for host_facts in facts for fact in host_facts)
    known = Counter(name for host, facts_of in zip(diagnosed, facts, strict=True) for name in _known(host, facts_of))
    on_hosts: dict[str, list[int]] = {}
    about: dict[str, JSON] = {}
    for index, host in enumerate(diagnosed):
        for key, finding in firing(host).items():
            on_hosts.setdefault(key, []).append(index)
            seen = about.setdefault(key, {"key": key, "title": finding.get("title"), "severity": finding["severity"]})
            if SEVERITY_RANK[finding["severity"]] > SEVERITY_RANK[seen["severity"]]:
                seen["severity"] = finding["severity"]
    by_members: dict[tuple[int, ...], list[str]] = {}
    for key, members in on_hosts.items():
        by_members.setdefault(tuple(members), []).append(key)
    result = []
    for members, keys in by_members.items():
        if len(members) < MIN_COHORT:
            continue
        common = set.intersection(*(facts[index] for index in members))
        # Known elsewhere: hosts outside the cohort with any value for the attribute (all members have one).
        shared = [
            _fact(fact, everywhere[fact] - len(members))
            for fact in common
            if everywhere[fact] - len(members) < known[fact[0]] - len(members)
        ]
        shared.sort(key=_fact_order)
        findings = sorted((about[key] for key in keys), key=lambda f: (-SEVERITY_RANK[f["severity"]], f["key"]))
        result.append({"hosts": [diagnosed[index]["host"] for index in members], "shared": shared,
                       "findings": findings})  # fmt: skip
    result.sort(key=lambda c: (-len(c["hosts"]), -SEVERITY_RANK[c["findings"][0]["severity"]], c["findings"][0]["key"]))
    return result


def _usual_values(facts: list[set[tuple[str, str]]]) -> dict[str, str]:
    """attribute → the value more than half of the hosts have (attributes with such a value only; not groups)."""
    counts = Counter(fact for host_facts in facts for fact in host_facts if fact[0] != "group")
    return {name: value for (name, value), count in counts.items() if 2 * count > len(facts)}


def outliers(hosts: Iterable[Mapping[str, Any]]) -> list[JSON]:
    """report.json's `fleet.outliers`: hosts whose findings differ from most of their inventory group's.

    Each: {host, group, findings (fire here, not on most of the group), missing (fire on most of the group,
    not here), attributes (this host's values of the attributes where more than half of the group has
    another one value: [{attribute, value}])}.
    """
    diagnosed = [host for host in hosts if host.get("status") == "ok"]
    members: dict[str, list[Mapping[str, Any]]] = {}
    for host in diagnosed:
        for group in host.get("groups") or []:
            members.setdefault(group, []).append(host)
    result = []
    for group in sorted(members):
        group_hosts = members[group]
        if len(group_hosts) < MIN_GROUP:
            continue
        signatures = [frozenset(firing(host)) for host in group_hosts]
        usual, count = Counter(signatures).most_common(1)[0]
        if 2 * count <= len(group_hosts):
            continue  # no signature most of the group shares: nothing to stand out from
        facts = [host_attributes(host) for host in group_hosts]
        usual_values = _usual_values(facts)
        for host, signature, host_facts in zip(group_hosts, signatures, facts, strict=True):
            if signature == usual:
                continue
            unusual = [fact for fact in host_facts if fact[0] in usual_values and fact[1] != usual_values[fact[0]]]
            result.append({
                "host": host["host"],
                "group": group,
                "findings": sorted(signature - usual),
                "missing": sorted(usual - signature),
                "attributes": [{"attribute": name, "value": value}
                               for name, value in sorted(unusual, key=lambda f: (_rank(f[0]), f[0], f[1]))],
            })  # fmt: skip
    return result
