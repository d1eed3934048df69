# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# The docstring samples are verbatim kernel output lines, some longer than 120 characters.
# ruff: noqa: E501
"""Connection tracking statistics: ``/proc/net/stat/nf_conntrack`` and ``/proc/sys/net/netfilter/nf_conntrack_*``.

Pure functions (standard library only); they run on the managed host. Both exist only where the
nf_conntrack module is loaded (read them, never load it); both are per network namespace, except
``nf_conntrack_max`` and ``nf_conntrack_buckets`` (global; a namespace other than the first may
only read them).

``/proc/net/stat/nf_conntrack`` (net/netfilter/nf_conntrack_standalone.c, ct_cpu_seq_show) is a
header line naming the columns, then one line per possible CPU, every value ``%08x``. The names
changed across kernels, so they are read from the header: 4.x and 5.4 print ``entries searched
found new invalid ignore delete delete_list insert insert_failed drop early_drop icmp_error
expect_new expect_create expect_delete search_restart``; later kernels renamed ``searched`` to
``clashres`` and ``delete_list`` to ``chainlength`` (6.18 prints that header). ``entries`` is the
namespace's table size, the same on every line; the other columns are per-CPU counters.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

SOURCE = "/proc/net/stat/nf_conntrack"
SYSCTL_DIR = "/proc/sys/net/netfilter/"


def parse_nf_conntrack_stat(text: str) -> dict[str, int]:
    r"""Parse ``/proc/net/stat/nf_conntrack`` into counters summed over the CPUs.

    Sample (kernel 6.18, 2 CPUs, a namespace where 4 TCP segments with SYN and FIN set were sent to
    itself: conntrack counted them invalid on output and on input; its lines are wider than the source
    code may be, so each is given in two pieces):

    >>> stat = parse_nf_conntrack_stat(
    ...     "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  "
    ...     "expect_new expect_create expect_delete search_restart\n"
    ...     "00000006  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 "
    ...     "00000000  00000000 00000000 00000000 00000000\n"
    ...     "00000006  00000000 00000003 00000000 00000008 00000000 00000000 00000000 00000000 00000000 00000000 00000000 "
    ...     "00000000  00000000 00000000 00000000 00000000\n")
    >>> stat["entries"], stat["invalid"], stat["found"], stat["drop"], stat["cpus"]
    (6, 8, 3, 0, 2)

    It gives every column of the header under its own name (``clashres`` or ``searched``,
    ``chainlength`` or ``delete_list``..., see the module's doc), each summed over the CPU lines,
    except ``entries`` (the table size, taken from the first line), plus ``cpus``: the number of CPU
    lines. The drop counters: ``drop`` (table full: "nf_conntrack: table full, dropping packet"),
    ``early_drop`` (an entry evicted to make room), ``insert_failed`` (a race or clash lost),
    ``invalid`` (packets conntrack could not track).

    Raises ValueError naming ``/proc/net/stat/nf_conntrack`` when the first line is not a header
    starting with ``entries``, a header name repeats, or a line has another number of values than
    the header or a value that is not hexadecimal.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or lines[0].split()[0] != "entries":
        first = lines[0][:120] if lines else ""
        raise ValueError("%s: line 1 is not the header ('entries ...'): %r" % (SOURCE, first))
    names = lines[0].split()
    if len(set(names)) != len(names):
        raise ValueError("%s: line 1 names a column twice: %r" % (SOURCE, lines[0][:200]))
    result = dict((name, 0) for name in names)
    for number, line in enumerate(lines[1:], 2):
        values = line.split()
        if len(values) != len(names):
            raise ValueError("%s: line %d has %d values, the header names %d: %r"
                             % (SOURCE, number, len(values), len(names), line[:200]))
        try:
            numbers = [int(value, 16) for value in values]
        except ValueError:
            raise ValueError("%s: line %d has a value that is not hexadecimal: %r" % (SOURCE, number, line[:200])) from None
        for name, value in zip(names, numbers):  # noqa: B905 (py3.8: lengths checked above)
            if name == "entries":
                if number == 2:
                    result[name] = value
            else:
                result[name] += value
    result["cpus"] = len(lines) - 1
    return result


def parse_nf_conntrack_sysctl(text: str, name: str) -> int:
    """Parse one ``/proc/sys/net/netfilter/NAME`` file holding an integer (``nf_conntrack_count``, ``_max``...).

    Sample (``nf_conntrack_max`` of kernel 6.18):

    >>> parse_nf_conntrack_sysctl('''262144
    ... ''', "nf_conntrack_max")
    262144

    Raises ValueError naming ``/proc/sys/net/netfilter/NAME`` when the text is not one integer.
    """
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError("%s%s: not an integer: %r" % (SYSCTL_DIR, name, text[:80])) from None
