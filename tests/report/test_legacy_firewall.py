"""iptables-legacy / ip6tables rules in the report: which count drops, the finding that names them, the ledger.

Rules come from the recorded `iptables-save -c` samples (tests/data, sources in its README) through the
collection's parser, in synthetic run directories written by the collection's run_record; every value exact.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible_collections.dropscope.drops.plugins.module_utils.iptables_save import parse_iptables_save
from ansible_collections.dropscope.drops.plugins.module_utils.nft_ruleset import parse_nft_ruleset
from dropscope.build import build_report
from dropscope.knowledge_base import default_knowledge
from dropscope_lab.synthetic import advance, drop, make_capture, make_host, make_rule, make_snapshot, write_run

DATA = Path(__file__).resolve().parents[1] / "data"
SECONDS = 5.0
SHARED = "5a4ed000-0000-4000-8000-0000000000c8"


def _sample(name: str, family: str = "ipv4") -> dict[str, dict]:
    return parse_iptables_save((DATA / name).read_text(encoding="utf-8"), family)


def _drop_entry(rule: dict) -> str | None:
    matched = default_knowledge().drop_rule("firewall", "packets", rule["rule"])
    return matched.id if matched else None


# ------------------------------------------------------------------------------------ which rules drop


@pytest.mark.parametrize(
    ("sample", "family"),
    [("iptables_legacy_save_c.txt", "ipv4"), ("ip6tables_legacy_save_c.txt", "ipv6"),
     ("iptables_save_c_k3s_docker.txt", "ipv4")],
)  # fmt: skip
def test_legacy_rules_drop_exactly_when_their_target_or_policy_does(sample: str, family: str) -> None:
    rules = _sample(sample, family)
    dropping = {key for key, rule in rules.items() if rule["target"] in ("DROP", "REJECT")}
    assert {key for key, rule in rules.items() if _drop_entry(rule)} == dropping
    assert {_drop_entry(rules[key]) for key in dropping} == {"iptables-rule-packets"}


def test_drop_rules_of_the_samples_by_hand() -> None:
    legacy = _sample("iptables_legacy_save_c.txt")
    # INPUT #3's comment quotes "-j DROP": its real target (DROP) decides; KUBE-MARK-DROP-like jumps do not drop.
    assert sorted(key for key, rule in legacy.items() if _drop_entry(rule)) == [
        "iptables filter FORWARD policy", "iptables filter INPUT #2", "iptables filter INPUT #3",
        "iptables filter INPUT #4", "iptables filter KUBE-FIREWALL #1",
    ]  # fmt: skip
    k3s = _sample("iptables_save_c_k3s_docker.txt")
    assert sorted(key for key, rule in k3s.items() if _drop_entry(rule)) == [
        "iptables filter DOCKER-ISOLATION-STAGE-2 #1", "iptables filter FORWARD policy",
        "iptables filter KUBE-FIREWALL #1", "iptables filter KUBE-FIREWALL #2", "iptables filter KUBE-FORWARD #1",
        "iptables filter KUBE-SERVICES #1", "iptables filter KUBE-SERVICES #2", "iptables filter KUBE-SERVICES #3",
        "iptables filter KUBE-SERVICES #4",
    ]  # fmt: skip
    ip6 = _sample("ip6tables_legacy_save_c.txt", "ipv6")
    assert sorted(key for key, rule in ip6.items() if _drop_entry(rule)) == [
        "ip6tables filter INPUT #1", "ip6tables filter INPUT policy"
    ]


def test_nft_rules_keep_their_entry_and_a_comment_never_makes_an_accept_rule_drop() -> None:
    nft = parse_nft_ruleset((DATA / "nft_ruleset_rich.txt").read_text(encoding="utf-8"))
    assert {key: _drop_entry(rule) for key, rule in nft.items()} == {
        "nft inet dropscope_lab input #4": "firewall-rule-packets",
        "nft inet dropscope_lab input #5": "firewall-rule-packets",
        "nft inet dropscope_lab input #9": None,
        "nft ip dsparse_out output #2": "firewall-rule-packets",
        "nft ip filter INPUT #2": "firewall-rule-packets",
        "nft ip filter INPUT #3": None,
    }
    accept = {"rule": '-p udp -m comment --comment "drop it later -j DROP" -j ACCEPT'}
    assert _drop_entry(accept) is None
    reset = {"rule": "-p tcp -m tcp --dport 25 -j REJECT --reject-with tcp-reset"}
    assert _drop_entry(reset) == "iptables-rule-packets"
    assert _drop_entry({"rule": "policy ACCEPT"}) is None
    assert _drop_entry({"rule": "-j KUBE-MARK-DROP"}) is None


# ------------------------------------------------------------------------------------ findings and ledger


def _legacy_host(name: str, drops: list[dict], increases: dict[str, dict], *, boot_id: str | None = None,
                 scope: str = "netns", firewall: dict | None = None) -> dict:
    """A host with the K3s node's legacy rules (plus FIREWALL), INCREASES on them, and a capture of DROPS."""
    before = make_snapshot(name, boot_id=boot_id, firewall={**_sample("iptables_save_c_k3s_docker.txt"),
                                                              **(firewall or {})})
    capture = make_capture(before["system"]["boot_id"], drops, backend="perf" if scope == "kernel" else "bpftrace",
                           scope=scope, duration_s=SECONDS)
    return make_host(name, before=before, capture=capture, after=advance(before, SECONDS, firewall=increases))


