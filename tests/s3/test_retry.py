"""Retries of the S3 store, with a fault-injecting proxy between store_cli
and a real s3rver."""
import hashlib

import pytest

from tests.support.faultproxy import FaultProxy
from tests.support.storecli import StoreCli

BUCKET = "bkt-retry"
KEY = "dom/ds/upload_date=1700000000/u/others/job_running.json"
BODY = b'{"offset": 42, "file": "part-0001.csv"}'
EIO, EACCES, ENOENT, ETIMEDOUT = 5, 13, 2, 110


@pytest.fixture(scope="module")
def seeded(s3rver):
    s3rver.create_bucket(BUCKET)
    s3rver.client.put_object(Bucket=BUCKET, Key=KEY, Body=BODY)
    return s3rver


@pytest.fixture
def proxy(seeded):
    with FaultProxy(seeded.endpoint, slow_seconds=3.0) as p:
        yield p


@pytest.fixture
def pcli(store_cli_path, proxy):
    # Short client time-out so that "slow" is a time-out.
    return StoreCli(store_cli_path, proxy.endpoint,
                    extra=["--timeout-ms", "700", "--max-attempts", "4"])


def errno_of(r):
    assert r.returncode == 1, (r.returncode, r.stderr.decode())
    return int(r.stderr.decode().rsplit("(errno ", 1)[1].split(")")[0])


TRANSIENT = ["500", "503", "reset", "slow", "truncate", "requesttimeout"]


@pytest.mark.parametrize("fault", TRANSIENT)
def test_put_retries_transient_fault_then_succeeds(pcli, proxy, seeded, fault):
    body = BODY + fault.encode()
    key = f"retry/put-{fault}.json"
    proxy.script([fault, fault])
    out = pcli.put(BUCKET, key, body)
    assert out["attempts"] == 3
    assert proxy.actions() == [fault, fault, "pass"]
    assert out["etag"] == hashlib.md5(body).hexdigest()
    assert seeded.client.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body


@pytest.mark.parametrize("fault", TRANSIENT)
def test_get_retries_transient_fault_then_succeeds(pcli, proxy, fault):
    proxy.script([fault])
    assert pcli.get(BUCKET, KEY) == BODY
    assert proxy.actions() == [fault, "pass"]


@pytest.mark.parametrize("fault", ["500", "503", "reset", "truncate"])
def test_list_retries_transient_fault_then_succeeds(pcli, proxy, fault):
    proxy.script([fault])
    listed = pcli.list(BUCKET, "dom/")
    assert [o["key"] for o in listed] == [KEY]
    assert proxy.actions() == [fault, "pass"]


def test_expired_token_refreshes_and_retries_once(pcli, proxy):
    proxy.script(["expired"])
    assert pcli.get(BUCKET, KEY) == BODY
    assert proxy.actions() == ["expired", "pass"]


def test_expired_token_twice_is_access_denied(pcli, proxy):
    proxy.script(["expired", "expired", "expired"])
    r = pcli.run("get", BUCKET, KEY)
    assert errno_of(r) == EACCES
    assert proxy.actions() == ["expired", "expired"]


@pytest.mark.parametrize("fault,err", [("503", EIO), ("500", EIO), ("reset", EIO),
                                       ("truncate", EIO), ("slow", ETIMEDOUT)])
def test_always_failing_stops_at_max_attempts(pcli, proxy, fault, err):
    proxy.probabilities = {fault: 1.0}
    r = pcli.run("put", BUCKET, "retry/never.json", input=BODY,
                 extra=["--max-attempts", "3"])
    assert errno_of(r) == err
    assert b"attempts 3" in r.stderr
    assert proxy.actions() == [fault] * 3


def test_always_failing_stops_at_max_retry_ms(pcli, proxy):
    proxy.probabilities = {"503": 1.0}
    r = pcli.run("get", BUCKET, KEY, extra=["--max-attempts", "60", "--max-retry-ms", "300"])
    assert errno_of(r) == EIO
    n = len(proxy.log)
    # Back-off grows to seconds long before 60 tries: the time bound stops it.
    assert 1 <= n < 60


@pytest.mark.parametrize("fault,op,err", [("403", "get", EACCES), ("403", "put", EACCES),
                                          ("403", "list", EACCES), ("404", "get", ENOENT)])
def test_client_errors_are_not_retried(pcli, proxy, fault, op, err):
    proxy.script([fault])
    args = {"get": ["get", BUCKET, KEY], "put": ["put", BUCKET, KEY],
            "list": ["list", BUCKET, ""]}[op]
    r = pcli.run(*args, input=BODY)
    assert errno_of(r) == err
    assert proxy.actions() == [fault]


def test_real_missing_key_is_one_request(pcli, proxy):
    r = pcli.run("get", BUCKET, "retry/does-not-exist.json")
    assert errno_of(r) == ENOENT
    assert proxy.actions() == ["pass"]


def test_malformed_listing_is_an_error_not_a_crash(pcli, proxy):
    proxy.script(["malformed"])
    r = pcli.run("list", BUCKET, "")
    assert errno_of(r) == EIO
    assert proxy.actions() == ["malformed"]


def test_malformed_check_is_an_error_not_a_crash(pcli, proxy):
    proxy.script(["malformed"])
    r = pcli.run("check", BUCKET)
    assert r.returncode == 1
    assert "did not answer with a bucket listing" in r.stderr.decode()


def test_truncated_body_always_is_an_error(pcli, proxy):
    proxy.probabilities = {"truncate": 1.0}
    r = pcli.run("get", BUCKET, KEY)
    assert errno_of(r) == EIO
    assert proxy.actions() == ["truncate"] * 4


def test_random_faults_never_corrupt(pcli, proxy, seeded):
    proxy.probabilities = {"500": 0.15, "503": 0.15, "reset": 0.1, "truncate": 0.1}
    proxy.rng.seed(7)
    ok = 0
    for i in range(20):
        body = b'{"i": %d}' % i
        r = pcli.run("put", BUCKET, f"retry/random-{i}.json", input=body,
                     extra=["--max-attempts", "8"])
        if r.returncode == 0:
            ok += 1
            assert seeded.client.get_object(
                Bucket=BUCKET, Key=f"retry/random-{i}.json")["Body"].read() == body
        else:
            assert errno_of(r) == EIO
    assert ok > 0
    assert any(a != "pass" for a in proxy.actions())
