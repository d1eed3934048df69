# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Throughput of the on-host aggregation of ``perf script`` output (events per second).

Usage: python benchmarks/aggregate_speed.py [LINES]   (default 1,000,000)

Feeds ``aggregate_perf_script`` a synthetic stream shaped like ``perf script -F trace`` output
recorded on kernel 6.18 (distinct skb addresses, a dozen reason/location groups), then the same
with call chains (``-F trace,ip,sym`` after ``perf record -g``: one event line and 8 frame lines per
event). The lines are generated into a list first (about 200 MB for a million), so only the
aggregation is timed.

Measured on the project's machine (Debian 12, kernel 6.18, 2 vCPUs), 2026-11-27 (3 runs with 3.11.7):
    -F trace, 1,000,000 events:          2.5-2.8 million events/s (0.36-0.39 s) with Python 3.11.7,
                                         3.8 million/s with Debian's /usr/bin/python3 (3.11.2),
                                         1.9 million/s with Python 3.8.18
    -F trace,ip,sym, 1,000,000 lines (111,112 events, 8 frames each): 6.9-7.4 million lines/s,
                                         0.77-0.82 million events/s (Python 3.11.7)
    A real recording (197,785 lines of ``perf script -F trace --show-lost-events`` of a UDP flood,
    17 lost-event lines): 2.8 million events/s, counts equal to perf's own (197,768 samples, 2,233 lost).
For comparison, ``perf script -F trace`` itself prints about 0.5 million events/s here (0.2 s per
100k events), so the aggregation is not the bottleneck.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "collections"))

from ansible_collections.dropscope.drops.plugins.module_utils.kfree_skb import aggregate_perf_script  # noqa: E402

REASONS = {2: "NOT_SPECIFIED", 3: "NO_SOCKET", 6: "SOCKET_RCVBUFF", 12: "NETFILTER_DROP", 64: "QDISC_DROP"}

# (weight, tail): what follows "skbaddr=... rx_sk=... " on a real line.
TAILS = [
    (50, "protocol=2048 location=__udp4_lib_rcv+0x4bc reason: NO_SOCKET"),
    (15, "protocol=2048 location=nft_do_chain+0x3e8 reason: NETFILTER_DROP"),
    (10, "protocol=34525 location=__udp6_lib_rcv+0xe1 reason: NO_SOCKET"),
    (8, "protocol=2048 location=udp_queue_rcv_one_skb+0x437 reason: SOCKET_RCVBUFF"),
    (5, "protocol=2048 location=tcp_v4_rcv+0x91 reason: NO_SOCKET"),
    (4, "protocol=34525 location=ip6_mc_input+0x1c0 reason: NOT_SPECIFIED"),
    (3, "protocol=2048 location=__dev_queue_xmit+0x8d4 reason: QDISC_DROP"),
    (2, "protocol=2054 location=arp_rcv+0x5c reason: OTHERHOST"),
    (1, "protocol=2048 location=udp_destruct_common+0xb9 reason: NOT_SPECIFIED"),
    (1, "protocol=35020 location=__netif_receive_skb_core+0x2ee reason: UNHANDLED_PROTO"),
    (1, "protocol=2048 location=ip_rcv_core+0x2a1 reason: IP_CSUM"),
]
FRAMES = [
    "\tffffffff81e42e50 sk_skb_reason_drop\n",
    "\tffffffff82046f4c __udp4_lib_rcv\n",
    "\tffffffff81ff6343 ip_protocol_deliver_rcu\n",
    "\tffffffff81ff64a1 ip_local_deliver_finish\n",
    "\tffffffff81e6651d __netif_receive_skb_one_core\n",
    "\tffffffff81e66803 process_backlog\n",
    "\tffffffff81e66ee1 __napi_poll\n",
    "\tffffffff81e6743b net_rx_action\n",
]


def _pattern():
    pattern = []
    for weight, tail in TAILS:
        pattern.extend([tail] * weight)
    return pattern


def trace_lines(count):
    """``perf script -F trace`` lines: every line an event with its own skb address."""
    pattern = _pattern()
    size = len(pattern)
    for index in range(count):
        yield "skbaddr=0xffff8881%08x rx_sk=(nil) %s\n" % ((index * 256) & 0xffffffff, pattern[index % size])


def stack_lines(count):
    """``perf script -F trace,ip,sym`` lines of ``perf record -g`` (an event line, then its frames)."""
    pattern = _pattern()
    size = len(pattern)
    produced = 0
    index = 0
    while produced < count:
        yield "skbaddr=0xffff8881%08x rx_sk=(nil) %s\n" % ((index * 256) & 0xffffffff, pattern[index % size])
        produced += 1
        for frame in FRAMES:
            if produced >= count:
                return
            yield frame
            produced += 1
        index += 1


def measure(label, lines, count):
    lines = list(lines)  # generate first: time only the aggregation
    started = time.perf_counter()
    aggregator, lost = aggregate_perf_script(lines, REASONS)
    elapsed = time.perf_counter() - started
    result = aggregator.result()
    print("%-16s %9d lines %9d events in %.3f s: %10.0f lines/s %10.0f events/s (%d groups, %d stacks, lost %d)"
          % (label, count, result["events"], elapsed, count / elapsed, result["events"] / elapsed,
             len(result["drops"]), len(result["stacks"]), lost))
    return result["events"] / elapsed


def main(argv):
    count = int(argv[1]) if len(argv) > 1 else 1000000
    rate = measure("-F trace", trace_lines(count), count)
    measure("-F trace,ip,sym", stack_lines(count), count)
    print("aggregation throughput: %.0f events/s" % rate)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
