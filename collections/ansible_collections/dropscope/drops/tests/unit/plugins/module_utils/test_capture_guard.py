# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The guardian stops what a capture started and removes its files on every exit path (real processes)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import pty
import signal
import socket
import subprocess
import sys
import time

import pytest
from ansible_collections.dropscope.drops.plugins.module_utils import capture_guard
from ansible_collections.dropscope.drops.plugins.module_utils.capture_guard import CaptureGuard

# The directory that holds `ansible_collections/`, for the owner process's import path.
COLLECTIONS = os.path.abspath(os.path.join(os.path.dirname(capture_guard.__file__), *[".."] * 5))

# A capture owner in its own process: starts `sleep 60` under a guard, reports, then waits to be killed.
OWNER = """
import json, sys, time
from ansible_collections.dropscope.drops.plugins.module_utils.capture_guard import CaptureGuard
guard = CaptureGuard(deadline_s=float(sys.argv[1])).__enter__()
proc = guard.start(["sleep", "60"])
open(guard.path("perf.data"), "w").close()
print(json.dumps({"child": proc.pid, "tmpdir": guard.tmpdir}), flush=True)
time.sleep(120)
"""


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_until(predicate, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _start_owner(deadline_s):
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(deadline_s)], stdout=subprocess.PIPE,
                             env=dict(os.environ, PYTHONPATH=COLLECTIONS))
    state = json.loads(owner.stdout.readline())
    assert _alive(state["child"]) and os.path.isdir(state["tmpdir"])
    return owner, state


def test_normal_exit_removes_tmpdir_and_guardian():
    with CaptureGuard(deadline_s=30) as guard:
        proc = guard.start(["sleep", "0.2"])
        rc, stopped = guard.wait(proc, timeout=5)
        tmpdir = guard.tmpdir
        guardian = guard._guardian_pid
        assert (rc, stopped) == (0, False)
        assert os.path.isdir(tmpdir)
    assert not os.path.exists(tmpdir)
    assert not _alive(guardian)


def test_children_run_in_the_c_locale_with_the_extra_environment(monkeypatch):
    monkeypatch.setenv("LANG", "de_DE.UTF-8")
    monkeypatch.setenv("LC_ALL", "de_DE.UTF-8")
    with CaptureGuard(deadline_s=30) as guard:
        with open(guard.path("env"), "wb") as out:
            proc = guard.start(["env"], stdout=out, env_update={"TERM": "dumb"})
            assert guard.wait(proc, timeout=5) == (0, False)
        with open(guard.path("env"), "r") as handle:
            env = dict(line.split("=", 1) for line in handle.read().splitlines() if "=" in line)
    assert (env["LANG"], env["LC_ALL"], env["LC_MESSAGES"], env["TERM"]) == ("C", "C", "C", "dumb")


def test_wait_stops_a_process_past_its_timeout():
    with CaptureGuard(deadline_s=30) as guard:
        proc = guard.start(["sleep", "30"])
        started = time.monotonic()
        rc, stopped = guard.wait(proc, timeout=0.3, stop_signal=signal.SIGINT)
        assert stopped is True
        assert rc == -signal.SIGINT
        assert time.monotonic() - started < 5
        assert not _alive(proc.pid)


def test_exception_inside_the_capture_stops_children():
    try:
        with CaptureGuard(deadline_s=30) as guard:
            proc = guard.start(["sleep", "30"])
            raise RuntimeError("parser blew up")
    except RuntimeError:
        pass
    assert not _alive(proc.pid)
    assert not os.path.exists(guard.tmpdir)


def test_sigkill_of_the_owner_stops_the_capture_and_removes_files():
    owner, state = _start_owner(deadline_s=60)
    owner.kill()
    owner.wait()
    assert _wait_until(lambda: not _alive(state["child"]), 5), "capture process survived its owner's SIGKILL"
    assert _wait_until(lambda: not os.path.exists(state["tmpdir"]), 5), "temp dir left after SIGKILL"


