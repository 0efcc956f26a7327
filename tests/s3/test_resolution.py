"""Which endpoint and which signing region the S3 store uses (README,
"Command line": --endpoint, --region), seen by a loopback server that records each request's Host, path and
Authorization header (s3rver does not check signatures, so the credential
scope is read here)."""
import re
import subprocess

import pytest

from tests.support.paths import build_dir
from tests.support.recorder import Recorder
from tests.support.s3rver import client_env


@pytest.fixture
def rec():
    r = Recorder()
    yield r
    r.close()


@pytest.fixture
def closed_port_url():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


def cli(args, env_extra, tmp_path, drop=()):
    env = client_env()
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", *drop):
        env.pop(name, None)
    env["AWS_CONFIG_FILE"] = str(tmp_path / "no-config")
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "no-credentials")
    env.update(env_extra)
    return subprocess.run([str(build_dir() / "tests" / "store_cli"), *args, "check", "bkt"],
                          capture_output=True, text=True, timeout=60, env=env)


def scope_region(auth):
    m = re.search(r"Credential=[^/]+/\d{8}/([^/]+)/s3/aws4_request", auth)
    assert m, auth
    return m.group(1)


def test_endpoint_option_then_aws_endpoint_url_s3_then_aws_endpoint_url(rec, closed_port_url, tmp_path):
    r = cli(["--path-style"], {"AWS_ENDPOINT_URL_S3": rec.url, "AWS_ENDPOINT_URL": closed_port_url},
            tmp_path)
    assert r.returncode == 0, r.stderr
    r = cli(["--path-style"], {"AWS_ENDPOINT_URL": rec.url}, tmp_path, drop=("AWS_ENDPOINT_URL_S3",))
    assert r.returncode == 0, r.stderr
    r = cli(["--path-style", "--endpoint", rec.url], {"AWS_ENDPOINT_URL_S3": closed_port_url}, tmp_path)
    assert r.returncode == 0, r.stderr
    assert len(rec.requests) == 3
    r = cli(["--path-style"], {"AWS_ENDPOINT_URL_S3": closed_port_url, "AWS_ENDPOINT_URL": rec.url},
            tmp_path)
    assert r.returncode != 0 and "Cannot connect" in r.stderr
    # path-style: the bucket is the first path segment, the host is the endpoint's
    _, path, headers = rec.requests[0]
    host = headers["Host"]
    assert host == rec.url.split("//")[1]
    assert path.startswith("/bkt?") or path.startswith("/bkt/?"), path


def test_region_order(rec, tmp_path):
    cfg = tmp_path / "config"
    cfg.write_text("[default]\nregion = ap-south-1\n[profile other]\nregion = eu-north-1\n")
    base = {"AWS_ENDPOINT_URL_S3": rec.url, "AWS_CONFIG_FILE": str(cfg)}
    cases = [
        (["--region", "sa-east-1"], {"AWS_REGION": "eu-west-3", "AWS_DEFAULT_REGION": "us-west-2"}, "sa-east-1"),
        ([], {"AWS_REGION": "eu-west-3", "AWS_DEFAULT_REGION": "us-west-2"}, "eu-west-3"),
        ([], {"AWS_DEFAULT_REGION": "us-west-2"}, "us-west-2"),
        ([], {}, "ap-south-1"),
        ([], {"AWS_PROFILE": "other"}, "eu-north-1"),
    ]
    for args, env, expected in cases:
        rec.requests.clear()
        r = cli(["--path-style", *args], {**base, **env}, tmp_path)
        assert r.returncode == 0, (args, env, r.stderr)
        assert scope_region(rec.requests[-1][2].get("Authorization", "")) == expected, (args, env)
    rec.requests.clear()
    r = cli(["--path-style"], {"AWS_ENDPOINT_URL_S3": rec.url}, tmp_path)
    assert r.returncode == 0, r.stderr
    assert scope_region(rec.requests[-1][2].get("Authorization", "")) == "us-east-1"
