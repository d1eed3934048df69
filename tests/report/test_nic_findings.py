"""NIC drivers' own drop counters (ethtool -S) become findings in the driver's words, and ledger rows "nic".

Synthetic run directories written by the collection's run_record (dropscope_lab.synthetic): one host per
driver, 10 s between its snapshots, each with one counter of its driver's recorded `ethtool -S` names
(tests/data/ethtool_*.txt) increased. Every value exact.
"""

from __future__ import annotations

import pytest
from dropscope.build import build_report
from dropscope_lab.synthetic import advance, make_capture, make_host, make_interface, make_snapshot, write_run

SECONDS = 10.0

# host -> (interface, its ethtool counters before (names from the driver's recorded sample), the one that grows)
DRIVERS = {
    "ena": ("eth0", {"bw_in_allowance_exceeded": 0, "bw_out_allowance_exceeded": 0, "pps_allowance_exceeded": 0,
                     "conntrack_allowance_exceeded": 0, "linklocal_allowance_exceeded": 0,
                     "conntrack_allowance_available": 136_812, "queue_0_rx_page_alloc_fail": 0},
            "pps_allowance_exceeded", 5_400),
    "mlx5": ("ens1f0", {"rx_out_of_buffer": 0, "rx_discards_phy": 0, "rx_buffer_passed_thres_phy": 0,
                        "rx0_wqe_err": 0, "tx_queue_dropped": 0}, "rx_out_of_buffer", 830),
    "vmxnet3": ("ens192", {"rx_queue_0.pkts rx OOB": 0, "rx_queue_0.pkts rx err": 0,
                           "rx_queue_0.drv dropped rx total": 0, "rx_queue_1.pkts rx OOB": 0},
                "rx_queue_0.pkts rx OOB", 312),
    "ixgbe": ("eth2", {"rx_missed_errors": 0, "rx_no_buffer_count": 0, "rx_fifo_errors": 0, "tx_busy": 0},
              "rx_missed_errors", 4_100),
}  # fmt: skip


def _fleet() -> list[dict]:
    hosts = []
    for name, (interface, ethtool, counter, increase) in DRIVERS.items():
        interfaces = {"lo": make_interface(base=100), interface: make_interface(ethtool=ethtool, base=80_000)}
        before = make_snapshot(name, interfaces=interfaces)
        after = advance(before, SECONDS, interfaces={interface: {f"ethtool:{counter}": increase}})
        if name == "ena":  # a level that goes down is not a counter reset
            after["interfaces"][interface]["ethtool"]["conntrack_allowance_available"] = 136_001
        capture = make_capture(before["system"]["boot_id"], [], backend="bpftrace", duration_s=SECONDS)
        hosts.append(make_host(name, before=before, capture=capture, after=after))
    return hosts


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return build_report(write_run(tmp_path_factory.mktemp("nic") / "run", _fleet()))


def _host(report: dict, name: str) -> dict:
    return next(host for host in report["hosts"] if host["host"] == name)


def _counter_finding(host: dict) -> dict:
    (finding,) = [f for f in host["findings"] if f["kind"] == "counter"]
    return finding


