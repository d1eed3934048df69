"""What a lab is: names, addresses and the on-disk state (lab.json, inventory.ini) of one lab fleet."""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dropscope_lab.traffic import LAB_RANGE

PROG = "tests/support/lab"  # how the lab is run from the repository (a wrapper around dropscope_lab.cli)
STATE_ROOT = Path("/run/dropscope-lab")
DEFAULT_NAME = "dslab"
DEFAULT_SUBNET = "198.18.0.0/24"
MARKER = ".dropscope-lab"
IFNAMSIZ = 15  # longest interface name the kernel accepts
FIRST_HOST_OCTET = 10  # host I gets address .(10+I)
MAX_HOSTS = 200
SSH_COMMON_ARGS = ("-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
                   " -o ServerAliveInterval=2 -o ServerAliveCountMax=3")

_NAME_RE = re.compile(r"[a-z][a-z0-9]*")
_SAFE_PATH_RE = re.compile(r"/[A-Za-z0-9_./+-]*")


class LabError(Exception):
    """A lab operation failed; the message is meant for the user."""


class LabExists(LabError):
    """`up` found a lab (or part of one) with the same name."""


def check_name(name: str) -> str:
    """Return NAME if it makes valid netns/interface names (`NAME-br`, `NAME-hNNN`), else raise."""
    if not _NAME_RE.fullmatch(name) or len(name) > IFNAMSIZ - len("-h200"):
        raise LabError(f"invalid lab name {name!r}: use 1-{IFNAMSIZ - 5} lower-case letters and digits, "
                       "starting with a letter")
    return name


def host_ns_pattern(name: str) -> re.Pattern[str]:
    """Regex matching the netns and root-side veth names of lab NAME's hosts."""
    return re.compile(re.escape(name) + r"-h[0-9]+")


def check_subnet(text: str, hosts: int) -> ipaddress.IPv4Network:
    """Parse the lab subnet; it must lie in the lab-only range and hold .1 plus .11 … .(10+hosts)."""
    try:
        net = ipaddress.IPv4Network(text, strict=True)
    except ValueError as exc:
        raise LabError(f"invalid subnet {text!r}: {exc}") from None
    if not net.subnet_of(LAB_RANGE):
        raise LabError(f"subnet {net} is outside {LAB_RANGE}, the range reserved for labs")
    if FIRST_HOST_OCTET + hosts >= net.num_addresses - 1:
        raise LabError(f"subnet {net} is too small for {hosts} hosts (they use .{FIRST_HOST_OCTET + 1} onwards)")
    return net


def check_state_dir(path: Path) -> Path:
    """Absolute, plain path (it is written into inventory.ini and sshd configs unquoted)."""
    path = Path(path).absolute()
    if not _SAFE_PATH_RE.fullmatch(str(path)) or ".." in path.parts:
        raise LabError(f"state dir {str(path)!r} must be a plain absolute path (letters, digits, _ . / + -)")
    return path


def mac_for(address: ipaddress.IPv4Address) -> str:
    """A fixed, locally administered MAC derived from an IPv4 address (02:d5:a:b:c:d)."""
    return ":".join(f"{b:02x}" for b in (0x02, 0xD5, *address.packed))


def pointer_file(name: str) -> Path:
    """Where `up --state-dir` records a non-default state dir so `down`/`inject` find it."""
    return STATE_ROOT / f"{name}.state-dir"


def resolve_state_dir(name: str, given: str | None = None) -> Path:
    """The state dir of lab NAME: as given, else as recorded by `up`, else the default."""
    if given:
        return check_state_dir(Path(given))
    pointer = pointer_file(name)
    try:
        return check_state_dir(Path(pointer.read_text().strip()))
    except (FileNotFoundError, LabError):
        return STATE_ROOT / name


@dataclass(frozen=True)
class Host:
    """One lab host: a network namespace with eth0 on the lab bridge and its own sshd."""

    name: str
    netns: str
    address: str
    veth: str
    mac: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "netns": self.netns, "address": self.address, "veth": self.veth,
                "mac": self.mac}


