"""What close() and fsync() acknowledge survives: a key created empty is in
the state and the journal when its close returns; a remount brings every job
with local changes back exactly as the mount had it, whatever --resume-from
and whichever upload came last; a journal that filled its disk shrinks again
at the next upload."""
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import time

import pytest

from tests.support.mount import DATASET, DLZ, DOMAIN, LZ, USER, DirStore, Mount


STARTED = []


def kill_started():
    while STARTED:
        m = STARTED.pop()
        if m.proc is not None:
            m.kill()


@pytest.fixture(autouse=True)
def no_mount_left():
    """A failing test leaves no daemon of its own behind."""
    yield
    kill_started()


def jmount(store, tmp_path, name, cache, extra=()):
    m = Mount(store, tmp_path / name, extra=[f"--cache-dir={cache}", *extra])
    STARTED.append(m)
    return m


def state(mnt, job="etl"):
    return json.loads((mnt / job / ".state.json").read_text())


def the_journal(cache):
    files = sorted(cache.glob("*/journal"))
    assert len(files) == 1, files
    return files[0]


# ---- a key created empty


def create_touch(path):
    subprocess.run(["touch", str(path)], check=True, timeout=30)


def create_python(path):
    open(path, "w").close()


def create_rdonly(path):
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT, 0o644))


def create_shell_dup(path):
    """As a shell's redirection does: the descriptor opened is closed while
    a duplicate stays open (RELEASE comes only with the last close)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    keep = os.dup(fd)
    os.close(fd)
    return keep


CREATES = {"touch": create_touch, "python": create_python, "rdonly": create_rdonly,
           "dup": create_shell_dup}


def test_an_empty_create_is_in_the_state_and_journal_when_close_returns(store, tmp_path):
    cache = tmp_path / "cache"
    m = jmount(store, tmp_path, "m1", cache).start()
    job = m.path / "etl"
    job.mkdir()
    held = []
    for name, create in CREATES.items():
        fd = create(job / name)
        if fd is not None:
            held.append(fd)
        # .state.json right after close: the key is part of the state.
        assert name in state(m.path), name
    # fsync of a new empty key journals it, while the file is still open.
    fd = os.open(job / "synced", os.O_WRONLY | os.O_CREAT, 0o644)
    os.fsync(fd)
    held.append(fd)
    m.kill()  # right after the closes; the held descriptors never release
    for fd in held:
        try:
            os.close(fd)
        except OSError:
            pass  # the daemon is gone
    with jmount(store, tmp_path, "m2", cache) as m2:
        assert state(m2.path) == {name: None for name in [*CREATES, "synced"]}


def test_a_new_key_that_gets_a_value_meanwhile_keeps_it(store, tmp_path):
    cache = tmp_path / "cache"
    with jmount(store, tmp_path, "m1", cache) as m:
        job = m.path / "etl"
        job.mkdir()
        fd = os.open(job / "k", os.O_WRONLY | os.O_CREAT, 0o644)
        (job / "k").write_text("5")  # another writer, before the first close
        os.close(fd)
        assert state(m.path) == {"k": 5}


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit(1)")
def test_an_empty_create_the_journal_cannot_take_fails_its_close(store, tmp_path):
    cache = tmp_path / "cache"
    m = jmount(store, tmp_path, "m1", cache).start()
    job = m.path / "etl"
    job.mkdir()
    (job / "big").write_text(json.dumps("b" * 8000))  # the journal outgrows the log
    jfile = the_journal(cache)
    size = jfile.stat().st_size
    assert size > len(m.log()) + 2000
    pid = m.proc.pid  # ours
    subprocess.run(["prlimit", f"--pid={pid}", f"--fsize={size + 20}:"], check=True,
                   timeout=30)
    try:
        for name, create in CREATES.items():
            if name == "dup":
                continue  # its close error goes where a shell puts it: nowhere
            if name == "touch":
                # touch closes the descriptor it opened before it sets the
                # times (on a duplicate): those find no key and it exits 1.
                with pytest.raises(subprocess.CalledProcessError):
                    create(job / name)
            else:
                with pytest.raises(OSError) as e:
                    create(job / name)
                assert e.value.errno == errno.EIO, name
            assert name not in os.listdir(job), name
            assert name not in state(m.path)
        fd = os.open(job / "synced", os.O_WRONLY | os.O_CREAT, 0o644)
        with pytest.raises(OSError) as e:
            os.fsync(fd)
        assert e.value.errno == errno.EIO
        os.close(fd)
        assert "synced" not in os.listdir(job)
        for change in (lambda: os.unlink(job / "big"),
                       lambda: os.rename(job / "big", job / "moved")):
            with pytest.raises(OSError) as e:
                change()
            assert e.value.errno == errno.EIO
        assert state(m.path) == {"big": "b" * 8000}
        assert jfile.stat().st_size == size
    finally:
        subprocess.run(["prlimit", f"--pid={pid}", "--fsize=unlimited:"], check=True,
                       timeout=30)
    assert "the journal cannot take the new key" in m.log()
    m.kill()
    with jmount(store, tmp_path, "m2", cache) as m2:
        assert state(m2.path) == {"big": "b" * 8000}


@pytest.mark.parametrize("extra", [[], ["--fuse-loop"]], ids=["loop", "fuse-loop"])
def test_create_close_unlink_never_is_ebusy(store, tmp_path, extra):
    """vim's probe on a key's name (4913 itself is a scratch name): create
    it, close it, remove it; 300 times."""
    cache = tmp_path / "cache"
    m = jmount(store, tmp_path, "m1", cache, extra=extra).start()
    job = m.path / "etl"
    job.mkdir()
    (job / "keep").write_text("1")
    for _ in range(300):
        fd = os.open(job / "probe", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.close(fd)
        os.unlink(job / "probe")  # EBUSY would raise here
    assert state(m.path) == {"keep": 1}
    assert sorted(os.listdir(job)) == [".state.json", "completed", "keep", "running"]
    m.stop()
    with jmount(store, tmp_path, "m2", cache) as m2:
        assert state(m2.path) == {"keep": 1}


# ---- a journal that filled its disk


@pytest.fixture
def small_disk(tmp_path):
    """A 160 KiB tmpfs for the cache dir (ours: unmounted at the end)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path = tmp_path / "small"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k,mode=0700",
                    "bookmarkfs-test-cache", str(path)], check=True, timeout=30)
    try:
        yield path
    finally:
        kill_started()  # a daemon that holds the journal keeps the tmpfs busy
        subprocess.run(["umount", str(path)], check=False, timeout=30)