def test_hard_deadline_stops_a_capture_whose_owner_is_still_alive():
    owner, state = _start_owner(deadline_s=1)
    try:
        assert _wait_until(lambda: not _alive(state["child"]), 6), "capture ran past its hard deadline"
        assert _wait_until(lambda: not os.path.exists(state["tmpdir"]), 3)
        assert owner.poll() is None
    finally:
        owner.kill()
        owner.wait()


# An owner that registers a directory outside its temporary directory (as the tracefs backend does with
# its ftrace instance), creates it, reports, then waits to be killed.
OWNER_WITH_DIR = """
import json, os, sys, time
from ansible_collections.dropscope.drops.plugins.module_utils.capture_guard import CaptureGuard
guard = CaptureGuard(deadline_s=60).__enter__()
guard.remove_dir_on_exit(sys.argv[1])
os.mkdir(sys.argv[1])
print(json.dumps({"tmpdir": guard.tmpdir}), flush=True)
time.sleep(120)
"""


def test_registered_directory_is_removed_when_the_owner_is_killed(tmp_path):
    target = str(tmp_path / "instance-like")
    owner = subprocess.Popen([sys.executable, "-c", OWNER_WITH_DIR, target], stdout=subprocess.PIPE,
                             env=dict(os.environ, PYTHONPATH=COLLECTIONS))
    state = json.loads(owner.stdout.readline())
    assert os.path.isdir(target)
    owner.kill()
    owner.wait()
    assert _wait_until(lambda: not os.path.exists(target), 5), "registered directory left after SIGKILL"
    assert _wait_until(lambda: not os.path.exists(state["tmpdir"]), 5)


def test_registered_directory_is_removed_on_normal_exit_and_can_be_removed_early(tmp_path):
    first, second = str(tmp_path / "a"), str(tmp_path / "b")
    with CaptureGuard(deadline_s=30) as guard:
        for path in (first, second):
            guard.remove_dir_on_exit(path)
            os.mkdir(path)
        assert guard.remove_dir_now(first) is True
        assert not os.path.exists(first) and os.path.isdir(second)
    assert not os.path.exists(second)


def test_ansible_payload_dir_is_found_only_inside_one(tmp_path):
    payload = tmp_path / "ansible_dropscope.drops.drop_capture_payload_ab12cd"
    inner = payload / "ansible_dropscope.drops.drop_capture_payload.zip" / "ansible_collections" / "x.py"
    payload.mkdir()
    assert capture_guard.ansible_payload_dir(str(inner)) == str(payload)
    assert capture_guard.ansible_payload_dir(str(tmp_path / "plain" / "x.py")) is None


PAYLOAD_OWNER = """
import json, sys, time
from ansible_collections.dropscope.drops.plugins.module_utils import capture_guard
capture_guard.ansible_payload_dir = lambda module_file=None: sys.argv[1]
guard = capture_guard.CaptureGuard(deadline_s=60).__enter__()
print(json.dumps({"tmpdir": guard.tmpdir}), flush=True)
if sys.argv[2] == "orderly":
    guard.close()
    print("closed", flush=True)
time.sleep(120)
"""


def _payload_owner(tmp_path, mode):
    payload = tmp_path / "ansible_dropscope.drops.drop_capture_payload_test01"
    payload.mkdir()
    (payload / "module.zip").write_text("x")
    owner = subprocess.Popen([sys.executable, "-c", PAYLOAD_OWNER, str(payload), mode], stdout=subprocess.PIPE,
                             env=dict(os.environ, PYTHONPATH=COLLECTIONS))
    json.loads(owner.stdout.readline())
    return owner, payload


def test_module_killed_its_ansible_payload_dir_is_removed(tmp_path):
    owner, payload = _payload_owner(tmp_path, "killed")
    owner.kill()
    owner.wait()
    assert _wait_until(lambda: not payload.exists(), 5), "Ansible's payload dir outlived a SIGKILLed module"


