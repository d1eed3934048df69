# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# The docstring samples are verbatim kernel/tool output lines, some longer than 120 characters.
# ruff: noqa: E501
"""Interface counters: ``/sys/class/net/IF/statistics/*`` and its fallback ``/proc/net/dev``.

Pure functions (standard library only); they run on the managed host.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import os

SOURCE = "/proc/net/dev"

# /proc/net/dev columns, in order, under the names of the sysfs statistics files. Some columns are
# sums in the kernel (net/core/net-procfs.c, dev_seq_printf_stats):
#   drop    = rx_dropped + rx_missed_errors
#   frame   = rx_length_errors + rx_over_errors + rx_crc_errors + rx_frame_errors
#   carrier = tx_carrier_errors + tx_aborted_errors + tx_window_errors + tx_heartbeat_errors
# so on the fallback path rx_dropped, rx_frame_errors and tx_carrier_errors carry those sums.
PROC_NET_DEV_COLUMNS = (
    "rx_bytes",
    "rx_packets",
    "rx_errors",
    "rx_dropped",
    "rx_fifo_errors",
    "rx_frame_errors",
    "rx_compressed",
    "multicast",
    "tx_bytes",
    "tx_packets",
    "tx_errors",
    "tx_dropped",
    "tx_fifo_errors",
    "collisions",
    "tx_carrier_errors",
    "tx_compressed",
)


def parse_proc_net_dev(text: str) -> dict[str, dict[str, int]]:
    """Parse ``/proc/net/dev`` into ``{ifname: {sysfs_counter_name: value}}``.

    Sample (kernel 6.18, inside a network namespace):

    >>> dev = parse_proc_net_dev('''Inter-|   Receive                                                |  Transmit
    ...  face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    ...     lo:   13800     100    0    0    0     0          0         0    13800     100    0    0    0     0       0          0
    ...  dsp-a:     558       7    0    0    0     0          0         0     3684      10    0    0    0     0       0          0
    ... ''')
    >>> dev["lo"]["rx_packets"], dev["dsp-a"]["tx_bytes"], dev["dsp-a"]["rx_dropped"]
    (100, 3684, 0)
    >>> sorted(dev)
    ['dsp-a', 'lo']

    It gives ``{"lo": {"rx_bytes": 13800, "rx_packets": 100, ...}, "dsp-a": {...}}``. An interface name
    never contains ``:``, whitespace or ``/`` (the kernel refuses them), so the name is everything
    before the first ``:``; long names touch their first value (``dsq-peer:      90``, or
    ``eth0:210140675`` once the byte count is wide).

    Raises ValueError naming ``/proc/net/dev`` when the header is missing, a line has the wrong
    number of values or a value is not an integer.
    """
    lines = text.splitlines()
    if not lines or not lines[0].startswith("Inter-|"):
        raise ValueError("%s: does not start with the 'Inter-|' header line" % SOURCE)
    result = {}
    for number, line in enumerate(lines[1:], 2):
        if not line.strip() or "|" in line:
            continue  # the second header line (" face |bytes ...")
        name, sep, rest = line.partition(":")
        name = name.strip()
        if not sep or not name:
            raise ValueError("%s: line %d has no 'NAME:' prefix: %r" % (SOURCE, number, line))
        values = rest.split()
        if len(values) != len(PROC_NET_DEV_COLUMNS):
            raise ValueError("%s: line for %r has %d values, expected %d"
                             % (SOURCE, name, len(values), len(PROC_NET_DEV_COLUMNS)))
        try:
            result[name] = dict(zip(PROC_NET_DEV_COLUMNS, (int(value) for value in values)))  # noqa: B905 (py3.8)
        except ValueError:
            raise ValueError("%s: line for %r has a value that is not an integer: %r"
                             % (SOURCE, name, rest.strip())) from None
    return result


def read_sysfs_statistics(root: str = "/sys/class/net") -> dict[str, dict[str, int]]:
    """Read every file of ``ROOT/IF/statistics/`` into ``{ifname: {file_name: value}}``.

    Sample (``/sys/class/net/dsp-a/statistics/`` on kernel 6.18, 24 files)::

        collisions: 0
        multicast: 0
        rx_bytes: 468
        rx_crc_errors: 0
        rx_dropped: 0
        ...
        tx_packets: 8
        tx_window_errors: 0

    gives ``{"dsp-a": {"collisions": 0, "multicast": 0, "rx_bytes": 468, ...}}``. Names are taken as
    the kernel gives them (interface names may contain ``<``, ``'``, ``$`` and the like). Entries
    without a ``statistics`` directory (``bonding_masters``) are skipped, and so are files that
    cannot be read or do not hold an integer. A root that cannot be listed (no sysfs, e.g. in some
    containers) gives ``{}``, so the caller can fall back to ``/proc/net/dev``.
    """
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return {}
    result = {}
    for name in names:
        directory = os.path.join(root, name, "statistics")
        try:
            files = sorted(os.listdir(directory))
        except OSError:
            continue
        counters = {}
        for counter in files:
            try:
                with open(os.path.join(directory, counter), "r") as handle:
                    counters[counter] = int(handle.read().strip())
            except (OSError, ValueError):
                continue
        result[name] = counters
    return result
