# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The knobs' values and the sockets' owners, read once after a capture (drop_capture's ``knobs``).

What the advice of a finding names is read on the host, so the report can show it next to the advice:
the sysctls (``KNOB_SYSCTLS``; a unit test keeps it a superset of every sysctl the knowledge base names),
per interface the ring sizes and channels (``ethtool -g`` / ``-l``, only for interfaces backed by a
device), txqueuelen and qdisc limits, and the sockets behind socket-level drops: their own buffer and
backlog (``ss -m``), the processes that hold them (comm, pid, user, cgroup, container, pod) and, for
ports that got NO_SOCKET drops, what listens on that port on another address or in another network
namespace. The layout is in docs/run-format.md ("Knobs and socket owners").

Bounded: at most ``MAX_SOCKETS`` sockets, ``MAX_OWNERS`` owners each, ``MAX_LISTENER_PORTS`` ports,
``MAX_ETHTOOL_INTERFACES`` interfaces asked through ethtool, ``MAX_CONF_INTERFACES`` per-interface sysctl
directories. A source that cannot be read is listed in ``errors``; nothing here fails the capture.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.dropscope.drops.plugins.module_utils.ethtool_settings import (
    parse_ethtool_channels,
    parse_ethtool_rings,
)
from ansible_collections.dropscope.drops.plugins.module_utils.proc_net_tcp import parse_proc_net_tcp_listeners
from ansible_collections.dropscope.drops.plugins.module_utils.proc_net_udp import parse_proc_net_udp
from ansible_collections.dropscope.drops.plugins.module_utils.run_record import SCHEMA_VERSION
from ansible_collections.dropscope.drops.plugins.module_utils.socket_owners import (
    MAX_OWNERS,
    find_owners,
    other_netns_listeners,
)
from ansible_collections.dropscope.drops.plugins.module_utils.ss_sockets import parse_ss, ss_filter
from ansible_collections.dropscope.drops.plugins.module_utils.tc_qdisc import parse_tc_qdisc_limits

# Every sysctl the knowledge base's advice names (report/dropscope/knowledge/*.yml `knobs`), and the
# conntrack table's fill. `*` stands for all, default and each interface.
KNOB_SYSCTLS = (
    "net.core.rmem_max", "net.core.rmem_default", "net.core.wmem_max", "net.core.wmem_default",
    "net.core.netdev_max_backlog", "net.core.netdev_budget", "net.core.netdev_budget_usecs",
    "net.core.somaxconn", "net.core.flow_limit_cpu_bitmap", "net.core.flow_limit_table_len",
    "net.ipv4.udp_mem", "net.ipv4.udp_rmem_min", "net.ipv4.tcp_mem", "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_max_syn_backlog", "net.ipv4.tcp_timestamps", "net.ipv4.ip_forward",
    "net.ipv4.ipfrag_high_thresh", "net.ipv4.ipfrag_time",
    "net.ipv4.icmp_msgs_burst", "net.ipv4.icmp_msgs_per_sec", "net.ipv4.icmp_ratelimit", "net.ipv6.icmp.ratelimit",
    "net.ipv4.neigh.default.gc_thresh3", "net.ipv4.neigh.default.mcast_solicit",
    "net.ipv4.neigh.default.retrans_time_ms", "net.ipv4.neigh.default.unres_qlen_bytes",
    "net.ipv6.neigh.default.gc_thresh3",
    "net.ipv4.conf.*.rp_filter", "net.ipv4.conf.*.log_martians", "net.ipv4.conf.*.drop_unicast_in_l2_multicast",
    "net.ipv6.conf.*.disable_ipv6",
    "net.netfilter.nf_conntrack_max", "net.netfilter.nf_conntrack_count", "net.netfilter.nf_conntrack_buckets",
    "net.netfilter.nf_conntrack_checksum", "net.netfilter.nf_conntrack_tcp_be_liberal",
    "net.netfilter.nf_conntrack_tcp_loose", "net.netfilter.nf_conntrack_tcp_timeout_established",
    "net.netfilter.nf_conntrack_tcp_timeout_syn_sent", "net.netfilter.nf_conntrack_tcp_timeout_time_wait",
    "net.netfilter.nf_conntrack_udp_timeout", "net.netfilter.nf_conntrack_udp_timeout_stream",
    "vm.min_free_kbytes",
)

