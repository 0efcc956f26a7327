"""History at any scale (README "History at any scale"): after one listing
a first access to a job and `ls MNT` cost what is new, not the history
(counted in requests on S3, through the fault proxy); a fresh mount pays
one full listing per bucket; what other writers add, and what Amorphic
moves from the LZ to the DLZ bucket under an older upload_date, is seen;
and the index never picks another newest candidate than a full listing
would (computed here from a boto3 listing, ties included)."""
import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support import history as H
from tests.support.faultproxy import FaultProxy
from tests.support.faults import EndpointStore
from tests.support.mount import DLZ, LZ, DirStore, Mount, S3Store
from tests.support.s3rver import S3rver

N_BIG = 10_000  # the history of the request counts
HISTORY_TTL = 2.1  # seconds a listing of .history is kept (fs/ops.c)
# Its runs of keys that sort by upload_date: "<dataset>/upload_date=" in
# both buckets and "<dataset>/schema=v1/upload_date=" in the DLZ.
RUNS = 3


def lists(log):
    return [p for m, p, _ in log if m == "GET" and "list-type=2" in p]


def gets(log):
    return [p for m, p, _ in log if m == "GET" and "list-type=2" not in p]


def loaded(job_dir):
    info = json.loads((job_dir / ".status").read_text())["loaded"]
    return (info["bucket"], info["key"]) if info else None


def status(mnt):
    return json.loads((mnt / ".status").read_text())


def put_all(store, objects, mtime=None):
    with ThreadPoolExecutor(10) as pool:
        list(pool.map(lambda o: store.put(*o, mtime=mtime(o) if mtime else None), objects))


def dir_mtime(o):
    """Directory store: LastModified from the upload date, so that the same
    run in two places ties on it too."""
    m = H.DATE_RE.match(next((s for s in o[1].split("/") if s.startswith("upload_date=")),
                             "")) if "upload_date=" in o[1] else None
    return int(m.group(1)) + 5 if m else 1_500_000_000


@pytest.fixture(scope="module")
def big_s3():
    """An s3rver of its own holding N_BIG objects (put once, with boto3,
    for the tests of this module), so the shared server stays small."""
    with S3rver() as server:
        store = S3Store(server)
        objects = H.generate(N_BIG)
        put_all(store, objects)
        yield server, objects


def listed_s3(server):
    return H.list_s3(server.client, DLZ) + H.list_s3(server.client, LZ)


def test_first_access_and_ls_after_one_listing_cost_one_small_listing_per_bucket(
        big_s3, tmp_path):
    """Also for the job whose only object is the oldest of all 10,000."""
    server, objects = big_s3
    n_lz = sum(1 for b, _, _ in objects if b == LZ)
    n_dlz = len(objects) - n_lz
    assert len(objects) >= N_BIG
    truth = listed_s3(server)
    with FaultProxy(server.endpoint) as proxy:
        store = EndpointStore(server, proxy.endpoint, retries=3, retry_time=20000,
                              timeout=20000, clear=False)
        with Mount(store, tmp_path / "mnt") as m:
            proxy.reset_log()
            names = set(os.listdir(m.path))
            assert H.jobs_in(truth) <= names
            # a fresh mount: one full listing per bucket, page by page
            full = lists(proxy.log)
            assert len(full) == math.ceil(n_dlz / 1000) + math.ceil(n_lz / 1000)
            assert not any("start-after=" in p for p in full)
            assert gets(proxy.log) == []
            for job in ["job-07", H.FAR_JOB, "job-49"]:
                proxy.reset_log()
                state = json.loads((m.path / job / ".state.json").read_text())
                want = H.newest(truth, job)
                assert loaded(m.path / job) == want
                assert state == json.loads(server.client.get_object(
                    Bucket=want[0], Key=want[1])["Body"].read())
                # one listing per run of time-ordered keys (the LZ's, the
                # DLZ's and the DLZ partition's), each after the newest key
                # seen there: one page, as nothing is new; and one GET of
                # the newest object
                assert len(lists(proxy.log)) == RUNS, proxy.log
                assert all("start-after=" in p for p in lists(proxy.log))
                assert len(gets(proxy.log)) == 1, proxy.log
            proxy.reset_log()
            assert set(os.listdir(m.path)) == names
            assert len(lists(proxy.log)) == RUNS and gets(proxy.log) == []
            idx = status(m.path)["index"]
            assert idx["full_listings"] == 2


