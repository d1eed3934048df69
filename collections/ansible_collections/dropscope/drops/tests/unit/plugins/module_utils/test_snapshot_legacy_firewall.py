# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""collect_snapshot's iptables-legacy / ip6tables reading on recorded outputs: iptables 1.8.9 legacy recorded on
kernel 6.18 beside an nft ruleset, a K3s node with Docker (iptables 1.8.4), RHEL 7's ip6tables-save without -c.

Legacy rules are read only where the namespace already has legacy tables (/proc/net/ip_tables_names lists
one), so reading never makes the kernel load a module; iptables-nft's iptables-save is never run for rules."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.dropscope.drops.plugins.module_utils.snapshot import collect_snapshot
from ansible_collections.dropscope.drops.tests.unit.plugins.module_utils.samples import ArgvReader, recorded

NFT = ("nft -a list ruleset", (0, recorded("nft_ruleset.txt"), ""))
NAMES = {"/proc/net/ip_tables_names": "mangle\nraw\nnat\nfilter\n", "/proc/net/ip6_tables_names": "filter\n"}
LEGACY_BINS = {"nft": "/usr/sbin/nft", "iptables-legacy-save": "/usr/sbin/iptables-legacy-save",
               "ip6tables-legacy-save": "/usr/sbin/ip6tables-legacy-save", "iptables-save": "/usr/sbin/iptables-save",
               "ip6tables-save": "/usr/sbin/ip6tables-save"}


class RecordingReader(ArgvReader):
    """An ArgvReader that remembers every command it was asked to run."""

    def __init__(self, *args, **kwargs):
        super(RecordingReader, self).__init__(*args, **kwargs)
        self.commands = []

    def run(self, argv):
        self.commands.append(" ".join(argv))
        return super(RecordingReader, self).run(argv)


def _read(files, bins, outputs):
    """(snapshot, commands run) of a host with only FILES, BINS and OUTPUTS."""
    reader = RecordingReader(files, bins, dict(outputs))
    return collect_snapshot(reader, ethtool=False), reader.commands


def _snapshot_of(files, bins, outputs):
    """The snapshot of `_read` alone."""
    return _read(files, bins, outputs)[0]


def _firewall_errors(snapshot):
    """The errors of the firewall's sources (the fake host has no /proc/net/dev and the like)."""
    return [error for error in snapshot["errors"] if error["source"].startswith(("nft", "iptables", "ip6tables"))]


def test_legacy_and_nft_rules_side_by_side():
    snapshot, commands = _read(NAMES, LEGACY_BINS, [
        NFT,
        ("iptables-legacy-save -c", (0, recorded("iptables_legacy_save_c.txt"), "")),
        ("ip6tables-legacy-save -c", (0, recorded("ip6tables_legacy_save_c.txt"), "")),
    ])
    assert [c for c in commands if "tables" in c] == ["/usr/sbin/iptables-legacy-save -c",
                                                      "/usr/sbin/ip6tables-legacy-save -c"]
    firewall = snapshot["firewall"]
    assert [key for key in firewall if key.startswith("nft ")] == ["nft inet dropscope_lab input #2"]
    assert len([key for key in firewall if key.startswith("iptables ")]) == 26
    assert sorted(key for key in firewall if key.startswith("ip6tables ")) == [
        "ip6tables filter FORWARD policy", "ip6tables filter INPUT #1", "ip6tables filter INPUT #2",
        "ip6tables filter INPUT #3", "ip6tables filter INPUT policy", "ip6tables filter OUTPUT policy"]
    assert len(firewall) == 1 + 26 + 6
    assert firewall["iptables filter INPUT #4"] == {
        "family": "ipv4", "table": "filter", "chain": "INPUT", "position": 4,
        "rule": "-p udp -m udp --dport 8001 -j REJECT --reject-with icmp-port-unreachable", "target": "REJECT",
        "packets": 3, "bytes": 114}
    assert firewall["ip6tables filter INPUT policy"]["packets"] == 3
    assert firewall["nft inet dropscope_lab input #2"]["rule"] == "udp dport 8000 drop"
    assert _firewall_errors(snapshot) == []


def test_no_legacy_tables_in_the_namespace_runs_no_iptables_command():
    for files in ({}, {"/proc/net/ip_tables_names": "", "/proc/net/ip6_tables_names": ""}):
        snapshot, commands = _read(files, LEGACY_BINS, [NFT])
        assert [c for c in commands if "tables" in c] == []
        assert list(snapshot["firewall"]) == ["nft inet dropscope_lab input #2"]
        assert _firewall_errors(snapshot) == []


def test_an_old_distros_iptables_save_is_legacy_and_an_nf_tables_one_is_not_read():
    bins = {"iptables-save": "/sbin/iptables-save"}
    files = {"/proc/net/ip_tables_names": "filter\nnat\nmangle\nraw\n"}
    snapshot, commands = _read(files, bins, [
        ("iptables-save --version", (0, "iptables-save v1.8.4 (legacy)\n", "")),
        ("iptables-save -c", (0, recorded("iptables_save_c_k3s_docker.txt"), "")),
    ])
    assert commands == ["/sbin/iptables-save --version", "/sbin/iptables-save -c"]
    assert len(snapshot["firewall"]) == 60
    assert snapshot["firewall"]["iptables filter KUBE-SERVICES #3"]["packets"] == 0
    assert snapshot["firewall"]["iptables filter KUBE-SERVICES #3"]["target"] == "REJECT"
    assert _firewall_errors(snapshot) == []

    snapshot, commands = _read(files, bins, [("iptables-save --version", (0, "iptables-save v1.8.9 (nf_tables)\n", ""))])
    assert commands == ["/sbin/iptables-save --version"]
    assert (snapshot["firewall"], _firewall_errors(snapshot)) == ({}, [])


def test_output_without_counters_is_an_error_naming_the_command_and_line_and_the_rest_stays():
    snapshot = _snapshot_of(NAMES, LEGACY_BINS, [
        NFT,
        ("iptables-legacy-save -c", (0, recorded("iptables_legacy_save_c.txt"), "")),
        ("ip6tables-legacy-save -c", (0, recorded("ip6tables_save_rhel7_no_counters.txt"), "")),
    ])
    assert _firewall_errors(snapshot) == [{
        "source": "ip6tables-legacy-save -c",
        "error": "ip6tables-save -c: line 26 is not a chain or a counted rule (was -c given?): '-A INPUT -j INPUT_direct'",
    }]
    assert len(snapshot["firewall"]) == 1 + 26
    assert snapshot["firewall"]["iptables filter INPUT #3"]["packets"] == 11


def test_a_failing_save_command_is_recorded():
    snapshot = _snapshot_of({"/proc/net/ip_tables_names": "filter\n"}, LEGACY_BINS, [
        NFT,
        ("iptables-legacy-save -c", (1, "", "iptables-legacy-save v1.8.9 (legacy): Cannot initialize: Permission denied\n")),
    ])
    assert _firewall_errors(snapshot) == [{
        "source": "iptables-legacy-save -c",
        "error": "exit 1: iptables-legacy-save v1.8.9 (legacy): Cannot initialize: Permission denied",
    }]
    assert list(snapshot["firewall"]) == ["nft inet dropscope_lab input #2"]
