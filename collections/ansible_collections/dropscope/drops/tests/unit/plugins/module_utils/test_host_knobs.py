# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Knob values and socket owners (issue 12): the parsers on recorded samples, and read_knobs on a recorded /proc tree."""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import ast
import doctest
import glob
import os
import re

import pytest
import yaml
from ansible_collections.dropscope.drops.plugins.module_utils import bpftrace_capture as bt
from ansible_collections.dropscope.drops.plugins.module_utils import (
    ethtool_settings,
    proc_net_tcp,
    proc_pid,
    ss_sockets,
    tc_qdisc,
)
from ansible_collections.dropscope.drops.plugins.module_utils.ethtool_settings import (
    parse_ethtool_channels,
    parse_ethtool_rings,
)
from ansible_collections.dropscope.drops.plugins.module_utils.host_knobs import (
    KNOB_SYSCTLS,
    read_knobs,
    read_knobs_safely,
    sysctl_name_problem,
    sysctl_path,
)
from ansible_collections.dropscope.drops.plugins.module_utils.proc_net_tcp import parse_proc_net_tcp_listeners
from ansible_collections.dropscope.drops.plugins.module_utils.proc_pid import cgroup_owner, parse_proc_pid_cgroup
from ansible_collections.dropscope.drops.plugins.module_utils.ss_sockets import parse_ss, ss_filter
from ansible_collections.dropscope.drops.plugins.module_utils.tc_qdisc import (
    parse_tc_qdisc_json,
    parse_tc_qdisc_limits,
)
from ansible_collections.dropscope.drops.tests.unit.plugins.module_utils.samples import FakeReader, recorded


@pytest.mark.parametrize("name, expected", [
    ("ethtool_g_virtio_net.txt", {"rx": 256, "rx_max": 256, "tx": 256, "tx_max": 256}),
    ("ethtool_g_insights_ens3_na.txt", {"rx": 256, "rx_max": 256, "tx": 256, "tx_max": 256}),
    ("ethtool_g_insights_eth2_zero.txt", {"rx": 200, "rx_max": 2047, "rx_mini": 0, "rx_mini_max": 0, "rx_jumbo": 0,
                                          "rx_jumbo_max": 0, "tx": 511, "tx_max": 511}),
    ("ethtool_g_insights_pri_mini_jumbo.txt", {"rx": 1024, "rx_max": 4096, "rx_mini": 128, "rx_mini_max": 2048,
                                               "rx_jumbo": 512, "rx_jumbo_max": 4096, "tx": 512, "tx_max": 4096}),
])
def test_rings(name, expected):
    assert parse_ethtool_rings(recorded(name)) == expected


@pytest.mark.parametrize("name, expected", [
    ("ethtool_l_virtio_net.txt", {"combined": 1, "combined_max": 1}),
    ("ethtool_l_veth.txt", {"rx": 1, "rx_max": 2, "tx": 1, "tx_max": 2}),
])
def test_channels(name, expected):
    assert parse_ethtool_channels(recorded(name)) == expected


def test_ethtool_errors_name_the_source():
    with pytest.raises(ValueError, match=r"ethtool -g eth0: no 'Pre-set maximums'"):
        parse_ethtool_rings("netlink error: Operation not supported\n", "ethtool -g eth0")
    with pytest.raises(ValueError, match=r"ethtool -l: line 3: 'lots' is not a number or n/a"):
        parse_ethtool_channels("Channel parameters for x:\nPre-set maximums:\nRX: lots\n")


# ------------------------------------------------------------------------------------------ ss, /proc/net/tcp

def test_ss_udp_and_tcp_listeners():
    udp = parse_ss(recorded("ss_udp_skmem.txt"))
    assert [(s["local_address"], s["local_port"], s["rcvbuf"], s["recv_q"], s["drops"], s["inode"]) for s in udp] == [
        ("127.0.0.1", 39001, 2304, 1280, 49, 657690), ("::1", 39002, 212992, 0, 0, 657691)]
    tcp = parse_ss(recorded("ss_tcp_listen_skmem.txt"))
    assert [(s["state"], s["local_address"], s["local_port"], s["recv_q"], s["send_q"], s["rcvbuf"]) for s in tcp] == [
        ("LISTEN", "127.0.0.1", 39003, 3, 7, 131072), ("LISTEN", "*", 39004, 0, 128, 131072)]


