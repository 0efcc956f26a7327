"""The store interface's conditional writes (store/store.h: put_if, get_info,
del), which leases stand on: on Ceph RGW (honours If-None-Match and
If-Match, with its quirks), on the directory store (an flock'd check and
rename), and on s3rver, which ignores both headers (the store the lease
probe must find out). What is stored is read back with boto3 or from the
directory itself."""
import hashlib
import json
import time
import uuid

import pytest

from tests.support.faultproxy import FaultProxy
from tests.support.storecli import StoreCli


def putif(cli, bucket, key, body, if_match):
    r = cli.run("putif", bucket, key, if_match, input=body)
    out = json.loads(r.stdout)
    assert (r.returncode == 0) == (out["rc"] == 0), r.stderr
    return out


def getinfo(cli, bucket, key):
    r = cli.run("getinfo", bucket, key)
    assert r.returncode == 0, r.stderr.decode()
    return json.loads(r.stdout)


@pytest.fixture
def rgw_cli(store_cli_path, rgw_server):
    return StoreCli(store_cli_path, rgw_server.endpoint)


@pytest.fixture
def dir_cli(store_cli_path, tmp_path):
    (tmp_path / "store").mkdir()
    return StoreCli(store_cli_path, "http://127.0.0.1:9", extra=["--dir", str(tmp_path / "store")])


def check_conditional(cli, bucket, key, read_back):
    first = putif(cli, bucket, key, b'{"v":1}', "*")
    assert first["rc"] == 0 and first["etag"] == hashlib.md5(b'{"v":1}').hexdigest()
    assert first["server_ms"] > 0
    again = putif(cli, bucket, key, b'{"v":2}', "*")
    assert again["rc"] == -17 and not again["ambiguous"]  # EEXIST: 412
    assert read_back(key) == b'{"v":1}'
    wrong = putif(cli, bucket, key, b'{"v":3}', hashlib.md5(b"other").hexdigest())
    assert wrong["rc"] == -17
    assert read_back(key) == b'{"v":1}'
    ok = putif(cli, bucket, key, b'{"v":4}', first["etag"])
    assert ok["rc"] == 0 and ok["etag"] == hashlib.md5(b'{"v":4}').hexdigest()
    stale = putif(cli, bucket, key, b'{"v":5}', first["etag"])  # the old ETag
    assert stale["rc"] == -17
    info = getinfo(cli, bucket, key)
    assert info["body"] == '{"v":4}' and info["etag"] == ok["etag"]
    now = time.time() * 1000
    assert abs(info["server_ms"] - now) < 5000 and abs(info["last_modified_ms"] - now) < 5000
    assert read_back(key) == b'{"v":4}'
    # If-Match on a key that is not there: RGW answers 412, AWS 404.
    missing = putif(cli, bucket, key + "-none", b"{}", ok["etag"])
    assert missing["rc"] in (-2, -17)
    assert cli.run("del", bucket, key).returncode == 0
    assert cli.run("del", bucket, key).returncode == 0  # gone already: no error
    r = cli.run("getinfo", bucket, key)
    assert r.returncode == 1 and b"errno 2" in r.stderr


def test_rgw_honours_conditional_writes(rgw_cli, rgw_server):
    bucket = rgw_server.unique_bucket("cond")
    c = rgw_server.client
    check_conditional(rgw_cli, bucket, "ds/_leases/job.lease",
                      lambda k: c.get_object(Bucket=bucket, Key=k)["Body"].read())
    assert "Contents" not in c.list_objects_v2(Bucket=bucket)
    c.delete_bucket(Bucket=bucket)


def test_dir_store_honours_conditional_writes(dir_cli, tmp_path):
    root = tmp_path / "store"
    check_conditional(dir_cli, "lz", "ds/_leases/job.lease",
                      lambda k: (root / "lz" / k).read_bytes())
    assert not (root / "lz" / "ds/_leases/job.lease").exists()


def test_s3rver_ignores_conditional_writes(store_cli_path, s3rver_only):
    """Why the lease probe exists: a server that ignores the headers
    answers 200 to both."""
    s3rver_only.create_bucket("cond")
    cli = StoreCli(store_cli_path, s3rver_only.endpoint)
    assert putif(cli, "cond", "k", b"1", "*")["rc"] == 0
    assert putif(cli, "cond", "k", b"2", "*")["rc"] == 0
    assert s3rver_only.client.get_object(Bucket="cond", Key="k")["Body"].read() == b"2"


def test_lost_answer_then_412_is_ambiguous(store_cli_path, rgw_server):
    """A conditional create that landed but whose answer was lost (a 500
    after forwarding) is retried, and the retry's 412 is reported as an
    unknown outcome, not as a loss: the caller must read it back."""
    bucket = rgw_server.unique_bucket("cond")
    with FaultProxy(rgw_server.endpoint) as proxy:
        cli = StoreCli(store_cli_path, proxy.endpoint)
        proxy.script(["pass500"])
        key = f"lease-{uuid.uuid4().hex[:6]}"
        out = putif(cli, bucket, key, b'{"token":"mine"}', "*")
        assert out["rc"] == -17 and out["ambiguous"] and out["attempts"] == 2, out
        assert [a for m, _, a in proxy.log if m == "PUT"] == ["pass500", "pass"]
    c = rgw_server.client
    assert c.get_object(Bucket=bucket, Key=key)["Body"].read() == b'{"token":"mine"}'
    c.delete_object(Bucket=bucket, Key=key)
    c.delete_bucket(Bucket=bucket)
