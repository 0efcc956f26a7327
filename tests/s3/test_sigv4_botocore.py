"""Differential test of s3/sigv4.c against botocore's S3 SigV4 signer.

Random requests (object keys full of reserved characters and UTF-8, S3 query
parameters, extra headers, session tokens, regions, times) are signed both by
botocore.auth.S3SigV4Auth and by tests/sigv4_cli (one process for the whole
batch); canonical request, string to sign, signature and Authorization must
agree, and the encoded path must be what an independent encoder produces.

Reproduce a run with SIGV4_FUZZ_SEED=<seed printed on failure>; change the
batch size with SIGV4_FUZZ_COUNT.
"""

import base64
import datetime
import hashlib
import json
import os
import random
import string
import subprocess
import types
from pathlib import Path
from unittest import mock
from urllib.parse import quote

import pytest
import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("BOOKMARKFS_BUILD", REPO / "build"))
CLI = BUILD / "tests" / "sigv4_cli"

SEED = int(os.environ.get("SIGV4_FUZZ_SEED", random.SystemRandom().randrange(2**32)))
COUNT = int(os.environ.get("SIGV4_FUZZ_COUNT", "1500"))

RESERVED = " !\"#$%&'()*+,:;=?@[]^`{|}~"
UNICODE = ["é", "ü", "ñ", "Ω", "ß", "日本語", "中文", "데이터", "😀", "🚀", "👩‍💻"]
REGIONS = ["us-east-1", "us-west-2", "eu-central-1", "eu-west-3", "ap-southeast-2",
           "sa-east-1", "me-south-1", "il-central-1", "cn-north-1"]
B64 = string.ascii_letters + string.digits + "+/"


class _FixedDatetime(datetime.datetime):
    """datetime whose utcnow() is the signing time under test."""

    fixed = None

    @classmethod
    def utcnow(cls):
        return cls.fixed


class _RecordingAuth(botocore.auth.S3SigV4Auth):
    """botocore's S3 signer, keeping the intermediate strings it computes."""

    def canonical_request(self, request):
        self.recorded_cr = super().canonical_request(request)
        return self.recorded_cr

    def string_to_sign(self, request, canonical_request):
        self.recorded_sts = super().string_to_sign(request, canonical_request)
        return self.recorded_sts

    def signature(self, string_to_sign, request):
        self.recorded_sig = super().signature(string_to_sign, request)
        return self.recorded_sig


def botocore_sign(case, secret_key=None):
    """Signs case with botocore; returns its canonical request, string to
    sign, signature and Authorization header."""
    path_enc = quote(case["path"], safe="/")
    query_enc = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}"
                         for k, v in case["query"])
    url = f"{case['scheme']}://{case['host']}{path_enc}"
    if query_enc:
        url += "?" + query_enc
    req = AWSRequest(method=case["method"], url=url,
                     headers=dict(case["headers"]),
                     data=case["body"])
    req.context["client_config"] = types.SimpleNamespace(
        s3={"payload_signing_enabled": case["payload_hash"] != "UNSIGNED-PAYLOAD"})
    creds = Credentials(case["access_key"], secret_key or case["secret_key"],
                        case["session_token"])
    auth = _RecordingAuth(creds, "s3", case["region"])
    _FixedDatetime.fixed = datetime.datetime.fromtimestamp(
        case["time"], datetime.timezone.utc).replace(tzinfo=None)
    with mock.patch.object(botocore.auth, "datetime",
                           types.SimpleNamespace(datetime=_FixedDatetime)):
        auth.add_auth(req)
    return {
        "canonical_request": auth.recorded_cr,
        "string_to_sign": auth.recorded_sts,
        "signature": auth.recorded_sig,
        "authorization": req.headers["Authorization"],
        "encoded_path": path_enc,
    }


