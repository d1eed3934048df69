# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One snapshot of every drop-related counter of a host (the `drop_counters` module's logic).

The reading is separated from the parsing: `collect_snapshot` takes a `HostReader`, so tests can
feed it recorded files and command outputs, and the module feeds it the real host.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import socket
import time

from ansible_collections.dropscope.drops.plugins.module_utils.ethtool_stats import parse_ethtool_stats
from ansible_collections.dropscope.drops.plugins.module_utils.nft_ruleset import parse_nft_ruleset
from ansible_collections.dropscope.drops.plugins.module_utils.proc_net_dev import (
    parse_proc_net_dev,
    read_sysfs_statistics,
)
from ansible_collections.dropscope.drops.plugins.module_utils.proc_net_udp import parse_proc_net_udp
from ansible_collections.dropscope.drops.plugins.module_utils.run_record import SCHEMA_VERSION
from ansible_collections.dropscope.drops.plugins.module_utils.snmp import (
    parse_proc_net_snmp,
    parse_proc_net_snmp6,
)
from ansible_collections.dropscope.drops.plugins.module_utils.softnet_stat import parse_softnet_stat
from ansible_collections.dropscope.drops.plugins.module_utils.tc_qdisc import parse_tc_qdisc_json

# `ethtool -S` exits 94 (EOPNOTSUPP) when the driver keeps no statistics, e.g. on `lo`.
ETHTOOL_NO_STATS_RC = 94

# Per-socket entries are bounded so a host with thousands of dropping sockets stays small.
MAX_SOCKETS = 200

# Every command whose output is parsed runs in the C locale (messages and numbers as the parsers expect).
C_LOCALE = {"LANG": "C", "LC_ALL": "C", "LC_MESSAGES": "C"}
# Where a module looks for binaries besides PATH (sudo and SSH sessions often lack the sbin directories).
BIN_DIRS = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/sbin"]


