"""The local journal (README, "The local journal"): closed changes that were not uploaded survive
kill -9 and come back at the next mount on top of what the store holds; an
upload compacts them away; a torn or corrupt tail loses only itself; a
journal belongs to one mount identity; shutdown names what is pending."""
import errno
import json
import os
import re
import shutil
import signal
import stat
import struct
import subprocess

import pytest

from tests.support.mount import LZ, Mount

HEAD = 12  # record head: u32 length + 8 bytes of checksum (fs/journal.h)


def jmount(store, tmp_path, name, cache, extra=()):
    return Mount(store, tmp_path / name, extra=[f"--cache-dir={cache}", *extra])


def journal_files(cache):
    return sorted(cache.glob("*/journal"))


def the_journal(cache):
    files = journal_files(cache)
    assert len(files) == 1, files
    return files[0]


def state(mnt, job="etl"):
    return json.loads((mnt / job / ".state.json").read_text())


def record_offsets(data: bytes):
    """Offsets of the records, walked by their length fields."""
    header = len(b"bookmarkfs-jnl1\n")
    assert data[:header] == b"bookmarkfs-jnl1\n"
    offs, off = [], header
    while off + HEAD <= len(data):
        (n,) = struct.unpack_from("<I", data, off)
        if off + HEAD + n > len(data):
            break
        offs.append(off)
        off += HEAD + n
    return offs


class OtherDataset:
    """The same store under another --dataset: another mount identity."""

    def __init__(self, store, dataset):
        self.store, self.kind, self.dataset = store, store.kind, dataset

    def args(self):
        return [f"--dataset={self.dataset}" if a.startswith("--dataset=") else a
                for a in self.store.args()]

    def env(self):
        return self.store.env()


def test_closed_writes_survive_kill_9(store, tmp_path):
    cache = tmp_path / "cache" / "nested"  # created by the daemon
    m = jmount(store, tmp_path, "m1", cache).start()
    job = m.path / "etl"
    job.mkdir()
    expect = {}
    for i in range(6):
        (job / f"k{i}").write_text(json.dumps({"n": i, "s": "é"}))
        expect[f"k{i}"] = {"n": i, "s": "é"}
    os.unlink(job / "k1")
    del expect["k1"]
    os.rename(job / "k2", job / "moved")
    expect["moved"] = expect.pop("k2")
    (job / ".k0.tmp").write_text("[1, 2]")  # write-then-rename over a key
    os.rename(job / ".k0.tmp", job / "k0")
    expect["k0"] = [1, 2]
    (m.path / "other").mkdir()
    (m.path / "other" / ".state.json").write_text('{"x": null, "y": [true]}')
    m.kill()
    assert store.objects(LZ) == {}  # nothing was uploaded: all from the journal

    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    jfile = the_journal(cache)
    assert stat.S_IMODE(jfile.parent.stat().st_mode) == 0o700
    for f in jfile.parent.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f

    with jmount(store, tmp_path, "m2", cache) as m2:
        assert {"etl", "other"} <= set(os.listdir(m2.path))
        got = state(m2.path)
        assert list(got.items()) == list(expect.items())  # values and order
        assert state(m2.path, "other") == {"x": None, "y": [True]}


def test_upload_compacts_and_nothing_is_replayed_twice(store, tmp_path):
    cache = tmp_path / "cache"
    m = jmount(store, tmp_path, "m1", cache).start()
    job = m.path / "etl"
    job.mkdir()
    for k in ("a", "b", "c"):
        (job / k).write_text(json.dumps(k))
    os.rename(job / "a", job / "z")
    jfile = the_journal(cache)
    before = jfile.stat().st_size
    (job / "completed").write_text("1")
    assert jfile.stat().st_size < before
    (job / "d").write_text("4")  # after the upload: only in the journal
    m.kill()

    m2 = jmount(store, tmp_path, "m2", cache).start()
    assert state(m2.path) == {"b": "b", "c": "c", "z": "a", "d": 4}
    assert re.search(r"job 'etl': replayed 1 change from the journal", m2.log()), m2.log()
    (m2.path / "etl" / "completed").write_text("1")
    m2.stop()
    assert "not uploaded" not in m2.log()

    with jmount(store, tmp_path, "m3", cache) as m3:
        assert state(m3.path) == {"b": "b", "c": "c", "z": "a", "d": 4}
    assert "replayed" not in m3.log()


