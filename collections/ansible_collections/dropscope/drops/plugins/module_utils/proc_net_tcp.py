# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# The docstring samples are verbatim kernel lines, some longer than 120 characters.
# ruff: noqa: E501
"""Listening TCP sockets: ``/proc/net/tcp`` and ``/proc/net/tcp6`` (state ``0A``).

Pure functions (standard library only); they run on the managed host. Addresses are decoded as in
``proc_net_udp`` (the byte order of the host the text was read on). For a listening socket the kernel
prints the accept queue's length as ``rx_queue``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.dropscope.drops.plugins.module_utils.proc_net_udp import socket_table

TCP_LISTEN = "0A"


def parse_proc_net_tcp_listeners(text, proto="tcp", byteorder=None):
    """Listening sockets of ``/proc/net/tcp`` (``proto="tcp"``) or ``/proc/net/tcp6`` (``proto="tcp6"``).

    Sample (kernel 6.18: a socket listening on 127.0.0.1:39003 with two connections waiting to be
    accepted, and the two connections; ``tests/data/proc_net_tcp.txt``):

    >>> parse_proc_net_tcp_listeners('''  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
    ...    1: 0100007F:985B 00000000:0000 0A 00000000:00000002 00:00000000 00000000     0        0 667400 3 0000000000e29b51 100 0 0 10 0
    ...    8: 0100007F:985B 0100007F:90C8 01 00000000:00000000 00:00000000 00000000     0        0 0 1 000000000de880e3 20 0 0 10 -1
    ... ''', byteorder="little")
    [{'proto': 'tcp', 'local_address': '127.0.0.1', 'local_port': 39003, 'inode': 667400, 'uid': 0, 'accept_queue': 2}]

    Raises ValueError naming the file and line when the header is missing or a line cannot be decoded.
    """
    return socket_table(text, "/proc/net/%s" % proto, lambda fields, local: None if fields[3] != TCP_LISTEN else {
        "proto": proto, "local_address": local[0], "local_port": local[1], "inode": int(fields[9]),
        "uid": int(fields[7]), "accept_queue": int(fields[4].partition(":")[2], 16)}, byteorder, at_least=10)
