"""4 processes x 1,000 writes to different keys of one job while `running`
is written meanwhile: the final state is exact, and every uploaded object
parses and holds only values that were written."""
import json
import multiprocessing
import os

from tests.support.mount import LZ

PROCS = 4
WRITES = 1000
KEYS_PER_PROC = 50


def writer(job, p):
    for i in range(WRITES):
        with open(os.path.join(job, f"p{p}-k{i % KEYS_PER_PROC}"), "w") as f:
            f.write(json.dumps({"p": p, "i": i}))


def check_snapshot(body):
    snap = json.loads(body)
    assert isinstance(snap, dict)
    for k, v in snap.items():
        p, kk = k[1:].split("-k")
        assert v["p"] == int(p) and v["i"] % KEYS_PER_PROC == int(kk) and 0 <= v["i"] < WRITES


def test_parallel_writers_with_concurrent_uploads(store, mnt):
    job = mnt / "busy"
    job.mkdir()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=writer, args=(str(job), p)) for p in range(PROCS)]
    for pr in procs:
        pr.start()
    uploads = 0
    while any(pr.is_alive() for pr in procs) or uploads == 0:
        with open(job / "running", "w") as f:
            f.write("1")
        # what this very upload stored, fetched before anyone can replace it
        info = json.loads((job / ".status").read_text())["last_upload"]["running"]
        check_snapshot(store.get(LZ, info["key"]))
        uploads += 1
    for pr in procs:
        pr.join(timeout=300)
        assert pr.exitcode == 0
    final = json.loads((job / ".state.json").read_text())
    expected = {f"p{p}-k{k}": {"p": p, "i": WRITES - KEYS_PER_PROC + k}
                for p in range(PROCS) for k in range(KEYS_PER_PROC)}
    assert final == expected
    (job / "completed").write_text("1")
    info = json.loads((job / ".status").read_text())["last_upload"]["completed"]
    assert json.loads(store.get(LZ, info["key"])) == expected
    assert uploads > 1