def test_an_upload_drops_only_its_own_jobs_records(store, tmp_path):
    cache = tmp_path / "cache"
    m = jmount(store, tmp_path, "m1", cache).start()
    for name, value in (("a", 1), ("b", 2)):
        (m.path / name).mkdir()
        (m.path / name / "k").write_text(str(value))
    (m.path / "a" / "running").write_text("1")  # drops a's record, keeps b's
    jfile = the_journal(cache)
    kept = (jfile.stat().st_ino, jfile.stat().st_size)
    # a has no records left: uploading it again leaves the journal file as
    # it is (compaction would write a new file and rename it over, or cut it).
    (m.path / "a" / "k2").write_text("3")
    assert jfile.stat().st_size > kept[1]
    (m.path / "a" / "running").write_text("1")
    # that one had records to drop, the file's tail: cut off in place
    assert (jfile.stat().st_ino, jfile.stat().st_size) == kept
    (m.path / "a" / "completed").write_text("1")
    assert (jfile.stat().st_ino, jfile.stat().st_size) == kept
    m.kill()
    with jmount(store, tmp_path, "m2", cache) as m2:
        assert state(m2.path, "b") == {"k": 2}
        assert state(m2.path, "a") == {"k": 1, "k2": 3}
        assert re.search(r"job 'b': replayed 1 change from the journal", m2.log()), m2.log()
        assert "job 'a': replayed" not in m2.log()


def test_another_identity_does_not_see_the_journal(store, tmp_path):
    cache = tmp_path / "cache"
    m = jmount(store, tmp_path, "m1", cache).start()
    (m.path / "etl").mkdir()
    (m.path / "etl" / "k").write_text("1")
    m.kill()
    with Mount(OtherDataset(store, "another_dataset"), tmp_path / "m2",
               extra=[f"--cache-dir={cache}"]) as m2:
        assert "etl" not in os.listdir(m2.path)
        (m2.path / "etl").mkdir()
        assert state(m2.path) == {}
        (m2.path / "etl" / "mine").write_text("2")
    assert len(journal_files(cache)) == 2
    with jmount(store, tmp_path, "m3", cache) as m3:
        assert state(m3.path) == {"k": 1}


