# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# The docstring samples are verbatim tool output lines, some longer than 120 characters.
# ruff: noqa: E501
"""Queueing discipline counters: ``tc -s -j qdisc show`` and ``tc -s qdisc show`` (all devices).

Pure functions (standard library only); they run on the managed host. Ask for all devices: with
``show dev X`` tc leaves ``dev`` out of both outputs.

Which output to read, by iproute2 version (read from outputs of iproute2 4.14.1, 4.15.0, 5.4.0 and
6.1.0 built from their release tags, and published outputs of other hosts; see tests/data/README.md):

- before 4.15 (RHEL 7, Ubuntu 16.04 userland) ``-j`` does not exist (``Option "-j" is unknown``):
  only the text output, :func:`parse_tc_qdisc_text`;
- 4.15 to 5.4 print some qdiscs' ``options`` as bare text inside the JSON, e.g.
  ``"options": {rate 1Mbit burst 1600b lat 0us }``: pfifo_fast until 4.16, fq_codel ``-s``
  statistics and ingress until 4.17, pfifo/bfifo until 4.19, netem until 5.3, tbf until 5.5 (the
  releases whose iproute2 commits fixed them). That is not JSON: :func:`parse_tc_qdisc` keeps every
  entry that is valid and takes the broken ones from the text output;
- 5.5 and later: valid JSON, :func:`parse_tc_qdisc_json`.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import json
import re

SOURCE = "tc -s -j qdisc show"
TEXT_SOURCE = "tc -s qdisc show"

# tc JSON key -> our name. The first three must be there (they are when -s is given).
_REQUIRED = (("bytes", "bytes"), ("packets", "packets"), ("drops", "dropped"))
_OPTIONAL = (("overlimits", "overlimits"), ("requeues", "requeues"), ("backlog", "backlog"), ("qlen", "qlen"))


def parse_tc_qdisc_json(text: str) -> dict[str, dict]:
    """Parse ``tc -s -j qdisc show`` into ``{"DEV KIND HANDLE": {...}}``.

    Sample (iproute2 6.1, kernel 6.18, a tbf that dropped 197 datagrams of a 200-datagram burst):

    >>> qdiscs = parse_tc_qdisc_json('''[{"kind":"tbf","handle":"8006:","dev":"dsp-a","root":true,"refcnt":3,
    ...   "options":{"rate":125000,"burst":1600,"lat":0},"bytes":3594,"packets":9,"drops":197,
    ...   "overlimits":198,"requeues":0,"backlog":0,"qlen":0}]
    ... ''')
    >>> qdiscs["dsp-a tbf 8006:"]["dropped"], qdiscs["dsp-a tbf 8006:"]["parent"], qdiscs["dsp-a tbf 8006:"]["overlimits"]
    (197, 'root', 198)

    It gives ``{"dsp-a tbf 8006:": {"dev": "dsp-a", "kind": "tbf", "handle": "8006:", "parent": "root",
    "bytes": 3594, "packets": 9, "dropped": 197, "overlimits": 198, "requeues": 0, "backlog": 0,
    "qlen": 0}}``. ``parent`` is ``"root"`` for a root qdisc, else tc's parent handle (an ingress
    qdisc: ``"ffff:fff1"``). ``backlog`` is in bytes and, like ``qlen``, a level, not a counter.

    Several qdiscs of one device can share kind and handle (the ``pfifo_fast 0:`` children of an
    ``mq`` root, one per TX queue); those keys get their parent appended: ``"eth0 pfifo_fast 0:
    parent :1"``. Missing ``overlimits``/``requeues``/``backlog``/``qlen`` count as 0.

    Raises ValueError naming ``tc -s -j qdisc show`` when the text is not a JSON list of objects,
    or an entry lacks ``dev`` (``show dev X`` was asked), ``kind``, ``handle`` or the counters
    ``bytes``/``packets``/``drops`` (``-s`` was not given), or a counter is not an integer.
    """
    entries = _json_list(text, SOURCE)
    return _keyed([_qdisc_from_entry(entry, position) for position, entry in enumerate(entries)])


def _json_list(text: str, source: str) -> list:
    """tc's JSON output as a list (ValueError naming SOURCE when it is not JSON or not a list)."""
    try:
        entries = json.loads(text)
    except ValueError as exc:
        raise ValueError("%s: output is not JSON: %s" % (source, exc)) from None
    if not isinstance(entries, list):
        raise ValueError("%s: output is a JSON %s, expected a list" % (source, type(entries).__name__))
    return entries


