"""Every capture backend on the real lab: injected drops, right reasons and locations, clean afterwards.

Runs the real drop_capture module inside lab hosts' network namespaces (as ansible runs it there), and
the real dropwatch role through ansible-playbook. Other engineers may inject drops on this machine at
the same time: kernel-scope counts (perf, tracefs) are asserted as "at least", and the exact counts
are asserted with bpftrace and netns=self, which sees only its own host.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from ansible_collections.dropscope.drops.plugins.module_utils.capture_backends import sample_one_in
from conftest import LAB3_NAME, lab_cli

REPO = Path(__file__).resolve().parents[1]
COLLECTIONS = REPO / "collections"
TARBALL = REPO / "tests" / "data" / "vendor" / "dropwatch-1.5.5.tar.gz"  # upstream v1.5.5, see tests/data/README.md
KFREE_ENABLE = Path("/sys/kernel/tracing/events/skb/kfree_skb/enable")

pytestmark = pytest.mark.lab


def _module(netns: str, name: str, args: dict, path_extra: str = "", timeout: float = 120) -> dict:
    """Run a collection module inside NETNS (its own mount namespace, like the lab's sshd) and return its result."""
    env = {"PYTHONPATH": str(COLLECTIONS), "PATH": f"{path_extra}/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"}
    proc = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-m",
                           f"ansible_collections.dropscope.drops.plugins.modules.{name}"],
                          input=json.dumps({"ANSIBLE_MODULE_ARGS": args}), capture_output=True, text=True,
                          env=env, timeout=timeout)
    assert proc.stdout.strip(), proc.stderr
    return json.loads(proc.stdout)


def _tracer_pids() -> list[int]:
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if comm in ("bpftrace", "dropwatch") or comm.startswith("perf"):
            pids.append(int(pid))
    return pids


def _our_instances() -> list[str]:
    instances = Path("/sys/kernel/tracing/instances")
    return sorted(p.name for p in instances.iterdir() if p.name.startswith("dropscope-")) if instances.exists() else []


def _state() -> dict:
    return {"enable": KFREE_ENABLE.read_text() if KFREE_ENABLE.exists() else None, "instances": _our_instances()}


def _ready_netns() -> set[int]:
    found = set()
    for marker in Path(tempfile.gettempdir()).glob("dropscope-capture-*/ready"):
        try:
            found.add(int(marker.read_text().strip() or 0))
        except (OSError, ValueError):
            continue
    return found


def _capture_while(lab: dict, host: str, args: dict, send: Any) -> tuple[dict, Any]:
    """Run drop_capture in HOST and SEND() once its probe is live; return (the module's result, what SEND gave)."""
    netns = lab["hosts"][host]["netns"]
    inode = os.stat(f"/run/netns/{netns}").st_ino
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(_module(netns, "drop_capture", args)))
    thread.start()
    deadline = time.monotonic() + 30
    ready_by_marker = args.get("backend") in ("bpftrace", "perf", "tracefs", "auto")
    if ready_by_marker:
        while inode not in _ready_netns():
            assert thread.is_alive() and time.monotonic() < deadline, result
            time.sleep(0.02)
    else:
        time.sleep(2.5)  # perf 6.1 is ready 0.15-0.26 s after it starts; the module starts it after ~1 s
    sent = send()
    thread.join(timeout=120)
    assert "capture" in result, result
    return result, sent


def _capture_while_injecting(lab: dict, host: str, args: dict, inject: list[tuple[str, str, int]]) -> dict:
    """Run drop_capture in HOST while INJECT runs once its probe is live; return (capture, injected)."""
    result, injected = _capture_while(lab, host, args, lambda: [
        lab_cli("inject", scenario, "--host", target, "--packets", str(packets))
        for scenario, target, packets in inject])
    return {"capture": result["capture"], "before": result["before"], "after": result["after"], "injected": injected}


