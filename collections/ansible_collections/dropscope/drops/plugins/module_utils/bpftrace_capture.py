# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# The docstring samples are verbatim bpftrace output lines, some longer than 120 characters.
# ruff: noqa: E501
"""The `bpftrace` capture backend: drops counted in a kernel map, printed once at the end.

The map is keyed by network namespace inode, drop reason, location (address), protocol (ethertype),
L4 protocol and destination port, so the cost does not grow with events written to user space. Above
the rate guard's limit a lean program (no packet-header parsing; keyed by netns, reason, location and
protocol) runs instead, on 1 in N events chosen at random (its counts, times N, are estimates). Program
texts are constants; only validated integers (netns inode, port, N) are substituted into them.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import json
import os
import select
import signal
import subprocess
import sys
import time

from ansible_collections.dropscope.drops.plugins.module_utils.capture_window import CaptureWindow
from ansible_collections.dropscope.drops.plugins.module_utils.kallsyms import Locator
from ansible_collections.dropscope.drops.plugins.module_utils.kernel_btf import BTF_PATH, BtfError, read_field_offsets
from ansible_collections.dropscope.drops.plugins.module_utils.kfree_skb import (
    DropAggregator,
    protocol_name,
    reason_text,
)

# {netns} and {port} are replaced by integers (0 = no filter); nothing else is ever substituted but the
# constant read expressions below and integers (field offsets).
# netns (checked on kernel 6.18): skb->dev is right for receive drops before socket lookup, skb->sk for
# OUTPUT-chain drops (dev is NULL), args->rx_sk for TCP after socket lookup (only it is set then; kernels
# before 6.x have no rx_sk and take the first two); the current task's netns would be the sender's, wrong
# for receive drops. Ports are read from the IP header at skb->head + skb->network_header (IPv4: header
# length from byte 0, protocol at byte 9; IPv6: next header at byte 6, no extension headers followed).
# Common to both programs: readiness and end markers, the packet's netns, and the exact netns filter.
# `args` is named once, in $args, and each field read once from it: bpftrace 0.17 resolves every use of
# `args` afresh at start-up (it re-reads tracefs's available_events ~20 times for each, ~20-40 ms of CPU per
# use). With 12 uses the full program took ~0.50 s of CPU to start, with 5 ~0.36 s, with 1 (a 2-s capture,
# start to exit) 0.07 s less again (kernel 6.18); $args is the same context pointer, so the reads per event
# are the same (direct loads from the tracepoint's record). Each pointer is read once too (every
# read is a helper call, ~35 ns). SAMPLE_PREDICATE is empty, or the rate guard's random 1-in-N predicate,
# which runs before anything is read (SAMPLE_PREDICATE_TEXT).
_PROLOGUE = r"""
BEGIN { printf("READY\n"); }
END { printf("END\n"); }
tracepoint:skb:kfree_skb SAMPLE_PREDICATE
{
  $args = args;
  $skb = SKB;
  $reason = $args->reason;
  $location = $args->location;
  $protocol = $args->protocol;RX_SK_READ
  $ns = (uint64)0;
  $dev = SKB_DEV;
  if ($dev != 0) {
    $ns = NS_OF_DEV;
  } else {
    $sk = SKB_SK;
    if ($sk != 0) {
      $ns = NS_OF_SK;
    }RX_SK
  }
  if (NETNS_FILTER == 0 || $ns == NETNS_FILTER) {
"""

# How the program reads the kernel's structs. With struct casts bpftrace builds C definitions from BTF
# and runs clang on every start (~0.8 s of CPU per host, kernel 6.18, bpftrace 0.17); with this kernel's
# own field offsets (kernel_btf.py reads them from BTF in ~10 ms) it starts without clang. Same reads,
# same results; the struct form stays for hosts where the offsets cannot be read.
STRUCT_READS = {
    "SKB": "(struct sk_buff *)$args->skbaddr",
    "SKB_DEV": "$skb->dev",
    "NS_OF_DEV": "$dev->nd_net.net->ns.inum",
    "SKB_SK": "$skb->sk",
    "NS_OF_SK": "$sk->__sk_common.skc_net.net->ns.inum",
    "RX_SK_NS": "((struct sock *)$rx_sk)->__sk_common.skc_net.net->ns.inum",
    "NETWORK_HEADER": "$skb->head + $skb->network_header",
}
OFFSET_READS = {
    "SKB": "(uint64)$args->skbaddr",
    "SKB_DEV": "*(uint64 *)($skb + %(skb_dev)d)",
    "NS_OF_DEV": "*(uint32 *)(*(uint64 *)($dev + %(dev_net)d) + %(net_inum)d)",
    "SKB_SK": "*(uint64 *)($skb + %(skb_sk)d)",
    "NS_OF_SK": "*(uint32 *)(*(uint64 *)($sk + %(sk_net)d) + %(net_inum)d)",
    "RX_SK_NS": "*(uint32 *)(*(uint64 *)((uint64)$rx_sk + %(sk_net)d) + %(net_inum)d)",
    "NETWORK_HEADER": "*(uint64 *)($skb + %(skb_head)d) + *(uint16 *)($skb + %(skb_network_header)d)",
}
# The struct fields OFFSET_READS needs, with the size each read assumes (bytes).
FIELDS = {
    "skb_dev": ("sk_buff.dev", 8),
    "skb_sk": ("sk_buff.sk", 8),
    "skb_head": ("sk_buff.head", 8),
    "skb_network_header": ("sk_buff.network_header", 2),
    "dev_net": ("net_device.nd_net.net", 8),
    "sk_net": ("sock.__sk_common.skc_net.net", 8),
    "net_inum": ("net.ns.inum", 4),
}
RX_SK_READ = """
  $rx_sk = $args->rx_sk;"""
RX_SK = """ else if ($rx_sk != 0) {
      $ns = RX_SK_NS;
    }"""
# The rate guard's sampling: bpftrace's rand is the kernel's bpf_get_prandom_u32 (per-CPU state, no lock).
SAMPLE_PREDICATE_TEXT = " /rand %% %d == 0/"

PROGRAM = _PROLOGUE + r"""    $l4 = (uint64)0;
    $port = (uint64)0;
    $nh = NETWORK_HEADER;
    if ($protocol == 2048) {
      $b0 = *(uint8 *)$nh;
      $l4 = *(uint8 *)($nh + 9);
      if ($l4 == 6 || $l4 == 17) {
        $p = *(uint16 *)($nh + ($b0 & 15) * 4 + 2);
        $port = (($p & 255) << 8) | ($p >> 8);
      }
    } else if ($protocol == 34525) {
      $l4 = *(uint8 *)($nh + 6);
      if ($l4 == 6 || $l4 == 17) {
        $p = *(uint16 *)($nh + 42);
        $port = (($p & 255) << 8) | ($p >> 8);
      }
    }
    if (PORT_FILTER == 0 || $port == PORT_FILTER) {
      @drops[$ns, $reason, $location, $protocol, $l4, $port] = count();
      @totals[$ns, $reason, $location, $protocol] = count();
PEERS    }
  }
}
"""

# Who sends and where to (inserted at PEERS): one more map keyed by reason and the packet's source and
# destination addresses as read from its IP header (IPv4: 4 bytes at 12 and 16; IPv6: 16 bytes at 8 and
# 24, as two 64-bit halves), each masked (PEER_MASK4 / PEER_MASK6: /24 and /64 with peers=prefix).
# Addresses only: nothing else of the packet is read. The report takes the source of receive drops and
# the destination of transmit drops.
PEERS = r"""      if ($protocol == 2048) {
        @peers[$reason, 4, (uint64)*(uint32 *)($nh + 12) & PEER_MASK4, (uint64)0,
               (uint64)*(uint32 *)($nh + 16) & PEER_MASK4, (uint64)0] = count();
      } else if ($protocol == 34525) {
        @peers[$reason, 6, *(uint64 *)($nh + 8), *(uint64 *)($nh + 16) & PEER_MASK6,
               *(uint64 *)($nh + 24), *(uint64 *)($nh + 32) & PEER_MASK6] = count();
      }
