"""`dropscope lab`: a fleet of SSH hosts as network namespaces on this machine, and drops to inject into it.

Needs root. Hosts live in 198.18.0.0/15 (reserved for benchmarking), on a bridge of their own; traffic
only ever goes to lab addresses. See docs and LAB.md for the recipes behind `inject`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

from dropscope.lab.model import DEFAULT_NAME, DEFAULT_SUBNET, MAX_HOSTS, STATE_ROOT, Lab, LabError, LabExists

__all__ = ["add_arguments"]


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


def add_arguments(subparsers: argparse._SubParsersAction) -> None:
    """Register `lab` and its sub-commands on the `dropscope` parser."""
    lab = subparsers.add_parser("lab", help="build a test fleet of SSH hosts (network namespaces) and inject drops",
                                description=__doc__)
    commands = lab.add_subparsers(dest="lab_command", required=True, metavar="LAB_COMMAND")

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
    from dropscope.lab.inject import DEFAULT_PORTS, SCENARIOS

    inject.add_argument("scenario", choices=sorted(SCENARIOS),
                        help="udp-firewall (nft drop), udp-noport (closed port), udp-rcvbuf (full socket buffer), "
                             "qdisc-tx (tbf overflow on the host's eth0), clear (undo them on the host)")
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


def _need_root() -> None:
    if os.geteuid() != 0:
        raise LabError("needs root (network namespaces, interfaces, sshd)")


def _fail(exc: Exception) -> int:
    print(f"dropscope lab: {exc}", file=sys.stderr)
    return 1


def cmd_up(args: argparse.Namespace) -> int:
    """`lab up`: build the lab or refuse if one of that name exists; tear down on any failure."""
    from dropscope.lab import fleet
    from dropscope.lab.model import check_name, check_state_dir, check_subnet

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
                            f"run `dropscope lab down --name {name}` first, or pick another --name")
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
        print(f"dropscope lab: {name}: {len(lab.hosts)} hosts up in {time.monotonic() - start:.2f} s",
              file=sys.stderr)
        print(lab.inventory, flush=True)
    except LabExists as exc:  # lost a race with another `up`: what exists is not ours
        return _fail(exc)
    except BaseException as exc:
        left = fleet.teardown(name, str(state_dir))
        if left:
            print(f"dropscope lab: clean-up left {', '.join(left)}", file=sys.stderr)
        if isinstance(exc, LabError):
            return _fail(LabError(f"lab up failed, removed what was built: {exc}"))
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    """`lab down`: remove every trace of the lab."""
    from dropscope.lab import fleet

    start = time.monotonic()
    try:
        _need_root()
        left = fleet.teardown(args.name, args.state_dir)
    except LabError as exc:
        return _fail(exc)
    if left:
        return _fail(LabError(f"lab {args.name} not fully removed: {', '.join(left)}"))
    print(f"dropscope lab: {args.name}: down in {time.monotonic() - start:.2f} s", file=sys.stderr)
    return 0


def cmd_inject(args: argparse.Namespace) -> int:
    """`lab inject`: run a drop scenario and print one JSON line describing it."""
    from dropscope.lab.inject import inject
    from dropscope.lab.model import load_lab

    try:
        _need_root()
        lab = load_lab(args.name, args.state_dir)
        result = inject(lab, args.scenario, args.host, args.packets, args.port, args.timeout)
    except (LabError, ValueError, OSError) as exc:
        return _fail(exc)
    print(json.dumps(result), flush=True)
    return 0
