"""What a capture costs the host that drops: steady-state throughput kept, start-up cost, per backend.

A bounded drop workload runs in a lab network namespace of its own (`dsbench-<pid>`, loopback only):
UDP datagrams to a closed port (NO_SOCKET) or to a port an nft rule drops (NETFILTER_DROP), from one
core. The sender logs (time, packets sent) every 50 ms, so throughput is read over exact windows.

Each round measures, per backend, a pair: no capture, then the capture (alternating, so slow drift
hits both alike). With a capture, the sender starts first (so the rate guard's probe sees the load),
drop_capture starts in the namespace as Ansible would, the benchmark waits for the capture to be live
(the guard's `ready` marker in the capture's temporary directory; for perf, which has none, the
`perf.data` file appearing), lets it settle, and then measures the sender over a fixed window while
the capture runs. "kept" is that window's throughput over the same round's no-capture window; CPU is
all cores (from /proc/stat) per drop in the window, beside the no-capture figure. Start-up
is reported on its own: seconds from module start to live, and CPU (all cores, from /proc/stat) used
in that time beyond what the sender alone uses.

Throughput on this VM moves by ±10 % from one 3 s window to the next, so two steadier measures stand
beside it. **kept by sender CPU**: the sender's own CPU time per packet (/proc/PID/schedstat; on loopback
the kernel drops each packet in the sender's context, and this kernel charges that softirq time to it),
no capture over capture in the same pair: what a sender with a core to itself keeps, whatever else runs.
And the BPF program's own cost, exactly: with `kernel.bpf_stats_enabled` (set for the run, restored after) the kernel
times every run of each BPF program; the window's run time over its runs is the program's ns per drop
(bpftrace configs and the empty program; the timing itself adds ~20 ns to each alike). Beyond the
empty program's, that cost over the sender's time per drop (1 / its no-capture rate) is the share of
throughput the program itself takes: the gap the kept ratios measure, without their noise.

    sudo python3 benchmarks/capture_overhead.py [--rounds 3] [--window 3] [--kinds noport,firewall] [--no-program-cost]

Every traffic loop is bounded in packets and seconds and sends only to 127.0.0.1 inside the namespace.
The namespace, its nft table and the capture's temporary directory are removed on every exit path.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COLLECTIONS = REPO / "collections"
sys.path.insert(0, str(COLLECTIONS))
from ansible_collections.dropscope.drops.plugins.module_utils.capture_backends import guard_plan  # noqa: E402

BPF_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")
TRACEPOINT_PROG_TYPE = "5"  # BPF_PROG_TYPE_TRACEPOINT in fdinfo
NETNS = f"dsbench-{os.getpid()}"
MAX_SECONDS = 30.0
MAX_PACKETS = 20_000_000
SETTLE_S = 0.5  # after the capture is live, before the window starts
STARTUP_MAX_S = 20.0
MAX_EVENT_RATE = 50000  # the module's default

# Sends until `seconds` or `limit` packets; prints "monotonic sent" every 50 ms and at the end.
FLOOD = """
import socket, sys, time
seconds, port, limit = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
payload, addr = b"x" * 16, ("127.0.0.1", port)
sent, start = 0, time.monotonic()
end, tick = start + seconds, start
print(start, 0, flush=True)
while sent < limit:
    for _ in range(500):
        sock.sendto(payload, addr)
    sent += 500
    now = time.monotonic()
    if now >= tick + 0.05:
        tick = now
        print(now, sent, flush=True)
        if now >= end:
            break
print(time.monotonic(), sent, flush=True)
"""

CONFIGS = {
    "bpftrace netns=self, guard off (full program)": {"backend": "bpftrace", "netns": "self", "max_event_rate": 0},
    "default: auto → bpftrace netns=self, guard on": {},
    "perf, guard off": {"backend": "perf", "max_event_rate": 0},
    "perf -g (stacks), guard on": {"backend": "perf", "stacks": True},
    "tracefs, guard off": {"backend": "tracefs", "max_event_rate": 0},
}
# The least a tracepoint capture can cost: bpftrace with an empty program on the same tracepoint (it
# stops itself after 60 s). Measured in the same rounds as the configs above; the goal (issue 11): the
# default keeps within 0.05 of it.
EMPTY = "empty bpftrace program on skb:kfree_skb (the floor)"
EMPTY_PROGRAM = 'BEGIN { printf("READY\\n"); } tracepoint:skb:kfree_skb { } interval:s:60 { exit(); }'
DEFAULT = "default: auto → bpftrace netns=self, guard on"
GOAL_GAP = 0.05
PORTS = {"noport": 9, "firewall": 8000}
HZ = os.sysconf("SC_CLK_TCK")


def _netns(*argv: str) -> list[str]:
    return ["ip", "netns", "exec", NETNS, *argv]


def _busy_s() -> float:
    """CPU seconds used so far on all cores (all but idle and iowait), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields]
    return (sum(values) - values[3] - values[4]) / HZ


