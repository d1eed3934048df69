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
import re
import socket
import subprocess
import sys
import time

from ansible_collections.dropscope.drops.plugins.module_utils.ethtool_stats import (
    parse_ethtool_info,
    parse_ethtool_stats,
)
from ansible_collections.dropscope.drops.plugins.module_utils.iptables_save import parse_iptables_save
from ansible_collections.dropscope.drops.plugins.module_utils.nf_conntrack import (
    SYSCTL_DIR,
    parse_nf_conntrack_stat,
    parse_nf_conntrack_sysctl,
)
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
from ansible_collections.dropscope.drops.plugins.module_utils.tc_qdisc import parse_tc_qdisc, parse_tc_qdisc_json

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
        """The real host, through `module` (an AnsibleModule): commands run in the C locale (``run_argv``).

        A command that cannot start raises OSError (recorded in the snapshot's errors) instead of
        failing the module: drop_capture reads counters while its tracer runs.
        """
        env_update = dict(getattr(module, "run_command_environ_update", None) or {})
        env_update.update(C_LOCALE)
        return cls(run_command=lambda argv: run_argv(argv, env_update),
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


def run_argv(argv, env_update=None):
    """Run `argv` (a list: no shell, and no ``$VAR`` or ``~`` expansion, so an interface called ``$HOME`` is
    that interface) with `env_update` added to the environment; returns ``(rc, stdout, stderr)`` as text.

    What ``AnsibleModule.run_command`` does for an argument list, without its ``preexec_fn``: that makes
    Python fork the whole module process for each command instead of spawning it (vfork), ~5 ms of CPU per
    command instead of ~1 ms, and a capture runs about fifteen. Raises OSError when the command cannot start.
    """
    env = dict(os.environ)
    env.update(env_update or {})
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, close_fds=True)
    out, err = proc.communicate()
    return proc.returncode, out.decode("utf-8", "surrogateescape"), err.decode("utf-8", "surrogateescape")


def os_release_pretty_name(text):
    r"""PRETTY_NAME of an os-release file (quotes and shell escapes removed), None if it has none.

    >>> os_release_pretty_name('NAME="Debian GNU/Linux"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n')
    'Debian GNU/Linux 12 (bookworm)'
    """
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if not sep or key != "PRETTY_NAME":
            continue
        value = value.strip()
        quote = value[:1]
        if len(value) >= 2 and quote in ("'", '"') and value.endswith(quote):
            value = value[1:-1]
            if quote == '"':
                value = re.sub(r'\\([\\"$`])', r"\1", value)
        return value or None
    return None


def read_distro(reader):
    """The host's distribution as os-release names it (PRETTY_NAME; /etc first, then /usr/lib), None if unknown."""
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            return os_release_pretty_name(reader.read_text(path))
        except (IOError, OSError):
            continue
    return None


def read_system(reader):
    """Host identity: hostname, kernel release, boot_id, the network namespace it was read in, the
    Python that ran the module (hosts run what their distribution ships: 3.8 and newer) and the
    distribution (os-release PRETTY_NAME, None where no os-release file exists)."""
    system = {"hostname": socket.gethostname(), "kernel_release": os.uname()[2], "boot_id": None, "netns_inode": None,
              "python": "%d.%d.%d" % tuple(sys.version_info[:3]), "distro": read_distro(reader)}
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
    return dict((name, {"statistics": counters, "ethtool": None, "ethtool_status": None, "driver": None})
                for name, counters in statistics.items())


class DeviceMemo:
    """What belongs to a network device rather than to a moment, read once per device in a run.

    `ethtool -i` (the driver, its version, firmware and bus) and whether the driver keeps statistics at
    all (`ethtool -S` exits 94, EOPNOTSUPP) do not change while the device exists. A run that reads the
    counters twice (drop_capture's BEFORE and AFTER) passes one memo to both: the second reading reuses
    them for each device whose ``ifindex`` is still the same (the same device, not a new one given the
    old name), and runs only ``ethtool -S`` where the driver keeps statistics: one or two commands less
    per interface. Answers that were errors are never kept.
    """

    def __init__(self):
        self._devices = {}  # name -> (ifindex, driver or None, whether `ethtool -S` said no stats)

    @staticmethod
    def ifindex(reader, name):
        try:
            return int(reader.read_text("/sys/class/net/%s/ifindex" % name).strip())
        except (IOError, OSError, ValueError):
            return None

    def get(self, name, ifindex):
        """(driver, no_stats) known for device `name` with `ifindex`, or None."""
        known = self._devices.get(name)
        if ifindex is None or known is None or known[0] != ifindex:
            return None
        return known[1], known[2]

    def keep(self, name, ifindex, driver, no_stats):
        if ifindex is not None:
            self._devices[name] = (ifindex, driver, no_stats)


