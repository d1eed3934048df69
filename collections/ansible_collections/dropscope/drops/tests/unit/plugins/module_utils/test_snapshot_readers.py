# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""collect_snapshot's readers on recorded outputs: tc with and without -j (iproute2 4.14, 4.15, 5.4),
connection tracking (this machine's 6.18 namespace and node_exporter's 4-CPU fixture), `ethtool -i` (read
once per device in a run), and how commands run (as given, no shell expansion)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

import pytest
from ansible_collections.dropscope.drops.plugins.module_utils.snapshot import DeviceMemo, collect_snapshot, run_argv
from ansible_collections.dropscope.drops.tests.unit.plugins.module_utils.samples import ArgvReader, recorded

OPTION_J_UNKNOWN = recorded("tc_qdisc_iproute2_4.14_j_stderr.txt")
# The 11 qdiscs of the iproute2 4.14/4.15/5.4 recordings, in the order tc lists them.
OLD_TC_QDISCS = [
    "lo noqueue 0:", "dh4a mq 1:", "dh4a pfifo_fast 12:", "dh4a pfifo_fast 11:", "dh4d htb 4:", "dh4d bfifo 40:",
    "dh4c tbf 2:", "dh4c pfifo 20:", "dh4f noqueue 0:", "dh4f ingress ffff:", "dh4e tbf 3:",
]


def _snapshot(outputs, files=None, root="/nonexistent-root", ethtool=False, bins=None):
    bins = {"tc": "/usr/sbin/tc", "ethtool": "/usr/sbin/ethtool"} if bins is None else bins
    return collect_snapshot(ArgvReader(files or {}, bins, outputs, root=root), ethtool=ethtool, firewall=False)


def _read_errors(snapshot):
    """The errors of the readers under test (the fake host has no other files: theirs are missing)."""
    return [error for error in snapshot["errors"]
            if error["source"].startswith(("tc ", "ethtool ", "/proc/net/stat/", "/proc/sys/net/netfilter/"))]


def _errors(snapshot, source):
    return [error["error"] for error in snapshot["errors"] if error["source"] == source]


def test_iproute2_4_14_has_no_json_so_every_qdisc_comes_from_the_text():
    snapshot = _snapshot({"tc -s -j qdisc show": (255, "", OPTION_J_UNKNOWN),
                          "tc -s qdisc show": (0, recorded("tc_qdisc_text_iproute2_4.14.txt"), "")})
    assert list(snapshot["qdiscs"]) == OLD_TC_QDISCS
    assert snapshot["qdiscs"]["dh4c tbf 2:"]["dropped"] == 194
    assert snapshot["qdiscs"]["dh4e tbf 3:"]["dropped"] == 198
    assert _errors(snapshot, "tc -s -j qdisc show") == []
    assert _errors(snapshot, "tc -s qdisc show") == [
        "read from the text output (tc -s -j qdisc show gave exit 255: Option \"-j\" is unknown, try \"tc -help\".): "
        + ", ".join(OLD_TC_QDISCS)]


def test_iproute2_4_15_json_keeps_its_valid_entries_and_names_the_seven_from_the_text():
    snapshot = _snapshot({"tc -s -j qdisc show": (0, recorded("tc_qdisc_iproute2_4.15.json"), ""),
                          "tc -s qdisc show": (0, recorded("tc_qdisc_text_iproute2_4.15.txt"), "")})
    assert list(snapshot["qdiscs"]) == OLD_TC_QDISCS
    assert snapshot["qdiscs"]["dh4c pfifo 20:"]["dropped"] == 194
    assert snapshot["qdiscs"]["dh4d htb 4:"]["bytes"] == 90
    (note,) = _errors(snapshot, "tc -s qdisc show")
    assert note.startswith("read from the text output (tc -s -j qdisc show gave tc -s -j qdisc show: output is not JSON")
    assert note.endswith("): dh4a pfifo_fast 12:, dh4a pfifo_fast 11:, dh4d bfifo 40:, dh4c tbf 2:, dh4c pfifo 20:, "
                         "dh4f ingress ffff:, dh4e tbf 3:")


def test_iproute2_5_4_json_loses_only_its_two_tbf_entries_to_the_text():
    snapshot = _snapshot({"tc -s -j qdisc show": (0, recorded("tc_qdisc_iproute2_5.4.json"), ""),
                          "tc -s qdisc show": (0, recorded("tc_qdisc_text_iproute2_5.4.txt"), "")})
    assert list(snapshot["qdiscs"]) == OLD_TC_QDISCS
    assert snapshot["qdiscs"]["dh4e tbf 3:"]["overlimits"] == 199
    (note,) = _errors(snapshot, "tc -s qdisc show")
    assert note.endswith("): dh4c tbf 2:, dh4e tbf 3:")


