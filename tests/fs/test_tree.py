"""The rules of the tree (README, "The tree" and "Semantics"), one test each,
errors included, each with proof that the old value and the state are intact
afterwards."""
import ctypes
import errno
import hashlib
import json
import os
import subprocess
import threading

import pytest

from tests.support.mount import LZ


def state(job):
    with open(job / ".state.json") as f:
        return json.load(f)


def write(path, text, mode="w"):
    with open(path, mode) as f:
        f.write(text)


def expect_errno(code, fn, *args):
    with pytest.raises(OSError) as e:
        fn(*args)
    assert e.value.errno == code, e.value


@pytest.fixture
def job(mnt):
    j = mnt / "job"
    j.mkdir()
    write(j / "k", '{ "a" : [1, 2.5, "x"] }')
    return j


def test_key_reads_as_compact_json_plus_newline_with_exact_size(job):
    for name, text in [("n", " 42 "), ("s", '"caf\u00e9 \u2603"'), ("o", '{"b": {"c": null}}'),
                       ("l", "[ true , false ]")]:
        write(job / name, text)
        expected = json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False) + "\n"
        data = (job / name).read_bytes()
        assert data == expected.encode()
        assert os.stat(job / name).st_size == len(data)


def test_invalid_json_fails_at_close_with_einval_and_keeps_the_old_value(mount, job):
    before = state(job)
    f = open(job / "k", "w")
    f.write("{not json")
    with pytest.raises(OSError) as e:
        f.close()
    assert e.value.errno == errno.EINVAL
    assert state(job) == before
    assert "job 'job' key 'k'" in mount.log()
    # two values are not one value either
    with pytest.raises(OSError):
        write(job / "k", "1 2")
    assert state(job) == before
    # a new key that fails never exists
    with pytest.raises(OSError):
        write(job / "newbad", "[1,")
    assert not (job / "newbad").exists()
    assert state(job) == before


def test_new_key_closed_empty_holds_null(job):
    open(job / "empty", "w").close()
    assert (job / "empty").read_text() == "null\n"
    subprocess.run(["touch", str(job / "touched")], check=True)
    assert state(job)["touched"] is None and state(job)["empty"] is None


