"""The request loop (fs/loop.c). One thread reads requests and serves them
itself; before work that may wait (the store, the disk, a large parse) it
hands the device to another thread. So an upload or a job load held up in
the store holds up no key write elsewhere. The proxy's "hold" action keeps
a request in the proxy until the test lets it go, which makes "while the
upload is in flight" exact rather than a matter of timing."""
import json
import os
import threading
import time

import pytest

from tests.support.faultproxy import FaultProxy
from tests.support.faults import EndpointStore, compact, last_upload, sh_write
from tests.support.mount import LZ, Mount


def in_thread(fn):
    box = {}

    def go():
        try:
            box["result"] = fn()
        except BaseException as e:  # reported by the test that reads box
            box["error"] = e

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t, box


def result(box):
    if "error" in box:
        raise box["error"]
    return box["result"]


def hundred_key_writes(job):
    def go():
        for i in range(100):
            (job / f"k{i}").write_text(json.dumps({"i": i}))
        return json.loads((job / ".state.json").read_text()), sorted(os.listdir(job))
    return go


def check_hundred_keys(got):
    state, names = got
    assert state == {f"k{i}": {"i": i} for i in range(100)}
    assert names == sorted([".state.json", "running", "completed"] +
                           [f"k{i}" for i in range(100)])


def writes_meanwhile(proxy, held, job):
    """With a store request held in the proxy (the thread `held` waits on
    it), 100 key writes to another job complete."""
    assert proxy.held.wait(30), "the request never reached the store"
    writes, box = in_thread(hundred_key_writes(job))
    writes.join(30)
    assert not writes.is_alive(), "key writes waited for the held request"
    assert held.is_alive(), "the request was not held"
    check_hundred_keys(result(box))


@pytest.fixture
def proxied(s3server, tmp_path):
    """A mount whose store requests pass the fault proxy; time-outs far
    beyond the test's, so that a held request is never retried."""
    with FaultProxy(s3server.endpoint) as proxy:
        store = EndpointStore(s3server, proxy.endpoint, retries=1, retry_time=60000,
                              timeout=60000)
        with Mount(store, tmp_path / "mnt") as m:
            yield proxy, store, m
        proxy.release()


def test_an_upload_held_in_the_store_holds_up_no_key_write(proxied):
    proxy, store, m = proxied
    a, b = m.path / "a", m.path / "b"
    a.mkdir()
    b.mkdir()
    (a / "k").write_text('"v"')
    proxy.script(["hold"])  # the next store request: the PUT of a's upload
    upload, upload_box = in_thread(lambda: sh_write(a / "running"))
    try:
        writes_meanwhile(proxy, upload, b)
        assert json.loads((a / "k").read_text()) == "v"  # its own job too
    finally:
        proxy.release()
        upload.join(60)
    r = result(upload_box)
    assert r.returncode == 0, (r.stderr, m.log())
    assert store.get(LZ, last_upload(a)["key"]) == compact({"k": "v"})
    assert [meth for meth, _, act in proxy.log if act == "hold"] == ["PUT"]


def test_a_job_load_held_in_the_store_holds_up_no_key_write(proxied):
    proxy, store, m = proxied
    b = m.path / "b"
    b.mkdir()
    proxy.script(["hold"])  # the next store request: listing job c's history
    look, look_box = in_thread(lambda: os.path.exists(m.path / "c"))
    try:
        writes_meanwhile(proxy, look, b)
    finally:
        proxy.release()
        look.join(60)
    assert result(look_box) is False  # c has no history: no such job
    assert [meth for meth, _, act in proxy.log if act == "hold"] == ["GET"]


@pytest.mark.parametrize("extra", [["--fuse-loop"], ["--spin-us=0"], ["--spin-us=1000"],
                                   ["-o", "max_threads=1"], ["-o", "clone_fd"]],
                         ids=["fuse-loop", "no-spin", "long-spin", "one-thread", "clone_fd"])
def test_every_loop_setting_serves_the_same_tree(store, tmp_path, extra):
    with Mount(store, tmp_path / "mnt", extra=extra) as m:
        job = m.path / "job"
        job.mkdir()
        check_hundred_keys(hundred_key_writes(job)())
        r = sh_write(job / "running")
        assert r.returncode == 0, (r.stderr, m.log())
        assert store.get(LZ, last_upload(job)["key"]) == compact(
            {f"k{i}": {"i": i} for i in range(100)})


def test_more_held_uploads_than_threads_hold_up_no_key_write(s3server, tmp_path):
    """Each upload held in the store keeps its thread; with more of them
    than -o max_threads, the next key write still finds a thread to serve
    it (and every held upload goes on once the store answers)."""
    held_uploads = 5
    with FaultProxy(s3server.endpoint) as proxy:
        store = EndpointStore(s3server, proxy.endpoint, retries=1, retry_time=60000,
                              timeout=60000)
        with Mount(store, tmp_path / "mnt", extra=["-o", "max_threads=2"]) as m:
            jobs = [m.path / f"up{i}" for i in range(held_uploads)]
            for i, j in enumerate(jobs):
                j.mkdir()
                (j / "k").write_text(str(i))
            b = m.path / "b"
            b.mkdir()
            before = len(os.listdir(f"/proc/{m.proc.pid}/task"))
            proxy.script(["hold"] * held_uploads)  # the uploads' PUTs
            uploads = [in_thread(lambda j=j: sh_write(j / "running")) for j in jobs]
            try:
                def holds():
                    return sum(1 for _, _, a in proxy.log if a == "hold")
                for _ in range(300):  # every upload reaches the store
                    if holds() == held_uploads:
                        break
                    time.sleep(0.1)
                assert holds() == held_uploads, (proxy.log, m.log())
                writes, box = in_thread(hundred_key_writes(b))
                writes.join(30)
                assert not writes.is_alive(), "key writes waited for the held uploads"
                assert all(t.is_alive() for t, _ in uploads), "an upload was not held"
                check_hundred_keys(result(box))
            finally:
                proxy.release()
                for t, _ in uploads:
                    t.join(60)
            for i, (j, (_, ubox)) in enumerate(zip(jobs, uploads)):
                r = result(ubox)
                assert r.returncode == 0, (r.stderr, m.log())
                assert store.get(LZ, last_upload(j)["key"]) == compact({"k": i})
            # the threads beyond max_threads end with their requests: the
            # loop keeps max_threads, beside the main thread
            tasks = f"/proc/{m.proc.pid}/task"
            for _ in range(100):  # the last may still be on its way out
                if len(os.listdir(tasks)) <= before + 2:
                    break
                time.sleep(0.1)
            assert len(os.listdir(tasks)) <= before + 2, (before, os.listdir(tasks))