def test_valid_json_is_read_alone_without_a_note():
    snapshot = _snapshot({"tc -s -j qdisc show": (0, recorded("tc_qdisc.json"), "")})
    assert snapshot["qdiscs"]["dsp-a tbf 8006:"]["dropped"] == 197
    assert _read_errors(snapshot) == []


def test_both_tc_outputs_failing_are_both_recorded():
    snapshot = _snapshot({"tc -s -j qdisc show": (255, "", OPTION_J_UNKNOWN),
                          "tc -s qdisc show": (1, "", "RTNETLINK answers: Operation not permitted\n")})
    assert snapshot["qdiscs"] == {}
    assert _read_errors(snapshot) == [
        {"source": "tc -s -j qdisc show", "error": "exit 255: Option \"-j\" is unknown, try \"tc -help\"."},
        {"source": "tc -s qdisc show", "error": "exit 1: RTNETLINK answers: Operation not permitted"},
    ]


def _conntrack_host(tmp_path, stat, count, maximum, buckets="65536\n"):
    """A host where nf_conntrack is loaded: /proc/net/stat/nf_conntrack exists under the reader's root."""
    (tmp_path / "proc" / "net" / "stat").mkdir(parents=True)
    (tmp_path / "proc" / "net" / "stat" / "nf_conntrack").write_text(stat)
    files = {"/proc/net/stat/nf_conntrack": stat, "/proc/sys/net/netfilter/nf_conntrack_count": count,
             "/proc/sys/net/netfilter/nf_conntrack_max": maximum,
             "/proc/sys/net/netfilter/nf_conntrack_buckets": buckets}
    return _snapshot({}, files=files, root=str(tmp_path), bins={})


def test_conntrack_of_a_6_18_namespace(tmp_path):
    snapshot = _conntrack_host(tmp_path, recorded("nf_conntrack_stat.txt"), recorded("nf_conntrack_count.txt"),
                               recorded("nf_conntrack_max.txt"))
    conntrack = snapshot["conntrack"]
    assert (conntrack["count"], conntrack["max"], conntrack["buckets"]) == (6, 262144, 65536)
    assert conntrack["stat"] == {
        "entries": 6, "clashres": 0, "found": 3, "new": 0, "invalid": 8, "ignore": 0, "delete": 0, "chainlength": 0,
        "insert": 0, "insert_failed": 0, "drop": 0, "early_drop": 0, "icmp_error": 0, "expect_new": 0,
        "expect_create": 0, "expect_delete": 0, "search_restart": 0, "cpus": 2,
    }
    assert _read_errors(snapshot) == []


def test_conntrack_of_node_exporters_4_cpu_fixture(tmp_path):
    snapshot = _conntrack_host(tmp_path, recorded("nf_conntrack_stat_node_exporter.txt"),
                               recorded("nf_conntrack_count_node_exporter.txt"),
                               recorded("nf_conntrack_max_node_exporter.txt"))
    conntrack = snapshot["conntrack"]
    assert (conntrack["count"], conntrack["max"]) == (123, 65536)
    stat = conntrack["stat"]
    # invalid 3 + 2 + 1 + 0x2f; ignore 0x588a + 0x56a4 + 0x58d4 + 0x5688; search_restart 0 + 2 + 1 + 4
    assert (stat["entries"], stat["invalid"], stat["ignore"], stat["search_restart"], stat["searched"], stat["cpus"]) == (
        33, 53, 89738, 7, 0, 4)


def test_conntrack_is_null_where_the_module_is_not_loaded():
    """Nothing is read (the sysctl files are there only with the module; reading the stat file never happens)."""
    files = {"/proc/sys/net/netfilter/nf_conntrack_count": "6\n"}
    snapshot = _snapshot({}, files=files, bins={})
    assert snapshot["conntrack"] is None
    assert _read_errors(snapshot) == []


def test_a_broken_sysctl_is_recorded_and_the_rest_stays(tmp_path):
    snapshot = _conntrack_host(tmp_path, recorded("nf_conntrack_stat.txt"), "six\n", "262144\n")
    assert (snapshot["conntrack"]["count"], snapshot["conntrack"]["max"]) == (None, 262144)
    assert _read_errors(snapshot) == [{"source": "/proc/sys/net/netfilter/nf_conntrack_count",
                                       "error": "/proc/sys/net/netfilter/nf_conntrack_count: not an integer: 'six\\n'"}]


