"""Where the log goes: stderr in the foreground (-f), syslog once the daemon
has detached (no -f), each line with its level.

syslog(3) sends datagrams to /dev/log. The test must not touch the host's
/dev, so the background scenario runs in a private mount namespace
(`unshare -m --propagation private`): a tmpfs over /dev holding only
/dev/fuse and /dev/null (bind mounts of the real ones, kept in a temp dir
first) and /dev/log, a bind mount of a unix datagram socket that this test
created and reads. When the namespace's last process exits, all of it is gone.
"""
import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.support.mount import LZ, DirStore, Mount, binary

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces need root")

# Run by `unshare -m --propagation private sh -c`: builds the private /dev,
# then holds the namespace open until the test kills it.
NAMESPACE_SCRIPT = r'''
set -eu
t=$1
[ "$(readlink /proc/self/ns/mnt)" != "$2" ] || { echo "not in a new mount namespace" >&2; exit 1; }
: > "$t/dev-fuse"
: > "$t/dev-null"
mount --bind /dev/fuse "$t/dev-fuse"
mount --bind /dev/null "$t/dev-null"
mount -t tmpfs -o mode=0755,size=64k bookmarkfs-test-dev /dev
: > /dev/fuse
: > /dev/null
mount --bind "$t/dev-fuse" /dev/fuse
mount --bind "$t/dev-null" /dev/null
if [ "$3" = log ]; then
    : > /dev/log
    mount --bind "$t/log.sock" /dev/log
fi
echo ready
exec sleep infinity
'''

# Writes invalid JSON to a key and reports what close() said.
WRITE_BAD_JSON = r'''
import errno, sys
f = open(sys.argv[1], "w")
f.write('{"epoch": ')
try:
    f.close()
except OSError as e:
    print(errno.errorcode[e.errno])
else:
    print("closed")
'''

LOG_DAEMON = 3 << 3
LOG_ERR, LOG_WARNING, LOG_INFO = 3, 4, 6
SYSLOG_LINE = re.compile(r"<(\d+)>([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) ([^\[:]+)\[(\d+)\]: (.*)",
                         re.S)


class LogNamespace:
    """The private mount namespace with /dev/log bound to our socket, and a
    thread that collects every datagram the socket receives."""

    def __init__(self, with_log=True):
        self.with_log = with_log
        # unix socket paths are short (108 bytes): a short temp dir
        self.dir = Path(tempfile.mkdtemp(prefix="bfs-syslog-"))
        self.datagrams = []
        self.holder = None
        self.ns = None
        self._stop = threading.Event()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.dir / "log.sock"))
        self.sock.settimeout(0.2)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        while True:
            try:
                self.datagrams.append(self.sock.recv(65536))
            except socket.timeout:
                if self._stop.is_set():
                    return  # stopped and the queue is empty

    def start(self):
        self.holder = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", NAMESPACE_SCRIPT, "sh",
             str(self.dir), os.readlink("/proc/self/ns/mnt"),
             "log" if self.with_log else "nolog"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = self.holder.stdout.readline()
        if line != b"ready\n":
            self.holder.wait(timeout=30)
            raise RuntimeError("setting up the namespace failed: " +
                               self.holder.stderr.read().decode(errors="replace"))
        self.ns = os.readlink(f"/proc/{self.holder.pid}/ns/mnt")
        assert self.ns != os.readlink("/proc/self/ns/mnt")
        return self

    def run(self, *cmd):
        """Runs cmd in the namespace (nsenter execs it: no other process)."""
        return subprocess.run(["nsenter", "-t", str(self.holder.pid), "-m", "--",
                               *map(str, cmd)], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=60)

    def popen(self, cmd, out, err):
        return subprocess.Popen(["nsenter", "-t", str(self.holder.pid), "-m", "--",
                                 *map(str, cmd)], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err)

    def mounted(self, path) -> bool:
        info = Path(f"/proc/{self.holder.pid}/mountinfo").read_text()
        return str(path) in [line.split()[4] for line in info.splitlines()]

    def processes(self, argv):
        """Live processes whose command line is exactly argv and whose mount
        namespace is this one (a zombie has neither)."""
        want = b"\0".join(os.fsencode(str(a)) for a in argv) + b"\0"
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if (Path(f"/proc/{entry}/cmdline").read_bytes() == want and
                        os.readlink(f"/proc/{entry}/ns/mnt") == self.ns):
                    pids.append(int(entry))
            except OSError:
                pass  # gone meanwhile
        return pids

    def stop_reading(self):
        """Stops the reader once the socket has nothing more; returns the
        datagrams received."""
        self._stop.set()
        self.reader.join(timeout=30)
        assert not self.reader.is_alive()
        return self.datagrams

    def close(self, argv):
        try:
            if self.holder is not None:
                if self.ns is not None:
                    for pid in self.processes(argv):  # a daemon we started, still there
                        os.kill(pid, signal.SIGKILL)
                self.holder.kill()  # the last process: the namespace and its mounts go
                self.holder.wait(timeout=30)
                self.holder.stdout.close()
                self.holder.stderr.close()
        finally:
            self._stop.set()
            self.reader.join(timeout=30)
            self.sock.close()
            shutil.rmtree(self.dir, ignore_errors=True)


