# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Who holds a socket, and who listens on a port elsewhere: reads of /proc on the managed host.

- ``find_owners``: the processes whose ``/proc/PID/fd/*`` link to ``socket:[INODE]`` (one pass over /proc,
  only when there are sockets to look for), each described by ``describe_process`` (comm, uid, user,
  cgroup and what the cgroup path names). A process that exits mid-way is skipped or kept with what was
  read; nothing here raises for a vanished process.
- ``other_netns_listeners``: for ports that got NO_SOCKET drops, the sockets bound to them in the other
  network namespaces of this kernel (one process per namespace: its ``/proc/PID/net/udp*`` and
  ``tcp*``), so the report can say "something listens on port 8000, in another namespace".

Everything is read through a ``snapshot.HostReader`` (its ``root`` lets tests use a recorded tree).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.dropscope.drops.plugins.module_utils.proc_net_tcp import parse_proc_net_tcp_listeners
from ansible_collections.dropscope.drops.plugins.module_utils.proc_net_udp import parse_proc_net_udp
from ansible_collections.dropscope.drops.plugins.module_utils.proc_pid import (
    cgroup_owner,
    parse_proc_pid_cgroup,
    parse_status_uid,
)

MAX_OWNERS = 4
MAX_NETNS = 64
MAX_TCP_NETNS = 4  # a /proc/PID/net/tcp read costs ~5 ms of CPU whatever the namespace holds
COMM_MAX = 64  # the kernel's comm is at most 15 bytes (TASK_COMM_LEN 16); a recorded tree might hold more


def _pids(reader):
    try:
        names = os.listdir(reader.path("/proc"))
    except OSError:
        return []
    return sorted(int(name) for name in names if name.isdigit())


def _user_name(uid):
    try:
        import pwd  # pylint: disable=import-outside-toplevel
        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError, OverflowError):
        return None


def describe_process(reader, pid, users=None):
    """``{"pid", "comm", "uid", "user", "cgroup", "unit", "container", "pod"}`` of PID; None when it is gone.

    `users` caches uid → name. comm is ``/proc/PID/comm`` without its newline, as the kernel has it
    (any bytes but NUL and ``/``; invalid UTF-8 replaced): data, never interpreted.
    """
    users = {} if users is None else users
    try:
        with open(reader.path("/proc/%d/comm" % pid), "rb") as handle:
            comm = handle.read(COMM_MAX + 1)[:COMM_MAX]
    except (IOError, OSError):
        return None  # exited between the fd scan and now
    comm = comm[:-1] if comm.endswith(b"\n") else comm
    process = {"pid": pid, "comm": comm.decode("utf-8", "replace"), "uid": None, "user": None, "cgroup": None,
               "unit": None, "container": None, "pod": None}
    try:
        process["uid"] = parse_status_uid(reader.read_text("/proc/%d/status" % pid))
    except (IOError, OSError, ValueError):
        pass
    if process["uid"] is not None:
        if process["uid"] not in users:
            users[process["uid"]] = _user_name(process["uid"])
        process["user"] = users[process["uid"]]
    try:
        process["cgroup"] = parse_proc_pid_cgroup(reader.read_text("/proc/%d/cgroup" % pid))
    except (IOError, OSError):
        pass
    if process["cgroup"]:
        process.update(cgroup_owner(process["cgroup"]))
    return process


def find_owners(reader, inodes, max_owners=MAX_OWNERS, netns=None):
    """``{inode: {"owners": [process, …], "more": n}}`` for the socket inodes in `inodes`.

    One pass over ``/proc/*/fd``; at most `max_owners` processes per socket are described (the lowest
    PIDs: usually the parent of forked workers), the rest counted in ``more``. Inodes no process holds
    are absent. `netns` (a set of network namespace inodes, None: all) limits the pass to the processes
    of those namespaces: on a host of many containers only the sockets' own namespaces are read.
    """
    wanted = dict(("socket:[%d]" % inode, inode) for inode in inodes)
    found = {}
    if not wanted:
        return found
    users = {}
    for pid in _pids(reader):
        if netns is not None and _netns_inode(reader, pid) not in netns:
            continue
        fd_dir = reader.path("/proc/%d/fd" % pid)
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue  # a kernel thread's fds are readable but empty; a vanished process is gone
        held = set()
        for fd in fds:
            try:
                target = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            inode = wanted.get(target)
            if inode is not None:
                held.add(inode)
        for inode in sorted(held):
            entry = found.setdefault(inode, {"owners": [], "more": 0})
            if len(entry["owners"]) >= max_owners:
                entry["more"] += 1
                continue
            process = describe_process(reader, pid, users)
            if process is not None:
                entry["owners"].append(process)
    return found


def _netns_inode(reader, pid):
    try:
        return os.stat(reader.path("/proc/%d/ns/net" % pid)).st_ino
    except OSError:
        return None


def _listening(reader, pid, families=("udp", "tcp")):
    """UDP sockets and listening TCP sockets of PID's network namespace (``[{proto, local_address, local_port,
    inode}]``).

    `families` says which files to read: /proc/net/tcp walks the kernel's whole TCP hash (every namespace's
    connections), so it is read only when a TCP port is asked about.
    """
    sockets = []
    for proto in ("udp", "udp6") if "udp" in families else ():
        try:
            sockets.extend(parse_proc_net_udp(reader.read_text("/proc/%d/net/%s" % (pid, proto)), proto))
        except (IOError, OSError, ValueError):
            pass
    for proto in ("tcp", "tcp6") if "tcp" in families else ():
        try:
            sockets.extend(parse_proc_net_tcp_listeners(reader.read_text("/proc/%d/net/%s" % (pid, proto)), proto))
        except (IOError, OSError, ValueError):
            pass
    return sockets


def other_netns_listeners(reader, ports, own_netns, max_netns=MAX_NETNS, families=("udp", "tcp"),
                          max_tcp_netns=MAX_TCP_NETNS):
    """``({port: [{"netns_inode", "proto", "local_address", "inode"}]}, note)`` for `ports`.

    Looks at one process per network namespace other than `own_netns` (the first PID seen in it), at
    most `max_netns` namespaces; `note` says what could not be looked at (None when everything was).
    """
    result = dict((port, []) for port in ports)
    if not ports:
        return result, None
    seen = set([own_netns])
    skipped = tcp_skipped = tcp_read = 0
    for pid in _pids(reader):
        netns = _netns_inode(reader, pid)
        if netns is None or netns in seen:
            continue
        if len(seen) > max_netns:
            skipped += 1
            seen.add(netns)
            continue
        seen.add(netns)
        read = families
        if "tcp" in families:
            if tcp_read >= max_tcp_netns:
                read = tuple(family for family in families if family != "tcp")
                tcp_skipped += 1
            else:
                tcp_read += 1
        for sock in _listening(reader, pid, read):
            if sock["local_port"] in result:
                result[sock["local_port"]].append({"netns_inode": netns, "proto": sock["proto"],
                                                   "local_address": sock["local_address"], "inode": sock["inode"]})
    note = None
    if len(seen) == 1:
        note = "no process visible in another network namespace"
    else:
        notes = []
        if skipped:
            notes.append("%d more network namespaces were not looked at (at most %d are)" % (skipped, max_netns))
        if tcp_skipped:
            notes.append("TCP listeners were looked up in %d of %d other network namespaces (each /proc/PID/net/tcp "
                         "read walks the kernel's whole TCP table)" % (tcp_read, tcp_read + tcp_skipped))
        note = "; ".join(notes) or None
    return result, note
