"""Who (issue 12 items 1-3 in the report): findings name the socket, its owner, the knob values and the senders.

Host files are written by the collection's run_record from a drop_capture result that carries `knobs`
(what the module reads after its capture) and a capture with `peers` (bpftrace's senders map).
"""

from __future__ import annotations

import json
from pathlib import Path

from ansible_collections.dropscope.drops.plugins.module_utils import run_record
from dropscope.build import build_report
from dropscope.render_html import render_html
from dropscope_lab.synthetic import (
    advance,
    drop,
    make_capabilities,
    make_capture,
    make_snapshot,
    make_socket,
    write_run,
)

HOSTILE = '"$()<script>\n'


def _owner(pid: int, comm: str, **more: object) -> dict:
    owner = {"pid": pid, "comm": comm, "uid": 1000, "user": "app", "cgroup": "/system.slice/udp-rx.service",
             "unit": "udp-rx.service", "container": None, "pod": None}
    owner.update(more)
    return owner


def _knobs(sockets: list, listeners: list | None = None) -> dict:
    return {"schema_version": 1,
            "sysctl": {"net.core.rmem_max": "212992", "net.core.rmem_default": "212992", "net.ipv4.udp_mem": "1 2 3",
                       "net.core.somaxconn": "4096", "net.ipv4.conf.all.rp_filter": "0"},
            "interfaces": {"eth0": {"rings": {"rx": 256, "rx_max": 4096, "tx": 256, "tx_max": 4096}, "channels": None,
                                    "txqueuelen": 1000, "qdiscs": {}}},
            "sockets": sockets, "listeners": listeners or [], "errors": []}  # fmt: skip


def _socket(port: int, owners: list, note: str | None = None) -> dict:
    return {"proto": "udp", "local_address": "198.18.3.4", "local_port": port, "inode": 41, "drops": 290,
            "state": "UNCONN", "rcvbuf": 2304, "rx_queue": 2304, "backlog": None, "backlog_max": None, "uid": 1000,
            "why": ["drops", "SOCKET_RCVBUFF"], "owners": owners, "owners_more": 0, "owner_note": note}  # fmt: skip


def _host(name: str, drops: list, knobs: dict | None, peers: dict | None = None, **increases: object) -> dict:
    """A host document through run_record, from a drop_capture result with KNOBS and a capture with PEERS."""
    before = make_snapshot(name, sockets=[make_socket("udp", "198.18.3.4", 9100, 0, inode=41)])
    after = advance(before, 5.0, **increases)
    capture = make_capture(before["system"]["boot_id"], drops, backend="bpftrace", scope="netns")
    if peers is not None:
        capture["peers"] = peers
    result = {"capture": capture, "before": before, "after": after, "capabilities": make_capabilities(),
              "changed": False}
    if knobs is not None:
        result["knobs"] = knobs
    return run_record.host_record(name, {"capture": result})


def _finding(report: dict, host: str, key: str) -> dict:
    entry = next(h for h in report["hosts"] if h["host"] == host)
    return next(f for f in entry["findings"] if f["key"] == key)


def _rcvbuf_host(name: str, knobs: dict | None, peers: dict | None = None) -> dict:
    host = _host(name, [drop("SOCKET_RCVBUFF", "__udp_enqueue_schedule_skb", 290) | {"port": 9100}], knobs, peers,
                 protocols={"UdpRcvbufErrors": 290, "UdpInErrors": 290})
    host["after"]["sockets"][0]["drops"] = 290
    return host


