# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Ring sizes and channels of a NIC: ``ethtool -g IF`` and ``ethtool -l IF``.

Pure functions (standard library only); they run on the managed host. Both outputs have the same shape:
a title line, ``Pre-set maximums:`` and ``Current hardware settings:``, each followed by ``Name: value``
lines. Values are numbers, ``n/a`` (the driver does not have that ring or channel kind) or, in older
ethtool, ``0`` for the same. Lines after the two blocks that are not ring sizes (``RX Buf Len``, ``CQE
Size``, ``TX Push``, ``TCP data split`` of ethtool 6.x) are left out.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

RING_FIELDS = {"rx": "rx", "rx mini": "rx_mini", "rx jumbo": "rx_jumbo", "tx": "tx"}
CHANNEL_FIELDS = {"rx": "rx", "tx": "tx", "other": "other", "combined": "combined"}


def _parse_blocks(text, source, fields):
    """{field: current, field_max: maximum} from the two blocks; numbers only (n/a and text are left out)."""
    block = None
    result = {}
    seen = False
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped:
            continue
        lowered = stripped.lower()
        if lowered.startswith("pre-set maximums"):
            block, seen = "_max", True
            continue
        if lowered.startswith("current hardware settings"):
            block, seen = "", True
            continue
        if block is None:
            continue  # the title line ("Ring parameters for eth0:") or an error message before it
        name, sep, value = stripped.partition(":")
        key = fields.get(name.strip().lower())
        if not sep or key is None:
            continue
        value = value.strip().split()[0] if value.strip() else ""
        if value.isdigit():
            result[key + block] = int(value)
        elif value not in ("", "n/a"):
            raise ValueError("%s: line %d: %r is not a number or n/a" % (source, number, value))
    if not seen:
        raise ValueError("%s: no 'Pre-set maximums' or 'Current hardware settings' block" % source)
    return result


def parse_ethtool_rings(text, source="ethtool -g"):
    """Parse ``ethtool -g IF``: ``{"rx": n, "rx_max": n, "tx": n, "tx_max": n}`` (+ ``rx_mini``, ``rx_jumbo``).

    Sample (ethtool 6.1, virtio_net on kernel 6.18, ``tests/data/ethtool_g_virtio_net.txt``):

    >>> parse_ethtool_rings('''Ring parameters for eth0:
    ... Pre-set maximums:
    ... RX:\\t\\t256
    ... RX Mini:\\tn/a
    ... RX Jumbo:\\tn/a
    ... TX:\\t\\t256
    ... Current hardware settings:
    ... RX:\\t\\t256
    ... RX Mini:\\tn/a
    ... RX Jumbo:\\tn/a
    ... TX:\\t\\t256
    ... RX Buf Len:\\t\\tn/a
    ... CQE Size:\\t\\tn/a
    ... TX Push:\\toff
    ... TCP data split:\\tn/a
    ... ''')
    {'rx_max': 256, 'tx_max': 256, 'rx': 256, 'tx': 256}

    Older ethtool prints ``0`` for ring kinds the driver lacks (``RX Mini: 0``); they are kept as 0.
    Raises ValueError naming the source when neither block is there (an error message instead of
    the settings) or a ring size is not a number.
    """
    return _parse_blocks(text, source, RING_FIELDS)


def parse_ethtool_channels(text, source="ethtool -l"):
    """Parse ``ethtool -l IF``: ``{"combined": n, "combined_max": n, …}`` (rx, tx, other, combined; numbers only).

    Sample (ethtool 6.1, a veth on kernel 6.18, ``tests/data/ethtool_l_veth.txt``):

    >>> parse_ethtool_channels('''Channel parameters for dslead-h1:
    ... Pre-set maximums:
    ... RX:\\t\\t2
    ... TX:\\t\\t2
    ... Other:\\t\\tn/a
    ... Combined:\\tn/a
    ... Current hardware settings:
    ... RX:\\t\\t1
    ... TX:\\t\\t1
    ... Other:\\t\\tn/a
    ... Combined:\\tn/a
    ... ''')
    {'rx_max': 2, 'tx_max': 2, 'rx': 1, 'tx': 1}
    """
    return _parse_blocks(text, source, CHANNEL_FIELDS)
