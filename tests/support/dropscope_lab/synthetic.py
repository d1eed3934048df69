"""Synthetic run directories for tests and benchmarks, written by the collection's own run writer.

Build snapshots with `make_snapshot` and `advance` (an "after" snapshot with given counter increases) and
captures with `make_capture`; `make_host` turns them into the task results the diagnose role registers
(`task_results`) and lets `run_record.host_record` make the host file from them, and `write_run` writes
host files and manifest with `run_record.write_records`: file names, statuses, errors and the manifest
are exactly what a real run writes. `synthetic_fleet` makes a realistic, reproducible fleet of any size.

Needs the collection on the Python path (`collections/`: pytest has it; benchmarks add it).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ansible_collections.dropscope.drops.plugins.module_utils import run_record
from ansible_collections.dropscope.drops.plugins.module_utils.run_record import SCHEMA_VERSION

JSON = dict[str, Any]

SYSFS_STATISTICS = (
    "collisions", "multicast", "rx_bytes", "rx_compressed", "rx_crc_errors", "rx_dropped", "rx_errors",
    "rx_fifo_errors", "rx_frame_errors", "rx_length_errors", "rx_missed_errors", "rx_nohandler",
    "rx_over_errors", "rx_packets", "tx_aborted_errors", "tx_bytes", "tx_carrier_errors", "tx_compressed",
    "tx_dropped", "tx_errors", "tx_fifo_errors", "tx_heartbeat_errors", "tx_packets", "tx_window_errors",
)  # fmt: skip
VETH_ETHTOOL = (
    "rx_queue_0_xdp_packets", "rx_queue_0_xdp_bytes", "rx_queue_0_drops", "rx_queue_0_xdp_redirect",
    "rx_queue_0_xdp_drops", "rx_queue_0_xdp_tx", "rx_queue_0_xdp_tx_errors", "tx_queue_0_xdp_xmit",
    "tx_queue_0_xdp_xmit_errors",
)  # fmt: skip
IXGBE_ETHTOOL = (
    "rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_missed_errors", "rx_no_buffer_count", "rx_crc_errors",
    "rx_length_errors", "rx_fifo_errors", "tx_busy", "alloc_rx_buff_failed", "rx_queue_0_packets",
)  # a few of ixgbe's `ethtool -S` names (an Intel 10G NIC): the NIC's own words for its drops
PROTOCOLS = {
    "IpForwarding": 2, "IpDefaultTTL": 64, "IpInReceives": 182_113, "IpInHdrErrors": 0, "IpInAddrErrors": 0,
    "IpInDiscards": 0, "IpInDelivers": 181_990, "IpOutRequests": 176_402, "IpOutDiscards": 0, "IpOutNoRoutes": 0,
    "TcpRtoAlgorithm": 1, "TcpRtoMin": 200, "TcpRtoMax": 120_000, "TcpMaxConn": -1, "TcpActiveOpens": 912,
    "TcpPassiveOpens": 407, "TcpCurrEstab": 6, "TcpInSegs": 150_331, "TcpOutSegs": 149_876, "TcpRetransSegs": 14,
    "TcpInErrs": 0, "TcpInCsumErrors": 0, "UdpInDatagrams": 30_127, "UdpNoPorts": 3, "UdpInErrors": 0,
    "UdpOutDatagrams": 29_811, "UdpRcvbufErrors": 0, "UdpSndbufErrors": 0, "UdpInCsumErrors": 0,
    "TcpExtListenOverflows": 0, "TcpExtListenDrops": 0, "TcpExtTCPBacklogDrop": 0, "TcpExtPFMemallocDrop": 0,
    "TcpExtTCPRcvQDrop": 0, "TcpExtTCPZeroWindowDrop": 0, "IpExtInNoRoutes": 0, "IpExtInOctets": 21_733_012,
    "Ip6InReceives": 1_204, "Ip6InDiscards": 0, "Ip6OutDiscards": 0, "Udp6InDatagrams": 311, "Udp6NoPorts": 0,
    "Udp6InErrors": 0, "Udp6RcvbufErrors": 0,
}  # fmt: skip
SOFTNET_FIELDS = ("processed", "dropped", "time_squeeze", "received_rps", "flow_limit_count", "backlog_len")
DROP_CATALOGUE = (
    ("NO_SOCKET", "__udp4_lib_rcv", "IPv4"),
    ("NETFILTER_DROP", "nft_do_chain", "IPv4"),
    ("QDISC_DROP", "__dev_xmit_skb", "IPv4"),
    ("SOCKET_RCVBUFF", "__udp_enqueue_schedule_skb", "IPv4"),
    ("TCP_INVALID_SEQUENCE", "tcp_validate_incoming", "IPv4"),
    ("NOT_SPECIFIED", "sk_stream_kill_queues", "IPv4"),
    ("CPU_BACKLOG", "enqueue_to_backlog", "IPv4"),
    ("IP_INADDRERRORS", "ip_rcv_finish_core", "IPv4"),
    ("NO_SOCKET", "__udp6_lib_rcv", "IPv6"),
    ("UNHANDLED_PROTO", "__netif_receive_skb_core", "ARP"),
    ("OTHERHOST", "ip_rcv_core", "IPv4"),
    ("NEIGH_FAILED", "neigh_invalidate", "IPv4"),
    ("TCP_OLD_DATA", "tcp_data_queue", "IPv4"),
    ("IP_RPFILTER", "ip_rcv_finish_core", "IPv4"),
    ("PKT_TOO_SMALL", "ip_rcv_core", "IPv4"),
    ("TC_INGRESS", "tcf_classify", "IPv4"),
    ("XDP", "bpf_prog_run_xdp", "IPv4"),
    ("IPV6DISABLED", "ipv6_rcv", "IPv6"),
)


def boot_id_for(name: str) -> str:
    """A stable, boot_id-shaped id derived from a name."""
    digest = random.Random(name).getrandbits(128)  # noqa: S311 (test data, not security)
    text = f"{digest:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def make_interface(
    statistics: Mapping[str, int] | None = None,
    ethtool: Mapping[str, int] | None = None,
    ethtool_status: str | None = None,
    base: int = 0,
    driver: JSON | None = None,
) -> JSON:
    """One interface: every sysfs statistics file (packets/bytes start at `base`), plus ethtool stats and
    `driver` (`ethtool -i`: {driver, version, firmware_version, bus_info}; None like `lo`)."""
    stats = dict.fromkeys(SYSFS_STATISTICS, 0)
    for name in ("rx_packets", "tx_packets"):
        stats[name] = base
    for name in ("rx_bytes", "tx_bytes"):
        stats[name] = base * 600
    stats.update(statistics or {})
    if ethtool_status is None:
        ethtool_status = "ok" if ethtool is not None else "no stats available"
    return {
        "statistics": stats,
        "ethtool": dict(ethtool) if ethtool_status == "ok" and ethtool is not None else None,
        "ethtool_status": ethtool_status,
        "driver": copy.deepcopy(driver),
    }


def veth_ethtool(**values: int) -> dict[str, int]:
    """veth ethtool counters (peer_ifindex is a gauge the report ignores)."""
    counters = {"peer_ifindex": 9, **dict.fromkeys(VETH_ETHTOOL, 0)}
    counters.update(values)
    return counters


def ixgbe_ethtool(**values: int) -> dict[str, int]:
    """ixgbe-like ethtool counters (all 0 unless given)."""
    counters = dict.fromkeys(IXGBE_ETHTOOL, 0)
    counters.update(values)
    return counters


def make_qdisc(dev: str, kind: str, handle: str, parent: str = "root", **counters: int) -> tuple[str, JSON]:
    """(key, qdisc) with the key as the snapshot writes it: "DEV KIND HANDLE"."""
    qdisc = {"dev": dev, "kind": kind, "handle": handle, "parent": parent, "bytes": 0, "packets": 0, "dropped": 0,
             "overlimits": 0, "requeues": 0, "backlog": 0, "qlen": 0}  # fmt: skip
    qdisc.update(counters)
    return f"{dev} {kind} {handle}", qdisc


def make_socket(proto: str, address: str, port: int, drops: int, inode: int) -> JSON:
    """One UDP socket row of a snapshot."""
    return {"proto": proto, "local_address": address, "local_port": port, "inode": inode, "drops": drops}


def make_rule(
    family: str, table: str, chain: str, handle: int, rule: str, packets: int = 0, byte_count: int = 0
) -> tuple[str, JSON]:
    """(key, rule) for an nftables rule with a counter."""
    key = f"nft {family} {table} {chain} #{handle}"
    rule_fields = {"family": family, "table": table, "chain": chain, "handle": handle, "rule": rule}
    return key, {**rule_fields, "packets": packets, "bytes": byte_count}


def make_snapshot(
    hostname: str,
    *,
    boot_id: str | None = None,
    monotonic: float = 10_234.5,
    wall: float = 1_795_748_401.25,
    kernel_release: str = "6.18.44",
    distro: str | None = "Debian GNU/Linux 12 (bookworm)",
    netns_inode: int = 4_026_531_840,
    interfaces: Mapping[str, JSON] | None = None,
    protocols: Mapping[str, int] | None = None,
    cpus: int = 2,
    qdiscs: Mapping[str, JSON] | None = None,
    sockets: Iterable[JSON] = (),
    firewall: Mapping[str, JSON] | None = None,
    errors: Iterable[JSON] = (),
    conntrack: JSON | None = None,
) -> JSON:
    """A realistic snapshot; by default lo and eth0 (veth with ethtool stats), 2 CPUs, noqueue/fq_codel."""
    if interfaces is None:
        interfaces = {"lo": make_interface(base=120), "eth0": make_interface(ethtool=veth_ethtool(), base=45_000)}
    if qdiscs is None:
        qdiscs = dict([make_qdisc("lo", "noqueue", "0:"), make_qdisc("eth0", "fq_codel", "0:", packets=45_000)])
    merged_protocols = dict(PROTOCOLS)
    merged_protocols.update(protocols or {})
    return {
        "schema_version": SCHEMA_VERSION,
        "system": {
            "hostname": hostname,
            "kernel_release": kernel_release,
            "boot_id": boot_id or boot_id_for(hostname),
            "netns_inode": netns_inode,
            "python": "3.11.2",
            "distro": distro,
        },
        "time": {"wall": wall, "monotonic": monotonic},
        "interfaces": copy.deepcopy(dict(interfaces)),
        "protocols": merged_protocols,
        "softnet": [
            {"cpu": cpu, **dict.fromkeys(SOFTNET_FIELDS, 0), "processed": 1_000 * (cpu + 1)} for cpu in range(cpus)
        ],
        "qdiscs": copy.deepcopy(dict(qdiscs)),
        "sockets": copy.deepcopy(list(sockets)),
        "firewall": copy.deepcopy(dict(firewall or {})),
        "conntrack": copy.deepcopy(conntrack),
        "errors": list(errors),
    }


def _add(counters: dict[str, int], increases: Mapping[str, int]) -> None:
    for name, increase in increases.items():
        counters[name] = counters.get(name, 0) + increase


def advance(
    before: JSON,
    seconds: float,
    *,
    interfaces: Mapping[str, Mapping[str, int]] | None = None,
    protocols: Mapping[str, int] | None = None,
    softnet: Mapping[int, Mapping[str, int]] | None = None,
    qdiscs: Mapping[str, Mapping[str, int]] | None = None,
    sockets: Mapping[int, int] | None = None,
    firewall: Mapping[str, Mapping[str, int]] | None = None,
    conntrack: Mapping[str, int] | None = None,
) -> JSON:
    """The "after" snapshot: `before` `seconds` later with the given counters increased.

    Interface increases named "ethtool:NAME" go to the ethtool counters; socket increases are by inode;
    conntrack increases go to its statistics, except `count` (the table's level: set, not added).
    """
    after = copy.deepcopy(before)
    after["time"]["monotonic"] = before["time"]["monotonic"] + seconds
    after["time"]["wall"] = before["time"]["wall"] + seconds
    for name, increases in (interfaces or {}).items():
        interface = after["interfaces"][name]
        _add(interface["statistics"], {k: v for k, v in increases.items() if not k.startswith("ethtool:")})
        ethtool = {k.removeprefix("ethtool:"): v for k, v in increases.items() if k.startswith("ethtool:")}
        if ethtool:
            _add(interface["ethtool"], ethtool)
    _add(after["protocols"], protocols or {})
    for cpu, increases in (softnet or {}).items():
        _add(next(row for row in after["softnet"] if row["cpu"] == cpu), increases)
    for key, increases in (qdiscs or {}).items():
        _add(after["qdiscs"][key], increases)
    for inode, increase in (sockets or {}).items():
        next(s for s in after["sockets"] if s["inode"] == inode)["drops"] += increase
    for key, increases in (firewall or {}).items():
        _add(after["firewall"][key], increases)
    if conntrack:
        _add(after["conntrack"]["stat"], {k: v for k, v in conntrack.items() if k != "count"})
        after["conntrack"]["count"] = conntrack.get("count", after["conntrack"]["count"])
    return after


def make_conntrack(count: int = 412, maximum: int = 262_144, buckets: int = 65_536, **stat: int) -> JSON:
    """A snapshot's `conntrack` section as a 6.18 kernel prints it (2 CPUs summed; all counters 0 unless given)."""
    names = ("clashres", "found", "new", "invalid", "ignore", "delete", "chainlength", "insert", "insert_failed",
             "drop", "early_drop", "icmp_error", "expect_new", "expect_create", "expect_delete", "search_restart")
    return {"stat": {"entries": count, **dict.fromkeys(names, 0), **stat, "cpus": 2},
            "count": count, "max": maximum, "buckets": buckets}


def drop(reason: str, location: str, count: int, protocol: str = "IPv4", offset: str = "0x4bc",
         port: int | None = None) -> JSON:
    """One capture drop group (`port`: the local L4 port, as the bpftrace backend reports it)."""
    group = {"reason": reason, "location": location, "offset": offset, "protocol": protocol, "count": count}
    if port is not None:
        group["port"] = port
    return group


def make_capture(
    boot_id: str,
    drops: Iterable[JSON] = (),
    *,
    backend: str = "perf",
    status: str = "ok",
    reason: str | None = None,
    scope: str = "kernel",
    duration_s: float = 10.01,
    events: int | None = None,
    lost_events: int = 0,
    other: JSON | None = None,
    netns_inode: int = 4_026_531_840,
) -> JSON:
    """A capture; `events` defaults to the sum of the drop counts."""
    drops = [dict(d) for d in drops]
    if status != "ok":
        return {"schema_version": SCHEMA_VERSION, "backend": backend, "status": status, "reason": reason,
                "scope": None, "boot_id": boot_id, "netns_inode": netns_inode, "requested_duration_s": 10,
                "duration_s": None, "started_wall": None, "command": None, "events": 0, "lost_events": 0,
                "truncated": False, "drops": [], "other": {"count": 0, "groups": 0}, "stacks": [],
                "reason_names": 0}  # fmt: skip
    return {
        "schema_version": SCHEMA_VERSION,
        "backend": backend,
        "status": status,
        "reason": reason,
        "scope": scope,
        "boot_id": boot_id,
        "netns_inode": netns_inode,
        "requested_duration_s": round(duration_s),
        "duration_s": duration_s,
        "started_wall": 1_795_748_401.9,
        "command": ["perf", "record", "-a", "-e", "skb:kfree_skb", "-o", "-", "--", "sleep", str(round(duration_s))],
        "events": sum(d["count"] for d in drops) if events is None else events,
        "lost_events": lost_events,
        "truncated": False,
        "drops": drops,
        "other": other or {"count": 0, "groups": 0},
        "stacks": [],
        "reason_names": 127,
    }


def make_capabilities(chosen: str = "bpftrace") -> JSON:
    """What drop_capabilities finds on this project's kernel: no NET_DM, so no dropwatch."""
    ladder = [
        {"backend": "bpftrace", "available": True, "reason": None},
        {"backend": "perf", "available": True, "reason": None},
        {"backend": "tracefs", "available": True, "reason": None},
        {"backend": "dropwatch", "available": False, "reason": "kernel has no NET_DM (CONFIG_NET_DROP_MONITOR)"},
    ]
    return {"schema_version": SCHEMA_VERSION, "kernel_release": "6.18.44", "ladder": ladder, "chosen": chosen}


def task_results(status: str, error: str | None, documents: Mapping[str, JSON | None],
                 capabilities: JSON | None) -> JSON:
    """What the diagnose role registers for one host (`before`, `capture`, `after`), as run_record gets it.

    DOCUMENTS holds the snapshots and the capture by stage. An ok host's capture result carries
    `capabilities` (default: this project's ladder). For an unreachable or failed host, the first stage
    without a document is the task that did not succeed (`error` is its message); the later ones did not run.
    """
    if capabilities is None and status == "ok":
        capabilities = make_capabilities((documents.get("capture") or {}).get("backend") or "bpftrace")
    results: JSON = {}
    for stage, key in run_record.STAGES:
        if documents.get(stage) is None and status != "ok":
            results[stage] = {status: True, "msg": error, "changed": False}
            break
        results[stage] = {key: documents.get(stage), "changed": False}
        if stage == "capture" and capabilities is not None:
            results[stage]["capabilities"] = capabilities
    return results


def make_host(
    host: str,
    *,
    status: str = "ok",
    error: str | None = None,
    before: JSON | None = None,
    capture: JSON | None = None,
    after: JSON | None = None,
    capabilities: JSON | None = None,
) -> JSON:
    """A hosts/<file>.json document, as `run_record.host_record` makes it from the host's task results.

    Its error is the real one: the stage that did not succeed, then `error` ("before: ssh: …"); a capture
    whose status is not ok makes the host failed (that is what run_record records). Raises ValueError
    when run_record would not give the host STATUS.
    """
    documents = {"before": before, "capture": capture, "after": after}
    document = run_record.host_record(host, task_results(status, error, documents, capabilities))
    if document["status"] != status:
        raise ValueError(f"run_record records {host!r} as {document['status']} ({document['error']}), not {status}")
    return document


def simple_host(
    host: str,
    drops: Iterable[JSON] = (),
    *,
    boot_id: str | None = None,
    seconds: float = 5.0,
    **increases: Any,
) -> JSON:
    """An ok host: default snapshots `seconds` apart with `increases` (see `advance`) and a capture."""
    boot_id = boot_id or boot_id_for(host)
    before = make_snapshot(host, boot_id=boot_id)
    return make_host(
        host, before=before, capture=make_capture(boot_id, drops), after=advance(before, seconds, **increases)
    )


def write_run(
    run_dir: str | Path,
    hosts: Iterable[JSON],
    *,
    run_id: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    groups: Mapping[str, Iterable[str]] | None = None,
    started: str = "2026-11-27T03:05:01.200000+00:00",
) -> Path:
    """Write host documents (see `make_host`) into the new run directory RUN_DIR with run_record; returns it.

    As in a real run, the run id is the directory's name (`run_id`, if given, must equal it), host files
    get run_record's safe names, the manifest lists the hosts in the order given. `groups`: each host's
    inventory groups, as the playbook records them (default: none known). `started`: when the run began
    (ISO 8601; the run history orders runs by it).
    """
    run_dir = Path(run_dir)
    if run_id is not None and run_id != run_dir.name:
        raise ValueError(f"a run's id is its directory's name: {run_dir.name!r}, not {run_id!r}")
    parameters = dict(parameters or {"duration": 10, "stacks": False, "top": 50, "target": "all"})
    manifest = {
        "started": started,
        "finished": "2026-11-27T03:05:14.410000+00:00",
        "duration_s": 13.2,
        "command": ["ansible-playbook", "playbooks/diagnose-drops.yml", "-i", "lab.ini",
                    "-e", f"duration={parameters.get('duration')}"],
        "playbook": "/srv/dropscope/playbooks/diagnose-drops.yml",
        "inventory": [str(run_dir.parent / "lab.ini")],
        "limit": None,
        "groups": {host: sorted(names) for host, names in (groups or {}).items()},
        "versions": {"ansible": "2.19.14", "python": "/usr/bin/python3"},
        "parameters": parameters,
    }
    written, _ = run_record.write_records(str(run_dir.parent), run_dir.name, list(hosts), manifest)
    return Path(written)


def synthetic_fleet(
    hosts: int,
    *,
    seed: int = 0,
    hosts_per_kernel: int = 1,
    unreachable_every: int = 0,
    reasons_per_host: int = 4,
) -> list[JSON]:
    """A reproducible, realistic fleet of `hosts` host documents.

    Consecutive groups of `hosts_per_kernel` hosts share one kernel (containers on one machine);
    every `unreachable_every`-th host is unreachable (0: none).
    """
    rng = random.Random(seed)  # noqa: S311 (reproducible test data)
    documents = []
    kernel_drops: dict[str, list[JSON]] = {}
    for index in range(hosts):
        name = f"host{index:05d}.dc{index % 3 + 1}.example"
        if unreachable_every and index % unreachable_every == unreachable_every - 1:
            documents.append(make_host(name, status="unreachable", error="ssh: connect to host: Connection timed out"))
            continue
        boot_id = boot_id_for(f"kernel-{seed}-{index // hosts_per_kernel}")
        if boot_id not in kernel_drops:  # hosts on one kernel see the same kernel-wide drops
            picked = rng.sample(DROP_CATALOGUE, k=min(reasons_per_host, len(DROP_CATALOGUE)))
            kernel_drops[boot_id] = [
                drop(reason, location, int(rng.paretovariate(1.2) * 20), protocol, hex(rng.randrange(16, 4096)))
                for reason, location, protocol in picked
            ]
        drops = kernel_drops[boot_id]
        interfaces = {"lo": make_interface(base=rng.randrange(100, 10_000))}
        for nic in range(rng.randrange(1, 4)):
            interfaces[f"eth{nic}"] = make_interface(ethtool=veth_ethtool(), base=rng.randrange(10_000, 10_000_000))
        qdiscs = dict(make_qdisc(dev, "fq_codel", "0:") for dev in interfaces if dev != "lo")
        any_address = "0.0.0.0"  # noqa: S104 (an address in test data, nothing binds)
        sockets = [
            make_socket("udp", any_address, 8000 + n, rng.randrange(1, 50), 10_000 + n) for n in range(rng.randrange(3))
        ]
        firewall = dict([make_rule("inet", "filter", "input", 3, "udp dport 9999 counter drop", 5, 300)])
        before = make_snapshot(
            name,
            boot_id=boot_id,
            monotonic=rng.uniform(1_000, 900_000),
            interfaces=interfaces,
            cpus=rng.choice((2, 4, 8)),
            qdiscs=qdiscs,
            sockets=sockets,
            firewall=firewall,
        )
        increases: dict[str, Any] = {
            "interfaces": {nic: {"rx_packets": rng.randrange(1_000, 90_000), "rx_dropped": rng.randrange(0, 20),
                                 "ethtool:rx_queue_0_drops": rng.randrange(0, 5)}
                           for nic in interfaces if nic != "lo"},  # fmt: skip
            "protocols": {"UdpNoPorts": drops[0]["count"] if drops[0]["reason"] == "NO_SOCKET" else 0,
                          "IpInReceives": rng.randrange(1_000, 90_000), "TcpRetransSegs": rng.randrange(0, 30)},
            "softnet": {0: {"processed": rng.randrange(1_000, 90_000), "time_squeeze": rng.randrange(0, 3)}},
            "qdiscs": {key: {"packets": rng.randrange(100, 9_000), "dropped": rng.randrange(0, 4)} for key in qdiscs},
            "sockets": {s["inode"]: rng.randrange(0, 30) for s in sockets},
            "firewall": {key: {"packets": 3, "bytes": 180} for key in firewall},
        }  # fmt: skip
        capture = make_capture(boot_id, sorted(drops, key=lambda d: -d["count"]), duration_s=10.01)
        documents.append(make_host(name, before=before, capture=capture, after=advance(before, 10.4, **increases)))
    return documents