def test_ss_with_netid_and_uid():
    text = ("Netid State  Recv-Q Send-Q Local Address:Port  Peer Address:PortProcess\n"
            "udp   UNCONN 0      0      0.0.0.0%eth0:68        0.0.0.0:*    uid:101 ino:1234 sk:1 <->\n")
    (entry,) = parse_ss(text)
    assert (entry["netid"], entry["local_address"], entry["local_port"], entry["uid"], entry["inode"],
            entry["rcvbuf"]) == ("udp", "0.0.0.0", 68, 101, 1234, None)  # noqa: S104
    with pytest.raises(ValueError, match="ss: line 1 is not a socket line"):
        parse_ss("garbage\n")


def test_ss_filter_takes_integers_only():
    assert ss_filter([9000]) == ["(", "sport", "=", ":9000", ")"]
    for bad in (["9000 or 1"], [0], [70000], [True]):
        with pytest.raises(ValueError):
            ss_filter(bad)


def test_proc_net_tcp_listeners():
    assert parse_proc_net_tcp_listeners(recorded("proc_net_tcp.txt"), byteorder="little") == [
        {"proto": "tcp", "local_address": "127.0.0.1", "local_port": 39003, "inode": 667400, "uid": 0, "accept_queue": 2}]
    assert parse_proc_net_tcp_listeners(recorded("proc_net_tcp6.txt"), "tcp6", byteorder="little") == [
        {"proto": "tcp6", "local_address": "::1", "local_port": 39004, "inode": 667403, "uid": 0, "accept_queue": 0}]


def test_tc_qdisc_limits():
    assert parse_tc_qdisc_limits(recorded("tc_qdisc_limits.json")) == {
        "d1 tbf 801c:": {"kind": "tbf", "limit": None}, "d0 noqueue 0:": {"kind": "noqueue", "limit": None},
        "d3 noqueue 0:": {"kind": "noqueue", "limit": None}, "d2 pfifo 801d:": {"kind": "pfifo", "limit": 77}}
    # The keys are the snapshot's: mq children sharing kind and handle get their parent.
    assert sorted(parse_tc_qdisc_limits(recorded("tc_qdisc.json"))) == sorted(parse_tc_qdisc_json(recorded("tc_qdisc.json")))


# ------------------------------------------------------------------------------------------ cgroups

CONTAINERS = [
    ("containerd", "b4d6d161c62525d726fa394b27df30e14f8ea5646313ada576b390de70cfc8cc",
     {"uid": "f6f2d169-f2ae-4afa-95ed-06ff2ed6b288", "qos": "burstable"}),
    (None, "f52a212505a606972cf8614c3cb856539e71b77ecae33436c5ac442232fbacf8",
     {"uid": "05e102bf-8744-4942-a241-9b6f07983a53", "qos": "besteffort"}),
    ("cri-o", "a4d6b686848a610472a2eed3ae20d4d64b6b4819feb9fdfc7fd7854deaf59ef3",
     {"uid": "897277d4-5e6f-4999-a976-b8340e8d075e", "qos": "besteffort"}),
    ("containerd", "bacb920470900725e0aa7d914fee5eb0854315448b024b6b8420ad8429c607ba",
     {"uid": "4c9f1974-5c46-44c2-b42f-3bbf0e98eef9", "qos": "besteffort"}),
    None,  # a desktop terminal: unit vte-spawn-….scope
    None,  # a session scope
    ("docker", "b1eba9dfaeba29d8b80532a574a03ea3cac29384327f339c26da13649e2120df", None),
]


def test_recorded_cgroup_lines():
    lines = recorded("proc_pid_cgroup_container_lines.txt").splitlines()
    assert len(lines) == len(CONTAINERS)
    for index, line in enumerate(lines):
        expected = CONTAINERS[index]
        owner = cgroup_owner(parse_proc_pid_cgroup(line + "\n"))
        if expected is None:
            assert owner["container"] is None and owner["pod"] is None and owner["unit"].endswith(".scope"), line
        else:
            runtime, container_id, pod = expected
            assert owner == {"unit": None, "container": {"runtime": runtime, "id": container_id}, "pod": pod}, line
    assert parse_proc_pid_cgroup(recorded("proc_pid_cgroup_v1_hybrid.txt")) == "/process_api/54b378996a8887f3addf8311d3059002"


def test_unknown_cgroup_shapes_give_only_the_path():
    for path in ("/", "/weird/thing", "/lxc.payload.web/x", "/machine.slice/machine-qemu\\x2d1.scope/libvirt"):
        owner = cgroup_owner(path)
        assert owner["container"] is None and owner["pod"] is None
    assert parse_proc_pid_cgroup("") == "/"
    assert parse_proc_pid_cgroup("garbage\n0::/\n") == "/"


