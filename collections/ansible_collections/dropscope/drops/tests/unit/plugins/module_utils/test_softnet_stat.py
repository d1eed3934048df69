# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""/proc/net/softnet_stat, on a sample recorded on kernel 6.18 (15 columns) and older layouts."""

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
    with pytest.raises(ValueError, match="^/proc/net/softnet_stat: line 1 has 9 columns, expected at least 10"):
        parse_softnet_stat(_line([0] * 9))
    with pytest.raises(ValueError, match="^/proc/net/softnet_stat: line 2 has a column that is not hexadecimal"):
        parse_softnet_stat(_line([0] * 15) + "\n" + _line([0] * 14) + " zzzzzzzz\n")
    assert parse_softnet_stat("") == []
