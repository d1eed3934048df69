# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Driver statistics printed by ``ethtool -S IF``.

Pure function (standard library only); it runs on the managed host. The caller handles the exit
status: ``ethtool -S lo`` exits 94 and prints ``no stats available`` on stderr, nothing on stdout.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import re

HEADER = "NIC statistics:"
# vmxnet3 (drivers/net/vmxnet3/vmxnet3_ethtool.c) prints each queue's counters under a "Tx Queue#: N" /
# "Rx Queue#: N" line whose value is the queue index, and repeats the same names in every queue.
_QUEUE_HEADER = re.compile(r"^(Tx|Rx) Queue#$")


def parse_ethtool_stats(text: str, source: str = "ethtool -S") -> dict[str, int]:
    """Parse ``ethtool -S IF`` output into ``{stat_name: value}``.

    Sample (a veth, kernel 6.18, ethtool 6.1):

    >>> stats = parse_ethtool_stats('''NIC statistics:
    ...      peer_ifindex: 132
    ...      rx_queue_0_xdp_packets: 0
    ...      rx_queue_0_drops: 0
    ...      tx_queue_0_xdp_xmit_errors: 0
    ... ''')
    >>> stats
    {'peer_ifindex': 132, 'rx_queue_0_xdp_packets': 0, 'rx_queue_0_drops': 0, 'tx_queue_0_xdp_xmit_errors': 0}

    Names are kept as the driver gives them, with inner spaces, dots, dashes or brackets
    (``tx-0.packets``, ``rx_pkts_[0]``, ``rx queue 0 drops``); the value is what follows the last
    ``:``. Values that are not integers are skipped, and so are lines without ``:``.

    vmxnet3 prints per-queue blocks: a ``Tx Queue#: 0`` / ``Rx Queue#: 1`` line (its value is the
    queue index, not a counter, and is not kept) followed by more indented lines with the same
    names in every queue, some of them indented further under a total. Their names get the queue
    and the total they belong to: ``rx_queue_1.pkts rx OOB``, ``tx_queue_0.ring full``,
    ``tx_queue_0.drv dropped tx total.giant hdr`` (the one under the total) next to
    ``tx_queue_0.giant hdr``. A line indented like the queue line (``tx timeout count``) ends the
    block. Sample (lines of a vmxnet3's ``ethtool -S``, published in ethq's tests):

    >>> vmxnet3 = parse_ethtool_stats('''NIC statistics:
    ...      Rx Queue#: 1
    ...        ucast pkts rx: 143523
    ...        pkts rx OOB: 0
    ...        drv dropped rx total: 0
    ...           err: 0
    ...           fcs: 0
    ...        rx buf alloc fail: 0
    ...      tx timeout count: 0
    ... ''')
    >>> vmxnet3  # doctest: +NORMALIZE_WHITESPACE
    {'rx_queue_1.ucast pkts rx': 143523, 'rx_queue_1.pkts rx OOB': 0, 'rx_queue_1.drv dropped rx total': 0,
     'rx_queue_1.drv dropped rx total.err': 0, 'rx_queue_1.drv dropped rx total.fcs': 0,
     'rx_queue_1.rx buf alloc fail': 0, 'tx timeout count': 0}

    Any other name the driver prints twice keeps every value: the second becomes
    ``NAME#2``, the third ``NAME#3``.

    Raises ValueError naming ``source`` when the ``NIC statistics:`` header is missing.
    """
    lines = text.splitlines()
    start = 0
    while start < len(lines) and not lines[start].strip():
        start += 1
    if start >= len(lines) or lines[start].strip() != HEADER:
        raise ValueError("%s: output does not start with %r" % (source, HEADER))
    result = {}
    queue = None  # (indent of the "Tx Queue#" line, "tx_queue_N", [(indent, name) of enclosing totals])
    for line in lines[start + 1:]:
        name, sep, value = line.rpartition(":")
        indent = len(name) - len(name.lstrip())
        name = name.strip()
        if not sep or not name:
            continue
        try:
            number = int(value.strip())
        except ValueError:
            continue
        if queue is not None and indent <= queue[0]:
            queue = None
        header = _QUEUE_HEADER.match(name)
        if header:
            queue = (indent, "%s_queue_%d" % (header.group(1).lower(), number), [])
            continue
        if queue is not None:
            totals = queue[2]
            while totals and totals[-1][0] >= indent:
                totals.pop()
            name_in_block = ".".join([queue[1]] + [total for _indent, total in totals] + [name])
            totals.append((indent, name))
            name = name_in_block
        key = name
        copy = 1
        while key in result:
            copy += 1
            key = "%s#%d" % (name, copy)
        result[key] = number
    return result


# `ethtool -i IF` field -> our name (the fields advice per driver needs).
_INFO_FIELDS = (("driver", "driver"), ("version", "version"), ("firmware-version", "firmware_version"),
                ("bus-info", "bus_info"))


def parse_ethtool_info(text: str, source: str = "ethtool -i") -> dict[str, str | None]:
    """Parse ``ethtool -i IF`` (the driver's identity) into ``{driver, version, firmware_version, bus_info}``.

    Sample (this project's build machine, eth0: virtio_net, kernel 6.18, ethtool 6.1; ethtool prints a space
    after the colon of an empty field, left out here):

    >>> parse_ethtool_info('''driver: virtio_net
    ... version: 1.0.0
    ... firmware-version:
    ... expansion-rom-version:
    ... bus-info: 0000:00:03.0
    ... supports-statistics: yes
    ... ''')
    {'driver': 'virtio_net', 'version': '1.0.0', 'firmware_version': None, 'bus_info': '0000:00:03.0'}

    A field that is empty or missing (older ethtool prints no ``expansion-rom-version``) is None;
    other fields are not kept. Raises ValueError naming ``source`` when there is no ``driver:`` line
    or it is empty. ``ethtool -i lo`` exits 71 (``Cannot get driver information: Operation not
    supported``): the caller handles the exit status.
    """
    values = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            values.setdefault(name.strip(), value.strip())
    if not values.get("driver"):
        first = next((line for line in text.splitlines() if line.strip()), "")
        raise ValueError("%s: no driver line (first line: %r)" % (source, first[:120]))
    return dict((ours, values.get(theirs) or None) for theirs, ours in _INFO_FIELDS)
