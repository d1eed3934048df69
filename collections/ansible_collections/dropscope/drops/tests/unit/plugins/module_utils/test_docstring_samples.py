# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The samples in the parsers' docstrings are copied from the recorded files in tests/data/."""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import ast
import doctest

import pytest
from ansible_collections.dropscope.drops.plugins.module_utils import (
    ethtool_stats,
    iptables_save,
    kallsyms,
    kfree_skb,
    nf_conntrack,
    nft_ruleset,
    proc_net_dev,
    proc_net_udp,
    snmp,
    softnet_stat,
    tc_qdisc,
)
from ansible_collections.dropscope.drops.tests.unit.plugins.module_utils.samples import recorded


def _sample_lines(doc):
    """Lines of the docstring's sample, without '...' elision lines.

    The sample is the text of the doctest's first triple-quoted string (``>>> x = parse('''LINE`` then
    ``... LINE`` lines up to ``... ''')``), or else the first literal block (after a line ending in '::').
    """
    lines = doc.splitlines()
    opening = next((index for index, line in enumerate(lines) if ">>> " in line and "'''" in line), None)
    if opening is not None:
        first = lines[opening].split("'''", 1)[1]
        block = [first[:-1] if first.endswith("\\") else first]  # "'''\\": the sample starts on the next line
        for line in lines[opening + 1:]:
            text = line.strip()
            if text.startswith("... '''"):
                break
            block.append(text[4:] if text.startswith("... ") else "")
        return [line.strip() for line in block if line.strip()]
    start = next(index for index, line in enumerate(lines) if line.rstrip().endswith("::")) + 1
    block = []
    for line in lines[start:]:
        if block and line.strip() and not line.startswith("        "):
            break
        if line.strip() and line.strip() != "...":
            block.append(line.strip())
    return block


CASES = [
    (proc_net_dev.parse_proc_net_dev, ["proc_net_dev.txt"]),
    (ethtool_stats.parse_ethtool_stats, ["ethtool_veth.txt"]),
    (snmp.parse_proc_net_snmp, ["proc_net_snmp.txt"]),
    (snmp.parse_proc_net_snmp6, ["proc_net_snmp6.txt"]),
    (softnet_stat.parse_softnet_stat, ["softnet_stat.txt"]),
    (proc_net_udp.parse_proc_net_udp, ["proc_net_udp.txt"]),
    (nft_ruleset.parse_nft_ruleset, ["nft_ruleset.txt"]),
    (kfree_skb.parse_perf_script_line, ["perf_script_trace.txt", "perf_script_default.txt"]),
    (kfree_skb.parse_perf_lost_line, ["perf_script_lost_trace.txt", "perf_script_lost_default.txt"]),
    (kfree_skb.parse_perf_stack_line, ["perf_script_g_trace_ip_sym.txt", "perf_script_g_default.txt"]),
    (kfree_skb.parse_tracepoint_format, ["kfree_skb_format.txt"]),
    (tc_qdisc.parse_tc_qdisc_text, ["tc_qdisc_text_iproute2_4.14.txt"]),
    (tc_qdisc.parse_tc_qdisc, ["tc_qdisc_text_iproute2_5.4.txt"]),
    (iptables_save.parse_iptables_save, ["iptables_legacy_save_c.txt"]),
    (nf_conntrack.parse_nf_conntrack_sysctl, ["nf_conntrack_max.txt"]),
    (kallsyms.parse_kallsyms, ["kallsyms_cilium_doc_4.10.txt"]),
]


@pytest.mark.parametrize("function, files", CASES, ids=[case[0].__name__ for case in CASES])
def test_docstring_sample_is_recorded(function, files):
    recorded_lines = set()
    for name in files:
        recorded_lines.update(line.strip() for line in recorded(name).splitlines())
    text = " ".join(recorded(name) for name in files).replace("\n", " ")
    for line in _sample_lines(function.__doc__):
        if "..." in line:  # a shortened line: every piece between the "..." is verbatim
            for piece in line.split("..."):
                assert piece.strip(" ,") in text, "%s: %r not in %s" % (function.__name__, piece, files)
        else:
            assert line in recorded_lines, "%s: docstring line not in %s: %r" % (function.__name__, files, line)


def test_tc_docstring_sample_is_recorded():
    # The JSON sample is one entry of the recorded array, wrapped over three lines.
    doc_lines = _sample_lines(tc_qdisc.parse_tc_qdisc_json.__doc__)
    entry = "".join(doc_lines)[1:-1]
    assert entry in recorded("tc_qdisc.json")


def _literal(doc, name):
    """The string given to `name` (an assignment or a call's first argument) in the docstring's examples."""
    for example in doctest.DocTestParser().get_examples(doc):
        for node in ast.walk(ast.parse(example.source)):
            if isinstance(node, ast.Assign) and node.targets[0].id == name:
                return ast.literal_eval(node.value)
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == name:
                return ast.literal_eval(node.args[0])
    raise AssertionError("no %s in the examples" % name)


def test_samples_given_in_pieces_are_recorded():
    # Samples too wide for one source line are given as Python strings in pieces.
    assert _literal(nf_conntrack.parse_nf_conntrack_stat.__doc__, "parse_nf_conntrack_stat") == recorded(
        "nf_conntrack_stat.txt")
    broken = _literal(tc_qdisc.parse_tc_qdisc.__doc__, "broken")
    assert broken[1:-1] in recorded("tc_qdisc_iproute2_5.4.json")
    line = _literal(kallsyms.is_hashed_pointer.__doc__, "line")
    assert line in recorded("tracefs_trace_pipe_hashed_5.17.txt").splitlines()