def test_orderly_end_leaves_the_payload_dir_to_ansible(tmp_path):
    owner, payload = _payload_owner(tmp_path, "orderly")
    try:
        assert owner.stdout.readline().strip() == b"closed"  # close() does not wait for the module to exit
        owner.kill()
        owner.wait()
        time.sleep(1)
        assert payload.exists(), "the guardian removed the payload dir after an orderly end"
    finally:
        owner.kill()


# An owner that declares its stdout as its channel to the controller (as drop_capture does), starts
# `sleep 60` under a guard, reports on stderr (the watched stdout stays silent), then waits to be killed.
WATCHING_OWNER = """
import json, os, sys, time
from ansible_collections.dropscope.drops.plugins.module_utils import capture_guard
capture_guard.ansible_payload_dir = lambda module_file=None: sys.argv[1]
watching = capture_guard.watch_controller(1)
guard = capture_guard.CaptureGuard(deadline_s=60).__enter__()
proc = guard.start(["sleep", "60"], stdout=open(os.devnull, "wb"))
sys.stderr.write(json.dumps({"child": proc.pid, "tmpdir": guard.tmpdir, "watching": watching}) + "\\n")
sys.stderr.flush()
if sys.argv[2] == "orderly":
    guard.close()
    sys.stdout.write("result\\n")
    sys.exit(0)
time.sleep(120)
"""


def _watching_owner(tmp_path, stdout, mode="wait"):
    payload = tmp_path / "ansible_dropscope.drops.drop_capture_payload_watch1"
    payload.mkdir()
    owner = subprocess.Popen([sys.executable, "-c", WATCHING_OWNER, str(payload), mode], stdout=stdout,
                             stderr=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=COLLECTIONS))
    state = json.loads(owner.stderr.readline())
    if mode == "wait":  # an orderly owner closes its guard right after reporting
        assert _alive(state["child"]) and os.path.isdir(state["tmpdir"])
    return owner, state, payload


def _channel(kind):
    """(owner's end, our end) of a pipe or a socket pair, as an SSH session gives a remote command."""
    if kind == "pipe":
        ours, theirs = os.pipe()
        return theirs, ours
    theirs, ours = socket.socketpair()
    return theirs.detach(), ours.detach()


@pytest.mark.parametrize("kind", ["pipe", "socket"])
def test_controller_gone_the_guardian_stops_the_capture_and_ends_the_module(tmp_path, kind):
    """The reader of the watched stdout closes (the ssh client died): tracer and files go within 1 s."""
    theirs, ours = _channel(kind)
    owner, state, payload = _watching_owner(tmp_path, theirs)
    os.close(theirs)
    try:
        assert state["watching"] is True
        assert _alive(state["child"]) and owner.poll() is None
        os.close(ours)
        assert _wait_until(lambda: not _alive(state["child"]), 1), "the tracer outlived the controller's channel"
        assert _wait_until(lambda: not os.path.exists(state["tmpdir"]), 1), "temp dir left after the hangup"
        assert owner.wait(timeout=5) == -signal.SIGKILL, "the module must end: nobody reads its result"
        assert _wait_until(lambda: not payload.exists(), 5), "Ansible's payload dir outlived the module"
    finally:
        owner.kill()
        owner.wait()


def test_a_watched_regular_file_is_never_taken_for_a_hangup(tmp_path):
    out = tmp_path / "stdout.txt"
    with open(out, "wb") as handle:
        owner, state, payload = _watching_owner(tmp_path, handle)
    try:
        assert state["watching"] is False
        out.unlink()
        assert not _wait_until(lambda: not _alive(state["child"]) or owner.poll() is not None, 1)
        assert os.path.isdir(state["tmpdir"]) and payload.exists()
    finally:
        owner.kill()
        owner.wait()
    # The owner's own death is still seen (end-of-file on the guardian's pipe).
    assert _wait_until(lambda: not _alive(state["child"]), 5)
    assert _wait_until(lambda: not os.path.exists(state["tmpdir"]), 5)