def _program_runs() -> dict[tuple[str, str], tuple[int, int]]:
    """(run_time_ns, run_cnt) of every tracepoint BPF program a bpftrace process holds, by (pid, fd)."""
    runs = {}
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or (proc / "comm").read_text().strip() != "bpftrace":
                continue
            for fd in (proc / "fd").iterdir():
                if "bpf-prog" not in os.readlink(fd):
                    continue
                info = dict(line.split(":\t", 1) for line in (proc / "fdinfo" / fd.name).read_text().splitlines()
                            if ":\t" in line)
                if info.get("prog_type") == TRACEPOINT_PROG_TYPE and "run_cnt" in info:
                    runs[(proc.name, fd.name)] = (int(info["run_time_ns"]), int(info["run_cnt"]))
        except OSError:
            continue  # a process or fd that went away
    return runs


def _ns_per_run(begin: dict, end: dict) -> float | None:
    """The programs' run time per run between two `_program_runs` (None without runs or bpf_stats)."""
    time_ns = sum(end[key][0] - begin[key][0] for key in end if key in begin)
    runs = sum(end[key][1] - begin[key][1] for key in end if key in begin)
    return time_ns / runs if runs and time_ns else None


def _sleep_until(when: float) -> None:
    delay = when - time.monotonic()
    if delay > 0:
        time.sleep(delay)


class Flood:
    """The bounded sender, in its own process group; `sent_at(t)` interpolates its (time, sent) log."""

    def __init__(self, seconds: float, port: int):
        self.proc = subprocess.Popen(_netns(sys.executable, "-c", FLOOD, str(min(seconds, MAX_SECONDS)),
                                            str(port), str(MAX_PACKETS)),
                                     stdout=subprocess.PIPE, text=True, start_new_session=True)
        self.log = [tuple(float(v) for v in self.proc.stdout.readline().split())]
        self.start = self.log[0][0]

    def stop(self, wait: bool = False) -> None:
        """Stop the sender (or with `wait`, let it reach its own bound) and read the rest of its log."""
        if not wait and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        out, _ = self.proc.communicate(timeout=30)
        self.log += [tuple(float(v) for v in line.split()) for line in out.splitlines() if line.strip()]

    def sent_at(self, when: float) -> float:
        for (t0, n0), (t1, n1) in zip(self.log, self.log[1:], strict=False):
            if t0 <= when <= t1:
                return n0 + (n1 - n0) * (when - t0) / (t1 - t0) if t1 > t0 else n1
        raise ValueError(f"the sender's log does not cover t={when:.3f}")

    def rate(self, begin: float, end: float) -> float:
        return (self.sent_at(end) - self.sent_at(begin)) / (end - begin)

    def runtime_ns(self) -> int:
        """The sender's CPU time so far, ns (/proc/PID/schedstat): with loopback the kernel drops each packet
        in the sender's own context (its softirq time is its own without IRQ_TIME_ACCOUNTING, as here)."""
        return int(Path(f"/proc/{self.proc.pid}/schedstat").read_text().split()[0])

    def ns_per_drop(self, begin: float, end: float, runtime: tuple[int, int]) -> float:
        """The sender's CPU ns per packet between `begin` and `end`, from its runtime read at both."""
        return (runtime[1] - runtime[0]) / (self.sent_at(end) - self.sent_at(begin))


def measure_none(port: int, window: float) -> dict:
    flood = Flood(1.0 + window + 0.3, port)
    try:
        begin = flood.start + 1.0
        _sleep_until(begin)
        busy, run0 = _busy_s(), flood.runtime_ns()
        _sleep_until(begin + window)
        cpu, run1 = _busy_s() - busy, flood.runtime_ns()
    finally:
        flood.stop(wait=True)
    return {"rate": flood.rate(begin, begin + window), "cpu_per_s": cpu / window,
            "sender_ns": flood.ns_per_drop(begin, begin + window, (run0, run1))}


