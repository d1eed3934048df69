# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""/proc/net/udp and /proc/net/udp6, on samples recorded on kernel 6.18 (x86_64, little-endian)."""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type


import pytest
from ansible_collections.dropscope.drops.plugins.module_utils.proc_net_udp import decode_address, parse_proc_net_udp
from ansible_collections.dropscope.drops.tests.unit.plugins.module_utils.samples import recorded


def test_recorded_udp():
    # Recorded on x86_64: decode as little-endian whatever host runs the test.
    assert parse_proc_net_udp(recorded("proc_net_udp.txt"), byteorder="little") == [
        {"proto": "udp", "local_address": "127.0.0.1", "local_port": 9000, "inode": 35361, "drops": 48},
        {"proto": "udp", "local_address": "0.0.0.0", "local_port": 58880, "inode": 35363, "drops": 0},  # noqa: S104
    ]


def test_recorded_udp6():
    assert parse_proc_net_udp(recorded("proc_net_udp6.txt"), "udp6", byteorder="little") == [
        {"proto": "udp6", "local_address": "::1", "local_port": 9006, "inode": 35362, "drops": 48},
        {"proto": "udp6", "local_address": "::", "local_port": 43009, "inode": 35364, "drops": 0},
    ]


def test_decode_address():
    assert decode_address("0100007F", "little") == "127.0.0.1"
    assert decode_address("7F000001", "big") == "127.0.0.1"
    assert decode_address("0200A8C0", "little") == "192.168.0.2"
    assert decode_address("00000000000000000000000001000000", "little") == "::1"
    assert decode_address("00000000000000000000000000000001", "big") == "::1"
    assert decode_address("000080FE00000000FF7D4C02AD3412FE", "little") == "fe80::24c:7dff:fe12:34ad"
    # IPv4-mapped: the same text on every Python (3.13 changed str() for these).
    assert decode_address("0000000000000000FFFF00000100007F", "little") == "::ffff:127.0.0.1"
    with pytest.raises(ValueError, match="has 7 hex digits"):
        decode_address("0100007", "little")


def test_errors_name_the_source():
    lines = recorded("proc_net_udp.txt").splitlines()
    with pytest.raises(ValueError, match="^/proc/net/udp: does not start with the 'sl local_address"):
        parse_proc_net_udp("\n".join(lines[1:]))
    with pytest.raises(ValueError, match="^/proc/net/udp: line 2 has 12 columns, expected 13"):
        parse_proc_net_udp("\n".join(lines[:1] + [lines[1].rsplit(None, 1)[0]]))
    with pytest.raises(ValueError, match="^/proc/net/udp6: line 2 cannot be decoded"):
        parse_proc_net_udp("\n".join(lines[:1] + [lines[1].replace("0100007F", "01000G7F")]), "udp6")
    with pytest.raises(ValueError, match="^/proc/net/udp: line 2 cannot be decoded"):
        parse_proc_net_udp("\n".join(lines[:1] + [lines[1].replace(" 48 ", " x ")]))
    assert parse_proc_net_udp(lines[0] + "\n") == []
