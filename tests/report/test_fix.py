"""Proposed knob values (advice.py) and `dropscope fix` (fix.yml), on built reports.

The knob values are the ones a host reports (`host["knobs"]`); the playbook is checked by the real
ansible-playbook (syntax, and a check-mode run on this machine through a local connection: it reads
/proc/sys and writes nothing). Hostile host names stay data: they select no other host, run nothing
and cannot end a comment.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dropscope import cli
from dropscope.advice import advise_host, power_of_two_at_least
from dropscope.fix import comment_text, fix_plan, fix_playbook
from dropscope.knowledge_base import KnowledgeError, default_knowledge, load_knowledge
from dropscope_lab.synthetic import drop, simple_host, write_run

REPO = Path(__file__).resolve().parents[2]
KNOWLEDGE = default_knowledge()
RCVBUF_ADVICE = (
    "Raise net.core.rmem_max / the socket's SO_RCVBUF, or make the application read faster "
    "(more threads, SO_REUSEPORT)."
)
RCVBUF_TITLE = "A socket's receive buffer is full (the application cannot keep up)"
SYSCTLS = {"net.core.rmem_default": "212992", "net.core.rmem_max": "4194304", "net.core.netdev_max_backlog": "1000",
           "net.netfilter.nf_conntrack_max": "262144"}  # fmt: skip


def rcvbuf_finding(rate: float, port: int = 9100) -> dict:
    """A SOCKET_RCVBUFF finding as findings.py makes it (knob names from reasons.yml), RATE drops/s over 4 s."""
    count = int(rate * 4)
    return {
        "key": "SOCKET_RCVBUFF", "kind": "reason", "reason": "SOCKET_RCVBUFF", "title": RCVBUF_TITLE,
        "severity": "problem", "benign": False, "attribution": "host", "advice": RCVBUF_ADVICE,
        "knobs": ["net.core.rmem_max", "net.core.rmem_default", "SO_RCVBUF (the socket's receive buffer)",
                  "net.ipv4.udp_mem"],
        "evidence": {"basis": "capture", "count": count, "rate": rate,
                     "drops": [{"reason": "SOCKET_RCVBUFF", "location": "udp_queue_rcv_one_skb", "count": count,
                                "port": port, "rate": rate}],
                     "counters": [{"section": "sockets", "object": f"udp 0.0.0.0:{port}", "counter": "drops",
                                   "delta": count, "rate": rate}]},
    }  # fmt: skip


def rcvbuf_host(name: str, socket_buffer: int | None, rate: float) -> dict:
    """A report host with one receive-buffer finding; SOCKET_BUFFER is the socket's sk_rcvbuf (None: not read)."""
    sockets = [] if socket_buffer is None else [
        {"proto": "udp", "local_address": "0.0.0.0", "local_port": 9100, "rcvbuf": socket_buffer, "drops": 9}]
    return {"host": name, "status": "ok", "findings": [rcvbuf_finding(rate)],
            "knobs": {"sysctl": dict(SYSCTLS), "sockets": sockets}}  # fmt: skip


def advised(*hosts: dict) -> dict:
    for host in hosts:
        advise_host(host, KNOWLEDGE)
    return {"run": {"run_id": "20261202T000000Z"}, "hosts": list(hosts)}


# ------------------------------------------------------------------------------------------ advice


def test_a_socket_that_takes_the_default_gets_a_larger_default() -> None:
    report = advised(rcvbuf_host("h1", 212992, 236.0))
    assert report["hosts"][0]["findings"][0]["knobs"] == [
        {"name": "net.core.rmem_max", "value": "4194304", "proposed": None,
         "why": "no proposal: the socket takes the default buffer (212992 B): see net.core.rmem_default"},
        # 212992 + 236/s × 1 s × 2304 B = 756736 → 1048576
        {"name": "net.core.rmem_default", "value": "212992", "proposed": "1048576",
         "why": "the socket takes the default buffer (212992 B); to hold 236 drops/s for 1 s of not reading at 2304 B "
                "each (an MTU-size datagram's kernel size) it needs 756736 B, rounded up to a power of two"},
        {"name": "SO_RCVBUF (the socket's receive buffer)", "value": "212992", "proposed": None,
         "why": "no proposal: the socket takes the default buffer (212992 B): see net.core.rmem_default"},
        {"name": "net.ipv4.udp_mem", "value": None, "proposed": None, "why": None},
    ]  # fmt: skip


