"""Building (`up`) and removing (`down`) a fleet of SSH hosts as network namespaces."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

from dropscope_lab import system
from dropscope_lab.model import (
    MARKER,
    STATE_ROOT,
    Lab,
    LabError,
    LabExists,
    check_name,
    host_entries,
    host_ns_pattern,
    pointer_file,
    resolve_state_dir,
)

SSHD = "/usr/sbin/sshd"
SSH_READY_TIMEOUT = 10.0
# Starts a host's sshd with its own hostname; host name and config path are positional arguments.
SSHD_SCRIPT = 'hostname "$1" && exec /usr/sbin/sshd -f "$2"'


# ----------------------------------------------------------------------------------------------- up

def existing_parts(name: str, state_dir: Path) -> list[str]:
    """What already exists of a lab called NAME."""
    found = []
    pattern = host_ns_pattern(name)
    netns = [ns for ns in system.list_netns() if pattern.fullmatch(ns)]
    if netns:
        found.append(f"network namespaces {', '.join(netns)}")
    links = [link["ifname"] for link in system.list_links()
             if link["ifname"] == f"{name}-br" or pattern.fullmatch(link["ifname"])]
    if links:
        found.append(f"interfaces {', '.join(links)}")
    if state_dir.exists():
        found.append(f"state dir {state_dir}")
    if pointer_file(name).exists():
        found.append(f"state dir pointer {pointer_file(name)}")
    return found


def subnet_users(subnet: ipaddress.IPv4Network) -> list[str]:
    """Addresses in the root netns that overlap SUBNET (another lab, or anything else)."""
    found = []
    for link in json.loads(system.run(["ip", "-j", "-4", "addr", "show"]).stdout or "[]"):
        for info in link.get("addr_info", []):
            iface = ipaddress.IPv4Interface(f"{info['local']}/{info['prefixlen']}")
            if iface.network.overlaps(subnet):
                found.append(f"address {iface} on {link['ifname']} overlaps {subnet}")
    return found


def build(lab: Lab, *, custom_state_dir: bool) -> None:
    """Create LAB (nothing of it may exist yet); on any failure the caller tears it down."""
    if not Path(SSHD).is_file():
        raise LabError(f"{SSHD} is missing (apt-get install openssh-server)")
    _make_state_dir(lab, custom_state_dir)
    _write_keys(lab)
    lab.lab_json.write_text(json.dumps(lab.to_json(), indent=2) + "\n")
    _build_network(lab)
    _start_sshds(lab)
    lab.inventory.write_text(lab.inventory_text())
    _wait_for_ssh(lab, SSH_READY_TIMEOUT)


def _make_state_dir(lab: Lab, custom: bool) -> None:
    for attempt in range(3):  # a concurrent `down` of another lab may remove an empty STATE_ROOT meanwhile
        STATE_ROOT.mkdir(mode=0o755, parents=True, exist_ok=True)
        lab.state_dir.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        try:
            lab.state_dir.mkdir(mode=0o700)
            break
        except FileExistsError:
            raise LabExists(f"state dir {lab.state_dir} already exists") from None
        except FileNotFoundError:
            if attempt == 2:
                raise
    (lab.state_dir / MARKER).write_text(lab.name + "\n")
    if custom and lab.state_dir != STATE_ROOT / lab.name:
        pointer_file(lab.name).write_text(str(lab.state_dir) + "\n")
    for host in lab.hosts:
        lab.host_dir(host).mkdir(parents=True)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory


def _write_keys(lab: Lab) -> None:
    for path in (lab.host_key, lab.private_key):
        system.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"dropscope-lab-{lab.name}",
                    "-f", str(path)])
    lab.authorized_keys.write_text(lab.private_key.with_suffix(".pub").read_text())


def _build_network(lab: Lab) -> None:
    # Namespaces first, IPv6 off in each (per-netns sysctls) before eth0 appears in it.
    system.ip_batch(f"netns add {h.netns}" for h in lab.hosts)
    _parallel([system.in_netns(h.netns, ["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                                         "net.ipv6.conf.default.disable_ipv6=1"]) for h in lab.hosts])
    # Root side: bridge with fixed MAC and the .1 address, one veth per host, static FDB and neighbours
    # so no frame is flooded to other hosts and no ARP is needed; addrgenmode none keeps IPv6 quiet.
    cmds = [
        f"link add {lab.bridge} address {lab.bridge_mac} type bridge",
        f"link set dev {lab.bridge} addrgenmode none",
        f"addr add {lab.bridge_address}/{lab.prefix} dev {lab.bridge}",
        f"link set dev {lab.bridge} up",
    ]
    for h in lab.hosts:
        cmds += [
            f"link add {h.veth} type veth peer name eth0 address {h.mac} netns {h.netns}",
            f"link set dev {h.veth} addrgenmode none",
            f"link set dev {h.veth} master {lab.bridge} up",
            f"neigh replace {h.address} lladdr {h.mac} dev {lab.bridge} nud permanent",
        ]
    system.ip_batch(cmds)
    system.run(["bridge", "-batch", "-"],
               stdin="".join(f"fdb replace {h.mac} dev {h.veth} master static\n" for h in lab.hosts))
    # Inside each host.
    for h in lab.hosts:
        cmds = [
            "link set dev lo up",
            f"addr add {h.address}/{lab.prefix} dev eth0",
            "link set dev eth0 up",
            f"neigh replace {lab.bridge_address} lladdr {lab.bridge_mac} dev eth0 nud permanent",
        ]
        cmds += [f"neigh replace {o.address} lladdr {o.mac} dev eth0 nud permanent"
                 for o in lab.hosts if o is not h]
        system.ip_batch(cmds, netns=h.netns)


def _parallel(commands: list[list[str]], timeout: float = 20.0) -> None:
    """Run COMMANDS concurrently; raise LabError naming the first that failed."""
    procs = [(argv, subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)) for argv in commands]
    errors = []
    deadline = time.monotonic() + timeout
    for argv, proc in procs:
        try:
            _, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            err = f"timed out after {timeout:g} s"
        if proc.returncode != 0:
            errors.append(f"`{' '.join(argv)}` failed (exit {proc.returncode}): {err.strip()}")
    if errors:
        raise LabError(errors[0] + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""))


def _start_sshds(lab: Lab) -> None:
    commands = []
    for h in lab.hosts:
        config = lab.host_dir(h) / "sshd_config"
        config.write_text(lab.sshd_config_text(h))
        commands.append(system.in_netns(h.netns, ["unshare", "--uts", "--", "/bin/sh", "-c", SSHD_SCRIPT,
                                                  "sh", h.name, str(config)]))
    _parallel(commands)  # sshd daemonizes once it listens


def _ssh_banner(address: str, timeout: float) -> bool:
    try:
        with socket.create_connection((address, 22), timeout=timeout) as sock:
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def _wait_for_ssh(lab: Lab, timeout: float) -> None:
    pending = list(lab.hosts)
    deadline = time.monotonic() + timeout
    while pending:
        pending = [h for h in pending if not _ssh_banner(h.address, min(1.0, timeout))]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise LabError(f"sshd did not answer within {timeout:g} s on {', '.join(h.name for h in pending)}")
        time.sleep(0.05)


# --------------------------------------------------------------------------------------------- down

def teardown(name: str, state_dir: str | None = None) -> list[str]:
    """Remove everything of lab NAME, however complete it is; return what could not be removed."""
    check_name(name)
    sdir = resolve_state_dir(name, state_dir)
    pattern = host_ns_pattern(name)
    netns = [ns for ns in system.list_netns() if pattern.fullmatch(ns)]

    # Lab addresses: from lab.json, else from what the namespaces still carry.
    addresses: set[str] = set()
    known: set[str] = set()
    try:
        data = json.loads((sdir / "lab.json").read_text())
        if data.get("name") == name:
            addresses = {h["address"] for h in host_entries(data)}
            known = {h["netns"] for h in host_entries(data)}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    for ns in netns:
        if ns not in known:
            addresses |= _netns_addresses(ns)

    # Processes: ssh clients (ControlPersist masters) first, then everything inside the namespaces.
    system.kill_and_wait(system.ssh_clients_of(addresses), timeout=3.0)
    for _ in range(3):  # a dying sshd may have forked: look again
        pids = [p for ns in netns for p in system.netns_pids(ns)]
        if not pids:
            break
        system.kill_and_wait(pids)

    # Links (deleting the root end of a veth deletes eth0 in the netns), namespaces, bridge.
    links = [link["ifname"] for link in system.list_links()
             if pattern.fullmatch(link["ifname"])]
    cmds = [f"link del dev {link}" for link in links]
    cmds += [f"netns del {ns}" for ns in netns]
    if system.link_exists(f"{name}-br"):
        cmds.append(f"link del dev {name}-br")
    if cmds:
        system.ip_batch(cmds, force=True, check=False)

    _remove_state_dir(name, sdir)
    return leftovers(name, sdir)


def _netns_addresses(netns: str) -> set[str]:
    proc = system.run(["ip", "-n", netns, "-j", "-4", "addr", "show"], check=False)
    try:
        links = json.loads(proc.stdout or "[]")
    except ValueError:
        return set()
    return {i["local"] for link in links for i in link.get("addr_info", []) if i.get("local") != "127.0.0.1"}


def _remove_state_dir(name: str, sdir: Path) -> None:
    pointer = pointer_file(name)
    if sdir.is_dir():
        marker = sdir / MARKER
        owned = marker.is_file() and marker.read_text().strip() == name
        if owned or not any(sdir.iterdir()):
            shutil.rmtree(sdir, ignore_errors=True)
    pointer.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        STATE_ROOT.rmdir()  # only if no other lab is left


def leftovers(name: str, sdir: Path | None = None) -> list[str]:
    """Anything of lab NAME that still exists (empty when it is fully gone)."""
    pattern = host_ns_pattern(name)
    found = [f"netns {ns}" for ns in system.list_netns() if pattern.fullmatch(ns)]
    found += [f"interface {link['ifname']}" for link in system.list_links()
              if link["ifname"] == f"{name}-br" or pattern.fullmatch(link["ifname"])]
    sdir = sdir or resolve_state_dir(name)
    if sdir.exists():
        found.append(f"state dir {sdir} (not removed: it has no {MARKER} marker for {name})")
    return found