def cli_sign(cases):
    """Signs every case with one sigv4_cli process."""
    if not CLI.exists():
        pytest.fail(f"{CLI} is missing: build it (ninja -C <build> tests/sigv4_cli) "
                    "and point BOOKMARKFS_BUILD at the build directory")
    lines = []
    for c in cases:
        lines.append(json.dumps({
            "method": c["method"], "host": c["host"], "path": c["path"],
            "query": [list(p) for p in c["query"]],
            "headers": [list(h) for h in c["headers"]],
            "payload_hash": c["payload_hash"], "region": c["region"],
            "time": c["time"], "access_key": c["access_key"],
            "secret_key": c["secret_key"], "session_token": c["session_token"],
        }))
    proc = subprocess.run([str(CLI)], input="\n".join(lines) + "\n",
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(out) == len(cases)
    return out


def differences(bot, cli):
    """Names of the fields where the two signers disagree."""
    if "error" in cli:
        return ["error: " + cli["error"]]
    diffs = [k for k in ("canonical_request", "string_to_sign", "signature",
                         "encoded_path") if bot[k] != cli[k]]
    # botocore separates the Authorization fields with ", ", AWS's examples
    # with ","; both are accepted.
    if bot["authorization"].replace(", ", ",") != cli["authorization"]:
        diffs.append("authorization")
    # What goes on the wire is what was signed: the query on the request line
    # is the canonical one, every header sent is a canonical header line, and
    # Authorization comes last.
    cr_lines = bot["canonical_request"].split("\n")
    if cli["encoded_query"] != cr_lines[2]:
        diffs.append("encoded_query")
    canon_headers = cr_lines[3:cr_lines.index("", 3)]
    sent = cli["send_headers"]
    if ([h.replace(": ", ":", 1) for h in sent[:-1]] != canon_headers
            or sent[-1] != "Authorization: " + cli["authorization"]):
        diffs.append("send_headers")
    return diffs


# ---- random requests ---------------------------------------------------------

def rand_segment(rng):
    kind = rng.random()
    if kind < 0.1:
        return f"upload_date={rng.randrange(10**9, 2 * 10**9)}"
    if kind < 0.13:
        return rng.choice(["", ".", ".."])  # S3 keys are not normalized
    parts = []
    for _ in range(rng.randint(1, 12)):
        r = rng.random()
        if r < 0.45:
            parts.append(rng.choice(string.ascii_letters + string.digits + "-._"))
        elif r < 0.8:
            parts.append(rng.choice(RESERVED))
        else:
            parts.append(rng.choice(UNICODE))
    return "".join(parts)


def rand_key(rng):
    return "/".join(rand_segment(rng) for _ in range(rng.randint(1, 6)))


def rand_b64(rng, n):
    s = "".join(rng.choice(B64) for _ in range(n))
    return s + "=" * rng.randint(0, 2)


def rand_query(rng):
    pool = [
        lambda: ("list-type", "2"),
        lambda: ("prefix", rand_key(rng) + rng.choice(["", "/"])),
        lambda: ("continuation-token", rand_b64(rng, rng.randint(8, 60))),
        lambda: ("delimiter", rng.choice(["/", "=", "+", " "])),
        lambda: ("max-keys", str(rng.randint(0, 1000))),
        lambda: ("start-after", rand_key(rng)),
        lambda: ("encoding-type", "url"),
        lambda: ("fetch-owner", rng.choice(["true", "false", ""])),
        lambda: (rng.choice(["uploads", "lifecycle", "versioning", "tagging", "acl"]), ""),
        lambda: ("uploadId", rand_b64(rng, 24)),
        lambda: ("partNumber", str(rng.randint(1, 10000))),
        lambda: (rand_segment(rng) or "x", rand_segment(rng)),
    ]
    n = rng.choice([0, 0, 1, 2, 3, 4, 6])
    q = [rng.choice(pool)() for _ in range(n)]
    if q and rng.random() < 0.1:
        q.append((q[0][0], rand_segment(rng)))  # repeated name
    return q


def rand_case(rng, body_md5=None):
    method = rng.choice(["GET", "PUT", "HEAD"])
    region = rng.choice(REGIONS)
    bucket = "bkt-" + "".join(rng.choice(string.ascii_lowercase + string.digits)
                              for _ in range(rng.randint(3, 20)))
    style = rng.random()
    key = rand_key(rng)
    if style < 0.4:
        scheme, host, path = "https", f"{bucket}.s3.{region}.amazonaws.com", "/" + key
    elif style < 0.6:
        scheme, host, path = "https", f"s3.{region}.amazonaws.com", f"/{bucket}/{key}"
    elif style < 0.8:
        scheme, host, path = "http", f"127.0.0.1:{rng.randint(1024, 65535)}", f"/{bucket}/{key}"
    else:
        scheme, host, path = "http", "localhost:9000", rng.choice([f"/{bucket}/{key}", f"/{bucket}", "/"])

    body = b""
    if method == "PUT":
        body = json.dumps({rand_segment(rng): rng.random()}).encode()

    headers = []
    def name(n):
        return "".join(c.upper() if rng.random() < 0.3 else c for c in n)
    if rng.random() < 0.5:
        headers.append((name("content-type"), rng.choice([
            "application/json", "text/plain; charset=utf-8",
            "  application/octet-stream  ", "multipart/form-data;   boundary=x\ty",
            "application/x-www-form-urlencoded"])))
    if rng.random() < 0.4:
        headers.append((name("content-md5"),
                        base64.b64encode(hashlib.md5(body).digest()).decode()))
    if rng.random() < 0.3:
        headers.append((name("x-amz-meta-") + rng.choice(["job", "note", "owner"]),
                        rng.choice(["", "a  b   c", " lead", "trail\t ", "x=y&z"])))
    if rng.random() < 0.2:
        headers.append((name("x-amz-storage-class"), "REDUCED_REDUNDANCY"))

    temporary = rng.random() < 0.5
    access_key = ("ASIA" if temporary else "AKIA") + "".join(
        rng.choice(string.ascii_uppercase + string.digits) for _ in range(16))
    return {
        "method": method, "scheme": scheme, "host": host, "path": path,
        "query": rand_query(rng), "headers": headers, "body": body,
        "payload_hash": (hashlib.sha256(body).hexdigest() if rng.random() < 0.8
                         else "UNSIGNED-PAYLOAD"),
        "region": region,
        "time": rng.randrange(946684800, 4102444800),  # 2000 .. 2099
        "access_key": access_key,
        "secret_key": "".join(rng.choice(B64) for _ in range(40)),
        "session_token": rand_b64(rng, rng.randint(100, 400)) if temporary else None,
    }


# ---- tests ---------------------------------------------------------------------

def test_harness_reproduces_aws_published_example():
    """botocore as driven here gives AWS's published GET Object signature, so
    the harness (time patching included) signs what it is told to."""
    case = {
        "method": "GET", "scheme": "https", "host": "examplebucket.s3.amazonaws.com",
        "path": "/test.txt", "query": [], "headers": [("Range", "bytes=0-9")],
        "body": b"", "payload_hash": hashlib.sha256(b"").hexdigest(),
        "region": "us-east-1", "time": 1369353600,
        "access_key": "AKIAIOSFODNN7EXAMPLE",
        "secret_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "session_token": None,
    }
    bot = botocore_sign(case)
    assert bot["signature"] == "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    (cli,) = cli_sign([case])
    assert differences(bot, cli) == []


def test_random_requests_match_botocore():
    print(f"sigv4 fuzz seed: {SEED} (rerun with SIGV4_FUZZ_SEED={SEED})")
    rng = random.Random(SEED)
    cases = [rand_case(rng) for _ in range(COUNT)]
    assert COUNT >= 1000 or "SIGV4_FUZZ_COUNT" in os.environ

    # One more request where the C side gets a different secret: the
    # comparison must see it.
    wrong = dict(cases[0])
    wrong["secret_key"] = cases[0]["secret_key"][::-1] + "x"
    outputs = cli_sign(cases + [wrong])

    mismatches = []
    for i, (case, cli) in enumerate(zip(cases, outputs)):
        diffs = differences(botocore_sign(case), cli)
        if diffs:
            mismatches.append((i, diffs, case, cli))
    detail = "\n".join(f"#{i} {d}\n  case={c!r}\n  cli={o!r}"
                       for i, d, c, o in mismatches[:3])
    assert not mismatches, (f"seed {SEED}: {len(mismatches)} of {COUNT} requests "
                            f"differ from botocore\n{detail}")

    # The wrong secret changes the signature (and only what depends on it).
    assert differences(botocore_sign(cases[0]), outputs[-1]) == ["signature", "authorization"]
    assert outputs[-1]["canonical_request"] == outputs[0]["canonical_request"]


def test_coverage_of_the_random_batch():
    """The generator really produces what the comparison is meant to cover."""
    rng = random.Random(SEED)
    cases = [rand_case(rng) for _ in range(COUNT)]
    keys = "".join(c["path"] for c in cases)
    for ch in RESERVED + "/":
        assert ch in keys, ch
    assert any(ord(ch) > 0xFFFF for ch in keys)  # emoji
    assert any("\u3040" <= ch <= "\u9fff" for ch in keys)  # CJK
    assert "upload_date=" in keys
    queries = [p for c in cases for p in c["query"]]
    assert any(v == "" for _, v in queries)
    tokens = "".join(v for k, v in queries if k == "continuation-token")
    assert "+" in tokens and "/" in tokens and "=" in tokens
    assert {c["method"] for c in cases} == {"GET", "PUT", "HEAD"}
    assert any(c["session_token"] for c in cases) and any(not c["session_token"] for c in cases)
    names = {h[0].lower() for c in cases for h in c["headers"]}
    assert {"content-type", "content-md5"} <= names
    assert any(c["payload_hash"] == "UNSIGNED-PAYLOAD" for c in cases)
