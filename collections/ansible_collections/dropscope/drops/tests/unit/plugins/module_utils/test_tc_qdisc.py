# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""tc -s -j qdisc show and tc -s qdisc show: iproute2 6.1 on kernel 6.18, iproute2 4.14.1 (no -j), 4.15.0 and
5.4.0 (JSON with broken entries) built from their release tags, and a published OpenWrt output (cake, fq_codel)."""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type


import pytest
from ansible_collections.dropscope.drops.plugins.module_utils.tc_qdisc import (
    parse_tc_qdisc,
    parse_tc_qdisc_json,
    parse_tc_qdisc_text,
)
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


# The 11 qdiscs of the iproute2 4.14/4.15/5.4 recordings (one netns, one burst of 200 datagrams per veth).
OLD_TC_QDISCS = [
    "lo noqueue 0:", "dh4a mq 1:", "dh4a pfifo_fast 12:", "dh4a pfifo_fast 11:", "dh4d htb 4:", "dh4d bfifo 40:",
    "dh4c tbf 2:", "dh4c pfifo 20:", "dh4f noqueue 0:", "dh4f ingress ffff:", "dh4e tbf 3:",
]


def test_text_agrees_with_json_on_iproute2_6_1():
    assert parse_tc_qdisc_text(recorded("tc_qdisc_text.txt")) == parse_tc_qdisc_json(recorded("tc_qdisc.json"))


def test_text_of_iproute2_4_14_which_has_no_json():
    assert recorded("tc_qdisc_iproute2_4.14_j_stderr.txt").strip() == 'Option "-j" is unknown, try "tc -help".'
    result = parse_tc_qdisc_text(recorded("tc_qdisc_text_iproute2_4.14.txt"))
    assert list(result) == OLD_TC_QDISCS
    # "(dropped 194, overlimits 207 requeues 0)": the pfifo child (limit 5p) of the tbf dropped 194 of 200.
    assert result["dh4c tbf 2:"] == {
        "dev": "dh4c", "kind": "tbf", "handle": "2:", "parent": "root",
        "bytes": 6252, "packets": 6, "dropped": 194, "overlimits": 207, "requeues": 0, "backlog": 0, "qlen": 0}
    assert result["dh4c pfifo 20:"]["parent"] == "2:1"
    assert result["dh4e tbf 3:"]["dropped"] == 198
    assert result["dh4a pfifo_fast 12:"]["packets"] == 201
    assert result["dh4a pfifo_fast 11:"]["parent"] == "1:1"
    assert result["dh4f ingress ffff:"]["parent"] == "ffff:fff1"
    assert result["dh4a mq 1:"]["bytes"] == 208532
    # 4.15 prints the same text (only the trailing space of the backlog line differs).
    assert parse_tc_qdisc_text(recorded("tc_qdisc_text_iproute2_4.15.txt")) == result


def test_iproute2_4_15_and_5_4_json_is_broken_per_qdisc():
    with pytest.raises(ValueError, match="^tc -s -j qdisc show: output is not JSON"):
        parse_tc_qdisc_json(recorded("tc_qdisc_iproute2_4.15.json"))
    # 4.15: pfifo_fast, bfifo, tbf, pfifo and ingress options are bare text: 7 of 11 entries.
    with pytest.raises(ValueError, match=r"^tc -s -j qdisc show: entry 2 is not valid JSON \(7 of 11 broken; give the text"):
        parse_tc_qdisc(recorded("tc_qdisc_iproute2_4.15.json"))
    # 5.4: only the two tbf entries.
    with pytest.raises(ValueError, match=r"^tc -s -j qdisc show: entry 6 is not valid JSON \(2 of 11 broken"):
        parse_tc_qdisc(recorded("tc_qdisc_iproute2_5.4.json"))


def test_broken_entries_come_from_the_text_and_the_valid_ones_from_json():
    for version in ("4.15", "5.4"):
        result = parse_tc_qdisc(recorded("tc_qdisc_iproute2_%s.json" % version),
                                text=recorded("tc_qdisc_text_iproute2_%s.txt" % version))
        assert list(result) == OLD_TC_QDISCS
        assert result["dh4c tbf 2:"]["dropped"] == 194  # broken in both: from the text
        assert result["dh4e tbf 3:"]["overlimits"] == 199
        assert result["dh4c pfifo 20:"]["dropped"] == 194
        assert result["dh4d htb 4:"]["bytes"] == 90
    # Which source a qdisc came from: change a number of the valid htb entry (JSON) and of the broken
    # tbf entry (text) in the text; the htb keeps the JSON's value, the tbf takes the text's.
    text = recorded("tc_qdisc_text_iproute2_5.4.txt").replace(
        " Sent 90 bytes 1 pkt (dropped 0,", " Sent 91 bytes 1 pkt (dropped 0,", 1).replace(
        "(dropped 198, overlimits 199", "(dropped 1198, overlimits 199")
    result = parse_tc_qdisc(recorded("tc_qdisc_iproute2_5.4.json"), text=text)
    assert result["dh4d htb 4:"]["bytes"] == 90
    assert result["dh4e tbf 3:"]["dropped"] == 1198
    # The text lists other qdiscs (one went away in between): everything comes from the text.
    fewer = "\n".join(recorded("tc_qdisc_text_iproute2_5.4.txt").splitlines()[3:]) + "\n"
    result = parse_tc_qdisc(recorded("tc_qdisc_iproute2_5.4.json"), text=fewer)
    assert list(result) == OLD_TC_QDISCS[1:]


def test_valid_json_and_text_only_paths():
    assert parse_tc_qdisc(recorded("tc_qdisc.json")) == parse_tc_qdisc_json(recorded("tc_qdisc.json"))
    assert parse_tc_qdisc(text=recorded("tc_qdisc_text.txt")) == parse_tc_qdisc_json(recorded("tc_qdisc.json"))
    with pytest.raises(ValueError, match="^tc -s -j qdisc show: no output given"):
        parse_tc_qdisc()
    # A decodable entry without dev is the caller's mistake, not a tc bug: no fallback.
    with pytest.raises(ValueError, match="^tc -s -j qdisc show: entry 0 has no 'dev'"):
        parse_tc_qdisc('[{"kind":"tbf","handle":"1:","bytes":1},{"kind":"tbf","options":{rate 1Mbit }}]',
                       text=recorded("tc_qdisc_text.txt"))


def test_published_openwrt_text_with_cake_and_fq_codel():
    result = parse_tc_qdisc_text(recorded("tc_qdisc_text_openwrt_cake.txt"))
    assert list(result) == ["lo noqueue 0:", "eth0 fq_codel 0:", "eth1 cake 800d:"]
    assert result["eth1 cake 800d:"] == {
        "dev": "eth1", "kind": "cake", "handle": "800d:", "parent": "root",
        "bytes": 7984273, "packets": 67778, "dropped": 13, "overlimits": 8986, "requeues": 0, "backlog": 0, "qlen": 0}
    assert result["eth0 fq_codel 0:"]["requeues"] == 13
    assert result["eth0 fq_codel 0:"]["packets"] == 69478


def test_text_errors_name_the_source_and_line():
    with pytest.raises(ValueError, match=r"^tc -s qdisc show: line 1: qdisc has no 'dev' \(ask for all devices"):
        parse_tc_qdisc_text("qdisc tbf 1: root refcnt 2 rate 1Mbit burst 1600b lat 0us\n")
    with pytest.raises(ValueError, match=r"^tc -s qdisc show: qdisc 'lo noqueue 0:' \(line 1\) has no 'Sent' line"):
        parse_tc_qdisc_text("qdisc noqueue 0: dev lo root refcnt 2\nqdisc noqueue 0: dev x root refcnt 2\n")
    with pytest.raises(ValueError, match="^tc -s qdisc show: line 1 comes before the first 'qdisc' line"):
        parse_tc_qdisc_text("Error: Cannot find device\n")
    with pytest.raises(ValueError, match="^tc -s qdisc show: line 1: not a qdisc line tc prints"):
        parse_tc_qdisc_text("qdisc weird\n")
    with pytest.raises(ValueError, match="^tc -s -j qdisc show: output ends inside an entry"):
        parse_tc_qdisc(recorded("tc_qdisc_iproute2_5.4.json")[:-60] + "]")
    assert parse_tc_qdisc_text("") == {}
    # tc rounds large backlogs in its text: "12Kb" is 12 * 1024 bytes.
    text = "qdisc pfifo 1: dev x root refcnt 2 limit 5p\n Sent 1 bytes 1 pkt (dropped 0, overlimits 0 requeues 0)\n" \
           " rate 0bit 0pps backlog 12Kb 8p requeues 0\n"
    assert parse_tc_qdisc_text(text)["x pfifo 1:"]["backlog"] == 12 * 1024
    assert parse_tc_qdisc_text(text)["x pfifo 1:"]["qlen"] == 8
