# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""drop_capture's main(): argument checks, perf missing, check mode (no capture runs in these tests)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

import pytest
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.testing import patch_module_args
from ansible_collections.dropscope.drops.plugins.module_utils.capture_backends import (
    PERF_MISSING,
    PORT_NEEDS_BPFTRACE,
)
from ansible_collections.dropscope.drops.plugins.module_utils.snapshot import HostReader
from ansible_collections.dropscope.drops.plugins.modules import drop_capture


def _run(capsys, args):
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            drop_capture.main()
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("args, message", [
    ({"duration": 0}, "duration must be between 1 and 3600 seconds, got 0"),
    ({"duration": 3601}, "duration must be between 1 and 3600 seconds, got 3601"),
    ({"top": 0}, "top must be between 1 and 10000, got 0"),
    ({"max_size_mb": 0}, "max_size_mb must be between 1 and 65536, got 0"),
    ({"duration": 10, "timeout": 5}, "timeout (5 s) must be longer than duration (10 s)"),
    ({"tmpdir": "/nonexistent/dir"}, "tmpdir /nonexistent/dir is not a directory"),
    ({"dport": 70000}, "dport must be between 0 (no filter) and 65535, got 70000"),
    ({"port": 70000}, "dport must be between 0 (no filter) and 65535, got 70000"),
    ({"max_event_rate": -1}, "max_event_rate must be 0 (guard off) or a positive number of events per second, got -1"),
    ({"exclude_reasons": ["no socket"]}, "exclude_reasons: 'no socket' is not a drop reason name (upper case, digits and _)"),
])
def test_bad_arguments_fail_clearly(capsys, args, message):
    result = _run(capsys, args)
    assert result["failed"] is True
    assert result["msg"] == message


def test_unknown_backend_is_refused(capsys):
    result = _run(capsys, {"backend": "magic"})
    assert result["failed"] is True
    assert "backend" in result["msg"] and "magic" in result["msg"]


def test_perf_missing_is_unavailable_not_a_failure(capsys, monkeypatch):
    # get_bin_path looks in PATH plus the sbin directories; perf lives in /usr/bin.
    monkeypatch.setenv("PATH", "/nonexistent")
    result = _run(capsys, {"duration": 1, "backend": "perf"})
    assert result.get("failed") is not True
    capture = result["capture"]
    assert capture["status"] == "unavailable"
    assert capture["reason"] == PERF_MISSING
    assert capture["events"] == 0 and capture["drops"] == []


def test_check_mode_returns_the_command_without_capturing(capsys):
    result = _run(capsys, {"duration": 7, "stacks": True, "backend": "perf", "_ansible_check_mode": True})
    capture = result["capture"]
    assert capture["status"] == "check_mode"
    assert capture["command"][1:6] == ["record", "-a", "-e", "skb:kfree_skb", "-g"]
    # perf's own deadline is the capture's (duration + 60 s); the window is driven through its control FIFO.
    assert capture["command"][-3:] == ["--", capture["command"][-2], "67"]
    assert capture["command"][6:13] == ["--max-size", "256M", "--no-buildid", "-D", "-1", "--control",
                                        "fifo:perf.ctl,perf.ack"]  # fmt: skip
    assert capture["events"] == 0
    # Check mode reads no counters.
    assert (result["before"], result["after"]) == (None, None) and "window" not in capture


def test_check_mode_auto_names_the_backend_it_would_use(capsys):
    result = _run(capsys, {"duration": 3, "_ansible_check_mode": True})
    capture = result["capture"]
    # This machine has bpftrace and kernel BTF: auto would use it, and dropwatch is skipped with a reason.
    assert capture["status"] == "check_mode" and capture["backend"] == "bpftrace"
    assert capture["command"][-3:] == ["-f", "json", "drops.bt"]
    assert capture["auto"]["chosen"] == "bpftrace"


@pytest.mark.parametrize("check_mode", [False, True])
@pytest.mark.parametrize("option", ["dport", "port"])
def test_port_filter_needs_bpftrace_and_check_mode_says_so(capsys, option, check_mode):
    result = _run(capsys, {"duration": 1, "backend": "perf", option: 8000, "_ansible_check_mode": check_mode})
    capture = result["capture"]
    assert result.get("failed") is not True
    assert (capture["status"], capture["reason"], capture["backend"]) == ("failed", PORT_NEEDS_BPFTRACE, "perf")
    assert capture["command"] == [] and capture["auto"]["chosen"] is None
    assert result["capabilities"]["ladder"][1]["backend"] == "perf"


def test_the_modules_read_the_host_in_the_c_locale(monkeypatch):
    monkeypatch.setenv("LC_ALL", "de_DE.UTF-8")
    with patch_module_args({}):
        reader = HostReader.for_module(AnsibleModule(argument_spec={}))
    rc, out, _err = reader.run(["env"])
    env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert rc == 0
    assert (env["LANG"], env["LC_ALL"], env["LC_MESSAGES"]) == ("C", "C", "C")
    assert reader.find_bin("sh") in ("/usr/bin/sh", "/bin/sh")
