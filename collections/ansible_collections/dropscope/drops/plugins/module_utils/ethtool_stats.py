# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Driver statistics printed by ``ethtool -S IF``.

Pure function (standard library only); it runs on the managed host. The caller handles the exit
status: ``ethtool -S lo`` exits 94 and prints ``no stats available`` on stderr, nothing on stdout.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

HEADER = "NIC statistics:"


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
    ``:``. Values that are not integers are skipped, and so are lines without ``:``. A name the
    driver prints twice keeps every value: the second becomes ``NAME#2``, the third ``NAME#3``.

    Raises ValueError naming ``source`` when the ``NIC statistics:`` header is missing.
    """
    lines = text.splitlines()
    start = 0
    while start < len(lines) and not lines[start].strip():
        start += 1
    if start >= len(lines) or lines[start].strip() != HEADER:
        raise ValueError("%s: output does not start with %r" % (source, HEADER))
    result = {}
    for line in lines[start + 1:]:
        name, sep, value = line.rpartition(":")
        name = name.strip()
        if not sep or not name:
            continue
        try:
            number = int(value.strip())
        except ValueError:
            continue
        key = name
        copy = 1
        while key in result:
            copy += 1
            key = "%s#%d" % (name, copy)
        result[key] = number
    return result
