"""The lab (`tests/support/lab`) on a real fleet: namespaces, sshd, exact drop counts, complete tear-down (root only).

Besides the lab3 fixture's lab, these tests build labs of their own in 198.18.2.0/24, 198.18.3.0/24 and
198.18.4.0/24 (names dsdown, dsfail, dsstate): one test run at a time on a machine.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from conftest import LAB3_NAME, LAB3_SUBNET, run_lab

pytestmark = pytest.mark.lab

SSH = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
       "-o", "ConnectTimeout=5"]


@pytest.fixture(autouse=True)
def _needs_lab_machine(lab_name: str) -> None:  # the labs below are this run's alone while it holds the name
    if os.geteuid() != 0 or not Path("/usr/sbin/sshd").exists() or not shutil.which("nft"):
        pytest.skip("needs root, sshd and nft")


# ------------------------------------------------------------------------------------------ helpers

def netns_run(netns: str, *argv: str) -> str:
    return subprocess.run(["ip", "netns", "exec", netns, *argv], check=True, capture_output=True, text=True,
                          timeout=30).stdout


def snmp(netns: str) -> dict[str, int]:
    """/proc/net/snmp of NETNS as {"Udp.NoPorts": n, ...}."""
    lines = netns_run(netns, "cat", "/proc/net/snmp").splitlines()
    out = {}
    for head, values in zip(lines[::2], lines[1::2], strict=True):
        proto, names = head.split(":", 1)
        numbers = values.split(":", 1)[1].split()
        out.update({f"{proto}.{k}": int(v) for k, v in zip(names.split(), numbers, strict=True)})
    return out


def udp_socket_drops(netns: str, port: int) -> int | None:
    """The drops column of the UDP socket bound to PORT in NETNS (None if there is none)."""
    for line in netns_run(netns, "cat", "/proc/net/udp").splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port:
            return int(fields[12])
    return None


def nft_udp_rules(netns: str, port: int) -> list[int]:
    """Packet counters of every `udp dport PORT ... drop` rule in NETNS."""
    ruleset = json.loads(netns_run(netns, "nft", "-j", "list", "ruleset"))["nftables"]
    counters = []
    for item in ruleset:
        exprs = item.get("rule", {}).get("expr", [])
        if any(e.get("match", {}).get("right") == port for e in exprs) and any("drop" in e for e in exprs):
            counters += [e["counter"]["packets"] for e in exprs if "counter" in e]
    return counters


def root_qdisc(netns: str, dev: str = "eth0") -> dict[str, Any] | None:
    qdiscs = json.loads(subprocess.run(["tc", "-n", netns, "-s", "-j", "qdisc", "show"], check=True,
                                       capture_output=True, text=True).stdout)
    return next((q for q in qdiscs if q.get("dev") == dev and q.get("root")), None)


def inject(*args: str, name: str = LAB3_NAME) -> dict[str, Any]:
    out = run_lab("inject", *args, "--name", name).stdout
    return json.loads(out.strip().splitlines()[-1])


def live_pids() -> dict[int, list[str]]:
    """argv of every live (non-zombie) process."""
    procs = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            raw = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if raw:
            procs[int(entry)] = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    return procs


def lab_traces(name: str, state_dir: str) -> list[str]:
    """Everything of lab NAME still on the machine: netns, interfaces, sshd processes, state dir."""
    found = [f"netns {ns}" for ns in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                                      check=True).stdout.split() if ns.startswith(f"{name}-")]
    links = json.loads(subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True,
                                      check=True).stdout)
    found += [f"link {link['ifname']}" for link in links if link["ifname"].startswith(f"{name}-")]
    found += [f"process {pid} {' '.join(argv)}" for pid, argv in live_pids().items()
              if "sshd" in argv[0] and any(state_dir in a for a in argv)]
    if Path(state_dir).exists():
        found.append(f"state dir {state_dir}")
    return found


def ssh_hostname(key: str, address: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SSH, "-i", key, *extra, f"root@{address}", "hostname"], capture_output=True,
                          text=True, timeout=30)


# ---------------------------------------------------------------------------------------- the fleet

def _lab3_address(octet: int) -> str:
    """The address ending in .OCTET of the lab3 fixture's subnet (hosts hN get .(10+N), the bridge .1)."""
    return str(ipaddress.IPv4Network(LAB3_SUBNET)[octet])