def test_an_application_that_sets_so_rcvbuf_itself_is_told_so() -> None:
    report = advised(rcvbuf_host("h3", 2304, 100.0))
    knobs = {knob["name"]: knob for knob in report["hosts"][0]["findings"][0]["knobs"]}
    assert knobs["net.core.rmem_default"] == {
        "name": "net.core.rmem_default", "value": "212992", "proposed": None,
        "why": "no proposal: the application sets SO_RCVBUF itself (2304 B, the default is 212992 B): the default "
               "does not change its buffer"}  # fmt: skip
    # 2304 + 100/s × 1 s × 2304 B = 232704: rmem_max already allows it; the application must ask for 262144
    assert knobs["net.core.rmem_max"]["proposed"] is None
    assert knobs["net.core.rmem_max"]["why"] == "no change: 4194304 is at least what the drops need (232704)"
    assert knobs["SO_RCVBUF (the socket's receive buffer)"] == {
        "name": "SO_RCVBUF (the socket's receive buffer)", "value": "2304", "proposed": "262144",
        "why": "the application sets SO_RCVBUF itself (2304 B): the fix is in the application; to hold 100 drops/s "
               "for 1 s of not reading at 2304 B each it needs 232704 B, rounded up to a power of two "
               "(net.core.rmem_max must allow it)"}  # fmt: skip


def test_a_socket_whose_buffer_was_not_read_is_assumed_to_take_the_default() -> None:
    report = advised(rcvbuf_host("h4", None, 236.0))
    knob = next(k for k in report["hosts"][0]["findings"][0]["knobs"] if k["name"] == "net.core.rmem_default")
    assert knob["proposed"] == "1048576"
    assert knob["why"].endswith(
        "rounded up to a power of two (the socket's own buffer was not read: assumed the default)"
    )


def test_proposals_are_capped_and_never_lower_a_value() -> None:
    fast = advised(rcvbuf_host("h1", 212992, 1_000_000.0))  # 2.3 GB needed: capped at 64 MiB
    knob = next(k for k in fast["hosts"][0]["findings"][0]["knobs"] if k["name"] == "net.core.rmem_default")
    assert knob["proposed"] == "67108864" and knob["why"].endswith("rounded up to a power of two, capped at 67108864")
    host = rcvbuf_host("h2", 16777216, 10.0)
    host["knobs"]["sysctl"]["net.core.rmem_default"] = "16777216"  # 16 MiB already > 16777216 + 23040
    knob = next(k for k in advised(host)["hosts"][0]["findings"][0]["knobs"] if k["name"] == "net.core.rmem_default")
    assert knob["proposed"] == "33554432"  # needs 16800256: the next power of two, at least twice the value
    host = rcvbuf_host("h3", 2304, 0.5)  # the application's own buffer: rmem_max already allows what it needs
    knob = next(k for k in advised(host)["hosts"][0]["findings"][0]["knobs"] if k["name"] == "net.core.rmem_max")
    assert knob == {"name": "net.core.rmem_max", "value": "4194304", "proposed": None,
                    "why": "no change: 4194304 is at least what the drops need (3456)"}  # fmt: skip


def test_backlog_and_conntrack_rules() -> None:
    backlog = {"key": "CPU_BACKLOG", "title": "The CPU's input backlog was full", "severity": "problem",
               "attribution": "host", "benign": False, "advice": "Raise net.core.netdev_max_backlog.",
               "knobs": ["net.core.netdev_max_backlog", "net.core.netdev_budget"],
               "evidence": {"basis": "counters", "count": 25000, "rate": 5000.0, "drops": [],
                            "counters": []}}  # fmt: skip
    table = {"key": "counter:conntrack-table-full", "title": "The conntrack table was full", "severity": "problem",
             "attribution": "host", "benign": False, "advice": "Raise net.netfilter.nf_conntrack_max.",
             "knobs": ["net.netfilter.nf_conntrack_max"],
             "evidence": {"basis": "counters", "count": 40, "rate": 8.0, "drops": [], "counters": []}}  # fmt: skip
    host = {"host": "gw", "status": "ok", "findings": [backlog, table], "knobs": {"sysctl": dict(SYSCTLS)},
            "counters": {"conntrack": {"drop": 40, "count_now": 262144, "max_now": 262144}}}
    advise_host(host, KNOWLEDGE)
    assert backlog["knobs"] == [
        # 1000 + 5000/s × 0.1 s = 1500, at least twice 1000 → 2048
        {"name": "net.core.netdev_max_backlog", "value": "1000", "proposed": "2048",
         "why": "the per-CPU input backlog holds 1000 packets; 5000 drops/s for 0.1 s more need 1500, rounded up to a "
                "power of two"},
        {"name": "net.core.netdev_budget", "value": None, "proposed": None, "why": None},
    ]  # fmt: skip
    assert table["knobs"] == [
        {"name": "net.netfilter.nf_conntrack_max", "value": "262144", "proposed": "524288",
         "why": "the table held 262144 of 262144 entries; 2 × its fill is 524288, rounded up to a power of two (each "
                "entry costs about 320 B of kernel memory)"},
    ]  # fmt: skip


