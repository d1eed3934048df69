"""`dropscope fix RUN_DIR`: write RUN_DIR/fix.yml, an Ansible playbook with the changes the findings propose.

dropscope never applies it. The playbook runs in check mode unless told otherwise:

    ansible-playbook -i INVENTORY RUN_DIR/fix.yml --check --diff     # what would change (the default anyway)
    ansible-playbook -i INVENTORY RUN_DIR/fix.yml -e dropscope_apply=true   # apply
    ansible-playbook … --tags SOCKET_RCVBUFF                             # one finding only

What goes in (a renderer of the built report: it reads findings' `knobs` and the knowledge base's knobs):

- One tagged block per finding and group of hosts: the hosts whose finding (warning or problem, attributed to
  the host) proposes the same changes share a block. A change is a knob that the knowledge base calls a
  sysctl (knobs.yml `sysctl: true`) with a `proposed` value. Each change reads the value on the host first
  (ansible.builtin.slurp of /proc/sys/…) and only ever raises it: writes the line into the sysctl file
  (ansible.builtin.lineinfile: `--diff` shows it; default /etc/sysctl.d/90-dropscope.conf, variable
  `dropscope_sysctl_file`) and sets the running value (ansible.posix.sysctl, `sysctl_set`, no reload).
- Findings with no safe automatic change (firewall rules, the application's own settings, knobs that are
  not sysctls) are comments at the top of the file: the advice, the hosts, each knob's value and proposal;
  so are the fleet's findings of a kernel shared by several hosts that no host's own counters show.

Host names, process names, rule texts and addresses are data, never code. The YAML is written by PyYAML's
safe dumper, never by string templates. Every string that comes from the report and could hold a template
(a `{`) is tagged `!unsafe`, so Ansible never evaluates a `{{ … }}` inside it; the others are quoted as YAML
needs (`'*'`, `'123'` stay strings). Hosts are chosen by `hosts: all` and `when:
inventory_hostname in dropscope_hosts`, a list of names, never by a `hosts:` pattern: a host named `a:b`,
`!x` or `*` in a pattern would select other hosts. Comments print the text with every line break and
control character escaped (`\\n`), so a name cannot end a comment. No task runs a shell.
"""

from __future__ import annotations

import argparse
import json
import re
import textwrap
from pathlib import Path
from typing import Any

import yaml

from dropscope.build import build_report
from dropscope.commands import add_command, knowledge_from, run_guarded, write_atomically
from dropscope.knowledge_base import SEVERITY_RANK, KnowledgeBase, KnowledgeError
from dropscope.load import JSON, RunError

SUMMARY = "write RUN_DIR/fix.yml: an Ansible playbook (check mode unless told) with the changes findings propose"
EXIT_OK, EXIT_BAD_INPUT = 0, 2
SYSCTL_FILE = "/etc/sysctl.d/90-dropscope.conf"
CHECK_MODE = "{{ ansible_check_mode or not (dropscope_apply | bool) }}"
KERNEL_SCOPE = "one value per kernel (read-only in a container or network namespace: apply it on the machine)"
RAISE_ONLY = "(dropscope_now.content | b64decode | trim | int) < (dropscope_proposed | int)"


class Unsafe(str):
    """A string from the report: written with Ansible's `!unsafe` tag (never templated)."""


class _Dumper(yaml.SafeDumper):
    """PyYAML's safe dumper plus `!unsafe` strings; lists indented under their key (as ansible-lint wants)."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _represent_unsafe(dumper: _Dumper, value: Unsafe) -> yaml.ScalarNode:
    """Text that could hold a template (any `{`) is tagged `!unsafe`; other text is a plain YAML string.

    Ansible resolves an `!unsafe` scalar's type again as if it were unquoted (2.19: `!unsafe '123'` is the
    number 123, `!unsafe '*'` an error), so only text with a `{` gets the tag: such text never resolves to
    anything but a string. Text with line breaks or control characters (NEL, U+2028 included) goes
    double-quoted, where YAML escapes them (in other styles a line break folds into a space).
    """
    text = str(value)
    style = None if text.isprintable() else '"'
    tag = "!unsafe" if "{" in text else "tag:yaml.org,2002:str"
    if style is None and tag != "!unsafe":
        return dumper.represent_str(text)  # quoted where YAML needs it
    return dumper.represent_scalar(tag, text, style=style)


_Dumper.add_representer(Unsafe, _represent_unsafe)
_Dumper.ignore_aliases = lambda self, data: True  # type: ignore[method-assign]  # every task spelled out


def add_arguments(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register the `fix` sub-command."""
    parser = add_command(subparsers, "fix", run_fix, SUMMARY, __doc__)
    parser.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="the run directory")
    parser.add_argument(
        "--output", metavar="FILE", type=Path, default=None, help="where to write (default RUN_DIR/fix.yml)"
    )
    return parser


