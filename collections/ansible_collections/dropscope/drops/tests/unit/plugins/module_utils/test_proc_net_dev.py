# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""/proc/net/dev and /sys/class/net/IF/statistics, on samples recorded on kernel 6.18."""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import os

import pytest
from ansible_collections.dropscope.drops.plugins.module_utils.proc_net_dev import (
    PROC_NET_DEV_COLUMNS,
    parse_proc_net_dev,
    read_sysfs_statistics,
)
from ansible_collections.dropscope.drops.tests.unit.plugins.module_utils.samples import recorded


def test_recorded_proc_net_dev():
    result = parse_proc_net_dev(recorded("proc_net_dev.txt"))
    assert sorted(result) == sorted(["lo", "dsq-peer", "ds<'$q", "dsm1", "dsm0", "dsp-a"])
    assert result["dsp-a"] == {
        "rx_bytes": 558, "rx_packets": 7, "rx_errors": 0, "rx_dropped": 0, "rx_fifo_errors": 0,
        "rx_frame_errors": 0, "rx_compressed": 0, "multicast": 0,
        "tx_bytes": 3684, "tx_packets": 10, "tx_errors": 0, "tx_dropped": 0, "tx_fifo_errors": 0,
        "collisions": 0, "tx_carrier_errors": 0, "tx_compressed": 0,
    }
    assert result["lo"]["rx_packets"] == 100
    assert result["lo"]["tx_bytes"] == 13800
    assert result["ds<'$q"]["rx_bytes"] == 516  # a name with shell/HTML characters, longer than 6
    assert result["dsq-peer"]["tx_packets"] == 6
    assert list(result["lo"]) == list(PROC_NET_DEV_COLUMNS)


def test_value_touching_the_colon():
    text = ("Inter-|   Receive                                                |  Transmit\n"
            " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls"
            " carrier compressed\n"
            "  eth0:210140675    4075    0    7    0     0          0         0   192953    2417    0    3    0     0"
            "       0          0\n")
    result = parse_proc_net_dev(text)
    assert result["eth0"]["rx_bytes"] == 210140675
    assert result["eth0"]["rx_dropped"] == 7
    assert result["eth0"]["tx_dropped"] == 3


def test_errors_name_the_source():
    lines = recorded("proc_net_dev.txt").splitlines()
    with pytest.raises(ValueError, match="^/proc/net/dev: does not start"):
        parse_proc_net_dev("\n".join(lines[1:]))
    with pytest.raises(ValueError, match=r"^/proc/net/dev: line for 'lo' has 15 values, expected 16"):
        parse_proc_net_dev("\n".join(lines[:2] + [lines[2].rsplit(" ", 1)[0]]))
    with pytest.raises(ValueError, match=r"^/proc/net/dev: line for 'lo' has a value that is not an integer"):
        parse_proc_net_dev("\n".join(lines[:2] + [lines[2].replace("13800", "13x00", 1)]))
    with pytest.raises(ValueError, match="^/proc/net/dev: line 3 has no 'NAME:' prefix"):
        parse_proc_net_dev("\n".join(lines[:2] + ["    lo   13800"]))


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)


def test_read_sysfs_statistics(tmp_path):
    root = str(tmp_path)
    _write(os.path.join(root, "eth0", "statistics", "rx_dropped"), "5\n")
    _write(os.path.join(root, "eth0", "statistics", "rx_missed_errors"), "0\n")
    _write(os.path.join(root, "eth0", "statistics", "garbage"), "n/a\n")  # not an integer: skipped
    os.makedirs(os.path.join(root, "eth0", "statistics", "subdir"))  # unreadable as a file: skipped
    _write(os.path.join(root, "we<'$ird\"if", "statistics", "tx_dropped"), "1\n")
    _write(os.path.join(root, "bonding_masters"), "bond0\n")  # a file, not an interface
    os.makedirs(os.path.join(root, "nostats"))  # no statistics directory
    assert read_sysfs_statistics(root) == {
        "eth0": {"rx_dropped": 5, "rx_missed_errors": 0},
        "we<'$ird\"if": {"tx_dropped": 1},
    }


def test_read_sysfs_statistics_missing_root(tmp_path):
    assert read_sysfs_statistics(str(tmp_path / "absent")) == {}


@pytest.mark.skipif(not os.path.isdir("/sys/class/net/lo/statistics"), reason="no sysfs here")
def test_read_sysfs_statistics_live():
    result = read_sysfs_statistics()
    assert "lo" in result
    assert isinstance(result["lo"]["rx_packets"], int)
    assert "rx_dropped" in result["lo"]