EXPECTED = {
    "ena": (
        "counter:nic-ena-pps-allowance",
        "problem",
        "The instance's packets-per-second allowance was exceeded (ENA)",
        "ena: eth0 dropped packets because the instance exceeded its packets-per-second allowance"
        " (pps_allowance_exceeded) — eth0 ethtool:pps_allowance_exceeded +5,400 (540/s)",
        "The instance's packets-per-second allowance was exceeded: move to a larger or network-optimised instance"
        " type (or enable ENA Express), spread the traffic over more instances, or send fewer, larger packets."
        " No kernel setting raises this limit.",
    ),
    "mlx5": (
        "counter:nic-mlx-out-of-buffer",
        "problem",
        "The NIC had no receive buffers posted (mlx5/mlx4 rx_out_of_buffer)",
        "mlx5: NIC ens1f0 dropped received frames because its receive queues had no buffers posted"
        " (rx_out_of_buffer) — ens1f0 ethtool:rx_out_of_buffer +830 (83/s)",
        "The driver did not refill the receive rings fast enough: raise the ring size (ethtool -G IF rx N, up to"
        " the maximum ethtool -g shows), add channels (ethtool -L) and spread their interrupts over more CPUs.",
    ),
    "vmxnet3": (
        "counter:nic-vmxnet3-oob",
        "problem",
        "The vmxnet3 receive ring was out of buffers (pkts rx OOB)",
        "vmxnet3: vmxnet3 NIC ens192 dropped received frames: the receive ring was out of buffers"
        " (ethtool:rx_queue_0.pkts rx OOB) — ens192 ethtool:rx_queue_0.pkts rx OOB +312 (31.2/s)",
        "Raise the vmxnet3 receive rings (ethtool -G IF rx 4096 rx-mini 2048), enable more receive queues (RSS,"
        " ethtool -L), and check the VM's CPU ready time.",
    ),
    "ixgbe": (
        "counter:nic-intel-missed",
        "problem",
        "The NIC's receive FIFO overflowed (missed frames)",
        "ixgbe: NIC eth2 missed received frames: its receive buffer overflowed (ethtool:rx_missed_errors)"
        " — eth2 ethtool:rx_missed_errors +4,100 (410/s)",
        "Raise the receive ring size (ethtool -G IF rx N, up to the maximum ethtool -g shows), use more queues"
        " (ethtool -L) with their interrupts spread over CPUs, and consider flow control (ethtool -A).",
    ),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_a_drivers_drop_counter_is_a_finding_in_its_words(report: dict, name: str) -> None:
    finding = _counter_finding(_host(report, name))
    key, severity, title, explanation, advice = EXPECTED[name]
    assert (finding["key"], finding["severity"], finding["title"]) == (key, severity, title)
    assert finding["explanation"] == explanation
    assert finding["advice"] == advice
    assert _host(report, name)["verdict"] == "problem"


def test_the_ena_finding_names_the_instance_limits_as_the_knobs(report: dict) -> None:
    assert [knob["name"] for knob in _counter_finding(_host(report, "ena"))["knobs"]] == [
        "a larger or network-optimised instance type (higher PPS allowance)",
        "ENA Express (where the instance type supports it)",
        "spread the traffic over more instances or interfaces",
        "fewer, larger packets (batching, larger messages, jumbo frames inside the VPC)",
    ]


@pytest.mark.parametrize("name", list(DRIVERS))
def test_each_shows_in_the_ledger_as_dropped_in_the_nic(report: dict, name: str) -> None:
    interface, _, counter, increase = DRIVERS[name]
    ledger = _host(report, name)["ledger"]
    assert ledger["rows"] == [
        {"section": "interfaces", "object": interface, "counter": f"ethtool:{counter}", "delta": increase,
         "explained_by": {}, "unexplained": increase, "where": "nic"},
    ]  # fmt: skip
    assert (ledger["drops"], ledger["explained"], ledger["unexplained"]) == (increase, 0, increase)


def test_a_level_going_down_is_no_reset(report: dict) -> None:
    assert _host(report, "ena")["resets"] == []


def _ixgbe_host(name: str, interface_missed: int, driver_missed: int) -> dict:
    """An ixgbe host whose interface rx_missed_errors (the kernel's copy) and ethtool rx_missed_errors grow."""
    ethtool = {"rx_missed_errors": 0, "rx_no_buffer_count": 0, "rx_fifo_errors": 0, "tx_busy": 0}
    interfaces = {"eth2": make_interface(ethtool=ethtool, base=80_000)}
    before = make_snapshot(name, interfaces=interfaces)
    after = advance(
        before,
        SECONDS,
        interfaces={"eth2": {"rx_missed_errors": interface_missed, "ethtool:rx_missed_errors": driver_missed}},
    )
    capture = make_capture(before["system"]["boot_id"], [], backend="bpftrace", duration_s=SECONDS)
    return make_host(name, before=before, capture=capture, after=after)


def test_a_counter_that_repeats_the_drivers_own_joins_its_finding(tmp_path) -> None:
    """ixgbe's rx_missed_errors is also the interface's rx_missed_errors: one NIC problem, one finding with both
    counters as evidence and the count once (900, not 1,800). An interface count beyond the driver's (1,000 of
    which the driver explains 900) keeps a finding of its own."""
    report = build_report(write_run(tmp_path / "run", [_ixgbe_host("same", 900, 900), _ixgbe_host("more", 1_000, 900)]))
    same = [f for f in _host(report, "same")["findings"] if f["kind"] == "counter"]
    assert [f["key"] for f in same] == ["counter:nic-intel-missed"]
    assert same[0]["evidence"]["count"] == 900
    assert [(row["object"], row["counter"], row["delta"]) for row in same[0]["evidence"]["counters"]] == [
        ("eth2", "ethtool:rx_missed_errors", 900), ("eth2", "rx_missed_errors", 900),
    ]  # fmt: skip
    assert _host(report, "same")["ledger"]["unexplained"] == 900  # the ledger counts the drops once

    more = [f for f in _host(report, "more")["findings"] if f["kind"] == "counter"]
    assert sorted(f["key"] for f in more) == ["counter:if-rx-missed", "counter:nic-intel-missed"]


def test_a_counter_already_in_a_reasons_finding_is_listed_there_once(tmp_path) -> None:
    """A socket's drops stand for SOCKET_RCVBUFF and duplicate UdpRcvbufErrors (also SOCKET_RCVBUFF): with no
    capture to explain them, the one finding lists each of the three counters once."""
    from dropscope_lab.synthetic import make_socket

    before = make_snapshot("udp", protocols={"UdpRcvbufErrors": 0, "UdpInErrors": 0},
                           sockets=[make_socket("udp", "0.0.0.0", 8000, 1, inode=7)])  # noqa: S104  # fmt: skip
    after = advance(before, SECONDS, protocols={"UdpRcvbufErrors": 50, "UdpInErrors": 50}, sockets={7: 50})
    capture = make_capture(before["system"]["boot_id"], [], backend="bpftrace", duration_s=SECONDS)
    report = build_report(write_run(tmp_path / "run", [make_host("udp", before=before, capture=capture, after=after)]))
    (finding,) = [f for f in _host(report, "udp")["findings"] if f["kind"] == "counter"]
    assert finding["key"] == "SOCKET_RCVBUFF"
    rows = finding["evidence"]["counters"]
    assert [(row["section"], row["object"], row["counter"], row["delta"]) for row in rows] == [
        ("protocols", None, "UdpRcvbufErrors", 50),
        ("sockets", "udp 0.0.0.0:8000", "drops", 50),
        ("protocols", None, "UdpInErrors", 50),
    ]  # fmt: skip