def _qdisc_from_entry(entry, position: int) -> dict:
    """One decoded ``tc -j`` entry -> our qdisc dict (ValueError naming the entry when it is incomplete)."""
    if not isinstance(entry, dict):
        raise ValueError("%s: entry %d is not a JSON object" % (SOURCE, position))
    for key in ("dev", "kind", "handle"):
        if not isinstance(entry.get(key), str):
            hint = " (ask for all devices: 'show dev X' leaves it out)" if key == "dev" else ""
            raise ValueError("%s: entry %d has no %r%s" % (SOURCE, position, key, hint))
    qdisc = {
        "dev": entry["dev"],
        "kind": entry["kind"],
        "handle": entry["handle"],
        "parent": "root" if entry.get("root") is True else entry.get("parent"),
    }
    name = _name(qdisc)
    for key, ours in _REQUIRED + _OPTIONAL:
        value = entry.get(key, 0 if (key, ours) in _OPTIONAL else None)
        if value is None:
            raise ValueError("%s: qdisc %r has no %r counter (was -s given?)" % (SOURCE, name, key))
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("%s: qdisc %r counter %r is not an integer: %r" % (SOURCE, name, key, value))
        qdisc[ours] = value
    return qdisc


def _name(qdisc: dict) -> str:
    return "%s %s %s" % (qdisc["dev"], qdisc["kind"], qdisc["handle"])


def _keyed(qdiscs: list) -> dict[str, dict]:
    """``{"DEV KIND HANDLE": qdisc}``; names shared by several qdiscs get `` parent P`` (then `` #N``)."""
    counts = {}
    for qdisc in qdiscs:
        counts[_name(qdisc)] = counts.get(_name(qdisc), 0) + 1
    result = {}
    for qdisc in qdiscs:
        name = _name(qdisc)
        key = name if counts[name] == 1 else "%s parent %s" % (name, qdisc["parent"])
        unique, copy = key, 1
        while unique in result:
            copy += 1
            unique = "%s #%d" % (key, copy)
        result[unique] = qdisc
    return result


# "qdisc KIND HANDLE: [dev DEV] (root | parent MAJ:MIN | ingress) [OPTIONS...]" (tc/tc_qdisc.c print_qdisc)
_TEXT_HEAD = re.compile(r"^qdisc (\S+) ([0-9a-f]*:[0-9a-f]*)(?: dev (\S+))? (?:(root)|parent (\S+)|(ingress))(?=\s|$)")
# " Sent B bytes P pkt (dropped D, overlimits O requeues R) " (tc/tc_util.c print_tcstats_attr)
_TEXT_SENT = re.compile(r"^Sent (\d+) bytes (\d+) pkt \(dropped (\d+), overlimits (\d+) requeues (\d+)\)$")
# " backlog 0b 0p requeues 0" or, with a rate estimator, " rate 0bit 0pps backlog 0b 0p requeues 0"
_TEXT_BACKLOG = re.compile(r"(?:^|\s)backlog (\d+)(b|Kb|Mb) (\d+)p(?=\s|$)")
_SIZE_UNITS = {"b": 1, "Kb": 1024, "Mb": 1024 * 1024}


