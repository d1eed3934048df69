# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""kernel_btf: field offsets from BTF; the bpftrace program built with them (or without some fields)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

import pytest
from ansible_collections.dropscope.drops.plugins.module_utils import bpftrace_capture as bt
from ansible_collections.dropscope.drops.plugins.module_utils.kernel_btf import (
    BTF_PATH,
    BtfError,
    _Types,
    build_btf,
    field_offsets,
    read_field_offsets,
)

# The shapes the kernel uses: sk_buff's `dev` inside an anonymous union inside an anonymous struct
# (6.x), a typedef'd embedded struct (possible_net_t), a bitfield member (kind_flag set), a pointer.
TYPES = [
    ("INT", "unsigned int", 4),                                            # 1
    ("PTR", "", 5),                                                        # 2: struct net *
    ("STRUCT", "net", 200, [("passive", 1, 0), ("ns", 6, 1280)]),          # 3: ns at byte 160
    ("STRUCT", "", 8, [("net", 2, 0)]),                                    # 4: possible_net_t's struct
    ("TYPEDEF", "possible_net_t", 4),                                      # 5
    ("STRUCT", "ns_common", 24, [("stashed", 2, 0), ("inum", 1, 128)]),  # 6: inum at byte 16
    ("UNION", "", 8, [("dev", 2, 0), ("dev_scratch", 1, 0)]),             # 7
    ("STRUCT", "", 24, [("next", 2, 0), ("prev", 2, 64), ("", 7, 128)]),  # 8
    ("UNION", "", 24, [("", 8, 0), ("rbnode", 1, 0)]),                    # 9
    ("STRUCT", "sk_buff", 232, [("", 9, 0), ("sk", 2, 192)]),             # 10: dev at 16, sk at 24
    ("STRUCT", "net_device", 300, [("nd_net", 5, 2112)]),                  # 11: nd_net at 264
]


def test_offsets_inside_anonymous_unions_and_typedefs():
    blob = build_btf(TYPES)
    found = field_offsets(blob, {"dev": "sk_buff.dev", "sk": "sk_buff.sk", "dev_net": "net_device.nd_net.net",
                                 "inum": "net.ns.inum"})
    assert found == {"dev": (16, 8), "sk": (24, 8), "dev_net": (264, 8), "inum": (176, 4)}


def test_missing_struct_member_and_bad_blobs_are_named():
    blob = build_btf(TYPES)
    with pytest.raises(BtfError, match="sk_buff.dst: no member dst"):
        field_offsets(blob, {"x": "sk_buff.dst"})
    with pytest.raises(BtfError, match="no struct sock in BTF"):
        field_offsets(blob, {"x": "sock.__sk_common"})
    with pytest.raises(BtfError, match="not BTF"):
        field_offsets(b"\0" * 64, {"x": "sk_buff.dev"})
    with pytest.raises(BtfError, match="truncated"):
        field_offsets(blob[:-3], {"x": "sk_buff.dev"})


def test_bitfield_members_are_not_byte_addressable():
    bitfields = [("INT", "u8", 1), ("STRUCT", "s", 4, [("flag", 1, (1 << 24) | 3)])]
    blob = bytearray(build_btf(bitfields))
    # build_btf writes kind_flag 0; set it on the struct record (header 24 bytes, INT record 16 bytes).
    info_at = 24 + 16 + 4
    blob[info_at + 3] |= 0x80
    with pytest.raises(BtfError, match="no member flag"):
        field_offsets(bytes(blob), {"x": "s.flag"})


@pytest.mark.skipif(not os.path.exists(BTF_PATH), reason="this kernel has no BTF")
def test_this_kernels_btf_has_every_field_the_program_reads():
    found = read_field_offsets(dict((key, path) for key, (path, _size) in bt.FIELDS.items()))
    assert dict((key, size) for key, (_offset, size) in found.items()) == dict(
        (key, size) for key, (_path, size) in bt.FIELDS.items())
    offsets, why = bt.struct_offsets()
    assert why is None and offsets == dict((key, offset) for key, (offset, _size) in found.items())


def test_struct_offsets_says_why_it_cannot_read(tmp_path):
    missing = tmp_path / "vmlinux"
    offsets, why = bt.struct_offsets(str(missing))
    assert offsets is None and why.startswith("struct offsets not read (") and "the program casts" in why
    missing.write_bytes(build_btf(TYPES))
    offsets, why = bt.struct_offsets(str(missing))
    assert offsets is None and why == "struct offsets not read (sock.__sk_common.skc_net.net: no struct sock in BTF): " \
                                      "the program casts to the structs"


OFFSETS = {"skb_dev": 16, "skb_sk": 24, "skb_head": 192, "skb_network_header": 180, "dev_net": 264,
           "sk_net": 48, "net_inum": 176}