def gone(pid) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def parse(datagrams):
    """[(priority, tag, pid, message)] of the syslog datagrams."""
    out = []
    for d in datagrams:
        m = SYSLOG_LINE.fullmatch(d.decode("utf-8", "replace").rstrip("\n"))
        assert m, d
        out.append((int(m.group(1)), m.group(3), int(m.group(4)), m.group(5)))
    return out


def job_session(ns, mnt):
    """A job's session: a key, an upload, then invalid JSON to that key."""
    job = mnt / "orders"
    for cmd in (["mkdir", job], ["sh", "-c", 'echo 42 > "$1"', "sh", job / "last_id"],
                ["sh", "-c", 'echo 1 > "$1"', "sh", job / "running"]):
        r = ns.run(*cmd)
        assert r.returncode == 0, (cmd, r.stderr)
    r = ns.run(sys.executable, "-c", WRITE_BAD_JSON, job / "last_id")
    assert r.returncode == 0 and r.stdout.split() == ["EINVAL"], (r.stdout, r.stderr)
    r = ns.run("cat", job / "last_id")
    assert r.returncode == 0 and r.stdout == "42\n", r  # the old value stays


def uploaded(store):
    (key, body), = store.objects(LZ).items()
    assert key.endswith("/orders_running.json") and body == b'{"last_id":42}'
    return key, body


def assert_upload_line(store, msg, key, body):
    m = re.fullmatch(r"job 'orders': running uploaded (\S+) \((\d+) bytes, (\d+) ms, "
                     r"(\d+) attempts?\)", msg)
    assert m, msg
    assert m.group(1) == store.location(LZ, key)
    assert int(m.group(2)) == len(body) and int(m.group(4)) == 1


def assert_bad_json_line(msg):
    assert re.fullmatch(r"job 'orders' key 'last_id': not one JSON value \(.+\); "
                        r"old value kept", msg), msg


@needs_root
def test_background_daemon_logs_to_syslog_with_levels(tmp_path):
    store = DirStore(tmp_path / "store")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    argv = [binary(), *store.args(), f"--cache-dir={tmp_path / 'cache'}", mnt]
    out_path, err_path = tmp_path / "daemon.stdout", tmp_path / "daemon.stderr"
    ns = LogNamespace()
    try:
        ns.start()
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            launcher = ns.popen(argv, out, err)
        try:
            # the first process returns once the mount is there and the child detached
            assert launcher.wait(timeout=30) == 0, err_path.read_text()
        finally:
            if launcher.poll() is None:
                launcher.kill()
                launcher.wait()
        assert ns.mounted(mnt) and not os.path.ismount(mnt)  # there, not here
        daemons = ns.processes(argv)
        assert len(daemons) == 1, daemons
        daemon, = daemons
        assert daemon != launcher.pid  # it forked

        job_session(ns, mnt)
        key, body = uploaded(store)

        r = ns.run("fusermount3", "-u", mnt)
        assert r.returncode == 0, r.stderr
        deadline = time.monotonic() + 30
        while not gone(daemon):
            assert time.monotonic() < deadline, "bookmarkfs did not exit after the unmount"
            time.sleep(0.02)
        assert not ns.mounted(mnt)
        lines = parse(ns.stop_reading())
    finally:
        ns.close(argv)

    # Nothing on the stdout/stderr it was started with, once detached.
    assert out_path.read_bytes() == b"" and err_path.read_bytes() == b""
    assert lines, "no syslog datagram"
    assert {(tag, pid) for _, tag, pid, _ in lines} == {("bookmarkfs", daemon)}
    assert all(prio >> 3 == LOG_DAEMON >> 3 for prio, *_ in lines), lines
    by_level = {}
    for prio, _, _, msg in lines:
        by_level.setdefault(prio & 7, []).append(msg)
    infos = by_level.get(LOG_INFO, [])
    assert infos[0].startswith(f"mounted on {mnt} (dir store"), infos
    uploads = [m for m in infos if "uploaded" in m]
    assert len(uploads) == 1, infos
    assert_upload_line(store, uploads[0], key, body)
    assert infos[-1] == f"unmounted {mnt}", infos
    errors = by_level.get(LOG_ERR, [])
    assert len(errors) == 1, lines
    assert_bad_json_line(errors[0])
    assert not by_level.get(LOG_WARNING), lines