def test_receive_buffer_finding_names_socket_owner_buffer_and_rmem(tmp_path: Path) -> None:
    peers = {"status": "ok", "mode": "exact", "why": None, "top": 10, "truncated": False, "other": {},
             "groups": [{"reason": "SOCKET_RCVBUFF", "src": "198.18.3.1", "dst": "198.18.3.4", "count": 290}]}
    knobs = _knobs([_socket(9100, [_owner(4242, HOSTILE), _owner(4243, "worker")])])
    report = build_report(write_run(tmp_path / "run", [_rcvbuf_host("h3", knobs, peers)]))
    finding = _finding(report, "h3", "SOCKET_RCVBUFF")
    who = finding["who"]
    assert [s["local_port"] for s in who["sockets"]] == [9100]
    assert [o["comm"] for o in who["sockets"][0]["owners"]] == [HOSTILE, "worker"]
    assert who["values"] == {"net.core.rmem_default": "212992", "net.core.rmem_max": "212992",
                             "net.ipv4.udp_mem": "1 2 3"}
    assert who["peers"]["senders"] == [{"address": "198.18.3.1", "count": 290}]
    assert who["lines"] == [
        f"socket udp 198.18.3.4:9100 (receive buffer 2,304 B, 2,304 B queued) held by {HOSTILE} (pid 4242, user app, "
        "unit udp-rx.service), worker (pid 4243, user app, unit udp-rx.service)",
        "top senders: 198.18.3.1 (290)",
        "now net.core.rmem_default = 212992, net.core.rmem_max = 212992, net.ipv4.udp_mem = 1 2 3",
    ]
    assert finding["explanation"].endswith("; " + "; ".join(who["lines"]))
    # report.json keeps the sysctls the host's findings name, not all the host read
    host = report["hosts"][0]
    assert host["knobs"]["sysctl"] == {"net.core.rmem_max": "212992", "net.core.rmem_default": "212992",
                                       "net.ipv4.udp_mem": "1 2 3"}
    # JSON round trip is exact
    again = json.loads(json.dumps(report))["hosts"][0]["findings"][0]
    assert again["who"]["sockets"][0]["owners"][0]["comm"] == HOSTILE


def test_owner_not_found_says_so_and_nothing_fails(tmp_path: Path) -> None:
    note = "owner not found: no process holds socket inode 41 (it exited, or the socket is held by the kernel …)"
    report = build_report(write_run(tmp_path / "run", [_rcvbuf_host("h3", _knobs([_socket(9100, [], note)]))]))
    finding = _finding(report, "h3", "SOCKET_RCVBUFF")
    assert finding["who"]["lines"][0] == f"socket udp 198.18.3.4:9100 (receive buffer 2,304 B, 2,304 B queued) {note}"


def test_a_host_without_knobs_or_peers_keeps_its_findings(tmp_path: Path) -> None:
    report = build_report(write_run(tmp_path / "run", [_rcvbuf_host("old", None)]))
    finding = _finding(report, "old", "SOCKET_RCVBUFF")
    assert report["hosts"][0]["knobs"] is None
    assert finding["who"] == {"sockets": [], "listeners": [], "peers": None, "values": {}, "lines": []}
    assert "held by" not in finding["explanation"]


def test_peers_off_under_the_rate_guard_is_said(tmp_path: Path) -> None:
    peers = {"status": "off", "mode": "exact", "top": 10, "groups": [], "other": {}, "truncated": False,
             "why": "rate guard: the lean program reads no packet headers, so no addresses"}
    host = _host("busy", [drop("NETFILTER_DROP", "nft_do_chain", 900)], None, peers)
    finding = _finding(build_report(write_run(tmp_path / "run", [host])), "busy", "NETFILTER_DROP")
    assert finding["who"]["peers"]["status"] == "off"
    assert "senders not recorded: rate guard: the lean program reads no packet headers" in finding["explanation"]


def test_no_socket_names_the_listener_in_another_namespace(tmp_path: Path) -> None:
    listener = {"reason": "NO_SOCKET", "port": 8000, "note": None, "here": [
        {"proto": "udp", "local_address": "127.0.0.1", "inode": 7, "owners": [_owner(12, "dnsd")]}],
        "other_netns": [{"netns_inode": 4026532300, "proto": "udp", "local_address": "0.0.0.0", "inode": 9,
                         "owners": [_owner(13, "dnsd", unit=None,
                                           container={"runtime": "docker", "id": "b1eba9dfaeba" * 5 + "abcd"})]}]}
    host = _host("h2", [drop("NO_SOCKET", "__udp4_lib_rcv", 300) | {"port": 8000}], _knobs([], [listener]),
                 protocols={"UdpNoPorts": 300})
    finding = _finding(build_report(write_run(tmp_path / "run", [host])), "h2", "NO_SOCKET")
    assert finding["who"]["listeners"] == [listener]
    assert finding["who"]["lines"] == [
        "port 8000 is bound here only on udp 127.0.0.1 by dnsd (pid 12, user app, unit udp-rx.service); port 8000 is "
        "bound in another network namespace: udp 0.0.0.0 (netns 4026532300) by dnsd (pid 13, user app, docker "
        "container b1eba9dfaeba)"]


