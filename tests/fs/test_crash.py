"""Crash points, systematically. The test build's crash hook (fs/journal.c,
meson -Dtest_hooks=true, which scripts/build sets) makes the daemon exit,
as kill -9 would leave it, just before its Nth journal write or fsync
(BOOKMARKFS_CRASH_AT), or tear its Nth write in half and exit
(BOOKMARKFS_CRASH_TEAR). For every N, a scripted workload runs until the
daemon dies; a fresh mount of the same cache then holds every change whose
call returned 0 and nothing that was refused (the one call in flight at the
crash may have landed or not). The walk ends at the first N the workload
survives whole."""
import errno
import json
import os
import shutil
import subprocess

import pytest

from tests.support.mount import LZ, DirStore, Mount

CRASH_EXIT = 86  # fs/journal.c
GONE = "<removed>"


def read_state(mnt, job):
    try:
        return json.loads((mnt / job / ".state.json").read_text())
    except FileNotFoundError:
        return {}


def write(mnt, job, key, value):
    (mnt / job / key).write_text(json.dumps(value))


def fsynced_write(mnt, job, key, value):
    with open(mnt / job / key, "w") as f:
        f.write(json.dumps(value))
        f.flush()
        os.fsync(f.fileno())


def scratch_rename(mnt, job, key, value):
    (mnt / job / ".edit.tmp").write_text(json.dumps(value))
    os.rename(mnt / job / ".edit.tmp", mnt / job / key)


def journal_of(cache):
    (path,) = cache.glob("*/journal")
    return path