# Drop reasons of a socket (the packet reached its socket and the socket could not take it): the capture
# group's port is then the socket's local port.
SOCKET_REASONS = ("SOCKET_RCVBUFF", "SOCKET_BACKLOG", "PROTO_MEM", "SOCKET_FILTER", "TCP_LISTEN_OVERFLOW",
                  "TCP_REQQFULLDROP", "SOCKET_CLOSE", "TCP_ZEROWINDOW", "TCP_OVERWINDOW", "TCP_OFOMERGE")
NO_SOCKET = "NO_SOCKET"

MAX_SOCKETS = 50
MAX_LISTENER_PORTS = 16
MAX_ETHTOOL_INTERFACES = 16
MAX_CONF_INTERFACES = 64
ETHTOOL_UNSUPPORTED_RC = (1, 94)  # "netlink error: Operation not supported" / EOPNOTSUPP (ioctl)


def normalise(text):
    """A /proc/sys value as one line: whitespace runs become one space (``"4096\\t131072\\t6291456\\n"`` ->
    ``"4096 131072 6291456"``)."""
    return " ".join(text.split())


def sysctl_path(name):
    """``net.ipv4.conf.eth0/100.rp_filter`` -> ``/proc/sys/net/ipv4/conf/eth0.100/rp_filter`` (sysctl(8)'s
    convention: a dot inside a name part is written ``/``)."""
    return "/proc/sys/" + "/".join(part.replace("/", ".") for part in name.split("."))


def _expand(reader, name):
    """The names `name` stands for: itself, or for ``a.b.*.c`` each entry of /proc/sys/a/b/ (all, default first)."""
    if "*" not in name:
        return [name]
    head, _star, tail = name.partition(".*.")
    try:
        entries = os.listdir(reader.path(sysctl_path(head)))
    except OSError:
        return []
    first = [entry for entry in ("all", "default") if entry in entries]
    rest = sorted(entry for entry in entries if entry not in ("all", "default"))[:MAX_CONF_INTERFACES]
    return ["%s.%s.%s" % (head, entry.replace(".", "/"), tail) for entry in first + rest]


def read_sysctls(reader, names, errors):
    """``{name: value}`` of the sysctls this host has (absent ones are left out; other failures go to `errors`)."""
    values = {}
    for pattern in names:
        for name in _expand(reader, pattern):
            try:
                values[name] = normalise(reader.read_text(sysctl_path(name)))
            except (IOError, OSError) as exc:
                if getattr(exc, "errno", None) not in (2, 20):  # ENOENT, ENOTDIR: the host has no such knob
                    errors.append({"source": sysctl_path(name), "error": str(exc)})
    return values


def _ethtool(reader, ethtool, option, name, parse, errors):
    source = "ethtool %s %s" % (option, name)
    try:
        rc, out, err = reader.run([ethtool, option, name])
    except (IOError, OSError) as exc:
        errors.append({"source": source, "error": str(exc)})
        return None
    if rc != 0:
        if rc not in ETHTOOL_UNSUPPORTED_RC:
            errors.append({"source": source, "error": "exit %d: %s" % (rc, (err or out).strip()[:200])})
        return None
    try:
        return parse(out, source)
    except ValueError as exc:
        errors.append({"source": source, "error": str(exc)})
        return None


def read_interfaces(reader, names, errors):
    """Per interface: ``txqueuelen``, ``qdiscs`` (limits) and, for device-backed ones, ``rings`` and ``channels``."""
    interfaces = dict((name, {"rings": None, "channels": None, "txqueuelen": None, "qdiscs": {}}) for name in names)
    for name, entry in interfaces.items():
        try:
            entry["txqueuelen"] = int(reader.read_text("/sys/class/net/%s/tx_queue_len" % name).strip())
        except (IOError, OSError, ValueError):
            pass
    tc = reader.find_bin("tc")
    if tc is not None:
        try:
            rc, out, err = reader.run([tc, "-j", "qdisc", "show"])
            if rc != 0:
                raise ValueError("exit %d: %s" % (rc, (err or out).strip()[:200]))
            for key, limit in parse_tc_qdisc_limits(out).items():
                dev = key.split(" ", 1)[0]
                if dev in interfaces:
                    interfaces[dev]["qdiscs"][key] = limit
        except (IOError, OSError, ValueError) as exc:
            errors.append({"source": "tc -j qdisc show", "error": str(exc)})
    ethtool = reader.find_bin("ethtool")
    if ethtool is None:
        return interfaces
    devices = [name for name in sorted(interfaces) if os.path.exists(reader.path("/sys/class/net/%s/device" % name))]
    for name in devices[:MAX_ETHTOOL_INTERFACES]:
        interfaces[name]["rings"] = _ethtool(reader, ethtool, "-g", name, parse_ethtool_rings, errors)
        interfaces[name]["channels"] = _ethtool(reader, ethtool, "-l", name, parse_ethtool_channels, errors)
    return interfaces


