"""Store faults (README, "Retries": transient faults are retried, bounded; a
failed control write is an error and changes nothing). bookmarkfs talks to a
real S3 server (Ceph RGW, which verifies every signature) through the
fault-injecting proxy on 127.0.0.1; what is stored is read from the server
directly."""
import hashlib
import json
import os
import re
import subprocess

import pytest

from tests.support.faultproxy import FaultProxy
from tests.support.faults import (EIO_TEXT, ETIMEDOUT_TEXT, EndpointStore, compact,
                                  last_upload, mount_once, sh_write, state_of,
                                  upload_key)
from tests.support.mount import DATASET, DOMAIN, LZ, USER, Mount


@pytest.fixture
def proxy(s3server):
    with FaultProxy(s3server.endpoint, seed=1234, slow_seconds=3.0) as p:
        yield p


def puts(proxy):
    """The actions on the PUTs of state objects (not of job leases)."""
    return [a for m, p, a in proxy.log if m == "PUT" and "/_bookmarkfs_leases/" not in p]


def test_thirty_percent_faults_forty_commits_all_succeed_byte_exact(s3server, proxy,
                                                                     tmp_path):
    store = EndpointStore(s3server, proxy.endpoint, retries=8, retry_time=20000,
                          timeout=5000)
    proxy.probabilities = {"500": 0.1, "503": 0.1, "reset": 0.1}
    model = {}
    with Mount(store, tmp_path / "mnt") as m:
        job = m.path / "flaky"
        job.mkdir()
        for i in range(40):
            model["step"] = i
            model[f"k{i % 7}"] = {"i": i, "pad": "x" * (i * 37)}
            (job / "step").write_text(str(i))
            (job / f"k{i % 7}").write_text(json.dumps(model[f"k{i % 7}"]))
            kind = "completed" if i % 5 == 4 else "running"
            r = sh_write(job / kind, timeout=120)
            assert r.returncode == 0, (i, r.stderr, m.log())
            info = last_upload(job, kind)
            expected = compact(model)
            assert info["bytes"] == len(expected)
            assert info["etag"] == hashlib.md5(expected).hexdigest()
            # fetched from the server itself, before a later commit can replace it
            assert store.get(LZ, info["key"]) == expected, i
        assert (job / ".state.json").read_bytes() == compact(model) + b"\n"
    injected = [a for a in proxy.actions() if a != "pass"]
    assert len(injected) >= 10, proxy.actions()  # the faults really happened
    assert any(a != "pass" for a in puts(proxy))


@pytest.mark.parametrize("fault, message", [("503", EIO_TEXT), ("500", EIO_TEXT),
                                            ("reset", EIO_TEXT),
                                            ("slow", ETIMEDOUT_TEXT)])
def test_every_request_failing_fails_the_write_changes_nothing_then_recovers(
        s3server, proxy, tmp_path, fault, message):
    store = EndpointStore(s3server, proxy.endpoint, retries=3, retry_time=1500,
                          timeout=1000)
    with Mount(store, tmp_path / "mnt") as m:
        job = m.path / "j"
        job.mkdir()
        (job / "offset").write_text("41")
        assert sh_write(job / "running").returncode == 0
        before_upload = last_upload(job)
        (job / "offset").write_text("42")  # closed, not yet uploaded
        before_state = (job / ".state.json").read_bytes()
        before_objects = store.objects(LZ)

        proxy.probabilities = {fault: 1.0}
        proxy.reset_log()
        # The bound is documented (--retry-time + --timeout); the margin
        # only keeps a hang from stalling the suite.
        try:
            r = sh_write(job / "running", timeout=store.bound_seconds() + 30)
        except subprocess.TimeoutExpired:
            pytest.fail("the write to running did not return: " + m.log())
        assert r.returncode != 0
        assert message in r.stderr, r.stderr
        # retried, and bounded (--retries=3; libcurl itself may redo a request
        # once on a fresh connection when a reused one was reset)
        assert 2 <= len(puts(proxy)) <= 2 * 3 and set(puts(proxy)) == {fault}
        # nothing changed: the mount's state, the control file, the store
        assert (job / ".state.json").read_bytes() == before_state
        assert (job / "offset").read_text() == "42\n"
        assert last_upload(job) == before_upload
        assert store.objects(LZ) == before_objects
        assert "upload to s3://" in m.log() and "failed" in m.log()

        proxy.probabilities = {}
        r = sh_write(job / "running")
        assert r.returncode == 0, r.stderr
        info = last_upload(job)
        assert store.get(LZ, info["key"]) == b'{"offset":42}'


