# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# The docstring samples are verbatim ss output lines, some longer than 120 characters.
# ruff: noqa: E501
"""A socket's own buffer and backlog: ``ss -n -e -m -u -a FILTER`` and ``ss -n -e -m -t -l FILTER``.

Pure functions (standard library only); they run on the managed host. /proc/net/udp gives a socket's
queue and drops but not its receive buffer; the kernel's sock_diag does (``INET_DIAG_SKMEMINFO``), and
``ss -m`` prints it as ``skmem:(r…,rb…,…)``: ``rb`` is ``sk_rcvbuf``, the receive buffer in bytes as the
kernel accounts it (SO_RCVBUF doubled, at least 2304), ``r`` what is queued now, ``d`` the drops. For a
listening TCP socket Recv-Q is the accept queue now and Send-Q its limit (the listen() backlog, capped
by net.core.somaxconn).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

_SKMEM = re.compile(r"skmem:\(([^)]*)\)")
_STATES = ("UNCONN", "ESTAB", "LISTEN", "SYN-SENT", "SYN-RECV", "FIN-WAIT-1", "FIN-WAIT-2", "TIME-WAIT",
           "CLOSE-WAIT", "LAST-ACK", "CLOSING", "CLOSE", "UNKNOWN")


def split_address(text):
    """``"127.0.0.1:9000"`` -> ``("127.0.0.1", 9000)``; ``"[::1]:9000"`` -> ``("::1", 9000)``; ``"*:22"`` -> ``("*", 22)``.

    An interface suffix (``0.0.0.0%eth0:68``) is dropped; a port ``*`` gives None.
    """
    address, _sep, port = text.rpartition(":")
    if address.startswith("[") and address.endswith("]"):
        address = address[1:-1]
    address = address.split("%", 1)[0]
    return address, (int(port) if port.isdigit() else None)


def parse_skmem(text):
    """``r1280,rb2304,t0,tb212992,f2816,w0,o0,bl0,d49`` -> ``{"r": 1280, "rb": 2304, …, "d": 49}``."""
    result = {}
    for item in text.split(","):
        match = re.match(r"^([a-z_]+)(\d+)$", item.strip())
        if match:
            result[match.group(1)] = int(match.group(2))
    return result


def parse_ss(text, source="ss"):
    """Parse ``ss -n -e -m`` output (UDP and/or TCP; with or without the Netid column).

    Sample (iproute2 6.1 on kernel 6.18: a UDP socket with SO_RCVBUF 1024 that was sent 50 datagrams and
    read none, and an IPv6 one; ``tests/data/ss_udp_skmem.txt``):

    >>> sockets = parse_ss('''State  Recv-Q Send-Q Local Address:Port  Peer Address:PortProcess
    ... UNCONN 1280   0          127.0.0.1:39001      0.0.0.0:*    ino:657690 sk:1012 cgroup:/ <->
    ... \\t skmem:(r1280,rb2304,t0,tb212992,f2816,w0,o0,bl0,d49)
    ... UNCONN 0      0              [::1]:39002         [::]:*    ino:657691 sk:1013 cgroup:/ v6only:1 <->
    ... \\t skmem:(r0,rb212992,t0,tb212992,f0,w0,o0,bl0,d0)
    ... ''')
    >>> sorted(sockets[0].items())[:6]
    [('drops', 49), ('inode', 657690), ('local_address', '127.0.0.1'), ('local_port', 39001), ('netid', None), ('rcvbuf', 2304)]
    >>> sorted(sockets[0].items())[6:]
    [('recv_q', 1280), ('rmem', 1280), ('send_q', 0), ('state', 'UNCONN'), ('uid', 0)]
    >>> sockets[1]["local_address"], sockets[1]["local_port"], sockets[1]["rcvbuf"]
    ('::1', 39002, 212992)

    ``uid`` is 0 unless ss prints ``uid:N`` (it leaves root out). A socket line without ``ino:`` (ss
    without ``-e``) has ``inode`` None; one without a ``skmem`` line has ``rcvbuf``, ``rmem`` and ``drops``
    None. Raises ValueError naming the source and line for a socket line whose queues are not numbers.
    """
    sockets = []
    current = None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        skmem = _SKMEM.search(line)
        if line[:1] in (" ", "\t"):
            if current is not None and skmem:
                values = parse_skmem(skmem.group(1))
                current.update({"rcvbuf": values.get("rb"), "rmem": values.get("r"), "drops": values.get("d")})
            continue
        fields = line.split()
        if fields[0] in ("State", "Netid"):
            continue
        netid = None
        if fields[0] not in _STATES and len(fields) > 1 and fields[1] in _STATES:
            netid = fields.pop(0)
        if len(fields) < 5 or fields[0] not in _STATES:
            raise ValueError("%s: line %d is not a socket line: %r" % (source, number, line[:120]))
        try:
            recv_q, send_q = int(fields[1]), int(fields[2])
        except ValueError:
            raise ValueError("%s: line %d: queues %r %r are not numbers" % (source, number, fields[1], fields[2])) from None
        address, port = split_address(fields[3])
        current = {"netid": netid, "state": fields[0], "recv_q": recv_q, "send_q": send_q, "local_address": address,
                   "local_port": port, "inode": None, "uid": 0, "rcvbuf": None, "rmem": None, "drops": None}
        for token in fields[5:]:
            name, sep, value = token.partition(":")
            if sep and name == "ino" and value.isdigit():
                current["inode"] = int(value)
            elif sep and name == "uid" and value.isdigit():
                current["uid"] = int(value)
        if skmem:  # ss prints skmem on the same line when its output is not a terminal on some versions
            values = parse_skmem(skmem.group(1))
            current.update({"rcvbuf": values.get("rb"), "rmem": values.get("r"), "drops": values.get("d")})
        sockets.append(current)
    return sockets


def ss_filter(ports):
    """The ss filter words for these local ports: ``["(", "sport", "=", ":53", "or", …, ")"]`` (integers only).

    >>> ss_filter([53, 9000])
    ['(', 'sport', '=', ':53', 'or', 'sport', '=', ':9000', ')']
    """
    words = ["("]
    for index, port in enumerate(sorted(set(ports))):
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError("port %r is not an integer 1..65535" % (port,))
        if index:
            words.append("or")
        words += ["sport", "=", ":%d" % port]
    return words + [")"]
