# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ethtool -S, on outputs recorded on kernel 6.18 (veth, virtio_net, lo)."""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type


import pytest
from ansible_collections.dropscope.drops.plugins.module_utils.ethtool_stats import parse_ethtool_stats
from ansible_collections.dropscope.drops.tests.unit.plugins.module_utils.samples import recorded


def test_recorded_veth():
    assert parse_ethtool_stats(recorded("ethtool_veth.txt")) == {
        "peer_ifindex": 132,
        "rx_queue_0_xdp_packets": 0,
        "rx_queue_0_xdp_bytes": 0,
        "rx_queue_0_drops": 0,
        "rx_queue_0_xdp_redirect": 0,
        "rx_queue_0_xdp_drops": 0,
        "rx_queue_0_xdp_tx": 0,
        "rx_queue_0_xdp_tx_errors": 0,
        "tx_queue_0_xdp_xmit": 0,
        "tx_queue_0_xdp_xmit_errors": 0,
    }


def test_recorded_virtio_net():
    result = parse_ethtool_stats(recorded("ethtool_virtio_net.txt"))
    assert len(result) == 20
    assert result["rx_kicks"] == 1097
    assert result["tx0_kicks"] == 2310
    assert result["rx0_xdp_drops"] == 0


def test_recorded_lo_has_no_stats():
    # `ethtool -S lo` exits 94, prints nothing on stdout and this on stderr; the caller handles it.
    assert recorded("ethtool_lo.txt").strip() == "no stats available"
    with pytest.raises(ValueError, match="^ethtool -S: output does not start with 'NIC statistics:'"):
        parse_ethtool_stats("")
    with pytest.raises(ValueError, match="^ethtool -S lo: "):
        parse_ethtool_stats(recorded("ethtool_lo.txt"), source="ethtool -S lo")


def test_unusual_names_and_values():
    text = ("NIC statistics:\n"
            "     rx_pkts_[0]: 4\n"
            "     tx-0.packets: 17\n"
            "     rx queue 0 drops: 3\n"
            "     rx_queue_0_xdp_drops: 2\n"
            "     port.rx_dropped: 9\n"
            "     link_state: up\n"
            "     weird: \n"
            "     not a stat line\n"
            "     rx_queue_0_xdp_drops: 5\n"
            "     big: 18446744073709551615\n")
    assert parse_ethtool_stats(text) == {
        "rx_pkts_[0]": 4,
        "tx-0.packets": 17,
        "rx queue 0 drops": 3,
        "rx_queue_0_xdp_drops": 2,
        "port.rx_dropped": 9,
        "rx_queue_0_xdp_drops#2": 5,
        "big": 18446744073709551615,
    }