def test_program_with_offsets_has_no_struct_cast_and_only_integers():
    text = bt.program_text(4026532177, 8000, offsets=OFFSETS)
    assert "struct" not in text and "->dev" not in text and "->head" not in text
    assert "$dev = *(uint64 *)($skb + 16);" in text
    assert "$ns = *(uint32 *)(*(uint64 *)($dev + 264) + 176);" in text
    assert "$ns = *(uint32 *)(*(uint64 *)($sk + 48) + 176);" in text
    assert "$nh = *(uint64 *)($skb + 192) + *(uint16 *)($skb + 180);" in text
    for bad in ("16; system(\"x\")", -1, 65536, True, None):
        with pytest.raises(ValueError, match="offset skb_dev must be an integer"):
            bt.program_text(0, 0, offsets=dict(OFFSETS, skb_dev=bad))


def test_program_leaves_out_what_an_older_tracepoint_lacks():
    # Kernel 5.4's skb:kfree_skb: skbaddr, location, protocol (no reason, no rx_sk).
    old = ["location", "protocol"]
    text = bt.program_text(4026532177, 8000, fields=old, offsets=OFFSETS)
    assert "rx_sk" not in text and "args->reason" not in text
    assert "$reason = 0;" in text and "@drops[$reason, $location, $protocol, $l4, $port] = count();" in text
    assert bt.reason_names({2: "NOT_SPECIFIED"}, old) == {0: "UNKNOWN"}
    assert bt.reason_names({2: "NOT_SPECIFIED"}, ["location", "protocol", "reason"]) == {2: "NOT_SPECIFIED"}
    # 6.18's has both.
    text = bt.program_text(4026532177, 8000, fields=["location", "rx_sk", "protocol", "reason"])
    assert "$rx_sk = $args->rx_sk;" in text and "$rx_sk != 0" in text and "$reason = $args->reason;" in text


def test_keys_without_netns_parse_like_keys_with_it():
    """With a netns filter the map key has no netns (5 fields; lean: 3): entries get netns 0."""
    lines = ['{"type": "printf", "data": "READY\\n"}',
             '{"type": "map", "data": {"@drops": {"3, 18446744071598727244, 2048, 17, 9000": 300,'
             ' "5, 18446744071598727244, 2048": 7}}}',
             '{"type": "printf", "data": "END\\n"}']
    parsed = bt.parse_bpftrace_json(lines)
    assert parsed["ended"] is True
    assert parsed["entries"] == [
        {"netns": 0, "reason_id": 3, "address": 18446744071598727244, "protocol": 2048, "l4": 17, "port": 9000,
         "count": 300},
        {"netns": 0, "reason_id": 5, "address": 18446744071598727244, "protocol": 2048, "l4": 0, "port": 0,
         "count": 7}]


@pytest.mark.parametrize("lean", [False, True])
@pytest.mark.parametrize("offsets", [None, OFFSETS])
@pytest.mark.parametrize("fields", [None, ["location", "protocol"], ["location", "rx_sk", "protocol", "reason"]])
def test_the_program_reads_each_tracepoint_field_once(lean, offsets, fields):
    """bpftrace 0.17 pays ~20-40 ms of start-up CPU for every use of `args`: named once, each field read once."""
    text = bt.program_text(4026532177, lean=lean, offsets=offsets, fields=fields, peers="off" if lean else "exact")
    present = ["skbaddr", "location", "protocol"] + [name for name in ("reason", "rx_sk") if fields is None or name in fields]
    assert text.count("args") == 2 + len(present) and text.count("$args = args;") == 1  # "$args = args;": 2
    assert text.count("$args->") == len(present)
    for name in present:
        assert text.count("$args->%s;" % name) == 1


# The structs the program reads come first; a tail of records the walk never needs follows them.
TAIL = [("INT", "filler%d" % index, 4) for index in range(3000)]


def test_the_walk_stops_once_it_has_the_structs_it_needs():
    blob = build_btf(TYPES + TAIL)
    paths = {"dev": "sk_buff.dev", "inum": "net.ns.inum"}
    assert field_offsets(blob, paths) == {"dev": (16, 8), "inum": (176, 4)}
    types = _Types(blob, ["sk_buff", "net"])
    assert types.struct_id("net") == 3 and types.struct_id("sk_buff") == 10
    assert len(types.offsets) < len(TYPES + TAIL)  # not every record was walked
    assert types.struct_id("nothing") is None and len(types.offsets) == len(TYPES + TAIL) + 1
    with pytest.raises(BtfError, match="type id 9999 out of range"):
        types.record(9999)


def test_a_struct_name_counts_only_on_a_struct_and_the_first_one_wins():
    # An INT called "s" comes before the struct s; a second struct net comes after the first.
    assert field_offsets(build_btf([("INT", "s", 4), ("STRUCT", "s", 4, [("a", 1, 0)])]), {"x": "s.a"}) == {"x": (0, 4)}
    records = TYPES + [("STRUCT", "net", 8, [("ns", 6, 0)])]
    assert field_offsets(build_btf(records), {"inum": "net.ns.inum"}) == {"inum": (176, 4)}


def test_a_record_cut_short_is_an_error():
    blob = bytearray(build_btf([("STRUCT", "s", 4, [("a", 0, 0)])]))
    blob[24 + 4] = 9  # vlen 9: nine members, but the section holds one
    with pytest.raises(BtfError, match="truncated"):
        field_offsets(bytes(blob), {"x": "s.a"})