# ------------------------------------------------------------------------------------------ bpftrace peers

def test_peers_map_of_a_recorded_run():
    lines = recorded("bpftrace_json_peers.txt").splitlines()
    parsed = bt.parse_bpftrace_json(lines)
    assert sorted((e["family"], e["count"]) for e in parsed["peers"]) == [(4, 5), (6, 3)]
    peers = bt.peer_groups(parsed["peers"], {3: "NO_SOCKET"}, byteorder="little")
    assert peers["groups"] == [{"reason": "NO_SOCKET", "src": "127.0.0.1", "dst": "127.0.0.1", "count": 5},
                               {"reason": "NO_SOCKET", "src": "::1", "dst": "::1", "count": 3}]
    assert peers["status"] == "ok" and peers["other"] == {}


def test_peers_top_ten_per_reason_rest_summed_and_prefixes():
    entries = [{"reason_id": 12, "family": 4, "src": (0x0A000000 + (i << 24) + 10, 0), "dst": (0x0100007F, 0),
                "count": 100 - i} for i in range(13)]
    peers = bt.peer_groups(entries, {12: "NETFILTER_DROP"}, byteorder="little")
    assert [g["count"] for g in peers["groups"]] == list(range(100, 90, -1))
    assert peers["groups"][0]["src"] == "10.0.0.10"
    assert peers["other"] == {"NETFILTER_DROP": {"count": 90 + 89 + 88, "pairs": 3}}
    mask4, mask6 = bt.peer_masks("prefix", "little")
    assert bt.peer_address(4, (0x0A02010A & mask4, 0), "little") == "10.1.2.0"
    assert bt.peer_address(6, (0xB80D0120, 0x1234 & mask6), "little") == "2001:db8::"


def test_program_peers_modes():
    assert "@peers" not in bt.program_text(0, 0) and "@peers" not in bt.program_text(0, 0, lean=True, peers="exact")
    text = bt.program_text(0, 0, peers="prefix")
    assert "@peers" in text and "PEER_MASK" not in text and "PEERS" not in text
    with pytest.raises(ValueError, match="peers must be one of"):
        bt.program_text(0, 0, peers="all")


# ------------------------------------------------------------------------------------------ the knowledge's sysctls

def _knowledge_sysctls():
    here = os.path.dirname(os.path.abspath(__file__))
    while not os.path.exists(os.path.join(here, "pyproject.toml")):
        here = os.path.dirname(here)
    names = set()
    for path in glob.glob(os.path.join(here, "report", "dropscope", "knowledge", "*.yml")):
        def walk(node):
            if isinstance(node, dict):
                for key, value in node.items():
                    if key == "knobs" and isinstance(value, list):
                        for knob in value:
                            match = re.match(r"^((?:net|vm|kernel)\.[A-Za-z0-9_.*/-]+)", str(knob))
                            if match:
                                names.add(match.group(1).rstrip("."))
                    else:
                        walk(value)
            elif isinstance(node, list):
                for item in node:
                    walk(item)
        with open(path, encoding="utf-8") as handle:
            walk(yaml.safe_load(handle))
    return names


def test_every_sysctl_the_advice_names_is_read():
    named = _knowledge_sysctls()
    assert "net.core.rmem_max" in named and "net.ipv4.conf.*.rp_filter" in named
    assert sorted(named - set(KNOB_SYSCTLS)) == []


def test_sysctl_names_and_paths():
    assert sysctl_path("net.ipv4.conf.eth0/100.rp_filter") == "/proc/sys/net/ipv4/conf/eth0.100/rp_filter"
    assert all(sysctl_name_problem(name) is None for name in KNOB_SYSCTLS)
    for bad in ("../etc/shadow", "net.core/../../etc.x", "net", "net..x", "net.*x.y", "net.core.rmem max", 3):
        assert sysctl_name_problem(bad), bad


# ------------------------------------------------------------------------------------------ read_knobs on a recorded tree

def _netns(root, name="own"):
    """A file standing for a network namespace (its inode is the namespace's); processes link to it."""
    path = os.path.join(root, "netns-" + name)
    if not os.path.exists(path):
        with open(path, "w") as handle:
            handle.write("")
    return path


