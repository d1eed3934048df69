# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import os

import pytest
from ansible_collections.dropscope.drops.plugins.module_utils.run_record import (
    RunRecordError,
    complete_manifest,
    host_record,
    record_run,
    safe_file_name,
    write_records,
    write_run,
)

SNAPSHOT = {"schema_version": 1, "protocols": {"UdpNoPorts": 3}}
CAPTURE = {"schema_version": 1, "backend": "perf", "status": "ok", "reason": None, "drops": []}
OK = {"before": {"snapshot": SNAPSHOT}, "capture": {"capture": CAPTURE}, "after": {"snapshot": SNAPSHOT}}
UNREACHABLE = {"unreachable": True, "msg": "Failed to connect to the host via ssh: Connection refused", "changed": False}
SKIPPED = {"skipped": True, "changed": False}


def test_host_record_ok_keeps_the_three_results():
    record = host_record("h1", OK)
    assert (record["status"], record["error"]) == ("ok", None)
    assert record["before"] == SNAPSHOT and record["capture"] == CAPTURE and record["after"] == SNAPSHOT


def test_host_record_unreachable_from_the_start():
    record = host_record("h2", {"before": UNREACHABLE, "capture": SKIPPED, "after": SKIPPED})
    assert record["status"] == "unreachable"
    assert record["error"] == "before: Failed to connect to the host via ssh: Connection refused"
    assert record["before"] is None and record["capture"] is None


def test_host_record_failure_mid_run_keeps_what_came_before():
    failed = {"failed": True, "msg": "MODULE FAILURE: Killed"}
    record = host_record("h3", {"before": OK["before"], "capture": failed, "after": SKIPPED})
    assert (record["status"], record["error"]) == ("failed", "capture: MODULE FAILURE: Killed")
    assert record["before"] == SNAPSHOT and record["capture"] is None


def test_host_record_unreachable_during_capture():
    record = host_record("h3", {"before": OK["before"], "capture": UNREACHABLE, "after": None})
    assert record["status"] == "unreachable" and record["error"].startswith("capture: ")


def test_host_record_missing_result_is_failed_not_ok():
    record = host_record("h4", {"before": OK["before"]})
    assert (record["status"], record["error"]) == ("failed", "capture: no result (the task did not run)")


@pytest.mark.parametrize("host", ["../../etc/x", "a b", "h\u00e9llo", ".hidden", "/abs/path", "..", "CON"])
def test_safe_file_name_stays_inside(host):
    name = safe_file_name(host, set())
    assert "/" not in name and not name.startswith(".") and name.endswith(".json")


def test_safe_file_name_never_collides():
    taken = set()
    names = [safe_file_name(host, taken) for host in ("a b", "a_b", "a?b", "A_B")]
    assert len(set(n.lower() for n in names)) == 4


def test_write_run_layout(tmp_path):
    results = {"h1": OK, "../../etc/x": {"before": UNREACHABLE, "capture": SKIPPED, "after": SKIPPED}}
    run_dir, manifest = write_run(str(tmp_path), "r1", results, {"command": ["ansible-playbook", "x.yml"]})
    assert run_dir == str(tmp_path / "r1")
    assert sorted(os.listdir(tmp_path)) == ["r1"]
    on_disk = json.loads((tmp_path / "r1" / "manifest.json").read_text())
    assert on_disk == manifest
    assert on_disk["schema_version"] == 1 and on_disk["run_id"] == "r1"
    by_host = {entry["host"]: entry for entry in on_disk["hosts"]}
    assert by_host["h1"]["status"] == "ok" and by_host["../../etc/x"]["status"] == "unreachable"
    for entry in on_disk["hosts"]:
        path = (tmp_path / "r1" / entry["file"]).resolve()
        assert path.parent == (tmp_path / "r1" / "hosts").resolve()
        assert json.loads(path.read_text())["host"] == entry["host"]
    assert not (tmp_path / "etc").exists()


def test_write_run_never_overwrites(tmp_path):
    write_run(str(tmp_path), "r1", {"h1": OK}, {})
    before = (tmp_path / "r1" / "manifest.json").read_text()
    with pytest.raises(RunRecordError, match="already exists"):
        write_run(str(tmp_path), "r1", {"h2": OK}, {})
    assert (tmp_path / "r1" / "manifest.json").read_text() == before


def test_write_run_leaves_nothing_half_written(tmp_path):
    bad = {"before": {"snapshot": {"x": float("nan")}}, "capture": {"capture": CAPTURE}, "after": {"snapshot": SNAPSHOT}}
    with pytest.raises(ValueError):
        write_run(str(tmp_path), "r1", {"h1": OK, "h2": bad}, {})
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("run_id", ["../x", "a/b", "", ".hidden"])
def test_write_run_rejects_unsafe_run_ids(tmp_path, run_id):
    with pytest.raises(RunRecordError, match="run_id"):
        write_run(str(tmp_path), run_id, {}, {})