def check_all_jobs(mnt, truth, kinds):
    for job in sorted(H.jobs_in(truth)):
        want = H.newest(truth, job, kinds)
        got = loaded(mnt / job) if want else None
        assert got == want, (job, kinds)


def listed(store):
    if isinstance(store, DirStore):
        return H.list_dir(store.root, DLZ) + H.list_dir(store.root, LZ)
    return listed_s3(store.server)


@pytest.fixture(params=["dir", "s3"])
def hstore(request, tmp_path):
    """A store of this test's own: on S3 an s3rver that ends with the test
    (deleting a history object by object would cost more than the test)."""
    if request.param == "dir":
        yield DirStore(tmp_path / "store")
        return
    with S3rver() as server:
        yield S3Store(server)


def test_the_index_picks_what_a_full_listing_picks_after_incremental_updates(
        hstore, tmp_path):
    """The index is built by one listing of a history with decoys and ties,
    and then brought up to date batch by batch (new runs, runs under older
    upload_dates within the relist window, the same run in both buckets,
    decoys); each job's newest candidate is then the one the rules pick over
    a listing of everything by another client, as is a fresh mount's; for
    --resume-from=running too (where runs still running are newer). On the
    directory store LastModified follows
    the upload date, so the same run in two places ties on it as well."""
    store = hstore
    mtime = dir_mtime if isinstance(store, DirStore) else None
    put_all(store, H.generate(1200, n_jobs=20), mtime=mtime)
    now = int(time.time())
    batches = [H.generate(120, n_jobs=20, start=now - 600 + b * 200, step=1, lz_share=0.5)[1:]
               for b in range(3)]
    # runs still running, newer than their job's last completed one: the
    # newest candidate of --resume-from=running only
    for b, batch in enumerate(batches):
        batch += [(LZ if j % 2 else DLZ, H.key_for(f"job-{j:02d}", now - 600 + b * 200 + 150,
                                                    "running"), b'{"still":"running"}')
                  for j in range(b, 20, 3)]

    def other(name, extra=()):
        return Mount(store, tmp_path / name,
                     extra=[f"--cache-dir={tmp_path / (name + '-cache')}", *extra])

    with Mount(store, tmp_path / "inc") as inc, \
            other("inc-r", ["--resume-from=running"]) as inc_r:
        os.listdir(inc.path)
        os.listdir(inc_r.path)
        for batch in batches:
            put_all(store, batch, mtime=mtime)
            os.listdir(inc.path)
            os.listdir(inc_r.path)
        truth = listed(store)
        check_all_jobs(inc.path, truth, ("completed",))
        check_all_jobs(inc_r.path, truth, ("completed", "running"))
        assert status(inc.path)["index"]["full_listings"] == 2
    with other("fresh") as fresh:
        check_all_jobs(fresh.path, truth, ("completed",))
        assert status(fresh.path)["index"]["full_listings"] == 2


def second_mount(store, tmp_path, name):
    """Another mount of the same dataset (its own journal)."""
    return Mount(store, tmp_path / name, extra=[f"--cache-dir={tmp_path / (name + '-cache')}"])


