# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Write one diagnose run into a new run directory on the controller (the `run_record` module's logic).

This is the one writer of the run format (docs/run-format.md) and holds its `SCHEMA_VERSION`: the
modules' snapshots and captures carry it, and the development tools' synthetic runs are written with
these functions too.

A run directory is built under a hidden temporary name beside its final place and renamed into place
when every file is written, so a half-written run is never taken for a result, and an existing run
is never overwritten.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import hashlib
import json
import os
import re
import shutil
import tempfile
import time

SCHEMA_VERSION = 1
# The results of the older three-task diagnose (drop_counters, drop_capture, drop_counters), still accepted.
STAGES = (("before", "snapshot"), ("capture", "capture"), ("after", "snapshot"))
# Capture statuses of a capture that ran; check mode's "check_mode" stands for one that would run.
CAPTURE_RAN = ("ok", "check_mode")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


# run_record's options: the module and its action plugin (which runs it on the controller) validate the same.
ARGUMENT_SPEC = dict(
    runs_dir=dict(type="path", required=True),
    run_id=dict(type="str"),
    results=dict(type="dict", required=True),
    manifest=dict(type="dict", default={}),
)


class RunRecordError(Exception):
    pass


def safe_file_name(host, taken):
    """A file name for `host` that stays inside hosts/, is unique in `taken`, and keeps the name readable.

    >>> safe_file_name("../../etc/x", set())
    '_._.._etc_x-56da1a2e.json'
    """
    name = _UNSAFE.sub("_", host)[:80]
    if name != host or name.startswith(".") or not name:
        # The name was changed: add a hash of the real name so two changed names cannot collide.
        name = "%s-%s" % (name or "host", hashlib.sha256(host.encode("utf-8")).hexdigest()[:8])
    if name.startswith("."):
        name = "_" + name[1:]
    candidate, index = name, 1
    while candidate.lower() in taken:
        index += 1
        candidate = "%s-%d" % (name, index)
    taken.add(candidate.lower())
    return candidate + ".json"


def _task_error(result):
    """(status, message) for an Ansible task result that did not succeed, else None."""
    if not isinstance(result, dict):
        return None
    if result.get("unreachable"):
        return "unreachable", result.get("msg") or "host unreachable"
    if result.get("failed"):
        return "failed", result.get("msg") or "task failed"
    return None


def capture_error(capture):
    """Why a host whose capture task succeeded still has no capture, as its error; None when the capture ran.

    A capture that did not run (the asked backend is unavailable, or it failed) is never an ok host:

    >>> capture_error({"backend": "dropwatch", "status": "unavailable",
    ...                "reason": "kernel has no NET_DM (CONFIG_NET_DROP_MONITOR)"})
    'capture failed: dropwatch unavailable: kernel has no NET_DM (CONFIG_NET_DROP_MONITOR)'
    >>> capture_error({"backend": "bpftrace", "status": "ok", "reason": None}) is None
    True
    """
    if not isinstance(capture, dict):
        return "capture failed: the capture task returned no capture"
    status = capture.get("status")
    if status in CAPTURE_RAN:
        return None
    return "capture failed: %s %s: %s" % (capture.get("backend") or "capture", status or "without a status",
                                          capture.get("reason") or "no reason given")