def _read_ethtool(reader, interfaces, snapshot, memo=None):
    ethtool = reader.find_bin("ethtool")
    for name, entry in interfaces.items():
        if ethtool is None:
            entry["ethtool_status"] = "ethtool not installed"
            continue
        ifindex = memo.ifindex(reader, name) if memo is not None else None
        known = memo.get(name, ifindex) if memo is not None else None
        if known is not None and known[1]:
            entry["ethtool_status"] = "no stats available"
            entry["driver"] = known[0]
            continue
        try:
            rc, out, err = reader.run([ethtool, "-S", name])
        except (IOError, OSError) as exc:
            entry["ethtool_status"] = "error: %s" % exc
            snapshot["errors"].append({"source": "ethtool -S %s" % name, "error": str(exc)})
            continue
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
        if known is not None:
            entry["driver"] = known[0]
            continue
        entry["driver"], clean = _read_driver(reader, snapshot, ethtool, name)
        if memo is not None and clean and entry["ethtool_status"] in ("ok", "no stats available"):
            memo.keep(name, ifindex, entry["driver"], entry["ethtool_status"] == "no stats available")


def _read_driver(reader, snapshot, ethtool, name):
    """`ethtool -i NAME`: the driver, its version, firmware and bus (None where the device has no driver info:
    `lo` and other software devices exit non-zero with "Operation not supported"), and whether that answer
    was clean (no error recorded)."""
    source = "ethtool -i %s" % name
    try:
        rc, out, _err = reader.run([ethtool, "-i", name])
    except (IOError, OSError) as exc:
        snapshot["errors"].append({"source": source, "error": str(exc)})
        return None, False
    if rc != 0:
        return None, True
    errors = len(snapshot["errors"])
    driver = _source(snapshot, source, parse_ethtool_info, out, source)
    return driver, len(snapshot["errors"]) == errors


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


def _read_command(reader, snapshot, binary, argv, parse, path=None):
    """Run `binary argv…` (at PATH, else where installed); a missing binary is not an error, a failing one is."""
    path = path or reader.find_bin(binary)
    if path is None:
        return {}
    source = " ".join([binary] + argv)
    try:
        rc, out, err = reader.run([path] + argv)
    except (IOError, OSError) as exc:
        snapshot["errors"].append({"source": source, "error": str(exc)})
        return {}
    if rc != 0:
        snapshot["errors"].append({"source": source, "error": "exit %d: %s" % (rc, (err or out).strip()[:200])})
        return {}
    return _source(snapshot, source, parse, out) or {}


def _read_qdiscs(reader, snapshot):
    """Qdisc counters: `tc -s -j qdisc show`, and `tc -s qdisc show` where that fails (iproute2 before 4.15
    has no -j) or prints entries that are not JSON (4.15 to 5.4, some qdiscs); see tc_qdisc. Which qdiscs
    came from the text output is noted in `errors` (source "tc -s qdisc show")."""
    tc = reader.find_bin("tc")
    if tc is None:
        return {}
    json_source, text_source = "tc -s -j qdisc show", "tc -s qdisc show"
    json_text, why = None, None
    try:
        rc, out, err = reader.run([tc, "-s", "-j", "qdisc", "show"])
    except (IOError, OSError) as exc:
        rc, out, err = None, "", str(exc)
    if rc == 0:
        try:
            return parse_tc_qdisc_json(out)
        except ValueError as exc:
            json_text, why = out, str(exc)
    else:
        why = err if rc is None else "exit %d: %s" % (rc, (err or out).strip()[:200])
    try:
        rc, text, err = reader.run([tc, "-s", "qdisc", "show"])
    except (IOError, OSError) as exc:
        rc, text, err = None, "", str(exc)
    if rc != 0:
        snapshot["errors"].append({"source": json_source, "error": why})
        failed = err if rc is None else "exit %d: %s" % (rc, (err or text).strip()[:200])
        snapshot["errors"].append({"source": text_source, "error": failed})
        return {}
    from_text = []
    qdiscs = _source(snapshot, text_source, parse_tc_qdisc, json_text, text, from_text)
    if qdiscs is None:
        return {}
    if from_text:
        snapshot["errors"].append({"source": text_source, "error": "read from the text output (%s gave %s): %s"
                                   % (json_source, why, ", ".join(from_text))})
    return qdiscs