def _proc_tree(root, pid, comm, inodes, cgroup="0::/system.slice/udp-rx.service\n", uid=1000, netns="own"):
    """/proc/PID of a process holding socket INODES (fd links as the kernel writes them) in namespace NETNS."""
    base = os.path.join(root, "proc", str(pid))
    os.makedirs(os.path.join(base, "fd"))
    os.makedirs(os.path.join(base, "ns"))
    os.link(_netns(root, netns), os.path.join(base, "ns", "net"))
    with open(os.path.join(base, "comm"), "wb") as handle:
        handle.write(comm + b"\n")
    for number, inode in enumerate(inodes, 3):
        os.symlink("socket:[%d]" % inode, os.path.join(base, "fd", str(number)))
    os.symlink("/dev/null", os.path.join(base, "fd", "0"))
    return {"/proc/%d/status" % pid: "Name:\tx\nUid:\t%d\t%d\t%d\t%d\n" % (uid, uid, uid, uid),
            "/proc/%d/cgroup" % pid: cgroup}


def _snapshot(sockets, root=None):
    inode = os.stat(_netns(root)).st_ino if root else 4026531840
    return {"system": {"netns_inode": inode}, "interfaces": {"lo": {}}, "sockets": sockets}


def test_read_knobs_names_owner_buffer_and_values(tmp_path):
    files = {"/proc/sys/net/core/rmem_max": "212992\n", "/proc/sys/net/ipv4/udp_mem": "45318\t60424\t90636\n",
             "/proc/net/udp": recorded("proc_net_udp.txt"), "/proc/net/udp6": recorded("proc_net_udp6.txt")}
    files.update(_proc_tree(str(tmp_path), 4242, b'"$()<script>\n', [35361]))
    files.update(_proc_tree(str(tmp_path), 4243, b"worker", [35361]))
    ss_out = recorded("ss_udp_skmem.txt").replace("39001", "9000").replace("657690", "35361")
    reader = FakeReader(files, {"ss": "/usr/bin/ss"}, {"ss": (0, ss_out, "")}, root=str(tmp_path))
    capture = {"drops": [{"reason": "SOCKET_RCVBUFF", "port": 9000, "l4": "udp", "count": 40}]}
    sock = {"proto": "udp", "local_address": "127.0.0.1", "local_port": 9000, "inode": 35361, "drops": 48}
    knobs = read_knobs(reader, capture, _snapshot([sock], str(tmp_path)))
    assert knobs["sysctl"] == {"net.core.rmem_max": "212992", "net.ipv4.udp_mem": "45318 60424 90636"}
    (entry,) = knobs["sockets"]
    assert (entry["local_port"], entry["rcvbuf"], entry["rx_queue"], entry["drops"], entry["why"]) == (
        9000, 2304, 1280, 48, ["drops", "SOCKET_RCVBUFF"])
    assert [(o["pid"], o["comm"], o["uid"], o["unit"]) for o in entry["owners"]] == [
        (4242, '"$()<script>\n', 1000, "udp-rx.service"), (4243, "worker", 1000, "udp-rx.service")]
    assert entry["owner_note"] is None and knobs["errors"] == []


def test_owner_not_found_and_exited_processes(tmp_path):
    files = {"/proc/net/udp": recorded("proc_net_udp.txt")}
    _proc_tree(str(tmp_path), 77, b"gone", [35361])
    os.remove(os.path.join(str(tmp_path), "proc", "77", "comm"))  # exited between the fd scan and the read
    reader = FakeReader(files, {}, {}, root=str(tmp_path))
    sock = {"proto": "udp", "local_address": "127.0.0.1", "local_port": 9000, "inode": 35361, "drops": 48}
    (entry,) = read_knobs(reader, None, _snapshot([sock], str(tmp_path)))["sockets"]
    assert entry["owners"] == [] and entry["rcvbuf"] is None
    assert entry["owner_note"].startswith("owner not found: no process holds socket inode 35361")


def test_no_socket_ports_look_for_listeners_elsewhere(tmp_path):
    files = {"/proc/net/udp": recorded("proc_net_udp.txt")}
    # PID 90 lives in another network namespace and has 127.0.0.1:9000 (the same recorded table here).
    files.update(_proc_tree(str(tmp_path), 90, b"dnsd", [35361], netns="other"))
    files["/proc/90/net/udp"] = recorded("proc_net_udp.txt")
    reader = FakeReader(files, {}, {}, root=str(tmp_path))
    capture = {"drops": [{"reason": "NO_SOCKET", "port": 9000, "l4": "udp", "count": 300},
                         {"reason": "NO_SOCKET", "port": 7, "l4": "udp", "count": 1}]}
    listeners = read_knobs(reader, capture, _snapshot([], str(tmp_path)))["listeners"]
    assert [listener["port"] for listener in listeners] == [9000, 7]
    assert [(h["local_address"], [o["comm"] for o in h["owners"]]) for h in listeners[0]["here"]] == [
        ("127.0.0.1", ["dnsd"])]
    (other,) = listeners[0]["other_netns"]
    assert (other["local_address"], other["inode"], [o["pid"] for o in other["owners"]]) == ("127.0.0.1", 35361, [90])
    assert listeners[1]["here"] == [] and listeners[1]["other_netns"] == []


