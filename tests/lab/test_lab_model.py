"""The lab's naming, addressing and safety checks (no root needed)."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import pytest
from conftest import claimed_lab_name
from dropscope_lab import traffic
from dropscope_lab.model import Lab, LabError, check_name, check_state_dir, check_subnet, mac_for


def test_names_fit_interface_names():
    assert check_name("dslab") == "dslab"
    for bad in ("", "Dslab", "ds-lab", "1ds", "ds lab", "abcdefghijk", "a;b"):
        with pytest.raises(LabError):
            check_name(bad)


def test_subnets_stay_in_the_lab_range_and_fit_the_hosts():
    assert check_subnet("198.18.0.0/24", 200) == ipaddress.IPv4Network("198.18.0.0/24")
    assert check_subnet("198.19.255.0/24", 3).prefixlen == 24
    for text, hosts in (("10.0.0.0/24", 3), ("198.20.0.0/24", 3), ("198.18.0.0/28", 5), ("198.18.0.1/24", 3),
                        ("nonsense", 1)):
        with pytest.raises(LabError):
            check_subnet(text, hosts)


def test_state_dir_must_be_plain():
    assert check_state_dir(Path("/run/x_y/lab-1")) == Path("/run/x_y/lab-1")
    for bad in ("/tmp/a b", "/tmp/a'b", "/tmp/../etc"):
        with pytest.raises(LabError):
            check_state_dir(Path(bad))


def test_plan_addresses_names_and_inventory():
    lab = Lab.plan("dsx", ipaddress.IPv4Network("198.18.5.0/24"), 2, Path("/run/dropscope-lab/dsx"))
    assert [(h.name, h.netns, h.veth, h.address) for h in lab.hosts] == [
        ("h1", "dsx-h1", "dsx-h1", "198.18.5.11"), ("h2", "dsx-h2", "dsx-h2", "198.18.5.12")]
    assert (lab.bridge, lab.bridge_address, lab.bridge_mac) == ("dsx-br", "198.18.5.1", "02:d5:c6:12:05:01")
    assert mac_for(ipaddress.IPv4Address("198.18.5.12")) == "02:d5:c6:12:05:0c"
    assert Lab.from_json(lab.to_json()) == lab
    assert list(lab.to_json()["hosts"]) == ["h1", "h2"]
    inventory = lab.inventory_text()
    assert inventory.startswith("[lab]\nh1 ansible_host=198.18.5.11\nh2 ansible_host=198.18.5.12\n\n[lab:vars]\n")
    assert "ansible_ssh_private_key_file=/run/dropscope-lab/dsx/id_ed25519\n" in inventory
    config = lab.sshd_config_text(lab.hosts[1])
    assert "ListenAddress 198.18.5.12\n" in config and "Subsystem sftp /usr/lib/openssh/sftp-server\n" in config


def test_traffic_goes_only_to_lab_addresses_or_loopback(monkeypatch):
    def no_send(*args, **kwargs):
        raise AssertionError("a datagram was about to leave")

    monkeypatch.setattr(socket.socket, "sendto", no_send)
    for dst in ("8.8.8.8", "10.0.0.1", "198.20.0.1", "0.0.0.0"):
        with pytest.raises(ValueError):
            traffic.send_udp(dst, 9, 1)
    for count, timeout in ((0, 1.0), (traffic.MAX_PACKETS + 1, 1.0), (1, 0.0), (1, 1e9)):
        with pytest.raises(ValueError):
            traffic.send_udp("198.18.0.11", 9, count, timeout=timeout)
    assert traffic.main(["send", "--dst", "1.1.1.1", "--port", "9", "--count", "1"]) == 2


def test_loopback_traffic_is_counted_and_paced():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sent = traffic.send_udp("127.0.0.1", rx.getsockname()[1], 120, size=100, timeout=5.0)
        rx.settimeout(1.0)
        got = [rx.recv(2048) for _ in range(sent)]
    assert sent == 120 and len(got) == 120 and all(len(d) == 100 for d in got)
    assert got[0].startswith(b"dropscope-lab 0") and got[-1].startswith(b"dropscope-lab 119")


def test_a_second_test_run_cannot_claim_a_lab_name_in_use(tmp_path):
    # The second claim opens the file on its own, as another process would: flock locks do not share.
    with claimed_lab_name("dsclaim", tmp_path):
        assert (tmp_path / "dropscope-test-lab-dsclaim.lock").read_text() == f"pid {os.getpid()}\n"
        in_use = rf"'dsclaim' is in use by pid {os.getpid()}: set DROPSCOPE_TEST_LAB"
        with pytest.raises(pytest.fail.Exception, match=in_use):
            with claimed_lab_name("dsclaim", tmp_path):
                pass
        with claimed_lab_name("dsother", tmp_path):  # another name is free
            pass
    assert list(tmp_path.iterdir()) == []  # released and gone
    with claimed_lab_name("dsclaim", tmp_path):  # free again
        pass