def test_the_page_lists_who_as_text(tmp_path: Path) -> None:
    knobs = _knobs([_socket(9100, [_owner(4242, HOSTILE)])])
    report = build_report(write_run(tmp_path / "run", [_rcvbuf_host("h3", knobs)]))
    page = render_html(report)
    assert "<script>\\n" not in page.split('type="application/json"')[0]  # only inside the JSON data
    data = page.split('type="application/json"', 1)[1]
    assert "\\u003cscript>" in data or "\\u003cscript\\u003e" in data  # escaped in the embedded JSON


def test_nic_and_qdisc_findings_show_rings_txqueuelen_and_limits(tmp_path: Path) -> None:
    from dropscope_lab.synthetic import make_interface, make_qdisc

    key, qdisc = make_qdisc("eth0", "pfifo", "8001:")
    knobs = _knobs([])
    knobs["interfaces"]["eth0"]["qdiscs"] = {key: {"kind": "pfifo", "limit": 77}}
    before = make_snapshot("nic", interfaces={"eth0": make_interface()}, qdiscs={key: qdisc})
    after = advance(before, 5.0)
    after["interfaces"]["eth0"]["statistics"]["rx_missed_errors"] = 5000
    after["qdiscs"][key]["dropped"] = 300
    capture = make_capture(before["system"]["boot_id"], [], backend="bpftrace", scope="netns")
    result = {"capture": capture, "before": before, "after": after, "capabilities": make_capabilities(),
              "changed": False, "knobs": knobs}
    report = build_report(write_run(tmp_path / "run", [run_record.host_record("nic", {"capture": result})]))
    values = {}
    for finding in report["hosts"][0]["findings"]:
        values.update(finding["who"]["values"])
    assert values["eth0 rings"] == "rx 256 of 4096, tx 256 of 4096"
    assert values[f"{key} limit"] == "77"
    assert values["eth0 txqueuelen"] == "1000"


def test_listen_overflow_names_the_fullest_listener(tmp_path: Path) -> None:
    listener = {"proto": "tcp", "local_address": "0.0.0.0", "local_port": 443, "inode": 77, "drops": None,
                "state": "LISTEN", "rcvbuf": 131072, "rx_queue": None, "backlog": 128, "backlog_max": 128, "uid": 33,
                "why": ["TcpExtListenOverflows"], "owners": [_owner(900, "nginx", user="www-data", uid=33)],
                "owners_more": 3, "owner_note": None}  # fmt: skip
    host = _host("web", [], _knobs([listener]), protocols={"TcpExtListenOverflows": 50, "TcpExtListenDrops": 50})
    report = build_report(write_run(tmp_path / "run", [host]))
    finding = next(f for f in report["hosts"][0]["findings"] if f["who"]["sockets"])
    assert finding["who"]["lines"][0] == (
        "socket tcp 0.0.0.0:443 (receive buffer 131,072 B, accept queue 128 of 128) held by nginx (pid 900, user "
        "www-data, unit udp-rx.service) and 3 more")
    assert finding["who"]["values"]["net.core.somaxconn"] == "4096"


def test_malformed_knobs_and_peers_are_left_out(tmp_path: Path) -> None:
    knobs = {"sysctl": ["net.core.rmem_max"], "sockets": "x", "listeners": [1, None], "interfaces": []}
    peers = {"status": "ok", "groups": [1, {"reason": "SOCKET_RCVBUFF"}], "other": {}}
    report = build_report(write_run(tmp_path / "run", [_rcvbuf_host("odd", knobs, peers)]))
    finding = _finding(report, "odd", "SOCKET_RCVBUFF")
    assert finding["severity"] == "problem" and finding["who"]["sockets"] == []
    assert finding["who"]["peers"]["senders"] == []