def test_read_knobs_never_raises(tmp_path):
    class Broken(FakeReader):
        def path(self, path):
            raise RuntimeError("boom")
    knobs = read_knobs_safely(Broken({}, {}, {}), None, _snapshot([]))
    assert knobs["errors"] == [{"source": "knobs", "error": "RuntimeError: boom"}]


# ------------------------------------------------------------------------------------------ docstring samples

def _call_literal(doc, name):
    """The first argument of the first call of `name` in the docstring's examples."""
    for example in doctest.DocTestParser().get_examples(doc):
        for node in ast.walk(ast.parse(example.source)):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == name:
                return ast.literal_eval(node.args[0])
    raise AssertionError("no call of %s in the examples" % name)


def _lines(text):
    return [line.rstrip() for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("module, function, files", [
    (ethtool_settings, "parse_ethtool_rings", ["ethtool_g_virtio_net.txt"]),
    (ethtool_settings, "parse_ethtool_channels", ["ethtool_l_veth.txt"]),
    (ss_sockets, "parse_ss", ["ss_udp_skmem.txt"]),
    (proc_net_tcp, "parse_proc_net_tcp_listeners", ["proc_net_tcp.txt"]),
    (proc_pid, "parse_proc_pid_cgroup", ["proc_pid_cgroup_container_lines.txt", "proc_pid_cgroup_v1_hybrid.txt"]),
])
def test_docstring_samples_are_recorded(module, function, files):
    """Every line of the sample is a line of the recorded files (trailing blanks aside)."""
    sample = _lines(_call_literal(getattr(module, function).__doc__, function))
    recorded_lines = set(line for name in files for line in _lines(recorded(name)))
    assert sample and [line for line in sample if line not in recorded_lines] == []


def test_tc_limits_docstring_sample_is_recorded():
    sample = _call_literal(tc_qdisc.parse_tc_qdisc_limits.__doc__, "parse_tc_qdisc_limits")
    assert "".join(line.strip() for line in sample.splitlines()) == recorded("tc_qdisc_limits.json").strip()


def test_listen_overflow_names_the_fullest_listeners(tmp_path):
    files = {}
    files.update(_proc_tree(str(tmp_path), 500, b"nginx", [657693]))
    reader = FakeReader(files, {"ss": "/usr/bin/ss"}, {"ss": (0, recorded("ss_tcp_listen_skmem.txt"), "")},
                        root=str(tmp_path))
    before = {"protocols": {"TcpExtListenOverflows": 5, "TcpExtListenDrops": 5}}
    after = dict(_snapshot([], str(tmp_path)), protocols={"TcpExtListenOverflows": 9, "TcpExtListenDrops": 5})
    sockets = read_knobs(reader, None, after, before=before)["sockets"]
    assert [(s["local_port"], s["backlog"], s["backlog_max"], s["why"]) for s in sockets] == [
        (39003, 3, 7, ["TcpExtListenOverflows"]), (39004, 0, 128, ["TcpExtListenOverflows"])]
    assert [o["comm"] for o in sockets[0]["owners"]] == ["nginx"] and sockets[1]["owners"] == []
    assert read_knobs(reader, None, after, before=after)["sockets"] == []  # nothing grew: none listed


def test_owners_are_looked_for_in_the_sockets_namespaces_only(tmp_path):
    files = {"/proc/net/udp": recorded("proc_net_udp.txt")}
    files.update(_proc_tree(str(tmp_path), 31, b"inside", [35361]))
    files.update(_proc_tree(str(tmp_path), 32, b"elsewhere", [35361], netns="container"))
    reader = FakeReader(files, {}, {}, root=str(tmp_path))
    sock = {"proto": "udp", "local_address": "127.0.0.1", "local_port": 9000, "inode": 35361, "drops": 48}
    (entry,) = read_knobs(reader, None, _snapshot([sock], str(tmp_path)))["sockets"]
    assert [owner["comm"] for owner in entry["owners"]] == ["inside"]