def parse_tc_qdisc_text(text: str) -> dict[str, dict]:
    """Parse ``tc -s qdisc show`` (text) into the shape :func:`parse_tc_qdisc_json` gives.

    Sample (iproute2 4.14.1, which has no ``-j``; a tbf whose pfifo child of limit 5 dropped 194 of
    a 200-datagram burst):

    >>> qdiscs = parse_tc_qdisc_text('''qdisc tbf 2: dev dh4c root refcnt 3 rate 1Mbit burst 1600b lat 787.2ms
    ...  Sent 6252 bytes 6 pkt (dropped 194, overlimits 207 requeues 0)
    ...  backlog 0b 0p requeues 0
    ... qdisc pfifo 20: dev dh4c parent 2:1 limit 5p
    ...  Sent 6252 bytes 6 pkt (dropped 194, overlimits 0 requeues 0)
    ...  backlog 0b 0p requeues 0
    ... ''')
    >>> qdiscs["dh4c pfifo 20:"]  # doctest: +NORMALIZE_WHITESPACE
    {'dev': 'dh4c', 'kind': 'pfifo', 'handle': '20:', 'parent': '2:1', 'bytes': 6252, 'packets': 6, 'dropped': 194,
     'overlimits': 0, 'requeues': 0, 'backlog': 0, 'qlen': 0}
    >>> qdiscs["dh4c tbf 2:"]["parent"], qdiscs["dh4c tbf 2:"]["overlimits"]
    ('root', 207)

    Each qdisc is its ``qdisc ...`` line, then `` Sent ...`` and `` backlog ...`` (older tc and
    qdiscs with a rate estimator: `` rate 0bit 0pps backlog ...``); further lines of a qdisc
    (fq_codel's ``maxpacket ...``, cake's tables) are skipped. The format has been the same from
    iproute2 3.x to 6.x (4.14 ends the backlog line with a space; 6.1 does not). ``parent`` is
    ``"root"``, tc's parent handle (``"1:2"``, ``":1"``, ``"ffff:fff1"``) or ``"ingress"``.
    ``backlog`` is in bytes; tc prints large backlogs rounded (``12Kb``, ``1Mb``), which give
    12 * 1024 and 1024 * 1024 (the JSON output has the exact number).

    Raises ValueError naming ``tc -s qdisc show`` and the line when a ``qdisc`` line has no device
    (``show dev X`` was asked) or an unknown shape, a qdisc has no ``Sent`` line (``-s`` was not
    given) or no ``backlog``, or text comes before the first ``qdisc`` line.
    """
    qdiscs = []
    current = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if raw.startswith("qdisc "):
            if current is not None:
                _finish_text_qdisc(current)
            head = _TEXT_HEAD.match(line)
            if head is None:
                raise ValueError("%s: line %d: not a qdisc line tc prints: %r" % (TEXT_SOURCE, number, line[:200]))
            if head.group(3) is None:
                raise ValueError("%s: line %d: qdisc has no 'dev' (ask for all devices: 'show dev X' leaves it out): %r"
                                 % (TEXT_SOURCE, number, line[:200]))
            parent = "root" if head.group(4) else (head.group(5) or "ingress")
            current = {"dev": head.group(3), "kind": head.group(1), "handle": head.group(2), "parent": parent,
                       "_line": number}
            qdiscs.append(current)
            continue
        if current is None:
            raise ValueError("%s: line %d comes before the first 'qdisc' line: %r" % (TEXT_SOURCE, number, line[:200]))
        sent = _TEXT_SENT.match(line)
        if sent and "bytes" not in current:
            for index, key in enumerate(("bytes", "packets", "dropped", "overlimits", "requeues")):
                current[key] = int(sent.group(index + 1))
            continue
        backlog = _TEXT_BACKLOG.search(line)
        if backlog and "bytes" in current and "backlog" not in current:
            current["backlog"] = int(backlog.group(1)) * _SIZE_UNITS[backlog.group(2)]
            current["qlen"] = int(backlog.group(3))
    if current is not None:
        _finish_text_qdisc(current)
    return _keyed(qdiscs)


def _finish_text_qdisc(qdisc: dict) -> None:
    line = qdisc.pop("_line")
    if "bytes" not in qdisc:
        raise ValueError("%s: qdisc %r (line %d) has no 'Sent' line (was -s given?)"
                         % (TEXT_SOURCE, _name(qdisc), line))
    if "backlog" not in qdisc:
        raise ValueError("%s: qdisc %r (line %d) has no 'backlog' line" % (TEXT_SOURCE, _name(qdisc), line))
    for key in ("bytes", "packets", "dropped", "overlimits", "requeues", "backlog", "qlen"):
        qdisc[key] = qdisc.pop(key)  # the same key order as the JSON parser's