class HostReader:
    """How the modules read the host: files, binaries and commands (argument lists, never a shell).

    Tests give it recorded answers; ``for_module`` gives it the real host through an AnsibleModule.
    """

    def __init__(self, run_command, find_bin, root="/"):
        self._run_command = run_command
        self._find_bin = find_bin
        self.root = root

    @classmethod
    def for_module(cls, module):
        """The real host, through `module` (an AnsibleModule): commands run in the C locale."""
        return cls(run_command=lambda argv: module.run_command(argv, environ_update=C_LOCALE),
                   find_bin=lambda name: module.get_bin_path(name, opt_dirs=BIN_DIRS))

    def path(self, path):
        return os.path.join(self.root, path.lstrip("/"))

    def read_text(self, path):
        with open(self.path(path), "r", encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def find_bin(self, name):
        return self._find_bin(name)

    def run(self, argv):
        return self._run_command(argv)


def read_system(reader):
    """Host identity: hostname, kernel release, boot_id and the network namespace it was read in."""
    system = {"hostname": socket.gethostname(), "kernel_release": os.uname()[2], "boot_id": None, "netns_inode": None}
    try:
        system["boot_id"] = reader.read_text("/proc/sys/kernel/random/boot_id").strip()
    except (IOError, OSError):
        pass
    try:
        system["netns_inode"] = os.stat(reader.path("/proc/self/ns/net")).st_ino
    except (IOError, OSError):
        pass
    return system


def _source(snapshot, source, func, *args):
    """Run one reader; a source that fails is recorded in `errors` and the rest of the snapshot goes on."""
    try:
        return func(*args)
    except (IOError, OSError, ValueError) as exc:
        snapshot["errors"].append({"source": source, "error": str(exc)})
        return None


def _read_interfaces(reader):
    statistics = read_sysfs_statistics(reader.path("/sys/class/net"))
    if not statistics:
        statistics = parse_proc_net_dev(reader.read_text("/proc/net/dev"))
    return dict((name, {"statistics": counters, "ethtool": None, "ethtool_status": None})
                for name, counters in statistics.items())


def _read_ethtool(reader, interfaces, snapshot):
    ethtool = reader.find_bin("ethtool")
    for name, entry in interfaces.items():
        if ethtool is None:
            entry["ethtool_status"] = "ethtool not installed"
            continue
        rc, out, err = reader.run([ethtool, "-S", name])
        if rc == 0:
            try:
                entry["ethtool"] = parse_ethtool_stats(out)
                entry["ethtool_status"] = "ok"
            except ValueError as exc:
                entry["ethtool_status"] = "error: %s" % exc
                snapshot["errors"].append({"source": "ethtool -S %s" % name, "error": str(exc)})
        elif rc == ETHTOOL_NO_STATS_RC or "no stats available" in (out + err):
            entry["ethtool_status"] = "no stats available"
        else:
            entry["ethtool_status"] = "error: exit %d: %s" % (rc, (err or out).strip()[:200])


def _read_file(reader, snapshot, path, parse):
    """Read and parse one file; a failure is recorded in `errors` and gives None."""
    return _source(snapshot, path, lambda: parse(reader.read_text(path)))


def _read_protocols(reader, snapshot):
    protocols = {}
    for path in ("/proc/net/snmp", "/proc/net/netstat"):
        protocols.update(_read_file(reader, snapshot, path, lambda text, p=path: parse_proc_net_snmp(text, p)) or {})
    protocols.update(_read_file(reader, snapshot, "/proc/net/snmp6", parse_proc_net_snmp6) or {})
    return protocols


def _read_sockets(reader, snapshot):
    sockets = []
    for path, proto in (("/proc/net/udp", "udp"), ("/proc/net/udp6", "udp6")):
        entries = _read_file(reader, snapshot, path, lambda text, k=proto: parse_proc_net_udp(text, k))
        sockets.extend(entry for entry in entries or () if entry["drops"] > 0)
    sockets.sort(key=lambda entry: -entry["drops"])
    return sockets[:MAX_SOCKETS]


def _read_command(reader, snapshot, binary, argv, parse):
    """Run `binary argv…` if it is installed; a missing binary is not an error, a failing one is."""
    path = reader.find_bin(binary)
    if path is None:
        return {}
    rc, out, err = reader.run([path] + argv)
    source = " ".join([binary] + argv)
    if rc != 0:
        snapshot["errors"].append({"source": source, "error": "exit %d: %s" % (rc, (err or out).strip()[:200])})
        return {}
    return _source(snapshot, source, parse, out) or {}


def collect_snapshot(reader, ethtool=True, firewall=True):
    """Read every drop-related counter of the host once and return the snapshot (see docs/run-format.md)."""
    snapshot = {
        "schema_version": SCHEMA_VERSION,
        "system": read_system(reader),
        "time": {"wall": time.time(), "monotonic": time.monotonic()},
        "interfaces": {},
        "protocols": {},
        "softnet": [],
        "qdiscs": {},
        "sockets": [],
        "firewall": {},
        "errors": [],
    }
    snapshot["interfaces"] = _source(snapshot, "/sys/class/net", _read_interfaces, reader) or {}
    if ethtool:
        _read_ethtool(reader, snapshot["interfaces"], snapshot)
    snapshot["protocols"] = _read_protocols(reader, snapshot)
    snapshot["softnet"] = _read_file(reader, snapshot, "/proc/net/softnet_stat", parse_softnet_stat) or []
    snapshot["qdiscs"] = _read_command(reader, snapshot, "tc", ["-s", "-j", "qdisc", "show"], parse_tc_qdisc_json)
    snapshot["sockets"] = _read_sockets(reader, snapshot)
    if firewall:
        snapshot["firewall"] = _read_command(reader, snapshot, "nft", ["-a", "list", "ruleset"], parse_nft_ruleset)
    return snapshot
