"""`inject`: make a lab host drop an exact number of packets in a known way.

Each scenario is a drop recipe whose kfree_skb reason, location and counters are known: an nft
`udp dport N counter drop` rule (NETFILTER_DROP at nft_do_chain; only the rule's counter moves), datagrams
to a closed UDP port (NO_SOCKET at __udp4_lib_rcv; Udp NoPorts), a receiver with a tiny SO_RCVBUF that
never reads (SOCKET_RCVBUFF; Udp RcvbufErrors and InErrors, the socket's drops), a tbf qdisc that
overflows on transmit (QDISC_DROP; the qdisc's dropped counter) and an iptables-legacy
`-p udp --dport N -j DROP` rule (NETFILTER_DROP at nf_hook_slow; the rule's counter).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dropscope_lab
from dropscope_lab import system, traffic
from dropscope_lab.model import Host, Lab, LabError

NFT_TABLE = "dropscope_lab"
DEFAULT_PORTS = {"udp-firewall": 8000, "udp-noport": 9000, "udp-rcvbuf": 9100, "qdisc-tx": 0, "iptables-legacy": 8000}
TBF = ["tbf", "rate", "1mbit", "burst", "1600", "limit", "1600"]
QDISC_PAYLOAD = 1000
RECEIVER_LIFETIME = 600.0
MAX_PACKETS = 100_000

Result = dict[str, Any]


TRAFFIC_MODULE = "dropscope_lab.traffic"  # run inside a host's netns as `python -m dropscope_lab.traffic`


def _traffic_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", TRAFFIC_MODULE, *args]


def _traffic_env() -> dict[str, str]:
    """Environment that lets the helper import dropscope_lab (a development package, never installed)."""
    env = dict(os.environ)
    root = str(Path(dropscope_lab.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


# ------------------------------------------------------------------------------------ reading state

def read_snmp(netns: str) -> dict[str, int]:
    """/proc/net/snmp of NETNS as {"Udp.NoPorts": n, ...}."""
    lines = system.run(system.in_netns(netns, ["cat", "/proc/net/snmp"])).stdout.splitlines()
    counters: dict[str, int] = {}
    for head, values in zip(lines[::2], lines[1::2], strict=False):
        proto, names = head.split(":", 1)
        for key, value in zip(names.split(), values.split(":", 1)[1].split(), strict=True):
            counters[f"{proto}.{key}"] = int(value)
    return counters


def udp_sockets(netns: str) -> list[dict[str, int | str]]:
    """UDP sockets of NETNS from /proc/net/udp: local address/port, rx_queue bytes, drops."""
    lines = system.run(system.in_netns(netns, ["cat", "/proc/net/udp"])).stdout.splitlines()[1:]
    socks = []
    for line in lines:
        f = line.split()
        addr_hex, port_hex = f[1].split(":")
        socks.append({
            "address": socket.inet_ntoa(bytes.fromhex(addr_hex)[::-1]),
            "port": int(port_hex, 16),
            "rx_queue": int(f[4].split(":")[1], 16),
            "inode": int(f[9]),
            "drops": int(f[12]),
        })
    return socks


def nft_rules(netns: str) -> list[dict[str, Any]]:
    """Rules of our nft table in NETNS ([] if it does not exist)."""
    proc = system.run(system.in_netns(netns, ["nft", "-j", "list", "table", "inet", NFT_TABLE]), check=False)
    if proc.returncode != 0:
        return []
    return [item["rule"] for item in json.loads(proc.stdout)["nftables"] if "rule" in item]


def udp_drop_rule(netns: str, port: int) -> dict[str, Any] | None:
    """Our `udp dport PORT counter drop` rule in NETNS, if present."""
    for rule in nft_rules(netns):
        exprs = rule.get("expr", [])
        match = any(e.get("match", {}).get("left", {}).get("payload") == {"protocol": "udp", "field": "dport"}
                    and e["match"].get("right") == port for e in exprs)
        if match and any("drop" in e for e in exprs) and any("counter" in e for e in exprs):
            return rule
    return None


def rule_packets(rule: dict[str, Any]) -> int:
    return next(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)


def root_qdisc(netns: str, dev: str = "eth0") -> dict[str, Any] | None:
    """The root qdisc of DEV in NETNS (`tc -s -j qdisc`: ask for all, `show dev` drops the dev key)."""
    qdiscs = json.loads(system.run(["tc", "-n", netns, "-s", "-j", "qdisc", "show"]).stdout or "[]")
    return next((q for q in qdiscs if q.get("dev") == dev and q.get("root")), None)


def traffic_pids(netns: str, *needles: str) -> list[int]:
    """Pids of traffic helpers (dropscope_lab.traffic) inside NETNS whose argv contains all NEEDLES."""
    pids = []
    for pid in system.netns_pids(netns):
        argv = system.cmdline(pid)
        if TRAFFIC_MODULE in argv and all(n in argv for n in needles):
            pids.append(pid)
    return pids


def _wait_for(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# --------------------------------------------------------------------------------------- scenarios

def _send_from_root(host: Host, port: int, packets: int, timeout: float) -> int:
    if packets == 0:
        return 0
    sent = traffic.send_udp(host.address, port, packets, timeout=timeout)
    if sent != packets:
        raise LabError(f"only {sent} of {packets} datagrams went out within {timeout:g} s")
    return sent


def udp_firewall(lab: Lab, host: Host, packets: int, port: int, timeout: float) -> Result:
    """nft `udp dport PORT counter drop` in the host, then PACKETS datagrams from the root netns."""
    script = (f"table inet {NFT_TABLE} {{\n"
              "  chain input { type filter hook input priority filter; policy accept; }\n"
              "}\n")
    system.run(system.in_netns(host.netns, ["nft", "-f", "-"]), stdin=script)
    if udp_drop_rule(host.netns, port) is None:
        system.run(system.in_netns(host.netns, ["nft", "add", "rule", "inet", NFT_TABLE, "input",
                                                "udp", "dport", str(port), "counter", "drop"]))
    rule = udp_drop_rule(host.netns, port)
    if rule is None:
        raise LabError(f"nft rule for udp dport {port} not found after adding it in {host.netns}")
    before = rule_packets(rule)
    sent = _send_from_root(host, port, packets, timeout)

    def counted() -> bool:
        rule = udp_drop_rule(host.netns, port)
        return rule is not None and rule_packets(rule) - before >= sent

    _wait_for(counted, 2.0)
    rule = udp_drop_rule(host.netns, port)
    after = rule_packets(rule) if rule else before
    return {"sent": sent, "rule_counter": after, "rule_counter_delta": after - before}


def _legacy_rule(port: int) -> list[str]:
    return ["INPUT", "-p", "udp", "--dport", str(port), "-j", "DROP"]


def _legacy_tables(netns: str) -> list[str]:
    """The iptables-legacy tables in use in NETNS (none until a rule was added there)."""
    proc = system.run(system.in_netns(netns, ["cat", "/proc/net/ip_tables_names"]), check=False)
    return proc.stdout.split() if proc.returncode == 0 else []


def legacy_rule_packets(netns: str, port: int) -> int | None:
    """The packet counter of our iptables-legacy `-p udp --dport PORT -j DROP` rule in NETNS (None: absent)."""
    if "filter" not in _legacy_tables(netns):
        return None
    out = system.run(system.in_netns(netns, ["iptables-legacy", "-L", "INPUT", "-n", "-v", "-x"])).stdout
    for line in out.splitlines()[2:]:
        fields = line.split()
        if len(fields) > 2 and fields[2] == "DROP" and line.rstrip().endswith(f"udp dpt:{port}"):
            return int(fields[0])
    return None


def iptables_legacy(lab: Lab, host: Host, packets: int, port: int, timeout: float) -> Result:
    """iptables-legacy `-A INPUT -p udp --dport PORT -j DROP` in the host, then PACKETS datagrams from the root netns.

    The rule lives in the host's network namespace: `clear` deletes it, and it goes with the namespace.
    """
    if not shutil.which("iptables-legacy"):
        raise LabError("iptables-legacy is not installed (apt-get install iptables)")
    if legacy_rule_packets(host.netns, port) is None:
        system.run(system.in_netns(host.netns, ["iptables-legacy", "-A", *_legacy_rule(port)]))
    before = legacy_rule_packets(host.netns, port)
    if before is None:
        raise LabError(f"iptables-legacy rule for udp dport {port} not found after adding it in {host.netns}")
    sent = _send_from_root(host, port, packets, timeout)
    _wait_for(lambda: (legacy_rule_packets(host.netns, port) or 0) - before >= sent, 2.0)
    after = legacy_rule_packets(host.netns, port) or before
    return {"sent": sent, "rule_counter": after, "rule_counter_delta": after - before}


def udp_noport(lab: Lab, host: Host, packets: int, port: int, timeout: float) -> Result:
    """PACKETS datagrams from the root netns to a closed UDP port of the host."""
    if any(s["port"] == port for s in udp_sockets(host.netns)):
        raise LabError(f"UDP port {port} is open on {host.name}; pick a closed one with --port")
    if udp_drop_rule(host.netns, port) is not None or legacy_rule_packets(host.netns, port) is not None:
        raise LabError(f"{host.name} has a firewall rule for port {port}; run `lab inject clear` first")
    before = read_snmp(host.netns)["Udp.NoPorts"]
    sent = _send_from_root(host, port, packets, timeout)
    _wait_for(lambda: read_snmp(host.netns)["Udp.NoPorts"] - before >= sent, 2.0)
    return {"sent": sent, "udp_noports_delta": read_snmp(host.netns)["Udp.NoPorts"] - before}


def _receiver_socket(host: Host, port: int) -> dict[str, int | str] | None:
    return next((s for s in udp_sockets(host.netns) if s["port"] == port and s["address"] == host.address), None)


def start_receiver(lab: Lab, host: Host, port: int) -> int:
    """Start (or find) the never-reading receiver on HOST:PORT; return its pid."""
    running = traffic_pids(host.netns, "receive", str(port))
    if running and _receiver_socket(host, port):
        return running[0]
    if _receiver_socket(host, port):
        raise LabError(f"UDP port {port} on {host.name} is taken by something else")
    argv = system.in_netns(host.netns, _traffic_argv(
        "receive", "--bind", host.address, "--port", str(port), "--rcvbuf", "1",
        "--lifetime", str(RECEIVER_LIFETIME)))
    log = lab.host_dir(host) / f"receiver-{port}.log"
    with open(log, "ab") as err:
        # A session of its own: it outlives this command (until `clear`, `down` or its lifetime).
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                                start_new_session=True, env=_traffic_env())
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 10.0)
    line = proc.stdout.readline() if ready else b""
    proc.stdout.close()
    if not line:
        proc.kill()
        proc.wait()
        raise LabError(f"receiver on {host.name}:{port} did not start (see {log})")
    return int(json.loads(line)["pid"])


def udp_rcvbuf(lab: Lab, host: Host, packets: int, port: int, timeout: float) -> Result:
    """A receiver with a tiny SO_RCVBUF that never reads, then PACKETS datagrams to it."""
    pid = start_receiver(lab, host, port)
    sock = _receiver_socket(host, port)
    assert sock is not None
    before = read_snmp(host.netns)["Udp.RcvbufErrors"]
    drops_before = int(sock["drops"])
    sent = _send_from_root(host, port, packets, timeout)

    def settled() -> bool:
        s = _receiver_socket(host, port)
        return s is not None and int(s["drops"]) - drops_before == read_snmp(host.netns)["Udp.RcvbufErrors"] - before

    _wait_for(settled, 1.0)
    after = _receiver_socket(host, port) or sock
    return {"sent": sent, "receiver_pid": pid, "socket_drops_delta": int(after["drops"]) - drops_before,
            "udp_rcvbuf_errors_delta": read_snmp(host.netns)["Udp.RcvbufErrors"] - before,
            "receive_queue_bytes": after["rx_queue"]}


class _Drain(threading.Thread):
    """Reads and counts datagrams on a root-netns socket until stopped (bounded by a deadline)."""

    def __init__(self, sock: socket.socket, source: str, deadline: float) -> None:
        super().__init__(daemon=True)
        self.sock, self.source, self.deadline = sock, source, deadline
        self.received = 0
        self.stop = threading.Event()

    def run(self) -> None:
        self.sock.settimeout(0.05)
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            try:
                _, (addr, _) = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            if addr == self.source:
                self.received += 1


TX_DEV = "tx0"


def _tx_path(lab: Lab, host: Host) -> tuple[str, str]:
    """A transmit-only path for qdisc-tx: HOST's tx0 (veth on the bridge) towards a sink address.

    The tbf sits on tx0, not eth0, so the controller's SSH traffic to the host never meets it and
    every QDISC_DROP on it is one of the injected datagrams. Returns (root-side veth, sink address).
    """
    index = lab.hosts.index(host) + 1
    peer = f"{lab.name}-q{index}"
    sink = str(lab.subnet[-2])
    tx_mac = host.mac.replace("02:d5:", "02:d6:", 1)
    if not system.link_exists(peer):
        system.ip_batch([
            f"link add {peer} type veth peer name {TX_DEV} address {tx_mac} netns {host.netns}",
            f"link set dev {peer} addrgenmode none",
            f"link set dev {peer} master {lab.bridge} up",
        ])
        system.run(["bridge", "fdb", "replace", tx_mac, "dev", peer, "master", "static"])
        system.ip_batch([
            f"link set dev {TX_DEV} up",
            f"neigh replace {sink} lladdr {lab.bridge_mac} dev {TX_DEV} nud permanent",
            f"route replace {sink}/32 dev {TX_DEV} src {host.address}",
        ], netns=host.netns)
    system.run(["ip", "addr", "replace", f"{sink}/32", "dev", lab.bridge])
    return peer, sink


def qdisc_tx(lab: Lab, host: Host, packets: int, port: int, timeout: float) -> Result:
    """tbf on the host's tx0, then the host sends PACKETS 1000-byte datagrams through it to a sink address."""
    _, sink = _tx_path(lab, host)
    system.run(["tc", "-n", host.netns, "qdisc", "replace", "dev", TX_DEV, "root", *TBF])
    qdisc = root_qdisc(host.netns, TX_DEV)
    if not qdisc or qdisc.get("kind") != "tbf":
        raise LabError(f"no tbf root qdisc on {host.name} {TX_DEV} after adding it: {qdisc}")
    before = int(qdisc.get("drops", 0))
    if packets == 0:
        return {"sent": 0, "received": 0, "device": TX_DEV, "qdisc_dropped": 0, "qdisc_dropped_total": before}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((sink, port))
        port = sock.getsockname()[1]
        drain = _Drain(sock, host.address, time.monotonic() + timeout + 5.0)
        drain.start()
        try:
            proc = system.run(system.in_netns(host.netns, _traffic_argv(
                "send", "--dst", sink, "--port", str(port), "--count", str(packets),
                "--size", str(QDISC_PAYLOAD), "--timeout", str(timeout))), check=False, timeout=timeout + 10.0,
                env=_traffic_env())
            try:
                sent = int(json.loads(proc.stdout.splitlines()[-1])["sent"])
            except (IndexError, ValueError, KeyError):
                raise LabError(f"sender in {host.netns} failed: {proc.stderr.strip()}") from None

            def accounted() -> bool:
                q = root_qdisc(host.netns, TX_DEV) or {}
                return drain.received + int(q.get("drops", 0)) - before >= sent

            _wait_for(accounted, 3.0)  # the last queued datagrams leave at 1 mbit/s
        finally:
            drain.stop.set()
            drain.join()
    qdisc = root_qdisc(host.netns, TX_DEV) or {}
    total = int(qdisc.get("drops", 0))
    if sent != packets:
        raise LabError(f"the sender in {host.netns} sent only {sent} of {packets} within {timeout:g} s")
    return {"sent": sent, "port": port, "device": TX_DEV, "received": drain.received,
            "qdisc_dropped": total - before, "qdisc_dropped_total": total}