def test_objects_other_writers_upload_meanwhile_are_seen(store, tmp_path):
    """Another mount's upload and a Python job's object (boto3 on S3, a
    plain file on the directory store) appear in `ls MNT` and load."""
    with Mount(store, tmp_path / "a") as a:
        os.mkdir(a.path / "mine")
        (a.path / "mine" / "k").write_text("1")
        (a.path / "mine" / "completed").write_text("1")
        assert sorted(os.listdir(a.path)) == [".status", "mine"]
        with second_mount(store, tmp_path, "b") as b:
            os.mkdir(b.path / "theirs")
            (b.path / "theirs" / "k").write_text('"b"')
            (b.path / "theirs" / "completed").write_text("1")
        epoch = int(time.time())
        store.put(LZ, H.key_for("python-job", epoch, "completed"), b'{"from":"boto3"}')
        assert sorted(os.listdir(a.path)) == [".status", "mine", "python-job", "theirs"]
        assert json.loads((a.path / "theirs" / ".state.json").read_text()) == {"k": "b"}
        assert json.loads((a.path / "python-job" / ".state.json").read_text()) == {
            "from": "boto3"}
        # a newer run of a job this mount listed but never loaded
        store.put(LZ, H.key_for("python-job2", epoch - 100, "completed"), b'{"v":1}')
        os.listdir(a.path)
        store.put(DLZ, H.key_for("python-job2", epoch + 1, "completed"), b'{"v":2}')
        assert json.loads((a.path / "python-job2" / ".state.json").read_text()) == {"v": 2}


def test_amorphic_moves_to_the_dlz_under_an_older_upload_date_are_seen(store, tmp_path):
    """Amorphic moves an upload from the LZ to the DLZ bucket keeping its
    upload_date, which is older than the newest one the DLZ already has:
    it sorts before the mark a listing after the newest key starts from.
    Within the relist window it is found by the listing again of recent
    upload dates; an LZ object the index knows that is gone when it is read
    makes it list everything again."""
    now = int(time.time())
    store.put(DLZ, H.key_for("busy", now - 10, "completed"), b'{"busy":1}')
    store.put(LZ, H.key_for("old-run", now - 50_000, "completed"), b'{"where":"lz"}')
    with Mount(store, tmp_path / "m") as m, \
            Mount(store, tmp_path / "w0", extra=["--relist-window=0",
                                                 f"--cache-dir={tmp_path / 'w0-cache'}"]) as w0:
        assert sorted(os.listdir(m.path)) == [".status", "busy", "old-run"]
        assert sorted(os.listdir(w0.path)) == [".status", "busy", "old-run"]
        # moved within the window, never seen in the LZ (and without the
        # window, not found)
        store.put(DLZ, H.key_for("moved", now - 300, "completed"), b'{"where":"dlz"}')
        assert "moved" in os.listdir(m.path)
        assert "moved" not in os.listdir(w0.path)
        assert json.loads((m.path / "moved" / ".state.json").read_text()) == {"where": "dlz"}
        # moved long after its upload: the LZ object the index holds is gone
        key = H.key_for("old-run", now - 50_000, "completed")
        if isinstance(store, DirStore):
            os.unlink(store.root / LZ / key)
        else:
            store.server.client.delete_object(Bucket=LZ, Key=key)
        store.put(DLZ, key, b'{"where":"dlz"}')
        assert json.loads((m.path / "old-run" / ".state.json").read_text()) == {"where": "dlz"}
        assert loaded(m.path / "old-run") == (DLZ, key)
        assert status(m.path)["index"]["full_listings"] == 4  # 2 at first, 2 after the move
        assert "is gone since it was listed" in m.log()


def sh(cmd, *args):
    import subprocess
    return subprocess.run(["sh", "-c", cmd, "sh", *map(str, args)], capture_output=True,
                          text=True, timeout=60)