def _report(tmp_path: Path, hosts: list[dict]) -> dict[str, dict]:
    report = build_report(write_run(tmp_path / "run", hosts))
    return {host["host"]: host for host in report["hosts"]} | {"__fleet__": report["fleet"]}


def test_a_kubernetes_reject_and_a_drop_policy_are_named_with_their_counts(tmp_path: Path) -> None:
    nft_key, nft_rule = make_rule("inet", "filter", "input", 3, "udp dport 8000 drop")
    host = _legacy_host(
        "node",
        [drop("NETFILTER_DROP", "nf_hook_slow", 50), drop("NETFILTER_DROP", "nft_do_chain", 20)],
        {
            "iptables filter KUBE-SERVICES #3": {"packets": 40, "bytes": 2_400},
            "iptables filter FORWARD policy": {"packets": 7, "bytes": 420},
            "iptables filter DOCKER-ISOLATION-STAGE-2 #1": {"packets": 3, "bytes": 180},
            "iptables filter INPUT #3": {"packets": 1_000, "bytes": 90_000},  # -j KUBE-FIREWALL: not a drop
            nft_key: {"packets": 20, "bytes": 1_200},
        },
        firewall={nft_key: nft_rule},
    )
    node = _report(tmp_path, [host])["node"]
    assert node["drop_counters"]["firewall"] == {
        "iptables filter DOCKER-ISOLATION-STAGE-2 #1": {"packets": "iptables-rule-packets"},
        "iptables filter FORWARD policy": {"packets": "iptables-rule-packets"},
        "iptables filter KUBE-SERVICES #3": {"packets": "iptables-rule-packets"},
        nft_key: {"packets": "firewall-rule-packets"},
    }
    finding = next(f for f in node["findings"] if f["key"] == "NETFILTER_DROP")
    assert (finding["severity"], finding["attribution"], finding["evidence"]["count"]) == ("problem", "host", 70)
    assert finding["explanation"] == (
        "node drops UDP to port 53 in the firewall — "
        "rule `-o docker0 -j DROP` (iptables filter DOCKER-ISOLATION-STAGE-2 #1) counted 3 packets (0.6/s), "
        "in Docker's generated rules (isolation between Docker networks); "
        "rule `policy DROP` (iptables filter FORWARD policy) counted 7 packets (1.4/s); "
        "rule `-d 10.43.0.10/32 -p udp -m comment --comment \"kube-system/kube-dns:dns has no endpoints\" -m udp "
        "--dport 53 -j REJECT --reject-with icmp-port-unreachable` (iptables filter KUBE-SERVICES #3) counted 40 "
        "packets (8/s), in Kubernetes' generated rules (kube-proxy, kubelet: change the Service or the node's "
        "settings, not the rule); "
        "rule `udp dport 8000 drop` (nft inet filter input #3) counted 20 packets (4/s); "
        "kfree_skb saw 70 NETFILTER_DROP at nf_hook_slow, nft_do_chain (14/s)"
    )
    rows = {row["object"]: row for row in node["ledger"]["rows"]}
    assert rows["iptables filter KUBE-SERVICES #3"]["explained_by"] == {"NETFILTER_DROP": 40}
    ledger_rows = node["ledger"]["rows"]
    assert [(row["object"], row["delta"], row["explained_by"], row["unexplained"]) for row in ledger_rows] == [
        ("iptables filter DOCKER-ISOLATION-STAGE-2 #1", 3, {"NETFILTER_DROP": 3}, 0),
        ("iptables filter FORWARD policy", 7, {"NETFILTER_DROP": 7}, 0),
        ("iptables filter KUBE-SERVICES #3", 40, {"NETFILTER_DROP": 40}, 0),
        (nft_key, 20, {"NETFILTER_DROP": 20}, 0),
    ]
    assert (node["ledger"]["drops"], node["ledger"]["explained"], node["ledger"]["unexplained"]) == (70, 70, 0)
    # Legacy rules took the nf_hook_slow drops, the nft rule those of nft_do_chain (its input chain: rx).
    assert [(g["location"], g["direction"]) for g in node["capture"]["drops"]] == [
        ("nf_hook_slow", "unknown"), ("nft_do_chain", "rx")]