def comment_text(value: Any) -> str:
    """VALUE for a YAML comment: line breaks and other unprintable characters escaped, so it stays one line.

    >>> comment_text('evil\\n- hosts: all\\u2028x')
    'evil\\\\n- hosts: all\\\\u2028x'
    """
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(value))


def _comment(text: str, prefix: str = "#     ") -> list[str]:
    """TEXT (already made one line by comment_text) as comment lines of at most 120 columns."""
    return textwrap.wrap(text, width=120, initial_indent=prefix, subsequent_indent=prefix + "  ") or [prefix.rstrip()]


def tag_name(key: str) -> str:
    """An Ansible tag for a finding key: letters, digits and _ ("counter:udp-in-errors" → counter_udp_in_errors)."""
    return re.sub(r"[^A-Za-z0-9_]+", "_", key).strip("_") or "finding"


def _fixable(finding: JSON) -> bool:
    return (
        finding.get("attribution") == "host"
        and not finding.get("benign")
        and SEVERITY_RANK.get(finding.get("severity", "info"), 0) >= SEVERITY_RANK["warning"]
    )


def _knob_phrase(knob: JSON) -> str:
    text = str(knob.get("name"))
    if knob.get("value") is not None:
        text += f" = {knob['value']}"
    if knob.get("proposed") is not None:
        text += f" -> {knob['proposed']}"
    return text + (f" ({knob['why']})" if knob.get("why") else "")


def fix_plan(report: JSON, knowledge: KnowledgeBase) -> JSON:
    """What fix.yml holds: `changes` (one per finding key and same set of changes: hosts, knobs) and `guidance`."""
    changes: dict[tuple, JSON] = {}
    guidance: dict[tuple, JSON] = {}
    for host in report.get("hosts") or []:
        for finding in host.get("findings") or []:
            if not _fixable(finding):
                continue
            automatic, manual = [], []
            for knob in finding.get("knobs") or []:
                if not isinstance(knob, dict):
                    continue
                entry = knowledge.knobs.get(str(knob.get("name"))) or {}  # a sysctl by its own (validated) name
                if entry.get("sysctl") and str(knob.get("proposed")).isdigit():  # advice.py proposes whole numbers
                    automatic.append(knob)
                elif knob.get("proposed") is not None:
                    manual.append(knob)
            if automatic:
                key = (finding["key"], tuple((k["name"], str(k["proposed"])) for k in automatic))
                change = changes.setdefault(
                    key, {"key": finding["key"], "title": finding.get("title"), "hosts": [], "knobs": [], "why": []}
                )
                change["hosts"].append(host["host"])
                change["knobs"] = [{"name": k["name"], "proposed": str(k["proposed"])} for k in automatic]
                change["why"].append({"host": host["host"], "knobs": [_knob_phrase(k) for k in automatic]})
            if manual or not automatic:
                key = (finding["key"], finding.get("advice"), tuple(_knob_phrase(k) for k in manual))
                note = guidance.setdefault(
                    key,
                    {"key": finding["key"], "title": finding.get("title"), "advice": finding.get("advice"),
                     "hosts": [], "knobs": [_knob_phrase(k) for k in manual]},
                )  # fmt: skip
                note["hosts"].append(host["host"])
    # Drops of a kernel shared by several hosts that no host's own counters show: the machine's to fix.
    for finding in (report.get("fleet") or {}).get("findings") or []:
        if SEVERITY_RANK.get(finding.get("severity", "info"), 0) < SEVERITY_RANK["warning"] or finding.get("benign"):
            continue
        hosts = ", ".join(json.dumps(host) for host in finding.get("hosts") or [])
        where = f"the machine of kernel {str(finding.get('kernel'))[:8]} (hosts {hosts})"
        knobs = [_knob_phrase(k) for k in finding.get("knobs") or [] if isinstance(k, dict) and k.get("proposed")]
        guidance[(finding["key"], where)] = {
            "key": finding["key"],
            "title": finding.get("title"),
            "where": where,
            "advice": finding.get("advice"),
            "hosts": [],
            "knobs": knobs,
        }
    return {"changes": list(changes.values()), "guidance": list(guidance.values())}