def test_a_terminal_is_not_watched_its_hangup_is_a_sighup(tmp_path):
    master, slave = pty.openpty()
    owner, state, payload = _watching_owner(tmp_path, slave)
    os.close(slave)
    try:
        assert state["watching"] is False
        os.close(master)
        assert not _wait_until(lambda: not _alive(state["child"]) or owner.poll() is not None, 1)
        assert os.path.isdir(state["tmpdir"])
    finally:
        owner.kill()
        owner.wait()


def test_orderly_end_the_guardian_does_not_hold_the_controller_channel(tmp_path):
    """The module's result reaches the controller and its channel closes when the module exits."""
    owner, state, payload = _watching_owner(tmp_path, subprocess.PIPE, mode="orderly")
    try:
        assert state["watching"] is True
        output, _err = owner.communicate(timeout=10)  # end-of-file: no guardian keeps stdout open
        assert (owner.returncode, output) == (0, b"result\n")
        # The guardian cleans up after the module's orderly end, on its own (a busy machine may delay it).
        assert _wait_until(lambda: not _alive(state["child"]) and not os.path.exists(state["tmpdir"]), 5)
        assert payload.exists(), "after an orderly end the payload dir is Ansible's to remove"
    finally:
        owner.kill()
        owner.wait()


# An owner that mounted a tmpfs (as drop_capture mounts tracefs), declares it, then runs a guard.
MOUNTING_OWNER = """
import json, subprocess, sys, time
from ansible_collections.dropscope.drops.plugins.module_utils import capture_guard
subprocess.check_call(["mount", "-t", "tmpfs", "-o", "size=1m", "dropscope-test", sys.argv[1]])
capture_guard.unmount_if_owner_dies(sys.argv[1])
guard = capture_guard.CaptureGuard(deadline_s=60).__enter__()
if sys.argv[2] == "orderly":
    guard.close()
print(json.dumps({"tmpdir": guard.tmpdir}), flush=True)
time.sleep(120)
"""


def _mounted(path):
    with open("/proc/self/mounts") as handle:
        return any(line.split()[1] == path for line in handle)


@pytest.mark.parametrize("mode", ["killed", "orderly"])
def test_what_the_module_mounted_is_unmounted_only_if_it_dies(tmp_path, mode):
    if os.geteuid() != 0:
        pytest.fail("this test needs root to mount a tmpfs (run as root after `bash .ci/install`)")
    target = str(tmp_path / "mnt")
    os.mkdir(target)
    owner = subprocess.Popen([sys.executable, "-c", MOUNTING_OWNER, target, mode], stdout=subprocess.PIPE,
                             env=dict(os.environ, PYTHONPATH=COLLECTIONS))
    try:
        json.loads(owner.stdout.readline())
        assert _mounted(target)
        owner.kill()
        owner.wait()
        if mode == "killed":
            assert _wait_until(lambda: not _mounted(target), 5), "the dead module's mount is left"
        else:
            time.sleep(0.5)
            assert _mounted(target), "after an orderly end the module unmounts what it mounted itself"
    finally:
        owner.kill()
        owner.wait()
        while _mounted(target):
            subprocess.check_call(["umount", target])


def test_ready_marker_says_what_the_capture_holds_outside_its_directory(tmp_path):
    instance = str(tmp_path / "instance-like")
    with CaptureGuard(deadline_s=30) as guard:
        guard.remove_dir_on_exit(instance)
        guard.mark_ready()
        with open(guard.path("ready")) as ready, open(guard.path("payload")) as payload, \
                open(guard.path("dirs")) as dirs:
            marker = (int(ready.read()), payload.read(), dirs.read())
    assert marker == (os.stat("/proc/self/ns/net").st_ino, "", instance + "\n")
