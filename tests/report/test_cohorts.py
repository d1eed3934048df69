"""fleet.cohorts and fleet.outliers: hosts grouped by the findings that fire on them, with what they share."""

from __future__ import annotations

from pathlib import Path

from dropscope.build import build_report
from dropscope.cohorts import cohorts, outliers
from dropscope_lab.synthetic import (
    advance,
    boot_id_for,
    drop,
    ixgbe_ethtool,
    make_capture,
    make_host,
    make_interface,
    make_snapshot,
    write_run,
)

OLD_KERNEL, NEW_KERNEL = "5.15.0-91-generic", "6.1.0-18-amd64"
NO_SOCKET = {"key": "NO_SOCKET", "title": "Nobody listens on the destination port", "severity": "problem"}


def _host(name: str, release: str = NEW_KERNEL, drops: tuple = (), *, boot_id: str | None = None,
          scope: str = "kernel", interfaces: dict | None = None, **increases: dict) -> dict:  # fmt: skip
    """An ok host on kernel RELEASE whose capture saw DROPS and whose counters grew by INCREASES in 10 s."""
    boot_id = boot_id or boot_id_for(name)
    before = make_snapshot(name, boot_id=boot_id, kernel_release=release, interfaces=interfaces)
    backend = "bpftrace" if scope == "netns" else "perf"
    capture = make_capture(boot_id, list(drops), scope=scope, backend=backend)
    return make_host(name, before=before, capture=capture, after=advance(before, 10.0, **increases))


def _no_socket(name: str, release: str = NEW_KERNEL, **options: object) -> dict:
    """A host dropping 300 UDP datagrams to a port nobody listens on (a problem: 30/s)."""
    return _host(name, release, (drop("NO_SOCKET", "__udp4_lib_rcv", 300),), protocols={"UdpNoPorts": 300}, **options)


def _ixgbe(firmware: str) -> dict:
    driver = {"driver": "ixgbe", "version": "5.19.6-k", "firmware_version": firmware, "bus_info": "0000:01:00.0"}
    return {"lo": make_interface(base=10), "eth0": make_interface(ethtool=ixgbe_ethtool(), base=1_000, driver=driver)}


def _nic_host(name: str, firmware: str, increases: dict) -> dict:
    """A host with an ixgbe NIC on FIRMWARE whose counters grew by INCREASES (per interface)."""
    before = make_snapshot(name, kernel_release=NEW_KERNEL, interfaces=_ixgbe(firmware))
    capture = make_capture(boot_id_for(name), [])
    return make_host(name, before=before, capture=capture, after=advance(before, 10.0, interfaces=increases))


def test_four_of_six_hosts_share_a_kernel_and_a_finding(tmp_path: Path) -> None:
    hosts = [_no_socket(f"h{n}", OLD_KERNEL) for n in range(1, 5)] + [_host("h5"), _host("h6")]
    report = build_report(write_run(tmp_path / "run", hosts))

    assert report["fleet"]["cohorts"] == [
        {
            "hosts": ["h1", "h2", "h3", "h4"],
            "shared": [{"attribute": "kernel_release", "value": OLD_KERNEL, "elsewhere": 0}],
            "findings": [NO_SOCKET],
        }
    ]
    assert report["fleet"]["outliers"] == []  # the run records no inventory groups
    assert report["hosts"][0]["system"] == {
        "kernel_release": OLD_KERNEL, "distro": "Debian GNU/Linux 12 (bookworm)", "python": "3.11.2", "nics": {},
    }  # fmt: skip
    assert report["hosts"][0]["groups"] is None