def test_an_upload_the_store_answers_slowdown_to_is_one_error_line_and_in_status(
        s3server, proxy, tmp_path):
    """Every attempt of an upload answered 503 SlowDown: the retries are
    warnings, the failure is logged once, naming the S3 code and the
    request id of the last answer, and the root's .status shows them."""
    store = EndpointStore(s3server, proxy.endpoint, retries=3, retry_time=1500,
                          timeout=1000)
    with Mount(store, tmp_path / "mnt") as m:
        job = m.path / "j"
        job.mkdir()
        (job / "offset").write_text("41")  # takes the lease: nothing else is sent
        before = len(m.log().splitlines())
        proxy.match(lambda method, path: method == "PUT" and "/_bookmarkfs_leases/" not in path,
                    ["503"] * 10)
        proxy.reset_log()
        r = sh_write(job / "running", timeout=store.bound_seconds() + 30)
        assert r.returncode != 0 and EIO_TEXT in r.stderr, r.stderr
        attempts = puts(proxy)
        assert 2 <= len(attempts) <= 3 and set(attempts) == {"503"}, proxy.log
        new = m.log().splitlines()[before:]
        errors = [line for line in new if ": error: " in line]
        assert len(errors) == 1, "\n".join(new)
        (line,) = errors
        last_id = proxy.request_ids[-1]
        assert f"FAULTPROXY-{len(attempts)}" == last_id  # every attempt was answered
        assert "job 'j': running upload to s3://" in line and "SlowDown" in line, line
        assert last_id in line and "Please reduce your request rate." in line, line
        assert f"after {len(attempts)} attempts" in line, line
        retries = [line for line in new if ": warning: " in line and "SlowDown" in line]
        assert len(retries) == len(attempts), "\n".join(new)  # retrying ... / giving up
        last = json.loads((m.path / ".status").read_text())["last_error"]
        assert last["code"] == "SlowDown" and last["request_id"] == last_id, last
        assert "Please reduce your request rate." in last["store_message"], last
        assert "job 'j'" in last["message"] and "SlowDown" in last["message"], last
        assert store.objects(LZ) == {}  # nothing was stored


def test_answers_slower_than_the_time_out_are_retried(s3server, proxy, tmp_path):
    store = EndpointStore(s3server, proxy.endpoint, retries=4, retry_time=20000,
                          timeout=700)
    with Mount(store, tmp_path / "mnt") as m:
        job = m.path / "j"
        job.mkdir()
        (job / "k").write_text('"v"')
        proxy.reset_log()
        proxy.script(["slow", "slow"])
        r = sh_write(job / "running")
        assert r.returncode == 0, r.stderr
        assert puts(proxy) == ["slow", "slow", "pass"]
        info = last_upload(job)
        assert info["attempts"] == 3
        assert store.get(LZ, info["key"]) == b'{"k":"v"}'


def seed_job(store, job, body):
    key = f"{DOMAIN}/{DATASET}/upload_date=1700000000/{USER}/others/{job}_completed.json"
    store.put(LZ, key, body)
    return key


@pytest.mark.parametrize("fault", ["malformed", "truncate"])
def test_malformed_and_truncated_answers_are_errors_never_crashes(s3server, proxy,
                                                                  tmp_path, fault):
    store = EndpointStore(s3server, proxy.endpoint, retries=2, retry_time=1000,
                          timeout=2000)
    body = b'{"file":"part-0007.csv","offset":9000}'
    key = seed_job(store, "etl", body)
    with Mount(store, tmp_path / "mnt") as m:
        proxy.probabilities = {fault: 1.0}
        with pytest.raises(OSError) as e:
            (m.path / "etl" / "offset").read_text()
        assert e.value.errno == 5  # EIO
        with pytest.raises(OSError) as e:
            os.listdir(m.path / "etl")
        assert e.value.errno == 5
        assert m.proc.poll() is None and os.path.ismount(m.path)  # still serving
        assert "etl" in m.log()
        proxy.probabilities = {}
        # nothing was lost: the job loads whole once answers are sound
        assert state_of(m.path / "etl") == json.loads(body)
        assert store.objects(LZ) == {key: body}


