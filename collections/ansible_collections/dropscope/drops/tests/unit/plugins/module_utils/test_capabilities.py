# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""drop_capabilities' logic: netlink messages, the ladder and auto's choice, on a fake host."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import struct

import pytest
from ansible_collections.dropscope.drops.plugins.module_utils import capabilities as caps_mod
from ansible_collections.dropscope.drops.tests.unit.plugins.module_utils.samples import STATUS_USER
from ansible_collections.dropscope.drops.tests.unit.plugins.module_utils.samples import recorded_host as _host


def test_genl_request_and_replies():
    request = caps_mod.genl_request("NET_DM", seq=7)
    length, kind, flags, seq, _pid = struct.unpack_from("=IHHII", request)
    assert (length, kind, flags, seq) == (len(request), 0x10, 1, 7)
    assert request[16:18] == bytes([3, 1]) and b"NET_DM\0" in request and len(request) % 4 == 0
    enoent = struct.pack("=IHHII", 36, 2, 0, 7, 0) + struct.pack("=i", -errno.ENOENT) + request[:16]
    assert caps_mod.parse_genl_reply(enoent) is None
    body = (struct.pack("=BBH", 1, 2, 0) + struct.pack("=HH", 11, 2) + b"NET_DM\0" + b"\0"
            + struct.pack("=HHH", 6, 1, 29) + b"\0\0")
    family = struct.pack("=IHHII", 16 + len(body), 0x10, 0, 7, 0) + body
    assert caps_mod.parse_genl_reply(family) == 29
    eperm = struct.pack("=IHHII", 36, 2, 0, 7, 0) + struct.pack("=i", -errno.EPERM)
    with pytest.raises(OSError):
        caps_mod.parse_genl_reply(eperm)


def test_this_kernel_has_no_net_dm():
    # This machine's kernel (6.18) is built without CONFIG_NET_DROP_MONITOR; the real netlink query must say so.
    assert caps_mod.query_genl_family("NET_DM") is None
    assert caps_mod.query_genl_family("nlctrl") == 0x10


def test_ladder_on_a_host_like_this_one():
    caps = caps_mod.collect_capabilities(_host(), genl_family=lambda name: None, euid=0, kernel_release="6.18.44")
    assert caps["kfree_skb"] == {"present": True, "fields": ["location", "rx_sk", "protocol", "reason"],
                                 "reason_names": 127, "format": "/sys/kernel/tracing/events/skb/kfree_skb/format"}
    assert caps["tools"]["bpftrace"]["version"] == "0.17.0" and caps["tools"]["perf"]["version"] == "6.1.192"
    assert caps["privileges"]["cap_sys_admin"] and caps["privileges"]["cap_bpf"]
    assert caps["privileges"]["perf_event_paranoid"] == 2
    ladder = dict((rung["backend"], rung) for rung in caps["ladder"])
    assert [rung["backend"] for rung in caps["ladder"]] == ["bpftrace", "perf", "tracefs", "dropwatch"]
    # No BTF in the fake root: bpftrace is skipped with the reason, perf is chosen.
    assert not ladder["bpftrace"]["available"] and "BTF" in ladder["bpftrace"]["reason"]
    assert ladder["perf"]["available"] and ladder["tracefs"]["available"] is False  # no instances/ in the fake
    assert ladder["dropwatch"]["reason"] == "dropwatch not installed (role dropscope.drops.dropwatch)"
    assert caps["chosen"] == "perf"


def test_ladder_without_privileges_or_tools():
    caps = caps_mod.collect_capabilities(_host(mounted=False, tools=("dropwatch",), status=STATUS_USER),
                                         genl_family=lambda name: None, euid=1000, kernel_release="6.1")
    ladder = dict((rung["backend"], rung["reason"]) for rung in caps["ladder"])
    assert ladder["bpftrace"] == "bpftrace not installed (package bpftrace)"
    assert ladder["perf"].startswith("perf not installed")
    assert ladder["tracefs"].startswith("tracefs not mounted (mountable")
    assert ladder["dropwatch"] == "kernel has no NET_DM (CONFIG_NET_DROP_MONITOR)"
    assert caps["chosen"] is None and caps["kfree_skb"]["present"] is False


def test_net_dm_present_makes_dropwatch_available():
    caps = caps_mod.collect_capabilities(_host(tools=("dropwatch",)), genl_family=lambda name: 29, euid=0)
    assert caps["net_dm"] == {"present": True, "family_id": 29, "error": None}
    assert caps["chosen"] == "dropwatch"


def test_net_dm_query_error_is_a_reason_not_a_crash():
    def broken(name):
        raise OSError(errno.EPERM, "Operation not permitted")

    caps = caps_mod.collect_capabilities(_host(tools=("dropwatch",)), genl_family=broken, euid=0)
    assert caps["net_dm"]["present"] is False and "not permitted" in caps["net_dm"]["error"]
