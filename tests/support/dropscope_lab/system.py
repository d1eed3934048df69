"""Thin wrappers around ip/tc/nft and /proc used by the lab (argv lists only, never a shell)."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from dropscope_lab.model import LabError

NETNS_DIR = Path("/run/netns")


def run(argv: Sequence[str], *, check: bool = True, stdin: str | None = None, timeout: float = 30.0,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ARGV (with ENV, if given), capture its output, and raise LabError (with stderr) if CHECK and it fails."""
    try:
        proc = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=timeout,
                              check=False, env=env)
    except FileNotFoundError:
        raise LabError(f"{argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"`{shlex.join(argv)}` did not finish within {timeout:g} s") from None
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise LabError(f"`{shlex.join(argv)}` failed (exit {proc.returncode}): {detail}")
    return proc


def ip_batch(commands: Iterable[str], *, netns: str | None = None, force: bool = False,
             check: bool = True) -> subprocess.CompletedProcess[str]:
    """Feed COMMANDS (ip batch lines, built from validated names and addresses) to one `ip -batch -`."""
    argv = ["ip"]
    if netns:
        argv += ["-n", netns]
    if force:
        argv.append("-force")
    argv += ["-batch", "-"]
    return run(argv, stdin="\n".join(commands) + "\n", check=check)


def in_netns(netns: str, argv: Sequence[str]) -> list[str]:
    """ARGV run inside NETNS (`ip netns exec`, which execs: the pid stays the command's)."""
    return ["ip", "netns", "exec", netns, *argv]


def list_netns() -> list[str]:
    """Names of all named network namespaces."""
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def list_links(netns: str | None = None) -> list[dict[str, Any]]:
    """`ip -j link show` (in NETNS if given)."""
    argv = ["ip", "-j"] + (["-n", netns] if netns else []) + ["link", "show"]
    return json.loads(run(argv).stdout or "[]")


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def netns_pids(netns: str) -> list[int]:
    """`ip netns pids NETNS` (empty if the namespace is gone)."""
    proc = run(["ip", "netns", "pids", netns], check=False)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def cmdline(pid: int) -> list[str]:
    """argv of PID ([] if it is gone or a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def is_alive(pid: int) -> bool:
    """True if PID exists and is not a zombie (PID 1 here may reap orphans only after a while)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def netns_inode(pid: int | str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def kill_and_wait(pids: Iterable[int], *, sig: int = signal.SIGKILL, timeout: float = 5.0) -> list[int]:
    """Send SIG to PIDS, wait until they are dead; return those still alive after TIMEOUT."""
    pending = set(pids)
    for pid in list(pending):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pending.discard(pid)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        pending = {p for p in pending if is_alive(p)}
        if pending:
            time.sleep(0.01)
    return sorted(pending)


def _tcp_peer_inodes(addresses: set[str]) -> set[int]:
    """Socket inodes (root netns) of TCP connections whose remote end is one of ADDRESSES."""
    wanted = set()
    for addr in addresses:
        packed = bytes(int(o) for o in addr.split("."))
        wanted.add(packed[::-1].hex().upper())  # /proc/net/tcp prints the address as a host-order int
    inodes: set[int] = set()
    try:
        lines = Path("/proc/self/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return inodes
    for line in lines:
        fields = line.split()
        if len(fields) > 9 and fields[2].split(":")[0] in wanted:
            inodes.add(int(fields[9]))
    inodes.discard(0)
    return inodes


def ssh_clients_of(addresses: set[str]) -> list[int]:
    """Pids of ssh clients in our netns talking to ADDRESSES.

    A client counts if an argv word contains an address (as a whole dotted quad) or if it holds a
    TCP socket to one: ControlPersist masters rename themselves to `ssh: PATH [mux]`, so only the
    socket shows where they are connected.
    """
    if not addresses:
        return []
    word = re.compile(r"(?<![0-9.])(" + "|".join(re.escape(a) for a in addresses) + r")(?![0-9]|\.[0-9])")
    inodes = _tcp_peer_inodes(addresses)
    own_ns = netns_inode("self")
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        argv = cmdline(pid)
        if not argv or netns_inode(pid) != own_ns:
            continue
        try:
            exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
        except OSError:
            continue
        if exe != "ssh":
            continue
        if any(word.search(a) for a in argv) or (inodes and _holds_socket(pid, inodes)):
            found.append(pid)
    return found


def _holds_socket(pid: int, inodes: set[int]) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and int(target[8:-1]) in inodes:
            return True
    return False
