# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# The docstring samples are verbatim kernel/tool output lines, some longer than 120 characters.
# ruff: noqa: E501
"""Kernel addresses -> ``function+0xOFFSET``: ``/proc/kallsyms``, and what a tracepoint's ``location=`` holds.

Pure functions (standard library only); they run on the managed host, which is the only place where
an address can be resolved: KASLR moves the kernel at every boot, so an address means something
only next to the ``/proc/kallsyms`` of the same boot (read as root: other users see zeros).

What ``skb:kfree_skb``'s ``location=`` holds, by kernel and reader:

- ``__udp4_lib_rcv+0x4bc`` (perf) or ``__udp4_lib_rcv+0x4bc/0xd00`` (tracefs): kernels whose format
  prints ``%pS`` (6.0 and later): already a symbol;
- ``0xffffffff8175a05c``: perf on kernels whose format prints ``%p`` (before the ``%pS`` change):
  perf reads the raw value; :meth:`Kallsyms.location` resolves it on the host;
- ``000000001cf38db0``: tracefs on those kernels from 4.15 (pointer hashing) to 5.19 prints the *hashed* pointer (no ``0x``,
  16 hex digits, the upper 32 bits zero): nothing can resolve it (:func:`is_hashed_pointer`); perf
  or bpftrace on the same host can name the location.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import bisect
import re

SOURCE = "/proc/kallsyms"

# "ffffffff81f63250 T nft_do_chain" or, for a module, "ffffffffc004b000 t name\t[module]"
_LINE = re.compile(r"^([0-9a-fA-F]+) ([A-Za-z?]) (\S+)(?:\s+\[(\S+)\])?$")
_TEXT_TYPES = "tTwW"  # text (code) symbols, and weak ones; data (d, b, r...) never holds a drop location
_HASHED = re.compile(r"^[0-9a-f]{16}$")
_RAW = re.compile(r"^0x([0-9a-fA-F]{1,16})$")


class Kallsyms:
    """Text symbols of one ``/proc/kallsyms``, sorted by address; build it with :func:`parse_kallsyms`."""

    def __init__(self, symbols):
        symbols = sorted(symbols)
        self._addresses = [address for address, _name in symbols]
        self._names = [name for _address, name in symbols]

    def __len__(self):
        return len(self._addresses)

    def lookup(self, address: int):
        """``(function, offset)`` of the text symbol at or before `address`, or None before the first.

        /proc/kallsyms has no sizes: a function ends where the next symbol starts, and an address
        after the last symbol is given to the last symbol (with the whole file, the last function
        of the last module).
        """
        index = bisect.bisect_right(self._addresses, address) - 1
        if index < 0 or not address:
            return None
        return self._names[index], address - self._addresses[index]

    def location(self, address: int):
        """``"function+0xOFFSET"`` (the form perf and ``%pS`` print), or None when nothing holds `address`."""
        found = self.lookup(address)
        return None if found is None else "%s+0x%x" % found


def parse_kallsyms(text: str) -> Kallsyms:
    """Parse ``/proc/kallsyms`` into a :class:`Kallsyms` of its text symbols (types t, T, w, W).

    Sample (kernel 4.10, from Cilium's BPF guide: two module functions, a module data symbol and a
    JIT-compiled BPF program):

    >>> symbols = parse_kallsyms('''ffffffffc00349e0 t fjes_hw_init_command_registers    [fjes]
    ... ffffffffc003e2e0 d __tracepoint_fjes_hw_stop_debug_err    [fjes]
    ... ffffffffc0036190 t fjes_hw_epbuf_tx_pkt_send    [fjes]
    ... ffffffffc004b000 t bpf_prog_8227addf251b7543
    ... ''')
    >>> len(symbols), symbols.location(0xffffffffc004b52c), symbols.location(0xffffffffc00349e0)
    (3, 'bpf_prog_8227addf251b7543+0x52c', 'fjes_hw_init_command_registers+0x0')
    >>> symbols.lookup(0xffffffffc0036200), symbols.location(0xffffffffc0000000)
    (('fjes_hw_epbuf_tx_pkt_send', 112), None)

    Lines are ``ADDRESS TYPE NAME`` and, for modules, `` [MODULE]`` (the module is not part of the
    name). Symbols at address 0 (what a reader without root sees) are left out, so such a file
    gives an empty :class:`Kallsyms`, which resolves nothing.

    Raises ValueError naming ``/proc/kallsyms`` and the first line that is not ``ADDRESS TYPE NAME``.
    """
    symbols = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        match = _LINE.match(line)
        if match is None:
            raise ValueError("%s: line %d is not 'ADDRESS TYPE NAME': %r" % (SOURCE, number, line[:120]))
        address = int(match.group(1), 16)
        if match.group(2) in _TEXT_TYPES and address:
            symbols.append((address, match.group(3)))
    return Kallsyms(symbols)


def is_hashed_pointer(value: str) -> bool:
    """Whether a ``location=`` value is a hashed pointer (``%p`` in tracefs, kernels 4.15 to 5.19).

    Sample (tracefs ``trace_pipe`` of a 5.17-era kernel whose format still printed ``%p``):

    >>> line = ('          <idle>-0       [018] ..s1.  1478.130490: kfree_skb: skbaddr=00000000c4f21b8d protocol=0 '
    ...         'location=00000000aff342c7 reason: NOT_SPECIFIED')
    >>> is_hashed_pointer(line.split("location=")[1].split()[0])
    True
    >>> is_hashed_pointer("0xffffffffc004b52c"), is_hashed_pointer("__udp4_lib_rcv+0x4bc/0xd00")
    (False, False)

    Hashed pointers have no ``0x``, exactly 16 lowercase hex digits, and the upper 32 bits zero;
    they differ from the address in every bit and cannot be resolved.
    """
    return bool(_HASHED.match(value)) and int(value, 16) < (1 << 32)


def raw_address(value: str):
    """The address of a raw ``location=0x...`` value (perf on ``%p`` kernels), else None.

    >>> hex(raw_address("0xffffffffc004b52c")), raw_address("00000000aff342c7"), raw_address("tcp_v4_rcv+0x15a")
    ('0xffffffffc004b52c', None, None)
    """
    match = _RAW.match(value)
    return int(match.group(1), 16) if match else None


UNAVAILABLE = "unavailable"  # the location of a drop whose tracepoint printed a hashed pointer
UNRESOLVED = "unresolved"  # a raw address no text symbol of this boot's /proc/kallsyms holds
HASHED_WHY = ("this kernel's tracefs prints drop locations as hashed pointers (%p, kernels 4.15 to 5.19), "
              "which nothing can name; perf or bpftrace on this host name them")
UNRESOLVED_WHY = "the tracepoint printed raw addresses that /proc/kallsyms did not hold (read it as root)"


def _read_proc_kallsyms():
    with open(SOURCE, "r", encoding="utf-8", errors="replace") as handle:
        return handle.read()


class Locator:
    """Names a capture's drop locations on the host that captured them, before anything leaves it.

    ``name(location, offset, count)`` returns the ``(location, offset)`` to report: a symbol stays as it
    is; a raw address (perf on ``%p`` kernels) becomes ``function`` and ``0xOFFSET`` from this boot's
    ``/proc/kallsyms`` (read once, on the first raw address); a hashed pointer becomes
    ``"unavailable"`` and an address nothing holds ``"unresolved"`` (never a pointer). ``summary()``
    says what was done, for the capture's ``locations``.

    >>> text = "ffffffffc004b000 t bpf_prog_8227addf251b7543\\nffffffffc004c000 t next_function\\n"
    >>> locator = Locator(lambda: text)
    >>> locator.name("0xffffffffc004b52c", None, 3), locator.name("tcp_v4_rcv", "0x15a", 1)
    (('bpf_prog_8227addf251b7543', '0x52c'), ('tcp_v4_rcv', '0x15a'))
    >>> locator.name("000000001cf38db0", None, 4), locator.name("0xffffffff00000010", None, 1)
    (('unavailable', None), ('unresolved', None))
    >>> summary = locator.summary()
    >>> summary["resolved_events"], summary["hashed_events"], summary["unresolved_events"]
    (3, 4, 1)
    """

    def __init__(self, read_text=None):
        self._read = read_text or _read_proc_kallsyms
        self._kallsyms = None
        self._error = None
        self.resolved = self.hashed = self.unresolved = 0

    def _symbols(self):
        if self._kallsyms is None:
            try:
                self._kallsyms = parse_kallsyms(self._read())
            except (IOError, OSError, ValueError) as exc:
                self._error = str(exc)
                self._kallsyms = Kallsyms([])
        return self._kallsyms

    def name(self, location, offset, count=1):
        address = raw_address(location) if location else None
        if address is not None:
            found = self._symbols().lookup(address)
            if found is None:
                self.unresolved += count
                return UNRESOLVED, None
            self.resolved += count
            return found[0], "0x%x" % found[1]
        if location and is_hashed_pointer(location):
            self.hashed += count
            return UNAVAILABLE, None
        return location, offset

    def summary(self):
        """None when every location could be named; else what was resolved and why the rest could not be."""
        if not (self.hashed or self.unresolved):
            return None
        why = []
        if self.hashed:
            why.append(HASHED_WHY)
        if self.unresolved:
            why.append(UNRESOLVED_WHY + (": %s" % self._error if self._error else ""))
        return {"resolved_events": self.resolved, "hashed_events": self.hashed,
                "unresolved_events": self.unresolved, "why": "; ".join(why) or None}