def test_complete_manifest_duration():
    manifest = complete_manifest({"started": "2026-11-27T03:00:00+00:00", "command": ["x"]}, now=1795748412.5)
    assert manifest["finished"] == "2026-11-27T03:00:12.500000+00:00"
    assert manifest["duration_s"] == 12.5


def test_host_record_keeps_capabilities_when_present_and_never_fails_without():
    from ansible_collections.dropscope.drops.plugins.module_utils.run_record import host_record

    ok = {"before": {"snapshot": {}}, "capture": {"capture": CAPTURE}, "after": {"snapshot": {}}}
    caps = {"ladder": [{"backend": "bpftrace", "available": True, "reason": None}], "chosen": "bpftrace"}
    record = host_record("h1", dict(ok, capabilities={"changed": False, "capabilities": caps}))
    assert record["status"] == "ok" and record["capabilities"] == caps
    for missing in (None, {"failed": True, "msg": "boom"}, {"skipped": True}):
        record = host_record("h1", dict(ok, capabilities=missing))
        assert record["status"] == "ok" and "capabilities" not in record


def test_host_record_takes_the_ladder_from_the_capture_result():
    ladder = {"chosen": "bpftrace", "ladder": [{"backend": "bpftrace", "available": True, "reason": None}]}
    results = dict(OK, capture={"capture": CAPTURE, "capabilities": ladder})
    record = host_record("h1", results)
    assert record["status"] == "ok" and record["capabilities"] == ladder and record["capture"] == CAPTURE


NO_NET_DM = "kernel has no NET_DM (CONFIG_NET_DROP_MONITOR)"


@pytest.mark.parametrize("capture, error", [
    ({"schema_version": 1, "backend": "dropwatch", "status": "unavailable", "reason": NO_NET_DM, "drops": []},
     "capture failed: dropwatch unavailable: " + NO_NET_DM),
    ({"schema_version": 1, "backend": "perf", "status": "failed",
      "reason": "port filter needs the bpftrace backend (only it reads packet headers)", "drops": []},
     "capture failed: perf failed: port filter needs the bpftrace backend (only it reads packet headers)"),
    ({"schema_version": 1, "backend": "none", "status": "unavailable", "reason": None, "drops": []},
     "capture failed: none unavailable: no reason given"),
])
def test_a_capture_that_did_not_run_fails_the_host_and_keeps_the_counters(capture, error):
    results = dict(OK, capture={"capture": capture, "changed": False})
    record = host_record("h1", results)
    assert (record["status"], record["error"]) == ("failed", error)
    assert record["before"] == SNAPSHOT and record["after"] == SNAPSHOT and record["capture"] == capture


def test_the_first_problem_is_the_error_a_later_one_is_not():
    unavailable = {"backend": "dropwatch", "status": "unavailable", "reason": NO_NET_DM}
    record = host_record("h1", dict(OK, capture={"capture": unavailable}, after=UNREACHABLE))
    assert (record["status"], record["error"]) == ("failed", "capture failed: dropwatch unavailable: " + NO_NET_DM)
    assert record["after"] is None


def test_check_mode_captures_count_as_runnable():
    check_mode = {"backend": "bpftrace", "status": "check_mode", "reason": None, "command": ["bpftrace", "x"]}
    assert host_record("h1", dict(OK, capture={"capture": check_mode}))["status"] == "ok"
    refused = {"backend": "dropwatch", "status": "unavailable", "reason": NO_NET_DM, "command": []}
    record = host_record("h1", dict(OK, capture={"capture": refused}))
    assert (record["status"], record["error"]) == ("failed", "capture failed: dropwatch unavailable: " + NO_NET_DM)


def test_a_failed_capture_makes_the_run_incomplete(tmp_path):
    unavailable = {"backend": "dropwatch", "status": "unavailable", "reason": NO_NET_DM}
    manifest = write_run(str(tmp_path), "r1", {"h1": OK, "h2": dict(OK, capture={"capture": unavailable})}, {})[1]
    assert [(h["host"], h["status"]) for h in manifest["hosts"]] == [("h1", "ok"), ("h2", "failed")]
    h2 = json.loads((tmp_path / "r1" / "hosts" / "h2.json").read_text())
    assert h2["error"] == "capture failed: dropwatch unavailable: " + NO_NET_DM
    assert h2["before"] == SNAPSHOT and h2["after"] == SNAPSHOT


def test_safe_file_name_keeps_plain_names_and_hashes_changed_ones():
    taken = set()
    assert safe_file_name("h1", taken) == "h1.json"
    assert safe_file_name("web-01.example.com", taken) == "web-01.example.com.json"
    # "a/b c" is changed, so the real name's hash keeps it apart from a host really called "a_b_c".
    assert safe_file_name("a/b c", taken) == "a_b_c-%s.json" % hashlib.sha256(b"a/b c").hexdigest()[:8]
    assert safe_file_name("H1", taken) == "H1-2.json"  # file systems may ignore case