def fill_journal(job):
    """Key writes until the journal's disk is full; returns what landed."""
    landed = {}
    for i in range(1000):
        value = {"i": i, "pad": "x" * 2000}
        try:
            (job / f"k{i}").write_text(json.dumps(value))
        except OSError as e:
            assert e.errno == errno.ENOSPC  # the journal's disk is full
            return landed
        landed[f"k{i}"] = value
    raise AssertionError("the disk never filled")


def test_a_journal_that_filled_its_disk_shrinks_at_the_next_upload(store, tmp_path,
                                                                    small_disk):
    m = jmount(store, tmp_path, "m1", small_disk).start()
    filled_and_uploaded(m, small_disk)
    m.kill()
    with jmount(store, tmp_path, "m2", small_disk) as m2:
        assert state(m2.path) == m.landed
        (m2.path / "etl" / "x").write_text("3")  # room to write at once


def filled_and_uploaded(m, small_disk):
    job = m.path / "etl"
    job.mkdir()
    landed = m.landed = fill_journal(job)
    assert len(landed) > 10
    jfile = the_journal(small_disk)
    full = jfile.stat().st_size
    assert state(m.path) == landed  # nothing refused is in the state
    (job / "completed").write_text("1")  # uploads; its compaction frees the disk
    assert jfile.stat().st_size < full // 10
    (job / "after").write_text('"works"')
    landed["after"] = "works"
    again = fill_journal(m.path / "etl")  # and the disk can fill and empty again
    landed.update(again)
    (job / "completed").write_text("1")
    (job / "last").write_text("2")
    landed["last"] = 2


