# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What a host can use to see its packet drops: the `drop_capabilities` module's logic.

`collect_capabilities` reads the host through a `snapshot.HostReader` (files, binaries, commands)
and a generic-netlink lookup function, so tests feed it recorded answers. `backend_ladder` turns the
facts into the ordered list of capture backends with the reason each one is missing.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import re
import socket
import struct

from ansible_collections.dropscope.drops.plugins.module_utils.kfree_skb import (
    TRACEFS_ROOTS,
    read_tracepoint_format,
)
from ansible_collections.dropscope.drops.plugins.module_utils.run_record import SCHEMA_VERSION
from ansible_collections.dropscope.drops.plugins.module_utils.tracefs_capture import mounted_tracefs

# Cheapest first (measured with benchmarks/capture_overhead.py, see README "Performance"): bpftrace
# counts in the kernel and is exact per network namespace; perf writes ~100 bytes per event and post-
# processes them; the tracefs reader formats and parses text on a second core; dropwatch needs NET_DM.
BACKEND_ORDER = ("bpftrace", "perf", "tracefs", "dropwatch")
BTF_PATH = "/sys/kernel/btf/vmlinux"
DROPWATCH_MARKER = "share/dropscope/dropwatch.installed"

# Capability bits (linux/capability.h).
CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39

# Generic netlink (linux/netlink.h, linux/genetlink.h).
NETLINK_GENERIC = 16
GENL_ID_CTRL = 0x10
NLMSG_ERROR = 2
NLM_F_REQUEST = 1
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2

_VERSION = re.compile(r"(\d+(?:\.\d+)+)")


def _read(reader, path):
    try:
        return reader.read_text(path)
    except (IOError, OSError):
        return None


def genl_request(name, seq=1):
    """A CTRL_CMD_GETFAMILY request for generic-netlink family `name` (bytes on the wire)."""
    encoded = name.encode("ascii") + b"\0"
    attr_len = 4 + len(encoded)
    attr = struct.pack("=HH", attr_len, CTRL_ATTR_FAMILY_NAME) + encoded + b"\0" * ((4 - attr_len % 4) % 4)
    payload = struct.pack("=BBH", CTRL_CMD_GETFAMILY, 1, 0) + attr
    return struct.pack("=IHHII", 16 + len(payload), GENL_ID_CTRL, NLM_F_REQUEST, seq, 0) + payload


def parse_genl_reply(data):
    """The family id from a reply to `genl_request`, or None when the kernel answered ENOENT.

    Raises OSError for any other netlink error and ValueError for a reply it cannot read.
    """
    if len(data) < 16:
        raise ValueError("short netlink reply (%d bytes)" % len(data))
    length, kind, _flags, _seq, _pid = struct.unpack_from("=IHHII", data, 0)
    if kind == NLMSG_ERROR:
        code = struct.unpack_from("=i", data, 16)[0]
        if code == -errno.ENOENT:
            return None
        raise OSError(-code, os.strerror(-code))
    offset = 16 + 4  # nlmsghdr + genlmsghdr
    end = min(length, len(data))
    while offset + 4 <= end:
        attr_len, attr_type = struct.unpack_from("=HH", data, offset)
        if attr_len < 4:
            break
        if attr_type & 0x3FFF == CTRL_ATTR_FAMILY_ID:
            return struct.unpack_from("=H", data, offset + 4)[0]
        offset += (attr_len + 3) & ~3
    raise ValueError("netlink reply without a family id")


def query_genl_family(name, timeout=2.0):
    """Ask the kernel (generic netlink controller) for family `name`: its id, or None if it has none."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
    try:
        sock.settimeout(timeout)
        sock.bind((0, 0))
        sock.send(genl_request(name))
        return parse_genl_reply(sock.recv(65536))
    finally:
        sock.close()


def parse_cap_eff(status_text):
    """The effective capability set (an int) from /proc/self/status text, or None."""
    for line in (status_text or "").splitlines():
        if line.startswith("CapEff:"):
            try:
                return int(line.split(":", 1)[1].strip(), 16)
            except ValueError:
                return None
    return None


def parse_version(text):
    """The first dotted version number in a tool's ``--version`` text: "bpftrace v0.17.0" -> "0.17.0"."""
    match = _VERSION.search(text or "")
    return match.group(1) if match else None