def host_record(host, results):
    """One host's file from the registered results of its diagnose task(s).

    `results` holds ``capture``: the drop_capture result, which carries the counters read in the
    capture's window (``before``, ``capture``, ``after``, ``capabilities``). The older three-task results
    (``before`` and ``after`` drop_counters results beside it) are read as they were written.

    The capabilities ladder (in drop_capture's result, or a separate drop_capabilities result) is stored
    as "capabilities" when it is there.

    The first problem sets the status and the error: a task that did not succeed (what came before it
    is kept), a capture that did not run (status "failed"; the counters read are kept), or a capture
    that ran without reading counters.
    """
    record = {"schema_version": SCHEMA_VERSION, "kind": "dropscope-host", "host": host,
              "status": "ok", "error": None, "before": None, "capture": None, "after": None}
    if "before" in results or "after" in results:
        _three_tasks(record, results)
    else:
        _one_task(record, results.get("capture"))
    # Optional: which capture backends the host offered (the capabilities ladder); never makes a host fail.
    # drop_capture returns them beside its capture; a separate drop_capabilities result also works.
    capabilities = results.get("capabilities") or results.get("capture")
    if isinstance(capabilities, dict) and isinstance(capabilities.get("capabilities"), dict) \
            and not _task_error(capabilities):
        record["capabilities"] = capabilities["capabilities"]
    return record


def _fail(record, status, error):
    if record["error"] is None:
        record["status"], record["error"] = status, error


def _one_task(record, result):
    """drop_capture's result: the counters before, the capture and the counters after, from one module run."""
    problem = _task_error(result)
    if problem is not None:
        _fail(record, problem[0], "capture: %s" % problem[1])
        return
    if not isinstance(result, dict) or result.get("skipped") or "capture" not in result:
        _fail(record, "failed", "capture: no result (the task did not run)")
        return
    for stage in ("before", "capture", "after"):
        record[stage] = result.get(stage) if isinstance(result.get(stage), dict) else None
    if isinstance(result.get("knobs"), dict):  # optional: the knobs' values and the sockets' owners
        record["knobs"] = result["knobs"]
    error = capture_error(record["capture"])
    if error is not None:
        _fail(record, "failed", error)
    elif record["capture"].get("status") == "ok" and (record["before"] is None or record["after"] is None):
        _fail(record, "failed", "capture: no counters were read (drop_capture ran with counters=false)")


def _three_tasks(record, results):
    """The older results: drop_counters before, drop_capture, drop_counters after."""
    for stage, key in STAGES:
        result = results.get(stage)
        problem = _task_error(result)
        if problem is not None:
            _fail(record, problem[0], "%s: %s" % (stage, problem[1]))
            break
        if not isinstance(result, dict) or result.get("skipped") or key not in result:
            _fail(record, "failed", "%s: no result (the task did not run)" % stage)
            break
        record[stage] = result[key]
        if stage == "capture":
            error = capture_error(result[key])
            if error is not None:
                _fail(record, "failed", error)


def _write_json(path, document):
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=1, sort_keys=True, allow_nan=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())


def playbook_command(pid=None, proc="/proc"):
    """The command line of the `ansible-playbook` process this module runs under, or None.

    Ansible does not expose its own argv to plays, so it is read from the nearest ancestor process.
    """
    pid = pid or os.getpid()
    for _depth in range(32):
        try:
            with open(os.path.join(proc, str(pid), "cmdline"), "rb") as handle:
                argv = [arg.decode("utf-8", "replace") for arg in handle.read().split(b"\0") if arg]
            with open(os.path.join(proc, str(pid), "stat"), "rb") as handle:
                ppid = int(handle.read().rsplit(b")", 1)[1].split()[1])
        except (IOError, OSError, ValueError, IndexError):
            return None
        for index, arg in enumerate(argv[:3]):
            if os.path.basename(arg) == "ansible-playbook":
                return ["ansible-playbook"] + argv[index + 1:]
        if ppid <= 1:
            return None
        pid = ppid
    return None


def complete_manifest(manifest, now=None):
    """Add what the controller knows at the end of a run: the command, finish time and duration."""
    now = time.time() if now is None else now
    manifest = dict(manifest)
    if not manifest.get("command"):
        manifest["command"] = playbook_command()
    manifest["finished"] = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).isoformat()
    manifest["duration_s"] = None
    if manifest.get("started"):
        try:
            started = datetime.datetime.fromisoformat(manifest["started"]).timestamp()
            manifest["duration_s"] = round(now - started, 3)
        except (TypeError, ValueError):
            pass
    return manifest


