"""The S3 store (s3/store_s3.c) against real S3 servers on loopback (s3rver,
and Ceph RGW, which verifies every signature), through tests/store_cli."""
import concurrent.futures
import hashlib
import json
import socket

import pytest

from tests.support.faultproxy import FaultProxy
from tests.support.storecli import StoreCli

ODD_KEYS = [
    "dom/ds/upload_date=1700000000/user/others/job with spaces_completed.json",
    "a=b+c%d&e.json",
    "percent%2Fencoded%20already.json",
    "unicodé/ジョブ/ü€_running.json",
    "q?x=1#frag;semi,comma:colon@at!$'()*.json",
    "tilde~under_score-dash.json",
]


@pytest.fixture(scope="module")
def bucket(s3rver):
    return s3rver.create_bucket("bkt-roundtrip")


def body_for(key: str) -> bytes:
    return json.dumps({"key": key, "n": len(key)}, ensure_ascii=False).encode()


@pytest.mark.parametrize("key", ODD_KEYS)
def test_put_get_roundtrip_with_odd_keys(cli, s3rver, bucket, key):
    body = body_for(key)
    out = cli.put(bucket, key, body)
    assert out["etag"] == hashlib.md5(body).hexdigest()
    assert out["attempts"] == 1
    assert cli.get(bucket, key) == body
    # What store_cli put is byte-exact, as application/json, for boto3 too.
    obj = s3rver.client.get_object(Bucket=bucket, Key=key)
    assert obj["Body"].read() == body
    assert obj["ContentType"] == "application/json"


DOT_KEYS = ["dots/../x.json", "dots/./y.json", "../up.json", "dots/..", "./lead.json"]


@pytest.mark.only_rgw("s3rver resolves dot segments in keys: it stores dots/../x as x")
@pytest.mark.parametrize("key", DOT_KEYS)
def test_keys_with_dot_segments_round_trip_as_they_are(cli, s3rver, bucket, key):
    body = body_for(key)
    cli.put(bucket, key, body)
    assert cli.get(bucket, key) == body
    assert s3rver.client.get_object(Bucket=bucket, Key=key)["Body"].read() == body
    assert key in [o["key"] for o in cli.list(bucket, key)]


@pytest.mark.only_rgw("s3rver checks no signature: it accepts any secret")
def test_check_wrong_secret_is_refused_by_the_server(cli, bucket):
    r = cli.run("check", bucket, env={"AWS_SECRET_ACCESS_KEY": "not-the-secret"})
    assert r.returncode != 0
    assert last_line(r.stderr) == ("The secret access key does not match the access key "
                                   "ID (SignatureDoesNotMatch).")


def test_listing_matches_boto3(cli, s3rver, bucket):
    for key in ODD_KEYS:
        cli.put(bucket, key, body_for(key))
    ours = cli.list(bucket, "")
    theirs = s3rver.client.list_objects_v2(Bucket=bucket)["Contents"]
    assert [o["key"] for o in ours] == [o["Key"] for o in theirs]
    for a, b in zip(ours, theirs):
        assert a["size"] == b["Size"]
        assert a["etag"] == b["ETag"].strip('"')
        assert a["last_modified_ms"] == int(b["LastModified"].timestamp() * 1000)
    for o in ours:
        assert o["etag"] == hashlib.md5(body_for(o["key"])).hexdigest()


def test_start_after_lists_what_boto3_lists_after_the_same_key(store_cli_path, s3rver):
    """StartAfter (the incremental listings of get_or_create): the keys
    strictly after the mark, across pages, as boto3 gets them."""
    bucket = s3rver.create_bucket("bkt-start-after")
    keys = [f"d/ds/upload_date={1000 + i // 3}/u/o/j{i % 3}_completed.json" for i in range(1050)]
    keys += ["d/ds/upload_date=1100-x", "d/ds/zz", "d/dt/upload_date=2000/x"]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: s3rver.client.put_object(Bucket=bucket, Key=k, Body=b"{}"),
                      keys))
    c = s3rver.client
    for after in ["d/ds/upload_date=1010/u/o/j1_completed.json", "d/ds/upload_date=1100",
                  "d/ds/upload_date=", "d/ds/upload_date=1349/u/o/j2_completed.json", "e"]:
        theirs = [o["Key"] for page in c.get_paginator("list_objects_v2").paginate(
                  Bucket=bucket, Prefix="d/ds/", StartAfter=after)
                  for o in page.get("Contents", [])]
        with FaultProxy(s3rver.endpoint) as proxy:
            ours = StoreCli(store_cli_path, proxy.endpoint).list(bucket, "d/ds/", after)
            requests = [p for m, p, _ in proxy.log if m == "GET"]
        assert [o["key"] for o in ours] == theirs, after
        assert "start-after=" in requests[0]
        assert all("start-after=" not in p for p in requests[1:])