def test_a_second_mount_of_the_same_identity_is_refused(store, tmp_path):
    cache = tmp_path / "cache"
    with jmount(store, tmp_path, "m1", cache) as m1:
        (m1.path / "etl").mkdir()
        (m1.path / "etl" / "k").write_text("1")
        m2 = jmount(store, tmp_path, "m2", cache)
        with pytest.raises(RuntimeError, match="in use by another bookmarkfs mount"):
            m2.start()
        m2.log_file.close()
        assert state(m1.path) == {"k": 1}  # the first mount is unharmed


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_tail_loses_only_itself(store, tmp_path, damage):
    cache = tmp_path / "cache"
    m = jmount(store, tmp_path, "m1", cache).start()
    (m.path / "etl").mkdir()
    for i in (1, 2, 3):
        (m.path / "etl" / f"k{i}").write_text(json.dumps([i] * 10))
    m.kill()
    jfile = the_journal(cache)
    data = bytearray(jfile.read_bytes())
    offs = record_offsets(bytes(data))
    assert len(offs) == 4  # the job's base (the empty state), then its 3 changes
    last = offs[-1]
    if damage == "truncate":  # power lost in the middle of the append
        data = data[:last + (len(data) - last) // 2]
    else:
        data[last + HEAD + (len(data) - last - HEAD) // 2] ^= 0x04
    jfile.write_bytes(bytes(data))

    m2 = jmount(store, tmp_path, "m2", cache).start()
    assert state(m2.path) == {"k1": [1] * 10, "k2": [2] * 10}
    dropped = len(data) - last
    assert re.search(rf"dropped {dropped} bytes at offset {last} \(", m2.log()), m2.log()
    assert jfile.stat().st_size == last  # cut back to the valid prefix
    (m2.path / "etl" / "k4").write_text("4")  # and it goes on working
    m2.stop()
    assert "job 'etl' has 3 changes not uploaded" in m2.log()
    with jmount(store, tmp_path, "m3", cache) as m3:
        assert state(m3.path) == {"k1": [1] * 10, "k2": [2] * 10, "k4": 4}


def test_sigterm_with_pending_changes_warns_and_keeps_them(store, tmp_path):
    cache = tmp_path / "cache"
    m = jmount(store, tmp_path, "m1", cache).start()
    (m.path / "etl").mkdir()
    (m.path / "etl" / "k").write_text('{"v": 1}')
    (m.path / "etl" / "k2").write_text("2")
    (m.path / "up").mkdir()
    (m.path / "up" / "k").write_text("3")
    (m.path / "up" / "completed").write_text("1")
    m.proc.send_signal(signal.SIGTERM)  # ours, by PID
    assert m.proc.wait(timeout=30) == 0
    m.proc = None
    m.log_file.close()
    assert not os.path.ismount(m.path)
    log = m.log()
    assert ("job 'etl' has 2 changes not uploaded; kept in the journal for the next mount"
            in log), log
    assert "job 'up' has" not in log  # uploaded: nothing pending
    with jmount(store, tmp_path, "m2", cache) as m2:
        assert state(m2.path) == {"k": {"v": 1}, "k2": 2}
        assert state(m2.path, "up") == {"k": 3}


def test_fsync_commits_an_open_key_file(store, tmp_path):
    cache = tmp_path / "cache"
    m = jmount(store, tmp_path, "m1", cache).start()
    job = m.path / "etl"
    job.mkdir()
    bad = os.open(job / "bad", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(bad, b"{half")
    with pytest.raises(OSError) as e:
        os.fsync(bad)
    assert e.value.errno == errno.EINVAL
    os.close(bad)
    assert "bad" not in os.listdir(job)
    fd = os.open(job / "k", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, b'{"v": 1}')
    os.fsync(fd)
    m.kill()  # while the file is still open: fsync committed it
    try:
        os.close(fd)
    except OSError:
        pass  # the daemon is gone
    with jmount(store, tmp_path, "m2", cache) as m2:
        assert state(m2.path) == {"k": {"v": 1}}


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit(1)")
def test_a_failing_journal_fails_the_close_and_keeps_the_old_value(store, tmp_path):
    cache = tmp_path / "cache"
    m = jmount(store, tmp_path, "m1", cache).start()
    job = m.path / "etl"
    job.mkdir()
    (job / "keep").write_text("1")
    # A journal larger than the log, so the limit below leaves the log room.
    (job / "big").write_text(json.dumps("b" * 8000))
    jfile = the_journal(cache)
    size = jfile.stat().st_size
    assert size > len(m.log()) + 2000
    pid = m.proc.pid  # ours
    # Files may grow to 20 bytes past the journal: its next record is torn.
    subprocess.run(["prlimit", f"--pid={pid}", f"--fsize={size + 20}:"], check=True,
                   timeout=30)
    try:
        with pytest.raises(OSError) as e:
            (job / "keep").write_text(json.dumps("x" * 100))
        assert e.value.errno == errno.EIO
        with pytest.raises(OSError) as e:
            (job / "new").write_text("2")
        assert e.value.errno == errno.EIO
        assert (job / "keep").read_text() == "1\n"  # the old value stays
        assert "new" not in os.listdir(job)
        assert jfile.stat().st_size == size  # nothing of the torn record stays
    finally:
        subprocess.run(["prlimit", f"--pid={pid}", "--fsize=unlimited:"], check=True,
                       timeout=30)
    (job / "after").write_text("3")
    assert "cannot append a change of job 'etl'" in m.log()
    m.kill()
    with jmount(store, tmp_path, "m2", cache) as m2:
        assert state(m2.path) == {"keep": 1, "big": "b" * 8000, "after": 3}
