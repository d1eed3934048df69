# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# The docstring samples are verbatim kernel/tool output lines, some longer than 120 characters.
# ruff: noqa: E501
"""UDP sockets and their drop counters: ``/proc/net/udp`` and ``/proc/net/udp6``.

Pure functions (standard library only); they run on the managed host.

The kernel prints each address as 32-bit words with ``%08X``: the word is the network-order
address as it lies in memory, read as a host integer. On a little-endian host 127.0.0.1 reads
``0100007F``; on a big-endian host (s390x) ``7F000001``. Decoding therefore uses the byte order
of the host the text was read on (``sys.byteorder`` unless told otherwise).
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import ipaddress
import sys

# sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ref pointer drops
_COLUMNS = 13


def decode_address(hex_text: str, byteorder: str | None = None) -> str:
    """Turn the kernel's hex address (8 or 32 hex digits) into text.

    ``0100007F`` -> ``127.0.0.1`` (little-endian host); ``00000000000000000000000001000000`` ->
    ``::1``. IPv6 text is compressed (RFC 5952); an IPv4-mapped address is always written
    ``::ffff:1.2.3.4`` (Python 3.13 changed ``str()`` for those, older versions print
    ``::ffff:102:304``; hosts must agree).
    """
    order = byteorder or sys.byteorder
    if len(hex_text) not in (8, 32):
        raise ValueError("address %r has %d hex digits, expected 8 or 32" % (hex_text, len(hex_text)))
    packed = b"".join(int(hex_text[i:i + 8], 16).to_bytes(4, order) for i in range(0, len(hex_text), 8))
    if len(packed) == 4:
        return str(ipaddress.IPv4Address(packed))
    address = ipaddress.IPv6Address(packed)
    if address.ipv4_mapped is not None:
        return "::ffff:%s" % address.ipv4_mapped
    return address.compressed


def parse_proc_net_udp(text: str, proto: str = "udp", byteorder: str | None = None) -> list[dict]:
    """Parse ``/proc/net/udp`` (``proto="udp"``) or ``/proc/net/udp6`` (``proto="udp6"``).

    Sample (kernel 6.18, x86_64; a socket bound to 127.0.0.1:9000 with a tiny SO_RCVBUF that was
    sent 50 datagrams and never read):

    >>> sockets = parse_proc_net_udp('''   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
    ...  1896: 0100007F:2328 00000000:0000 07 00000000:00000680 00:00000000 00000000     0        0 35361 2 000000001acd4bb7 48
    ...  2624: 00000000:E600 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 35363 2 000000009020b42c 0
    ... ''')
    >>> sockets[0]
    {'proto': 'udp', 'local_address': '127.0.0.1', 'local_port': 9000, 'inode': 35361, 'drops': 48}
    >>> sockets[1]["local_address"], sockets[1]["local_port"], sockets[1]["drops"]
    ('0.0.0.0', 58880, 0)

    It gives ``[{"proto": "udp", "local_address": "127.0.0.1", "local_port": 9000, "inode": 35361,
    "drops": 48}, {"proto": "udp", "local_address": "0.0.0.0", "local_port": 58880, "inode": 35363,
    "drops": 0}]``. ``/proc/net/udp6`` has the same columns with 32-digit addresses
    (``00000000000000000000000001000000:232E`` is ``::1`` port 9006).

    Raises ValueError naming ``/proc/net/udp`` (or ``udp6``) when the header is missing, a line has
    the wrong number of columns or a field cannot be decoded.
    """
    return socket_table(text, "/proc/net/%s" % proto, lambda fields, local: {
        "proto": proto, "local_address": local[0], "local_port": local[1], "inode": int(fields[9]),
        "drops": int(fields[12])}, byteorder, columns=_COLUMNS)


def socket_table(text, source, row, byteorder=None, columns=None, at_least=0):
    """The rows of a /proc/net socket table (udp, udp6, tcp, tcp6): ``row(fields, (local address, local
    port))`` of each socket line, None rows left out.

    Raises ValueError naming `source` when the header is missing, a line does not have `columns` (or at
    least `at_least`) columns, or a field cannot be decoded (by this function or by `row`).
    """
    lines = text.splitlines()
    if not lines or lines[0].split()[:1] != ["sl"]:
        raise ValueError("%s: does not start with the 'sl local_address ...' header line" % source)
    result = []
    for number, line in enumerate(lines[1:], 2):
        fields = line.split()
        if not fields:
            continue
        if columns and len(fields) != columns:
            raise ValueError("%s: line %d has %d columns, expected %d" % (source, number, len(fields), columns))
        if len(fields) < at_least:
            raise ValueError("%s: line %d has %d columns, expected at least %d" % (source, number, len(fields), at_least))
        address, sep, port = fields[1].partition(":")
        try:
            if not sep:
                raise ValueError("no ':' in %r" % fields[1])
            entry = row(fields, (decode_address(address, byteorder), int(port, 16)))
        except ValueError as exc:
            raise ValueError("%s: line %d cannot be decoded: %s" % (source, number, exc)) from None
        if entry is not None:
            result.append(entry)
    return result