def test_objects_put_with_boto3_are_read_by_store_cli(cli, s3rver):
    bucket = s3rver.create_bucket("bkt-from-boto3")
    objects = {f"pre/{k}": body_for(k) + b"\n" for k in ODD_KEYS}
    objects["other/outside.json"] = b"[]"
    for key, body in objects.items():
        s3rver.client.put_object(Bucket=bucket, Key=key, Body=body)
    for key, body in objects.items():
        assert cli.get(bucket, key) == body
    listed = cli.list(bucket, "pre/")
    expected = sorted((k for k in objects if k.startswith("pre/")),
                      key=lambda k: k.encode())
    assert [o["key"] for o in listed] == expected
    assert all(o["size"] == len(objects[o["key"]]) for o in listed)


def test_empty_body_and_binary_body(cli, s3rver, bucket):
    cli.put(bucket, "empty.json", b"")
    assert cli.get(bucket, "empty.json") == b""
    blob = bytes(range(256)) * 300
    cli.put(bucket, "blob.json", blob)
    assert cli.get(bucket, "blob.json") == blob
    assert s3rver.client.get_object(Bucket=bucket, Key="blob.json")["Body"].read() == blob


def test_listing_over_1000_objects_spans_pages_once_each_in_byte_order(
        store_cli_path, s3rver):
    bucket = s3rver.create_bucket("bkt-many")
    keys = [f"many/{i % 7}-K{i:05d}-{'é' if i % 3 == 0 else 'e'}.json" for i in range(1103)]
    outside = ["manz/not-under-prefix.json", "aaa.json"]

    def put(key):
        s3rver.client.put_object(Bucket=bucket, Key=key, Body=key.encode())

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(put, keys + outside))

    with FaultProxy(s3rver.endpoint) as proxy:
        listed = StoreCli(store_cli_path, proxy.endpoint).list(bucket, "many/")
        requests = proxy.log
    got = [o["key"] for o in listed]
    assert len(got) == len(set(got)) == len(keys)
    assert got == sorted(keys, key=lambda k: k.encode())
    assert all(o["size"] == len(o["key"].encode()) for o in listed)
    # ceil(1103 / 1000) pages, each one request.
    assert len(requests) == 2
    assert "continuation-token=" in requests[1][1]


def test_get_missing_key_is_enoent(cli, bucket):
    r = cli.run("get", bucket, "no/such/key.json")
    assert r.returncode == 1
    assert b"(errno 2)" in r.stderr


def test_check_existing_bucket(cli, bucket):
    r = cli.run("check", bucket)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout == b"ok\n"


def last_line(stderr: bytes) -> str:
    lines = stderr.decode().strip().splitlines()
    assert lines
    return lines[-1]


def test_check_missing_bucket_gives_plain_message(cli):
    r = cli.run("check", "no-such-bucket-here")
    assert r.returncode != 0
    assert r.stdout == b""
    assert last_line(r.stderr) == 'The bucket "no-such-bucket-here" does not exist.'


def test_check_closed_port_gives_plain_message(store_cli_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    cli = StoreCli(store_cli_path, f"http://127.0.0.1:{port}")
    r = cli.run("check", "some-bucket", extra=["--max-attempts", "2"])
    assert r.returncode != 0
    assert last_line(r.stderr) == (
        f"Cannot connect to the S3 endpoint http://127.0.0.1:{port} "
        "(connection refused or unreachable).")


def test_check_unknown_access_key(cli, bucket):
    r = cli.run("check", bucket, env={"AWS_ACCESS_KEY_ID": "NOTAKEY"})
    assert r.returncode != 0
    assert "(InvalidAccessKeyId)" in last_line(r.stderr)


@pytest.mark.parametrize("fault,message", [
    ("badsignature", "The secret access key does not match the access key ID "
                     "(SignatureDoesNotMatch)."),
    ("403", 'Access to the bucket "bkt-roundtrip" is denied to these credentials '
            "(AccessDenied)."),
])
def test_check_denied_gives_plain_message_and_never_logs_the_secret(
        store_cli_path, s3rver, bucket, fault, message):
    # s3rver does not verify SigV4 signatures: the proxy gives the answers.
    secret = "wrong-secret-value-1234567890"
    with FaultProxy(s3rver.endpoint) as proxy:
        proxy.script([fault])
        r = StoreCli(store_cli_path, proxy.endpoint).run(
            "check", bucket, extra=["--debug"], env={"AWS_SECRET_ACCESS_KEY": secret})
        assert proxy.actions() == [fault]
    assert r.returncode != 0
    assert last_line(r.stderr) == message
    assert secret.encode() not in r.stderr + r.stdout


def test_one_store_from_many_threads(cli, s3rver, bucket):
    r = cli.run("threads", bucket, "threads/t-", "24")
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout == b"ok\n"
    listed = cli.list(bucket, "threads/")
    assert sorted(o["key"] for o in listed) == sorted(f"threads/t-{i}.json" for i in range(24))
    for i in range(24):
        body = s3rver.client.get_object(Bucket=bucket, Key=f"threads/t-{i}.json")["Body"].read()
        assert body == b'{"thread": %d}' % i
