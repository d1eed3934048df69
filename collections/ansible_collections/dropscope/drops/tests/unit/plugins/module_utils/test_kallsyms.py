# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""/proc/kallsyms and location= values: kernel 4.10 (perf prints a raw address; Cilium's BPF guide), a 5.17-era
tracefs that prints hashed pointers (a netdev patch's trace_pipe), and kernel 6.18 (recorded here)."""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import re

import pytest
from ansible_collections.dropscope.drops.plugins.module_utils.kallsyms import (
    HASHED_WHY,
    Locator,
    is_hashed_pointer,
    parse_kallsyms,
    raw_address,
)
from ansible_collections.dropscope.drops.plugins.module_utils.kfree_skb import aggregate_perf_script
from ansible_collections.dropscope.drops.tests.unit.plugins.module_utils.samples import recorded

LOCATION = re.compile(r"\blocation=(\S+)")


def test_kernel_4_10_raw_address_resolves_with_the_same_hosts_kallsyms():
    event = recorded("perf_script_location_hex_4.10.txt").splitlines()[0]
    value = LOCATION.search(event).group(1)
    assert value == "0xffffffffc004b52c"
    assert not is_hashed_pointer(value)
    symbols = parse_kallsyms(recorded("kallsyms_cilium_doc_4.10.txt"))
    assert len(symbols) == 3  # the 'd' (data) symbol is not a place code runs
    assert symbols.location(raw_address(value)) == "bpf_prog_8227addf251b7543+0x52c"
    # perf's own call chain of that event names the same program.
    assert "bpf_prog_8227addf251b7543" in recorded("perf_script_location_hex_4.10.txt").splitlines()[2]
    # An address below every known symbol has no name: None, never the pointer.
    assert symbols.location(0xffffffffc0000000) is None


def test_kernel_6_18_kallsyms():
    symbols = parse_kallsyms(recorded("kallsyms_excerpt.txt"))
    assert len(symbols) == 15
    assert symbols.location(0xffffffff82046a90 + 0x4bc) == "__udp4_lib_rcv+0x4bc"
    assert symbols.location(0xffffffff81f63250 + 0x3e8) == "nft_do_chain+0x3e8"
    assert symbols.lookup(0xffffffff81f63245) == ("__pfx_nft_do_chain", 5)  # the padding before the function


def test_tracefs_hashed_pointers_cannot_be_resolved():
    values = [LOCATION.search(line).group(1) for line in recorded("tracefs_trace_pipe_hashed_5.17.txt").splitlines()]
    assert values == ["00000000aff342c7", "000000001cf38db0", "000000001cf38db0", "000000001cf38db0",
                      "000000001cf38db0"]
    assert all(is_hashed_pointer(value) for value in values)
    assert [raw_address(value) for value in values] == [None] * 5
    # tracefs on 6.18 names the function (and its size).
    recorded_6_18 = LOCATION.search(recorded("tracefs_trace_pipe.txt").splitlines()[0]).group(1)
    assert recorded_6_18 == "__udp4_lib_rcv+0x4bc/0xd00"
    assert not is_hashed_pointer(recorded_6_18)
    assert raw_address(recorded_6_18) is None
    # An unhashed 16-digit value (upper half set) is not a hashed pointer.
    assert not is_hashed_pointer("ffffffffc004b52c")


def test_without_root_every_address_is_zero():
    assert len(parse_kallsyms("0000000000000000 T tcp_v4_rcv\n0000000000000000 t nft_do_chain\t[nf_tables]\n")) == 0


def test_errors_name_the_source_and_line():
    with pytest.raises(ValueError, match=r"^/proc/kallsyms: line 2 is not 'ADDRESS TYPE NAME': '\[\.\.\.\]'"):
        parse_kallsyms("ffffffffc004b000 t bpf_prog_8227addf251b7543\n[...]\n")


def test_perf_on_a_4_10_kernel_reports_the_function_not_the_address():
    """perf script of a %p kernel, aggregated on the host with that boot's kallsyms: function + offset."""
    aggregator, lost = aggregate_perf_script(recorded("perf_script_location_hex_4.10.txt").splitlines())
    result = aggregator.result(locator=Locator(lambda: recorded("kallsyms_cilium_doc_4.10.txt")))
    assert lost == 0 and result["events"] == 1
    assert result["drops"] == [{"reason": "UNKNOWN", "location": "bpf_prog_8227addf251b7543", "offset": "0x52c",
                                "protocol": "IPv4", "count": 1}]
    assert "locations" not in result  # every location was named


def test_tracefs_with_hashed_pointers_says_the_location_is_unavailable():
    lines = recorded("tracefs_trace_pipe_hashed_5.17.txt").splitlines()
    aggregator, _lost = aggregate_perf_script(lines)
    result = aggregator.result(locator=Locator(lambda: recorded("kallsyms_excerpt.txt")))
    assert {drop["location"] for drop in result["drops"]} == {"unavailable"}
    assert sum(drop["count"] for drop in result["drops"]) == len(lines) == result["locations"]["hashed_events"]
    assert result["locations"]["why"] == HASHED_WHY
    assert not any(re.search(r"[0-9a-f]{16}", drop["location"]) for drop in result["drops"])