def _tool(reader, name, argv_tail):
    path = reader.find_bin(name)
    entry = {"path": path, "version": None, "runs": False, "error": None}
    if path is None:
        return entry
    if argv_tail is None:
        entry["runs"] = True
        return entry
    try:
        rc, out, err = reader.run([path] + argv_tail)
    except (IOError, OSError) as exc:
        entry["error"] = str(exc)
        return entry
    entry["runs"] = rc == 0
    entry["version"] = parse_version(out or err) if rc == 0 else None
    if rc != 0:
        entry["error"] = "exit %d: %s" % (rc, (err or out).strip()[:200])
    return entry


def _dropwatch_version(reader, path):
    """dropwatch has no --version: read the dropwatch role's marker, else the Debian package version."""
    if path:
        prefix = os.path.dirname(os.path.dirname(path))
        marker = _read(reader, os.path.join(prefix, DROPWATCH_MARKER))
        if marker:
            for line in marker.splitlines():
                if line.startswith("version="):
                    return line.split("=", 1)[1].strip()
    dpkg = reader.find_bin("dpkg-query")
    if dpkg:
        try:
            rc, out, _err = reader.run([dpkg, "-W", "-f", "${Version}", "dropwatch"])
        except (IOError, OSError):
            return None
        if rc == 0 and out.strip():
            return out.strip()
    return None


def _tracefs(reader, mounts_text, filesystems_text):
    mounted = mounted_tracefs(mounts_text)
    info = {"mounted": mounted is not None, "path": mounted,
            "mountable": "tracefs" in (filesystems_text or ""), "instances": False}
    if mounted:
        try:
            info["instances"] = os.path.isdir(reader.path(os.path.join(mounted, "instances")))
        except (IOError, OSError):
            info["instances"] = False
    return info


def collect_capabilities(reader, genl_family=query_genl_family, euid=None, kernel_release=None):
    """Every fact the ladder needs, read from the host (see docs/run-format.md, ``capabilities``)."""
    caps = {"schema_version": SCHEMA_VERSION, "kernel_release": kernel_release or os.uname()[2]}
    caps["tracefs"] = _tracefs(reader, _read(reader, "/proc/mounts"), _read(reader, "/proc/filesystems"))

    roots = ([caps["tracefs"]["path"]] if caps["tracefs"]["path"] else []) + list(TRACEFS_ROOTS)
    path, parsed = read_tracepoint_format(reader.read_text, roots)
    caps["kfree_skb"] = {"present": path is not None, "fields": [f for f in parsed["fields"] if f != "skbaddr"],
                         "reason_names": len(parsed["reasons"]), "format": path}

    try:
        family = genl_family("NET_DM")
        caps["net_dm"] = {"present": family is not None, "family_id": family, "error": None}
    except (IOError, OSError, ValueError, socket.timeout) as exc:
        caps["net_dm"] = {"present": False, "family_id": None, "error": str(exc)}

    caps["tools"] = {
        "perf": _tool(reader, "perf", ["--version"]),
        "bpftrace": _tool(reader, "bpftrace", ["--version"]),
        "dropwatch": _tool(reader, "dropwatch", None),
    }
    caps["tools"]["dropwatch"]["version"] = _dropwatch_version(reader, caps["tools"]["dropwatch"]["path"])
    caps["btf"] = os.path.exists(reader.path(BTF_PATH))

    cap_eff = parse_cap_eff(_read(reader, "/proc/self/status"))
    paranoid = _read(reader, "/proc/sys/kernel/perf_event_paranoid")
    euid = os.geteuid() if euid is None else euid

    def has(bit):
        return bool(cap_eff is not None and cap_eff >> bit & 1)

    caps["privileges"] = {
        "euid": euid,
        "cap_sys_admin": has(CAP_SYS_ADMIN),
        "cap_bpf": has(CAP_BPF),
        "cap_perfmon": has(CAP_PERFMON),
        "cap_net_admin": has(CAP_NET_ADMIN),
        "perf_event_paranoid": int(paranoid.strip()) if paranoid and paranoid.strip().lstrip("-").isdigit() else None,
    }
    caps["ladder"] = backend_ladder(caps)
    caps["chosen"] = choose_backend(caps["ladder"])
    return caps