CONNTRACK_STAT = "/proc/net/stat/nf_conntrack"


def _read_conntrack(reader, snapshot):
    """Connection tracking statistics and table fill, None where nf_conntrack is not loaded.

    Only files that exist once the module is loaded are read (reading never loads it): the per-CPU
    statistics summed (nf_conntrack.parse_nf_conntrack_stat) and nf_conntrack_count / _max / _buckets.
    """
    if not os.path.exists(reader.path(CONNTRACK_STAT)):
        return None
    stat = _read_file(reader, snapshot, CONNTRACK_STAT, parse_nf_conntrack_stat)
    if stat is None:
        return None
    conntrack = {"stat": stat}
    for name in ("count", "max", "buckets"):
        sysctl = "nf_conntrack_" + name
        conntrack[name] = _read_file(reader, snapshot, SYSCTL_DIR + sysctl,
                                     lambda text, s=sysctl: parse_nf_conntrack_sysctl(text, s))
    return conntrack


# iptables-legacy tables of each family: the kernel lists a namespace's tables in this file once one is in use.
LEGACY_TABLES = (("ipv4", "/proc/net/ip_tables_names", "iptables"), ("ipv6", "/proc/net/ip6_tables_names", "ip6tables"))


def _legacy_save_command(reader, tool):
    """The command that prints the legacy rules of TOOL (iptables / ip6tables) with counters, or None.

    ``TOOL-legacy-save`` where installed; else ``TOOL-save`` unless its ``--version`` says ``(nf_tables)``
    (iptables-nft, whose rules the nft ruleset already holds); iptables older than 1.8 is always legacy.
    """
    legacy = reader.find_bin(tool + "-legacy-save")
    if legacy is not None:
        return tool + "-legacy-save", legacy
    plain = reader.find_bin(tool + "-save")
    if plain is None:
        return None
    try:
        version = reader.run([plain, "--version"])
    except (IOError, OSError):
        return None
    if "(nf_tables)" in version[1] + version[2]:
        return None
    return tool + "-save", plain


def _read_legacy_firewall(reader, snapshot):
    """iptables-legacy / ip6tables-legacy rules with their counters, keyed "iptables TABLE CHAIN #N".

    Read only where the kernel already has legacy tables in this namespace (its *_tables_names file exists
    and lists one): running the save command elsewhere could make the kernel load ip_tables modules.
    """
    rules = {}
    for family, names_file, tool in LEGACY_TABLES:
        try:
            tables = reader.read_text(names_file).split()
        except (IOError, OSError):
            continue
        if not tables:
            continue
        command = _legacy_save_command(reader, tool)
        if command is None:
            continue
        name, path = command
        rules.update(_read_command(reader, snapshot, name, ["-c"], lambda out, f=family: parse_iptables_save(out, f),
                                   path=path))
    return rules


def collect_snapshot(reader, ethtool=True, firewall=True, memo=None):
    """Read every drop-related counter of the host once and return the snapshot (see docs/run-format.md).

    `memo` (a ``DeviceMemo``) shared by the snapshots of one run reads each device's driver info once.
    """
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
        "conntrack": None,
        "errors": [],
    }
    snapshot["interfaces"] = _source(snapshot, "/sys/class/net", _read_interfaces, reader) or {}
    if ethtool:
        _read_ethtool(reader, snapshot["interfaces"], snapshot, memo)
    snapshot["protocols"] = _read_protocols(reader, snapshot)
    snapshot["softnet"] = _read_file(reader, snapshot, "/proc/net/softnet_stat", parse_softnet_stat) or []
    snapshot["qdiscs"] = _read_qdiscs(reader, snapshot)
    snapshot["conntrack"] = _read_conntrack(reader, snapshot)
    snapshot["sockets"] = _read_sockets(reader, snapshot)
    if firewall:
        snapshot["firewall"] = _read_command(reader, snapshot, "nft", ["-a", "list", "ruleset"], parse_nft_ruleset)
        snapshot["firewall"].update(_read_legacy_firewall(reader, snapshot))
    return snapshot
