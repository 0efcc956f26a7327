"""Interop with amorphicutils' layout: objects put by another client (boto3
for S3, plain files for the local store) — several upload_dates, completed
and running, in the DLZ and the LZ bucket, near-miss names of other jobs,
other datasets, more than 1,000 objects so that listings span pages — load
as the README says ("Semantics"). The expected winner is computed here from the rules."""
import json
import random
import re
from concurrent.futures import ThreadPoolExecutor

from tests.support.mount import DATASET, DLZ, DOMAIN, LZ, USER, Mount

JOBS = ["daily", "job with space", "plus+job", "per%cent", "and&job", "ünïcødé-作业", "x"]
DATE_RE = re.compile(r"^upload_date=(\d+)$")


def expected_state(objects, job, kinds):
    """The newest candidate's body by the rules, from (bucket, key, body)."""
    best = None
    for bucket, key, body in objects:
        if not key.startswith(f"{DOMAIN}/{DATASET}/"):
            continue
        segs = key.split("/")
        dates = [DATE_RE.match(s) for s in segs[2:-1]]
        dates = [m for m in dates if m]
        if not dates or segs[-1] not in [f"{job}_{k}.json" for k in kinds]:
            continue
        date = int(dates[0].group(1))
        if best is None or date > best[0]:
            best = (date, body)
    return None if best is None else json.loads(best[1])


def build_objects(rng):
    objects, n = [], 0
    for job in JOBS:
        dates = rng.sample(range(1_600_000_000, 1_700_000_000), 6)
        for i, date in enumerate(dates):
            kind = "completed" if i % 2 == 0 else "running"
            bucket = rng.choice([LZ, DLZ])
            mid = rng.choice(["", "schema=v1/"]) if bucket == DLZ else ""
            key = f"{DOMAIN}/{DATASET}/{mid}upload_date={date}/{USER}/others/{job}_{kind}.json"
            objects.append((bucket, key, json.dumps({"job": job, "date": date, "kind": kind}).encode()))
    # near misses and other datasets, enough to make listings span pages
    while len(objects) < 1100:
        job = rng.choice(JOBS)
        n += 1
        date = 1_800_000_000 + n  # newer than every real candidate
        key = rng.choice([
            f"{DOMAIN}/{DATASET}/upload_date={date}/{USER}/others/{job}_completed.json.bak",
            f"{DOMAIN}/{DATASET}/upload_date={date}/{USER}/others/x{job}_completed.json",
            f"{DOMAIN}/{DATASET}2/upload_date={date}/{USER}/others/{job}_completed.json",
            f"{DOMAIN}/{DATASET}/upload_date={date}x/{USER}/others/{job}_completed.json",
            f"{DOMAIN}/{DATASET}/{USER}/others/{job}_completed.json",
            f"other_{DOMAIN}/{DATASET}/upload_date={date}/{USER}/others/{job}_completed.json",
            f"{DOMAIN}/{DATASET}/upload_date={date}/{USER}/others/filler-{n}_other.json",
        ])
        objects.append((rng.choice([LZ, DLZ]), key, b'{"near": "miss"}'))
    return objects


def test_amorphic_layout_objects_load_by_the_rules(store, tmp_path):
    rng = random.Random(20261128)
    objects = build_objects(rng)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda o: store.put(*o), objects))
    assert sum(1 for b, _, _ in objects if b == LZ) > 500 and len(objects) > 1000
    for kinds, extra in [(["completed"], []), (["completed", "running"], ["--resume-from=running"])]:
        with Mount(store, tmp_path / ("m-" + kinds[-1]), extra=extra) as m:
            listed = set(p.name for p in m.path.iterdir())
            jobs_with_objects = {j for j in JOBS
                                 if expected_state(objects, j, ["completed", "running"])}
            assert jobs_with_objects <= listed
            for job in JOBS:
                want = expected_state(objects, job, kinds)
                got = json.loads((m.path / job / ".state.json").read_text())
                assert got == (want or {}), (job, kinds)