def test_lab_json_and_inventory(lab3):
    assert lab3["name"] == LAB3_NAME and lab3["subnet"] == LAB3_SUBNET
    assert list(lab3["hosts"]) == ["h1", "h2", "h3"]
    for i, (name, host) in enumerate(lab3["hosts"].items(), start=1):
        assert host == {"name": name, "netns": f"{LAB3_NAME}-h{i}", "address": _lab3_address(10 + i),
                        "veth": f"{LAB3_NAME}-h{i}", "mac": host["mac"]}
    text = Path(lab3["inventory"]).read_text()
    assert "[lab]\n" + "".join(f"h{i} ansible_host={_lab3_address(10 + i)}\n" for i in (1, 2, 3)) in text
    key = Path(lab3["state_dir"]) / "id_ed25519"
    for line in ("[lab:vars]", "ansible_user=root", "ansible_python_interpreter=/usr/bin/python3",
                 f"ansible_ssh_private_key_file={key}",
                 "ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
                 "-o ServerAliveInterval=2 -o ServerAliveCountMax=3'"):
        assert line in text.splitlines()


def test_ssh_into_each_host_prints_its_name(lab3):
    key = lab3["private_key"]
    for name, host in lab3["hosts"].items():
        proc = ssh_hostname(key, host["address"])
        assert (proc.returncode, proc.stdout.strip()) == (0, name), proc.stderr
    # Sessions skip the shared ~/.bashrc (pyenv's rehash lock): plain system PATH.
    proc = subprocess.run([*SSH, "-i", key, f"root@{lab3['hosts']['h1']['address']}", 'echo "$PATH"'],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and ".pyenv" not in proc.stdout and "/usr/bin" in proc.stdout


def test_hosts_are_isolated_and_quiet(lab3):
    h1 = lab3["hosts"]["h1"]
    assert netns_run(h1["netns"], "sysctl", "-n", "net.ipv6.conf.all.disable_ipv6").strip() == "1"
    neigh = netns_run(h1["netns"], "ip", "neigh", "show", "dev", "eth0")
    for address in (_lab3_address(1), _lab3_address(12), _lab3_address(13)):
        assert f"{address} lladdr" in neigh and "PERMANENT" in neigh.split(address)[1].splitlines()[0]


def test_up_twice_refuses_and_keeps_the_lab(lab3):
    for subnet in (LAB3_SUBNET, "198.18.9.0/24"):
        proc = run_lab("up", "--hosts", "3", "--name", LAB3_NAME, "--subnet", subnet, check=False)
        assert proc.returncode != 0
        assert "already exists" in proc.stderr and proc.stdout == ""
    h2 = lab3["hosts"]["h2"]
    assert ssh_hostname(lab3["private_key"], h2["address"]).stdout.strip() == "h2"
    assert Path(lab3["inventory"]).exists()


def test_up_refuses_a_subnet_in_use_or_outside_the_lab_range(lab3):
    proc = run_lab("up", "--hosts", "1", "--name", "dsother", "--subnet", LAB3_SUBNET, check=False)
    assert proc.returncode != 0 and "overlaps" in proc.stderr
    proc = run_lab("up", "--hosts", "1", "--name", "dsother", "--subnet", "10.99.0.0/24", check=False)
    assert proc.returncode != 0 and "outside 198.18.0.0/15" in proc.stderr
    assert not Path("/run/dropscope-lab/dsother").exists()


# -------------------------------------------------------------------------------------- injections

def test_udp_firewall_counts_exactly(lab3):
    netns = lab3["hosts"]["h1"]["netns"]
    inject("clear", "--host", "h1")
    out = inject("udp-firewall", "--host", "h1", "--packets", "750")
    assert (out["scenario"], out["host"], out["sent"], out["port"]) == ("udp-firewall", "h1", 750, 8000)
    assert nft_udp_rules(netns, 8000) == [750]
    assert nft_udp_rules(lab3["hosts"]["h2"]["netns"], 8000) == []
    # Idempotent set-up: still one rule, its counter moves on.
    inject("udp-firewall", "--host", "h1", "--packets", "0")
    inject("udp-firewall", "--host", "h1", "--packets", "25")
    assert nft_udp_rules(netns, 8000) == [775]
    inject("clear", "--host", "h1")
    assert nft_udp_rules(netns, 8000) == []


def test_udp_noport_counts_exactly(lab3):
    netns = lab3["hosts"]["h2"]["netns"]
    others = {h["netns"]: snmp(h["netns"])["Udp.NoPorts"] for n, h in lab3["hosts"].items() if n != "h2"}
    before = snmp(netns)
    out = inject("udp-noport", "--host", "h2", "--packets", "1200")
    after = snmp(netns)
    assert out["sent"] == 1200 and out["port"] == 9000
    assert after["Udp.NoPorts"] - before["Udp.NoPorts"] == 1200
    assert after["Udp.InDatagrams"] == before["Udp.InDatagrams"]
    assert {ns: snmp(ns)["Udp.NoPorts"] for ns in others} == others  # only h2 saw them


def test_udp_rcvbuf_counts_exactly(lab3):
    netns = lab3["hosts"]["h3"]["netns"]
    inject("clear", "--host", "h3")
    assert udp_socket_drops(netns, 9100) is None
    before = snmp(netns)
    out = inject("udp-rcvbuf", "--host", "h3", "--packets", "400")
    after = snmp(netns)
    drops = udp_socket_drops(netns, 9100)
    delta = after["Udp.RcvbufErrors"] - before["Udp.RcvbufErrors"]
    queued = 400 - drops  # what fitted into the tiny buffer
    assert out["sent"] == 400 and 0 < queued < 20
    assert delta == drops == 400 - queued == out["udp_rcvbuf_errors_delta"] == out["socket_drops_delta"]
    assert after["Udp.InErrors"] - before["Udp.InErrors"] == delta
    # The receiver outlives the command and never reads: now every datagram is dropped.
    pid = out["receiver_pid"]
    assert pid in [int(p) for p in subprocess.run(["ip", "netns", "pids", netns], capture_output=True,
                                                  text=True, check=True).stdout.split()]
    out2 = inject("udp-rcvbuf", "--host", "h3", "--packets", "150")
    assert out2["receiver_pid"] == pid
    assert snmp(netns)["Udp.RcvbufErrors"] - after["Udp.RcvbufErrors"] == 150
    assert udp_socket_drops(netns, 9100) == drops + 150
    cleared = inject("clear", "--host", "h3")
    assert f"traffic pid {pid}" in cleared["removed"]
    assert udp_socket_drops(netns, 9100) is None
    assert not Path(f"/proc/{pid}/cmdline").exists() or not Path(f"/proc/{pid}/cmdline").read_bytes()


def test_qdisc_tx_drops_are_reported(lab3):
    netns = lab3["hosts"]["h1"]["netns"]
    inject("clear", "--host", "h1")
    out = inject("qdisc-tx", "--host", "h1", "--packets", "300")
    qdisc = root_qdisc(netns, "tx0")
    assert qdisc["kind"] == "tbf"
    assert out["sent"] == 300 and out["qdisc_dropped"] > 0
    assert qdisc["drops"] == out["qdisc_dropped"] == out["qdisc_dropped_total"]
    assert out["received"] + out["qdisc_dropped"] == 300
    # The tbf is on a transmit-only device: SSH over eth0 never meets it.
    assert root_qdisc(netns)["kind"] != "tbf"
    inject("clear", "--host", "h1")
    assert root_qdisc(netns, "tx0") is None


def test_inject_refuses_bad_requests(lab3):
    for args in (["udp-noport", "--host", "h9"], ["udp-firewall", "--host", "h1", "--packets", "1000000"],
                 ["udp-noport", "--host", "h1", "--port", "70000"]):
        proc = run_lab("inject", *args, "--name", LAB3_NAME, check=False)
        assert proc.returncode != 0 and proc.stdout == "", args
    proc = run_lab("inject", "clear", "--host", "h1", "--name", "dsnolab", check=False)
    assert proc.returncode != 0 and "no lab" in proc.stderr


# ------------------------------------------------------------------------------------------ removal

def test_down_removes_everything_even_with_ssh_masters_and_receivers():
    name = "dsdown"
    tmp_path = tempfile.mkdtemp(prefix="dscp", dir="/tmp")  # short: ControlPath is a unix socket
    run_lab("down", "--name", name)
    inventory = Path(run_lab("up", "--hosts", "2", "--name", name, "--subnet", "198.18.2.0/24")
                     .stdout.strip())
    lab = json.loads((inventory.parent / "lab.json").read_text())
    try:
        # A ControlPersist master (renames itself `ssh: PATH [mux]`) and a long-lived receiver.
        master = ["-o", "ControlMaster=auto", "-o", "ControlPersist=60s", "-o", f"ControlPath={tmp_path}/cp-%C"]
        assert ssh_hostname(lab["private_key"], "198.18.2.11", *master).stdout.strip() == "h1"
        masters = [pid for pid, argv in live_pids().items() if argv[0].startswith("ssh:") and tmp_path in argv[0]]
        assert masters
        receiver = inject("udp-rcvbuf", "--host", "h2", "--packets", "10", name=name)["receiver_pid"]
        assert lab_traces(name, lab["state_dir"])
        down = run_lab("down", "--name", name)
        assert "down in" in down.stderr
        assert lab_traces(name, lab["state_dir"]) == []
        alive = live_pids()
        assert not [pid for pid in [*masters, receiver] if pid in alive]
        assert run_lab("down", "--name", name).returncode == 0  # idempotent
    finally:
        run_lab("down", "--name", name, check=False)
        shutil.rmtree(tmp_path, ignore_errors=True)


def test_down_cleans_a_half_built_lab_without_state():
    name = "dshalf"
    run_lab("down", "--name", name)
    cmds = [["ip", "netns", "add", f"{name}-h1"], ["ip", "netns", "add", f"{name}-h2"],
            ["ip", "link", "add", f"{name}-br", "type", "bridge"],
            ["ip", "link", "add", f"{name}-h1", "type", "veth", "peer", "name", "eth0", "netns", f"{name}-h1"]]
    sleeper = None
    try:
        for cmd in cmds:
            subprocess.run(cmd, check=True)
        sleeper = subprocess.Popen(["ip", "netns", "exec", f"{name}-h2", "sleep", "60"])
        run_lab("down", "--name", name)
        assert sleeper.wait(timeout=5) == -signal.SIGKILL
        assert lab_traces(name, f"/run/dropscope-lab/{name}") == []
    finally:
        if sleeper and sleeper.poll() is None:
            sleeper.kill()
        run_lab("down", "--name", name, check=False)


def test_failed_up_tears_down_what_it_built(monkeypatch, capsys):
    from dropscope_lab import fleet
    from dropscope_lab.cli import build_parser
    from dropscope_lab.model import LabError

    def broken(lab, timeout):
        raise LabError("simulated sshd failure")

    monkeypatch.setattr(fleet, "_wait_for_ssh", broken)
    name = "dsfail"
    args = build_parser().parse_args(["up", "--hosts", "2", "--name", name, "--subnet", "198.18.3.0/24"])
    try:
        assert args.func(args) == 1
        assert "simulated sshd failure" in capsys.readouterr().err
        assert lab_traces(name, f"/run/dropscope-lab/{name}") == []
    finally:
        run_lab("down", "--name", name, check=False)


def test_custom_state_dir_is_found_by_inject_and_down():
    name = "dsstate"
    base = tempfile.mkdtemp(prefix="dsstate", dir="/tmp")
    state = f"{base}/lab"
    run_lab("down", "--name", name)
    try:
        up = run_lab("up", "--hosts", "1", "--name", name, "--subnet", "198.18.4.0/24",
                           "--state-dir", state)
        assert up.stdout.strip() == f"{state}/inventory.ini"
        assert inject("udp-noport", "--host", "h1", "--packets", "5", name=name)["sent"] == 5
        run_lab("down", "--name", name)
        assert lab_traces(name, state) == []
        assert not Path(f"/run/dropscope-lab/{name}.state-dir").exists()
        assert Path(base).is_dir()  # only the state dir itself goes
    finally:
        run_lab("down", "--name", name, "--state-dir", state, check=False)
        shutil.rmtree(base, ignore_errors=True)
