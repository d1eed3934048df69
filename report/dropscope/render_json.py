"""report.json's text: the built report as JSON, written host by host.

Small runs are indented for people, large ones compact (the same JSON). Each host's text is made on its
own (`host_text`: the C encoder for compact text; `json.dumps` with an indent is pure Python and several
times slower), so the document can be written from host texts made elsewhere (dropscope.pipeline) without
holding the hosts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

INDENTED_UP_TO_HOSTS = 1_000
# check_circular=False: a built report is a tree (no value contains itself), so the encoder need not keep a
# set of the containers it is inside (~12% of its time on a host)
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode
_INDENTED = json.JSONEncoder(indent=1, ensure_ascii=False, check_circular=False).encode


def indented(hosts: int) -> bool:
    """Whether report.json of a run of HOSTS hosts is indented."""
    return hosts <= INDENTED_UP_TO_HOSTS


def _nested(value: Any, level: int, indent: bool) -> str:
    """VALUE's JSON text as it appears LEVEL deep in the document (indented text: its lines shifted)."""
    if not indent:
        return _COMPACT(value)
    return _INDENTED(value).replace("\n", "\n" + " " * level)  # JSON strings hold no raw newline


def host_text(host: Mapping[str, Any], position: int, indent: bool) -> str:
    """The text of the host entry at POSITION in report.json's `hosts` list, with the separator before it."""
    return ("," if position else "") + ("\n  " if indent else "") + _nested(host, 2, indent)


def _chunks(value: Any, level: int, indent: bool, depth: int) -> Iterator[str]:
    """VALUE's text LEVEL deep, in pieces: objects and lists DEPTH levels down are encoded member by member
    (the encoder builds a whole value's text from many small pieces at once: a large fleet's findings
    would take ~100 MiB for a moment)."""
    if depth <= 0 or not isinstance(value, (dict, list)) or not value:
        yield _nested(value, level, indent)
        return
    inner = "\n" + " " * (level + 1) if indent else ""
    is_dict = isinstance(value, dict)
    yield "{" if is_dict else "["
    for position, item in enumerate(value.items() if is_dict else value):
        yield ("," if position else "") + inner
        if is_dict:
            yield _COMPACT(item[0]) + (": " if indent else ":")
            item = item[1]
        yield from _chunks(item, level + 1, indent, depth - 1)
    yield ("\n" + " " * level if indent else "") + ("}" if is_dict else "]")


def report_head(head: Mapping[str, Any], indent: bool) -> Iterator[str]:
    """report.json's text up to its host entries: HEAD's members and the start of `hosts`, in pieces."""
    colon = ": " if indent else ":"
    yield "{\n " if indent else "{"
    for key, value in head.items():
        yield _COMPACT(key) + colon
        yield from _chunks(value, 1, indent, depth=2)
        yield ",\n " if indent else ","
    yield _COMPACT("hosts") + colon + "["


def report_tail(tail: Mapping[str, Any], indent: bool, empty: bool) -> str:
    """report.json's text after its host entries: the end of `hosts` (EMPTY: there were none), TAIL's members."""
    colon = ": " if indent else ":"
    between = ",\n " if indent else ","
    members = "".join(between + _COMPACT(key) + colon + _nested(value, 1, indent) for key, value in tail.items())
    return ("\n ]" if indent and not empty else "]") + members + ("\n}\n" if indent else "}\n")


def report_chunks(
    head: Mapping[str, Any], hosts: Iterable[str], tail: Mapping[str, Any], indent: bool, empty: bool = False
) -> Iterator[str]:
    r"""report.json's text in chunks: HEAD's members, `hosts` from the text of its entries (`host_text`, in
    order), TAIL's members. EMPTY: the run has no hosts.

    >>> "".join(report_chunks({"a": 1}, [host_text({"host": "h"}, 0, False)], {"w": []}, indent=False))
    '{"a":1,"hosts":[{"host":"h"}],"w":[]}\n'
    >>> "".join(report_chunks({"a": 1}, [host_text({"host": "h"}, 0, True)], {"w": []}, indent=True))
    '{\n "a": 1,\n "hosts": [\n  {\n   "host": "h"\n  }\n ],\n "w": []\n}\n'
    """
    yield from report_head(head, indent)
    yield from hosts
    yield report_tail(tail, indent, empty)