def new_run_id(now=None):
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))


def record_run(params, check_mode=False):
    """run_record's whole job for its validated options: the task result (``failed`` and ``msg`` on error).

    In check mode nothing is written; the result says what a real run would record.
    """
    run_id = params["run_id"] or new_run_id()
    run_dir = os.path.join(params["runs_dir"], run_id)
    results = params["results"]
    try:
        records = [host_record(host, results[host] or {}) for host in sorted(results)]
        if check_mode:
            hosts = [{"host": r["host"], "status": r["status"], "error": r["error"]} for r in records]
        else:
            run_dir, manifest = write_records(params["runs_dir"], run_id, records,
                                              complete_manifest(params["manifest"]))
            hosts = manifest["hosts"]
    except (RunRecordError, IOError, OSError, ValueError) as exc:
        return {"failed": True, "msg": "Failed to write run %s: %s" % (run_dir, exc), "run_dir": run_dir,
                "run_id": run_id}
    return {"changed": not check_mode, "run_dir": run_dir, "run_id": run_id, "hosts": hosts,
            "incomplete": [h["host"] for h in hosts if h["status"] != "ok"],
            "window_difference_s": window_difference(records)}


def window_difference(records):
    """The largest difference between a host's counters interval and its capture window, in seconds.

    None when no host's capture went live (check mode, or every capture failed before its window).

    >>> window_difference([{"capture": {"window": {"difference_s": 0.21}}},
    ...                    {"capture": {"window": {"difference_s": 0.34}}}, {"capture": None}])
    0.34
    """
    differences = [record["capture"]["window"]["difference_s"] for record in records
                   if isinstance(record.get("capture"), dict) and isinstance(record["capture"].get("window"), dict)
                   and record["capture"]["window"].get("difference_s") is not None]
    return max(differences) if differences else None


def write_run(runs_dir, run_id, hosts, manifest):
    """Write manifest.json and hosts/*.json into runs_dir/run_id atomically; returns (run_dir, manifest).

    `hosts` maps inventory host names to their registered results ({"capture": drop_capture's result}, or
    the older {"before": …, "capture": …, "after": …}).
    """
    records = [host_record(host, hosts[host] or {}) for host in sorted(hosts)]
    return write_records(runs_dir, run_id, records, manifest)


def write_records(runs_dir, run_id, records, manifest):
    """Write host records (from `host_record`), in their order, and the manifest into runs_dir/run_id atomically.

    Returns (run_dir, manifest). The manifest gets the schema version, kind, run id and one entry per host.
    """
    if not _RUN_ID.match(run_id):
        raise RunRecordError("run_id %r may only hold letters, digits, '.', '_' and '-'" % run_id)
    os.makedirs(runs_dir, exist_ok=True)
    final = os.path.join(runs_dir, run_id)
    if os.path.lexists(final):
        raise RunRecordError("run directory %s already exists; it is never overwritten" % final)
    building = tempfile.mkdtemp(prefix=".%s.partial-" % run_id, dir=runs_dir)
    try:
        # mkdtemp makes it private (0700); a finished run follows the user's umask like any directory.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(building, 0o777 & ~umask)
        os.mkdir(os.path.join(building, "hosts"))
        taken = set()
        entries = []
        for record in records:
            file_name = os.path.join("hosts", safe_file_name(record["host"], taken))
            _write_json(os.path.join(building, file_name), record)
            entries.append({"host": record["host"], "file": file_name, "status": record["status"],
                            "error": record["error"]})
        manifest = dict(manifest, schema_version=SCHEMA_VERSION, kind="dropscope-run", run_id=run_id, hosts=entries)
        _write_json(os.path.join(building, "manifest.json"), manifest)
        if os.path.lexists(final):
            raise RunRecordError("run directory %s appeared while writing; it is never overwritten" % final)
        os.rename(building, final)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return final, manifest
