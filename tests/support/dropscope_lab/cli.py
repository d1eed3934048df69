"""The lab's command, run from the repository as `tests/support/lab` (or `python3 -m dropscope_lab` with
tests/support on the Python path): a fleet of SSH hosts as network namespaces on this machine, and drops
to inject into it.

Needs root. Hosts live in 198.18.0.0/15 (reserved for benchmarking), on a bridge of their own; traffic
only ever goes to lab addresses. `inject` makes the kernel drop packets in known ways: an nft rule
(NETFILTER_DROP at nft_do_chain), a closed UDP port (NO_SOCKET at __udp4_lib_rcv, Udp NoPorts), a
receiver with a tiny SO_RCVBUF that never reads (SOCKET_RCVBUFF, Udp RcvbufErrors) and a tbf qdisc that
overflows on transmit (QDISC_DROP, the qdisc's dropped counter).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

from dropscope_lab.model import (
    DEFAULT_NAME,
    DEFAULT_SUBNET,
    MAX_HOSTS,
    PROG,
    STATE_ROOT,
    Lab,
    LabError,
    LabExists,
)

__all__ = ["build_parser", "main"]


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {value}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The lab's parser: `up`, `down` and `inject`."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    commands = parser.add_subparsers(dest="lab_command", required=True, metavar="LAB_COMMAND")

    up = commands.add_parser("up", help="build hosts h1..hN with their own sshd; print the inventory path")
    up.add_argument("--hosts", type=_positive, default=3, help=f"number of hosts (default 3, at most {MAX_HOSTS})")
    up.add_argument("--name", default=DEFAULT_NAME,
                    help=f"lab name, prefix of netns/interfaces (default {DEFAULT_NAME})")
    up.add_argument("--subnet", default=DEFAULT_SUBNET,
                    help=f"IPv4 subnet inside 198.18.0.0/15 (default {DEFAULT_SUBNET})")
    up.add_argument("--state-dir", help=f"keys, configs, inventory.ini, lab.json (default {STATE_ROOT}/NAME)")
    up.set_defaults(func=cmd_up)

    down = commands.add_parser("down", help="remove a lab completely (idempotent; works on half-built labs)")
    down.add_argument("--name", default=DEFAULT_NAME)
    down.add_argument("--state-dir", help="state dir, if `up` was given a non-default one and its record is lost")
    down.set_defaults(func=cmd_down)

    inject = commands.add_parser("inject", help="make a host drop an exact number of packets; prints a JSON line")
    from dropscope_lab.inject import DEFAULT_PORTS, SCENARIOS

    inject.add_argument("scenario", choices=sorted(SCENARIOS),
                        help="udp-firewall (nft drop), udp-noport (closed port), udp-rcvbuf (full socket buffer), "
                             "qdisc-tx (tbf overflow on the host's eth0), iptables-legacy (iptables-legacy DROP rule), "
                             "clear (undo them on the host)")
    inject.add_argument("--host", required=True, help="host name, e.g. h1")
    inject.add_argument("--packets", type=_non_negative, default=100,
                        help="datagrams to send (default 100; 0 only sets the scenario up)")
    inject.add_argument("--name", default=DEFAULT_NAME)
    inject.add_argument("--port", type=int,
                        help="UDP port (defaults: " + ", ".join(f"{k} {v}" for k, v in DEFAULT_PORTS.items() if v)
                             + "; qdisc-tx: the root-namespace receiver's port, default any)")
    inject.add_argument("--timeout", type=float, default=30.0, help="time limit of the traffic, seconds (default 30)")
    inject.add_argument("--state-dir", help=argparse.SUPPRESS)
    inject.set_defaults(func=cmd_inject)
    return parser


def _need_root() -> None:
    if os.geteuid() != 0:
        raise LabError("needs root (network namespaces, interfaces, sshd)")


def _fail(exc: Exception) -> int:
    print(f"{PROG}: {exc}", file=sys.stderr)
    return 1


def cmd_up(args: argparse.Namespace) -> int:
    """`up`: build the lab or refuse if one of that name exists; tear down on any failure."""
    from dropscope_lab import fleet
    from dropscope_lab.model import check_name, check_state_dir, check_subnet

    start = time.monotonic()
    try:
        _need_root()
        name = check_name(args.name)
        if args.hosts > MAX_HOSTS:
            raise LabError(f"--hosts must be at most {MAX_HOSTS}")
        subnet = check_subnet(args.subnet, args.hosts)
        state_dir = check_state_dir(args.state_dir) if args.state_dir else STATE_ROOT / name
        found = fleet.existing_parts(name, state_dir)
        if found:
            raise LabExists(f"lab {name!r} already exists ({'; '.join(found)}); "
                            f"run `{PROG} down --name {name}` first, or pick another --name")
        users = fleet.subnet_users(subnet)
        if users:
            raise LabError(f"subnet {subnet} is in use ({'; '.join(users)}); pick another --subnet")
        lab = Lab.plan(name, subnet, args.hosts, state_dir)
    except LabError as exc:
        return _fail(exc)

    def terminated(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)  # so a killed `up` still tears down what it built

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        fleet.build(lab, custom_state_dir=bool(args.state_dir))
        print(f"{PROG}: {name}: {len(lab.hosts)} hosts up in {time.monotonic() - start:.2f} s",
              file=sys.stderr)
        print(lab.inventory, flush=True)
    except LabExists as exc:  # lost a race with another `up`: what exists is not ours
        return _fail(exc)
    except BaseException as exc:
        left = fleet.teardown(name, str(state_dir))
        if left:
            print(f"{PROG}: clean-up left {', '.join(left)}", file=sys.stderr)
        if isinstance(exc, LabError):
            return _fail(LabError(f"lab up failed, removed what was built: {exc}"))
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    """`down`: remove every trace of the lab."""
    from dropscope_lab import fleet

    start = time.monotonic()
    try:
        _need_root()
        left = fleet.teardown(args.name, args.state_dir)
    except LabError as exc:
        return _fail(exc)
    if left:
        return _fail(LabError(f"lab {args.name} not fully removed: {', '.join(left)}"))
    print(f"{PROG}: {args.name}: down in {time.monotonic() - start:.2f} s", file=sys.stderr)
    return 0


def cmd_inject(args: argparse.Namespace) -> int:
    """`inject`: run a drop scenario and print one JSON line describing it."""
    from dropscope_lab.inject import inject
    from dropscope_lab.model import load_lab

    try:
        _need_root()
        lab = load_lab(args.name, args.state_dir)
        result = inject(lab, args.scenario, args.host, args.packets, args.port, args.timeout)
    except (LabError, ValueError, OSError) as exc:
        return _fail(exc)
    print(json.dumps(result), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)
