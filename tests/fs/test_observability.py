"""Observability and Amorphic reload datasets: the root's .status, the info
line per upload, and --success-trigger."""
import errno
import json
import os
import re

import pytest

from tests.support.mount import DATASET, DLZ, DOMAIN, LZ, USER, Mount


def status(mnt):
    with open(mnt / ".status") as f:
        return json.load(f)


def error_lines(log):
    return [line for line in log.splitlines() if ": error: " in line]


def test_status_reports_store_jobs_uploads_and_the_last_error(store, mount):
    mnt = mount.path
    st = status(mnt)
    assert re.fullmatch(r"\d+\.\d+\.\d+", st["version"])
    assert st["store"] == {"kind": store.kind, "lz_bucket": LZ, "dlz_bucket": DLZ,
                           "domain": DOMAIN, "dataset": DATASET, "user": USER,
                           "file_type": "others", "resume_from": "completed"}
    assert st["jobs_loaded"] == 0 and st["last_error"] is None
    assert ".status" in os.listdir(mnt)
    for job in ("a", "b"):
        (mnt / job).mkdir()
        (mnt / job / "k").write_text("1")
        (mnt / job / "running").write_text("1")
    body = store.get(LZ, json.loads((mnt / "a" / ".status").read_text())["last_upload"]["running"]["key"])
    st = status(mnt)
    assert sorted(st["jobs"]) == ["a", "b"] and st["jobs_loaded"] == 2
    assert st["uploads"]["done"] == 2 and st["uploads"]["failed"] == 0
    assert st["uploads"]["bytes"] == 2 * len(body) and st["uploads"]["retries"] == 0
    repair = store.break_bucket(LZ)
    errors_before = error_lines(mount.log())
    fd = os.open(mnt / "a" / "completed", os.O_WRONLY)
    try:
        with pytest.raises(OSError):
            os.write(fd, b"1")  # one write, one upload that fails
    finally:
        os.close(fd)
        repair()
    st = status(mnt)
    assert st["uploads"]["failed"] == 1 and st["uploads"]["done"] == 2
    last = st["last_error"]
    assert "job 'a'" in last["message"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", last["time"])
    # logged once, where the store says the object is, with the store's error
    (line,) = error_lines(mount.log())[len(errors_before):]
    assert "job 'a': completed upload to " + store.location(LZ, "") in line, line
    if store.kind == "dir":
        # the dir store's own words: the file it could not write, and why
        assert "s3://" not in mount.log()
        assert f"{store.root}/{LZ}/" in last["store_message"], last
        assert os.strerror(errno.ENOTDIR) in last["store_message"], last
        assert last["code"] == "" and last["request_id"] == "", last
    else:
        # s3rver's error documents carry no request id; RGW's do
        assert last["code"] == "NoSuchBucket" and "NoSuchBucket" in line, last
        assert f"(RequestId {last['request_id'] or '-'})" in line, line
    assert last["store_message"] in line and last["store_message"] in last["message"]
    # read-only, not a job
    for fn, args in [(open, (mnt / ".status", "w")), (os.unlink, (mnt / ".status",)),
                     (os.mkdir, (mnt / ".status",)), (os.truncate, (mnt / ".status", 0))]:
        with pytest.raises(OSError) as e:
            fn(*args)
        assert e.value.errno in (errno.EACCES, errno.EPERM, errno.EEXIST)
    with pytest.raises(OSError) as e:
        open(mnt / ".status" / "k")
    assert e.value.errno == errno.ENOTDIR


def test_one_info_line_per_upload(mount):
    mnt = mount.path
    (mnt / "j").mkdir()
    (mnt / "j" / "k").write_text('"v"')
    (mnt / "j" / "running").write_text("1")
    (mnt / "j" / "completed").write_text("1")
    lines = [line for line in mount.log().splitlines() if "uploaded" in line]
    assert len(lines) == 2, mount.log()
    for line, kind in zip(lines, ("running", "completed")):
        key = json.loads((mnt / "j" / ".status").read_text())["last_upload"][kind]["key"]
        m = re.search(r"info: job 'j': (\w+) uploaded (\S+) \((\d+) bytes, (\d+) ms, "
                      r"(\d+) attempts\)", line)
        assert m, line
        assert m.group(1) == kind and m.group(2) == mount.store.location(LZ, key)
        assert int(m.group(3)) == len(b'{"k":"v"}') and int(m.group(5)) == 1


def test_success_trigger_beside_each_completed_upload(store, tmp_path):
    with Mount(store, tmp_path / "mnt", extra=["--success-trigger"]) as m:
        (m.path / "j").mkdir()
        (m.path / "j" / "k").write_text("1")
        (m.path / "j" / "running").write_text("1")
        assert not [k for k in store.objects(LZ) if k.endswith("/_SUCCESS")]
        (m.path / "j" / "completed").write_text("1")
        key = json.loads((m.path / "j" / ".status").read_text())["last_upload"]["completed"]["key"]
    objects = store.objects(LZ)
    trigger = key.rsplit("/", 1)[0] + "/_SUCCESS"
    assert objects[trigger] == b"" and objects[key] == b'{"k":1}'
    assert [k for k in objects if k.endswith("/_SUCCESS")] == [trigger]


def test_no_success_trigger_by_default(store, mount):
    (mount.path / "j").mkdir()
    (mount.path / "j" / "completed").write_text("1")
    assert not [k for k in store.objects(LZ) if k.endswith("_SUCCESS")]
    assert len(store.objects(LZ)) == 1
