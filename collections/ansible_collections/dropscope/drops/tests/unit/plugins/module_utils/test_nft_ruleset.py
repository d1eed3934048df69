# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""nft -a list ruleset, on outputs recorded with nftables 1.0.6 on kernel 6.18."""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import re

import pytest
from ansible_collections.dropscope.drops.plugins.module_utils.nft_ruleset import parse_nft_ruleset
from ansible_collections.dropscope.drops.tests.unit.plugins.module_utils.samples import recorded


def test_recorded_lab_table():
    assert parse_nft_ruleset(recorded("nft_ruleset.txt")) == {
        "nft inet dropscope_lab input #2": {
            "family": "inet", "table": "dropscope_lab", "chain": "input", "handle": 2,
            "rule": "udp dport 8000 drop", "packets": 3, "bytes": 3084,
        },
    }


def test_recorded_rich_ruleset():
    result = parse_nft_ruleset(recorded("nft_ruleset_rich.txt"))
    assert sorted(result) == sorted([
        "nft inet dropscope_lab input #4",
        "nft inet dropscope_lab input #5",
        "nft inet dropscope_lab input #9",
        "nft ip dsparse_out output #2",
        "nft ip filter INPUT #2",
        "nft ip filter INPUT #3",
    ])  # not #7 (no counter), not #8 (a named counter), not the counter object or set elements
    assert result["nft inet dropscope_lab input #4"]["packets"] == 3
    assert result["nft inet dropscope_lab input #4"]["bytes"] == 114
    assert result["nft inet dropscope_lab input #5"]["rule"] == 'ip saddr @blocked drop comment "blocked # handle 99 {"'
    assert result["nft inet dropscope_lab input #9"]["rule"] == ""
    assert result["nft ip dsparse_out output #2"]["rule"] == "ip daddr 198.18.0.77 reject"
    assert result["nft ip filter INPUT #2"] == {  # an iptables-nft rule
        "family": "ip", "table": "filter", "chain": "INPUT", "handle": 2,
        "rule": "udp dport 8001 drop", "packets": 1, "bytes": 38,
    }
    assert result["nft ip filter INPUT #3"]["rule"] == "udp dport 8002 limit rate 1/second accept"


def test_empty_ruleset():
    assert parse_nft_ruleset("") == {}


def test_quoted_names():
    text = ('table inet "my table" { # handle 1\n'
            '\tchain "my chain" { # handle 2\n'
            '\t\tcounter packets 5 bytes 10 accept # handle 3\n'
            '\t}\n'
            '}\n')
    assert parse_nft_ruleset(text) == {"nft inet my table my chain #3": {
        "family": "inet", "table": "my table", "chain": "my chain", "handle": 3, "rule": "accept",
        "packets": 5, "bytes": 10}}


def test_truncated_output():
    lines = recorded("nft_ruleset_rich.txt").splitlines()
    with pytest.raises(ValueError, match=r"^nft -a list ruleset: output ends inside 1 unclosed block\(s\)"):
        parse_nft_ruleset("\n".join(lines[:-1]))
    with pytest.raises(ValueError, match=r"^nft -a list ruleset: output ends inside 3 unclosed block\(s\)"):
        parse_nft_ruleset("\n".join(lines[:10]))


def test_without_handles():
    text = re.sub(r" # handle \d+", "", recorded("nft_ruleset.txt"))
    with pytest.raises(ValueError, match=r"^nft -a list ruleset: line 4: rule has no '# handle N' \(was -a given\?\)"):
        parse_nft_ruleset(text)


def test_structure_errors():
    with pytest.raises(ValueError, match="^nft -a list ruleset: line 1: unexpected '}'"):
        parse_nft_ruleset("}\n")
    with pytest.raises(ValueError, match="^nft -a list ruleset: line 1: chain 'input' is not inside a table"):
        parse_nft_ruleset("chain input {\n}\n")