def measure_empty(port: int, window: float, none: dict) -> dict:
    """The empty program's pair: bpftrace in the namespace (tracefs mounted in its private mount
    namespace, as drop_capture does), live at its READY line, then the same measured window."""
    flood = Flood(STARTUP_MAX_S + SETTLE_S + window + 1.0, port)
    script = "mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing; exec bpftrace -e \"$0\""
    proc = None
    try:
        _sleep_until(flood.start + 0.3)
        started = time.monotonic()
        proc = subprocess.Popen(_netns("sh", "-c", script, EMPTY_PROGRAM), stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, start_new_session=True)
        line = ""
        while "READY" not in line:  # "Attaching N probes..." comes first
            line = proc.stdout.readline()
            if not line:
                return {"error": "bpftrace never went live"}
        ready = time.monotonic()
        begin = ready + SETTLE_S
        _sleep_until(begin)
        busy, runs, run0 = _busy_s(), _program_runs(), flood.runtime_ns()
        _sleep_until(begin + window)
        cpu, program_ns, run1 = _busy_s() - busy, _ns_per_run(runs, _program_runs()), flood.runtime_ns()
        time.sleep(0.15)
        flood.stop()
    finally:
        if flood.proc.poll() is None:
            flood.stop()
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=30)
    rate = flood.rate(begin, begin + window)
    return {"rate": rate, "kept": rate / none["rate"], "cpu_us": cpu / window / rate * 1e6,
            "none_cpu_us": none["cpu_per_s"] / none["rate"] * 1e6, "startup_s": ready - started,
            "startup_cpu": 0.0, "size": 0, "guard": {}, "status": "ok", "backend": "bpftrace", "events": 0,
            "cut": None, "error": None, "program_ns": program_ns,
            "kept_cpu": none["sender_ns"] / flood.ns_per_drop(begin, begin + window, (run0, run1))}


def _live(tmpdir: str) -> bool:
    root = Path(tmpdir)
    return any(root.glob("dropscope-capture-*/ready")) or any(root.glob("dropscope-capture-*/perf.data"))