def test_power_of_two() -> None:
    assert [power_of_two_at_least(n) for n in (0, 1, 3, 4096, 4097)] == [1, 1, 4, 4096, 8192]


def test_knob_rules_are_validated(tmp_path: Path) -> None:
    bad = {
        "knobs:\n  net.core.x:\n    propose: {rule: guess, max: 1}\n": "knobs.net.core.x.propose.rule: expected one of",
        "knobs:\n  net.core.x:\n    propose: {rule: queue, max: 8}\n": "net.core.x.propose: rule queue needs drain_s",
        "knobs:\n  net.core.x:\n    propose: {rule: queue, drain_s: -1, max: 8}\n": "drain_s: expected a positive",
        "knobs:\n  'rm -rf /':\n    sysctl: true\n": "is not a sysctl name",
        "knobs:\n  net.core.x:\n    scope: host\n": "knobs.net.core.x.scope: 'host' is not one of kernel, netns",
    }
    for index, (text, message) in enumerate(bad.items()):
        path = tmp_path / f"bad{index}.yml"
        path.write_text(text)
        with pytest.raises(KnowledgeError, match=message.replace("(", r"\(").replace(".", r"\.")):
            load_knowledge(path)
    site = tmp_path / "site.yml"
    site.write_text("knobs:\n  net.core.rmem_default:\n    propose: {rule: buffer, socket: default, drain_s: 2, "
                    "bytes_per_drop: 1024, max: 1048576}\n")
    knowledge = load_knowledge(site)
    assert knowledge.knob("net.core.rmem_default")["sysctl"] is True  # merged field by field
    host = rcvbuf_host("h1", 212992, 236.0)
    advise_host(host, knowledge)
    knob = next(k for k in host["findings"][0]["knobs"] if k["name"] == "net.core.rmem_default")
    assert knob["proposed"] == "1048576"  # 212992 + 236 × 2 × 1024 = 696320 → 1048576


# ------------------------------------------------------------------------------------------- fix.yml

