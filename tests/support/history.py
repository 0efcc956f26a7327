"""A generated history of a dataset, as years of ETL runs leave it: many
jobs, a running and a completed object per run, most of them moved to the
DLZ bucket, the newest still in the LZ, with decoys (near-miss names, other
datasets, dates that are not dates), ties (the same upload_date in both
buckets, running and completed of one run) and a job whose only object is
the oldest of all. Used by tests/fs/test_history.py and the bench.

newest(objects, job, kinds) applies the README's rule ("Semantics", and
"Choices where the contract is silent" for ties: greatest upload_date as a
number, then LastModified, then completed over running, then the greater
key and bucket, byte order) to (bucket, key, last_modified_ms) triples that
a client other than bookmarkfs listed."""
import json
import re

from .mount import DATASET, DLZ, DOMAIN, LZ, USER

DATE_RE = re.compile(r"^upload_date=(\d+)$")
FAR_JOB = "job-far"


def job_names(n_jobs):
    return [f"job-{i:02d}" for i in range(n_jobs)]


def key_for(job, epoch, kind, mid="", domain=DOMAIN, dataset=DATASET, date=None):
    date = str(epoch) if date is None else date
    return f"{domain}/{dataset}/{mid}upload_date={date}/{USER}/others/{job}_{kind}.json"


_key_for = key_for


def body_for(job, epoch, kind, bucket):
    return json.dumps({"job": job, "epoch": epoch, "kind": kind, "bucket": bucket},
                      separators=(",", ":")).encode()


def generate(n_objects, n_jobs=50, start=1_600_000_000, step=60, lz_share=0.02,
             decoys=True, domain=DOMAIN, dataset=DATASET):
    """n_objects (bucket, key, body) triples; upload dates from start on,
    step seconds apart, one run of one job at each."""
    def key_for(job, epoch, kind, mid="", dataset=dataset, date=None):
        return _key_for(job, epoch, kind, mid=mid, domain=domain, dataset=dataset, date=date)
    DOMAIN_, DATASET_ = domain, dataset
    jobs = job_names(n_jobs)
    out = [(DLZ, key_for(FAR_JOB, start - 10_000, "completed"),
            body_for(FAR_JOB, start - 10_000, "completed", DLZ))]
    runs = max(1, (n_objects - 1 - (n_objects // 50 if decoys else 0)) // 2)
    n_decoys = max(0, n_objects - 1 - 2 * runs) if decoys else 0
    lz_from = int(runs * (1 - lz_share))
    for i in range(runs):
        job, epoch = jobs[i % n_jobs], start + i * step
        bucket = LZ if i >= lz_from else DLZ
        for kind in ("running", "completed"):
            out.append((bucket, key_for(job, epoch, kind), body_for(job, epoch, kind, bucket)))
    last = start + runs * step
    for d in range(n_decoys):
        job, epoch = jobs[d % n_jobs], start + (d * 7919) % max(1, runs) * step
        newer = last + 1000 + d
        kind = d % 9
        if kind == 0:    # the same run in both buckets: a tie of upload_date
            bucket = DLZ if epoch >= start + lz_from * step else LZ
            out.append((bucket, key_for(job, epoch, "completed"),
                        body_for(job, epoch, "completed", bucket)))
        elif kind == 1:  # a near-miss name, newer than everything
            out.append((DLZ, key_for("x" + job, newer, "completed"), b'{"decoy":1}'))
        elif kind == 2:
            out.append((LZ, key_for(job, newer, "completed") + ".bak", b'{"decoy":2}'))
        elif kind == 3:  # another dataset
            out.append((DLZ, key_for(job, newer, "completed", dataset=DATASET_ + "2"),
                        b'{"decoy":3}'))
        elif kind == 4:  # not a date
            out.append((DLZ, key_for(job, newer, "completed", date=f"{newer}x"),
                        b'{"decoy":4}'))
        elif kind == 5:  # a DLZ partition before upload_date=
            out.append((DLZ, key_for(job, epoch, "completed", mid="schema=v1/"),
                        body_for(job, epoch, "completed", "dlz-partition")))
        elif kind == 6:  # leading zeros: the same number, sorting first
            out.append((DLZ, key_for(job, epoch, "completed", date=f"00{epoch}"),
                        body_for(job, epoch, "completed", "dlz-zeros")))
        elif kind == 7:  # not under the layout's upload_date at all
            out.append((DLZ, f"{DOMAIN_}/{DATASET_}/{USER}/others/{job}_completed.json",
                        b'{"decoy":7}'))
        else:            # a file of another kind
            out.append((DLZ, f"{DOMAIN_}/{DATASET_}/upload_date={newer}/{USER}/others/"
                        f"{job}_other.json", b'{"decoy":8}'))
    return out


def candidate(bucket, key, lm_ms, job, kinds):
    """The sort key of an object when it is a candidate of job, else None."""
    prefix = f"{DOMAIN}/{DATASET}/"
    if not key.startswith(prefix):
        return None
    segs = key[len(prefix):].split("/")
    if len(segs) < 2:
        return None
    kind = next((k for k in kinds if segs[-1] == f"{job}_{k}.json"), None)
    if kind is None:
        return None
    date = next((m.group(1) for m in map(DATE_RE.match, segs[:-1]) if m), None)
    if date is None:
        return None
    return (int(date), lm_ms, kind == "completed", key.encode(), bucket.encode())


def newest(listed, job, kinds=("completed",)):
    """(bucket, key) of the winner among (bucket, key, lm_ms), or None."""
    best = None
    for bucket, key, lm in listed:
        c = candidate(bucket, key, lm, job, kinds)
        if c is not None and (best is None or c > best[0]):
            best = (c, bucket, key)
    return None if best is None else (best[1], best[2])


def jobs_in(listed):
    """Names of the jobs with objects of either kind."""
    names = set()
    prefix = f"{DOMAIN}/{DATASET}/"
    for _, key, _ in listed:
        if not key.startswith(prefix):
            continue
        segs = key[len(prefix):].split("/")
        if len(segs) < 2 or not any(DATE_RE.match(s) for s in segs[:-1]):
            continue
        for kind in ("completed", "running"):
            suffix = f"_{kind}.json"
            if segs[-1].endswith(suffix) and segs[-1][:-len(suffix)] not in ("", ".", ".."):
                names.add(segs[-1][:-len(suffix)])
    return names


def list_s3(client, bucket):
    out = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            out.append((bucket, o["Key"], int(o["LastModified"].timestamp() * 1000)))
    return out


def list_dir(root, bucket):
    """As the directory store lists: LastModified is the file's mtime (ms)."""
    import os
    base = os.path.join(root, bucket)
    out = []
    for dirpath, _, files in os.walk(base):
        for f in files:
            p = os.path.join(dirpath, f)
            out.append((bucket, os.path.relpath(p, base), os.stat(p).st_mtime_ns // 1_000_000))
    return out
