"""Bounded UDP traffic for the dropscope lab.

Run inside a lab host's network namespace as
`ip netns exec NS python -m dropscope_lab.traffic {send,receive} ...`, or imported by the lab in the
root namespace. Every loop is bounded by a packet count and a time limit, and destinations must be lab
addresses (198.18.0.0/15) or loopback.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import socket
import sys
import time

LAB_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
MAX_PACKETS = 1_000_000
MAX_SECONDS = 3600.0
PACE_EVERY = 50  # packets between pauses: keeps the per-CPU backlog (netdev_max_backlog 1000) from overflowing
PACE_PAUSE = 0.001


def check_destination(address: str) -> str:
    """Return ADDRESS if traffic may go there (lab range or loopback), else raise ValueError."""
    addr = ipaddress.IPv4Address(address)
    if not (addr in LAB_RANGE or addr.is_loopback):
        raise ValueError(f"{addr} is neither a lab address ({LAB_RANGE}) nor loopback")
    return str(addr)


def _bounded(count: int, seconds: float) -> None:
    if not 0 < count <= MAX_PACKETS:
        raise ValueError(f"packet count must be 1..{MAX_PACKETS}, not {count}")
    if not 0 < seconds <= MAX_SECONDS:
        raise ValueError(f"time limit must be in (0, {MAX_SECONDS:g}] s, not {seconds:g}")


def send_udp(dst: str, port: int, count: int, *, size: int = 64, timeout: float = 30.0,
             bind: str | None = None) -> int:
    """Send COUNT datagrams of SIZE bytes to DST:PORT, paced; stop early at TIMEOUT. Return how many went."""
    dst = check_destination(dst)
    _bounded(count, timeout)
    if not 0 < port < 65536 or not 0 < size <= 1472:
        raise ValueError("port must be 1..65535 and size 1..1472")
    deadline = time.monotonic() + timeout
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        if bind:
            sock.bind((bind, 0))
        while sent < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            sock.settimeout(remaining)
            payload = f"dropscope-lab {sent}".encode().ljust(size, b".")[:size]
            try:
                sock.sendto(payload, (dst, port))
            except TimeoutError:
                break
            sent += 1
            if sent % PACE_EVERY == 0:
                time.sleep(PACE_PAUSE)
    return sent


def receive_never_read(bind: str, port: int, rcvbuf: int, lifetime: float) -> int:
    """Bind a UDP socket with a tiny receive buffer and never read it, for LIFETIME seconds at most.

    RCVBUF 0 leaves the socket the default buffer (net.core.rmem_default), as an application that does not
    set SO_RCVBUF has.
    """
    _bounded(1, lifetime)
    bind = check_destination(bind)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if rcvbuf > 0:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((bind, port))
    ready = {"ready": True, "pid": os.getpid(), "address": bind, "port": port,
             "rcvbuf": sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)}
    print(json.dumps(ready), flush=True)
    # Let the parent go: nothing more is written, and a closed pipe must not kill us.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    time.sleep(lifetime)  # SIGTERM/SIGKILL from `inject clear`/`down` end it sooner
    sock.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dropscope_lab.traffic", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    send = sub.add_parser("send", help="send COUNT UDP datagrams to DST:PORT and print {\"sent\": N}")
    send.add_argument("--dst", required=True)
    send.add_argument("--port", type=int, required=True)
    send.add_argument("--count", type=int, required=True)
    send.add_argument("--size", type=int, default=64)
    send.add_argument("--timeout", type=float, default=30.0)
    send.add_argument("--bind", help="source address")
    recv = sub.add_parser("receive", help="hold a UDP socket with a tiny SO_RCVBUF that is never read")
    recv.add_argument("--bind", required=True)
    recv.add_argument("--port", type=int, required=True)
    recv.add_argument("--rcvbuf", type=int, default=1, help="SO_RCVBUF to set (0: keep the default buffer)")
    recv.add_argument("--lifetime", type=float, default=600.0)
    args = parser.parse_args(argv)
    try:
        if args.mode == "send":
            start = time.monotonic()
            sent = send_udp(args.dst, args.port, args.count, size=args.size, timeout=args.timeout, bind=args.bind)
            print(json.dumps({"sent": sent, "seconds": round(time.monotonic() - start, 3)}), flush=True)
            return 0 if sent == args.count else 1
        return receive_never_read(args.bind, args.port, args.rcvbuf, args.lifetime)
    except (ValueError, OSError) as exc:
        print(f"traffic: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
