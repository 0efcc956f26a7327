"""--path-style (README, "MinIO, Ceph RGW, other S3-compatible servers"):
virtual-hosted addressing for AWS endpoints, path-style with the option, for bucket names that cannot be a DNS label, and for other
endpoints.

store_cli talks to AWS host names here, but through an HTTP proxy on
127.0.0.1 (http_proxy / https_proxy) that answers every request itself and
never forwards anything: libcurl sends it absolute-URI requests
("GET http://my-bucket.s3.us-east-1.amazonaws.com/?list-type=2 HTTP/1.1"),
and for https a CONNECT naming the host, so the proxy sees which host and
path the store chose without any traffic leaving the machine. Before any AWS
host name is used, a request to a closed loopback port proves that libcurl
really goes through the proxy (had it not, that request would only have hit a
closed port on 127.0.0.1)."""
import datetime
import re
import socket
import subprocess
import types
from unittest import mock
from urllib.parse import urlsplit

import botocore.auth
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.support.paths import build_dir
from tests.support.recorder import Recorder as Proxy
from tests.support.s3rver import ACCESS_KEY, SECRET_KEY, client_env

AWS = "http://s3.us-east-1.amazonaws.com"
AWS_HOST = "s3.us-east-1.amazonaws.com"

PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def proxied_env(proxy, tmp_path):
    env = {k: v for k, v in client_env().items() if k.lower() not in PROXY_VARS}
    env.update(http_proxy=proxy.url, HTTP_PROXY=proxy.url,
               https_proxy=proxy.url, HTTPS_PROXY=proxy.url,
               AWS_REGION="us-east-1",
               AWS_CONFIG_FILE=str(tmp_path / "no-config"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"))
    return env


def store_cli(env, *args):
    return subprocess.run([str(build_dir() / "tests" / "store_cli"), "--max-attempts", "1",
                           "--timeout-ms", "20000", *args],
                          capture_output=True, text=True, timeout=60, env=env)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    """The proxy, once it is proven that store_cli's requests go through it."""
    p = Proxy()
    try:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))  # bound, never listening: refuses connections
        try:
            closed = f"http://127.0.0.1:{s.getsockname()[1]}"
            r = store_cli(proxied_env(p, tmp_path_factory.mktemp("canary")),
                          "--endpoint", closed, "check", "canary-bucket")
        finally:
            s.close()
        if r.returncode != 0 or [(m, t) for m, t, _ in p.requests] != \
                [("GET", f"{closed}/canary-bucket?encoding-type=url&list-type=2&max-keys=1")]:
            pytest.fail("store_cli does not send its requests through http_proxy (does the C "
                        "code set CURLOPT_PROXY or CURLOPT_NOPROXY?); not running the "
                        f"AWS-host tests: {r.returncode} {r.stderr!r} {p.requests!r}")
        yield p
    finally:
        p.close()


@pytest.fixture
def run(proxy, tmp_path):
    """run(*store_cli args) -> (completed process, [(method, target, headers)])
    of exactly the requests this call made."""
    env = proxied_env(proxy, tmp_path)

    def go(*args):
        proxy.requests.clear()
        r = store_cli(env, *args)
        return r, list(proxy.requests)
    return go


def one_get(run, *args):
    r, reqs = run(*args)
    assert r.returncode == 0, r.stderr
    assert len(reqs) == 1, reqs
    method, target, headers = reqs[0]
    assert method == "GET"
    u = urlsplit(target)
    assert u.scheme == "http", target  # an absolute URI: the request went to the proxy
    # the Host header sent is the host of the URI, and it is signed
    assert headers["Host"] == u.netloc, (headers, target)
    m = re.fullmatch(r"AWS4-HMAC-SHA256 Credential=(\S+)/(\d{8})/us-east-1/s3/aws4_request,"
                     r"SignedHeaders=(\S+),Signature=([0-9a-f]{64})", headers["Authorization"])
    assert m, headers["Authorization"]
    assert m.group(1) == ACCESS_KEY
    assert "host" in m.group(3).split(";"), m.group(3)
    return u, headers


# --- which host, which path -------------------------------------------------

def test_dns_safe_bucket_on_aws_is_virtual_hosted(run):
    u, _ = one_get(run, "--endpoint", AWS, "check", "my-bucket")
    assert u.netloc == "my-bucket." + AWS_HOST
    assert u.path == "/" and u.query == "encoding-type=url&list-type=2&max-keys=1"

    u, _ = one_get(run, "--endpoint", AWS, "list", "my-bucket", "dom/ds/")
    assert u.netloc == "my-bucket." + AWS_HOST and u.path == "/"
    assert "prefix=dom%2Fds%2F" in u.query.split("&"), u.query

    u, _ = one_get(run, "--endpoint", AWS, "get", "my-bucket", "dom/ds/job_completed.json")
    assert u.netloc == "my-bucket." + AWS_HOST
    assert u.path == "/dom/ds/job_completed.json" and u.query == ""