def clear(lab: Lab, host: Host, packets: int, port: int, timeout: float) -> Result:
    """Remove what the scenarios set up on HOST: nft table, iptables-legacy rules, tx0 with its tbf qdisc, receivers."""
    removed = []
    proc = system.run(system.in_netns(host.netns, ["nft", "-j", "list", "tables"]))
    tables = [t["table"] for t in json.loads(proc.stdout or '{"nftables": []}')["nftables"] if "table" in t]
    if any(t["family"] == "inet" and t["name"] == NFT_TABLE for t in tables):
        system.run(system.in_netns(host.netns, ["nft", "delete", "table", "inet", NFT_TABLE]))
        removed.append(f"nft table inet {NFT_TABLE}")
    if "filter" in _legacy_tables(host.netns):
        rules = system.run(system.in_netns(host.netns, ["iptables-legacy", "-S", "INPUT"])).stdout.splitlines()
        for line in rules:
            words = line.split()
            if len(words) == 10 and words[:7] == ["-A", "INPUT", "-p", "udp", "-m", "udp", "--dport"] \
                    and words[8:] == ["-j", "DROP"]:
                system.run(system.in_netns(host.netns, ["iptables-legacy", "-D", *_legacy_rule(int(words[7]))]))
                removed.append(f"iptables-legacy rule udp dport {words[7]} DROP")
    peer = f"{lab.name}-q{lab.hosts.index(host) + 1}"
    if system.link_exists(peer):
        system.run(["ip", "link", "del", peer])  # takes tx0 and its tbf with it
        removed.append(f"tbf qdisc on {TX_DEV}")
    pids = traffic_pids(host.netns)
    stuck = system.kill_and_wait(pids, sig=signal.SIGTERM, timeout=2.0)
    stuck = system.kill_and_wait(stuck, timeout=2.0)
    if stuck:
        raise LabError(f"could not stop lab traffic processes {stuck} on {host.name}")
    removed += [f"traffic pid {p}" for p in pids]
    return {"removed": removed}