def test_history_lists_every_stored_state_in_upload_order_and_rewind_is_a_copy(
        store, tmp_path):
    """MNT/<job>/.history/: one read-only file per stored object of the job
    in either bucket, named <epoch>-<kind>.json (with the bucket where both
    hold one), in upload order; cat gives the body, stat the size and
    LastModified. It is not listed in the job and lists nothing until it is
    read. cp of an entry onto .state.json makes it the state, and the next
    commit uploads it as a new object; nothing stored is removed."""
    e = int(time.time()) - 5000
    stored = [
        (DLZ, H.key_for("j", e, "running"), b'{"run":1,"at":"running"}'),
        (DLZ, H.key_for("j", e, "completed"), b'{"run":1}'),
        (DLZ, H.key_for("j", e + 100, "completed"), b'{"run":2}'),
        (LZ, H.key_for("j", e + 100, "completed"), b'{"run":2,"copy":"lz"}'),
        (LZ, H.key_for("j", e + 200, "completed"), b'{"run":3}'),
        (LZ, H.key_for("jj", e + 300, "completed"), b'{"other":"job"}'),
        (LZ, H.key_for("j", e + 300, "completed") + ".bak", b'{"decoy":1}'),
    ]
    for bucket, key, body in stored:
        store.put(bucket, key, body)
    names = [f"{e}-completed.json", f"{e}-running.json",
             f"{e + 100}-completed.{DLZ}.json", f"{e + 100}-completed.{LZ}.json",
             f"{e + 200}-completed.json"]
    with Mount(store, tmp_path / "m") as m:
        job = m.path / "j"
        assert json.loads((job / ".state.json").read_text()) == {"run": 3}
        assert ".history" not in os.listdir(job)
        assert status(m.path)["index"]["history_listings"] == 0
        hist = job / ".history"
        # ls sorts them in upload order (one second holds a run's running
        # and completed: completed sorts first); readdir gives upload order
        r = sh('LC_ALL=C ls "$1"', hist)
        assert r.returncode == 0 and r.stdout.split() == names, r.stdout
        readdir = os.listdir(hist)
        assert readdir == [f"{e}-running.json", f"{e}-completed.json"] + names[2:]
        lms = {(b, k): lm for b, k, lm in listed(store)}
        by_name = dict(zip(names, [stored[1], stored[0], stored[2], stored[3], stored[4]]))
        for name, (bucket, key, body) in by_name.items():
            assert (hist / name).read_bytes() == body
            st = os.stat(hist / name)
            assert st.st_size == len(body)
            assert int(st.st_mtime) == lms[(bucket, key)] // 1000
            assert st.st_mode & 0o777 == 0o444
        assert os.stat(hist).st_mode & 0o777 == 0o555
        before = status(m.path)["index"]["history_listings"]
        assert 1 <= before <= 3
        # read-only, for the owner too
        for cmd in ['echo 1 > "$1/new.json"', 'echo 1 > "$1/$2"', 'rm "$1/$2"',
                    'touch "$1/$2"', 'mv "$1/$2" "$1/x.json"', 'rmdir "$1"',
                    'ln -s "$2" "$1/l.json"', 'ln "$1/$2" "$1/h.json"', 'mkfifo "$1/f"']:
            r = sh(cmd, hist, names[0])
            assert r.returncode != 0 and "Read-only file system" in r.stderr, (cmd, r.stderr)
        # rewind: to the first completed state, then commit
        r = sh('cp "$1/$2" "$3/.state.json"', hist, names[0], job)
        assert r.returncode == 0, r.stderr
        assert json.loads((job / ".state.json").read_text()) == {"run": 1}
        assert (job / "run").read_text() == "1\n"
        (job / "completed").write_text("1")
        up = json.loads((job / ".status").read_text())["last_upload"]["completed"]
        assert store.get(LZ, up["key"]) == b'{"run":1}'
        for bucket, key, body in stored:
            assert store.get(bucket, key) == body  # history is never rewritten
        time.sleep(HISTORY_TTL)
        after = os.listdir(hist)
        assert after[:len(readdir)] == readdir and len(after) == len(readdir) + 1
        assert (hist / after[-1]).read_bytes() == b'{"run":1}'