@dataclass
class Lab:
    """A planned or built lab."""

    name: str
    subnet: ipaddress.IPv4Network
    state_dir: Path
    hosts: list[Host] = field(default_factory=list)

    @classmethod
    def plan(cls, name: str, subnet: ipaddress.IPv4Network, count: int, state_dir: Path) -> Lab:
        """Lay out COUNT hosts h1..hCOUNT of lab NAME in SUBNET."""
        hosts = []
        for i in range(1, count + 1):
            addr = subnet[FIRST_HOST_OCTET + i]
            hosts.append(Host(f"h{i}", f"{name}-h{i}", str(addr), f"{name}-h{i}", mac_for(addr)))
        return cls(name, subnet, state_dir, hosts)

    @property
    def bridge(self) -> str:
        return f"{self.name}-br"

    @property
    def bridge_address(self) -> str:
        return str(self.subnet[1])

    @property
    def bridge_mac(self) -> str:
        return mac_for(self.subnet[1])

    @property
    def prefix(self) -> int:
        return self.subnet.prefixlen

    @property
    def inventory(self) -> Path:
        return self.state_dir / "inventory.ini"

    @property
    def lab_json(self) -> Path:
        return self.state_dir / "lab.json"

    @property
    def private_key(self) -> Path:
        return self.state_dir / "id_ed25519"

    @property
    def host_key(self) -> Path:
        return self.state_dir / "ssh_host_ed25519_key"

    @property
    def authorized_keys(self) -> Path:
        return self.state_dir / "authorized_keys"

    def host_dir(self, host: Host) -> Path:
        return self.state_dir / "hosts" / host.name

    def host(self, name: str) -> Host:
        """The host called NAME (`h2`) or with netns NAME (`lab-h2`)."""
        for host in self.hosts:
            if name in (host.name, host.netns):
                return host
        raise LabError(f"lab {self.name} has no host {name!r} (hosts: {', '.join(h.name for h in self.hosts)})")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "subnet": str(self.subnet),
            "bridge": self.bridge,
            "bridge_address": self.bridge_address,
            "state_dir": str(self.state_dir),
            "inventory": str(self.inventory),
            "private_key": str(self.private_key),
            "hosts": {h.name: h.to_json() for h in self.hosts},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Lab:
        """Inverse of to_json (hosts is a mapping name -> host, in host order)."""
        hosts = [Host(h["name"], h["netns"], h["address"], h["veth"], h["mac"]) for h in host_entries(data)]
        return cls(data["name"], ipaddress.IPv4Network(data["subnet"]), Path(data["state_dir"]), hosts)

    def inventory_text(self) -> str:
        """The Ansible inventory (INI) for this lab."""
        lines = ["[lab]"]
        lines += [f"{h.name} ansible_host={h.address}" for h in self.hosts]
        lines += [
            "",
            "[lab:vars]",
            "ansible_user=root",
            "ansible_python_interpreter=/usr/bin/python3",
            f"ansible_ssh_private_key_file={self.private_key}",
            f"ansible_ssh_common_args='{SSH_COMMON_ARGS}'",
            "",
        ]
        return "\n".join(lines)

    def sshd_config_text(self, host: Host) -> str:
        """sshd_config of HOST (listens only on its lab address)."""
        hdir = self.host_dir(host)
        return "\n".join([
            f"ListenAddress {host.address}",
            "Port 22",
            f"HostKey {self.host_key}",
            f"PidFile {hdir / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            "UsePAM no",
            "StrictModes no",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "UseDNS no",
            "PrintMotd no",
            "MaxStartups 100:30:200",
            # Lab hosts share this machine's /root: with SHLVL set, bash run by sshd skips ~/.bashrc, whose
            # `pyenv init` would take pyenv's shared rehash lock in every session (130 ms each, and a
            # session killed while holding it leaves a stale lock that stalls every later login for 60 s).
            "SetEnv SHLVL=1",
            "Subsystem sftp /usr/lib/openssh/sftp-server",
            "",
        ])


def host_entries(data: dict[str, Any]) -> list[dict[str, str]]:
    """The host objects of a parsed lab.json."""
    hosts = data["hosts"]
    return list(hosts.values()) if isinstance(hosts, dict) else list(hosts)


def load_lab(name: str, state_dir: str | None = None) -> Lab:
    """Read lab NAME's lab.json, or raise LabError if there is no such lab."""
    check_name(name)
    path = resolve_state_dir(name, state_dir) / "lab.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise LabError(f"no lab {name!r} ({path} is missing); run `{PROG} up --name {name}`") from None
    except (OSError, ValueError) as exc:
        raise LabError(f"cannot read {path}: {exc}") from None
    return Lab.from_json(data)