def test_path_style_option_keeps_the_endpoint_host(run):
    u, _ = one_get(run, "--endpoint", AWS, "--path-style", "check", "my-bucket")
    assert u.netloc == AWS_HOST
    assert u.path == "/my-bucket" and u.query == "encoding-type=url&list-type=2&max-keys=1"

    u, _ = one_get(run, "--endpoint", AWS, "--path-style", "get", "my-bucket", "dom/k.json")
    assert u.netloc == AWS_HOST and u.path == "/my-bucket/dom/k.json"


@pytest.mark.parametrize("bucket", ["My_Bucket", "my_bucket", "MyBucket", "ab",
                                    "my-bucket-", "my..bucket", "192.168.1.10"])
def test_bucket_that_is_no_dns_label_is_path_style_without_the_option(run, bucket):
    u, _ = one_get(run, "--endpoint", AWS, "check", bucket)
    assert u.netloc == AWS_HOST, u
    assert u.path == "/" + bucket and u.query == "encoding-type=url&list-type=2&max-keys=1"


def test_dotted_bucket_is_virtual_hosted_over_http(run):
    u, _ = one_get(run, "--endpoint", AWS, "check", "my.bucket")
    assert u.netloc == "my.bucket." + AWS_HOST and u.path == "/"


@pytest.mark.parametrize("bucket,host", [
    ("my-bucket", "my-bucket." + AWS_HOST + ":443"),
    ("my.bucket", AWS_HOST + ":443"),  # the *.s3 certificate covers one label only
])
def test_https_tunnel_names_the_chosen_host(run, bucket, host):
    """Over https the proxy sees only the CONNECT, which names the host; it
    refuses the tunnel, so the request fails, having told us the host."""
    r, reqs = run("--endpoint", "https://" + AWS_HOST, "check", bucket)
    assert r.returncode != 0
    assert [(m, t) for m, t, _ in reqs] == [("CONNECT", host)], reqs


def test_endpoint_that_is_not_aws_is_path_style(run):
    u, _ = one_get(run, "--endpoint", "http://minio.example.test:9000", "check", "my-bucket")
    assert u.netloc == "minio.example.test:9000"
    assert u.path == "/my-bucket" and u.query == "encoding-type=url&list-type=2&max-keys=1"

    u, _ = one_get(run, "--endpoint", "http://minio.example.test:9000", "get", "my-bucket",
                   "dom/k.json")
    assert u.netloc == "minio.example.test:9000" and u.path == "/my-bucket/dom/k.json"


# --- the signature is over the host that was sent ---------------------------

class _FixedDatetime(datetime.datetime):
    fixed = None

    @classmethod
    def utcnow(cls):
        return cls.fixed


def botocore_signature(url, headers):
    """botocore's S3 SigV4 signature of a GET of url, at the request's
    x-amz-date; the host it signs is url's."""
    req = AWSRequest(method="GET", url=url,
                     headers={"x-amz-content-sha256": headers["x-amz-content-sha256"]})
    auth = botocore.auth.S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1")
    _FixedDatetime.fixed = datetime.datetime.strptime(headers["x-amz-date"], "%Y%m%dT%H%M%SZ")
    with mock.patch.object(botocore.auth, "datetime",
                           types.SimpleNamespace(datetime=_FixedDatetime)):
        auth.add_auth(req)
    assert req.headers["X-Amz-Date"] == headers["x-amz-date"]
    return sent_signature(req.headers)  # botocore writes ", " between the parts


def sent_signature(headers):
    m = re.search(r"SignedHeaders=([^,]+), ?Signature=([0-9a-f]{64})", headers["Authorization"])
    assert m, headers["Authorization"]
    return m.group(1), m.group(2)


def test_virtual_hosted_signature_is_over_the_virtual_host(run):
    u, headers = one_get(run, "--endpoint", AWS, "list", "my-bucket", "dom/ds/")
    assert u.netloc == "my-bucket." + AWS_HOST
    sent = sent_signature(headers)
    assert botocore_signature(u.geturl(), headers) == sent
    # the comparison tells hosts apart: the same request signed for the
    # path-style host and path does not match
    other = f"http://{AWS_HOST}/my-bucket?{u.query}"
    assert botocore_signature(other, headers)[1] != sent[1]


def test_path_style_signature_is_over_the_endpoint_host(run):
    u, headers = one_get(run, "--endpoint", AWS, "--path-style", "list", "my-bucket", "dom/")
    assert u.netloc == AWS_HOST and u.path == "/my-bucket"
    assert botocore_signature(u.geturl(), headers) == sent_signature(headers)