EXPECTED_FIX = r"""# dropscope fix for run 20261202T000000Z: the changes its findings propose (dropscope never runs it).
# Check mode unless dropscope_apply is true:
#   ansible-playbook -i INVENTORY fix.yml --check --diff            # what would change
#   ansible-playbook -i INVENTORY fix.yml -e dropscope_apply=true   # apply (only ever raises a value)
#   --tags TAG: one finding only; -e dropscope_sysctl_file=PATH: where the values are kept across reboots
# Needs the ansible.posix collection (ansible.posix.sysctl).
#
# Changes (why, per host):
#   [SOCKET_RCVBUFF] A socket's receive buffer is full (the application cannot keep up)
#     net.core.rmem_default: one value per kernel (read-only in a container or network namespace: apply it on the
#       machine); sockets take the default buffer when they are created: restart the application after the change
#     "h1": net.core.rmem_default = 212992 -> 1048576 (the socket takes the default buffer (212992 B); to hold 236
#       drops/s for 1 s of not reading at 2304 B each (an MTU-size datagram's kernel size) it needs 756736 B, rounded up
#       to a power of two)
#     "h2": net.core.rmem_default = 212992 -> 1048576 (the socket takes the default buffer (212992 B); to hold 200
#       drops/s for 1 s of not reading at 2304 B each (an MTU-size datagram's kernel size) it needs 673792 B, rounded up
#       to a power of two)
#
# No safe automatic change (do these by hand):
#   [NETFILTER_DROP] A firewall rule dropped the packet on "h2", "h3"
#     Change or remove the firewall rule.
#   [SOCKET_RCVBUFF] A socket's receive buffer is full (the application cannot keep up) on "h3"
#     Raise net.core.rmem_max / the socket's SO_RCVBUF, or make the application read faster (more threads,
#       SO_REUSEPORT).
#     knob: SO_RCVBUF (the socket's receive buffer) = 2304 -> 262144 (the application sets SO_RCVBUF itself (2304 B):
#       the fix is in the application; to hold 100 drops/s for 1 s of not reading at 2304 B each it needs 232704 B,
#       rounded up to a power of two (net.core.rmem_max must allow it))
---
- name: Dropscope fix for run 20261202T000000Z
  hosts: all
  gather_facts: false
  vars:
    dropscope_apply: false
    dropscope_sysctl_file: /etc/sysctl.d/90-dropscope.conf
  tasks:
    - name: 'Fix SOCKET_RCVBUFF: A socket''s receive buffer is full (the application cannot keep up)'
      tags:
        - dropscope
        - SOCKET_RCVBUFF
      when: inventory_hostname in dropscope_hosts
      check_mode: '{{ ansible_check_mode or not (dropscope_apply | bool) }}'
      vars:
        dropscope_hosts:
          - h1
          - h2
      block:
        - name: Read net.core.rmem_default
          register: dropscope_now
          ansible.builtin.slurp:
            src: /proc/sys/net/core/rmem_default
        - name: Keep net.core.rmem_default = 1048576 in the sysctl file
          ansible.builtin.lineinfile:
            path: '{{ dropscope_sysctl_file }}'
            regexp: ^\s*net\.core\.rmem_default\s*=
            line: net.core.rmem_default = 1048576
            create: true
            mode: '0644'
          when: (dropscope_now.content | b64decode | trim | int) < (dropscope_proposed | int)
          vars:
            dropscope_proposed: 1048576
        - name: Set net.core.rmem_default to 1048576 now
          ansible.posix.sysctl:
            name: net.core.rmem_default
            value: '1048576'
            state: present
            sysctl_set: true
            reload: false
            sysctl_file: '{{ dropscope_sysctl_file }}'
          when: (dropscope_now.content | b64decode | trim | int) < (dropscope_proposed | int)
          vars:
            dropscope_proposed: 1048576
"""


def firewall_finding(severity: str = "problem", benign: bool = False) -> dict:
    return {"key": "NETFILTER_DROP", "title": "A firewall rule dropped the packet", "severity": severity,
            "attribution": "host", "benign": benign, "advice": "Change or remove the firewall rule.",
            "knobs": ["the firewall rule (nft / iptables)"],
            "evidence": {"basis": "capture", "count": 500, "rate": 100.0, "drops": [], "counters": []}}  # fmt: skip


def three_hosts() -> dict:
    h1, h2, h3 = rcvbuf_host("h1", 212992, 236.0), rcvbuf_host("h2", 212992, 200.0), rcvbuf_host("h3", 2304, 100.0)
    h1["findings"].append(firewall_finding(severity="info"))  # info: nothing to fix
    h2["findings"].append(firewall_finding())
    h3["findings"].append(firewall_finding())
    h3["findings"].append({**firewall_finding(), "attribution": "kernel-wide"})  # not this host's
    return advised(h1, h2, h3)


def test_fix_yml_for_a_built_report() -> None:
    assert fix_playbook(three_hosts(), KNOWLEDGE) == EXPECTED_FIX


