"""What a capture costs the host that drops: throughput kept and CPU per event, per backend, same run.

A bounded drop workload runs in a lab network namespace of its own (`dsbench-<pid>`, loopback only):
UDP datagrams to a closed port (NO_SOCKET) or to a port an nft rule drops (NETFILTER_DROP), from one
core, for a fixed time. Each round measures the workload without capture, then with each backend
(drop_capture run in the namespace, as Ansible would, for SECONDS - 3 s while the workload runs SECONDS
s, so the rate probe, the attach and the capture all happen under load), in the same run. Printed per backend: drops/s,
throughput kept (ratio to the no-capture rounds), total CPU (all cores, from /proc/stat) per event
beyond the no-capture cost, and the size of the JSON result.

    sudo python3 benchmarks/capture_overhead.py [--rounds 2] [--seconds 8] [--kinds noport,firewall]

The namespace and its nft table are removed on every exit path. No traffic leaves the namespace.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COLLECTIONS = REPO / "collections"
NETNS = f"dsbench-{os.getpid()}"
MAX_SECONDS = 30.0
MAX_PACKETS = 20_000_000

FLOOD = """
import socket, sys, time
seconds, port, limit = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
payload, addr = b"x" * 16, ("127.0.0.1", port)
sent, start = 0, time.monotonic()
end = start + seconds
while sent < limit and time.monotonic() < end:
    for _ in range(1000):
        sock.sendto(payload, addr)
    sent += 1000
print(sent / (time.monotonic() - start))
"""

CONFIGS = {
    "none": None,
    "bpftrace netns=self, guard off": {"backend": "bpftrace", "netns": "self", "max_event_rate": 0},
    "bpftrace netns=self, guard on (default)": {"backend": "bpftrace", "netns": "self"},
    "perf, guard off": {"backend": "perf", "max_event_rate": 0},
    "perf -g (stacks), guard off": {"backend": "perf", "stacks": True, "max_event_rate": 0},
    "perf -g (stacks), guard on": {"backend": "perf", "stacks": True},
    "tracefs, guard off": {"backend": "tracefs", "max_event_rate": 0},
}
PORTS = {"noport": 9, "firewall": 8000}


def _netns(*argv: str) -> list[str]:
    return ["ip", "netns", "exec", NETNS, *argv]


def _busy_jiffies() -> int:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields]
    return sum(values) - values[3] - values[4]  # all but idle and iowait


def _flood(seconds: float, port: int) -> float:
    out = subprocess.run(_netns(sys.executable, "-c", FLOOD, str(seconds), str(port), str(MAX_PACKETS)),
                         capture_output=True, text=True, check=True, timeout=seconds + 30).stdout
    return float(out.strip())


def measure(config: dict | None, seconds: float, port: int, inode: int) -> dict:
    if config is None:
        busy = _busy_jiffies()
        rate = _flood(seconds, port)
        return {"rate": rate, "cpu_s": (_busy_jiffies() - busy) / os.sysconf("SC_CLK_TCK"), "size": 0,
                "events": 0, "guard": None}
    # The workload runs the whole time: the rate guard's probe, the attach and the capture all see it.
    args = dict(config, duration=max(1, int(seconds - 3)))
    result: dict = {}
    env = {"PYTHONPATH": str(COLLECTIONS), "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"}
    flood: dict = {}

    def run_flood() -> None:
        busy = _busy_jiffies()
        flood["rate"] = _flood(seconds, port)
        flood["cpu_s"] = (_busy_jiffies() - busy) / os.sysconf("SC_CLK_TCK")

    thread = threading.Thread(target=run_flood)
    thread.start()
    time.sleep(0.3)
    module = "ansible_collections.dropscope.drops.plugins.modules.drop_capture"
    proc = subprocess.run(_netns(sys.executable, "-m", module),
                          input=json.dumps({"ANSIBLE_MODULE_ARGS": args}), capture_output=True, text=True,
                          env=env, timeout=seconds + 120)
    result.update(json.loads(proc.stdout) if proc.stdout.strip() else {"error": proc.stderr[-500:]})
    thread.join()
    capture = result.get("capture", {})
    return {"rate": flood["rate"], "cpu_s": flood["cpu_s"], "size": len(json.dumps(capture)),
            "events": capture.get("events", 0), "guard": capture.get("guard"), "status": capture.get("status"),
            "error": result.get("error")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--kinds", default="noport,firewall")
    parser.add_argument("--configs", default=";".join(CONFIGS), help="names separated by ;")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root (network namespaces, tracing)", file=sys.stderr)
        return 1
    if not 0 < args.seconds <= MAX_SECONDS or not 0 < args.rounds <= 10:
        print(f"--seconds must be in (0, {MAX_SECONDS:g}] and --rounds 1..10", file=sys.stderr)
        return 1
    kinds = [k for k in args.kinds.split(",") if k]
    configs = [c for c in args.configs.split(";") if c]
    subprocess.run(["ip", "netns", "add", NETNS], check=True)
    try:
        subprocess.run(_netns("ip", "link", "set", "lo", "up"), check=True)
        inode = os.stat(f"/run/netns/{NETNS}").st_ino
        if "firewall" in kinds:
            subprocess.run(_netns("nft", "add", "table", "inet", "dsbench"), check=True)
            subprocess.run(_netns("nft", "add", "chain", "inet", "dsbench", "input",
                                  "{ type filter hook input priority filter; policy accept; }"), check=True)
            subprocess.run(_netns("nft", "add", "rule", "inet", "dsbench", "input", "udp", "dport",
                                  str(PORTS["firewall"]), "drop"), check=True)
        print(f"{os.cpu_count()} CPUs, {args.rounds} rounds x {args.seconds:g} s per measurement, one sending core")
        for kind in kinds:
            samples: dict[str, list[dict]] = {name: [] for name in configs}
            for _round in range(args.rounds):
                for name in configs:
                    samples[name].append(measure(CONFIGS[name], args.seconds, PORTS[kind], inode))
            base = statistics.mean(s["rate"] for s in samples["none"]) if "none" in samples else None
            base_cpu = statistics.mean(s["cpu_s"] / (s["rate"] * args.seconds) for s in samples["none"])
            print(f"\n{kind}: {base:,.0f} drops/s without capture")
            print("| capture | drops/s | kept | kept min | extra CPU µs/event (all cores) | result bytes | guard |")
            print("|---|---|---|---|---|---|---|")
            for name in configs:
                rows = samples[name]
                rate = statistics.mean(r["rate"] for r in rows)
                kept = [r["rate"] / base for r in rows]
                cpu = statistics.mean(r["cpu_s"] / (r["rate"] * args.seconds) for r in rows) - base_cpu
                guard = rows[-1]["guard"] or {}
                note = "; ".join(guard.get("actions") or []) or ("off" if not guard.get("max_event_rate") else "idle")
                if any(r.get("status") not in (None, "ok") for r in rows):
                    note += " (status: %s)" % ", ".join(sorted({str(r.get("status")) for r in rows}))
                print(f"| {name} | {rate:,.0f} | {statistics.mean(kept):.2f} | {min(kept):.2f} | "
                      f"{cpu * 1e6:.2f} | {max(r['size'] for r in rows)} | {note} |")
    finally:
        subprocess.run(["ip", "netns", "del", NETNS], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
