# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# The docstring samples are verbatim kernel/tool output lines, some longer than 120 characters.
# ruff: noqa: E501
"""Protocol counters: ``/proc/net/snmp``, ``/proc/net/netstat`` and ``/proc/net/snmp6``.

Pure functions (standard library only); they run on the managed host. Names are nstat's: the
section prefix joined to the field name (``Udp`` + ``NoPorts`` -> ``UdpNoPorts``).
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

# Fields that are settings or current levels, not monotonic counters: a delta means nothing and a
# decrease is no reset. The first seven are nstat's own list (iproute2 misc/nstat.c,
# useless_numbers); MPTcpExtMPCurrEstab is the MPTCP twin of TcpCurrEstab (a level, printed in
# /proc/net/netstat by recent kernels such as 6.18).
GAUGES = frozenset({
    "IpForwarding",
    "IpDefaultTTL",
    "TcpRtoAlgorithm",
    "TcpRtoMin",
    "TcpRtoMax",
    "TcpMaxConn",
    "TcpCurrEstab",
    "MPTcpExtMPCurrEstab",
})


def _values(source: str, prefix: str, fields: list[str], number: int) -> list[int]:
    try:
        return [int(field) for field in fields]
    except ValueError:
        bad = next(field for field in fields if not _is_int(field))
        raise ValueError("%s: line %d ('%s:') has a value that is not an integer: %r"
                         % (source, number, prefix, bad)) from None


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def parse_proc_net_snmp(text: str, source: str = "/proc/net/snmp") -> dict[str, int]:
    """Parse the header/value line pairs of ``/proc/net/snmp`` or ``/proc/net/netstat``.

    Sample (``/proc/net/snmp``, kernel 6.18, two of its pairs):

    >>> snmp = parse_proc_net_snmp('''Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
    ... Udp: 0 0 48 53 48 197 0 0 0
    ... UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
    ... UdpLite: 0 0 0 0 0 0 0 0 0
    ... ''')
    >>> snmp["UdpInErrors"], snmp["UdpRcvbufErrors"], snmp["UdpSndbufErrors"], snmp["UdpLiteNoPorts"]
    (48, 48, 197, 0)

    It gives ``{"UdpInDatagrams": 0, "UdpNoPorts": 0, "UdpInErrors": 48, "UdpRcvbufErrors": 48,
    "UdpSndbufErrors": 197, ..., "UdpLiteInDatagrams": 0, ...}``. Values may be negative (the Tcp
    pair's MaxConn is -1, giving ``"TcpMaxConn": -1``). ``IcmpMsg: InType3`` gives ``IcmpMsgInType3``; ``/proc/net/netstat``'s ``TcpExt:
    ListenOverflows`` gives ``TcpExtListenOverflows``. A section printed as several pairs
    (IcmpMsg with many types) is merged.

    Raises ValueError naming ``source`` when a header has no value line, the two lines of a pair
    have different prefixes or different lengths, or a value is not an integer.
    """
    lines = [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    if len(lines) % 2:
        number, line = lines[-1]
        raise ValueError("%s: header line '%s' (line %d) has no value line"
                         % (source, line.split(":", 1)[0] + ":", number))
    result = {}
    for index in range(0, len(lines), 2):
        (head_no, head), (value_no, value) = lines[index], lines[index + 1]
        prefix, sep, names = head.partition(":")
        value_prefix, value_sep, values = value.partition(":")
        if not sep or not prefix.strip() or " " in prefix.strip():
            raise ValueError("%s: line %d is not a 'Prefix: names...' header: %r" % (source, head_no, head[:80]))
        prefix = prefix.strip()
        if not value_sep or value_prefix.strip() != prefix:
            raise ValueError("%s: header line '%s:' (line %d) is followed by %r, not its value line"
                             % (source, prefix, head_no, value[:80]))
        names = names.split()
        numbers = _values(source, prefix, values.split(), value_no)
        if len(names) != len(numbers):
            raise ValueError("%s: header line '%s:' has %d names but its value line has %d values"
                             % (source, prefix, len(names), len(numbers)))
        for name, number in zip(names, numbers):  # noqa: B905 (lengths checked; strict= needs py3.10)
            result[prefix + name] = number
    return result


def parse_proc_net_snmp6(text: str, source: str = "/proc/net/snmp6") -> dict[str, int]:
    """Parse ``/proc/net/snmp6`` (one ``Name value`` per line; names are already whole).

    Sample (kernel 6.18):

    >>> snmp6 = parse_proc_net_snmp6('''Ip6InReceives                   \t80
    ... Udp6NoPorts                     \t0
    ... Udp6InErrors                    \t48
    ... Udp6RcvbufErrors                \t48
    ... ''')
    >>> snmp6
    {'Ip6InReceives': 80, 'Udp6NoPorts': 0, 'Udp6InErrors': 48, 'Udp6RcvbufErrors': 48}

    The per-interface files ``/proc/net/dev_snmp6/IF`` have the same form (plus ``ifIndex``).

    Raises ValueError naming ``source`` when a line is not exactly a name and an integer.
    """
    result = {}
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise ValueError("%s: line %d has %d fields, expected 'Name value': %r"
                             % (source, number, len(fields), line[:80]))
        try:
            result[fields[0]] = int(fields[1])
        except ValueError:
            raise ValueError("%s: value of %s (line %d) is not an integer: %r"
                             % (source, fields[0], number, fields[1])) from None
    return result