def _sysctl_tasks(name: str, proposed: str) -> list[JSON]:
    """Read NAME on the host; if it is lower than PROPOSED, write it to the sysctl file and set it."""

    def raise_only() -> JSON:
        return {"when": RAISE_ONLY, "vars": {"dropscope_proposed": int(proposed)}}

    return [
        {"name": Unsafe(f"Read {name}"), "register": "dropscope_now",
         "ansible.builtin.slurp": {"src": Unsafe("/proc/sys/" + name.replace(".", "/"))}},
        {"name": Unsafe(f"Keep {name} = {proposed} in the sysctl file"),
         "ansible.builtin.lineinfile": {"path": "{{ dropscope_sysctl_file }}",
                                        "regexp": Unsafe(r"^\s*" + re.escape(name) + r"\s*="),
                                        "line": Unsafe(f"{name} = {proposed}"), "create": True, "mode": "0644"},
         **raise_only()},
        {"name": Unsafe(f"Set {name} to {proposed} now"),
         "ansible.posix.sysctl": {"name": Unsafe(name), "value": Unsafe(proposed), "state": "present",
                                  "sysctl_set": True, "reload": False, "sysctl_file": "{{ dropscope_sysctl_file }}"},
         **raise_only()},
    ]  # fmt: skip


def fix_playbook(report: JSON, knowledge: KnowledgeBase) -> str:
    """fix.yml's text for a built report."""
    plan = fix_plan(report, knowledge)
    run_id = (report.get("run") or {}).get("run_id")
    lines = [
        f"# dropscope fix for run {comment_text(run_id)}: the changes its findings propose (dropscope never runs it).",
        "# Check mode unless dropscope_apply is true:",
        "#   ansible-playbook -i INVENTORY fix.yml --check --diff            # what would change",
        "#   ansible-playbook -i INVENTORY fix.yml -e dropscope_apply=true   # apply (only ever raises a value)",
        "#   --tags TAG: one finding only; -e dropscope_sysctl_file=PATH: where the values are kept across reboots",
        "# Needs the ansible.posix collection (ansible.posix.sysctl).",
    ]
    if plan["changes"]:
        lines.append("#")
        lines.append("# Changes (why, per host):")
        for change in plan["changes"]:
            lines += _comment(f"[{tag_name(change['key'])}] {comment_text(change['title'])}", "#   ")
            for knob in change["knobs"]:
                entry = knowledge.knobs.get(knob["name"]) or {}
                notes = [KERNEL_SCOPE] if entry.get("scope") == "kernel" else []
                notes += [entry["after"]] if entry.get("after") else []
                if notes:
                    lines += _comment(f"{knob['name']}: {comment_text('; '.join(notes))}")
            for why in change["why"]:
                lines += _comment(f"{comment_text(json.dumps(why['host']))}: {comment_text('; '.join(why['knobs']))}")
    if plan["guidance"]:
        lines.append("#")
        lines.append("# No safe automatic change (do these by hand):")
        for note in plan["guidance"]:
            hosts = note.get("where") or ", ".join(json.dumps(host) for host in note["hosts"])
            title = f"[{tag_name(note['key'])}] {comment_text(note['title'])} on {comment_text(hosts)}"
            lines += _comment(title, "#   ")
            lines += _comment(comment_text(note["advice"]))
            for knob in note["knobs"]:
                lines += _comment(f"knob: {comment_text(knob)}")
    if not plan["changes"] and not plan["guidance"]:
        lines.append("# The run's findings propose no change.")
    blocks = []
    for change in plan["changes"]:
        tasks = [task for knob in change["knobs"] for task in _sysctl_tasks(knob["name"], knob["proposed"])]
        blocks.append(
            {
                "name": Unsafe(f"Fix {change['key']}: {change['title']}"),
                "tags": ["dropscope", tag_name(change["key"])],
                "when": "inventory_hostname in dropscope_hosts",
                "check_mode": CHECK_MODE,
                "vars": {"dropscope_hosts": [Unsafe(host) for host in change["hosts"]]},
                "block": tasks,
            }
        )
    play = {
        "name": Unsafe(f"Dropscope fix for run {run_id}"),
        "hosts": "all",
        "gather_facts": False,
        "vars": {"dropscope_apply": False, "dropscope_sysctl_file": SYSCTL_FILE},
        "tasks": blocks,
    }
    body = yaml.dump([play], Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)
    return "\n".join(lines) + "\n---\n" + body


def run_fix(args: argparse.Namespace) -> int:
    """Entry point of `dropscope fix`."""
    output = args.output or args.run_dir / "fix.yml"

    def build_and_write() -> JSON:
        knowledge = knowledge_from(args)
        report = build_report(args.run_dir, knowledge)
        write_atomically(output, fix_playbook(report, knowledge))
        return fix_plan(report, knowledge)

    plan = run_guarded("fix", str(output), build_and_write, (RunError, KnowledgeError))
    if plan is None:
        return EXIT_BAD_INPUT
    print(json.dumps({"fix": str(output), "changes": len(plan["changes"]), "guidance": len(plan["guidance"])}))
    return EXIT_OK