def test_offsets_truncate_and_append(job):
    write(job / "arr", "[1,2,3]")
    fd = os.open(job / "arr", os.O_WRONLY)
    os.pwrite(fd, b"9", 1)
    os.close(fd)
    assert json.loads((job / "arr").read_text()) == [9, 2, 3]
    write(job / "num", "12345")
    os.truncate(job / "num", 3)
    assert (job / "num").read_text() == "123\n"
    expect_errno(errno.EINVAL, os.truncate, job / "arr", 3)  # "[9," is not JSON
    assert json.loads((job / "arr").read_text()) == [9, 2, 3]
    fd = os.open(job / "num", os.O_RDWR | os.O_APPEND)
    os.write(fd, b"  ")
    assert os.pread(fd, 100, 0) == b"123\n  "
    os.close(fd)
    fd = os.open(job / "built", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.write(fd, b"[1,")
    os.pwrite(fd, b"2]", 0)  # O_APPEND: the offset is ignored
    os.close(fd)
    assert json.loads((job / "built").read_text()) == [1, 2]
    expect_errno(errno.EINVAL, write, job / "num", "4", "a")  # "123\n4" is not one value
    assert (job / "num").read_text() == "123\n"
    fd = os.open(job / "arr", os.O_WRONLY)
    os.ftruncate(fd, 0)
    os.write(fd, b'"fresh"')
    os.close(fd)
    assert (job / "arr").read_text() == '"fresh"\n'


def test_rename_within_a_job_and_over_a_key(job):
    write(job / "a", "1")
    write(job / "b", "2")
    os.rename(job / "a", job / "c")
    assert not (job / "a").exists() and (job / "c").read_text() == "1\n"
    # rename over an existing key: readers see the old or the new value, never nothing
    seen, stop = set(), threading.Event()

    def reader():
        while not stop.is_set():
            try:
                seen.add((job / "b").read_text())
            except OSError as e:
                seen.add(f"error {e.errno}")
    t = threading.Thread(target=reader)
    t.start()
    for i in range(30):
        write(job / "tmpkey", str(100 + i))
        os.rename(job / "tmpkey", job / "b")
    stop.set()
    t.join()
    # Never missing (ENOENT), never a value that was not written. A reader
    # whose open races the replacement may get ESTALE: its name resolved to
    # the node the rename just replaced (a limit of libfuse's path API,
    # documented in the README).
    assert f"error {errno.ENOENT}" not in seen, seen
    assert seen - {f"error {errno.ESTALE}"} <= {"2\n"} | {f"{100 + i}\n" for i in range(30)}, seen
    assert (job / "b").read_text() == "129\n"
    assert state(job)["b"] == 129 and "tmpkey" not in state(job)
    expect_errno(errno.ENOENT, os.rename, job / "missing", job / "x")


def test_write_then_rename_of_a_dot_file(job):
    write(job / ".k.tmp", '{"v": 2}')
    os.rename(job / ".k.tmp", job / "k")
    assert state(job)["k"] == {"v": 2}
    assert not (job / ".k.tmp").exists()
    before = state(job)
    write(job / ".k.tmp", "{broken")
    expect_errno(errno.EINVAL, os.rename, job / ".k.tmp", job / "k")
    assert state(job) == before
    assert (job / ".k.tmp").read_text() == "{broken"  # the scratch file stays


def test_dot_files_are_local_scratch_never_state_nor_uploaded(store, job):
    write(job / ".swap", "any bytes \x00 not json")
    assert (job / ".swap").read_text() == "any bytes \x00 not json"
    assert ".swap" in os.listdir(job)
    assert ".swap" not in state(job)
    write(job / "running", "1")
    bodies = [json.loads(b) for b in store.objects(LZ).values()]
    assert bodies and all(".swap" not in b for b in bodies)
    os.unlink(job / ".swap")
    assert not (job / ".swap").exists()


def test_reserved_names_removed_change_nothing_and_cannot_be_renamed(store, job):
    """Removing running, completed or .state.json (rm -rf, tar -x over them)
    changes nothing but their presence, until a create brings them back."""
    before = state(job)
    for name in ("running", "completed", ".state.json"):
        os.unlink(job / name)
        assert not (job / name).exists() and name not in os.listdir(job)
        expect_errno(errno.ENOENT, os.unlink, job / name)
    assert store.objects(LZ) == {}
    for name in ("running", "completed", ".state.json"):
        os.close(os.open(job / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
        assert (job / name).exists()
    assert store.objects(LZ) == {}  # a create is not an upload
    expect_errno(errno.EPERM, os.rename, job / "running", job / "r2")
    expect_errno(errno.EPERM, os.rename, job / "completed", job / "k2")
    expect_errno(errno.EPERM, os.rename, job / "k", job / "running")
    assert state(job) == before and (job / "k").exists()


def test_state_json_accepts_only_an_object(job):
    before = state(job)
    for bad in ("[1, 2]", '"str"', "nope", ""):
        f = open(job / ".state.json", "w")
        f.write(bad)
        if bad:
            with pytest.raises(OSError) as e:
                f.close()
            assert e.value.errno == errno.EINVAL
        else:
            f.close()  # nothing written: nothing replaced
        assert state(job) == before


def test_control_files_upload_on_write_truncate_and_touch(store, job):
    for i, action in enumerate(["write", "truncate", "touch"]):
        write(job / "v", str(i))
        if action == "write":
            write(job / "running", "anything")
        elif action == "truncate":
            os.truncate(job / "running", 0)
        else:
            subprocess.run(["touch", str(job / "running")], check=True)
        info = json.loads((job / ".status").read_text())["last_upload"]["running"]
        body = store.objects(LZ)[info["key"]]
        assert json.loads(body)["v"] == i
        assert info["bucket"] == LZ and info["bytes"] == len(body)
        assert info["etag"] == hashlib.md5(body).hexdigest()
    assert json.loads((job / ".status").read_text())["last_upload"]["completed"] == {}
    assert json.loads((job / ".status").read_text())["loaded"] == {}


def test_a_failed_upload_is_a_write_error_and_changes_nothing(store, mnt, job):
    before = state(job)
    repair = store.break_bucket(LZ)
    try:
        r = subprocess.run(["bash", "-c", "echo 1 > job/running"], cwd=mnt,
                           capture_output=True, text=True)
        assert r.returncode != 0
        assert "error" in r.stderr.lower()
        assert state(job) == before
        assert json.loads((job / ".status").read_text())["last_upload"]["running"] == {}
    finally:
        repair()
    r = subprocess.run(["bash", "-c", "echo 1 > job/running"], cwd=mnt)
    assert r.returncode == 0
    assert json.loads((job / ".status").read_text())["last_upload"]["running"]["bytes"] > 0


def test_rmdir_forgets_an_empty_job_and_refuses_one_with_keys(job, mnt):
    expect_errno(errno.ENOTEMPTY, os.rmdir, job)
    assert state(job)["k"]
    (mnt / "empty").mkdir()
    os.rmdir(mnt / "empty")
    assert "empty" not in os.listdir(mnt)
    expect_errno(errno.ENOENT, os.stat, mnt / "empty")
    # a job with history in the store comes back after rmdir
    (mnt / "hist").mkdir()
    write(mnt / "hist" / "x", "1")
    write(mnt / "hist" / "completed", "1")
    os.unlink(mnt / "hist" / "x")
    os.rmdir(mnt / "hist")
    assert state(mnt / "hist") == {"x": 1}


def test_enoent_enametoolong_exdev_and_eperm(job, mnt):
    expect_errno(errno.ENOENT, open, job / "missing")
    expect_errno(errno.ENOENT, os.unlink, job / "missing")
    expect_errno(errno.ENOENT, os.stat, mnt / "nojob")
    expect_errno(errno.ENOENT, open, mnt / "nojob" / "k")
    write(job / ("n" * 255), "1")
    assert state(job)["n" * 255] == 1
    expect_errno(errno.ENAMETOOLONG, write, job / ("n" * 256), "1")
    expect_errno(errno.ENAMETOOLONG, os.mkdir, mnt / ("j" * 256))
    (mnt / "other").mkdir()
    expect_errno(errno.EXDEV, os.rename, job / "k", mnt / "other" / "k")
    r = subprocess.run(["mv", str(job / "k"), str(mnt / "other" / "k")])  # copy + unlink
    assert r.returncode == 0
    assert "k" not in state(job) and state(mnt / "other")["k"] == {"a": [1, 2.5, "x"]}
    expect_errno(errno.EPERM, os.mkdir, job / "sub")
    expect_errno(errno.EPERM, write, mnt / "file-at-root", "1")
    assert state(mnt / "other") == {"k": {"a": [1, 2.5, "x"]}}


def test_names_removed_by_a_state_replace_are_gone_at_once(job):
    write(job / "a", "1")
    assert (job / "a").read_text() == "1\n"  # the kernel now knows the name
    write(job / ".state.json", '{"b": 2}')
    expect_errno(errno.ENOENT, os.stat, job / "a")
    expect_errno(errno.ENOENT, open, job / "a")
    write(job / "a", "3")  # O_CREAT through a name the kernel may still hold
    assert state(job) == {"b": 2, "a": 3}
    # The same through a shell, and without O_CREAT, for a name the kernel
    # has just looked up.
    write(job / "d", "4")
    assert (job / "d").read_text() == "4\n"
    write(job / ".state.json", '{"b": 2, "a": 3}')
    expect_errno(errno.ENOENT, os.open, job / "d", os.O_WRONLY)
    subprocess.run(["sh", "-c", 'echo 5 > "$1"', "sh", str(job / "d")], check=True)
    assert state(job) == {"b": 2, "a": 3, "d": 5}
    os.rename(job / "a", job / "c")
    expect_errno(errno.ENOENT, os.stat, job / "a")
    assert state(job) == {"b": 2, "c": 3, "d": 5}


def test_a_large_listing_spans_many_reads_each_name_once_in_order(job):
    # 20,000 keys take dozens of getdents calls; each continues where the
    # last stopped.
    names = [f"dataset_{i:05d}.table" for i in range(20000)]
    write(job / ".state.json", json.dumps({n: i for i, n in enumerate(names)}))
    got = os.listdir(job)
    assert got == ["running", "completed", ".state.json"] + names
    r = subprocess.run(["ls", "-f", str(job)], check=True, stdout=subprocess.PIPE, text=True)
    assert r.stdout.split("\n")[:5] == [".", "..", "running", "completed", ".state.json"]
    assert r.stdout.split() == [".", "..", "running", "completed", ".state.json"] + names


def test_a_listing_is_the_directory_as_it_was_opened_and_fresh_at_a_rewind(job):
    write(job / ".state.json", json.dumps({f"k{i}": i for i in range(3000)}))
    it = os.scandir(job)
    first = [next(it).name for _ in range(10)]
    # Changes while the listing is read do not tear it: it is the directory
    # as it was at its start, each name once.
    write(job / ".state.json", json.dumps({"other": 1}))
    rest = [e.name for e in it]
    it.close()
    seen = first + rest
    assert seen == ["running", "completed", ".state.json"] + [f"k{i}" for i in range(3000)]
    # A new listing (or a rewind: a read from offset 0) is fresh.
    assert os.listdir(job) == ["running", "completed", ".state.json", "other"]
    fd = os.open(job, os.O_RDONLY | os.O_DIRECTORY)
    try:
        first_pass = os.listdir(fd)  # reads from the start, then rewinds
        write(job / "added", "1")
        assert os.listdir(fd) == first_pass + ["added"]
    finally:
        os.close(fd)


class _Dirent(ctypes.Structure):
    _fields_ = [("d_ino", ctypes.c_uint64), ("d_off", ctypes.c_int64),
                ("d_reclen", ctypes.c_ushort), ("d_type", ctypes.c_ubyte),
                ("d_name", ctypes.c_char * 256)]


def test_seekdir_to_another_streams_telldir_continues_there(job):
    for i in range(50):
        write(job / f"k{i:02d}", str(i))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.opendir.restype = ctypes.c_void_p
    libc.opendir.argtypes = [ctypes.c_char_p]
    libc.readdir.restype = ctypes.POINTER(_Dirent)
    libc.readdir.argtypes = [ctypes.c_void_p]
    libc.telldir.restype = ctypes.c_long
    libc.telldir.argtypes = [ctypes.c_void_p]
    libc.seekdir.argtypes = [ctypes.c_void_p, ctypes.c_long]
    libc.closedir.argtypes = [ctypes.c_void_p]
    a = libc.opendir(bytes(job))
    b = libc.opendir(bytes(job))
    assert a and b
    try:
        for _ in range(7):
            assert libc.readdir(a)
        pos = libc.telldir(a)
        want = libc.readdir(a).contents.d_name
        libc.seekdir(b, pos)  # b has read nothing yet
        got = libc.readdir(b)
        assert got and got.contents.d_name == want
    finally:
        libc.closedir(a)
        libc.closedir(b)