def test_write_records_keeps_the_order_given(tmp_path):
    records = [host_record(name, OK) for name in ("web2", "web10", "db1")]
    run_dir, manifest = write_records(str(tmp_path), "r1", records, {"parameters": {"duration": 3}})
    assert [entry["host"] for entry in manifest["hosts"]] == ["web2", "web10", "db1"]
    assert manifest["parameters"] == {"duration": 3} and manifest["run_id"] == "r1"
    assert sorted(os.listdir(os.path.join(run_dir, "hosts"))) == ["db1.json", "web10.json", "web2.json"]


# ------------------------------------------------- one module run per host: drop_capture's one result

ONE = {"capture": {"capture": CAPTURE, "before": SNAPSHOT, "after": SNAPSHOT, "changed": False}}


def test_one_task_result_gives_before_capture_after():
    record = host_record("h1", ONE)
    assert (record["status"], record["error"]) == ("ok", None)
    assert record["before"] == SNAPSHOT and record["capture"] == CAPTURE and record["after"] == SNAPSHOT


def test_one_task_unreachable_names_the_capture_task():
    record = host_record("h2", {"capture": UNREACHABLE})
    assert (record["status"], record["error"]) == (
        "unreachable", "capture: Failed to connect to the host via ssh: Connection refused")
    assert (record["before"], record["capture"], record["after"]) == (None, None, None)


def test_one_task_capture_that_died_mid_way_keeps_the_counters_read_before_it():
    died = dict(CAPTURE, status="failed", reason="bpftrace did not finish (exit -9): no message",
                window={"capture_s": None, "complete": False})
    record = host_record("h3", {"capture": {"capture": died, "before": SNAPSHOT, "after": None}})
    assert (record["status"], record["error"]) == (
        "failed", "capture failed: perf failed: bpftrace did not finish (exit -9): no message")
    assert record["before"] == SNAPSHOT and record["after"] is None and record["capture"] == died


def test_one_task_without_counters_is_not_an_ok_host_but_check_mode_is():
    record = host_record("h1", {"capture": {"capture": CAPTURE, "before": None, "after": None}})
    assert (record["status"], record["error"]) == (
        "failed", "capture: no counters were read (drop_capture ran with counters=false)")
    check_mode = dict(CAPTURE, status="check_mode")
    assert host_record("h1", {"capture": {"capture": check_mode, "before": None, "after": None}})["status"] == "ok"


def test_one_task_skipped_or_missing_is_failed():
    for result in (SKIPPED, None, {"changed": False}):
        record = host_record("h1", {"capture": result})
        assert (record["status"], record["error"]) == ("failed", "capture: no result (the task did not run)")


def test_one_and_three_task_results_write_the_same_host_document(tmp_path):
    caps = {"chosen": "bpftrace", "ladder": []}
    one = {"capture": dict(ONE["capture"], capabilities=caps)}
    three = dict(OK, capture={"capture": CAPTURE, "capabilities": caps})
    assert host_record("h1", one) == host_record("h1", three)


# ------------------------------------------- record_run: the module's and the action plugin's one job

WINDOW = dict(CAPTURE, window={"counters_s": 3.2, "capture_s": 3.0, "difference_s": 0.2, "complete": True})


def test_record_run_writes_the_run_and_returns_statuses_and_the_window_difference(tmp_path):
    results = {"h2": {"capture": dict(ONE["capture"], capture=dict(WINDOW, window=dict(WINDOW["window"],
                                                                                       difference_s=0.35)))},
               "h1": {"capture": dict(ONE["capture"], capture=WINDOW)},
               "h3": {"capture": UNREACHABLE}}
    result = record_run({"runs_dir": str(tmp_path), "run_id": "r1", "results": results, "manifest": {}})
    assert (result["changed"], result["run_dir"], result["run_id"]) == (True, str(tmp_path / "r1"), "r1")
    assert [(h["host"], h["status"]) for h in result["hosts"]] == [("h1", "ok"), ("h2", "ok"), ("h3", "unreachable")]
    assert result["incomplete"] == ["h3"] and result["window_difference_s"] == 0.35
    assert sorted(os.listdir(str(tmp_path / "r1" / "hosts"))) == ["h1.json", "h2.json", "h3.json"]


def test_record_run_in_check_mode_writes_nothing_and_says_what_it_would_record(tmp_path):
    results = {"h1": ONE, "h2": {"capture": SKIPPED}}
    result = record_run({"runs_dir": str(tmp_path), "run_id": "r1", "results": results, "manifest": {}},
                        check_mode=True)
    assert (result["changed"], result["incomplete"], result["window_difference_s"]) == (False, ["h2"], None)
    assert result["hosts"][1] == {"host": "h2", "status": "failed", "error": "capture: no result (the task did not run)"}
    assert os.listdir(str(tmp_path)) == []


def test_record_run_fails_with_the_run_directory_in_its_message(tmp_path):
    params = {"runs_dir": str(tmp_path), "run_id": "r1", "results": {"h1": ONE}, "manifest": {}}
    assert record_run(params)["changed"] is True
    again = record_run(params)
    assert again == {"failed": True, "run_dir": str(tmp_path / "r1"), "run_id": "r1",
                     "msg": "Failed to write run %s: run directory %s already exists; it is never overwritten"
                            % (tmp_path / "r1", tmp_path / "r1")}