@needs_root
def test_foreground_logs_to_stderr_not_syslog(tmp_path):
    """-f: the same lines on stderr, with their levels, and not one datagram
    to /dev/log although it is there."""
    store = DirStore(tmp_path / "store")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    argv = [binary(), *store.args(), f"--cache-dir={tmp_path / 'cache'}", "-f", mnt]
    err_path = tmp_path / "daemon.stderr"
    ns = LogNamespace()
    daemon = None
    try:
        ns.start()
        with open(err_path, "wb") as err:
            daemon = ns.popen(argv, subprocess.DEVNULL, err)
        deadline = time.monotonic() + 20
        while not ns.mounted(mnt):
            assert daemon.poll() is None, err_path.read_text()
            assert time.monotonic() < deadline, "no mount:\n" + err_path.read_text()
            time.sleep(0.02)
        job_session(ns, mnt)
        key, body = uploaded(store)
        r = ns.run("fusermount3", "-u", mnt)
        assert r.returncode == 0, r.stderr
        assert daemon.wait(timeout=30) == 0, err_path.read_text()
        datagrams = ns.stop_reading()
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()  # ours, by PID
            daemon.wait()
        ns.close(argv)

    assert datagrams == []
    log = err_path.read_text().splitlines()
    uploads = [l for l in log if l.startswith("bookmarkfs: info: job 'orders': running uploaded")]
    assert len(uploads) == 1, log
    assert_upload_line(store, uploads[0][len("bookmarkfs: info: "):], key, body)
    errors = [l for l in log if l.startswith("bookmarkfs: error: ")]
    assert len(errors) == 1, log
    assert_bad_json_line(errors[0][len("bookmarkfs: error: "):])
    assert f"bookmarkfs: info: unmounted {mnt}" in log


def test_foreground_mount_log_has_levels(tmp_path):
    """The same through tests/support's Mount (-f, stderr to its log file)."""
    store = DirStore(tmp_path / "store")
    with Mount(store, tmp_path / "mnt") as m:
        job = m.path / "orders"
        job.mkdir()
        (job / "last_id").write_text("42\n")
        (job / "running").write_text("1")
        f = open(job / "last_id", "w")
        f.write('{"epoch": ')
        with pytest.raises(OSError) as e:
            f.close()
        assert e.value.errno == errno.EINVAL
        assert json.loads((job / "last_id").read_text()) == 42
        key, body = uploaded(store)
        log = m.log().splitlines()
    uploads = [l for l in log if l.startswith("bookmarkfs: info: job 'orders': running uploaded")]
    assert len(uploads) == 1, log
    assert_upload_line(store, uploads[0][len("bookmarkfs: info: "):], key, body)
    errors = [l for l in log if l.startswith("bookmarkfs: error: ")]
    assert len(errors) == 1, log
    assert_bad_json_line(errors[0][len("bookmarkfs: error: "):])


@needs_root
def test_background_daemon_without_syslog_says_so_and_logs_to_its_cache_dir(tmp_path):
    """No /dev/log (a container): the mount says where it logs instead, on
    the stderr it was started with, and every line lands in
    CACHE-DIR/bookmarkfs.log."""
    store = DirStore(tmp_path / "store")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cache = tmp_path / "cache"
    argv = [binary(), *store.args(), f"--cache-dir={cache}", mnt]
    out_path, err_path = tmp_path / "daemon.stdout", tmp_path / "daemon.stderr"
    ns = LogNamespace(with_log=False)
    try:
        ns.start()
        assert ns.run("test", "-e", "/dev/log").returncode != 0
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            launcher = ns.popen(argv, out, err)
        try:
            assert launcher.wait(timeout=30) == 0, err_path.read_text()
        finally:
            if launcher.poll() is None:
                launcher.kill()
                launcher.wait()
        daemon, = ns.processes(argv)
        job_session(ns, mnt)
        key, body = uploaded(store)
        r = ns.run("fusermount3", "-u", mnt)
        assert r.returncode == 0, r.stderr
        deadline = time.monotonic() + 30
        while not gone(daemon):
            assert time.monotonic() < deadline, "bookmarkfs did not exit after the unmount"
            time.sleep(0.02)
        datagrams = ns.stop_reading()
    finally:
        ns.close(argv)
    log_path = cache / "bookmarkfs.log"
    assert err_path.read_text() == (f"bookmarkfs: no syslog socket (/dev/log): logging to "
                                    f"{log_path}\n")
    assert datagrams == []
    pattern = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z bookmarkfs\[(\d+)\]: (\w+): (.*)"
    lines = [re.fullmatch(pattern, l) for l in log_path.read_text().splitlines()]
    assert all(lines), log_path.read_text()
    msgs = [(m.group(2), m.group(3)) for m in lines]
    assert msgs[0] == ("warning", f"no syslog socket (/dev/log): logging to {log_path}")
    assert int(lines[-1].group(1)) == daemon  # the detached daemon wrote it
    uploads = [m for lvl, m in msgs if lvl == "info" and "uploaded" in m]
    assert len(uploads) == 1, msgs
    assert_upload_line(store, uploads[0], key, body)
    errors = [m for lvl, m in msgs if lvl == "error"]
    assert len(errors) == 1, msgs
    assert_bad_json_line(errors[0])
    assert msgs[-1] == ("info", f"unmounted {mnt}")
