# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Byte offsets of kernel struct fields, read from the kernel's own BTF (/sys/kernel/btf/vmlinux).

Why: a bpftrace program that casts to `struct sk_buff` makes bpftrace build C definitions from BTF and
parse them with clang on every start: ~0.8 s of CPU per host per run (kernel 6.18, bpftrace 0.17), most of
a capture's cost on a quiet host. The same reads with byte offsets found here cost ~10 ms of Python (the
structs it needs are among the first ~4k of 126k types: the walk stops there) and let bpftrace start
without clang. The offsets are this kernel's own (read at the capture, never cached),
so they are right on every build; where BTF is missing or a field is not found, the capture keeps the
struct program.

BTF layout (Documentation/bpf/btf.rst): a header, then type records, then strings. Each record is
`name_off, info, size|type` (12 bytes; info: vlen in bits 0-15, kind in bits 24-28, kind_flag in bit 31)
followed by kind-specific data: struct and union members are `name_off, type, offset` (offset in bits;
with kind_flag the low 24 bits). Type ids count records from 1.

>>> blob = build_btf([("INT", "unsigned int", 4),
...                   ("STRUCT", "ns_common", 16, [("stashed", 1, 0), ("inum", 1, 64)]),
...                   ("STRUCT", "net", 64, [("ns", 2, 128)])])
>>> field_offsets(blob, {"net_inum": "net.ns.inum"})
{'net_inum': (24, 4)}
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import array
import struct
import sys

BTF_PATH = "/sys/kernel/btf/vmlinux"
BTF_MAGIC = 0xEB9F

KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION = 1, 2, 3, 4, 5
KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG = 8, 9, 10, 11, 18
KIND_ENUM, KIND_ENUM64 = 6, 19
# Bytes after the 12-byte record: a fixed part, and a part per `vlen` item.
_FIXED = {1: 4, 3: 12, 14: 4, 17: 4}
_PER_ITEM = {4: 12, 5: 12, 6: 8, 13: 8, 15: 12, 19: 12}
# The same in 32-bit words, as tables indexed by kind (0-31): a record's length is STEP + PER_ITEM * vlen.
_STEP = [3 + _FIXED.get(kind, 0) // 4 for kind in range(32)]
_PER_ITEM_WORDS = [_PER_ITEM.get(kind, 0) // 4 for kind in range(32)]
# The array type code of an unsigned 32-bit integer ("I" on every Linux platform Python runs on).
_WORD = [code for code in "IL" if array.array(code).itemsize == 4][0]
# Qualifiers and typedefs name another type without changing its layout.
_ALIASES = (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG)
_KINDS = {"INT": KIND_INT, "PTR": KIND_PTR, "STRUCT": KIND_STRUCT, "UNION": KIND_UNION, "TYPEDEF": KIND_TYPEDEF,
          "ENUM": KIND_ENUM}


class BtfError(ValueError):
    """The BTF cannot be read, or a field is not where the program expects it."""


def _sections(data):
    """(type section, string section) of a BTF blob; BtfError unless it is whole BTF."""
    if len(data) < 24:
        raise BtfError("BTF too short (%d bytes)" % len(data))
    magic = struct.unpack_from("<H", data, 0)[0]
    hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<IIIII", data, 4)
    if magic != BTF_MAGIC:
        raise BtfError("not BTF (magic 0x%04x)" % magic)
    types = memoryview(data)[hdr_len + type_off:hdr_len + type_off + type_len]  # read once, as words: no copy
    strings = data[hdr_len + str_off:hdr_len + str_off + str_len]
    if len(types) != type_len or len(strings) != str_len:
        raise BtfError("BTF truncated")
    return types, strings


class _Types:
    """Type records of one BTF blob, found by id and (the structs/unions named in NAMES) by name.

    Records are variable-length, so a type id's record is found by walking the ones before it. The walk
    goes only as far as asked (the structs a capture reads are among the first ~4k of a 6.x kernel's
    ~126k types), reading the type section as 32-bit words and comparing names as string offsets.
    """

    def __init__(self, data, names=()):
        self.types, self.strings = _sections(data)
        words = array.array(_WORD)
        words.frombytes(self.types[:len(self.types) - len(self.types) % 4])
        if sys.byteorder != "little":
            words.byteswap()  # read as little-endian, as the header is
        self.words = words
        self.offsets = [None]  # type id 0 is void; then the word index of each record walked so far
        self._next = 0  # where the next record starts
        self._wanted = self._string_offsets(names)  # {string offset: name} of NAMES
        self.named = {}  # name -> the lowest struct/union type id of that name, as the walk finds them

    def _string_offsets(self, names):
        """{offset: name} of every place in the string section that holds one of NAMES."""
        found = {}
        for name in names:
            needle = b"\0" + name.encode("utf-8") + b"\0"
            at = self.strings.find(needle)
            while at >= 0:
                found[at + 1] = name
                at = self.strings.find(needle, at + 1)
        return found

    def walk(self, count=None):
        """Note where the next COUNT records start (None: all the rest), and the named structs among them."""
        offsets, words, wanted, named = self.offsets, self.words, self._wanted, self.named
        append, step, per_item = offsets.append, _STEP, _PER_ITEM_WORDS
        pos, end = self._next, len(words)
        stop = end if count is None else count + len(offsets)
        try:
            while pos < end and len(offsets) < stop:
                append(pos)
                info = words[pos + 1]
                kind = (info >> 24) & 0x1F
                if words[pos] in wanted and kind in (KIND_STRUCT, KIND_UNION):
                    named.setdefault(wanted[words[pos]], len(offsets) - 1)
                pos += step[kind] + per_item[kind] * (info & 0xFFFF)
        except IndexError:
            raise BtfError("BTF type record %d truncated" % (len(offsets) - 1)) from None
        if pos > end:
            raise BtfError("BTF type record %d truncated" % (len(offsets) - 1))
        self._next = pos
        return pos < end

    def struct_id(self, name):
        """The lowest type id of a struct or union called NAME (one of NAMES), or None."""
        while name not in self.named and self.walk(1024):
            pass
        return self.named.get(name)

    def _string(self, offset):
        return self.strings[offset:self.strings.index(b"\0", offset)].decode("ascii", "replace")

    def record(self, type_id):
        """(kind, kind_flag, vlen, size_or_type, word index) of a type id."""
        if type_id >= len(self.offsets):
            self.walk(type_id + 1 - len(self.offsets))
        if not 0 < type_id < len(self.offsets):
            raise BtfError("type id %d out of range" % type_id)
        pos = self.offsets[type_id]
        info = self.words[pos + 1]
        return (info >> 24) & 0x1F, info >> 31, info & 0xFFFF, self.words[pos + 2], pos

    def resolve(self, type_id):
        """The type id behind typedefs and qualifiers."""
        for _hop in range(32):
            kind, _flag, _vlen, target, _pos = self.record(type_id)
            if kind not in _ALIASES:
                return type_id
            type_id = target
        raise BtfError("typedef chain too long at type id %d" % type_id)

    def size(self, type_id):
        kind, _flag, _vlen, size, _pos = self.record(self.resolve(type_id))
        if kind == KIND_PTR:
            return 8
        if kind in (KIND_INT, KIND_STRUCT, KIND_UNION) or kind == 6:  # 6: enum
            return size
        return None

    def members(self, type_id):
        """(name, type id, byte offset or None for a bitfield) of a struct or union's members."""
        kind, flag, vlen, _size, pos = self.record(self.resolve(type_id))
        if kind not in (KIND_STRUCT, KIND_UNION):
            raise BtfError("type id %d is not a struct or union" % type_id)
        words = self.words
        for index in range(vlen):
            at = pos + 3 + 3 * index
            name_off, member_type, offset = words[at], words[at + 1], words[at + 2]
            bits = offset & 0xFFFFFF if flag else offset
            bitfield = flag and offset >> 24
            yield (self._string(name_off) if name_off else "", member_type,
                   None if bitfield or bits % 8 else bits // 8)

    def find_member(self, type_id, name):
        """(byte offset, type id) of member NAME, looking inside anonymous structs and unions too."""
        for member, member_type, offset in self.members(type_id):
            if member == name and offset is not None:
                return offset, member_type
            if not member and offset is not None:
                kind = self.record(self.resolve(member_type))[0]
                if kind in (KIND_STRUCT, KIND_UNION):
                    found = self.find_member(member_type, name)
                    if found is not None:
                        return offset + found[0], found[1]
        return None


def field_offsets(data, paths):
    """{key: (byte offset, size)} for each `struct.member[.member…]` path of PATHS ({key: path}).

    Members are followed inside the struct (embedded structs, anonymous unions), never through pointers.
    Raises BtfError naming the first path that cannot be resolved.
    """
    types = _Types(data, set(path.split(".")[0] for path in paths.values()))
    result = {}
    for key, path in sorted(paths.items()):
        words = path.split(".")
        type_id, offset = types.struct_id(words[0]), 0
        if type_id is None:
            raise BtfError("%s: no struct %s in BTF" % (path, words[0]))
        for word in words[1:]:
            found = types.find_member(type_id, word)
            if found is None:
                raise BtfError("%s: no member %s" % (path, word))
            offset += found[0]
            type_id = found[1]
        result[key] = (offset, types.size(type_id))
    return result


def read_field_offsets(paths, path=BTF_PATH):
    """field_offsets of this kernel's BTF (raises BtfError; IOError/OSError where it cannot be read)."""
    with open(path, "rb") as handle:
        return field_offsets(handle.read(), paths)


def enums(data, wanted, base=None):
    """{name: [(member, value), ...]} of the enums (and enum64s) whose name WANTED(name) accepts.

    DATA is a BTF blob: the kernel's (/sys/kernel/btf/vmlinux), or a module's (/sys/kernel/btf/MODULE), which
    is split BTF: its string offsets continue the kernel's, so BASE (the kernel's blob) is needed to read
    names below them. Raises BtfError on a blob that is not BTF.

    >>> blob = build_btf([("ENUM", "skb_drop_reason_subsys", 4, [("SKB_DROP_REASON_SUBSYS_CORE", 0),
    ...                                                         ("SKB_DROP_REASON_SUBSYS_OPENVSWITCH", 2)])])
    >>> enums(blob, lambda name: name.endswith("_subsys"))["skb_drop_reason_subsys"][1]
    ('SKB_DROP_REASON_SUBSYS_OPENVSWITCH', 2)
    """
    own = _Types(data)
    below = _sections(base)[1] if base is not None else b""  # only the kernel's strings: no walk of its types

    def text(offset):
        strings, offset = (below, offset) if offset < len(below) else (own.strings, offset - len(below))
        return strings[offset:strings.index(b"\0", offset)].decode("ascii", "replace")

    found = {}
    own.walk()
    words = own.words
    for pos in own.offsets[1:]:
        name_off, info = words[pos], words[pos + 1]
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        if kind not in (KIND_ENUM, KIND_ENUM64) or not name_off or not wanted(text(name_off)):
            continue
        members = []
        for index in range(vlen):
            if kind == KIND_ENUM:
                member, value = words[pos + 3 + 2 * index], words[pos + 4 + 2 * index]
                value = value - (1 << 32) if value >> 31 else value  # signed 32-bit
            else:
                member, low, high = words[pos + 3 + 3 * index], words[pos + 4 + 3 * index], words[pos + 5 + 3 * index]
                value = high << 32 | low
            members.append((text(member), value))
        found.setdefault(text(name_off), []).extend(members)
    return found


def build_btf(records):
    """A BTF blob from (kind, name, size[, members]) records; members are (name, type id, bit offset), for an
    ENUM (name, value).

    For doctests and unit tests: the same layout the kernel writes, for a handful of types.
    """
    strings = bytearray(b"\0")
    positions = {}

    def name(text):
        if not text:
            return 0
        if text not in positions:
            positions[text] = len(strings)
            strings.extend(text.encode("ascii") + b"\0")
        return positions[text]

    types = bytearray()
    for record in records:
        kind, label, size = record[0], record[1], record[2]
        members = record[3] if len(record) > 3 else []
        types += struct.pack("<III", name(label), (_KINDS[kind] << 24) | len(members), size)
        if kind == "INT":
            types += struct.pack("<I", size * 8)
        for item in members:
            if kind == "ENUM":
                types += struct.pack("<Ii", name(item[0]), item[1])
            else:
                types += struct.pack("<III", name(item[0]), item[1], item[2])
    header = struct.pack("<HBBIIIII", BTF_MAGIC, 1, 0, 24, 0, len(types), len(types), len(strings))
    return header + bytes(types) + bytes(strings)
