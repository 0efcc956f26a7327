"""4 processes writing at least 1,000 times each to different keys of one job
while `running` is written meanwhile: the final state is exact, and every
uploaded object parses and holds only values that were written.

The writers go on, in whole rounds over their keys, until the uploader has
made several uploads while they were writing, so the overlap does not depend
on how fast the machine is."""
import json
import multiprocessing
import os

from tests.support.mount import LZ

PROCS = 4
WRITES = 1000
KEYS_PER_PROC = 50
UPLOADS_DURING_WRITES = 3


def writer(job, p, enough, written):
    i = 0
    while i < WRITES or not enough.is_set():
        for _ in range(KEYS_PER_PROC):
            with open(os.path.join(job, f"p{p}-k{i % KEYS_PER_PROC}"), "w") as f:
                f.write(json.dumps({"p": p, "i": i}))
            i += 1
    written[p] = i


def check_snapshot(body, totals):
    snap = json.loads(body)
    assert isinstance(snap, dict)
    for k, v in snap.items():
        p, kk = k[1:].split("-k")
        assert v["p"] == int(p) and v["i"] % KEYS_PER_PROC == int(kk)
        assert 0 <= v["i"] < totals[int(p)]


def test_parallel_writers_with_concurrent_uploads(store, mnt):
    job = mnt / "busy"
    job.mkdir()
    ctx = multiprocessing.get_context("fork")
    enough = ctx.Event()
    written = ctx.Array("q", PROCS)
    procs = [ctx.Process(target=writer, args=(str(job), p, enough, written))
             for p in range(PROCS)]
    for pr in procs:
        pr.start()
    uploads = 0
    snapshots = []
    while any(pr.is_alive() for pr in procs):
        with open(job / "running", "w") as f:
            f.write("1")
        # what this very upload stored, fetched before anyone can replace it
        info = json.loads((job / ".status").read_text())["last_upload"]["running"]
        snapshots.append(store.get(LZ, info["key"]))
        uploads += 1
        if uploads >= UPLOADS_DURING_WRITES:
            enough.set()
    for pr in procs:
        pr.join(timeout=300)
        assert pr.exitcode == 0
    assert uploads >= UPLOADS_DURING_WRITES
    totals = list(written)
    assert all(t >= WRITES and t % KEYS_PER_PROC == 0 for t in totals)
    for body in snapshots:
        check_snapshot(body, totals)
    final = json.loads((job / ".state.json").read_text())
    expected = {f"p{p}-k{k}": {"p": p, "i": totals[p] - KEYS_PER_PROC + k}
                for p in range(PROCS) for k in range(KEYS_PER_PROC)}
    assert final == expected
    (job / "completed").write_text("1")
    info = json.loads((job / ".status").read_text())["last_upload"]["completed"]
    assert json.loads(store.get(LZ, info["key"])) == expected


def test_rm_of_a_key_still_being_created_is_ebusy_and_keeps_it(store, mnt):
    """README, errors: EBUSY for `rm` of a key another process has created
    and not yet closed; the close commits it, and rm then removes it."""
    import errno
    import pytest
    job = mnt / "j"
    job.mkdir()
    fd = os.open(job / "k", os.O_CREAT | os.O_WRONLY)
    try:
        os.write(fd, b'{"offset": 5}')
        with pytest.raises(OSError) as e:
            os.unlink(job / "k")
        assert e.value.errno == errno.EBUSY
    finally:
        os.close(fd)
    assert json.loads((job / "k").read_text()) == {"offset": 5}
    assert json.loads((job / ".state.json").read_text()) == {"k": {"offset": 5}}
    os.unlink(job / "k")
    assert not (job / "k").exists()
    assert json.loads((job / ".state.json").read_text()) == {}