def _json_array_items(text: str) -> list:
    """The top-level items of a JSON array, as text, found by matching brackets outside strings.

    tc 4.15-5.4 print some qdiscs' options as bare text (``{rate 1Mbit burst 1600b lat 0us }``);
    the brackets still balance, so each entry can be cut out and decoded on its own.
    """
    body = text.strip()
    if not body.startswith("[") or not body.endswith("]"):
        raise ValueError("%s: output is not a JSON list (it does not start with '[' and end with ']')" % SOURCE)
    items, depth, start, in_string, escaped = [], 0, None, False, False
    for index in range(1, len(body) - 1):
        char = body[index]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            continue
        if char == '"':
            in_string = True
        elif char in "{[":
            if depth == 0:
                start = index
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth < 0:
                raise ValueError("%s: unbalanced '%s' at offset %d" % (SOURCE, char, index))
            if depth == 0:
                items.append(body[start:index + 1])
        elif depth == 0 and not char.isspace() and char != ",":
            raise ValueError("%s: unexpected %r between entries at offset %d" % (SOURCE, char, index))
    if depth != 0 or in_string:
        raise ValueError("%s: output ends inside an entry (truncated?)" % SOURCE)
    return items


def parse_tc_qdisc(json_text: str | None = None, text: str | None = None, from_text_keys: list | None = None) -> dict[str, dict]:
    """Qdisc counters from ``tc -s -j qdisc show`` and/or ``tc -s qdisc show``, whichever tc can give.

    - only `text` (iproute2 before 4.15 has no ``-j``): :func:`parse_tc_qdisc_text`;
    - `json_text` that is valid JSON: :func:`parse_tc_qdisc_json`;
    - `json_text` with entries that are not valid JSON (iproute2 4.15 to 5.4, see the module's
      doc): every entry is decoded on its own; the valid ones are kept, and each broken one is
      replaced by the qdisc at the same position of `text` (the same dump, in the same order). When
      the two outputs do not list the same qdiscs in the same order (one changed in between), all
      qdiscs come from `text`, one consistent listing.

    `from_text_keys`, when a list, gets the key of every qdisc that came from `text` (so the caller can say
    which ones tc could not print as JSON).

    Sample (iproute2 5.4.0, whose tbf options are bare text: one entry of its ``-s -j`` output):

    >>> broken = ('[{"kind":"tbf","handle":"3:","dev":"dh4e","root":true,"refcnt":3,"options":{rate 1Mbit burst 1600b lat 0us },'
    ...           '"bytes":2174,"packets":3,"drops":198,"overlimits":199,"requeues":0,"backlog":0,"qlen":0}]')
    >>> keys = []
    >>> qdiscs = parse_tc_qdisc(broken, text='''qdisc tbf 3: dev dh4e root refcnt 3 rate 1Mbit burst 1600b lat 0us
    ...  Sent 2174 bytes 3 pkt (dropped 198, overlimits 199 requeues 0)
    ...  backlog 0b 0p requeues 0
    ... ''', from_text_keys=keys)
    >>> qdiscs["dh4e tbf 3:"]["dropped"], qdiscs["dh4e tbf 3:"]["parent"], keys
    (198, 'root', ['dh4e tbf 3:'])

    Raises ValueError naming the source when neither output is given, when the JSON has broken
    entries and no `text` was given (the message names the first broken entry), and for every error
    of the two parsers (a JSON entry that decodes but lacks ``dev``/counters is an error, not a
    fallback: the text output has the same gap).
    """
    if json_text is None:
        if text is None:
            raise ValueError("%s: no output given (neither -j nor text)" % SOURCE)
        return _noting(parse_tc_qdisc_text(text), from_text_keys)
    try:
        json.loads(json_text)
    except ValueError:
        pass
    else:
        return parse_tc_qdisc_json(json_text)
    decoded = []
    for position, item in enumerate(_json_array_items(json_text)):
        try:
            entry = json.loads(item)
        except ValueError:  # this entry needs the text output
            decoded.append((position, item))
            continue
        decoded.append(_qdisc_from_entry(entry, position))
    broken = [entry for entry in decoded if isinstance(entry, tuple)]
    if not broken:
        return _keyed(decoded)
    if text is None:
        position, item = broken[0]
        raise ValueError("%s: entry %d is not valid JSON (%d of %d broken; give the text output too): %r"
                         % (SOURCE, position, len(broken), len(decoded), item[:120]))
    from_text = list(parse_tc_qdisc_text(text).values())
    identity = ("dev", "kind", "handle", "parent")
    aligned = len(from_text) == len(decoded) and all(
        isinstance(entry, tuple) or [entry[key] for key in identity] == [from_text[index][key] for key in identity]
        for index, entry in enumerate(decoded))
    if not aligned:
        return _noting(_keyed(from_text), from_text_keys)
    result = _keyed([from_text[index] if isinstance(entry, tuple) else entry for index, entry in enumerate(decoded)])
    if from_text_keys is not None:
        from_text_keys.extend(key for key, qdisc in result.items() if any(qdisc is entry for entry in from_text))
    return result


