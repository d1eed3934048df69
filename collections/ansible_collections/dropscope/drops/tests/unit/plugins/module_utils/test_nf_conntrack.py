# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""/proc/net/stat/nf_conntrack and /proc/sys/net/netfilter/nf_conntrack_*: kernel 6.18 (recorded here, header
with clashres/chainlength) and node_exporter's fixture (4 CPUs, the older searched/delete_list header)."""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type


import pytest
from ansible_collections.dropscope.drops.plugins.module_utils.nf_conntrack import (
    parse_nf_conntrack_stat,
    parse_nf_conntrack_sysctl,
)
from ansible_collections.dropscope.drops.tests.unit.plugins.module_utils.samples import recorded


def test_recorded_kernel_6_18():
    assert parse_nf_conntrack_stat(recorded("nf_conntrack_stat.txt")) == {
        "entries": 6, "clashres": 0, "found": 3, "new": 0, "invalid": 8, "ignore": 0, "delete": 0,
        "chainlength": 0, "insert": 0, "insert_failed": 0, "drop": 0, "early_drop": 0, "icmp_error": 0,
        "expect_new": 0, "expect_create": 0, "expect_delete": 0, "search_restart": 0, "cpus": 2,
    }
    assert parse_nf_conntrack_sysctl(recorded("nf_conntrack_count.txt"), "nf_conntrack_count") == 6
    assert parse_nf_conntrack_sysctl(recorded("nf_conntrack_max.txt"), "nf_conntrack_max") == 262144


def test_node_exporter_fixture_older_header():
    stat = parse_nf_conntrack_stat(recorded("nf_conntrack_stat_node_exporter.txt"))
    assert stat == {
        "entries": 0x21, "searched": 0, "found": 0, "new": 0, "invalid": 3 + 2 + 1 + 0x2f,
        "ignore": 0x588a + 0x56a4 + 0x58d4 + 0x5688, "delete": 0, "delete_list": 0, "insert": 0,
        "insert_failed": 0, "drop": 0, "early_drop": 0, "icmp_error": 0, "expect_new": 0, "expect_create": 0,
        "expect_delete": 0, "search_restart": 0 + 2 + 1 + 4, "cpus": 4,
    }
    assert stat["invalid"] == 53
    assert stat["ignore"] == 22666 + 22180 + 22740 + 22152 == 89738
    assert parse_nf_conntrack_sysctl(recorded("nf_conntrack_count_node_exporter.txt"), "nf_conntrack_count") == 123
    assert parse_nf_conntrack_sysctl(recorded("nf_conntrack_max_node_exporter.txt"), "nf_conntrack_max") == 65536


def test_errors_name_the_source_and_line():
    header = recorded("nf_conntrack_stat.txt").splitlines()[0]
    with pytest.raises(ValueError, match=r"^/proc/net/stat/nf_conntrack: line 1 is not the header \('entries \.\.\.'\)"):
        parse_nf_conntrack_stat("00000006  00000000\n")
    with pytest.raises(ValueError, match="^/proc/net/stat/nf_conntrack: line 1 is not the header"):
        parse_nf_conntrack_stat("")
    with pytest.raises(ValueError, match="^/proc/net/stat/nf_conntrack: line 2 has 2 values, the header names 17"):
        parse_nf_conntrack_stat(header + "\n00000006  00000000\n")
    with pytest.raises(ValueError, match="^/proc/net/stat/nf_conntrack: line 2 has a value that is not hexadecimal"):
        parse_nf_conntrack_stat(header + "\n" + " ".join(["zz"] * 17) + "\n")
    with pytest.raises(ValueError, match="^/proc/net/stat/nf_conntrack: line 1 names a column twice"):
        parse_nf_conntrack_stat("entries drop drop\n")
    with pytest.raises(ValueError, match="^/proc/sys/net/netfilter/nf_conntrack_max: not an integer"):
        parse_nf_conntrack_sysctl("", "nf_conntrack_max")
    assert parse_nf_conntrack_stat(header + "\n") == dict(
        [(name, 0) for name in header.split()] + [("cpus", 0)])