def test_ip6tables_input_rule_and_policy_give_inbound_udp_and_rx(tmp_path: Path) -> None:
    before = make_snapshot("v6", firewall=_sample("ip6tables_legacy_save_c.txt", "ipv6"))
    capture = make_capture(before["system"]["boot_id"], [drop("NETFILTER_DROP", "nf_hook_slow", 10, "IPv6")],
                           backend="bpftrace", scope="netns", duration_s=SECONDS)
    after = advance(before, SECONDS, firewall={"ip6tables filter INPUT #1": {"packets": 7, "bytes": 406},
                                               "ip6tables filter INPUT policy": {"packets": 3, "bytes": 174}})
    v6 = _report(tmp_path, [make_host("v6", before=before, capture=capture, after=after)])["v6"]
    finding = next(f for f in v6["findings"] if f["key"] == "NETFILTER_DROP")
    assert finding["explanation"] == (
        "v6 drops inbound UDP to port 8000 in the firewall — "
        "rule `-p udp -m udp --dport 8000 -j DROP` (ip6tables filter INPUT #1) counted 7 packets (1.4/s); "
        "rule `policy DROP` (ip6tables filter INPUT policy) counted 3 packets (0.6/s); "
        "kfree_skb saw 10 NETFILTER_DROP at nf_hook_slow (2/s)"
    )
    assert [(row["object"], row["explained_by"]) for row in v6["ledger"]["rows"]] == [
        ("ip6tables filter INPUT #1", {"NETFILTER_DROP": 7}), ("ip6tables filter INPUT policy", {"NETFILTER_DROP": 3})]
    assert [(g["location"], g["count"], g["direction"]) for g in v6["capture"]["drops"]] == [("nf_hook_slow", 10, "rx")]


def test_a_legacy_rule_without_a_capture_still_names_rule_and_count(tmp_path: Path) -> None:
    host = _legacy_host("quiet", [], {"iptables filter KUBE-FIREWALL #1": {"packets": 4, "bytes": 152}})
    quiet = _report(tmp_path, [host])["quiet"]
    finding = next(f for f in quiet["findings"] if f["key"] == "NETFILTER_DROP")
    assert (finding["kind"], finding["severity"]) == ("counter", "warning")
    assert finding["explanation"] == (
        "quiet drops packets in the firewall — rule `-m comment --comment \"kubernetes firewall for dropping marked "
        "packets\" -m mark --mark 0x8000/0x8000 -j DROP` (iptables filter KUBE-FIREWALL #1) counted 4 packets "
        "(0.8/s), in Kubernetes' generated rules (kube-proxy, kubelet: change the Service or the node's settings, "
        "not the rule)"
    )
    assert quiet["ledger"]["rows"] == [
        {"section": "firewall", "object": "iptables filter KUBE-FIREWALL #1", "counter": "packets", "delta": 4,
         "explained_by": {}, "unexplained": 4, "where": "kernel"}]  # fmt: skip


def test_shared_kernel_drops_go_to_the_host_whose_legacy_rule_counted_them(tmp_path: Path) -> None:
    """perf sees the whole kernel on every host: only h1's own rule counted the 500, so they are h1's."""
    kernel_wide = [drop("NETFILTER_DROP", "nf_hook_slow", 500)]
    hosts = [
        _legacy_host("h1", kernel_wide, {"iptables filter KUBE-SERVICES #3": {"packets": 500, "bytes": 30_000}},
                     boot_id=SHARED, scope="kernel"),
        _legacy_host("h2", kernel_wide, {}, boot_id=SHARED, scope="kernel"),
    ]
    report = _report(tmp_path, hosts)
    h1, h2 = report["h1"], report["h2"]
    mine = next(f for f in h1["findings"] if f["key"] == "NETFILTER_DROP")
    assert (mine["attribution"], mine["attributed_to"], mine["severity"]) == ("host", ["h1"], "problem")
    assert mine["explanation"].startswith("h1 drops UDP to port 53 in the firewall — rule `-d 10.43.0.10/32 -p udp")
    seen = next(f for f in h2["findings"] if f["key"] == "NETFILTER_DROP")
    assert (seen["attribution"], seen["attributed_to"], seen["severity"]) == ("kernel-wide", ["h1"], "info")
    assert seen["explanation"] == (
        "NETFILTER_DROP seen kernel-wide (shared kernel), not attributed to this host: h1's own counters show it — "
        "kfree_skb saw 500 NETFILTER_DROP at nf_hook_slow (100/s)"
    )
    assert (h1["verdict"], h2["verdict"]) == ("problem", "ok")
    assert report["__fleet__"]["findings"] == []
    assert h1["ledger"]["rows"] == [
        {"section": "firewall", "object": "iptables filter KUBE-SERVICES #3", "counter": "packets", "delta": 500,
         "explained_by": {"NETFILTER_DROP": 500}, "unexplained": 0, "where": "kernel"}]  # fmt: skip
