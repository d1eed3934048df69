# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# The docstring samples are verbatim kernel/tool output lines, some longer than 120 characters.
# ruff: noqa: E501
"""The ``skb:kfree_skb`` tracepoint: its format file, ``perf script`` lines, and on-host aggregation.

Pure code (standard library only); it runs on the managed host. ``aggregate_perf_script`` reads
``perf script`` output as a stream and keeps bounded memory whatever the number of events.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import re
import sys

from ansible_collections.dropscope.drops.plugins.module_utils.kallsyms import Locator, is_hashed_pointer, raw_address
from ansible_collections.dropscope.drops.plugins.module_utils.kernel_btf import BtfError, enums

# Where tracefs is mounted (the first is the standard place; the second is the old debugfs one).
TRACEFS_ROOTS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
FORMAT_FILE = "events/skb/kfree_skb/format"
FORMAT_SOURCE = TRACEFS_ROOTS[0] + "/" + FORMAT_FILE

ETHERTYPES = {
    0: "none",
    2048: "IPv4",
    2054: "ARP",
    34525: "IPv6",
}

# Bounds of DropAggregator (memory stays bounded whatever the event count).
MAX_GROUPS = 100000
MAX_STACKS = 10000
MAX_FRAMES = 32
# Distinct "protocol=... location=... reason: ..." tails remembered by aggregate_perf_script.
_TAIL_CACHE_SIZE = 4096
# Distinct call chain lines ("\tADDRESS SYMBOL") remembered by aggregate_perf_script.
_FRAME_CACHE_SIZE = 65536

_FIELD = re.compile(r"^\s*field:(.*?);\s*offset:")
_SYMBOLIC = re.compile(r"__print_symbolic\(\s*REC->reason\s*,")
_PAIR = re.compile(r'\{\s*(-?(?:0x[0-9a-fA-F]+|\d+))\s*,\s*"([^"]*)"\s*\}')
# The trace part from "protocol=" on, as perf (libtraceevent) and tracefs print it:
#   protocol=2048 location=__udp4_lib_rcv+0x4bc reason: NO_SOCKET          perf 6.1, kernel 6.18
#   protocol=2048 location=__udp4_lib_rcv+0x4bc/0xd00 reason: NO_SOCKET    tracefs (symbol size)
#   protocol=2048 location=nft_do_chain+0x3e8/0x5a0 [nf_tables] reason: ...  tracefs, module symbol
#   protocol=2048 location=0xffffffff81a1b2cc                              kernel < 5.17 (%p, no reason)
_TAIL = re.compile(
    r"protocol=(\d+)\s+location=([^\s+/]+)(?:\+(0x[0-9a-fA-F]+))?(?:/0x[0-9a-fA-F]+)?(?:\s+\[[^\]]*\])?"
    r"(?:\s+reason[:=]\s*(\S+))?\s*$"
)
_PROTOCOL = re.compile(r"\bprotocol=(\d+)")
_LOCATION = re.compile(r"\blocation=([^\s+/]+)(?:\+(0x[0-9a-fA-F]+))?(?:/0x[0-9a-fA-F]+)?(?:\s|$)")
_REASON = re.compile(r"\breason[:=]\s*(\S+)")
_LOST = re.compile(r"\bPERF_RECORD_LOST lost (\d+)")
_FRAME = re.compile(r"^\s+([0-9a-fA-F]+) (.+?)\s*$")
_FRAME_DSO = re.compile(r" \([^()]*\)$")
_FRAME_OFFSET = re.compile(r"\+0x[0-9a-fA-F]+$")
_EVENT_NAME = "kfree_skb: "  # perf prints "skb:kfree_skb: ", tracefs "kfree_skb: "


def parse_tracepoint_format(text: str, source: str = FORMAT_SOURCE) -> dict:
    """Parse the tracepoint's format file into its field names and its drop reason names.

    Sample (``/sys/kernel/tracing/events/skb/kfree_skb/format``, kernel 6.18, shortened)::

        name: kfree_skb
        ID: 2310
        format:
                field:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
                ...
                field:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
                field:void * location;\toffset:16;\tsize:8;\tsigned:0;
                field:void * rx_sk;\toffset:24;\tsize:8;\tsigned:0;
                field:unsigned short protocol;\toffset:32;\tsize:2;\tsigned:0;
                field:enum skb_drop_reason reason;\toffset:36;\tsize:4;\tsigned:0;

        print fmt: "skbaddr=%p rx_sk=%p protocol=%u location=%pS reason: %s", REC->skbaddr, ...,
        __print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, { 3, "NO_SOCKET" }, ..., { 128, "MAX" })

    gives ``{"fields": ["skbaddr", "location", "rx_sk", "protocol", "reason"], "reasons": {2:
    "NOT_SPECIFIED", 3: "NO_SOCKET", ..., 128: "MAX"}}`` (``common_*`` fields are left out). The
    enum differs between kernels, so names come from here, never from a table. A kernel without a
    ``reason`` field (before 5.17) gives ``"reasons": {}``.

    Raises ValueError naming ``source`` when there is no ``format:`` section or no ``print fmt:``.
    """
    if "format:" not in text:
        raise ValueError("%s: no 'format:' section" % source)
    fields = []
    for line in text.splitlines():
        match = _FIELD.match(line)
        if not match:
            continue
        declaration = match.group(1).split()
        if not declaration:
            continue
        name = declaration[-1].lstrip("*").split("[", 1)[0]
        if name and not name.startswith("common_"):
            fields.append(name)
    start = text.find("print fmt:")
    if start < 0:
        raise ValueError("%s: no 'print fmt:' line" % source)
    reasons = {}
    symbolic = _SYMBOLIC.search(text, start)
    if symbolic:
        end = text.find(")", symbolic.end())
        for value, name in _PAIR.findall(text[symbolic.end():end if end >= 0 else len(text)]):
            reasons[int(value, 0)] = name
    return {"fields": fields, "reasons": reasons}


def read_tracepoint_format(read_text, roots=TRACEFS_ROOTS) -> tuple:
    """``(path, parse_tracepoint_format(...))`` of the first readable format file under `roots`.

    `read_text` takes a path and returns its text. ``(None, {"fields": [], "reasons": {}})`` when no
    root has a readable, well-formed one (tracefs not mounted, or a kernel without the tracepoint).
    """
    for root in roots:
        path = root + "/" + FORMAT_FILE
        try:
            return path, parse_tracepoint_format(read_text(path), path)
        except (IOError, OSError, ValueError):
            continue
    return None, {"fields": [], "reasons": {}}


def read_reason_names(read_text) -> dict:
    """Reason number -> name from the host's own tracepoint format (the enum differs between kernels).

    Every backend names reasons with it; ``{}`` when the format cannot be read (reasons stay numbers).
    """
    return read_tracepoint_format(read_text)[1]["reasons"]


def protocol_name(number: int | None) -> str:
    """Name of an ethertype as the tracepoint gives it (host order): 2048 -> "IPv4", 0x88cc -> "0x88cc"."""
    if number is None:
        return "unknown"
    name = ETHERTYPES.get(number)
    return name if name is not None else "0x%04x" % number


def reason_text(number: int, reasons: dict | None) -> str:
    """The name of drop reason NUMBER from the host's format (``reasons``), else the number kept as data.

    A subsystem reason (kernels 6.4+: the subsystem in the high 16 bits, e.g. Open vSwitch's 0x30001) is
    not in the tracepoint's names: it stays the hex text the kernel itself prints for it (``"0x30001"``),
    whichever backend read it; a core number the host could not name stays ``"REASON_<n>"``. The report
    decodes subsystem reasons (its knowledge base, reasons.yml ``subsystems``).

    >>> reason_text(3, {3: "NO_SOCKET"}), reason_text(196609, {3: "NO_SOCKET"}), reason_text(7, {})
    ('NO_SOCKET', '0x30001', 'REASON_7')
    """
    name = reasons.get(number) if reasons else None
    if name is not None:
        return name
    return "0x%x" % number if number >> 16 else "REASON_%d" % number


BTF_DIR = "/sys/kernel/btf"
_SUBSYS_PREFIX = "SKB_DROP_REASON_SUBSYS_"
_SUBSYSTEM_REASON = re.compile(r"^0x[0-9a-f]{5,8}$")  # reason_text's form of a value with subsystem bits


def _read_bytes(path):
    with open(path, "rb") as handle:
        return handle.read()


def subsystem_reason_names(values, read_bytes=_read_bytes, btf_dir=BTF_DIR) -> dict:
    """Name subsystem drop reasons (``reason_text``'s ``"0x20001"``) from this kernel's own BTF.

    The subsystem numbers changed between kernels (6.4 numbered MAC80211_MONITOR 2 and OPENVSWITCH 3;
    6.18's ``enum skb_drop_reason_subsys`` has OPENVSWITCH 2), so only the kernel that dropped can say:
    ``enum skb_drop_reason_subsys`` of ``BTF_DIR/vmlinux`` names the subsystem, and the enums named
    ``*drop_reason`` of the kernel and of the subsystem's module (``BTF_DIR/openvswitch``, ``mac80211``,
    split BTF) name the reason. Returns ``{"0x20001": {"name": "OVS_DROP_LAST_ACTION" or None,
    "subsystem": "OPENVSWITCH"}}`` for the VALUES it could name; ``{}`` without BTF (the report then
    falls back to its knowledge base).
    """
    try:
        base = read_bytes(btf_dir + "/vmlinux")
        found = enums(base, lambda name: name == "skb_drop_reason_subsys" or name.endswith("drop_reason"))
    except (IOError, OSError, BtfError):
        return {}
    subsystems = {}
    for member, value in found.get("skb_drop_reason_subsys", []):
        if member.startswith(_SUBSYS_PREFIX) and member != _SUBSYS_PREFIX + "NUM":
            subsystems[value] = member[len(_SUBSYS_PREFIX):]
    numbers = dict((value, int(value, 16)) for value in values)
    # a subsystem's module is its name's first word: OPENVSWITCH -> openvswitch, MAC80211_UNUSABLE -> mac80211
    modules = set(subsystems[n >> 16].split("_")[0].lower() for n in numbers.values() if n >> 16 in subsystems)
    for module in sorted(modules):
        try:
            extra = enums(read_bytes(btf_dir + "/" + module), lambda name: name.endswith("drop_reason"), base)
        except (IOError, OSError, BtfError):
            continue  # built into the kernel (found above) or not loaded
        for name, members in extra.items():
            found.setdefault(name, []).extend(members)
    names = {}
    for enum_name, members in sorted(found.items()):
        if enum_name in ("skb_drop_reason", "skb_drop_reason_subsys"):
            continue
        for member, value in members:
            if value >> 16 and (value not in names or names[value].startswith("_")):
                names[value] = member
    result = {}
    for value, number in numbers.items():
        if number >> 16 in subsystems:
            name = names.get(number)
            result[value] = {"name": name.lstrip("_") if name else None, "subsystem": subsystems[number >> 16]}
    return result


def _reason_name(text: str | None, reasons: dict | None) -> str:
    if text is None:
        return "UNKNOWN"
    if text.isdigit():
        return reason_text(int(text), reasons)
    if text[:2] in ("0x", "0X"):  # perf and tracefs print a value missing from the format's names in hex
        try:
            return reason_text(int(text, 16), reasons)
        except ValueError:
            return text
    return text


def _trace_part(line: str) -> str | None:
    """The tracepoint's own text in a ``perf script`` line, or None if the line is no kfree_skb event."""
    at = line.find(_EVENT_NAME)
    if at >= 0:
        return line[at + len(_EVENT_NAME):]
    stripped = line.lstrip(" ")
    if stripped.startswith("skbaddr=") and "location=" in stripped:
        return stripped
    return None


def _parse_trace(trace: str, reasons: dict | None) -> tuple:
    """(reason, location, offset, protocol) of the tracepoint text."""
    at = trace.find("protocol=")
    match = _TAIL.match(trace, at) if at >= 0 else None
    if match:
        protocol, location, offset, reason = match.groups()
        return _reason_name(reason, reasons), location, offset, int(protocol)
    protocol = _PROTOCOL.search(trace)
    location = _LOCATION.search(trace)
    reason = _REASON.search(trace)
    return (
        _reason_name(reason.group(1) if reason else None, reasons),
        location.group(1) if location else "unknown",
        location.group(2) if location else None,
        int(protocol.group(1)) if protocol else 0,
    )


def parse_perf_script_line(line: str, reasons: dict | None = None) -> dict | None:
    """Parse one ``perf script`` line of an ``skb:kfree_skb`` event; None for any other line.

    Samples (perf 6.1, kernel 6.18)::

        skbaddr=0xffff88814c09aa00 rx_sk=(nil) protocol=2048 location=__udp4_lib_rcv+0x4bc reason: NO_SOCKET
        python3  5885 [001]   577.635830: skb:kfree_skb: skbaddr=0xffff88814c09aa00 rx_sk=(nil) protocol=2048 location=__udp4_lib_rcv+0x4bc reason: NO_SOCKET

    (``perf script -F trace`` and plain ``perf script``) both give ``{"reason": "NO_SOCKET",
    "location": "__udp4_lib_rcv", "offset": "0x4bc", "protocol": 2048}``.

    A reason printed as a number is named through ``reasons`` (from ``parse_tracepoint_format``),
    else ``"REASON_<n>"``; an event without a reason (kernel < 5.17) gives ``"UNKNOWN"``. A location
    that perf could not resolve stays an address (``"0xffffffffc0a1b2c3"``) with offset None.
    Stack frame lines, ``PERF_RECORD_LOST`` lines and other events (``skb:consume_skb``) give None.
    """
    trace = _trace_part(line)
    if trace is None:
        return None
    reason, location, offset, protocol = _parse_trace(trace, reasons)
    return {"reason": reason, "location": location, "offset": offset, "protocol": protocol}


def parse_perf_lost_line(line: str) -> int | None:
    """Number of events lost, from a ``perf script --show-lost-events`` line; None for other lines.

    Samples (perf 6.1; ``-F trace`` and the default fields)::

        PERF_RECORD_LOST lost 94
                 python3  6012 [000]   599.051731: PERF_RECORD_LOST lost 15

    give 94 and 15. ``PERF_RECORD_LOST_SAMPLES`` (perf record's per-event total of the same
    losses, written when recording stops; ``perf report --stats`` shows it) gives None so losses are
    not counted twice.
    """
    match = _LOST.search(line)
    return int(match.group(1)) if match else None


def parse_perf_stack_line(line: str) -> str | None:
    """Function name of a call chain line (``perf script -g``, ``-F ...,ip,sym``); None otherwise.

    Samples (perf 6.1, kernel 6.18; ``-F trace,ip,sym`` and the default fields)::

        \tffffffff81e42e50 sk_skb_reason_drop
        \tffffffff81e42e50 sk_skb_reason_drop+0x90 ([kernel.kallsyms])
        \t          10acb3 __libc_sendto+0x13 (/usr/lib/x86_64-linux-gnu/libc.so.6)
        \t               0 [unknown] ([unknown])

    give ``"sk_skb_reason_drop"``, ``"sk_skb_reason_drop"``, ``"__libc_sendto"`` and ``"[unknown]"``.
    """
    if not line[:1].isspace() or _EVENT_NAME in line or "PERF_RECORD_" in line:
        return None
    match = _FRAME.match(line)
    if not match:
        return None
    symbol = _FRAME_OFFSET.sub("", _FRAME_DSO.sub("", match.group(2)))
    return symbol or None


class DropAggregator:
    """Counts drop events by (reason, location, offset, protocol[, extra fields]), in bounded memory.

    The one top-N grouper of the collection: every backend feeds it (perf and tracefs one event at a
    time, bpftrace and dropwatch their pre-counted groups with ``count``), and ``result`` ranks the
    groups and cuts them to the top N the same way for all.

    ``extra_fields`` names further key fields after the four common ones (bpftrace: ``("l4", "port")``,
    plus ``"netns"`` with netns=all); each group of ``result`` then carries them.
    At most ``max_groups`` distinct groups are held; events of further groups are counted in
    ``overflow_events`` (reported inside ``other``). Call stacks are cut to ``max_frames`` frames
    (innermost first) and at most ``max_stacks`` distinct stacks are held (``overflow_stacks``).

    >>> agg = DropAggregator(extra_fields=("port",))
    >>> agg.add("NO_SOCKET", "__udp4_lib_rcv", "0x4bc", 2048, count=3, extra=(9000,))
    >>> agg.add("NO_SOCKET", "__udp4_lib_rcv", "0x4bc", 2048, count=2, extra=(9001,))
    >>> result = agg.result(top=1)
    >>> [(drop["protocol"], drop["port"], drop["count"]) for drop in result["drops"]], result["other"]
    ([('IPv4', 9000, 3)], {'count': 2, 'groups': 1})
    """

    def __init__(self, max_groups: int = MAX_GROUPS, max_stacks: int = MAX_STACKS, max_frames: int = MAX_FRAMES,
                 extra_fields=()):
        self.max_groups = max_groups
        self.max_stacks = max_stacks
        self.max_frames = max_frames
        self.fields = ("reason", "location", "offset", "protocol") + tuple(extra_fields)
        self.events = 0
        self.overflow_events = 0
        self.overflow_stacks = 0
        self._groups = {}
        self._stacks = {}

    @property
    def truncated(self) -> bool:
        """True when a cap was reached: some groups or stacks are only counted, not named."""
        return bool(self.overflow_events or self.overflow_stacks)

    def add(self, reason: str, location: str, offset: str | None, protocol: int | None, frames=None, count: int = 1,
            extra=()) -> None:
        """Count `count` events of one group; ``frames`` is its call chain (function names, innermost first)
        or None, ``extra`` the values of ``extra_fields``."""
        self._add((reason, location, offset, protocol) + tuple(extra), frames, count)

    def _add(self, key: tuple, frames, count: int = 1) -> None:
        self.events += count
        groups = self._groups
        held = groups.get(key)
        if held is not None:
            groups[key] = held + count
        elif len(groups) < self.max_groups:
            groups[key] = count
        else:
            self.overflow_events += count
        if frames:
            stack_key = (key[0], key[1], tuple(frames[:self.max_frames]))
            stacks = self._stacks
            held = stacks.get(stack_key)
            if held is not None:
                stacks[stack_key] = held + count
            elif len(stacks) < self.max_stacks:
                stacks[(stack_key[0], stack_key[1], tuple(sys.intern(frame) for frame in stack_key[2]))] = count
            else:
                self.overflow_stacks += 1

    def result(self, top: int = 50, top_stacks: int = 10, locator=None, subsystem_names=None) -> dict:
        """The largest groups and stacks, and what is left (see docs/run-format.md, ``capture``).

        ``drops`` holds at most ``top`` groups sorted by count (descending), then by their key fields
        (reason, location, offset, protocol, extra fields; a missing value first); ``other`` sums the
        rest, overflowed events included (they count as one more group). ``stacks`` holds the
        ``top_stacks`` largest stacks. The keys ``events``, ``drops``, ``other`` and ``stacks`` are
        those of the capture dict. A location that is a raw address or a hashed pointer is named by
        ``locator`` (default: a ``kallsyms.Locator`` of this host's /proc/kallsyms) and the result then
        carries ``locations`` (what was resolved and why the rest could not be): no pointer leaves the host.
        Subsystem reasons (``"0x20001"``) stay as they are in the groups; ``subsystem_reasons`` names the ones
        this kernel's BTF names (``subsystem_names``, default ``subsystem_reason_names``).
        """
        groups = self._groups
        locator = locator if locator is not None else Locator()
        if any(raw_address(key[1]) is not None or is_hashed_pointer(key[1]) for key in groups if key[1]):
            # Raw addresses (perf on %p kernels) are named here, on the host; groups that turn out to be
            # the same function and offset are merged. Hashed pointers become "unavailable".
            named = {}
            for key, count in groups.items():
                location, offset = locator.name(key[1], key[2], count)
                key = (key[0], location, offset) + key[3:]
                named[key] = named.get(key, 0) + count
            groups = named
        ordered = sorted(groups.items(), key=_group_order)
        drops = []
        for key, count in ordered[:top]:
            drop = dict(zip(self.fields, key))  # noqa: B905 (zip's strict= needs Python 3.10; targets run 3.8)
            drop["protocol"] = protocol_name(drop["protocol"])
            drop["count"] = count
            drops.append(drop)
        rest = ordered[top:]
        other = {
            "count": sum(count for _key, count in rest) + self.overflow_events,
            "groups": len(rest) + (1 if self.overflow_events else 0),
        }
        stacks = {}
        for (reason, location, frames), count in self._stacks.items():
            location = locator.name(location, None, 0)[0]
            stacks[(reason, location, frames)] = stacks.get((reason, location, frames), 0) + count
        stacks = sorted(stacks.items(), key=lambda item: (-item[1], item[0][0], item[0][1], item[0][2]))
        result = {
            "events": self.events,
            "drops": drops,
            "other": other,
            "stacks": [{"reason": reason, "location": location, "frames": list(frames), "count": count}
                       for (reason, location, frames), count in stacks[:top_stacks]],
        }
        summary = locator.summary()
        if summary:
            result["locations"] = summary
        raw = sorted(set(drop["reason"] for drop in drops if _SUBSYSTEM_REASON.match(drop["reason"] or "")))
        if raw:
            named = (subsystem_names or subsystem_reason_names)(raw)
            if named:
                result["subsystem_reasons"] = named
        return result


def _group_order(item: tuple) -> tuple:
    """Sort key of a (group key, count) item: largest count first, then the key, None before any value."""
    key, count = item
    return (-count,) + tuple((value is not None, value) for value in key)


def aggregate_perf_script(lines, reasons: dict | None = None, aggregator: DropAggregator | None = None) -> tuple:
    """Aggregate a stream of ``perf script`` lines; returns ``(aggregator, lost_events)``.

    ``lines`` is any iterable of str (trailing newlines allowed), read once: ``perf script -F trace
    --show-lost-events`` or, with ``perf record -g``, ``-F trace,ip,sym`` (call chain lines follow
    their event; the first ``MAX_FRAMES`` are kept). Plain ``perf script`` output works too.
    ``lost_events`` sums the ``PERF_RECORD_LOST lost N`` lines. Call ``aggregator.result()`` for the
    report; other lines (blank, other events) are ignored.
    """
    agg = aggregator if aggregator is not None else DropAggregator()
    max_frames = agg.max_frames
    add = agg._add
    cache = {}
    lost = 0
    pending = None
    frames = []
    frame_cache = {}
    for line in lines:
        if line[:1] == "\t":
            # A call chain line (perf starts them with a tab); it belongs to the pending event.
            if pending is not None and len(frames) < max_frames:
                frame = frame_cache.get(line)
                if frame is None:
                    frame = parse_perf_stack_line(line)
                    if frame is None:
                        continue
                    if len(frame_cache) >= _FRAME_CACHE_SIZE:
                        frame_cache.clear()
                    frame_cache[line] = frame
                frames.append(frame)
            continue
        if pending is not None:
            add(pending, frames)
            pending = None
            if frames:
                frames = []
        at = line.find("protocol=")
        if at >= 0:
            tail = line[at:]
            key = cache.get(tail)
            if key is None:
                trace = _trace_part(line)
                if trace is None:
                    continue
                key = _parse_trace(trace, reasons)
                if len(cache) >= _TAIL_CACHE_SIZE:
                    cache.clear()
                cache[tail] = key
            elif not (line.startswith("skbaddr=") or _EVENT_NAME in line or line.lstrip(" ").startswith("skbaddr=")):
                continue  # same tail, but not a kfree_skb event line
            pending = key
            continue
        count = parse_perf_lost_line(line) if "PERF_RECORD_LOST" in line else None
        if count is not None:
            lost += count
        elif _EVENT_NAME in line:
            pending = _parse_trace(_trace_part(line), reasons)  # an event line without protocol=
    if pending is not None:
        add(pending, frames)
    return agg, lost