def _read_table(reader, path, parse, errors):
    try:
        return parse(reader.read_text(path))
    except (IOError, OSError, ValueError) as exc:
        errors.append({"source": path, "error": str(exc)})
        return []


def _ss_listeners(reader, errors):
    """Listening TCP sockets of this namespace from ``ss -n -l -t -e`` (sock_diag walks only the listening
    table; /proc/net/tcp walks every connection of the kernel), None where ss is missing or fails."""
    ss = reader.find_bin("ss")
    if ss is None:
        return None
    try:
        rc, out, err = reader.run([ss, "-n", "-l", "-t", "-e"])
        if rc != 0:
            raise ValueError("exit %d: %s" % (rc, (err or out).strip()[:200]))
        entries = parse_ss(out, "ss -n -l -t -e")
    except (IOError, OSError, ValueError) as exc:
        errors.append({"source": "ss -n -l -t -e", "error": str(exc)})
        return None
    return [{"proto": "tcp6" if ":" in entry["local_address"] else "tcp", "local_address": entry["local_address"],
             "local_port": entry["local_port"], "inode": entry["inode"], "uid": entry["uid"],
             "accept_queue": entry["recv_q"]} for entry in entries if entry["state"] == "LISTEN"]


def _local_sockets(reader, errors, families=("udp", "tcp")):
    """UDP sockets and listening TCP sockets of this namespace (`families`: which to read): /proc/net/udp*, and
    ``ss -l -t`` (else /proc/net/tcp*) for TCP."""
    sockets = []
    for proto in ("udp", "udp6") if "udp" in families else ():
        sockets += _read_table(reader, "/proc/net/" + proto, lambda text, p=proto: parse_proc_net_udp(text, p), errors)
    listeners = _ss_listeners(reader, errors) if "tcp" in families else None
    if listeners is not None:
        return sockets + listeners
    for proto in ("tcp", "tcp6") if "tcp" in families else ():
        sockets += _read_table(reader, "/proc/net/" + proto,
                               lambda text, p=proto: parse_proc_net_tcp_listeners(text, p), errors)
    return sockets


def _capture_ports(capture, families):
    """({port: [socket reasons]}, [NO_SOCKET ports, largest count first]) from the capture's groups; `families`
    (a set) gets the L4 protocols of those groups ("udp", "tcp")."""
    socket_ports, no_socket = {}, {}
    for drop in (capture or {}).get("drops") or []:
        port = drop.get("port")
        if not isinstance(port, int) or isinstance(port, bool) or not port:
            continue
        if drop.get("reason") in SOCKET_REASONS or drop.get("reason") == NO_SOCKET:
            families.update([drop["l4"]] if drop.get("l4") in ("udp", "tcp") else ["udp", "tcp"])
        if drop.get("reason") in SOCKET_REASONS:
            reasons = socket_ports.setdefault(port, [])
            if drop["reason"] not in reasons:
                reasons.append(drop["reason"])
        elif drop.get("reason") == NO_SOCKET:
            no_socket[port] = no_socket.get(port, 0) + drop.get("count", 0)
    ranked = sorted(no_socket, key=lambda port: (-no_socket[port], port))
    return socket_ports, ranked[:MAX_LISTENER_PORTS]


def _ss_sockets(reader, udp_ports, tcp_ports, errors):
    """``{inode: ss entry}`` for the UDP sockets and listening TCP sockets on these ports."""
    ss = reader.find_bin("ss")
    found = {}
    if ss is None:
        return found
    for kind, ports in (("-u", udp_ports), ("-t", tcp_ports)):
        if not ports:
            continue
        argv = [ss, "-n", "-e", "-m", kind, "-a" if kind == "-u" else "-l"] + ss_filter(ports)
        source = "ss -n -e -m %s" % kind
        try:
            rc, out, err = reader.run(argv)
            if rc != 0:
                raise ValueError("exit %d: %s" % (rc, (err or out).strip()[:200]))
            for entry in parse_ss(out, source):
                if entry["inode"]:
                    found[entry["inode"]] = entry
        except (IOError, OSError, ValueError) as exc:
            errors.append({"source": source, "error": str(exc)})
    return found


