# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A capture that cleans up on every exit path, including SIGKILL of the module itself.

`CaptureGuard` forks a small guardian process in its own session before any tracer starts. The
module tells it, through a pipe, which process groups it started. The guardian stops them and removes
the capture's temporary directory when the first of these happens:

- the pipe reaches end-of-file: the module finished, failed or was killed (even with SIGKILL); the
  kernel closes the pipe in every case;
- the controller is gone: the module declared its channel to the controller (``watch_controller``,
  an Ansible module's stdout, which is the SSH channel) and that channel hangs up. A remote command
  gets no signal when its SSH channel closes (no pty), but ``poll()`` on its stdout reports
  POLLERR/POLLHUP at once when the ssh client dies (the controller killed or interrupted, the SSH
  session or its ControlPersist master closed). The module has nobody left to report to: the guardian
  SIGKILLs it, then cleans up as after any death of the module. Only a pipe or a socket is watched,
  never a regular file or a terminal (a terminal's hangup is a SIGHUP, which the module handles);
- the hard deadline passes while the module is still alive: a wedged capture is stopped by itself.

Process groups are registered before they can do anything and unregistered before they are reaped,
so the guardian never signals a process group id that the kernel could have reused.

If the module dies without its orderly end (SIGKILL, OOM, or killed by the guardian), the guardian also
removes, once the module is gone, the directory Ansible unpacked the module into
(``ansible_<module>_payload_<random>``), which Ansible's own wrapper would have removed on a normal
return, and unmounts what the module mounted and said so (``unmount_if_owner_dies``: tracefs).

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
import stat
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
# Where the guardian looks for umount (it does not rely on the module's PATH).
_UMOUNT_DIRS = ("/usr/bin", "/bin", "/usr/sbin", "/sbin")

# What this process declared for every CaptureGuard it starts afterwards (the guardian is forked with it):
# the file descriptor of its channel to the controller, and the mounts to undo if it dies.
_OWNER = {"controller_fd": None, "mounts": []}


def watch_controller(fd=1):
    """Declare `fd` (an Ansible module's stdout: the SSH channel) as this process's channel to the controller.

    Every CaptureGuard started afterwards watches it: when it hangs up (POLLERR/POLLHUP; the controller,
    its ssh client or the SSH session is gone) the guardian ends this process and cleans up. Returns
    whether `fd` can be watched: only a pipe or a socket; a regular file, a terminal or a closed fd is not.
    """
    _OWNER["controller_fd"] = fd if _is_channel(fd) else None
    return _OWNER["controller_fd"] is not None


def unmount_if_owner_dies(path, umount=None):
    """Declare that this process mounted `path` (and unmounts it at its orderly end): a guardian started
    afterwards unmounts it (with the `umount` binary, or the system's) if this process dies before."""
    _OWNER["mounts"].append((path, umount))


def _is_channel(fd):
    """True if `fd` is an open pipe or socket (what an SSH session gives a remote command as its stdout)."""
    try:
        mode = os.fstat(fd).st_mode
    except (OSError, TypeError, ValueError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


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


def _wait_parent_gone(parent_pid, timeout):
    """Wait until this process's parent `parent_pid` has exited (it is then reparented); True if it has."""
    end = time.monotonic() + timeout
    while os.getppid() == parent_pid:
        if time.monotonic() >= end:
            return False
        time.sleep(0.02)
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


def _group_running(pgid):
    """True while process group `pgid` has a member that has not exited (zombies do not count: once the
    module is gone its exited children wait for init to reap them)."""
    try:
        os.killpg(pgid, 0)
    except OSError:
        return False
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name, "rb") as handle:
                    fields = handle.read().rsplit(b")", 1)[1].split()
            except (IOError, OSError, IndexError):
                continue
            if len(fields) > 2 and fields[2] == b"%d" % pgid and fields[0] != b"Z":
                return True
    return False


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
            if not _group_running(pgid):
                return
            time.sleep(0.02)


def _unmount(path, umount):
    """Unmount `path` with `umount` (or the first umount found in _UMOUNT_DIRS); best effort."""
    candidates = [umount] if umount else [os.path.join(directory, "umount") for directory in _UMOUNT_DIRS]
    for binary in candidates:
        if binary and os.access(binary, os.X_OK):
            with open(os.devnull, "wb") as devnull:
                subprocess.call([binary, path], stdin=devnull, stdout=devnull, stderr=devnull, close_fds=True)
            return


class _Messages:
    """What the module told the guardian through the pipe (one line per message)."""

    def __init__(self, read_fd):
        self.read_fd = read_fd
        self.groups = set()
        self.dirs = []
        self.orderly = False
        self.eof = False
        self._buffered = b""

    def read(self):
        """Read what is available (the pipe is readable); sets ``eof`` at end-of-file."""
        chunk = os.read(self.read_fd, 4096)
        if not chunk:
            self.eof = True
            return
        self._buffered += chunk
        while b"\n" in self._buffered:
            line, self._buffered = self._buffered.split(b"\n", 1)
            if line.startswith(b"+"):
                self.groups.add(int(line[1:]))
            elif line.startswith(b"-"):
                self.groups.discard(int(line[1:]))
            elif line.startswith(b"d"):
                self.dirs.append(bytes.fromhex(line[1:].decode("ascii")))
            elif line.startswith(b"k"):
                path = bytes.fromhex(line[1:].decode("ascii"))
                if path in self.dirs:
                    self.dirs.remove(path)
            elif line == b"e":
                self.orderly = True

    def read_until_eof(self, timeout):
        """Read until end-of-file (every message the module wrote before it died), at most `timeout` s."""
        end = time.monotonic() + timeout
        while not self.eof:
            remaining = end - time.monotonic()
            if remaining <= 0 or not select.select([self.read_fd], [], [], remaining)[0]:
                return
            self.read()


_HANGUP = select.POLLERR | select.POLLHUP


def _guardian(read_fd, tmpdir, deadline, owner_pid=None, payload_dir=None, controller_fd=None, mounts=()):
    """Body of the guardian process: wait for EOF, the controller's hangup or the deadline, then clean up.

    At the controller's hangup the module (`owner_pid`, the guardian's parent) is SIGKILLed first: nobody
    is left to read its result. Whenever the module died without its orderly "e" message, once it is gone
    its Ansible payload directory is removed and the `mounts` it declared are unmounted.
    """
    messages = _Messages(read_fd)
    poller = select.poll()
    poller.register(read_fd, select.POLLIN)
    if controller_fd is not None:
        poller.register(controller_fd, 0)  # no event asked: POLLERR/POLLHUP are always reported
    hangup = False
    while not (messages.eof or hangup):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        events = poller.poll(max(1, int(remaining * 1000)))
        if not events:
            break
        for fd, event in events:
            if fd == controller_fd and event & _HANGUP:
                hangup = True
            elif fd == read_fd:
                messages.read()
    if controller_fd is not None:
        os.close(controller_fd)  # the SSH channel must not wait for the guardian
    if hangup and owner_pid and os.getppid() == owner_pid:
        os.kill(owner_pid, signal.SIGKILL)
        messages.read_until_eof(OWNER_EXIT_WAIT_S)
    for pgid in messages.groups:
        try:
            _kill_group(pgid)
        except OSError:
            pass
    for path in reversed(messages.dirs):
        _remove_dir(path)
    shutil.rmtree(tmpdir, ignore_errors=True)
    died = (messages.eof or hangup) and not messages.orderly
    if died and owner_pid and _wait_parent_gone(owner_pid, OWNER_EXIT_WAIT_S):
        if payload_dir:
            shutil.rmtree(payload_dir, ignore_errors=True)
        for path, umount in reversed(list(mounts)):
            _unmount(path, umount)


def child_exited(pid):
    """True once child `pid` has exited, without reaping it (its pid, and so its group id, stay taken)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


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
        self._payload_dir = None

    def __enter__(self):
        read_fd, write_fd = os.pipe()
        owner_pid = os.getpid()
        payload_dir = self._payload_dir = ansible_payload_dir()
        pid = os.fork()
        if pid == 0:  # guardian
            try:
                os.close(write_fd)
                os.setsid()
                # Watch a copy of the channel to the controller, if the module declared one and it is still a
                # pipe or a socket, then let go of the module's stdin/stdout/stderr (the guardian closes
                # its copy as soon as it stops waiting: the SSH channel must not wait for it).
                controller_fd = os.dup(_OWNER["controller_fd"]) if _is_channel(_OWNER["controller_fd"]) else None
                devnull = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(devnull, fd)
                _guardian(read_fd, self.tmpdir, self.deadline, owner_pid, payload_dir, controller_fd,
                          list(_OWNER["mounts"]))
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

        Tests and benchmarks outside the module wait for it to know the probe is live. Written first, so
        they can tell what the capture holds outside its directory: `payload` names the module's Ansible
        payload directory (empty when it runs from none), `dirs` the registered directories, one a line.
        """
        try:
            inode = os.stat("/proc/self/ns/net").st_ino
        except OSError:
            inode = 0
        with open(self.path("payload"), "w") as handle:
            handle.write(self._payload_dir or "")
        with open(self.path("dirs"), "w") as handle:
            handle.write("".join(os.fsdecode(path) + "\n" for path in self._dirs))
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
        return child_exited(proc.pid)

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
