# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Queueing discipline counters: ``tc -s -j qdisc show`` (all devices of the network namespace).

Pure function (standard library only); it runs on the managed host. Ask for all devices: with
``show dev X`` tc leaves the ``dev`` key out of its JSON.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import json

SOURCE = "tc -s -j qdisc show"

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
    try:
        entries = json.loads(text)
    except ValueError as exc:
        raise ValueError("%s: output is not JSON: %s" % (SOURCE, exc)) from None
    if not isinstance(entries, list):
        raise ValueError("%s: output is a JSON %s, expected a list" % (SOURCE, type(entries).__name__))
    qdiscs = []
    for position, entry in enumerate(entries):
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
        name = "%s %s %s" % (qdisc["dev"], qdisc["kind"], qdisc["handle"])
        for key, ours in _REQUIRED + _OPTIONAL:
            value = entry.get(key, 0 if (key, ours) in _OPTIONAL else None)
            if value is None:
                raise ValueError("%s: qdisc %r has no %r counter (was -s given?)" % (SOURCE, name, key))
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError("%s: qdisc %r counter %r is not an integer: %r" % (SOURCE, name, key, value))
            qdisc[ours] = value
        qdiscs.append((name, qdisc))

    counts = {}
    for name, _qdisc in qdiscs:
        counts[name] = counts.get(name, 0) + 1
    result = {}
    for name, qdisc in qdiscs:
        key = name if counts[name] == 1 else "%s parent %s" % (name, qdisc["parent"])
        unique, copy = key, 1
        while unique in result:
            copy += 1
            unique = "%s #%d" % (key, copy)
        result[unique] = qdisc
    return result
