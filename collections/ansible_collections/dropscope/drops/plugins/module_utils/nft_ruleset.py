# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# The docstring samples are verbatim tool output lines, some longer than 120 characters.
# ruff: noqa: E501
"""nftables rule counters: ``nft -a list ruleset`` (text, with handles).

Pure function (standard library only); it runs on the managed host. iptables-nft rules appear
here too (``table ip filter`` / ``chain INPUT``); iptables-legacy rules do not.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import re

SOURCE = "nft -a list ruleset"

_HANDLE = re.compile(r"\s*# handle (\d+)\s*$")
_COUNTER = re.compile(r"(?:^|\s)counter packets (\d+) bytes (\d+)(?=\s|$)")
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
_TABLE = re.compile(r"^table (\S+) (.+?) \{$")
_CHAIN = re.compile(r"^chain (.+?) \{$")


def _name(text: str) -> str:
    """nft quotes names with unusual characters: ``"my chain"`` -> ``my chain``."""
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text


def _brace_balance(text: str) -> int:
    """Opening minus closing braces, ignoring those inside double-quoted strings (comments)."""
    bare = _QUOTED.sub('""', text)
    return bare.count("{") - bare.count("}")


def parse_nft_ruleset(text: str) -> dict[str, dict]:
    """Parse ``nft -a list ruleset`` into ``{"nft FAMILY TABLE CHAIN #HANDLE": {...}}``.

    Sample (nftables 1.0.6, kernel 6.18, after 3 datagrams to UDP port 8000):

    >>> rules = parse_nft_ruleset('''table inet dropscope_lab { # handle 1
    ...         chain input { # handle 1
    ...                 type filter hook input priority filter; policy accept;
    ...                 udp dport 8000 counter packets 3 bytes 3084 drop # handle 2
    ...         }
    ... }
    ... ''')
    >>> rules["nft inet dropscope_lab input #2"]
    {'family': 'inet', 'table': 'dropscope_lab', 'chain': 'input', 'handle': 2, 'rule': 'udp dport 8000 drop', 'packets': 3, 'bytes': 3084}

    It gives ``{"nft inet dropscope_lab input #2": {"family": "inet", "table": "dropscope_lab",
    "chain": "input", "handle": 2, "rule": "udp dport 8000 drop", "packets": 3, "bytes": 3084}}``.

    Only rules with an anonymous ``counter packets N bytes M`` are listed (``counter name "x"``
    refers to a named counter object and has no numbers on the rule line). ``rule`` is the rule
    text without that counter and without ``# handle N``; a rule that is only a counter gives
    ``""``. Braces inside quoted comments are not structure; set elements spread over several
    lines are skipped.

    Raises ValueError naming ``nft -a list ruleset`` when braces do not balance (truncated output),
    a ``chain`` is outside a ``table``, or a counting rule has no handle (``-a`` was not given).
    """
    result = {}
    stack = []  # ("table", family, name) | ("chain", name) | ("other",)
    table = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        handle_match = _HANDLE.search(line)
        body = line[:handle_match.start()] if handle_match else line
        balance = _brace_balance(body)
        if balance > 0:
            table_match = _TABLE.match(body) if balance == 1 else None
            chain_match = _CHAIN.match(body) if balance == 1 else None
            if table_match:
                table = (table_match.group(1), _name(table_match.group(2)))
                stack.append(("table",))
                balance -= 1
            elif chain_match:
                if table is None or stack[-1:] != [("table",)]:
                    raise ValueError("%s: line %d: chain %r is not inside a table"
                                     % (SOURCE, number, chain_match.group(1)))
                stack.append(("chain", _name(chain_match.group(1))))
                balance -= 1
            stack.extend([("other",)] * balance)
            continue
        if balance < 0:
            if -balance > len(stack):
                raise ValueError("%s: line %d: unexpected '}'" % (SOURCE, number))
            del stack[balance:]
            if not stack:
                table = None
            continue
        if not stack or stack[-1][0] != "chain":
            continue
        counter = _COUNTER.search(body)
        if counter is None:
            continue
        if handle_match is None:
            raise ValueError("%s: line %d: rule has no '# handle N' (was -a given?): %r" % (SOURCE, number, line[:120]))
        family, table_name = table
        chain = stack[-1][1]
        handle = int(handle_match.group(1))
        rule = (body[:counter.start()].rstrip() + " " + body[counter.end():].lstrip()).strip()
        result["nft %s %s %s #%d" % (family, table_name, chain, handle)] = {
            "family": family,
            "table": table_name,
            "chain": chain,
            "handle": handle,
            "rule": rule,
            "packets": int(counter.group(1)),
            "bytes": int(counter.group(2)),
        }
    if stack:
        raise ValueError("%s: output ends inside %d unclosed block(s) (truncated?)" % (SOURCE, len(stack)))
    return result