def _capture_sending(lab: dict, host: str, args: dict, program: str, *argv: str) -> dict:
    """drop_capture's capture in HOST while PROGRAM (a bounded Python sender) runs in HOST's namespace once live."""
    netns = lab["hosts"][host]["netns"]
    return _capture_while(lab, host, args, lambda: subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", program, *argv], check=True, timeout=60))[0]["capture"]


def _drops(capture: dict, reason: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for drop in capture["drops"]:
        if drop["reason"] == reason:
            counts[drop["location"]] = counts.get(drop["location"], 0) + drop["count"]
    return counts


@pytest.fixture
def clean_state():
    before = _state()
    yield before
    assert _tracer_pids() == [] or _wait_no_tracers(), f"tracers left: {_tracer_pids()}"
    assert _state() == before, "kfree_skb tracing state or ftrace instances changed"


def _wait_no_tracers(timeout: float = 5) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not [pid for pid in _tracer_pids() if _inlab_cli(pid)]:
            return True
        time.sleep(0.1)
    return False


def _inlab_cli(pid: int) -> bool:
    try:
        inode = os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return False
    return any(inode == os.stat(p).st_ino for p in Path("/run/netns").glob(f"{LAB3_NAME}*"))


def test_bpftrace_netns_self_is_exact_per_host(lab3, clean_state):
    lab_cli("inject", "udp-firewall", "--host", "h1", "--packets", "0")
    try:
        run = _capture_while_injecting(lab3, "h1", {"duration": 3, "backend": "bpftrace", "netns": "self"},
                                       [("udp-firewall", "h1", 211), ("udp-noport", "h2", 137)])
    finally:
        lab_cli("inject", "clear", "--host", "h1")
    capture = run["capture"]
    assert (capture["status"], capture["scope"]) == ("ok", "netns"), capture["reason"]
    assert _drops(capture, "NETFILTER_DROP") == {"nft_do_chain": 211}
    assert "__udp4_lib_rcv" not in _drops(capture, "NO_SOCKET")  # h2's drops are not h1's
    rule = next(d for d in capture["drops"] if d["reason"] == "NETFILTER_DROP")
    assert (rule["l4"], rule["port"], rule["protocol"]) == ("udp", 8000, "IPv4")
    assert capture["guard"]["active"] is False
    # The module read h1's counters in the capture's window: the rule counted what the capture saw.
    key = next(key for key in run["after"]["firewall"] if "dropscope_lab" in key)
    assert run["after"]["firewall"][key]["packets"] - run["before"]["firewall"][key]["packets"] == 211
    assert capture["window"]["complete"] and capture["window"]["difference_s"] <= 0.5, capture["window"]


def test_a_capture_that_dies_mid_way_keeps_the_counters_read_before_it(lab3, clean_state):
    """bpftrace killed while it counts: the capture is failed with the reason, the BEFORE counters are kept."""
    netns = lab3["hosts"]["h1"]["netns"]
    inode = os.stat(f"/run/netns/{netns}").st_ino
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(
        _module(netns, "drop_capture", {"duration": 30, "backend": "bpftrace", "max_event_rate": 0})))
    thread.start()
    deadline = time.monotonic() + 30
    while inode not in _ready_netns():
        assert thread.is_alive() and time.monotonic() < deadline, result
        time.sleep(0.02)
    pids = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True).stdout.split()
    tracers = [int(pid) for pid in pids if Path(f"/proc/{pid}/comm").exists()
               and Path(f"/proc/{pid}/comm").read_text().strip() == "bpftrace"]
    assert len(tracers) == 1, tracers
    os.kill(tracers[0], signal.SIGKILL)
    thread.join(timeout=60)
    capture = result["capture"]
    assert (capture["status"], capture["backend"]) == ("failed", "bpftrace")
    assert capture["reason"].startswith("bpftrace did not finish (exit -9)"), capture["reason"]
    assert [tried["backend"] for tried in capture["auto"]["tried"]] == ["bpftrace"]
    assert result["before"]["errors"] == [] and result["before"]["system"]["netns_inode"] == inode
    assert result["after"] is None
    assert capture["window"]["complete"] is False and capture["window"]["before_read_s"] is not None


