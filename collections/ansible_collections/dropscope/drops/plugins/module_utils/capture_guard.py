# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A capture that cleans up on every exit path, including SIGKILL of the module itself.

`CaptureGuard` forks a small guardian process in its own session before any tracer starts. The
module tells it, through a pipe, which process groups it started. The guardian stops them and removes
the capture's temporary directory when either happens first:

- the pipe reaches end-of-file: the module finished, failed, was killed (even with SIGKILL) or lost
  its SSH connection and died; the kernel closes the pipe in every case;
- the hard deadline passes while the module is still alive: a wedged capture is stopped by itself.

Process groups are registered before they can do anything and unregistered before they are reaped,
so the guardian never signals a process group id that the kernel could have reused.

If the module dies without its orderly end (SIGKILL, OOM), the guardian also removes the directory
Ansible unpacked the module into (``ansible_<module>_payload_<random>``), which Ansible's own wrapper
would have removed on a normal return.

Directories outside the temporary directory (an ftrace instance under
``/sys/kernel/tracing/instances/``) can be registered with ``remove_dir_on_exit``: the guardian
removes them (``rmdir``, retried while the kernel says EBUSY) after stopping the process groups.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
import time

from ansible_collections.dropscope.drops.plugins.module_utils.snapshot import C_LOCALE

# How long a stopped process group gets between SIGTERM and SIGKILL.
TERM_GRACE_S = 1.0
# How often the module polls a child it waits for (without reaping it).
POLL_S = 0.05
# How long a registered directory's removal is retried while the kernel answers EBUSY.
RMDIR_RETRY_S = 2.0
# How long the guardian waits for a module that vanished without its orderly end to be gone.
OWNER_EXIT_WAIT_S = 10.0
# Ansible unpacks a module into e.g. /tmp/ansible_dropscope.drops.drop_capture_payload_x1y2z3.
_PAYLOAD_DIR = re.compile(r"^ansible_[A-Za-z0-9_.]+_payload_[A-Za-z0-9_]+$")


def ansible_payload_dir(module_file=__file__):
    """The directory Ansible unpacked this module into, or None when it does not run from one."""
    path = os.path.abspath(module_file)
    while True:
        parent, name = os.path.split(path)
        if _PAYLOAD_DIR.match(name) and os.path.isdir(path):
            return path
        if parent == path:
            return None
        path = parent


def _gone(pid):
    """True once `pid` has exited (a zombie counts as exited)."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (IOError, OSError, IndexError):
        return True


def _wait_gone(pid, timeout):
    end = time.monotonic() + timeout
    while not _gone(pid):
        if time.monotonic() >= end:
            return False
        time.sleep(0.05)
    return True


def _remove_dir(path, retry_s=RMDIR_RETRY_S):
    """rmdir `path` (an empty directory or an ftrace instance); retried on EBUSY. True if it is gone."""
    end = time.monotonic() + retry_s
    while True:
        try:
            os.rmdir(path)
            return True
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return True
            if exc.errno != errno.EBUSY or time.monotonic() >= end:
                return False
        time.sleep(0.05)


def _kill_group(pgid, grace=TERM_GRACE_S):
    """SIGTERM a process group, then SIGKILL whatever is left of it after `grace` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except OSError as exc:
            if exc.errno == errno.ESRCH:
                return
            raise
        end = time.monotonic() + grace
        while time.monotonic() < end:
            try:
                os.killpg(pgid, 0)
            except OSError:
                return
            time.sleep(0.02)


def _guardian(read_fd, tmpdir, deadline, owner_pid=None, payload_dir=None):
    """Body of the guardian process: wait for EOF or the deadline, then stop groups and remove tmpdir.

    At an end-of-file without the module's orderly "e" message the module died: once it is gone, its
    Ansible payload directory is removed too.
    """
    groups = set()
    dirs = []
    orderly = eof = False
    buffered = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        ready = select.select([read_fd], [], [], remaining)[0]
        if not ready:
            break
        chunk = os.read(read_fd, 4096)
        if not chunk:
            eof = True
            break
        buffered += chunk
        while b"\n" in buffered:
            line, buffered = buffered.split(b"\n", 1)
            if line.startswith(b"+"):
                groups.add(int(line[1:]))
            elif line.startswith(b"-"):
                groups.discard(int(line[1:]))
            elif line.startswith(b"d"):
                dirs.append(bytes.fromhex(line[1:].decode("ascii")))
            elif line.startswith(b"k"):
                path = bytes.fromhex(line[1:].decode("ascii"))
                if path in dirs:
                    dirs.remove(path)
            elif line == b"e":
                orderly = True
    for pgid in groups:
        try:
            _kill_group(pgid)
        except OSError:
            pass
    for path in reversed(dirs):
        _remove_dir(path)
    shutil.rmtree(tmpdir, ignore_errors=True)
    if eof and not orderly and payload_dir and owner_pid and _wait_gone(owner_pid, OWNER_EXIT_WAIT_S):
        shutil.rmtree(payload_dir, ignore_errors=True)