def _socket_entry(sock, why, ss_entry):
    tcp = sock["proto"].startswith("tcp")
    entry = {"proto": sock["proto"], "local_address": sock["local_address"], "local_port": sock["local_port"],
             "inode": sock.get("inode"), "drops": sock.get("drops"), "state": None, "rcvbuf": None,
             "rx_queue": None, "backlog": sock.get("accept_queue") if tcp else None, "backlog_max": None,
             "uid": sock.get("uid"), "why": why, "owners": [], "owners_more": 0, "owner_note": None}
    if ss_entry is not None:
        entry.update({"state": ss_entry["state"], "rcvbuf": ss_entry["rcvbuf"]})
        if tcp:
            entry.update({"backlog": ss_entry["recv_q"], "backlog_max": ss_entry["send_q"]})
        else:
            entry["rx_queue"] = ss_entry["recv_q"]
        if entry["drops"] is None:
            entry["drops"] = ss_entry["drops"]
        if entry["uid"] is None:
            entry["uid"] = ss_entry["uid"]
    return entry


LISTEN_COUNTERS = ("TcpExtListenOverflows", "TcpExtListenDrops")
MAX_LISTEN_SOCKETS = 10


def listen_overflowed(before, after):
    """The TCP listen counters that grew between the two snapshots (kfree_skb does not see these drops:
    the SYN is freed by consume_skb, so no capture group names the port)."""
    old, new = (before or {}).get("protocols") or {}, (after or {}).get("protocols") or {}
    return [name for name in LISTEN_COUNTERS if name in old and new.get(name, 0) > old[name]]


def read_sockets(reader, capture, snapshot, errors, own_netns=None, before=None):
    """``(sockets, listeners)`` of the layout in docs/run-format.md."""
    families = set()
    socket_ports, no_socket_ports = _capture_ports(capture, families)
    chosen = []  # (socket, why)
    seen = set()
    for sock in (snapshot or {}).get("sockets") or []:
        if sock.get("drops") and sock.get("inode") and len(chosen) < MAX_SOCKETS:
            chosen.append((dict(sock), ["drops"]))
            seen.add(sock["inode"])
    grew = listen_overflowed(before, snapshot)
    if grew:  # no port to go by: the listening sockets whose accept queue is fullest now
        listening = _ss_listeners(reader, errors) or []
        listening.sort(key=lambda sock: -sock["accept_queue"])
        for sock in listening[:MAX_LISTEN_SOCKETS]:
            if sock["inode"] and sock["inode"] not in seen and len(chosen) < MAX_SOCKETS:
                chosen.append((dict(sock), list(grew)))
                seen.add(sock["inode"])
    local = _local_sockets(reader, errors, families) if families else []
    for sock in local:
        reasons = socket_ports.get(sock["local_port"])
        if not reasons or not sock.get("inode"):
            continue
        if sock["inode"] in seen:
            for chosen_sock, why in chosen:
                if chosen_sock["inode"] == sock["inode"]:
                    why.extend(reason for reason in reasons if reason not in why)
        elif len(chosen) < MAX_SOCKETS:
            chosen.append((dict(sock), list(reasons)))
            seen.add(sock["inode"])
    udp_ports = sorted(set(s["local_port"] for s, _why in chosen if not s["proto"].startswith("tcp")))
    tcp_ports = sorted(set(s["local_port"] for s, _why in chosen if s["proto"].startswith("tcp")))
    ss_entries = _ss_sockets(reader, udp_ports, tcp_ports, errors)
    sockets = [_socket_entry(sock, why, ss_entries.get(sock["inode"])) for sock, why in chosen]

    listeners = []
    others, note = ({}, None)
    if no_socket_ports:
        others, note = other_netns_listeners(reader, no_socket_ports, own_netns, families=families)
    for port in no_socket_ports:
        here = [{"proto": s["proto"], "local_address": s["local_address"], "inode": s["inode"]}
                for s in local if s["local_port"] == port]
        listeners.append({"reason": NO_SOCKET, "port": port, "here": here, "other_netns": others.get(port, []),
                          "note": note})

    wanted = set(s["inode"] for s in sockets if s["inode"])
    for listener in listeners:
        wanted.update(entry["inode"] for entry in listener["here"] + listener["other_netns"] if entry["inode"])
    namespaces = None
    if own_netns:  # the processes of the sockets' namespaces: this one and the listeners' others
        namespaces = set([own_netns])
        namespaces.update(entry["netns_inode"] for listener in listeners for entry in listener["other_netns"])
    owners = find_owners(reader, wanted, netns=namespaces)
    for sock in sockets:
        held = owners.get(sock["inode"])
        if held and held["owners"]:
            sock["owners"], sock["owners_more"] = held["owners"], held["more"]
        else:
            sock["owner_note"] = ("owner not found: no process holds socket inode %s (it exited, or the socket is "
                                  "held by the kernel or a process in another PID namespace)" % sock["inode"])
    for listener in listeners:
        for entry in listener["here"] + listener["other_netns"]:
            held = owners.get(entry["inode"]) or {"owners": []}
            entry["owners"] = [dict((key, owner[key]) for key in ("pid", "comm", "user", "unit", "container", "pod"))
                               for owner in held["owners"][:MAX_OWNERS]]
    return sockets, listeners


