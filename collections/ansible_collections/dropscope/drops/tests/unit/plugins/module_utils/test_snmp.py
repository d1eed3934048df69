# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""/proc/net/snmp, /proc/net/netstat, /proc/net/snmp6, on samples recorded on kernel 6.18."""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type


import pytest
from ansible_collections.dropscope.drops.plugins.module_utils.snmp import (
    GAUGES,
    parse_proc_net_snmp,
    parse_proc_net_snmp6,
)
from ansible_collections.dropscope.drops.tests.unit.plugins.module_utils.samples import recorded


def test_recorded_snmp():
    result = parse_proc_net_snmp(recorded("proc_net_snmp.txt"))
    assert len(result) == 20 + 29 + 15 + 9 + 9
    assert result["IpForwarding"] == 2
    assert result["IpOutRequests"] == 250
    assert result["IpOutDiscards"] == 197  # the tbf drops, seen by IP
    assert result["TcpMaxConn"] == -1
    assert result["TcpRtoMax"] == 120000
    assert result["UdpInErrors"] == 48
    assert result["UdpRcvbufErrors"] == 48
    assert result["UdpSndbufErrors"] == 197
    assert result["UdpOutDatagrams"] == 53
    assert result["UdpNoPorts"] == 0
    assert result["UdpLiteMemErrors"] == 0


def test_recorded_host_snmp_icmpmsg():
    result = parse_proc_net_snmp(recorded("proc_net_snmp_host.txt"))
    assert result["IcmpMsgInType3"] == 73
    assert result["IcmpMsgOutType3"] == 60


def test_recorded_netstat():
    result = parse_proc_net_snmp(recorded("proc_net_netstat.txt"), "/proc/net/netstat")
    assert result["TcpExtListenOverflows"] == 0
    assert result["TcpExtListenDrops"] == 0
    assert result["IpExtInOctets"] == 6400
    assert result["IpExtOutOctets"] == 212000
    assert result["IpExtInNoECTPkts"] == 50
    assert result["MPTcpExtMPCurrEstab"] == 0
    assert sum(1 for name in result if name.startswith("TcpExt")) == 135


def test_recorded_snmp6():
    result = parse_proc_net_snmp6(recorded("proc_net_snmp6.txt"))
    assert len(result) == len(recorded("proc_net_snmp6.txt").splitlines())
    assert result["Ip6InReceives"] == 80
    assert result["Udp6NoPorts"] == 0
    assert result["Udp6InErrors"] == 48
    assert result["Udp6RcvbufErrors"] == 48
    assert result["Udp6OutDatagrams"] == 50
    assert result["Icmp6OutType143"] == 20


def test_gauges():
    assert {"IpForwarding", "IpDefaultTTL", "TcpRtoAlgorithm", "TcpRtoMin", "TcpRtoMax", "TcpMaxConn",
            "TcpCurrEstab"} <= GAUGES
    names = set(parse_proc_net_snmp(recorded("proc_net_snmp.txt")))
    names |= set(parse_proc_net_snmp(recorded("proc_net_netstat.txt"), "/proc/net/netstat"))
    assert GAUGES <= names  # every gauge is a name this kernel prints


def test_truncated_pair():
    lines = recorded("proc_net_snmp.txt").splitlines()
    with pytest.raises(ValueError, match=r"^/proc/net/snmp: header line 'UdpLite:' \(line 9\) has no value line"):
        parse_proc_net_snmp("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ValueError, match=r"^/proc/net/netstat: header line 'Udp:' \(line 7\) is followed by"):
        parse_proc_net_snmp("\n".join(lines[:7] + lines[9:]), "/proc/net/netstat")


def test_length_mismatch():
    text = ("Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors\n"
            "Udp: 0 0 48 53 48 197\n")
    with pytest.raises(ValueError) as info:
        parse_proc_net_snmp(text)
    assert str(info.value) == "/proc/net/snmp: header line 'Udp:' has 7 names but its value line has 6 values"


def test_not_an_integer():
    text = "Udp: InDatagrams NoPorts\nUdp: 0 x1\n"
    message = r"^/proc/net/netstat: line 2 \('Udp:'\) has a value that is not an integer: 'x1'"
    with pytest.raises(ValueError, match=message):
        parse_proc_net_snmp(text, "/proc/net/netstat")
    with pytest.raises(ValueError, match="^/proc/net/snmp: line 1 is not a 'Prefix: names...' header"):
        parse_proc_net_snmp("garbage\nUdp: 0\n")


def test_snmp6_errors():
    with pytest.raises(ValueError, match=r"^/proc/net/snmp6: value of Udp6NoPorts \(line 2\) is not an integer"):
        parse_proc_net_snmp6("Udp6InDatagrams 1\nUdp6NoPorts  many\n")
    with pytest.raises(ValueError, match="^/proc/net/snmp6: line 1 has 1 fields"):
        parse_proc_net_snmp6("Udp6InDatagrams\n")
    assert parse_proc_net_snmp6("") == {}