def backend_ladder(caps):
    """[{"backend", "available", "reason"}] in BACKEND_ORDER; `reason` says why a rung is missing."""
    priv = caps["privileges"]
    root = priv["euid"] == 0 or priv["cap_sys_admin"]
    tracepoint = caps["kfree_skb"]["present"]
    tracefs = caps["tracefs"]
    tools = caps["tools"]
    no_tracepoint = "tracepoint skb:kfree_skb not found (tracefs not mounted, or kernel without it)"
    ladder = []

    reason = None
    if tools["bpftrace"]["path"] is None:
        reason = "bpftrace not installed (package bpftrace)"
    elif not tools["bpftrace"]["runs"]:
        reason = "bpftrace does not run: %s" % tools["bpftrace"]["error"]
    elif not caps["btf"]:
        reason = "no kernel BTF (%s): the program reads struct sk_buff" % BTF_PATH
    elif not tracepoint:
        reason = no_tracepoint
    elif not (root or (priv["cap_bpf"] and priv["cap_perfmon"])):
        reason = "needs root or CAP_BPF and CAP_PERFMON (use become)"
    ladder.append({"backend": "bpftrace", "available": reason is None, "reason": reason})

    reason = None
    if tools["perf"]["path"] is None:
        reason = "perf not installed (linux-perf on Debian/Ubuntu, perf on RHEL/Fedora)"
    elif not tools["perf"]["runs"]:
        reason = "perf does not run on this kernel: %s" % tools["perf"]["error"]
    elif not tracepoint:
        reason = no_tracepoint
    elif not (root or priv["cap_perfmon"]
              or (priv["perf_event_paranoid"] is not None and priv["perf_event_paranoid"] <= -1)):
        reason = "needs root, CAP_PERFMON or kernel.perf_event_paranoid=-1 for system-wide tracepoints"
    ladder.append({"backend": "perf", "available": reason is None, "reason": reason})

    reason = None
    if not tracefs["mounted"]:
        reason = ("tracefs not mounted (mountable: mount -t tracefs nodev /sys/kernel/tracing)"
                  if tracefs["mountable"] else "kernel without tracefs")
    elif not tracefs["instances"]:
        reason = "tracefs has no instances/ directory"
    elif not tracepoint:
        reason = no_tracepoint
    elif not root:
        reason = "needs root to create an ftrace instance"
    ladder.append({"backend": "tracefs", "available": reason is None, "reason": reason})

    reason = None
    if tools["dropwatch"]["path"] is None:
        reason = "dropwatch not installed (role dropscope.drops.dropwatch)"
    elif not caps["net_dm"]["present"]:
        reason = "kernel has no NET_DM (CONFIG_NET_DROP_MONITOR)"
        if caps["net_dm"]["error"]:
            reason += ": %s" % caps["net_dm"]["error"]
    elif not (root or priv["cap_net_admin"]):
        reason = "needs root or CAP_NET_ADMIN"
    ladder.append({"backend": "dropwatch", "available": reason is None, "reason": reason})
    return ladder


def choose_backend(ladder, order=BACKEND_ORDER):
    """The first available backend in `order`, or None."""
    available = dict((rung["backend"], rung["available"]) for rung in ladder)
    for backend in order:
        if available.get(backend):
            return backend
    return None
