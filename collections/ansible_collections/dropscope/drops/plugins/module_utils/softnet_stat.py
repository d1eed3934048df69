# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# The docstring samples are verbatim kernel/tool output lines, some longer than 120 characters.
# ruff: noqa: E501
"""Per-CPU receive backlog counters: ``/proc/net/softnet_stat`` (global, not per network namespace).

Pure function (standard library only); it runs on the managed host.

Columns (net/core/net-procfs.c, softnet_seq_show; all ``%08x``, one line per online CPU):

====  =====================  ==========================================================
col   field                  kernels
====  =====================  ==========================================================
0     processed              all
1     dropped                all (backlog full: netdev_max_backlog)
2     time_squeeze           all
3-8   0                      (were fastroute and cpu_collision; RHEL 5-7 kernels still print
                             cpu_collision in column 8)
9     received_rps           2.6.35+ (10 columns); RHEL 5's 2.6.18 prints 9 columns
10    flow_limit_count       3.11+ (11 columns)
11    backlog_len            5.10+ and RHEL 8.5+ (4.18.0-348, 13 columns): input_pkt_queue +
                             process_queue, a level
12    cpu index              5.10+ and RHEL 8.5+: the CPU id (offline CPUs have no line)
13    input_qlen             6.4+ (15 columns, as on 6.18)
14    process_qlen           6.4+
====  =====================  ==========================================================
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

SOURCE = "/proc/net/softnet_stat"


def parse_softnet_stat(text: str) -> list[dict]:
    """Parse ``/proc/net/softnet_stat`` into one dict per line (per online CPU).

    Sample (kernel 6.18, 2 CPUs, 15 columns):

    >>> cpus = parse_softnet_stat('''\\
    ... 0006280f 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000
    ... 00002791 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000001 00000000 00000000
    ... ''')
    >>> cpus[0]
    {'cpu': 0, 'processed': 403471, 'dropped': 0, 'time_squeeze': 0, 'received_rps': 0, 'flow_limit_count': 0, 'backlog_len': 0}
    >>> cpus[1]["cpu"], cpus[1]["processed"]
    (1, 10129)

    It gives ``[{"cpu": 0, "processed": 403471, "dropped": 0, "time_squeeze": 0, "received_rps": 0,
    "flow_limit_count": 0, "backlog_len": 0}, {"cpu": 1, "processed": 10129, ...}]``.

    Older kernels print fewer columns: without the cpu column (before 5.10) ``cpu`` is the line
    index (wrong if a CPU is offline: such CPUs have no line); ``backlog_len`` is then None,
    ``flow_limit_count`` is None before 3.11 (10 columns), and ``received_rps`` is None before
    2.6.35 (9 columns, RHEL 5): ``dropped`` and ``time_squeeze`` are there on every kernel.
    ``backlog_len`` is a queue level, not a counter. Columns beyond the 15th are ignored.

    Raises ValueError naming ``/proc/net/softnet_stat`` when a line has fewer than 9 columns or
    a column is not hexadecimal.
    """
    result = []
    for index, line in enumerate(line for line in text.splitlines() if line.strip()):
        fields = line.split()
        if len(fields) < 9:
            raise ValueError("%s: line %d has %d columns, expected at least 9" % (SOURCE, index + 1, len(fields)))
        try:
            values = [int(field, 16) for field in fields]
        except ValueError:
            raise ValueError("%s: line %d has a column that is not hexadecimal: %r"
                             % (SOURCE, index + 1, line.strip()[:200])) from None
        result.append({
            "cpu": values[12] if len(values) >= 13 else index,
            "processed": values[0],
            "dropped": values[1],
            "time_squeeze": values[2],
            "received_rps": values[9] if len(values) >= 10 else None,
            "flow_limit_count": values[10] if len(values) >= 11 else None,
            "backlog_len": values[11] if len(values) >= 13 else None,
        })
    return result