def measure_capture(config: dict, port: int, window: float, none: dict) -> dict:
    """Sender first, then drop_capture; wait until live, settle, measure `window` s while it captures."""
    need = SETTLE_S + window + 1.0
    duration = math.ceil(need)
    # The guard may capture a shorter window than the duration: ask for enough that the window fits (by the
    # module's own rule, at a rate a little above the one just measured; auto is bpftrace here).
    limit, backend = config.get("max_event_rate", MAX_EVENT_RATE), config.get("backend", "bpftrace")
    while duration < 120 and guard_plan(duration, bool(config.get("stacks")), limit, none["rate"] * 1.2,
                                        backend=backend)["window_s"] < need:
        duration += 1
    tmpdir = tempfile.mkdtemp(prefix="dsbench-")
    os.chmod(tmpdir, 0o700)
    args = dict(config, duration=duration, tmpdir=tmpdir)
    env = {"PYTHONPATH": str(COLLECTIONS), "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"}
    module = "ansible_collections.dropscope.drops.plugins.modules.drop_capture"
    flood = Flood(STARTUP_MAX_S + SETTLE_S + window + 1.0, port)
    proc = None
    try:
        _sleep_until(flood.start + 0.3)
        busy0, started = _busy_s(), time.monotonic()
        proc = subprocess.Popen(_netns(sys.executable, "-m", module), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                start_new_session=True)
        proc.stdin.write(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
        proc.stdin.close()
        proc.stdin = None  # communicate() below only reads
        ready = None
        while time.monotonic() < started + STARTUP_MAX_S and proc.poll() is None:
            if _live(tmpdir):
                ready = time.monotonic()
                break
            time.sleep(0.01)
        if ready is None:
            out, err = proc.communicate(timeout=120)
            return {"error": "capture never went live: " + (out[-300:] or err[-300:])}
        startup_cpu = _busy_s() - busy0 - none["cpu_per_s"] * (ready - started)
        begin = ready + SETTLE_S
        _sleep_until(begin)
        busy1, runs, run0 = _busy_s(), _program_runs(), flood.runtime_ns()
        _sleep_until(begin + window)
        cpu, program_ns, run1 = _busy_s() - busy1, _ns_per_run(runs, _program_runs()), flood.runtime_ns()
        time.sleep(0.15)  # one more log line past the window's end
        flood.stop()
        out, err = proc.communicate(timeout=duration + 120)
    finally:
        if flood.proc.poll() is None:
            flood.stop()
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the module's guard stops its tracer and cleans up
            proc.wait(timeout=30)
        shutil.rmtree(tmpdir, ignore_errors=True)
    result = json.loads(out) if out.strip() else {"error": err[-500:]}
    capture = result.get("capture", {})
    end = begin + window
    cut = None
    if capture.get("backend") in ("bpftrace", "tracefs") and capture.get("duration_s"):
        # These start counting at `ready`: a window past the capture's end would measure no capture.
        capture_end = ready + capture["duration_s"] - 0.05
        if capture_end < end:
            end, cut = capture_end, round(capture_end - begin, 2)
    if end - begin < 1.0:
        return {"error": f"capture too short to measure ({capture.get('duration_s')} s)"}
    rate = flood.rate(begin, end)
    return {"rate": rate, "kept": rate / none["rate"], "cpu_us": cpu / window / rate * 1e6,
            "none_cpu_us": none["cpu_per_s"] / none["rate"] * 1e6,
            "startup_s": ready - started, "startup_cpu": startup_cpu, "size": len(json.dumps(capture)),
            "guard": capture.get("guard") or {}, "status": capture.get("status"), "backend": capture.get("backend"),
            "events": capture.get("events", 0), "cut": cut, "program_ns": program_ns,
            "kept_cpu": None if cut else none["sender_ns"] / flood.ns_per_drop(begin, begin + window, (run0, run1)),
            "error": result.get("msg") if result.get("failed") else None}


def _mean(rows: list[dict], key: str) -> float | None:
    """Mean of KEY over the rows that measured it (None: none did, e.g. no BPF program or no bpf_stats)."""
    values = [r[key] for r in rows if not r.get("error") and r.get(key)]
    return statistics.mean(values) if values else None


def _mean_cell(rows: list[dict], key: str, spec: str) -> str:
    value = _mean(rows, key)
    return "–" if value is None else format(value, spec)


def _note(rows: list[dict]) -> str:
    """Backend and what the guard did, shortened: "bpftrace: lean program; captured 5 s of 23 s"."""
    guard = rows[-1].get("guard") or {}
    short = []
    for action in guard.get("actions") or []:
        if action.startswith("bpftrace: "):
            action = action[len("bpftrace: "):]
        short.append(action.split(" (")[0].split(":")[0])
    note = "; ".join(short) or ("guard off" if not guard.get("max_event_rate") else "guard idle")
    note = "/".join(sorted({str(r.get("backend")) for r in rows})) + ": " + note
    statuses = sorted({str(r.get("status")) for r in rows})
    if statuses != ["ok"]:
        note += " (status: %s)" % ", ".join(statuses)
    cuts = [r["cut"] for r in rows if r.get("cut")]
    if cuts:
        note += f" (window cut to {min(cuts):g} s)"
    return note


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=float, default=3.0, help="seconds measured per capture")
    parser.add_argument("--kinds", default="noport,firewall")
    parser.add_argument("--configs", default=";".join([*CONFIGS, EMPTY]), help="names separated by ;")
    parser.add_argument("--no-program-cost", dest="program_cost", action="store_false",
                        help="leave kernel.bpf_stats_enabled alone (no ns/drop column)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root (network namespaces, tracing)", file=sys.stderr)
        return 1
    if not 1.0 <= args.window <= 10.0 or not 0 < args.rounds <= 10:
        print("--window must be in [1, 10] s and --rounds 1..10", file=sys.stderr)
        return 1
    kinds = [k for k in args.kinds.split(",") if k]
    configs = [c for c in args.configs.split(";") if c]
    stats_before = BPF_STATS.read_text().strip() if BPF_STATS.exists() else None
    subprocess.run(["ip", "netns", "add", NETNS], check=True)
    try:
        if args.program_cost and stats_before is not None:
            BPF_STATS.write_text("1")  # restored below
        subprocess.run(_netns("ip", "link", "set", "lo", "up"), check=True)
        if "firewall" in kinds:
            subprocess.run(_netns("nft", "add", "table", "inet", "dsbench"), check=True)
            subprocess.run(_netns("nft", "add", "chain", "inet", "dsbench", "input",
                                  "{ type filter hook input priority filter; policy accept; }"), check=True)
            subprocess.run(_netns("nft", "add", "rule", "inet", "dsbench", "input", "udp", "dport",
                                  str(PORTS["firewall"]), "drop"), check=True)
        print(f"{os.cpu_count()} CPUs, {args.rounds} rounds, one sending core; per pair: no capture "
              f"{args.window:g} s, then capture live + {SETTLE_S:g} s settle, {args.window:g} s measured")
        for kind in kinds:
            samples: dict[str, list[dict]] = {name: [] for name in configs}
            nones: list[dict] = []
            for _round in range(args.rounds):
                for name in configs:
                    none = measure_none(PORTS[kind], args.window)
                    nones.append(none)
                    row = (measure_empty(PORTS[kind], args.window, none) if name == EMPTY
                           else measure_capture(CONFIGS[name], PORTS[kind], args.window, none))
                    row["none_rate"] = none["rate"]
                    samples[name].append(row)
                    if row.get("error"):
                        print(f"  {kind} / {name}: {row['error']}", file=sys.stderr)
            base = statistics.mean(n["rate"] for n in nones)
            print(f"\n{kind}: {base:,.0f} drops/s without capture (mean of {len(nones)} windows, "
                  f"{min(n['rate'] for n in nones):,.0f}–{max(n['rate'] for n in nones):,.0f})")
            print("| capture | drops/s (capture) | drops/s (paired no capture) | kept | kept min | "
                  "kept by sender CPU | CPU µs/drop, all cores (no capture) | BPF program ns/drop | "
                  "start-up to live s | start-up extra CPU s | result bytes | backend: guard |")
            print("|---|---|---|---|---|---|---|---|---|---|---|---|")
            for name in configs:
                rows = [r for r in samples[name] if not r.get("error")]
                if not rows:
                    print(f"| {name} | failed: {samples[name][-1]['error']} |")
                    continue
                kept = [r["kept"] for r in rows]
                print(f"| {name} | {statistics.mean(r['rate'] for r in rows):,.0f} | "
                      f"{statistics.mean(r['none_rate'] for r in rows):,.0f} | {statistics.mean(kept):.2f} | "
                      f"{min(kept):.2f} | {_mean_cell(rows, 'kept_cpu', '.3f')} | "
                      f"{statistics.mean(r['cpu_us'] for r in rows):.2f} "
                      f"({statistics.mean(r['none_cpu_us'] for r in rows):.2f}) | "
                      f"{_mean_cell(rows, 'program_ns', '.0f')} | "
                      f"{statistics.mean(r['startup_s'] for r in rows):.2f} | "
                      f"{statistics.mean(r['startup_cpu'] for r in rows):.2f} | {max(r['size'] for r in rows)} | "
                      f"{_note(rows)} |")
            kept_of = {name: statistics.mean(r["kept"] for r in samples[name] if not r.get("error"))
                       for name in (DEFAULT, EMPTY) if any(not r.get("error") for r in samples.get(name, []))}
            if len(kept_of) == 2:
                gap = kept_of[EMPTY] - kept_of[DEFAULT]
                print(f"goal ({kind}): the default within {GOAL_GAP} of the empty program: kept "
                      f"{kept_of[DEFAULT]:.2f} vs {kept_of[EMPTY]:.2f}, gap {gap:.2f}: "
                      f"{'met' if gap <= GOAL_GAP else 'NOT met'}")
                by_cpu = {name: _mean(samples[name], "kept_cpu") for name in (DEFAULT, EMPTY)}
                if None not in by_cpu.values():
                    gap = by_cpu[EMPTY] - by_cpu[DEFAULT]
                    print(f"goal ({kind}), kept by the sender's CPU per drop: {by_cpu[DEFAULT]:.3f} vs "
                          f"{by_cpu[EMPTY]:.3f}, gap {gap:.3f}: {'met' if gap <= GOAL_GAP else 'NOT met'}")
                costs = {name: _mean(samples[name], "program_ns") for name in (DEFAULT, EMPTY)}
                if None not in costs.values():
                    extra = costs[DEFAULT] - costs[EMPTY]
                    share = extra * 1e-9 * base  # of the sender's time per drop (1 / base s)
                    print(f"goal ({kind}), by the program's own cost: {costs[DEFAULT]:.0f} vs {costs[EMPTY]:.0f} "
                          f"ns/drop, {extra:.0f} ns more = {share:.3f} of the sender's {1e9 / base:.0f} ns per drop: "
                          f"{'met' if share <= GOAL_GAP else 'NOT met'}")
            sys.stdout.flush()
    finally:
        subprocess.run(["ip", "netns", "del", NETNS], check=False)
        if stats_before is not None:
            BPF_STATS.write_text(stats_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