def _noting(qdiscs: dict, keys: list | None) -> dict:
    """QDISCS, with all their keys appended to KEYS (a list, or None: not asked)."""
    if keys is not None:
        keys.extend(qdiscs)
    return qdiscs


LIMITS_SOURCE = "tc -j qdisc show"


def parse_tc_qdisc_limits(text: str) -> dict[str, dict]:
    """Each qdisc's ``limit`` from ``tc -j qdisc show``: ``{"DEV KIND HANDLE": {"kind": KIND, "limit": N|None}}``.

    Keys are those of :func:`parse_tc_qdisc_json` (the snapshot's). ``limit`` is the qdisc's own option in
    tc's unit for its kind (packets for pfifo, fq, fq_codel, sfq; bytes for bfifo), None where the kind has
    none (pfifo_fast and noqueue follow the device's txqueuelen; tbf prints its limit as a latency).
    Sample (iproute2 6.1, ``tests/data/tc_qdisc_limits.json``):

    >>> limits = parse_tc_qdisc_limits('''[{"kind":"tbf","handle":"801c:","dev":"d1","root":true,"refcnt":3,
    ...   "options":{"rate":125000,"burst":1600,"lat":11200}},{"kind":"noqueue","handle":"0:","dev":"d0","root":true,
    ...   "refcnt":2,"options":{}},{"kind":"noqueue","handle":"0:","dev":"d3","root":true,"refcnt":2,"options":{}},
    ...   {"kind":"pfifo","handle":"801d:","dev":"d2","root":true,"refcnt":3,"options":{"limit":77}}]''')
    >>> limits["d2 pfifo 801d:"], limits["d1 tbf 801c:"]
    ({'kind': 'pfifo', 'limit': 77}, {'kind': 'tbf', 'limit': None})

    Entries whose ``options`` are not JSON (iproute2 4.15 to 5.4) make the whole text invalid: ValueError
    naming the source, as for the counters.
    """
    qdiscs = []
    for position, entry in enumerate(_json_list(text, LIMITS_SOURCE)):
        if not isinstance(entry, dict) or not all(isinstance(entry.get(key), str) for key in ("dev", "kind", "handle")):
            raise ValueError("%s: entry %d has no dev, kind or handle" % (LIMITS_SOURCE, position))
        options = entry.get("options") if isinstance(entry.get("options"), dict) else {}
        limit = options.get("limit")
        qdiscs.append({"dev": entry["dev"], "kind": entry["kind"], "handle": entry["handle"],
                       "parent": "root" if entry.get("root") is True else entry.get("parent"),
                       "limit": limit if isinstance(limit, int) and not isinstance(limit, bool) else None})
    return dict((key, {"kind": qdisc["kind"], "limit": qdisc["limit"]}) for key, qdisc in _keyed(qdiscs).items())
