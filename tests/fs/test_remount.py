"""Unmount and mount again: jobs and their completed state come back;
--resume-from=running takes a newer running object."""
import json
import time

from tests.support.mount import DATASET, DLZ, DOMAIN, LZ, USER, Mount


def key(job, kind, epoch):
    return f"{DOMAIN}/{DATASET}/upload_date={epoch}/{USER}/others/{job}_{kind}.json"


def test_completed_state_comes_back_after_remount(mount):
    mnt = mount.path
    (mnt / "j1").mkdir()
    (mnt / "j1" / "DatasetId").write_text('{"epoch_time": 156234987}')
    (mnt / "j1" / "completed").write_text("1")
    (mnt / "j1" / "later").write_text("1")  # after complete: only in running if updated
    (mnt / "j1" / "running").write_text("1")
    mount.stop()
    mount.start()
    assert "j1" in [p.name for p in mnt.iterdir()]
    assert json.loads((mnt / "j1" / ".state.json").read_text()) == {
        "DatasetId": {"epoch_time": 156234987}}


def test_resume_from_running_takes_a_newer_running_object(store, tmp_path):
    store.put(LZ, key("r", "completed", 1700000000), b'{"from": "completed"}', mtime=1700000000)
    store.put(DLZ, key("r", "running", 1700000100), b'{"from": "running"}', mtime=1700000100)
    with Mount(store, tmp_path / "m1") as m:
        assert json.loads((m.path / "r" / ".state.json").read_text()) == {"from": "completed"}
    with Mount(store, tmp_path / "m2", extra=["--resume-from=running"]) as m:
        assert json.loads((m.path / "r" / ".state.json").read_text()) == {"from": "running"}
        loaded = json.loads((m.path / "r" / ".status").read_text())["loaded"]
        assert loaded["bucket"] == DLZ and loaded["kind"] == "running"


def test_newest_candidate_wins_across_buckets(store, tmp_path):
    # greatest upload_date wins, numerically; then LastModified
    store.put(DLZ, key("n", "completed", 999), b'{"v": 1}', mtime=1000)
    store.put(LZ, key("n", "completed", 1000), b'{"v": 2}', mtime=900)
    store.put(LZ, key("n", "completed", 50), b'{"v": 0}', mtime=2000)
    store.put(LZ, f"{DOMAIN}/{DATASET}/upload_date=2000/{USER}/others/xn_completed.json", b'{"v": 9}')
    store.put(LZ, f"{DOMAIN}/{DATASET}/upload_date=2000/{USER}/others/n_completed.json.bak", b'{"v": 9}')
    store.put(LZ, f"{DOMAIN}/{DATASET}2/upload_date=2000/{USER}/others/n_completed.json", b'{"v": 9}')
    store.put(LZ, f"{DOMAIN}/{DATASET}/{USER}/others/n_completed.json", b'{"v": 9}')
    with Mount(store, tmp_path / "m") as m:
        assert json.loads((m.path / "n" / ".state.json").read_text()) == {"v": 2}
    # same upload_date: the later LastModified wins
    store.put(DLZ, key("t", "completed", 5000), b'{"v": "old"}', mtime=1000)
    time.sleep(1.1)
    store.put(LZ, key("t", "completed", 5000), b'{"v": "new"}', mtime=2000)
    with Mount(store, tmp_path / "m3") as m:
        assert json.loads((m.path / "t" / ".state.json").read_text()) == {"v": "new"}


def test_a_newest_object_that_is_not_a_json_object_is_eio(store, tmp_path):
    import errno
    import pytest
    store.put(LZ, key("bad", "completed", 1), b'{"ok": 1}')
    store.put(LZ, key("bad", "completed", 2), b'[1, 2]')
    store.put(LZ, key("bad2", "completed", 2), b'not json at all')
    with Mount(store, tmp_path / "m") as m:
        for job in ("bad", "bad2"):
            with pytest.raises(OSError) as e:
                (m.path / job / ".state.json").read_text()
            assert e.value.errno == errno.EIO
            with pytest.raises(OSError) as e:
                (m.path / job).mkdir()
            assert e.value.errno == errno.EIO
        assert key("bad", "completed", 2) in m.log()
        assert (m.path / "fine").mkdir() is None  # other jobs are unaffected