def test_a_full_journal_shrinks_while_another_jobs_changes_stay(store, tmp_path,
                                                                small_disk):
    """The other job's records are kept (nothing to copy them to on a full
    disk): the filling job's records, the journal's tail, are cut off."""
    m = jmount(store, tmp_path, "m1", small_disk).start()
    (m.path / "other").mkdir()
    (m.path / "other" / "o1").write_text("1")
    (m.path / "other" / "o2").write_text('"two"')
    job = m.path / "etl"
    job.mkdir()
    landed = fill_journal(job)
    jfile = the_journal(small_disk)
    full = jfile.stat().st_size
    (job / "completed").write_text("1")
    assert jfile.stat().st_size < full // 10
    (job / "after").write_text('"works"')
    landed["after"] = "works"
    (m.path / "other" / "o3").write_text("3")
    m.kill()
    with jmount(store, tmp_path, "m2", small_disk) as m2:
        assert state(m2.path) == landed
        assert state(m2.path, "other") == {"o1": 1, "o2": "two", "o3": 3}
    assert not any("other_" in k for k in store.objects(LZ))  # never uploaded


def test_a_full_journal_shrinks_with_another_jobs_changes_in_between(store, tmp_path,
                                                                     small_disk):
    """Two jobs write in turn until the disk is full: the journal has no
    room to copy the other job's records, so the uploaded job's records
    are dropped in place and their pages given back."""
    m = jmount(store, tmp_path, "m1", small_disk).start()
    job, other = m.path / "etl", m.path / "other"
    job.mkdir()
    other.mkdir()
    landed, theirs = {}, {}
    for i in range(1000):
        try:
            value = {"i": i, "pad": "x" * 2000}
            (job / f"k{i}").write_text(json.dumps(value))
            landed[f"k{i}"] = value
            if i % 3 == 0:
                (other / f"o{i}").write_text(str(i))
                theirs[f"o{i}"] = i
        except OSError as e:
            assert e.errno == errno.ENOSPC
            break
    else:
        raise AssertionError("the disk never filled")
    jfile = the_journal(small_disk)
    used = jfile.stat().st_blocks
    (job / "completed").write_text("1")
    assert jfile.stat().st_blocks < used - 64  # 32 KiB of pages given back, or more
    assert "dropped in place" in m.log()
    for i in range(5):  # room again, for both jobs
        (job / f"after{i}").write_text(json.dumps("y" * 2000))
        landed[f"after{i}"] = "y" * 2000
    (other / "more").write_text("1")
    theirs["more"] = 1
    m.kill()
    m2 = jmount(store, tmp_path, "m2", small_disk).start()
    assert state(m2.path) == landed
    assert state(m2.path, "other") == theirs
    (m2.path / "other" / "completed").write_text("1")  # room to copy: pads go
    (m2.path / "etl" / "completed").write_text("1")
    assert jfile.stat().st_size == 16  # the header alone
    m2.stop()


def fill_disk(path):
    """Our file takes every free page of the tmpfs."""
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC


def test_an_upload_the_next_mount_would_not_load_back_keeps_its_base_on_a_full_disk(
        store, tmp_path, small_disk):
    """The store holds a completed object of a later upload_date: a running
    upload with --resume-from=running would not be loaded back, so the
    journal keeps it as the job's base; with no room to copy the other
    job's records, the base is appended and the job's old records padded."""
    later = int(time.time()) + 1000
    theirs = f"{DOMAIN}/{DATASET}/upload_date={later}/{USER}/others/etl_completed.json"
    store.put(LZ, theirs, b'{"x": 0}')
    extra = ["--resume-from=running"]
    m = jmount(store, tmp_path, "m1", small_disk, extra=extra).start()
    job = m.path / "etl"
    assert state(m.path) == {"x": 0}
    write(job, "a", 1)
    (m.path / "other").mkdir()
    write(m.path / "other", "o", 1)  # after etl's records in the journal
    filler = small_disk / "filler"
    fill_disk(filler)
    try:
        (job / "running").write_text("1")
        running = json.loads((job / ".status").read_text())["last_upload"]["running"]
        data = the_journal(small_disk).read_bytes()
        assert b"bfs-pad!" in data  # etl's old records
        assert running["key"].encode() in data  # its new base
    finally:
        filler.unlink()
    m.kill()
    with jmount(store, tmp_path, "m2", small_disk, extra=extra) as m2:
        assert state(m2.path) == {"x": 0, "a": 1}
        assert state(m2.path, "other") == {"o": 1}
        assert (f"job 'etl': {2} keys from {store.location(LZ, running['key'])}"
                in m2.log()), m2.log()