class _CountingReader(ArgvReader):
    """An ArgvReader that remembers the commands it ran."""

    def __init__(self, *args, **kwargs):
        ArgvReader.__init__(self, *args, **kwargs)
        self.commands = []

    def run(self, argv):
        self.commands.append(" ".join([os.path.basename(argv[0])] + list(argv[1:])))
        return ArgvReader.run(self, argv)


def _two_interface_host():
    outputs = {"ethtool -S eth0": (0, recorded("ethtool_virtio_net.txt"), ""),
               "ethtool -i eth0": (0, recorded("ethtool_i_virtio_net.txt"), ""),
               "ethtool -S lo": (94, "", "no stats available\n"),
               "ethtool -i lo": (71, "", "Cannot get driver information: Operation not supported\n")}
    header = "".join(recorded("proc_net_dev.txt").splitlines(True)[:3])  # its header and lo
    files = {"/proc/net/dev": header + "  eth0:  9000 90 0 0 0 0 0 0  8000 80 0 0 0 0 0 0\n",
             "/sys/class/net/eth0/ifindex": "2\n", "/sys/class/net/lo/ifindex": "1\n"}
    reader = _CountingReader(files, {"ethtool": "/usr/sbin/ethtool"}, outputs)
    reader.path = lambda path: "/nonexistent-root" + path  # no /sys/class/net statistics: /proc/net/dev
    return reader


def test_ethtool_i_gives_the_driver_and_lo_none():
    snapshot = collect_snapshot(_two_interface_host(), firewall=False)
    interfaces = snapshot["interfaces"]
    assert interfaces["eth0"]["driver"] == {"driver": "virtio_net", "version": "1.0.0", "firmware_version": None,
                                            "bus_info": "0000:00:03.0"}
    assert interfaces["lo"]["driver"] is None


def test_a_second_reading_of_the_run_reads_only_the_statistics_of_the_same_devices():
    reader = _two_interface_host()
    memo = DeviceMemo()
    before = collect_snapshot(reader, firewall=False, memo=memo)
    assert reader.commands == ["ethtool -S lo", "ethtool -i lo", "ethtool -S eth0", "ethtool -i eth0"]
    del reader.commands[:]
    after = collect_snapshot(reader, firewall=False, memo=memo)
    # The driver info and lo's "no stats" belong to the device: only eth0's statistics are read again.
    assert reader.commands == ["ethtool -S eth0"]
    for name in ("eth0", "lo"):
        assert {key: after["interfaces"][name][key] for key in ("ethtool", "ethtool_status", "driver")} == \
            {key: before["interfaces"][name][key] for key in ("ethtool", "ethtool_status", "driver")}
    assert after["interfaces"]["lo"]["ethtool_status"] == "no stats available"
    # Another device under the same name (a new ifindex) is read in full; without a memo, every reading is.
    reader.files["/sys/class/net/eth0/ifindex"] = "7\n"
    del reader.commands[:]
    collect_snapshot(reader, firewall=False, memo=memo)
    assert reader.commands == ["ethtool -S eth0", "ethtool -i eth0"]
    del reader.commands[:]
    collect_snapshot(reader, firewall=False)
    assert reader.commands == ["ethtool -S lo", "ethtool -i lo", "ethtool -S eth0", "ethtool -i eth0"]


def test_an_ethtool_answer_that_failed_is_asked_again():
    reader = _two_interface_host()
    reader.outputs["ethtool -i eth0"] = (0, "no driver line here\n", "")
    memo = DeviceMemo()
    first = collect_snapshot(reader, firewall=False, memo=memo)
    assert first["interfaces"]["eth0"]["driver"] is None and _errors(first, "ethtool -i eth0")
    del reader.commands[:]
    collect_snapshot(reader, firewall=False, memo=memo)
    assert reader.commands == ["ethtool -S eth0", "ethtool -i eth0"]


def test_commands_run_as_given_without_shell_expansion():
    # An interface may be called "$HOME" or "~root": it is passed as it is, never expanded.
    rc, out, err = run_argv(["printf", "%s|%s", "$HOME", "~root"], {"LC_ALL": "C"})
    assert (rc, out, err) == (0, "$HOME|~root", "")
    rc, out, _err = run_argv(["sh", "-c", 'printf "$LC_ALL"; printf "\\377"'], {"LC_ALL": "C"})
    assert (rc, out) == (0, "C\udcff")
    with pytest.raises(OSError):
        run_argv(["/nonexistent-dir/ethtool", "-S", "eth0"])
