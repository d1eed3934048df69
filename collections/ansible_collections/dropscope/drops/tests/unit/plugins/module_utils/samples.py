# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Recorded real outputs for the unit tests: tests/data/ at the repository root (sources in its README),
and hosts made of them (a HostReader that answers from recorded files and command outputs)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os


def recorded(name):
    """Text of a recorded sample in tests/data/ (the repository root holds pyproject.toml)."""
    here = os.path.dirname(os.path.abspath(__file__))
    while not os.path.exists(os.path.join(here, "pyproject.toml")):
        parent = os.path.dirname(here)
        if parent == here:
            raise RuntimeError("no pyproject.toml above %s" % __file__)
        here = parent
    with open(os.path.join(here, "tests", "data", name), "r", encoding="utf-8") as handle:
        return handle.read()


class FakeReader:
    """A ``snapshot.HostReader`` that answers from recorded files, binaries and command outputs.

    `root` is where paths that are only checked for existence (kernel BTF, ``instances/``) are looked up.
    """

    def __init__(self, files, bins, outputs, root="/nonexistent-root"):
        self.files, self.bins, self.outputs, self.root = files, bins, outputs, root

    def path(self, path):
        return os.path.join(self.root, path.lstrip("/"))

    def read_text(self, path):
        if path not in self.files:
            raise IOError(errno.ENOENT, "No such file", path)
        return self.files[path]

    def find_bin(self, name):
        return self.bins.get(name)

    def run(self, argv):
        return self.outputs[os.path.basename(argv[0])]


# /proc/self/status of root (every capability) and of an unprivileged user.
STATUS_ROOT = "Name:\tpython3\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n"
STATUS_USER = "Name:\tpython3\nCapEff:\t0000000000000000\n"


def recorded_host(mounted=True, tools=("perf", "bpftrace"), status=STATUS_ROOT, root="/nonexistent-root"):
    """A host like this machine (kernel 6.18's kfree_skb format, perf 6.1, bpftrace 0.17) as a FakeReader.

    `mounted`: tracefs mounted at /sys/kernel/tracing; `tools`: the binaries installed; `root`: a
    directory holding ``sys/kernel/btf/vmlinux`` and ``sys/kernel/tracing/instances`` where they exist.
    """
    files = {"/proc/filesystems": "nodev\tsysfs\nnodev\ttracefs\n", "/proc/self/status": status,
             "/proc/sys/kernel/perf_event_paranoid": "2\n"}
    if mounted:
        files["/proc/mounts"] = "tracefs /sys/kernel/tracing tracefs rw 0 0\n"
        files["/sys/kernel/tracing/events/skb/kfree_skb/format"] = recorded("kfree_skb_format.txt")
    else:
        files["/proc/mounts"] = "sysfs /sys sysfs rw 0 0\n"
    bins = dict((name, "/usr/bin/" + name) for name in tools)
    outputs = {"perf": (0, "perf version 6.1.192\n", ""), "bpftrace": (0, "bpftrace v0.17.0\n", ""),
               "dropwatch": (0, "", "")}
    return FakeReader(files, bins, outputs, root=root)


class ArgvReader(FakeReader):
    """A FakeReader whose command outputs are keyed by the whole command ("tc -s -j qdisc show"); a command
    it has no answer for does not exist (OSError), like a binary that is not there."""

    def run(self, argv):
        command = " ".join([os.path.basename(argv[0])] + list(argv[1:]))
        if command not in self.outputs:
            raise OSError(errno.ENOENT, "No such file or directory", command)
        return self.outputs[command]