"""

# The rate guard's cheaper program (measured at ~200k drops/s on kernel 6.18: a map without port parsing
# kept 0.92-1.01 of throughput, with it 0.80-0.95): no packet-header reads, keyed by netns inode, reason, location and
# protocol only. The netns filter stays an exact predicate; only {netns} is substituted (an integer).
LEAN_PROGRAM = _PROLOGUE + r"""    @drops[$ns, $reason, $location, $protocol] = count();
  }
}
"""

LEAN_PEERS_OFF = "rate guard: the lean program reads no packet headers, so no addresses"
L4_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp"}
# Map size: bpftrace silently drops new keys beyond it (4096 by default). Each count() map is a per-CPU
# hash whose elements the kernel allocates for every possible CPU when bpftrace starts: at 65536 keys the
# full program's maps took ~0.2 s of the host's CPU to set up and tear down (kernel 6.18, 2 CPUs; 32 MiB a
# map on a 64-CPU host), at 8192 ~0.03 s. The full program's counts stay exact beyond it: its `@totals` map
# (keyed like the lean program: a few hundred keys) counts every drop, and when `@drops` (which adds the L4
# protocol and port, unbounded under a port scan) is full, what it could not itemise is added back
# without its port (``with_unitemised``).
MAP_KEYS_MAX = 8192
READY_TIMEOUT_S = 30.0
# After SIGINT bpftrace runs END, prints its maps, detaches its probes and exits: 0.2 s on the 30-host lab.
# The capture's own deadline (duration + 60 s) bounds the wait too.
STOP_TIMEOUT_S = 45.0
SIGINT_AGAIN_S = 1.0


# Defence in depth: bpftrace stops itself at the capture's hard deadline even if the module and its
# guardian were both killed (exit() runs END and prints the map like SIGINT does).
SELF_DEADLINE = """
interval:s:DEADLINE_S { exit(); }
"""


PEER_MODES = ("exact", "prefix", "off")
PEERS_TOP = 10  # peer pairs kept per reason; the rest are summed


def peer_masks(mode, byteorder=None):
    """(PEER_MASK4, PEER_MASK6) for `mode`: all ones for ``exact``; ``prefix`` keeps an IPv4 address's first 3
    bytes (/24) and an IPv6 address's first 8 (/64). The IPv4 word is the address as it lies in memory read
    as a host integer, so its /24 mask depends on the byte order.

    >>> peer_masks("prefix", "little")
    (16777215, 0)
    >>> peer_masks("prefix", "big")
    (4294967040, 0)
    """
    if mode == "prefix":
        return (0x00FFFFFF if (byteorder or sys.byteorder) == "little" else 0xFFFFFF00), 0
    return 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF


def program_text(netns=0, port=0, lean=False, deadline_s=0, peers="off", offsets=None, fields=None, sample_one_in=1):
    """The bpftrace program with its integer filters (0 = none); refuses anything but integers.

    `lean` gives LEAN_PROGRAM (the rate guard's choice): no header parsing, so no port filter and no peers.
    `deadline_s` (> 0) adds a probe that makes bpftrace exit by itself after that many seconds.
    `peers` (``exact``, ``prefix`` or ``off``) adds the peers map (PEERS) to the full program.
    `offsets` ({FIELDS key: byte offset}, from ``struct_offsets``) reads the kernel's structs by offset
    (no clang at start-up); None casts to the structs. `fields` (the tracepoint's field names, None: all
    of kernel 6.18's) leaves out what this kernel's tracepoint lacks: `rx_sk` (before 6.x), `reason`
    (before 5.17: every drop gets reason 0, named by ``reason_names``). `sample_one_in` > 1 counts 1 in that
    many events, chosen at random before anything else is read (the rate guard's choice).
    """
    if peers not in PEER_MODES:
        raise ValueError("peers must be one of %s, got %r" % (", ".join(PEER_MODES), peers))
    for name, value, high in (("netns", netns, 2 ** 32 - 1), ("port", port, 65535),
                              ("deadline_s", deadline_s, 86400)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
            raise ValueError("%s filter must be an integer 0..%d, got %r" % (name, high, value))
    if isinstance(sample_one_in, bool) or not isinstance(sample_one_in, int) or not 1 <= sample_one_in <= 65536:
        raise ValueError("sample_one_in must be an integer 1..65536, got %r" % (sample_one_in,))
    if lean:
        if port:
            raise ValueError("the lean program reads no packet headers: it cannot filter port %d" % port)
        text = LEAN_PROGRAM.replace("NETNS_FILTER", "%d" % netns)
    else:
        mask4, mask6 = peer_masks(peers)
        peers_text = "" if peers == "off" else PEERS.replace("PEER_MASK4", "%d" % mask4).replace("PEER_MASK6", "%d" % mask6)
        text = PROGRAM.replace("NETNS_FILTER", "%d" % netns).replace("PORT_FILTER", "%d" % port)
        text = text.replace("PEERS", peers_text)
    if netns:
        # Every counted drop is in that one namespace: a key without it is smaller, and the map update is
        # most of the program's cost at high rates (~290k nft drops/s: kept 0.80 -> 0.83-0.87 of throughput).
        text = text.replace("@drops[$ns, ", "@drops[").replace("@totals[$ns, ", "@totals[")
    text = text.replace(" SAMPLE_PREDICATE", SAMPLE_PREDICATE_TEXT % sample_one_in if sample_one_in > 1 else "")
    if deadline_s:
        text += SELF_DEADLINE.replace("DEADLINE_S", "%d" % deadline_s)
    return _with_reads(text, offsets, fields)


def _with_reads(text, offsets, fields):
    """TEXT with its read placeholders filled: struct casts, or integer offsets (validated here)."""
    reads = STRUCT_READS
    if offsets is not None:
        for key in FIELDS:
            value = offsets.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 65536:
                raise ValueError("offset %s must be an integer 0..65535, got %r" % (key, value))
        reads = dict((name, expression % offsets) for name, expression in OFFSET_READS.items())
    has_rx_sk = fields is None or "rx_sk" in fields
    text = text.replace("RX_SK_READ", RX_SK_READ if has_rx_sk else "").replace("RX_SK", RX_SK if has_rx_sk else "")
    for name in sorted(reads, key=len, reverse=True):  # SKB_DEV before SKB
        text = text.replace(name, reads[name])
    if fields is not None and "reason" not in fields:
        text = text.replace("$args->reason", "0")
    return text


def reason_names(reasons, fields=None):
    """The reason names the map's reason ids take: the tracepoint's own, or {0: "UNKNOWN"} where the
    tracepoint has no reason field (kernels before 5.17: every drop is reason 0 in the map)."""
    if fields is not None and "reason" not in fields:
        return {0: "UNKNOWN"}
    return reasons or {}


def struct_offsets(path=BTF_PATH):
    """(offsets for ``program_text``, None) from this kernel's BTF, or (None, why) where they cannot be read
    or a field is not the size the reads assume (the program then casts to the structs)."""
    paths = dict((key, field[0]) for key, field in FIELDS.items())
    try:
        found = read_field_offsets(paths, path)
    except (IOError, OSError, BtfError) as exc:
        return None, "struct offsets not read (%s): the program casts to the structs" % exc
    for key, (_offset, size) in sorted(found.items()):
        if size != FIELDS[key][1]:
            return None, "%s is %s bytes, not %d: the program casts to the structs" % (FIELDS[key][0], size, FIELDS[key][1])
    return dict((key, offset) for key, (offset, _size) in found.items()), None


def l4_name(number):
    """Name of an IP protocol number: 17 -> "udp"; 0 (not IP, or not read) -> None."""
    if not number:
        return None
    return L4_NAMES.get(number, str(number))


def parse_bpftrace_json(lines):
    """Parse ``bpftrace -f json`` output lines; returns ``{"ready": bool, "entries": [...], "other": [...]}``.

    Samples (bpftrace 0.17 on kernel 6.18, ``tests/data/bpftrace_json.txt``)::

        {"type": "attached_probes", "data": {"probes": 3}}
        {"type": "printf", "data": "READY\\n"}
        {"type": "printf", "data": "END\\n"}
        {"type": "map", "data": {"@drops": {"4026532177,3,0xffffffff82046f4c,2048,17,9000": 300}}}

    give ``ready`` and ``ended`` True and entries ``{"netns": 4026532177, "reason_id": 3, "address":
    0xffffffff82046f4c, "protocol": 2048, "l4": 17, "port": 9000, "count": 300}``. Keys of the lean
    program (4 fields) get ``l4`` and ``port`` 0; keys of a program with a netns filter have no netns (5 or 3
    fields) and get ``netns`` 0. The full program's ``@totals`` map (every drop, keyed like the lean program's
    map) gives ``totals``, entries of the same form. Lines that are not JSON (bpftrace's warnings) go to
    ``other``. The peers map (``{"type": "map", "data": {"@peers": {"3,4,16777343,0,16777343,0": 5}}}``,
    ``tests/data/bpftrace_json_peers.txt``) gives ``peers`` entries ``{"reason_id": 3, "family": 4, "src":
    (16777343, 0), "dst": (16777343, 0), "count": 5}`` (``peer_groups`` names the addresses).
    """
    result = {"ready": False, "ended": False, "entries": [], "totals": [], "other": [], "probes": None, "peers": []}
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            message = json.loads(line)
        except ValueError:
            result["other"].append(line)
            continue
        if not isinstance(message, dict):
            continue
        kind, data = message.get("type"), message.get("data")
        if kind == "printf" and isinstance(data, str) and data.strip() == "READY":
            result["ready"] = True
        elif kind == "printf" and isinstance(data, str) and data.strip() == "END":
            result["ended"] = True
        elif kind == "attached_probes" and isinstance(data, dict):
            result["probes"] = data.get("probes")
        elif kind == "map" and isinstance(data, dict) and isinstance(data.get("@drops"), dict):
            result["entries"].extend(_drop_entries(data["@drops"], "@drops"))
        elif kind == "map" and isinstance(data, dict) and isinstance(data.get("@totals"), dict):
            result["totals"].extend(_drop_entries(data["@totals"], "@totals"))
        elif kind == "map" and isinstance(data, dict) and isinstance(data.get("@peers"), dict):
            for key, count in data["@peers"].items():
                parts = key.split(",")
                if len(parts) != 6:
                    raise ValueError("unexpected key %r in bpftrace map @peers" % key)
                reason, family, src_hi, src_lo, dst_hi, dst_lo = (int(part, 0) for part in parts)
                result["peers"].append({"reason_id": reason, "family": family, "src": (src_hi, src_lo),
                                        "dst": (dst_hi, dst_lo), "count": int(count)})
        elif kind == "error" or kind == "warning":
            result["other"].append(str(data))
    return result


def _drop_entries(data, map_name):
    """The entries of map MAP_NAME's printed DATA ({"key,fields": count}), as ``parse_bpftrace_json`` gives them."""
    entries = []
    for key, count in data.items():
        parts = key.split(",")
        if len(parts) in (3, 5):  # a netns filter: the key has no netns (entries get netns 0)
            parts = ["0"] + parts
        if len(parts) == 4:  # LEAN_PROGRAM's map and @totals: no L4 protocol or port
            parts += ["0", "0"]
        if len(parts) != 6:
            raise ValueError("unexpected key %r in bpftrace map %s" % (key, map_name))
        netns, reason, address, protocol, l4, port = (int(part, 0) for part in parts)
        entries.append({"netns": netns, "reason_id": reason, "address": address, "protocol": protocol,
                        "l4": l4, "port": port, "count": int(count)})
    return entries


def with_unitemised(entries, totals):
    """ENTRIES (of a full ``@drops`` map) completed from TOTALS (``@totals``, every drop by netns, reason,
    location and protocol): for each totals key, what its ``@drops`` entries do not account for is added as
    one entry without L4 protocol and port. Returns (entries, how many drops were added so).

    >>> drops = [{"netns": 0, "reason_id": 3, "address": 16, "protocol": 2048, "l4": 17, "port": 9, "count": 5}]
    >>> totals = [{"netns": 0, "reason_id": 3, "address": 16, "protocol": 2048, "l4": 0, "port": 0, "count": 8},
    ...           {"netns": 0, "reason_id": 12, "address": 32, "protocol": 2048, "l4": 0, "port": 0, "count": 2}]
    >>> entries, unitemised = with_unitemised(drops, totals)
    >>> [(entry["reason_id"], entry["l4"], entry["count"]) for entry in entries], unitemised
    ([(3, 17, 5), (3, 0, 3), (12, 0, 2)], 5)
    """
    def totals_key(entry):
        return entry["netns"], entry["reason_id"], entry["address"], entry["protocol"]

    itemised = {}
    for entry in entries:
        key = totals_key(entry)
        itemised[key] = itemised.get(key, 0) + entry["count"]
    completed, unitemised = list(entries), 0
    for total in totals:
        rest = total["count"] - itemised.get(totals_key(total), 0)
        if rest > 0:
            completed.append(dict(total, l4=0, port=0, count=rest))
            unitemised += rest
    return completed, unitemised


def group_drops(entries, reasons, locator, top=50, with_netns=False):
    """Turn map entries into the capture's ``events``, ``drops`` (largest first, at most `top`) and ``other``.

    Entries are named (reason, protocol, L4 protocol, port) and fed, with their counts and raw
    addresses, to the collection's one grouper (``kfree_skb.DropAggregator``), whose `locator`
    (``kallsyms.Locator``) names each address ``function`` + ``0xOFFSET``.
    """
    aggregator = DropAggregator(extra_fields=("l4", "port", "netns") if with_netns else ("l4", "port"))
    for entry in entries:
        reason = reason_text(entry["reason_id"], reasons)
        l4 = l4_name(entry["l4"])
        port = (entry["port"] or None) if l4 in ("tcp", "udp") else None
        extra = (l4, port, entry["netns"]) if with_netns else (l4, port)
        aggregator.add(reason, "0x%x" % entry["address"], None, entry["protocol"], count=entry["count"], extra=extra)
    return aggregator.result(top=top, locator=locator)


def peer_address(family, words, byteorder=None):
    """The address text of a peers key's (hi, lo) words: IPv4 ``(16777343, 0)`` -> ``127.0.0.1`` on a
    little-endian host; IPv6 ``(0, 72057594037927936)`` -> ``::1``. Masked words give the prefix's first
    address (``10.1.2.0``, ``2001:db8:1:2::``)."""
    order = byteorder or sys.byteorder
    if family == 4:
        return str(ipaddress.IPv4Address((words[0] & 0xFFFFFFFF).to_bytes(4, order)))
    packed = (words[0] & 0xFFFFFFFFFFFFFFFF).to_bytes(8, order) + (words[1] & 0xFFFFFFFFFFFFFFFF).to_bytes(8, order)
    return ipaddress.IPv6Address(packed).compressed


def peer_groups(entries, reasons, mode="exact", top=PEERS_TOP, byteorder=None, truncated=False, counted=None):
    """The capture's ``peers``: per reason the `top` largest (source, destination) pairs, the rest summed.

    `truncated`: the peers map was full. `counted` (reason → IP drops counted, from ``@totals``) then puts what
    the map did not keep into ``other`` too, so each reason's pairs and ``other`` add up to its drops
    (``pairs`` counts the pairs kept).

    >>> peers = peer_groups([{"reason_id": 3, "family": 4, "src": (16777343, 0), "dst": (16777343, 0), "count": 5},
    ...                      {"reason_id": 3, "family": 6, "src": (0, 72057594037927936), "dst": (0, 72057594037927936),
    ...                       "count": 3}], {3: "NO_SOCKET"}, byteorder="little")
    >>> peers["groups"][0], peers["groups"][1]["src"], peers["other"]
    ({'reason': 'NO_SOCKET', 'src': '127.0.0.1', 'dst': '127.0.0.1', 'count': 5}, '::1', {})
    >>> peer_groups([{"reason_id": 3, "family": 4, "src": (1, 0), "dst": (2, 0), "count": 5}], {3: "NO_SOCKET"},
    ...             truncated=True, counted={"NO_SOCKET": 9})["other"]
    {'NO_SOCKET': {'count': 4, 'pairs': 0}}
    """
    by_reason = {}
    for entry in entries:
        reason = reason_text(entry["reason_id"], reasons)
        if entry["family"] not in (4, 6):
            continue
        by_reason.setdefault(reason, []).append(entry)
    groups, other = [], {}
    for reason in sorted(by_reason):
        ranked = sorted(by_reason[reason], key=lambda e: (-e["count"], e["family"], e["src"], e["dst"]))
        for entry in ranked[:top]:
            groups.append({"reason": reason, "src": peer_address(entry["family"], entry["src"], byteorder),
                           "dst": peer_address(entry["family"], entry["dst"], byteorder), "count": entry["count"]})
        rest = ranked[top:]
        if rest:
            other[reason] = {"count": sum(e["count"] for e in rest), "pairs": len(rest)}
    for reason, count in sorted((counted or {}).items()) if truncated else ():
        unkept = count - sum(entry["count"] for entry in by_reason.get(reason, ()))
        if unkept > 0:
            other.setdefault(reason, {"count": 0, "pairs": 0})["count"] += unkept
    groups.sort(key=lambda group: (group["reason"], -group["count"]))
    return {"status": "ok", "mode": mode, "why": None, "top": top, "groups": groups, "other": other,
            "truncated": truncated}


def peers_off(why, mode=None):
    """The capture's ``peers`` when no addresses were recorded, and why."""
    return {"status": "off", "mode": mode, "why": why, "top": PEERS_TOP, "groups": [], "other": {}, "truncated": False}


def command(bpftrace, program="drops.bt"):
    """The bpftrace argument list (JSON output, the program file)."""
    return [bpftrace, "-f", "json", program]


def _read_lines(fd, buffer, until, want_ready=False):
    """Read from fd until EOF, `until` (monotonic), or (want_ready) a READY line. Returns (lines, eof, buffer)."""
    lines = []
    while True:
        remaining = until - time.monotonic()
        if remaining <= 0:
            return lines, False, buffer
        readable = select.select([fd], [], [], min(remaining, 0.2))[0]
        if not readable:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            if buffer:
                lines.append(buffer.decode("utf-8", "replace"))
            return lines, True, b""
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            text = line.decode("utf-8", "replace")
            lines.append(text)
            if want_ready and '"READY' in text:
                return lines, False, buffer


def run_bpftrace_capture(capture, guard, bpftrace, duration, netns=0, port=0, reasons=None, top=50,
                         kallsyms_text=None, lean=False, window=None, peers="exact", fields=None, sample_one_in=1):
    """Attach, wait for READY, count for `duration` s, SIGINT so END prints the map; fills `capture`.

    `lean` runs LEAN_PROGRAM (no packet-header parsing; the rate guard's choice). `sample_one_in` > 1
    counts 1 in that many events, chosen at random in the kernel (the rate guard's choice): every count
    is then the sampled count times `sample_one_in`, an estimate, and ``capture["sample_one_in"]`` says so.
    `window` (a
    ``CaptureWindow``) is told when READY came (live) and when the window ends, right before SIGINT.
    `fields` are the tracepoint's field names (the capabilities' ``kfree_skb.fields``; None: all).
    """
    window = window or CaptureWindow(guard)
    program = guard.path("drops.bt")
    offsets, why = struct_offsets()
    # How the program reads the kernel's structs: "offsets" (from BTF, no clang) or why it casts instead.
    capture["struct_reads"] = "offsets" if offsets is not None else why
    reasons = reason_names(reasons, fields)
    with open(program, "w") as handle:
        # Its own deadline: the guard's, so it never outlives the capture even with nobody left to stop it.
        handle.write(program_text(netns, port, lean=lean, deadline_s=max(1, int(guard.remaining())),
                                  peers="off" if lean else peers, offsets=offsets, fields=fields,
                                  sample_one_in=sample_one_in))
    capture["command"] = command(bpftrace)
    err_path = guard.path("bpftrace.err")
    lines = []
    with open(err_path, "wb") as err:
        proc = guard.start(command(bpftrace, program), stdout=subprocess.PIPE, stderr=err,
                           env_update={"BPFTRACE_MAP_KEYS_MAX": str(MAP_KEYS_MAX)})
        fd = proc.stdout.fileno()
        buffer = b""
        attach_started = time.monotonic()
        got, eof, buffer = _read_lines(fd, buffer, min(attach_started + READY_TIMEOUT_S,
                                                       guard.deadline - duration - 2), want_ready=True)
        lines.extend(got)
        parsed = parse_bpftrace_json(lines)
        if not parsed["ready"]:
            rc, _stopped = guard.wait(proc, timeout=0.1, stop_signal=signal.SIGKILL)
            proc.stdout.close()
            message = _tail(err_path)
            capture["status"] = "failed"
            capture["reason"] = "bpftrace did not attach%s: %s" % (
                "" if eof else " within %d s" % READY_TIMEOUT_S, message or "exit %s" % rc)
            return capture
        capture["attach_s"] = round(time.monotonic() - attach_started, 3)
        capture["started_wall"] = time.time()
        started = window.live()
        got, eof, buffer = _read_lines(fd, buffer, started + duration)
        lines.extend(got)
        # EOF before the end: bpftrace died mid-way (no AFTER counters; the capture fails below).
        capture["duration_s"] = round((time.monotonic() if eof else window.stopping()) - started, 3)
        if not eof:
            interrupted = time.monotonic()
            until = interrupted + min(STOP_TIMEOUT_S, max(guard.remaining() - 3, 1))
            ended = False
            while True:
                # Again every second until END comes: bpftrace 0.17 can miss a SIGINT that lands just
                # before it blocks waiting for events (1 host in 30 on the loaded lab never stopped).
                if not ended:
                    try:
                        os.killpg(proc.pid, signal.SIGINT)
                    except OSError:
                        pass
                got, eof, buffer = _read_lines(fd, buffer, min(until, time.monotonic() + SIGINT_AGAIN_S))
                lines.extend(got)
                ended = ended or parse_bpftrace_json(got)["ended"]  # the new lines only
                if eof or time.monotonic() >= until:
                    break
            capture["stop_s"] = round(time.monotonic() - interrupted, 3)  # SIGINT to the end of its output
        proc.stdout.close()
        rc, stopped = guard.wait(proc, timeout=2, stop_signal=signal.SIGKILL)
    parsed = parse_bpftrace_json(lines)
    # END runs before bpftrace prints its maps (an empty map is not printed at all).
    if not parsed["ended"]:
        capture["status"] = "failed"
        capture["reason"] = "bpftrace did not finish (exit %s): %s" % (rc, _tail(err_path) or "no message")
        capture["truncated"] = True
        return capture
    entries, unitemised = parsed["entries"], 0
    # The lean program's one map is keyed like @totals; the full program's @drops may fill up (ports).
    counted = entries if lean else parsed["totals"]
    if not lean and len(entries) >= MAP_KEYS_MAX:
        entries, unitemised = with_unitemised(entries, counted)
    if sample_one_in > 1:
        capture["sample_one_in"] = sample_one_in
        unitemised *= sample_one_in
        for entry in entries + parsed["peers"]:
            entry["count"] *= sample_one_in
    locator = Locator(None if kallsyms_text is None else (lambda: kallsyms_text))
    capture.update(group_drops(entries, reasons or {}, locator, top=top, with_netns=not netns))
    capture["unitemised"] = unitemised
    if lean:
        capture["peers"] = peers_off(LEAN_PEERS_OFF, peers)
    elif peers == "off":
        capture["peers"] = peers_off("peers=off was asked", peers)
    else:
        full = len(parsed["peers"]) >= MAP_KEYS_MAX
        ip_counted = {}  # what the peers map would hold had it room (only asked when full): IP drops by reason
        for total in counted if full else ():
            if protocol_name(total["protocol"]) in ("IPv4", "IPv6"):
                reason = reason_text(total["reason_id"], reasons or {})
                ip_counted[reason] = ip_counted.get(reason, 0) + total["count"] * sample_one_in
        capture["peers"] = peer_groups(parsed["peers"], reasons or {}, mode=peers, truncated=full, counted=ip_counted)
    # A full map silently drops new keys: if the one that counts every drop is full, counts are a lower bound.
    capture["truncated"] = bool(stopped) or len(counted) >= MAP_KEYS_MAX
    return capture


def _read_file(path):
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except (IOError, OSError):
        return ""


def _tail(path, limit=600):
    text = _read_file(path)
    # bpftrace warns about RLIMIT_MEMLOCK on every start; it is harmless.
    kept = [line for line in text.splitlines() if "RLIMIT_MEMLOCK" not in line]
    return "\n".join(kept)[-limit:].strip()
