"""Knowledge restricted by NIC driver: counters.yml `drivers` picks the entry by the interface's driver.

`rx_queue_N_drops` is a name two drivers use differently (recorded samples, tests/data/README.md): igb
counts frames its NIC dropped for a full receive ring (ethtool_igb.txt), veth counts packets dropped in its
own receive path inside the kernel (ethtool_veth.txt). The driver comes from `ethtool -i` (the snapshot's
`interfaces.*.driver`, report.json `system.nics`). Counters are the recorded samples' names through the
collection's parser, in synthetic run directories written by the collection's run_record; every value exact.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible_collections.dropscope.drops.plugins.module_utils.ethtool_stats import parse_ethtool_stats
from dropscope.build import build_report
from dropscope.knowledge_base import KnowledgeError, default_knowledge, load_knowledge
from dropscope_lab.synthetic import advance, make_capture, make_host, make_interface, make_snapshot, write_run

DATA = Path(__file__).resolve().parents[1] / "data"
SECONDS = 10.0


def _driver(name: str | None) -> dict | None:
    return None if name is None else {"driver": name, "version": None, "firmware_version": None, "bus_info": None}


def _host(name: str, interface: str, sample: str, driver: str | None) -> dict:
    """A host whose INTERFACE has SAMPLE's ethtool counters and DRIVER; its rx_queue_0_drops grows by 50."""
    ethtool = parse_ethtool_stats((DATA / sample).read_text(encoding="utf-8"))
    assert "rx_queue_0_drops" in ethtool
    interfaces = {interface: make_interface(ethtool=ethtool, base=1_000, driver=_driver(driver))}
    before = make_snapshot(name, interfaces=interfaces)
    after = advance(before, SECONDS, interfaces={interface: {"ethtool:rx_queue_0_drops": 50}})
    capture = make_capture(before["system"]["boot_id"], [], backend="bpftrace", duration_s=SECONDS)
    return make_host(name, before=before, capture=capture, after=after)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    hosts = [_host("metal", "eno1", "ethtool_igb.txt", "igb"), _host("pod", "veth9", "ethtool_veth.txt", "veth"),
             _host("old", "eth0", "ethtool_igb.txt", None)]  # fmt: skip
    built = build_report(write_run(tmp_path_factory.mktemp("drivers") / "run", hosts))
    return {host["host"]: host for host in built["hosts"]}


@pytest.mark.parametrize(
    ("host", "interface", "entry", "where", "key"),
    [("metal", "eno1", "nic-igb-queue-drops", "nic", "unexplained:nic"),
     ("pod", "veth9", "veth-queue-drops", "kernel", "unexplained:kernel"),
     # no `ethtool -i` record (older runs): the name alone decides, the first entry that has it
     ("old", "eth0", "nic-igb-queue-drops", "nic", "unexplained:nic")],
)  # fmt: skip
def test_the_same_counter_name_means_what_its_driver_means(
    report: dict, host: str, interface: str, entry: str, where: str, key: str
) -> None:
    item = report[host]
    assert item["drop_counters"]["interfaces"][interface] == {"ethtool:rx_queue_0_drops": entry}
    row = next(r for r in item["ledger"]["rows"] if r["counter"] == "ethtool:rx_queue_0_drops")
    assert (row["delta"], row["where"], row["unexplained"]) == (50, where, 50)
    findings = {finding["key"]: finding for finding in item["findings"]}
    assert set(findings) == {f"counter:{entry}", key}
    title = next(rule.entry["title"] for rule in default_knowledge().counters if rule.id == entry)
    assert findings[f"counter:{entry}"]["title"] == title


def test_the_driver_is_the_hosts_own(report: dict) -> None:
    assert report["metal"]["system"]["nics"]["eno1"]["driver"] == "igb"
    assert report["pod"]["system"]["nics"]["veth9"]["driver"] == "veth"
    assert report["old"]["system"]["nics"] == {}


def test_entries_match_only_their_drivers() -> None:
    knowledge = default_knowledge()
    counter = "ethtool:rx_queue_0_drops"
    assert knowledge.drop_rule("interfaces", counter, None, "igb").id == "nic-igb-queue-drops"
    assert knowledge.drop_rule("interfaces", counter, None, "igc").id == "nic-igb-queue-drops"
    assert knowledge.drop_rule("interfaces", counter, None, "veth").id == "veth-queue-drops"
    # another driver's counter of that name is only a name: the generic driver-drop entry
    assert knowledge.drop_rule("interfaces", counter, None, "ice").id == "ethtool-drops"
    # `rx_drops`: virtio_net's driver drops (ethtool_virtio_net.txt) vs ena's device drops (ena_ethtool.c's
    # ena_stats_global_strings, which also has rx_drops)
    assert knowledge.drop_rule("interfaces", "ethtool:rx_drops", None, "virtio_net").id == "nic-virtio-drops"
    assert knowledge.drop_rule("interfaces", "ethtool:rx_drops", None, "ena").id == "ethtool-drops"


def test_a_user_file_can_restrict_an_entry_and_drivers_must_be_a_list(tmp_path: Path) -> None:
    site = tmp_path / "site.yml"
    site.write_text("counters:\n  - id: nic-mlx-out-of-buffer\n    drivers: [mlx5_core, mlx4_en]\n", encoding="utf-8")
    knowledge = load_knowledge(site)
    counter = "ethtool:rx_out_of_buffer"
    assert knowledge.drop_rule("interfaces", counter, None, "mlx5_core").id == "nic-mlx-out-of-buffer"
    assert knowledge.drop_rule("interfaces", counter, None, "ena").id == "ethtool-missed"
    site.write_text("counters:\n  - id: nic-mlx-out-of-buffer\n    drivers: mlx5_core\n", encoding="utf-8")
    with pytest.raises(KnowledgeError, match=r"counters\[0\]\.drivers: expected a list"):
        load_knowledge(site)