# ---- a remount brings back exactly what the mount had


def write(job, key, value):
    (job / key).write_text(json.dumps(value))


def upload(job, kind):
    (job / kind).write_text("1")
    return json.loads((job / ".status").read_text())["last_upload"][kind]


def end_mount(m, how):
    if how == "unmount":
        m.stop()
    elif how == "sigterm":
        m.proc.send_signal(signal.SIGTERM)  # ours, by PID
        assert m.proc.wait(timeout=30) == 0
        m.proc = None
        m.log_file.close()
    else:
        m.kill()


def test_a_running_commit_in_the_same_second_as_a_completed_one_comes_back(store, tmp_path):
    """--resume-from=running ranks a completed object of the same second
    first; the journal keeps what that ranking would not load back."""
    cache = tmp_path / "cache"
    extra = ["--resume-from=running"]
    m = jmount(store, tmp_path, "m1", cache, extra=extra).start()
    tied = None
    for attempt in range(5):  # until both uploads fall in one second
        job = m.path / f"j{attempt}"
        job.mkdir()
        write(job, "k", 1)
        done = upload(job, "completed")
        write(job, "k", 2)
        running = upload(job, "running")
        if done["epoch"] == running["epoch"]:
            tied = job.name
            break
    assert tied, "no two uploads in one second"
    keys = [k for k in store.objects(LZ) if f"/{tied}_" in k]
    assert sorted(keys) == sorted([done["key"], running["key"]])  # one upload_date
    m.stop()
    for how in ("unmount", "kill"):
        m2 = jmount(store, tmp_path, f"m2{how}", cache, extra=extra).start()
        assert state(m2.path, tied) == {"k": 2}, m2.log()
        end_mount(m2, how)
    m3 = jmount(store, tmp_path, "m3", cache).start()  # completed: its own choice
    assert state(m3.path, tied) == {"k": 1}
    write(m3.path / tied, "c", 3)  # a local change on top of what it started from
    m3.kill()
    for extra in ([], ["--resume-from=running"]):
        with jmount(store, tmp_path, "m4", cache, extra=extra) as m4:
            assert state(m4.path, tied) == {"k": 1, "c": 3}


SEQUENCES = {
    # the issue's: a completed, a running, then a change
    "running-last": ([("a", 1), ("b", 1), "completed", ("a", 2), "running", ("b", 2)],
                     {"a": 2, "b": 2}),
    "completed-last": ([("a", 1), "running", ("a", 2), ("c", 3), "completed", ("b", 1)],
                       {"a": 2, "c": 3, "b": 1}),
    "replace-then-rename": ([("a", 1), "completed", {"x": 1, "y": 2}, "running",
                             ("x", "renamed-to-z"), ("y", None)],
                            {"z": 1}),
}


def run_sequence(job, steps):
    for step in steps:
        if isinstance(step, str):
            upload(job, step)
        elif isinstance(step, dict):
            (job / ".state.json").write_text(json.dumps(step))
        elif step[1] == "renamed-to-z":
            os.rename(job / step[0], job / "z")
        elif step[1] is None:
            os.unlink(job / step[0])
        else:
            write(job, *step)


@pytest.mark.parametrize("resume", ["completed", "running"])
@pytest.mark.parametrize("how", ["unmount", "sigterm", "kill"])
def test_a_job_with_local_changes_comes_back_exactly(store, tmp_path, resume, how):
    cache = tmp_path / "cache"
    extra = [f"--resume-from={resume}"]
    m = jmount(store, tmp_path, "m1", cache, extra=extra).start()
    for name, (steps, _) in SEQUENCES.items():
        (m.path / name).mkdir()
        run_sequence(m.path / name, steps)
    had = {name: state(m.path, name) for name in SEQUENCES}
    assert had == {name: want for name, (_, want) in SEQUENCES.items()}
    end_mount(m, how)
    with jmount(store, tmp_path, "m2", cache, extra=extra) as m2:
        assert {name: state(m2.path, name) for name in SEQUENCES} == had


