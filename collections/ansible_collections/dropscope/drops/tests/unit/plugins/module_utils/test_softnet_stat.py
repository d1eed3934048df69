# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""/proc/net/softnet_stat, on a sample recorded on kernel 6.18 (15 columns) and samples of RHEL 5 (9 columns),
RHEL 6/7 (10), RHEL 8 (11) and RHEL 9 (13) published in insights-core's parser tests."""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type


import pytest
from ansible_collections.dropscope.drops.plugins.module_utils.softnet_stat import parse_softnet_stat
from ansible_collections.dropscope.drops.tests.unit.plugins.module_utils.samples import recorded


def test_recorded_softnet_stat():
    assert parse_softnet_stat(recorded("softnet_stat.txt")) == [
        {"cpu": 0, "processed": 0x6280f, "dropped": 0, "time_squeeze": 0, "received_rps": 0,
         "flow_limit_count": 0, "backlog_len": 0},
        {"cpu": 1, "processed": 0x2791, "dropped": 0, "time_squeeze": 0, "received_rps": 0,
         "flow_limit_count": 0, "backlog_len": 0},
    ]


def _line(values):
    return " ".join("%08x" % value for value in values)


def test_15_columns_with_offline_cpu():
    # CPU 1 offline: the second line is CPU 2, and says so in column 12.
    row = [100, 7, 3, 0, 0, 0, 0, 0, 0, 11, 5, 9, 2, 4, 5]
    assert parse_softnet_stat(_line(row) + "\n") == [
        {"cpu": 2, "processed": 100, "dropped": 7, "time_squeeze": 3, "received_rps": 11,
         "flow_limit_count": 5, "backlog_len": 9},
    ]


def test_13_columns():
    row = [100, 7, 3, 0, 0, 0, 0, 0, 0, 11, 5, 9, 6]
    assert parse_softnet_stat(_line(row))[0] == {
        "cpu": 6, "processed": 100, "dropped": 7, "time_squeeze": 3, "received_rps": 11,
        "flow_limit_count": 5, "backlog_len": 9}


def test_11_and_10_columns_use_the_line_index():
    text = _line([1, 2, 3, 0, 0, 0, 0, 0, 0, 4, 5]) + "\n" + _line([6, 7, 8, 0, 0, 0, 0, 0, 0, 9]) + "\n"
    assert parse_softnet_stat(text) == [
        {"cpu": 0, "processed": 1, "dropped": 2, "time_squeeze": 3, "received_rps": 4,
         "flow_limit_count": 5, "backlog_len": None},
        {"cpu": 1, "processed": 6, "dropped": 7, "time_squeeze": 8, "received_rps": 9,
         "flow_limit_count": None, "backlog_len": None},
    ]


def test_errors_name_the_source():
    with pytest.raises(ValueError, match="^/proc/net/softnet_stat: line 1 has 8 columns, expected at least 9"):
        parse_softnet_stat(_line([0] * 8))
    with pytest.raises(ValueError, match="^/proc/net/softnet_stat: line 2 has a column that is not hexadecimal"):
        parse_softnet_stat(_line([0] * 15) + "\n" + _line([0] * 14) + " zzzzzzzz\n")
    assert parse_softnet_stat("") == []


def test_rhel5_9_columns():
    # 2.6.18: no received_rps column (RPS came in 2.6.35); column 8 is cpu_collision.
    assert parse_softnet_stat(recorded("softnet_stat_rhel5.txt")) == [
        {"cpu": 0, "processed": 0x6dcad223, "dropped": 0, "time_squeeze": 1, "received_rps": None,
         "flow_limit_count": None, "backlog_len": None},
    ]


def test_rhel6_7_10_columns():
    cpus = parse_softnet_stat(recorded("softnet_stat_rhel6_7.txt"))
    assert [(cpu["cpu"], cpu["dropped"], cpu["time_squeeze"], cpu["received_rps"]) for cpu in cpus] == [
        (0, 1, 0x11, 0x10), (1, 0xee, 0xf003eca7, 1)]
    assert cpus[1]["flow_limit_count"] is None


def test_rhel8_11_columns():
    assert parse_softnet_stat(recorded("softnet_stat_rhel8.txt")) == [
        {"cpu": 0, "processed": 0x22be3, "dropped": 0xfe, "time_squeeze": 0x12, "received_rps": 2,
         "flow_limit_count": 1, "backlog_len": None},
    ]


def test_rhel9_13_columns():
    cpus = parse_softnet_stat(recorded("softnet_stat_rhel9.txt"))
    # Column 12 is the CPU id; the published fifth line reads 0 there.
    assert [cpu["cpu"] for cpu in cpus] == [0, 1, 2, 3, 0]
    assert [cpu["dropped"] for cpu in cpus] == [0x6283, 0x446, 0x4bc7, 0x7e2e, 0x2db94]
    assert sum(cpu["dropped"] for cpu in cpus) == 25219 + 1094 + 19399 + 32302 + 187284
    assert cpus[3] == {"cpu": 3, "processed": 0x02883c47, "dropped": 0x7e2e, "time_squeeze": 0x7b,
                       "received_rps": 0x02280d49, "flow_limit_count": 0xbd, "backlog_len": 0}
    assert cpus[1]["backlog_len"] == 0xdc