class Filled:
    """The cache's small tmpfs filled up by a file of ours for the length of
    a step: the journal has no page to grow into."""

    def __init__(self, run):
        self.path = run.cache.parent / f"filler-{run.cache.name}"

    def __enter__(self):
        with open(self.path, "wb", buffering=0) as f:
            chunk = b"\0" * 4096
            try:
                while True:
                    f.write(chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC
        return self

    def __exit__(self, *exc):
        self.path.unlink()


class Full:
    """A key write on a full disk: refused."""

    def __init__(self, key):
        self.key = key

    def __call__(self, run):
        with Filled(run):
            try:  # more than the slack in the journal's last page
                write(run.mount.path, "a", self.key, "x" * 6000)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                run.refused += 1


class Cramped:
    """An upload on a full disk: the store's object goes elsewhere, the
    compaction has no room to copy the other job's records, so the uploaded
    job's records become pads in place."""

    def __init__(self, job, kind):
        self.job, self.kind = job, kind

    def __call__(self, run):
        with Filled(run):
            (run.mount.path / self.job / self.kind).write_text("1")
            run.padded = b"bfs-pad!" in journal_of(run.cache).read_bytes()


def step(fn, *args):
    return lambda run: fn(run.mount.path, *args)


def upload(job, kind):
    return ("upload", job, kind), step(lambda mnt: (mnt / job / kind).write_text("1"))


# (what it does to the mount's state, or None for nothing, and the step)
WORKLOAD = [
    ({"a": {"k1": 1}}, step(lambda mnt: ((mnt / "a").mkdir(), write(mnt, "a", "k1", 1)))),
    ({"a": {"k2": "x"}}, step(write, "a", "k2", "x")),
    ({"a": {"empty": None}}, step(lambda mnt: open(mnt / "a" / "empty", "w").close())),
    ({"a": {"k2": GONE, "k3": "x"}}, step(lambda mnt: os.rename(mnt / "a" / "k2",
                                                                mnt / "a" / "k3"))),
    ({"a": {"k4": [1, 2]}}, step(fsynced_write, "a", "k4", [1, 2])),
    ({"b": "replace", "b=": {"p": 1, "q": 2}},
     step(lambda mnt: ((mnt / "b").mkdir(),
                       (mnt / "b" / ".state.json").write_text('{"p": 1, "q": 2}')))),
    ({"b": {"r": 3}}, step(write, "b", "r", 3)),
    upload("a", "completed"),
    ({"a": {"k1": 2}}, step(write, "a", "k1", 2)),
    upload("a", "running"),  # the same second as the completed, mostly
    upload("b", "running"),
    ({"b": {"q": GONE}}, step(lambda mnt: os.unlink(mnt / "b" / "q"))),
    (None, Full("big")),
    ({"a": {"k5": 5}}, step(write, "a", "k5", 5)),
    ({"a": {"k6": {"v": 6}}}, step(scratch_rename, "a", "k6", {"v": 6})),
    upload("a", "running"),
    ({"a": {"k3": GONE}}, step(lambda mnt: os.unlink(mnt / "a" / "k3"))),
    upload("a", "completed"),
    ({"a": {"k7": 7}}, step(write, "a", "k7", 7)),
    ({"b": "replace", "b=": {"z": 0}},
     step(lambda mnt: (mnt / "b" / ".state.json").write_text('{"z": 0}'))),
    (("upload", "a", "completed"), Cramped("a", "completed")),  # b's records after a's
    ({"a": {"k8": 8}}, step(write, "a", "k8", 8)),
    upload("b", "completed"),
    upload("a", "running"),
]


def apply(model, change):
    """The mount's state of each job, whether it has changes not uploaded,
    and the state of its last completed upload."""
    model = {job: {**m, "state": dict(m["state"])} for job, m in model.items()}
    if change is None:
        return model
    if isinstance(change, tuple):
        _, job, kind = change
        m = model[job]
        m["dirty"] = False
        if kind == "completed":
            m["completed"] = dict(m["state"])
        return model
    for job, keys in change.items():
        if job.endswith("="):
            continue
        m = model.setdefault(job, {"state": {}, "dirty": False, "completed": None})
        m["dirty"] = True
        if keys == "replace":
            m["state"] = dict(change[job + "="])
            continue
        for key, value in keys.items():
            if value == GONE:
                m["state"].pop(key, None)
            else:
                m["state"][key] = value
    return model


def expected(model, resume, jobs):
    """What a fresh mount shows: a job with local changes as the mount had
    it; without, where --resume-from says (the last upload with running;
    the last completed one, or nothing, with completed)."""
    out = {}
    for job in jobs:
        m = model.get(job)
        if m is None:
            out[job] = {}
        elif m["dirty"] or resume == "running":
            out[job] = m["state"]
        else:
            out[job] = m["completed"] if m["completed"] is not None else {}
    return out


class Run:
    def __init__(self, tmp_path, disk, n, env_name, resume):
        self.base = tmp_path / f"{env_name}{n}"
        self.store = DirStore(self.base / "store")
        self.cache = disk / f"{env_name}{n}"
        self.resume = resume
        self.extra = [f"--cache-dir={self.cache}", f"--resume-from={resume}"]
        self.refused = 0
        self.padded = None
        env = self.store.env()
        env[env_name] = str(n)
        self.mount = Mount(self.store, self.base / "mnt", extra=self.extra, env=env)

    def workload(self):
        """Runs the steps until the daemon exits: the model before the step
        in flight, after it, and its index (None: the workload survived)."""
        model = {}
        self.mount.start()
        for i, (change, fn) in enumerate(WORKLOAD):
            after = apply(model, change)
            try:
                fn(self)
            except OSError as e:
                if self.mount.proc.poll() is None:
                    try:
                        self.mount.proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        raise AssertionError(f"step {i} failed ({e}), daemon alive:\n"
                                             + self.mount.log()) from None
            if self.mount.proc.poll() is not None:
                # (its last words may not reach a log under the size limit)
                assert self.mount.proc.returncode == CRASH_EXIT, self.mount.log()
                self.mount.proc = None
                self.mount.log_file.close()
                subprocess.run(["fusermount3", "-u", "-z", str(self.mount.path)],
                               check=False)
                return model, after, i
            model = after
        self.mount.stop()
        return model, model, None

    def check(self, before, after, at):
        with Mount(self.store, self.base / "again", extra=self.extra) as m:
            jobs = ["a", "b"]
            got = {job: read_state(m.path, job) for job in jobs}
        want_before = expected(before, self.resume, jobs)
        want_after = expected(after, self.resume, jobs)
        assert got in (want_before, want_after), (
            f"crash in step {at}: got {got}\nacknowledged {want_before}\n"
            f"or with the step in flight {want_after}\n{self.mount.log()}\n{m.log()}")
        for key, body in self.store.objects(LZ).items():  # nothing half-written
            assert isinstance(json.loads(body), dict), key


def walk(tmp_path, disk, env_name, limit, resume):
    for n in range(1, limit):
        run = Run(tmp_path, disk, n, env_name, resume)
        try:
            before, after, at = run.workload()
            run.check(before, after, at)  # also after the whole workload
            if at is None:
                assert n > 1, "the daemon never crashed: build with -Dtest_hooks=true"
                assert run.padded  # the workload took every way a compaction has
                return n - 1
        finally:
            if run.mount.proc is not None:
                run.mount.kill()
            shutil.rmtree(run.cache, ignore_errors=True)  # room for the next
    raise AssertionError(f"the workload has more than {limit} journal points")


@pytest.fixture
def disk(tmp_path):
    """A 1 MiB tmpfs for the journals (ours: unmounted at the end)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path = tmp_path / "disk"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700",
                    "bookmarkfs-test-crash", str(path)], check=True, timeout=30)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False, timeout=30)


def test_every_crash_point_keeps_what_was_acknowledged(tmp_path, disk):
    points = walk(tmp_path, disk, "BOOKMARKFS_CRASH_AT", 200, "completed")
    print(f"{points} journal points")
    assert points > len(WORKLOAD)


def test_every_torn_write_keeps_what_was_acknowledged(tmp_path, disk):
    writes = walk(tmp_path, disk, "BOOKMARKFS_CRASH_TEAR", 200, "running")
    print(f"{writes} journal writes")
    assert writes > len(WORKLOAD) // 2
