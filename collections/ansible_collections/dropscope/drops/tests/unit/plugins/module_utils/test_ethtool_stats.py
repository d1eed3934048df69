# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ethtool -S, on outputs recorded on kernel 6.18 (veth, virtio_net, lo) and on other machines: ena, mlx5_core,
vmxnet3, ixgbe, i40e, ice, iavf, bnxt_en, igb, e1000e, tg3, sfc, virtio_net, hv_netvsc (sources in
tests/data/README.md)."""

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


def _stats(name):
    """ethq's test files keep the stat lines only (no "NIC statistics:" header, no indentation): add the header."""
    text = recorded(name)
    return parse_ethtool_stats(text if text.startswith("NIC statistics:") else "NIC statistics:\n" + text)


def _lines(name):
    return len([line for line in recorded(name).splitlines() if line.strip() and line.strip() != "NIC statistics:"])


def test_vmxnet3_queue_blocks_keep_their_queue_numbers():
    result = _stats("ethtool_vmxnet3.txt")
    assert len(result) == _lines("ethtool_vmxnet3.txt") - 4  # the 4 "Tx/Rx Queue#: N" lines are not counters
    assert not [name for name in result if "#" in name]
    assert result["rx_queue_0.pkts rx OOB"] == 0
    assert result["rx_queue_1.pkts rx OOB"] == 0
    assert result["rx_queue_0.ucast pkts rx"] == 40863
    assert result["rx_queue_1.ucast pkts rx"] == 143523
    assert result["rx_queue_1.drv dropped rx total"] == 0
    assert result["rx_queue_1.drv dropped rx total.fcs"] == 0
    assert result["tx_queue_1.TSO pkts tx"] == 620
    assert result["tx_queue_0.drv dropped tx total.giant hdr"] == 0  # the one under the total ...
    assert result["tx_queue_0.giant hdr"] == 0  # ... and the queue's own
    assert result["tx_queue_1.ring full"] == 0
    assert result["tx timeout count"] == 0  # after the blocks: global again
    assert list(result)[:3] == ["tx_queue_0.TSO pkts tx", "tx_queue_0.TSO bytes tx", "tx_queue_0.ucast pkts tx"]


def test_ena():
    aws = _stats("ethtool_ena_aws_doc.txt")
    assert len(aws) == 16
    assert aws["pps_allowance_exceeded"] == 0
    assert aws["bw_in_allowance_exceeded"] == 0
    assert aws["conntrack_allowance_available"] == 450878
    assert aws["linklocal_allowance_exceeded"] == 0
    assert aws["queue_0_tx_cnt"] == 4329
    old = _stats("ethtool_ena_1.2.0k.txt")  # ENA 1.2.0k (2018) has no allowance counters yet
    assert len(old) == 104
    assert "pps_allowance_exceeded" not in old
    assert old["queue_0_rx_cnt"] == 9300271
    assert old["queue_1_rx_cnt"] == 3667424


def test_mlx5_core():
    result = _stats("ethtool_mlx5_core.txt")
    assert len(result) == 751
    assert result["rx_out_of_buffer"] == 0
    assert result["rx_discards_phy"] == 0
    assert result["rx_cache_full"] == 696843
    assert result["rx_packets"] == 845320277
    assert result["rx0_packets"] == 53947906


def test_intel_ixgbe_i40e_ice_iavf_igb_e1000e():
    ixgbe = _stats("ethtool_ixgbe.txt")
    assert len(ixgbe) == 37
    assert (ixgbe["rx_missed_errors"], ixgbe["rx_no_buffer_count"], ixgbe["fdir_match"]) == (0, 0, 22053275)
    i40e = _stats("ethtool_i40e.txt")
    assert len(i40e) == 202
    assert i40e["port.rx_dropped"] == 0
    assert i40e["veb.rx_discards"] == 0
    assert i40e["rx-11.rx_packets"] == 38288496797
    ice = _stats("ethtool_ice.txt")
    assert len(ice) == 602
    assert (ice["rx_dropped"], ice["rx_dropped.nic"], ice["rx_unicast"]) == (0, 0, 12117448)
    iavf = _stats("ethtool_iavf.txt")
    assert len(iavf) == 76
    assert iavf["rx_discards"] == 0
    igb = _stats("ethtool_igb.txt")
    assert len(igb) == 82
    assert (igb["rx_fifo_errors"], igb["rx_missed_errors"], igb["rx_queue_3_alloc_failed"]) == (0, 0, 0)
    assert igb["tx_queue_1_packets"] == 935473
    e1000e = _stats("ethtool_e1000e.txt")
    assert len(e1000e) == 53
    assert e1000e["rx_packets"] == 567425


def test_hv_netvsc():
    assert _stats("ethtool_hv_netvsc.txt") == {
        "tx_scattered": 0, "tx_no_memory": 0, "tx_no_space": 0, "tx_too_big": 0, "tx_busy": 0, "tx_send_full": 17464}


def test_bnxt_en_tg3_sfc_virtio_net():
    bnxt = _stats("ethtool_bnxt_en.txt")
    assert len(bnxt) == 499
    # Per-ring names carry the ring in brackets, with a colon inside the name.
    assert bnxt["[0]: rx_discards"] == 11763190
    assert bnxt["[11]: rx_discards"] == 9244693
    assert sum(bnxt["[%d]: rx_discards" % ring] for ring in range(12)) == 123116579
    assert bnxt["rx_total_ring_discards"] == 655430134
    assert bnxt["rx_stat_discard"] == 49337
    tg3 = _stats("ethtool_tg3.txt")
    assert (len(tg3), tg3["rx_discards"]) == (72, 0)
    sfc = _stats("ethtool_sfc.txt")
    assert (len(sfc), sfc["port_rx_dp_di_dropped_packets"], sfc["rx-11.rx_packets"]) == (152, 27, 60)
    virtio = _stats("ethtool_virtio_net_ethq.txt")
    assert virtio == {
        "rx_queue_0_packets": 10282181, "rx_queue_0_bytes": 5048789307,
        "rx_queue_1_packets": 10401806, "rx_queue_1_bytes": 4819127125,
        "tx_queue_0_packets": 3558968, "tx_queue_0_bytes": 18392695909,
        "tx_queue_1_packets": 3493740, "tx_queue_1_bytes": 18293525171,
    }
