# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""tc -s -j qdisc show, on outputs recorded with iproute2 6.1 on kernel 6.18."""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type


import pytest
from ansible_collections.dropscope.drops.plugins.module_utils.tc_qdisc import parse_tc_qdisc_json
from ansible_collections.dropscope.drops.tests.unit.plugins.module_utils.samples import recorded


def test_recorded_qdiscs():
    result = parse_tc_qdisc_json(recorded("tc_qdisc.json"))
    assert sorted(result) == sorted([
        "lo noqueue 0:",
        "dsp-a tbf 8006:",
        "dsq-peer tbf 1:",
        "dsq-peer pfifo 10:",
        "ds<'$q noqueue 0:",
        "ds<'$q ingress ffff:",
        "dsm1 noqueue 0:",
        "dsm0 mq 1:",
        "dsm0 pfifo_fast 0: parent 1:2",
        "dsm0 pfifo_fast 0: parent 1:1",
    ])
    # The tbf that the 200-datagram burst overflowed; tc's text says "(dropped 197, overlimits 198 ...)".
    assert result["dsp-a tbf 8006:"] == {
        "dev": "dsp-a", "kind": "tbf", "handle": "8006:", "parent": "root",
        "bytes": 3594, "packets": 9, "dropped": 197, "overlimits": 198, "requeues": 0, "backlog": 0, "qlen": 0,
    }
    assert result["ds<'$q ingress ffff:"]["parent"] == "ffff:fff1"
    assert result["dsq-peer pfifo 10:"]["parent"] == "1:1"
    assert result["dsq-peer pfifo 10:"]["packets"] == 4
    assert result["dsm0 pfifo_fast 0: parent 1:1"]["bytes"] == 426
    assert result["dsm0 pfifo_fast 0: parent 1:2"]["bytes"] == 0
    assert result["dsm0 mq 1:"]["bytes"] == 426  # mq's counters are the sum of its children's


def test_text_sample_agrees():
    assert "(dropped 197, overlimits 198 requeues 0)" in recorded("tc_qdisc_text.txt")


def test_show_dev_has_no_dev_key():
    with pytest.raises(ValueError, match=r"^tc -s -j qdisc show: entry 0 has no 'dev' \(ask for all devices"):
        parse_tc_qdisc_json(recorded("tc_qdisc_show_dev.json"))


def test_without_stats():
    with pytest.raises(ValueError, match=r"^tc -s -j qdisc show: qdisc 'dsq1 noqueue 0:' has no 'bytes' counter"):
        parse_tc_qdisc_json(recorded("tc_qdisc_no_stats.json"))


def test_other_errors():
    with pytest.raises(ValueError, match="^tc -s -j qdisc show: output is not JSON"):
        parse_tc_qdisc_json(recorded("tc_qdisc.json")[:-10])
    with pytest.raises(ValueError, match="^tc -s -j qdisc show: output is a JSON dict, expected a list"):
        parse_tc_qdisc_json("{}")
    with pytest.raises(ValueError, match="^tc -s -j qdisc show: entry 0 is not a JSON object"):
        parse_tc_qdisc_json("[1]")
    text = '[{"kind":"tbf","handle":"1:","dev":"x","root":true,"bytes":1,"packets":1,"drops":"many"}]'
    with pytest.raises(ValueError, match="^tc -s -j qdisc show: qdisc 'x tbf 1:' counter 'drops' is not an integer"):
        parse_tc_qdisc_json(text)
    assert parse_tc_qdisc_json("[]") == {}


def test_optional_counters_default_to_zero():
    text = '[{"kind":"tbf","handle":"1:","dev":"x","parent":"2:1","bytes":1,"packets":2,"drops":3}]'
    assert parse_tc_qdisc_json(text) == {"x tbf 1:": {
        "dev": "x", "kind": "tbf", "handle": "1:", "parent": "2:1", "bytes": 1, "packets": 2, "dropped": 3,
        "overlimits": 0, "requeues": 0, "backlog": 0, "qlen": 0}}