def _ansible(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ansible-playbook", *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          check=False)  # fmt: skip


def test_drops_of_a_shared_kernel_no_host_shows_are_guidance_for_the_machine() -> None:
    report = three_hosts()
    shared = {"attribution": "kernel", "kernel": "0d6c1a2b-77", "hosts": ["c1", "c2"]}
    report["fleet"] = {"findings": [
        {**firewall_finding(severity="warning"), **shared},
        {**firewall_finding(severity="info"), **shared, "key": "QUEUE_PURGE"},  # info: nothing to do
    ]}  # fmt: skip
    text = fix_playbook(report, KNOWLEDGE)
    assert (
        '#   [NETFILTER_DROP] A firewall rule dropped the packet on the machine of kernel 0d6c1a2b (hosts "c1", "c2")\n'
        "#     Change or remove the firewall rule.\n---\n"
    ) in text
    assert "QUEUE_PURGE" not in text


def test_fix_yml_passes_ansible_syntax_check(tmp_path: Path) -> None:
    playbook = tmp_path / "fix.yml"
    playbook.write_text(fix_playbook(three_hosts(), KNOWLEDGE))
    proc = _ansible("--syntax-check", "-i", "h1,h2,h3,", str(playbook))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    empty = tmp_path / "empty.yml"
    empty.write_text(fix_playbook({"run": {"run_id": "quiet"}, "hosts": []}, KNOWLEDGE))
    assert "# The run's findings propose no change." in empty.read_text()
    proc = _ansible("--syntax-check", "-i", "h1,", str(empty))
    assert proc.returncode == 0, proc.stdout + proc.stderr


class _UnsafeLoader(yaml.SafeLoader):
    """Reads fix.yml as Ansible does for `!unsafe`: the plain string."""


_UnsafeLoader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))


def hostile_names(tmp_path: Path) -> list[str]:
    marker = tmp_path / "pwned"
    return [
        "a:b", "!x", "*", "web[1:3]", "h1,h2", "all", "123", "null", "true", "1.5", "<<", "=",
        f"$(touch {marker}-shell)", f"`touch {marker}-tick`", f"{{{{ lookup('pipe', 'touch {marker}-jinja') }}}}",
        '<script>alert("x")</script>', "quote'\"both", "new\nline\n- hosts: all", "nel\x85ls\u2028ps\u2029end",
    ]  # fmt: skip


def test_hostile_host_names_are_data(tmp_path: Path) -> None:
    names = hostile_names(tmp_path)
    hosts = [rcvbuf_host(name, 212992, 236.0) for name in names]
    for host in hosts:
        host["findings"].append(firewall_finding())
    text = fix_playbook(advised(*hosts), KNOWLEDGE)
    header, _, body = text.partition("\n---\n")
    assert all(line.startswith("#") for line in header.splitlines())  # no name ended a comment
    assert comment_text(json.dumps("new\nline\n- hosts: all")) in header
    plays = yaml.load(body, Loader=_UnsafeLoader)  # noqa: S506 (a SafeLoader subclass)
    assert len(plays) == 1 and plays[0]["hosts"] == "all"
    (block,) = plays[0]["tasks"]
    assert block["vars"]["dropscope_hosts"] == names  # exactly the names, as data
    assert block["when"] == "inventory_hostname in dropscope_hosts"
    assert all(line.startswith("  ") or line.startswith("- ") for line in body.splitlines())
    assert "- a:b\n" in body and "- '*'\n" in body and "- '!x'\n" in body  # quoted where YAML needs it
    assert f"- !unsafe \"{{{{ lookup('pipe', 'touch {tmp_path}/pwned-jinja') }}}}\"" in body or "!unsafe '{{" in body
    assert "shell" not in body.replace("shell)", "")  # no shell or command module
    assert "ansible.builtin.command" not in body and "ansible.builtin.shell" not in body


def test_a_hostile_reason_name_and_run_id_are_data(tmp_path: Path) -> None:
    """Reason names come from each host's tracepoint format: a hostile one is a block name and a comment, never
    code; tags keep letters, digits and _ only."""
    evil = f"X{{{{ lookup('pipe', 'touch {tmp_path}/pwned') }}}}\n- hosts: all"
    host = rcvbuf_host("h1", 212992, 236.0)
    host["findings"][0].update(key=evil, title=evil)
    host["findings"].append({**firewall_finding(), "key": evil, "title": evil, "advice": evil})
    report = advised(host)
    report["run"]["run_id"] = evil
    text = fix_playbook(report, KNOWLEDGE)
    header, _, body = text.partition("\n---\n")
    assert all(line.startswith("#") for line in header.splitlines())
    plays = yaml.load(body, Loader=_UnsafeLoader)  # noqa: S506 (a SafeLoader subclass)
    assert len(plays) == 1 and plays[0]["name"] == f"Dropscope fix for run {evil}"
    (block,) = plays[0]["tasks"]
    assert block["name"].startswith(f"Fix {evil}") and block["tags"][0] == "dropscope"
    assert block["tags"][1].startswith("X_lookup_pipe_touch_") and block["tags"][1].endswith("_pwned_hosts_all")
    assert re.fullmatch(r"\w+", block["tags"][1], re.ASCII)
    assert body.count("!unsafe") == 2  # the play's and the block's names: the only texts with a `{`
    playbook = tmp_path / "fix.yml"
    playbook.write_text(text)
    proc = _ansible("-i", "h1,", str(playbook), "--check", "-e", "ansible_connection=local", "-e",
                    "ansible_python_interpreter=/usr/bin/python3", "-e", f"dropscope_sysctl_file={tmp_path}/s.conf")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "lookup('pipe'" in proc.stdout and not (tmp_path / "pwned").exists()


