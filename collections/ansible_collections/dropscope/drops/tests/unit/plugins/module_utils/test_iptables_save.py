# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""iptables-save -c / ip6tables-save -c: iptables 1.8.9 legacy recorded on kernel 6.18, a K3s node with Docker
(iptables 1.8.4, published), and RHEL 7's ip6tables-save 1.4.21 without -c (insights-core's parser tests)."""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type


import pytest
from ansible_collections.dropscope.drops.plugins.module_utils.iptables_save import parse_iptables_save
from ansible_collections.dropscope.drops.tests.unit.plugins.module_utils.samples import recorded


def test_recorded_iptables_legacy():
    rules = parse_iptables_save(recorded("iptables_legacy_save_c.txt"))
    assert sorted(rules) == sorted([
        "iptables nat PREROUTING policy", "iptables nat INPUT policy", "iptables nat OUTPUT policy",
        "iptables nat POSTROUTING policy", "iptables nat OUTPUT #1",
        "iptables raw PREROUTING policy", "iptables raw OUTPUT policy", "iptables raw PREROUTING #1",
        "iptables mangle PREROUTING policy", "iptables mangle INPUT policy", "iptables mangle FORWARD policy",
        "iptables mangle OUTPUT policy", "iptables mangle POSTROUTING policy", "iptables mangle PREROUTING #1",
        "iptables filter INPUT policy", "iptables filter FORWARD policy", "iptables filter OUTPUT policy",
        "iptables filter INPUT #1", "iptables filter INPUT #2", "iptables filter INPUT #3", "iptables filter INPUT #4",
        "iptables filter INPUT #5", "iptables filter FORWARD #1", "iptables filter OUTPUT #1",
        "iptables filter DOCKER-USER #1", "iptables filter KUBE-FIREWALL #1",
    ])
    # 5 datagrams to port 8000 and 6 to port 8005 that the nat OUTPUT rule sent to 8000: 11 dropped.
    assert rules["iptables filter INPUT #3"] == {
        "family": "ipv4", "table": "filter", "chain": "INPUT", "position": 3,
        "rule": '-p udp -m udp --dport 8000 -m comment --comment "lab: drop udp 8000 -j DROP \\"quoted\\"" -j DROP',
        "target": "DROP", "packets": 11, "bytes": 418,
    }
    # The 4 datagrams to port 8003 that mangle marked 0x8000: KUBE-FIREWALL dropped them.
    assert rules["iptables mangle PREROUTING #1"]["packets"] == 4
    assert rules["iptables filter KUBE-FIREWALL #1"]["target"] == "DROP"
    assert rules["iptables filter KUBE-FIREWALL #1"]["packets"] == 4
    assert rules["iptables filter INPUT #1"]["target"] == "KUBE-FIREWALL"
    assert rules["iptables filter INPUT #1"]["packets"] == 31
    assert (rules["iptables filter INPUT #2"]["target"], rules["iptables filter INPUT #2"]["packets"]) == ("DROP", 4)
    assert rules["iptables filter INPUT #4"]["target"] == "REJECT"
    assert rules["iptables filter INPUT #4"]["packets"] == 3
    assert rules["iptables filter INPUT #5"]["target"] is None  # a rule that only counts
    assert rules["iptables filter INPUT #5"]["packets"] == 2
    assert rules["iptables filter INPUT policy"] == {
        "family": "ipv4", "table": "filter", "chain": "INPUT", "position": None, "rule": "policy ACCEPT",
        "target": "ACCEPT", "packets": 9, "bytes": 510,
    }
    assert rules["iptables filter FORWARD policy"]["target"] == "DROP"
    assert rules["iptables nat OUTPUT #1"]["target"] == "DNAT"
    assert rules["iptables raw PREROUTING #1"]["target"] == "NOTRACK"


def test_recorded_ip6tables_legacy_policy_drop():
    rules = parse_iptables_save(recorded("ip6tables_legacy_save_c.txt"), family="ipv6")
    assert sorted(rules) == [
        "ip6tables filter FORWARD policy", "ip6tables filter INPUT #1", "ip6tables filter INPUT #2",
        "ip6tables filter INPUT #3", "ip6tables filter INPUT policy", "ip6tables filter OUTPUT policy",
    ]
    assert rules["ip6tables filter INPUT #1"]["packets"] == 7  # udp dport 8000 -j DROP
    assert rules["ip6tables filter INPUT #1"]["family"] == "ipv6"
    # 3 datagrams to [::1]:9999 matched no rule: INPUT's DROP policy dropped them.
    assert rules["ip6tables filter INPUT policy"] == {
        "family": "ipv6", "table": "filter", "chain": "INPUT", "position": None, "rule": "policy DROP",
        "target": "DROP", "packets": 3, "bytes": 174,
    }
    with pytest.raises(ValueError, match="^iptables-save -c: line 1: this is ip6tables output"):
        parse_iptables_save(recorded("ip6tables_legacy_save_c.txt"))


def test_published_k3s_node_with_docker():
    rules = parse_iptables_save(recorded("iptables_save_c_k3s_docker.txt"))
    counted = [key for key in rules if not key.endswith(" policy")]
    assert len(counted) == 46
    assert len(rules) == 46 + 2 + 5 + 4 + 3  # policies: raw 2, mangle 5, nat 4, filter 3
    assert rules["iptables filter INPUT #3"] == {
        "family": "ipv4", "table": "filter", "chain": "INPUT", "position": 3, "rule": "-j KUBE-FIREWALL",
        "target": "KUBE-FIREWALL", "packets": 8705941, "bytes": 2283153404,
    }
    assert rules["iptables filter KUBE-FIREWALL #2"]["target"] == "DROP"
    assert rules["iptables filter KUBE-FIREWALL #2"]["packets"] == 0
    assert rules["iptables filter DOCKER-ISOLATION-STAGE-2 #1"]["rule"] == "-o docker0 -j DROP"
    assert rules["iptables filter FORWARD #4"]["target"] == "DOCKER-USER"
    assert rules["iptables filter FORWARD policy"]["target"] == "DROP"
    assert rules["iptables filter KUBE-SERVICES #4"]["target"] == "REJECT"
    assert rules["iptables nat KUBE-SERVICES #2"]["packets"] == 596
    assert rules["iptables nat KUBE-POSTROUTING #3"]["target"] == "MASQUERADE"
    assert rules["iptables raw PREROUTING policy"]["packets"] == 8488585


def test_errors_name_the_source_and_line():
    # RHEL 7's ip6tables-save without -c: rules carry no counters.
    with pytest.raises(ValueError, match=r"^ip6tables-save -c: line 26 is not a chain or a counted rule \(was -c given\?\): '-A INPUT -j INPUT_direct'"):
        parse_iptables_save(recorded("ip6tables_save_rhel7_no_counters.txt"), family="ipv6")
    with pytest.raises(ValueError, match="^iptables-save -c: table 'filter' has no COMMIT"):
        parse_iptables_save("*filter\n:INPUT ACCEPT [0:0]\n")
    with pytest.raises(ValueError, match="^iptables-save -c: line 1 is outside a table"):
        parse_iptables_save(":INPUT ACCEPT [0:0]\n")
    with pytest.raises(ValueError, match="^iptables-save -c: line 2: chain 'X' was not declared in table 'filter'"):
        parse_iptables_save("*filter\n[1:2] -A X -j DROP\nCOMMIT\n")
    with pytest.raises(ValueError, match="^iptables-save -c: line 3: No closing quotation"):
        parse_iptables_save('*filter\n:INPUT ACCEPT [0:0]\n[1:2] -A INPUT -m comment --comment "x -j DROP\nCOMMIT\n')
    with pytest.raises(ValueError, match="^iptables-save: family must be 'ipv4' or 'ipv6'"):
        parse_iptables_save("", family="inet")
    assert parse_iptables_save("") == {}