def test_without_local_changes_resume_from_decides(store, tmp_path):
    cache = tmp_path / "cache"
    m = jmount(store, tmp_path, "m1", cache).start()
    job = m.path / "etl"
    job.mkdir()
    write(job, "a", 1)
    upload(job, "completed")
    time.sleep(1.1)  # the running upload a second later: no tie
    write(job, "a", 2)
    upload(job, "running")
    m.stop()
    assert "not uploaded" not in m.log()
    with jmount(store, tmp_path, "m2", cache) as m2:
        assert state(m2.path) == {"a": 1}
    with jmount(store, tmp_path, "m3", cache, extra=["--resume-from=running"]) as m3:
        assert state(m3.path) == {"a": 2}
    assert not any(the_journal(cache).read_bytes()[16:])  # nothing kept for it


def test_a_newer_object_from_elsewhere_does_not_replace_local_changes(store, tmp_path):
    cache = tmp_path / "cache"
    m = jmount(store, tmp_path, "m1", cache).start()
    (m.path / "etl").mkdir()
    write(m.path / "etl", "a", 1)
    done = upload(m.path / "etl", "completed")
    write(m.path / "etl", "b", 2)
    (m.path / "new").mkdir()
    write(m.path / "new", "n", 1)
    m.kill()
    later = done["epoch"] + 100
    theirs = done["key"].replace(f"upload_date={done['epoch']}", f"upload_date={later}")
    store.put(LZ, theirs, b'{"from": "elsewhere"}')
    store.put(LZ, theirs.replace("/etl_", "/new_"), b'{"from": "elsewhere"}')
    with jmount(store, tmp_path, "m2", cache) as m2:
        assert state(m2.path) == {"a": 1, "b": 2}
        assert state(m2.path, "new") == {"n": 1}
        log = m2.log()
        assert re.search(rf"job 'etl': the store has {re.escape(store.location(LZ, theirs))}, "
                         rf"newer than {re.escape(store.location(LZ, done['key']))}", log), log
        assert f"job 'new': the store has {store.location(LZ, '')}" in log, log


def delete_object(store, bucket, key):
    if store.kind == "dir":
        (store.root / bucket / key).unlink()
    else:
        store.server.client.delete_object(Bucket=bucket, Key=key)


@pytest.mark.parametrize("where", ["moved-to-dlz", "gone"])
def test_the_object_local_changes_stand_on_is_read_from_where_it_is(store, tmp_path,
                                                                    where):
    """Amorphic moves ingested objects from the landing zone to the DLZ;
    an object deleted from both is an error in the log, and the changes
    are replayed on the newest stored object."""
    cache = tmp_path / "cache"
    m = jmount(store, tmp_path, "m1", cache).start()
    (m.path / "etl").mkdir()
    write(m.path / "etl", "a", 1)
    done = upload(m.path / "etl", "completed")
    write(m.path / "etl", "b", 2)
    m.kill()
    body = store.get(LZ, done["key"])
    delete_object(store, LZ, done["key"])
    if where == "moved-to-dlz":
        store.put(DLZ, done["key"], body)
    else:
        older = done["key"].replace(f"upload_date={done['epoch']}",
                                    f"upload_date={done['epoch'] - 100}")
        store.put(LZ, older, b'{"older": true}')
    with jmount(store, tmp_path, "m2", cache) as m2:
        if where == "moved-to-dlz":
            assert state(m2.path) == {"a": 1, "b": 2}
        else:
            assert state(m2.path) == {"older": True, "b": 2}
            assert re.search(rf"{re.escape(store.location(LZ, done['key']))}, the state the "
                             r"journal's changes stand on, is gone from the store; they "
                             rf"are replayed on {re.escape(store.location(LZ, older))} instead",
                             m2.log()), m2.log()


