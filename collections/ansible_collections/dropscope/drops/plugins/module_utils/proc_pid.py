# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# The docstring samples are verbatim /proc lines, some longer than 120 characters.
# ruff: noqa: E501
"""Who a process is: ``/proc/PID/status`` (its uid), ``/proc/PID/cgroup`` (its cgroup) and what that path names.

Pure functions (standard library only); they run on the managed host. A cgroup path names a systemd unit
(``/system.slice/nginx.service``), a container (docker ``docker-ID.scope`` or ``/docker/ID``, containerd
``cri-containerd-ID.scope``, CRI-O ``crio-ID``, podman ``libpod-ID.scope``) and a Kubernetes pod
(``kubepods…pod<UID>``, the systemd driver writes the UID's dashes as underscores) when it shows one;
any other shape gives only the path.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

_CONTAINER = re.compile(r"^(?:(docker|cri-containerd|crio|libpod|podman)-)?([0-9a-f]{64})(?:\.scope)?$")
_RUNTIMES = {"docker": "docker", "cri-containerd": "containerd", "crio": "cri-o", "libpod": "podman",
             "podman": "podman"}
_POD = re.compile(r"^(?:kubepods-(?:(burstable|besteffort)-)?)?pod([0-9a-fA-F_-]{32,36})(?:\.slice)?$")
_QOS = re.compile(r"^kubepods-(burstable|besteffort)\.slice$|^(burstable|besteffort)$")
_UNIT = re.compile(r"^[^/]+\.(service|scope)$")


def parse_status_uid(text, source="/proc/PID/status"):
    """The real uid from ``/proc/PID/status`` (its ``Uid:`` line: real, effective, saved, filesystem).

    >>> parse_status_uid("Name:\\tudp-rx\\nUmask:\\t0022\\nUid:\\t1000\\t1000\\t1000\\t1000\\nGid:\\t1000\\t1000\\t1000\\t1000\\n")
    1000
    """
    for line in text.splitlines():
        if line.startswith("Uid:"):
            fields = line.split()
            if len(fields) >= 2 and fields[1].isdigit():
                return int(fields[1])
            break
    raise ValueError("%s: no 'Uid:' line with a number" % source)


def parse_proc_pid_cgroup(text):
    """The process's cgroup path from ``/proc/PID/cgroup``: the unified (v2, ``0::``) one when it is not the
    root, else the ``name=systemd`` one, else the first v1 path that is not the root, else ``/``.

    Samples (cgroup v2 of a docker container, from OpenTelemetry's eBPF profiler tests,
    ``tests/data/proc_pid_cgroup_container_lines.txt``; a v1/v2 hybrid host,
    ``tests/data/proc_pid_cgroup_v1_hybrid.txt``):

    >>> parse_proc_pid_cgroup('''0::/system.slice/docker-b1eba9dfaeba29d8b80532a574a03ea3cac29384327f339c26da13649e2120df.scope/init
    ... ''')
    '/system.slice/docker-b1eba9dfaeba29d8b80532a574a03ea3cac29384327f339c26da13649e2120df.scope/init'
    >>> parse_proc_pid_cgroup('''9:name=systemd:/
    ... 8:pids:/
    ... 4:memory:/process_api/54b378996a8887f3addf8311d3059002
    ... 0::/
    ... ''')
    '/process_api/54b378996a8887f3addf8311d3059002'
    """
    unified = systemd = first = None
    for line in text.splitlines():
        hierarchy, sep, rest = line.partition(":")
        controllers, sep2, path = rest.partition(":")
        if not sep or not sep2 or not path:
            continue
        if hierarchy == "0" and not controllers:
            unified = path
        elif controllers == "name=systemd":
            systemd = path
        elif first is None and path != "/":
            first = path
    for path in (unified, systemd, first):
        if path and path != "/":
            return path
    return unified or systemd or "/"


def cgroup_owner(path):
    """What a cgroup path names: ``{"unit": str|None, "container": {"runtime", "id"}|None, "pod": {"uid", "qos"}|None}``.

    >>> cgroup_owner("/system.slice/docker-b1eba9dfaeba29d8b80532a574a03ea3cac29384327f339c26da13649e2120df.scope/init")["container"]
    {'runtime': 'docker', 'id': 'b1eba9dfaeba29d8b80532a574a03ea3cac29384327f339c26da13649e2120df'}
    >>> owner = cgroup_owner("/kubepods.slice/kubepods-burstable.slice/"
    ...                      "kubepods-burstable-podf6f2d169_f2ae_4afa-95ed_06ff2ed6b288.slice/"
    ...                      "cri-containerd-b4d6d161c62525d726fa394b27df30e14f8ea5646313ada576b390de70cfc8cc.scope")
    >>> owner["pod"], owner["container"]["runtime"], owner["unit"]
    ({'uid': 'f6f2d169-f2ae-4afa-95ed-06ff2ed6b288', 'qos': 'burstable'}, 'containerd', None)
    >>> cgroup_owner("/system.slice/nginx.service")
    {'unit': 'nginx.service', 'container': None, 'pod': None}
    """
    owner = {"unit": None, "container": None, "pod": None}
    parts = [part for part in (path or "").split("/") if part and part != ".."]
    parent = None
    for part in parts:
        container = _CONTAINER.match(part)
        if container and (container.group(1) or parent in ("docker", "libpod") or owner["pod"] is not None):
            runtime = _RUNTIMES.get(container.group(1) or parent or "", "docker" if parent == "docker" else None)
            owner["container"] = {"runtime": runtime, "id": container.group(2)}
        pod = _POD.match(part)
        if pod and (part.startswith("kubepods") or "kubepods" in parts[:1] or (parent or "").startswith("kubepods")
                    or (parent or "") in ("burstable", "besteffort")):
            qos = pod.group(1)
            if qos is None and parent is not None:
                match = _QOS.match(parent)
                qos = match and (match.group(1) or match.group(2))
            owner["pod"] = {"uid": pod.group(2).replace("_", "-"), "qos": qos or None}
        parent = part
    # The systemd unit is the innermost *.service / *.scope that is not a container's or pod's own scope.
    for part in reversed(parts):
        if _UNIT.match(part) and not _CONTAINER.match(part):
            owner["unit"] = part
            break
    if owner["container"] is not None or owner["pod"] is not None:
        owner["unit"] = None if owner["unit"] and owner["unit"].endswith(".scope") else owner["unit"]
    return owner