def test_malformed_listing_at_mount_is_one_line_and_no_mount(s3server, proxy, tmp_path):
    store = EndpointStore(s3server, proxy.endpoint, retries=2, retry_time=1000,
                          timeout=2000)
    proxy.probabilities = {"malformed": 1.0}
    r = mount_once(store, tmp_path / "mnt")
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert lines and "did not answer with a bucket listing" in lines[-1], r.stderr
    assert not os.path.ismount(tmp_path / "mnt")


def test_truncated_put_answer_is_retried_and_stored_once_whole(s3server, proxy, tmp_path):
    store = EndpointStore(s3server, proxy.endpoint, retries=4, retry_time=20000,
                          timeout=2000)
    with Mount(store, tmp_path / "mnt") as m:
        job = m.path / "j"
        job.mkdir()
        (job / "k").write_text("[1,2,3]")
        proxy.reset_log()
        proxy.script(["truncate"])
        assert sh_write(job / "completed").returncode == 0
        assert puts(proxy) == ["truncate", "pass"]
        info = last_upload(job, "completed")
        assert re.fullmatch(upload_key("j", "completed"), info["key"])
        assert store.get(LZ, info["key"]) == b'{"k":[1,2,3]}'


def listings(proxy):
    return [p for m, p, a in proxy.log if m == "GET" and "list-type=2" in p and "prefix=" in p]


@pytest.mark.parametrize("answer, keys, why", [
    ("sametoken", (), "handed out the continuation token it was asked with"),
    ("freshtoken", (f"{DOMAIN}/{DATASET}/upload_date=1/{USER}/others/x_completed.json",),
     "starts at or before the end of the previous page"),
    ("freshtoken", (), "not finished after"),
])
def test_a_listing_that_never_ends_is_an_error_in_bounded_time(s3server, proxy, tmp_path,
                                                               answer, keys, why):
    store = EndpointStore(s3server, proxy.endpoint, retries=3, retry_time=250,
                          timeout=750)
    body = b'{"offset":9000}'
    key = seed_job(store, "etl", body)
    # the documented bound on a whole listing: 10 x (--retry-time + --timeout)
    bound = 10 * store.bound_seconds()
    with Mount(store, tmp_path / "mnt") as m:
        (m.path / "local").mkdir()
        (m.path / "local" / "k").write_text("1")
        proxy.on_list = answer
        proxy.fresh_keys = keys
        proxy.reset_log()
        try:
            if keys or answer == "sametoken":
                # ls lists the store (one listing per bucket); a listing that
                # fails shows the jobs loaded here (the clock-bound case
                # skips it: one listing of the bound shows as much)
                r = subprocess.run(["ls", str(m.path)], capture_output=True, text=True,
                                   timeout=bound + 30)
                assert r.returncode == 0, r.stderr
                assert r.stdout.split() == ["local"]
            r = subprocess.run(["stat", str(m.path / "etl")], capture_output=True,
                               text=True, timeout=bound + 30)
            assert r.returncode != 0 and EIO_TEXT in r.stderr, r.stderr
        except subprocess.TimeoutExpired:
            pytest.fail("the listing did not end: " + m.log())
        assert why in m.log()
        if keys or answer == "sametoken":
            # found at the second page of each listing, not by the clock
            assert len(listings(proxy)) <= 4, listings(proxy)
        assert m.proc.poll() is None and os.path.ismount(m.path)
        proxy.on_list = None
        # nothing was lost: the job loads whole once the listings are sound
        assert state_of(m.path / "etl") == json.loads(body)
        assert (m.path / "local" / "k").read_text() == "1\n"
        assert store.objects(LZ) == {key: body}