def test_hostile_names_select_only_themselves_and_run_nothing(tmp_path: Path) -> None:
    """A check-mode run of fix.yml on this machine (local connection) over an inventory of hostile names plus
    bystanders: only the listed hosts read and would change the value; nothing a name says is run."""
    names = [name for name in hostile_names(tmp_path) if "\n" not in name and "\x85" not in name
             and "\u2028" not in name and name != "all"]  # names an inventory can hold  # fmt: skip
    text = fix_playbook(advised(*(rcvbuf_host(name, 212992, 236.0) for name in names)), KNOWLEDGE)
    playbook = tmp_path / "fix.yml"
    playbook.write_text(text)
    local = {"ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3"}
    bystanders = ["bystander", "a", "b", "x"]
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {name: dict(local) for name in [*names, *bystanders]}}}))
    sysctl_file = tmp_path / "sysctl.conf"
    proc = _ansible("-i", str(inventory), str(playbook), "--check", "--diff", "-e",
                    f"dropscope_sysctl_file={sysctl_file}", "-e", "dropscope_apply=true")  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    current = int(Path("/proc/sys/net/core/rmem_default").read_text())
    recap = {line.rpartition(" : ok=")[0].strip(): line for line in output.splitlines() if " : ok=" in line}
    # The inventory expands the name `web[1:3]` to web1, web2, web3: bystanders the name in fix.yml must not select.
    for name in [*bystanders, "web1", "web2", "web3"]:
        assert "ok=0    changed=0" in recap[name] and "skipped=3" in recap[name], recap[name]
    changed = "changed=2" if current < 1048576 else "changed=0"
    fixed = [name for name in names if name != "web[1:3]"]
    assert all("ok=3" in recap[name] and changed in recap[name] for name in fixed), recap
    assert len(recap) == len(fixed) + len(bystanders) + 3
    assert "+net.core.rmem_default = 1048576" in output or current >= 1048576
    assert not sysctl_file.exists()  # --check wins over dropscope_apply=true
    assert not list(tmp_path.glob("pwned*"))


def test_the_cli_writes_fix_yml_for_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = write_run(tmp_path / "run1", [
        simple_host("web1", [drop("SOCKET_RCVBUFF", "__udp_enqueue_schedule_skb", 300)],
                    protocols={"UdpRcvbufErrors": 300}),
        simple_host("web2"),
    ])  # fmt: skip
    assert cli.main(["fix", str(run)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {
        "fix": str(run / "fix.yml"), "changes": 0, "guidance": 1}  # fmt: skip
    # The run's hosts carry no knob values: the receive-buffer finding is guidance, with its advice.
    text = (run / "fix.yml").read_text()
    assert f'[SOCKET_RCVBUFF] {RCVBUF_TITLE} on "web1"' in text
    plan = fix_plan({"hosts": []}, KNOWLEDGE)
    assert plan == {"changes": [], "guidance": []}
    proc = _ansible("--syntax-check", "-i", "web1,web2,", str(run / "fix.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert cli.main(["fix", str(tmp_path / "missing")]) == 2
    assert "dropscope fix: " in capsys.readouterr().err


@pytest.mark.slow
def test_fix_yml_passes_ansible_lint_production_profile(tmp_path: Path) -> None:
    (tmp_path / "fix.yml").write_text(fix_playbook(three_hosts(), KNOWLEDGE))
    proc = subprocess.run([sys.executable, "-m", "ansiblelint", "--offline", "--nocolor", "fix.yml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Last profile that met the validation criteria was 'production'" in proc.stdout + proc.stderr