def record(payload: dict) -> bytes:
    """One journal record as fs/journal.h lays it out."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    head = struct.pack("<I", len(body))
    return head + hashlib.sha256(head + body).digest()[:8] + body


def test_a_journal_from_before_bases_replays_on_the_newest_object(store, tmp_path):
    cache = tmp_path / "cache"
    with jmount(store, tmp_path, "m1", cache):
        pass  # creates the journal of this identity
    store.put(LZ, f"{DOMAIN}/{DATASET}/upload_date=1700000000/{USER}/others/etl_completed.json",
              b'{"a": 1}')
    jfile = the_journal(cache)
    jfile.write_bytes(b"bookmarkfs-jnl1\n" + record(
        {"seq": 1, "op": "set", "job": "etl", "key": "k", "value": [1]}) + record(
        {"seq": 2, "op": "remove", "job": "etl", "key": "a"}))
    with jmount(store, tmp_path, "m2", cache) as m2:
        assert state(m2.path) == {"k": [1]}
        write(m2.path / "etl", "c", 3)
        m2.kill()
    with jmount(store, tmp_path, "m3", cache) as m3:
        assert state(m3.path) == {"k": [1], "c": 3}


# ---- an upload that overwrites the object its changes stand on

CRASH_EXIT = 86  # fs/journal.c's crash hook (test builds)


def test_an_upload_over_the_object_its_changes_stand_on_survives_a_crash(tmp_path):
    """Two running uploads in one second go to one object key: the second
    overwrites the object the changes between them stand on. A crash after
    that upload and before its compaction must not replay those changes
    (a rename is not idempotent) on the overwritten object. Walks every
    journal point with the test build's crash hook (BOOKMARKFS_CRASH_AT)."""
    steps = [  # (the state after the step, the step)
        ({}, lambda job: job.mkdir()),
        ({"x": 1}, lambda job: write(job, "x", 1)),
        ({"x": 1}, lambda job: (job / "running").write_text("1")),
        ({"y": 1}, lambda job: os.rename(job / "x", job / "y")),
        ({"y": 1, "x": 5}, lambda job: write(job, "x", 5)),
        ({"y": 1, "x": 5}, lambda job: (job / "running").write_text("1")),
    ]
    extra = ["--resume-from=running"]  # where a job without local changes starts
    exercised = 0
    for n in range(1, 60):
        for attempt in range(3):  # again when the two uploads fell in two seconds
            base = tmp_path / f"n{n}-{attempt}"
            store = DirStore(base / "store")
            cache = base / "cache"
            env = store.env()
            env["BOOKMARKFS_CRASH_AT"] = str(n)
            m = Mount(store, base / "m1", extra=[f"--cache-dir={cache}", *extra], env=env)
            STARTED.append(m)
            m.start()
            before, at = None, None
            for i, (after, fn) in enumerate(steps):
                try:
                    fn(m.path / "a")
                except OSError:
                    try:  # the daemon is exiting
                        m.proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        raise AssertionError(f"step {i} failed, daemon alive") from None
                if m.proc.poll() is not None:
                    at = i
                    break
                before = after
            if at is None:
                m.stop()
            else:
                assert m.proc.returncode == CRASH_EXIT, m.log()
                m.proc = None
                m.log_file.close()
                subprocess.run(["fusermount3", "-u", "-z", str(m.path)], check=False)
            running = [k for k in store.objects(LZ) if k.endswith("/a_running.json")]
            if (at is None or at == len(steps) - 1) and len(running) > 1:
                continue  # not one object key: try this crash point again
            break
        with jmount(store, base, "m2", cache, extra=extra) as m2:
            # (a job with no keys yet is not kept)
            got = state(m2.path, "a") if (m2.path / "a").exists() else {}
        if at is None:
            assert got == steps[-1][0], m2.log()
            assert exercised, "no crash in the second upload"
            return
        if at == len(steps) - 1 and len(running) == 1:
            exercised += 1
        assert got in (before, steps[at][0]), (
            f"crash in step {at}: got {got}, acknowledged {before}\n{m.log()}\n{m2.log()}")
    raise AssertionError("the workload has more journal points than walked")