def test_hosts_on_one_kernel_and_a_nic_firmware(tmp_path: Path) -> None:
    """Three containers on one kernel (own namespaces: bpftrace, scope netns) share the drop and the kernel;
    three hosts lose packets in an ixgbe NIC with one firmware, the same NIC on the other firmware does not."""
    shared_kernel = boot_id_for("container-host")
    containers = [_no_socket(f"c{n}", boot_id=shared_kernel, scope="netns") for n in range(1, 4)]
    missing = {"eth0": {"rx_missed_errors": 900, "ethtool:rx_missed_errors": 900}}
    old_firmware = [_nic_host(f"n{n}", "0x800009e0", missing) for n in range(1, 4)]
    new_firmware = [_nic_host(f"m{n}", "0x80000d7e", {}) for n in range(1, 4)]
    report = build_report(write_run(tmp_path / "run", containers + old_firmware + new_firmware))

    # The interface's rx_missed_errors counts the driver's own rx_missed_errors again: one finding for both.
    nic_findings = [
        {"key": "counter:nic-intel-missed", "title": "The NIC's receive FIFO overflowed (missed frames)",
         "severity": "problem"},
        {"key": "unexplained:nic", "title": "Drops in the NIC, before the kernel saw the packet",
         "severity": "problem"},
    ]  # fmt: skip
    assert report["fleet"]["cohorts"] == [
        {
            "hosts": ["c1", "c2", "c3"],
            "shared": [{"attribute": "boot_id", "value": shared_kernel, "elsewhere": 0}],
            "findings": [NO_SOCKET],
        },
        {
            "hosts": ["n1", "n2", "n3"],
            "shared": [{"attribute": "nic_firmware", "value": "ixgbe 0x800009e0", "elsewhere": 0}],
            "findings": nic_findings,
        },
    ]
    assert report["hosts"][3]["system"]["nics"] == {
        "eth0": {"driver": "ixgbe", "version": "5.19.6-k", "firmware_version": "0x800009e0"}
    }


def test_a_host_unlike_its_inventory_group_is_named(tmp_path: Path) -> None:
    web = [_host("web1"), _host("web2"), _host("web3"), _no_socket("web4", OLD_KERNEL)]
    db = [_no_socket("db1"), _no_socket("db2")]
    groups = {"web1": ["web"], "web2": ["web"], "web3": ["web"], "web4": ["web"], "db1": ["db"], "db2": ["db"]}
    report = build_report(write_run(tmp_path / "run", web + db, groups=groups))

    assert report["fleet"]["outliers"] == [
        {
            "host": "web4",
            "group": "web",
            "findings": ["NO_SOCKET"],
            "missing": [],
            "attributes": [{"attribute": "kernel_release", "value": OLD_KERNEL}],
        }
    ]
    # web4 and the db hosts drop the same way and have nothing else in common (db: too small for outliers).
    assert report["fleet"]["cohorts"] == [
        {"hosts": ["web4", "db1", "db2"], "shared": [], "findings": [NO_SOCKET]},
    ]
    assert [host["groups"] for host in report["hosts"]] == [["web"]] * 4 + [["db"]] * 2


def test_what_every_host_has_is_not_shared_and_unknown_values_do_not_count() -> None:
    """Pure functions over built host entries: a fact every other host has too is not listed; a fact no
    other host is known to have a value for (a sysctl the rest did not keep) is not claimed either."""

    def entry(name: str, keys: list[str], release: str, sysctl: dict | None = None) -> dict:
        return {
            "host": name, "status": "ok", "kernel": {"boot_id": None}, "groups": ["all-web"],
            "system": {"kernel_release": release, "distro": "Debian GNU/Linux 12 (bookworm)", "python": "3.11.2",
                       "nics": {}},
            "knobs": {"sysctl": sysctl or {}},
            "findings": [{"key": key, "title": key.title(), "severity": "warning"} for key in keys],
        }  # fmt: skip

    hosts = [
        entry("a", ["SOCKET_RCVBUFF"], "6.1", {"net.core.rmem_max": "212992"}),
        entry("b", ["SOCKET_RCVBUFF"], "6.1", {"net.core.rmem_max": "212992"}),
        entry("c", [], "6.1"),
        entry("d", ["QDISC_DROP"], "6.8", {"net.core.rmem_max": "212992"}),
        {"host": "e", "status": "unreachable", "findings": [], "system": None, "kernel": {}, "groups": None},
    ]
    assert cohorts(hosts) == [
        {
            "hosts": ["a", "b"],
            # c runs 6.1 too, d does not; d keeps rmem_max 212992 too, c did not keep it (unknown).
            "shared": [{"attribute": "kernel_release", "value": "6.1", "elsewhere": 1}],
            "findings": [{"key": "SOCKET_RCVBUFF", "title": "Socket_Rcvbuff", "severity": "warning"}],
        }
    ]
    hosts[3]["knobs"]["sysctl"]["net.core.rmem_max"] = "8388608"
    assert cohorts(hosts)[0]["shared"] == [
        {"attribute": "sysctl net.core.rmem_max", "value": "212992", "elsewhere": 0},
        {"attribute": "kernel_release", "value": "6.1", "elsewhere": 1},
    ]
    assert outliers(hosts) == []  # all-web: a, b share SOCKET_RCVBUFF but are not more than half of 4