# A bounded background sender (loopback inside one lab host, at most RATE packets/s for SECONDS s).
BACKGROUND = """
import socket, sys, time
rate, seconds = int(sys.argv[1]), float(sys.argv[2])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
start = time.monotonic()
sent = 0
while sent < rate * seconds and time.monotonic() < start + seconds:
    for _ in range(100):
        sock.sendto(b"x", ("127.0.0.1", 9))
    sent += 100
    time.sleep(max(0.0, start + sent / rate - time.monotonic()))
"""


def test_bpftrace_guard_samples_in_the_kernel_and_stays_per_host(lab3, clean_state):
    """Above max_event_rate bpftrace runs its lean program on 1 in N drops chosen at random (N from the measured
    rate): counts are N x the sampled ones, estimates of the injected drops; netns=self stays exact (none of
    h2's background drops is h1's) and the window is the whole duration."""
    background = subprocess.Popen(["ip", "netns", "exec", lab3["hosts"]["h2"]["netns"], sys.executable, "-c",
                                   BACKGROUND, "5000", "12"])
    lab_cli("inject", "udp-firewall", "--host", "h1", "--packets", "0")
    injected = 2_000
    try:
        time.sleep(0.3)
        run = _capture_while_injecting(lab3, "h1", {"duration": 16, "backend": "bpftrace", "netns": "self",
                                                    "max_event_rate": 700},
                                       [("udp-firewall", "h1", injected)])
    finally:
        lab_cli("inject", "clear", "--host", "h1")
        background.kill()
        background.wait()
    capture = run["capture"]
    guard = capture["guard"]
    assert (capture["status"], capture["scope"]) == ("ok", "netns"), capture["reason"]
    assert guard["active"] and guard["bpftrace_program"] == "lean", guard
    assert guard["actions"][0].startswith("bpftrace: lean program"), guard
    one_in = sample_one_in(guard["measured_rate"], 700)
    assert one_in >= 4 and capture["sample_one_in"] == guard["sample_one_in"] == one_in, guard
    assert guard["window_s"] == 16 and not [a for a in guard["actions"] if "sampling in time" in a], guard
    assert set(_drops(capture, "NETFILTER_DROP")) == {"nft_do_chain"}
    estimate = _drops(capture, "NETFILTER_DROP")["nft_do_chain"]
    assert estimate % one_in == 0
    # The estimate's standard deviation is sqrt(2,000 * (N - 1)); 6 of them are missed about twice in 10**9 runs.
    assert abs(estimate - injected) <= 6 * math.sqrt(injected * (one_in - 1)), (estimate, one_in)
    assert "__udp4_lib_rcv" not in _drops(capture, "NO_SOCKET")  # h2's background drops are not h1's
    rule = next(d for d in capture["drops"] if d["reason"] == "NETFILTER_DROP")
    assert (rule["l4"], rule["port"], rule["protocol"]) == (None, None, "IPv4")


def test_bpftrace_port_filter(lab3, clean_state):
    run = _capture_while_injecting(lab3, "h2", {"duration": 3, "backend": "bpftrace", "port": 9000},
                                   [("udp-noport", "h2", 40), ("udp-noport", "h2", 0)])
    capture = run["capture"]
    assert capture["status"] == "ok"
    assert [(d["reason"], d["location"], d["port"], d["count"]) for d in capture["drops"]] == [
        ("NO_SOCKET", "__udp4_lib_rcv", 9000, 40)]


PORT_SCAN = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for port in range(int(sys.argv[1]), int(sys.argv[1]) + int(sys.argv[2])):
    s.sendto(b"x", ("127.0.0.1", port))