class CaptureGuard:
    """Owns a capture's temporary directory and child processes; see the module docstring.

    Use as a context manager::

        with CaptureGuard(deadline_s=70) as guard:
            proc = guard.start(["perf", "record", ...])
            guard.wait(proc, timeout=12)
    """

    def __init__(self, deadline_s, prefix="dropscope-capture-", tmp_root=None):
        self.deadline = time.monotonic() + deadline_s
        self.tmpdir = tempfile.mkdtemp(prefix=prefix, dir=tmp_root)
        self._write_fd = None
        self._guardian_pid = None
        self._children = []
        self._dirs = []

    def __enter__(self):
        read_fd, write_fd = os.pipe()
        owner_pid, payload_dir = os.getpid(), ansible_payload_dir()
        pid = os.fork()
        if pid == 0:  # guardian
            try:
                os.close(write_fd)
                os.setsid()
                # Let go of the module's stdin/stdout/stderr: the SSH channel must not wait for us.
                devnull = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(devnull, fd)
                _guardian(read_fd, self.tmpdir, self.deadline, owner_pid, payload_dir)
            finally:
                os._exit(0)
        os.close(read_fd)
        self._write_fd = write_fd
        self._guardian_pid = pid
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return False

    def _tell(self, message):
        os.write(self._write_fd, message.encode("ascii") + b"\n")

    def path(self, name):
        return os.path.join(self.tmpdir, name)

    def remaining(self):
        return self.deadline - time.monotonic()

    def mark_ready(self):
        """Write `ready` (holding this process's network namespace inode) into the temporary directory.

        Tests and benchmarks outside the module wait for it to know the probe is live.
        """
        try:
            inode = os.stat("/proc/self/ns/net").st_ino
        except OSError:
            inode = 0
        with open(self.path("ready"), "w") as handle:
            handle.write("%d\n" % inode)

    def remove_dir_on_exit(self, path):
        """Register a directory that must be removed (rmdir) on every exit path, e.g. an ftrace instance.

        Call it before creating the directory, so there is no moment where it exists unregistered.
        """
        encoded = os.fsencode(path)
        self._tell("d" + encoded.hex())
        self._dirs.append(encoded)

    def remove_dir_now(self, path):
        """Remove a registered directory now (rmdir, retried on EBUSY); True if it is gone."""
        encoded = os.fsencode(path)
        gone = _remove_dir(encoded)
        if gone and encoded in self._dirs:
            self._dirs.remove(encoded)
            self._tell("k" + encoded.hex())
        return gone

    def start(self, argv, stdout=None, stderr=None, stdin=None, env_update=None):
        """Start argv in its own process group (never through a shell) and register that group.

        It runs in the C locale (its output is parsed) with `env_update` added to the environment.
        """
        env = dict(os.environ)
        env.update(C_LOCALE)
        env.update(env_update or {})
        # Registered right after exec; a module killed inside that window leaves at most a capture
        # that ends by itself (perf's workload is `sleep DURATION`).
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL if stdin is None else stdin,
                                stdout=stdout, stderr=stderr, env=env,
                                start_new_session=True, close_fds=True)
        self._tell("+%d" % proc.pid)
        self._children.append(proc)
        return proc

    def wait(self, proc, timeout, stop_signal=signal.SIGINT, stop_grace=10.0):
        """Wait up to `timeout` s for proc; past that send `stop_signal`, then kill. Returns (rc, stopped)."""
        end = min(time.monotonic() + timeout, self.deadline)
        stopped = False
        while not self._exited(proc):
            if time.monotonic() >= end:
                if stopped:
                    _kill_group(proc.pid, grace=0.5)
                    break
                stopped = True
                try:
                    os.killpg(proc.pid, stop_signal)
                except OSError:
                    pass
                end = min(time.monotonic() + stop_grace, self.deadline + TERM_GRACE_S)
            time.sleep(POLL_S)
        self._release(proc)
        return proc.wait(), stopped

    def _exited(self, proc):
        """True once proc has exited, without reaping it (its pid, and so its group id, stay taken)."""
        try:
            info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None

    def _release(self, proc):
        """Unregister proc's group; called while proc is still unreaped, so its group id is not reused."""
        if proc in self._children:
            self._children.remove(proc)
            self._tell("-%d" % proc.pid)

    def close(self):
        """Stop every child still running, remove the temporary directory, release the guardian."""
        for proc in list(self._children):
            if not self._exited(proc):
                _kill_group(proc.pid, grace=0.5)
            self._release(proc)
            proc.wait()
        for path in reversed(list(self._dirs)):
            self.remove_dir_now(path)
        shutil.rmtree(self.tmpdir, ignore_errors=True)
        if self._write_fd is not None:
            # An orderly end: Ansible's wrapper removes the module's payload directory itself.
            self._tell("e")
            os.close(self._write_fd)
            self._write_fd = None
        if self._guardian_pid is not None:
            try:
                os.waitpid(self._guardian_pid, 0)
            except ChildProcessError:
                pass
            self._guardian_pid = None