def test_an_object_listed_but_not_readable_costs_one_full_listing_not_one_per_access(
        s3rver_server, tmp_path):
    """The newest object is listed but its GET answers NoSuchKey (the fault
    proxy): the first access lists everything again once and fails with
    EIO; the next access fails at once, without another full listing."""
    import errno
    server = s3rver_server
    with FaultProxy(server.endpoint) as proxy:
        store = EndpointStore(server, proxy.endpoint)
        store.put(LZ, H.key_for("ghost", 1_700_000_000, "completed"), b'{"v":1}')
        with Mount(store, tmp_path / "m") as m:
            assert "ghost" in os.listdir(m.path)
            # refresh (one listing per bucket), GET; full listing per bucket,
            # refresh, GET
            proxy.script(["pass", "pass", "404", "pass", "pass", "pass", "pass", "404"])
            with pytest.raises(OSError) as e:
                os.stat(m.path / "ghost")
            assert e.value.errno == errno.EIO
            proxy.script(["pass", "pass", "404"])
            with pytest.raises(OSError) as e:
                os.stat(m.path / "ghost")
            assert e.value.errno == errno.EIO
            assert status(m.path)["index"]["full_listings"] == 4
            assert proxy.actions().count("404") == 3


def test_a_store_failure_in_an_incremental_listing_is_an_error_never_a_stale_answer(
        tmp_path):
    """The listing after the marks fails on its second page (the first one,
    already taken in, holds nothing of the job): the first access of the job
    fails with EIO instead of loading the older object the index held, and
    once the store answers again it loads the newest one."""
    import errno
    with S3rver() as server:
        _incremental_listing_fails(server, tmp_path, errno)


def _incremental_listing_fails(server, tmp_path, errno):
    now = int(time.time())
    # upload dates within the relist window, so that the listing after the
    # marks is two pages: the newer object of "late" sorts last
    filler = [(LZ, H.key_for(f"fill-{i:04d}", now - 600, "running"), b"{}")
              for i in range(1001)]
    put_all(S3Store(server), filler)
    old = H.key_for("late", now - 700, "completed")
    new = H.key_for("late", now - 5, "completed")
    with FaultProxy(server.endpoint) as proxy:
        # one attempt, and time for a page of 1,000 keys on a busy machine:
        # the fault this test injects is the proxy's, never a time-out
        store = EndpointStore(server, proxy.endpoint, retries=1, timeout=15000,
                              clear=False)
        store.put(LZ, old, b'{"v":"old"}')
        with Mount(store, tmp_path / "m") as m:
            assert "late" in os.listdir(m.path), m.log()
            store.put(LZ, new, b'{"v":"new"}')
            # (the listing after the marks is the only one with a second
            # page from here on)
            second_page = lambda meth, p: (meth == "GET" and "list-type=2" in p and  # noqa
                                           "continuation-token=" in p)
            proxy.match(second_page, ["500"])  # one attempt: --retries=1
            with pytest.raises(OSError) as e:
                os.stat(m.path / "late")
            assert e.value.errno == errno.EIO
            assert proxy.actions().count("500") == 1
            assert json.loads((m.path / "late" / ".state.json").read_text()) == {"v": "new"}
            assert loaded(m.path / "late") == (LZ, new)


def test_a_listing_answered_not_found_is_an_error_not_a_job_without_state(
        s3rver_server, tmp_path):
    """A listing that the store answers with 404 NoSuchKey (a gateway in
    front of it, say) is a failed listing like any other: EIO, not ENOENT,
    which would say the job has no stored state; mkdir fails too and
    uploads nothing. The next access loads the newest object."""
    import errno
    server = s3rver_server
    key = H.key_for("nf", int(time.time()) - 30, "completed")
    with FaultProxy(server.endpoint) as proxy:
        store = EndpointStore(server, proxy.endpoint, retries=1)
        store.put(LZ, key, b'{"v":1}')
        with Mount(store, tmp_path / "m") as m:
            assert "nf" in os.listdir(m.path)
            listing = lambda meth, p: meth == "GET" and "list-type=2" in p  # noqa
            for op in (os.stat, os.mkdir):
                proxy.match(listing, ["404"])
                with pytest.raises(OSError) as e:
                    op(m.path / "nf")
                assert e.value.errno == errno.EIO, op
            assert [k for _, k, _ in listed_s3(server)] == [key]
            assert json.loads((m.path / "nf" / ".state.json").read_text()) == {"v": 1}