"""


SPOOFED_FLOOD = """
import socket, sys
for n in range(int(sys.argv[1])):  # every source a different loopback address, 127.0.x.y (all of 127/8 is lo)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.%d.%d" % (1 + n // 250, 1 + n % 250), 0))
    s.sendto(b"x", ("127.0.0.1", 9))
    s.close()
"""


def test_bpftrace_senders_add_up_when_its_peers_map_is_full(lab3, clean_state):
    """8,300 datagrams, each from its own loopback address, to a closed port: more (source, destination)
    pairs than the peers map keeps. The drops stay exact, and the senders' top pairs plus `other` add up to
    them (what the full map did not keep is in `other`)."""
    from ansible_collections.dropscope.drops.plugins.module_utils.bpftrace_capture import MAP_KEYS_MAX, PEERS_TOP

    sent = MAP_KEYS_MAX + 108
    capture = _capture_sending(lab3, "h2", {"duration": 3, "backend": "bpftrace", "netns": "self", "peers": "exact"},
                               SPOOFED_FLOOD, str(sent))
    assert capture["status"] == "ok", capture["reason"]
    assert capture["events"] == sent and capture["unitemised"] == 0
    assert [(d["reason"], d["port"], d["count"]) for d in capture["drops"]] == [("NO_SOCKET", 9, sent)]
    peers = capture["peers"]
    assert peers["truncated"] is True
    assert len(peers["groups"]) == PEERS_TOP and {g["dst"] for g in peers["groups"]} == {"127.0.0.1"}
    assert peers["other"] == {"NO_SOCKET": {"count": sent - PEERS_TOP, "pairs": MAP_KEYS_MAX - PEERS_TOP}}


def test_bpftrace_counts_stay_exact_when_its_port_map_is_full(lab3, clean_state):
    """A port scan: one UDP datagram to each of 9,000 closed ports on h2's loopback (bounded: 9,000 packets),
    more keys than bpftrace's per-port map holds (MAP_KEYS_MAX). Every drop is still counted: what that map
    could not keep comes back from the map keyed without ports, as one group without a port."""
    from ansible_collections.dropscope.drops.plugins.module_utils.bpftrace_capture import MAP_KEYS_MAX

    ports = MAP_KEYS_MAX + 808
    capture = _capture_sending(lab3, "h2", {"duration": 3, "backend": "bpftrace", "netns": "self", "peers": "off",
                                            "top": 5}, PORT_SCAN, "20000", str(ports))
    assert capture["status"] == "ok", capture["reason"]
    scanned = [d for d in capture["drops"] if d["reason"] == "NO_SOCKET"]
    assert {d["location"] for d in scanned} == {"__udp4_lib_rcv"}
    # Every datagram counted once (the namespace has no other drops): MAP_KEYS_MAX of them by port (the
    # top 5 groups, the rest in `other`), the others as the largest group, without port.
    assert capture["events"] == ports and capture["truncated"] is False
    assert capture["unitemised"] == ports - MAP_KEYS_MAX
    assert (scanned[0]["l4"], scanned[0]["port"], scanned[0]["count"]) == (None, None, ports - MAP_KEYS_MAX)
    assert [d["count"] for d in scanned[1:]] == [1] * 4 and all(d["port"] >= 20000 for d in scanned[1:])
    assert capture["other"] == {"count": MAP_KEYS_MAX - 4, "groups": MAP_KEYS_MAX - 4}


def test_tracefs_sees_the_kernel_in_its_own_instance(lab3, clean_state):
    run = _capture_while_injecting(lab3, "h3", {"duration": 3, "backend": "tracefs"},
                                   [("udp-noport", "h2", 120)])
    capture = run["capture"]
    assert (capture["status"], capture["scope"]) == ("ok", "kernel"), capture["reason"]
    assert capture["command"][1].startswith("instances/dropscope-")
    # Kernel scope: at least h2's drops (other engineers' labs may add more).
    assert _drops(capture, "NO_SOCKET").get("__udp4_lib_rcv", 0) >= 120
    assert capture["lost_events"] == 0


def test_perf_sees_the_kernel(lab3, clean_state):
    run = _capture_while_injecting(lab3, "h2", {"duration": 4, "backend": "perf"}, [("udp-noport", "h2", 90)])
    capture = run["capture"]
    assert (capture["status"], capture["scope"]) == ("ok", "kernel"), capture["reason"]
    assert _drops(capture, "NO_SOCKET").get("__udp4_lib_rcv", 0) >= 90
    # Live at perf's ack of `enable`, stopped after its ack of `disable`: h2's counters in the same window.
    assert run["after"]["protocols"]["UdpNoPorts"] - run["before"]["protocols"]["UdpNoPorts"] == 90
    assert capture["window"]["complete"] and capture["window"]["difference_s"] <= 0.5, capture["window"]


def test_auto_chooses_per_host_and_says_why(lab3, clean_state):
    result = _module(lab3["hosts"]["h2"]["netns"], "drop_capabilities", {})
    caps = result["capabilities"]
    ladder = {rung["backend"]: rung for rung in caps["ladder"]}
    assert caps["chosen"] == "bpftrace" and ladder["perf"]["available"] and ladder["tracefs"]["available"]
    assert caps["net_dm"]["present"] is False and caps["kfree_skb"]["reason_names"] > 100
    run = _capture_while_injecting(lab3, "h2", {"duration": 2}, [("udp-noport", "h2", 25)])
    capture = run["capture"]
    assert capture["backend"] == "bpftrace" and capture["auto"]["chosen"] == "bpftrace"
    assert capture["auto"]["why"].startswith("bpftrace is the cheapest rung that works here")
    assert _drops(capture, "NO_SOCKET") == {"__udp4_lib_rcv": 25}


# (options, what check mode and the real run both say on a lab host: status, backend, reason)
CHECK_VS_REAL = [
    ({}, ("ok", "bpftrace", None)),
    ({"backend": "bpftrace", "netns": "all", "dport": 9000}, ("ok", "bpftrace", None)),
    ({"backend": "perf", "stacks": True}, ("ok", "perf", None)),
    ({"backend": "tracefs"}, ("ok", "tracefs", None)),
    ({"backend": "perf", "dport": 8000},
     ("failed", "perf", "port filter needs the bpftrace backend (only it reads packet headers)")),
    ({"backend": "dropwatch"},
     ("unavailable", "dropwatch", "dropwatch not installed (role dropscope.drops.dropwatch)")),
]


@pytest.mark.parametrize("options,expected", CHECK_VS_REAL)
def test_check_mode_predicts_the_real_run_on_a_lab_host(lab3, clean_state, options, expected):
    """drop_capture in check mode, then for real, on the same lab host: same backend, status and reason."""
    netns = lab3["hosts"]["h3"]["netns"]
    args = dict(options, duration=1, max_event_rate=0)  # no rate guard: the real command keeps the duration
    check = _module(netns, "drop_capture", dict(args, _ansible_check_mode=True))["capture"]
    real = _module(netns, "drop_capture", args)["capture"]
    status, backend, reason = expected
    assert (real["status"], real["backend"], real["reason"]) == expected, real
    if status == "ok":
        assert (check["status"], check["backend"], check["reason"]) == ("check_mode", backend, None)
        assert check["auto"]["chosen"] == real["auto"]["chosen"] == backend
        assert (check["scope"], check.get("port_filter")) == (real["scope"], real.get("port_filter"))
        if backend == "tracefs":  # the private instance's name is random
            assert check["command"][::2] == real["command"][::2]
        else:
            assert check["command"] == real["command"]
    else:
        assert check == real  # a refusal: the same capture, nothing started


@pytest.fixture(scope="module")
def built_dropwatch(tmp_path_factory):
    """dropwatch built from the shipped tarball by the real role through ansible-playbook."""
    assert TARBALL.exists(), f"{TARBALL} missing"
    work = tmp_path_factory.mktemp("dropwatch")
    play = work / "play.yml"
    play.write_text("- name: Build dropwatch\n  hosts: localhost\n  gather_facts: false\n"
                    "  roles:\n    - role: dropscope.drops.dropwatch\n")

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ansible-playbook", "-i", "localhost,", "-c", "local", str(play),
                               "-e", "ansible_python_interpreter=/usr/bin/python3",
                               "-e", f"dropwatch_source_tarball={TARBALL}", "-e", f"dropwatch_prefix={work}/prefix",
                               "-e", f"dropwatch_build_dir={work}/build", *extra],
                              cwd=REPO, capture_output=True, text=True, timeout=900)

    return {"run": run, "prefix": work / "prefix", "work": work, "first": run()}


def test_dropwatch_role_builds_verified_and_idempotent(built_dropwatch):
    first = built_dropwatch["first"]
    assert first.returncode == 0, first.stdout[-4000:]
    prefix = built_dropwatch["prefix"]
    assert (prefix / "bin" / "dropwatch").exists()
    marker = (prefix / "share" / "dropscope" / "dropwatch.installed").read_text()
    assert "version=1.5.5" in marker
    assert "sha256=2233d95371c16c8ced6d3b7b047dd925268b94d565f54cb9abf11a1cd6bc9ed2" in marker
    assert not (built_dropwatch["work"] / "build").exists()
    again = built_dropwatch["run"]()
    assert again.returncode == 0 and "changed=0" in again.stdout, again.stdout[-3000:]
    check = built_dropwatch["run"]("--check")
    assert check.returncode == 0 and "changed=0" in check.stdout


def test_dropwatch_role_refuses_a_wrong_checksum(built_dropwatch, tmp_path):
    bad = built_dropwatch["run"]("-e", "dropwatch_source_sha256=" + "0" * 64,
                                 "-e", f"dropwatch_prefix={tmp_path}/p", "-e", f"dropwatch_build_dir={tmp_path}/b")
    assert bad.returncode == 2
    assert "Checksum mismatch" in bad.stdout and "refusing to build" in bad.stdout
    assert not (tmp_path / "b").exists() and not (tmp_path / "p" / "bin" / "dropwatch").exists()


def test_dropwatch_fails_cleanly_without_net_dm(lab3, built_dropwatch, clean_state):
    bindir = f"{built_dropwatch['prefix']}/bin:"
    netns = lab3["hosts"]["h1"]["netns"]
    caps = _module(netns, "drop_capabilities", {}, path_extra=bindir)["capabilities"]
    ladder = {rung["backend"]: rung for rung in caps["ladder"]}
    assert caps["tools"]["dropwatch"]["version"] == "1.5.5"
    assert ladder["dropwatch"]["reason"] == "kernel has no NET_DM (CONFIG_NET_DROP_MONITOR)"
    capture = _module(netns, "drop_capture", {"duration": 1, "backend": "dropwatch"}, path_extra=bindir)["capture"]
    assert (capture["status"], capture["reason"]) == ("unavailable", "kernel has no NET_DM (CONFIG_NET_DROP_MONITOR)")
    # The binary itself, driven by the backend: it prints that NET_DM is missing and the backend says so.
    sys.path.insert(0, str(COLLECTIONS))
    from ansible_collections.dropscope.drops.plugins.module_utils.capture_backends import new_capture
    from ansible_collections.dropscope.drops.plugins.module_utils.capture_guard import CaptureGuard
    from ansible_collections.dropscope.drops.plugins.module_utils.dropwatch_capture import run_dropwatch_capture

    direct = new_capture("dropwatch", 1, False, None, None, 0)
    with CaptureGuard(deadline_s=30) as guard:
        run_dropwatch_capture(direct, guard, f"{built_dropwatch['prefix']}/bin/dropwatch", 1)
    assert (direct["status"], direct["reason"]) == ("unavailable", "kernel has no NET_DM (CONFIG_NET_DROP_MONITOR)")