def read_knobs(reader, capture=None, snapshot=None, sysctls=(), before=None):
    """drop_capture's ``knobs``: read once, after the capture (see the module doc and docs/run-format.md).

    `snapshot` is the AFTER snapshot (its interfaces, its dropping sockets and its netns inode), `before`
    the BEFORE one (whether the TCP listen counters grew); `sysctls` adds names to ``KNOB_SYSCTLS``.
    """
    errors = []
    snapshot = snapshot or {}
    names = list(KNOB_SYSCTLS) + [name for name in sysctls if name not in KNOB_SYSCTLS]
    knobs = {"schema_version": SCHEMA_VERSION, "sysctl": read_sysctls(reader, names, errors), "interfaces": {},
             "sockets": [], "listeners": [], "errors": errors}
    interfaces = sorted((snapshot.get("interfaces") or {}).keys())
    if not interfaces:
        try:
            interfaces = sorted(os.listdir(reader.path("/sys/class/net")))
        except OSError:
            interfaces = []
    knobs["interfaces"] = read_interfaces(reader, interfaces, errors)
    own_netns = (snapshot.get("system") or {}).get("netns_inode")
    knobs["sockets"], knobs["listeners"] = read_sockets(reader, capture, snapshot, errors, own_netns, before)
    return knobs


def sysctl_name_problem(name):
    """Why `name` is not a sysctl name this module reads (None when it is): dotted parts of letters, digits,
    ``_``, ``-``, ``/`` (a dot inside an interface name) or one ``*``; never ``..`` or an empty part.

    >>> sysctl_name_problem("net.ipv4.conf.*.rp_filter") is None
    True
    >>> sysctl_name_problem("net.core/../../etc.shadow")
    "sysctls: 'net.core/../../etc.shadow' is not a sysctl name (dotted parts of letters, digits, _ - / and *)"
    """
    parts = name.split(".") if isinstance(name, str) else [""]
    ok = len(parts) >= 2 and all(part and part not in ("*", "/") or part == "*" for part in parts)
    ok = ok and all(all(c.isalnum() or c in "_-/*" for c in part) for part in parts)
    ok = ok and all(".." not in part.replace("/", ".") and not part.startswith("/") and not part.endswith("/")
                    for part in parts)
    ok = ok and name.count("*") <= 1 and all(part == "*" or "*" not in part for part in parts)
    if ok:
        return None
    return "sysctls: %r is not a sysctl name (dotted parts of letters, digits, _ - / and *)" % (name,)


def read_knobs_safely(reader, capture=None, snapshot=None, sysctls=(), before=None):
    """``read_knobs``, but whatever breaks is an entry of ``errors``, never a failed capture."""
    try:
        return read_knobs(reader, capture, snapshot, sysctls, before)
    except Exception as exc:  # pylint: disable=broad-except
        return {"schema_version": SCHEMA_VERSION, "sysctl": {}, "interfaces": {}, "sockets": [], "listeners": [],
                "errors": [{"source": "knobs", "error": "%s: %s" % (type(exc).__name__, exc)}]}