SCENARIOS: dict[str, Callable[[Lab, Host, int, int, float], Result]] = {
    "udp-firewall": udp_firewall,
    "udp-noport": udp_noport,
    "udp-rcvbuf": udp_rcvbuf,
    "qdisc-tx": qdisc_tx,
    "iptables-legacy": iptables_legacy,
    "clear": clear,
}


def inject(lab: Lab, scenario: str, host_name: str, packets: int, port: int | None, timeout: float) -> Result:
    """Run SCENARIO on HOST_NAME of LAB; return the JSON-able description of what was injected."""
    host = lab.host(host_name)
    if not 0 <= packets <= MAX_PACKETS:
        raise LabError(f"--packets must be 0..{MAX_PACKETS}")
    if not 0 < timeout <= 600:
        raise LabError("--timeout must be in (0, 600] seconds")
    if port is None:
        port = DEFAULT_PORTS.get(scenario, 0)
    if not (0 < port < 65536 or (port == 0 and scenario in ("qdisc-tx", "clear"))):
        raise LabError(f"invalid --port {port}")
    if host.netns not in system.list_netns():
        raise LabError(f"{host.netns} does not exist: is lab {lab.name} up?")
    result: Result = {"scenario": scenario, "lab": lab.name, "host": host.name, "netns": host.netns,
                      "address": host.address}
    if scenario != "clear":
        result.update({"port": port, "packets": packets})
    result.update(SCENARIOS[scenario](lab, host, packets, port, timeout))
    return result
