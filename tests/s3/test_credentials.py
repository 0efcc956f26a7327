"""The AWS credential chain (s3/cred.c), driven through tests/creds_cli.

Every endpoint is a loopback stand-in (standins.py); IMDS is pointed at a
closed loopback port unless a test serves it, so nothing leaves 127.0.0.1.
creds_cli prints SHA-256 hashes of the secret and the token, which the tests
compare with the hashes of what the files and stand-ins handed out.
"""

import hashlib
import json
import os
import socket
import stat
import subprocess

import pytest

from standins import AssumeRoleStandin, ContainerStandin, ImdsStandin, StsStandin

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("BOOKMARKFS_BUILD") or os.path.join(REPO, "build")
CLI = os.path.join(BUILD, "tests", "creds_cli")

ROLE_ARN = "arn:aws:iam::123456789012:role/etl-bookmarks"


def sha(s):
    return hashlib.sha256(s.encode()).hexdigest()


@pytest.fixture(scope="session")
def cli():
    if not os.access(CLI, os.X_OK):
        pytest.fail("%s is not built (ninja -C %s tests/creds_cli)" % (CLI, BUILD))
    return CLI


@pytest.fixture
def closed_port():
    """A loopback port that refuses connections: bound, never listening."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    yield s.getsockname()[1]
    s.close()


@pytest.fixture
def env(tmp_path, closed_port):
    """A clean environment: no AWS settings, an empty home, IMDS refused."""
    e = {k: v for k, v in os.environ.items()
         if not k.startswith(("AWS_", "BOOKMARKFS_"))
         and k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    home = tmp_path / "home"
    home.mkdir()
    e["HOME"] = str(home)
    e["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = "http://127.0.0.1:%d" % closed_port
    return e


class Result:
    def __init__(self, proc):
        self.rc = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.lines = [json.loads(l) for l in proc.stdout.splitlines() if l.strip()]

    @property
    def creds(self):
        assert self.rc == 0, self.stderr
        assert len(self.lines) >= 1, self.stdout
        return self.lines[0]


def run(cli, env, *args):
    proc = subprocess.run([cli, *args], env=env, capture_output=True, text=True,
                          timeout=120)
    return Result(proc)


def assert_matches(out, issued, source):
    """out (one creds_cli line) is exactly the credentials `issued`."""
    assert out["source"] == source
    assert out["access_key"] == issued["AccessKeyId"]
    assert out["has_secret"] is True
    assert out["secret_sha256"] == sha(issued["SecretAccessKey"])
    assert out["session_token_sha256"] == sha(issued["Token"])
    assert out["expiration"] == issued["expiration_epoch"]


def write_private(path, text, mode=0o600):
    path.write_text(text)
    os.chmod(path, mode)
    return path


# ---------------------------------------------------------------- providers

def test_environment(cli, env):
    env.update(AWS_ACCESS_KEY_ID="AKIAENVIRONMENT01", AWS_SECRET_ACCESS_KEY="env-secret-1",
               AWS_SESSION_TOKEN="env-token-1")
    out = run(cli, env).creds
    assert out == {"source": "environment", "access_key": "AKIAENVIRONMENT01",
                   "has_secret": True, "secret_sha256": sha("env-secret-1"),
                   "session_token_sha256": sha("env-token-1"), "expiration": 0}


def test_environment_without_token(cli, env):
    env.update(AWS_ACCESS_KEY_ID="AKIAENV2", AWS_SECRET_ACCESS_KEY="env-secret-2")
    out = run(cli, env).creds
    assert out["session_token_sha256"] is None
    assert out["secret_sha256"] == sha("env-secret-2")


def test_environment_partial_is_an_error(cli, env):
    env["AWS_ACCESS_KEY_ID"] = "AKIAHALF"
    r = run(cli, env)
    assert r.rc != 0
    assert r.lines == []
    assert "AWS_SECRET_ACCESS_KEY" in r.stderr


def test_force_refresh_of_static_credentials(cli, env):
    """A forced refresh re-resolves the chain; static keys come back as is."""
    env.update(AWS_ACCESS_KEY_ID="AKIAENV3", AWS_SECRET_ACCESS_KEY="env-secret-3")
    r = run(cli, env, "--refresh-loop", "2", "--force")
    assert [l["access_key"] for l in r.lines] == ["AKIAENV3", "AKIAENV3"]


CREDS_FILE = """\
# test credentials
[default]
aws_access_key_id = AKIAFILEDEFAULT
aws_secret_access_key = file-default-secret

[ops]
aws_access_key_id=AKIAFILEOPS
aws_secret_access_key=file-ops-secret
aws_session_token = file-ops-token
"""

CONFIG_FILE = """\
[default]
region = eu-west-1

[profile ops]
region = ap-south-1
aws_access_key_id = AKIACONFIGOPS
aws_secret_access_key = config-ops-secret

[profile cfgonly]
region = us-west-2
aws_access_key_id = AKIACONFIGONLY
aws_secret_access_key = config-only-secret
aws_session_token = config-only-token
"""


@pytest.fixture
def shared_files(env, tmp_path):
    creds = write_private(tmp_path / "credentials", CREDS_FILE)
    config = write_private(tmp_path / "config", CONFIG_FILE)
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(creds)
    env["AWS_CONFIG_FILE"] = str(config)
    return creds, config


def test_shared_files_default_profile(cli, env, shared_files):
    out = run(cli, env).creds
    assert out["source"] == "shared-files"
    assert out["access_key"] == "AKIAFILEDEFAULT"
    assert out["secret_sha256"] == sha("file-default-secret")
    assert out["session_token_sha256"] is None
    assert out["expiration"] == 0


def test_shared_files_under_home(cli, env):
    aws = os.path.join(env["HOME"], ".aws")
    os.mkdir(aws)
    with open(os.path.join(aws, "credentials"), "w") as f:
        f.write("[default]\naws_access_key_id = AKIAHOME\naws_secret_access_key = home-secret\n")
    os.chmod(os.path.join(aws, "credentials"), 0o600)
    out = run(cli, env).creds
    assert (out["source"], out["access_key"]) == ("shared-files", "AKIAHOME")
    assert out["secret_sha256"] == sha("home-secret")


def test_profile_from_option(cli, env, shared_files):
    out = run(cli, env, "--profile", "ops").creds
    assert out["access_key"] == "AKIAFILEOPS"
    assert out["secret_sha256"] == sha("file-ops-secret")
    assert out["session_token_sha256"] == sha("file-ops-token")


def test_profile_from_aws_profile(cli, env, shared_files):
    env["AWS_PROFILE"] = "ops"
    assert run(cli, env).creds["access_key"] == "AKIAFILEOPS"


def test_profile_option_beats_aws_profile(cli, env, shared_files):
    env["AWS_PROFILE"] = "ops"
    assert run(cli, env, "--profile", "default").creds["access_key"] == "AKIAFILEDEFAULT"


def test_credentials_file_beats_config_file(cli, env, shared_files):
    # "ops" is in both files: the credentials file wins, whole.
    out = run(cli, env, "--profile", "ops").creds
    assert out["access_key"] == "AKIAFILEOPS"
    assert out["secret_sha256"] == sha("file-ops-secret")


def test_profile_only_in_config_file(cli, env, shared_files):
    out = run(cli, env, "--profile", "cfgonly").creds
    assert out["source"] == "shared-files"
    assert out["access_key"] == "AKIACONFIGONLY"
    assert out["secret_sha256"] == sha("config-only-secret")
    assert out["session_token_sha256"] == sha("config-only-token")


def test_named_profile_missing_is_an_error(cli, env, shared_files):
    r = run(cli, env, "--profile", "nosuch")
    assert r.rc != 0 and r.lines == []
    assert "nosuch" in r.stderr


def test_config_region(cli, env, shared_files):
    assert run(cli, env, "--config-region").lines == [{"region": "eu-west-1"}]
    assert run(cli, env, "--config-region", "--profile", "cfgonly").lines == \
        [{"region": "us-west-2"}]
    env["AWS_PROFILE"] = "ops"
    assert run(cli, env, "--config-region").lines == [{"region": "ap-south-1"}]
    assert run(cli, env, "--config-region", "--profile", "nosuch").lines == \
        [{"region": None}]


def test_long_session_token_in_credentials_file(cli, env, tmp_path):
    # Real session tokens run to a kilobyte and more of base64.
    token = "".join("IQoJb3JpZ2luX2VjE+/=%04d" % i for i in range(80))
    secret = "long/secret+" + "x" * 300
    path = write_private(tmp_path / "credentials",
                         "[default]\naws_access_key_id = AKIALONG\r\n"
                         "aws_secret_access_key = %s\r\naws_session_token = %s\r\n"
                         "[other]\naws_session_token = not-this-one\n" % (secret, token))
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(path)
    out = run(cli, env).creds
    assert out["secret_sha256"] == sha(secret)
    assert out["session_token_sha256"] == sha(token)


def test_world_readable_credentials_file_warns(cli, env, shared_files):
    creds, _ = shared_files
    os.chmod(creds, 0o644)
    r = run(cli, env, "--refresh-loop", "3", "--force")
    assert r.rc == 0
    warnings = [l for l in r.stderr.splitlines() if "warning" in l and str(creds) in l]
    assert len(warnings) == 1, r.stderr
    assert "file-default-secret" not in r.stderr


def test_private_credentials_file_does_not_warn(cli, env, shared_files):
    r = run(cli, env)
    assert r.rc == 0
    assert "warning" not in r.stderr


@pytest.mark.parametrize("time_style", ["Z", "frac", "offset"])
def test_container_relative_uri(cli, env, time_style):
    with ContainerStandin(auth_token="ctr-auth-abc", time_style=time_style) as ctr:
        env.update(AWS_CONTAINER_CREDENTIALS_RELATIVE_URI=ctr.path,
                   BOOKMARKFS_CONTAINER_HOST="127.0.0.1:%d" % ctr.port,
                   AWS_CONTAINER_AUTHORIZATION_TOKEN="ctr-auth-abc")
        out = run(cli, env).creds
        assert_matches(out, ctr.issued[0], "container")
        assert [(q["method"], q["path"]) for q in ctr.requests] == [("GET", ctr.path)]
        assert ctr.requests[0]["headers"]["authorization"] == "ctr-auth-abc"


def test_container_full_uri_with_token_file(cli, env, tmp_path):
    with ContainerStandin(auth_token="ctr-auth-from-file") as ctr:
        tok = write_private(tmp_path / "ctr-token", "ctr-auth-from-file\n")
        env.update(AWS_CONTAINER_CREDENTIALS_FULL_URI=ctr.url + ctr.path,
                   AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=str(tok),
                   AWS_CONTAINER_AUTHORIZATION_TOKEN="ignored-when-file-set")
        assert_matches(run(cli, env).creds, ctr.issued[0], "container")
        assert ctr.requests[0]["headers"]["authorization"] == "ctr-auth-from-file"


def test_container_wrong_authorization(cli, env):
    with ContainerStandin(auth_token="the-right-one") as ctr:
        env.update(AWS_CONTAINER_CREDENTIALS_FULL_URI=ctr.url + ctr.path,
                   AWS_CONTAINER_AUTHORIZATION_TOKEN="the-wrong-one")
        r = run(cli, env)
        assert r.rc != 0 and r.lines == []
        assert "401" in r.stderr
        assert ctr.issued == []


@pytest.mark.parametrize("answer,why", [
    ((200, "application/json", "not json"), "not a JSON object"),
    ((200, "application/json", '{"AccessKeyId": "ASIAX", "Token": "t"}'), "SecretAccessKey"),
    ((200, "application/json", '{"AccessKeyId": "ASIAX", "SecretAccessKey": "s",'
      ' "Expiration": "next tuesday"}'), "Expiration"),
    ((503, "application/json", '{"code": "busy"}'), "503"),
])
def test_container_bad_answers(cli, env, answer, why):
    with ContainerStandin() as ctr:
        ctr.override = answer
        env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = ctr.url + ctr.path
        r = run(cli, env)
        assert r.rc != 0 and r.lines == []
        assert why in r.stderr
        assert len(ctr.requests) == 1


@pytest.mark.parametrize("answer,why", [
    ((200, "text/xml", "<unclosed"), "not XML"),
    ((200, "text/xml", "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult>"
      "<Credentials><AccessKeyId>ASIAX</AccessKeyId></Credentials>"
      "</AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>"),
     "lacks Credentials"),
    ((400, "text/xml", "<ErrorResponse><Error><Code>InvalidIdentityToken</Code>"
      "<Message>bad token eyJ.echoed.sig</Message></Error></ErrorResponse>"),
     "InvalidIdentityToken"),
])
def test_web_identity_bad_answers(cli, env, tmp_path, answer, why):
    token = "eyJ.echoed.sig"
    with StsStandin(ROLE_ARN, token) as sts:
        sts.override = answer
        web_identity_env(env, tmp_path, sts, token)
        r = run(cli, env, "--debug")
        assert r.rc != 0 and r.lines == []
        assert why in r.stderr
        assert token not in r.stderr


def web_identity_env(env, tmp_path, sts, token="eyJhbGciOiJSUzI1NiJ9.web-identity.sig"):
    path = write_private(tmp_path / "web-identity-token", token + "\n")
    env.update(AWS_WEB_IDENTITY_TOKEN_FILE=str(path), AWS_ROLE_ARN=ROLE_ARN,
               AWS_ENDPOINT_URL_STS=sts.url)
    return token


def test_web_identity(cli, env, tmp_path):
    token = "eyJhbGciOiJSUzI1NiJ9.web-identity-1.sig"
    with StsStandin(ROLE_ARN, token) as sts:
        web_identity_env(env, tmp_path, sts, token)
        env["AWS_ROLE_SESSION_NAME"] = "nightly-etl"
        out = run(cli, env).creds
        assert_matches(out, sts.issued[0], "web-identity")
        assert len(sts.requests) == 1
        req = sts.requests[0]
        assert req["method"] == "POST"
        p = StsStandin.params(req)
        assert p["RoleArn"] == ROLE_ARN
        assert p["RoleSessionName"] == "nightly-etl"
        assert p["WebIdentityToken"] == token
        assert token not in req["path"]  # the token never goes into a URL


def test_web_identity_default_session_name(cli, env, tmp_path):
    token = "eyJ.web-identity-2.sig"
    with StsStandin(ROLE_ARN, token) as sts:
        web_identity_env(env, tmp_path, sts, token)
        run(cli, env).creds
        name = StsStandin.params(sts.requests[0])["RoleSessionName"]
        assert name.startswith("bookmarkfs-")
        assert name[len("bookmarkfs-"):].isdigit()


def test_web_identity_denied(cli, env, tmp_path):
    token = "eyJ.web-identity-3.sig"
    with StsStandin("arn:aws:iam::123456789012:role/other", token) as sts:
        web_identity_env(env, tmp_path, sts, token)
        r = run(cli, env, "--debug")
        assert r.rc != 0 and r.lines == []
        assert "AccessDenied" in r.stderr
        assert token not in r.stderr
        assert sts.issued == []


def test_web_identity_without_role_arn(cli, env, tmp_path):
    path = write_private(tmp_path / "tok", "eyJ.x.y")
    env["AWS_WEB_IDENTITY_TOKEN_FILE"] = str(path)
    r = run(cli, env)
    assert r.rc != 0 and "AWS_ROLE_ARN" in r.stderr


def test_imds(cli, env):
    with ImdsStandin() as imds:
        env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = imds.url
        out = run(cli, env).creds
        assert_matches(out, imds.issued[0], "imds")
        reqs = imds.requests
        assert [(q["method"], q["path"]) for q in reqs] == [
            ("PUT", "/latest/api/token"),
            ("GET", ImdsStandin.ROLE_PATH),
            ("GET", ImdsStandin.ROLE_PATH + imds.role),
        ]
        assert int(reqs[0]["headers"]["x-aws-ec2-metadata-token-ttl-seconds"]) > 0
        tokens = {q["headers"].get("x-aws-ec2-metadata-token") for q in reqs[1:]}
        assert len(tokens) == 1 and tokens <= imds.tokens


def test_imds_without_role_finds_nothing(cli, env):
    with ImdsStandin(role=None) as imds:
        env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = imds.url
        r = run(cli, env)
        assert r.rc != 0 and r.lines == []
        assert "no IAM role" in r.stderr


def test_imds_disabled(cli, env):
    with ImdsStandin() as imds:
        env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = imds.url
        env["AWS_EC2_METADATA_DISABLED"] = "true"
        r = run(cli, env)
        assert r.rc != 0
        assert imds.requests == []
        assert "AWS_EC2_METADATA_DISABLED" in r.stderr


# ---------------------------------------------------------------- the chain

CHAIN = ["environment", "shared-files", "container", "web-identity", "imds"]


@pytest.mark.parametrize("first", range(len(CHAIN)))
def test_chain_order(cli, env, tmp_path, first):
    """Every source is configured from `first` on; the first one wins and the
    later endpoints are never asked."""
    token = "eyJ.chain.sig"
    with ContainerStandin(auth_token="chain-auth") as ctr, \
            StsStandin(ROLE_ARN, token) as sts, ImdsStandin() as imds:
        if first <= 0:
            env.update(AWS_ACCESS_KEY_ID="AKIACHAINENV", AWS_SECRET_ACCESS_KEY="chain-env-secret")
        if first <= 1:
            env["AWS_SHARED_CREDENTIALS_FILE"] = str(write_private(
                tmp_path / "credentials",
                "[default]\naws_access_key_id = AKIACHAINFILE\n"
                "aws_secret_access_key = chain-file-secret\n"))
        if first <= 2:
            env.update(AWS_CONTAINER_CREDENTIALS_RELATIVE_URI=ctr.path,
                       BOOKMARKFS_CONTAINER_HOST="127.0.0.1:%d" % ctr.port,
                       AWS_CONTAINER_AUTHORIZATION_TOKEN="chain-auth")
        if first <= 3:
            web_identity_env(env, tmp_path, sts, token)
        env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = imds.url

        out = run(cli, env).creds
        assert out["source"] == CHAIN[first]
        expected_key = {0: "AKIACHAINENV", 1: "AKIACHAINFILE"}
        if first in expected_key:
            assert out["access_key"] == expected_key[first]
        else:
            winner = {2: ctr, 3: sts, 4: imds}[first]
            assert_matches(out, winner.issued[0], CHAIN[first])
        asked = {"container": bool(ctr.requests), "web-identity": bool(sts.requests),
                 "imds": bool(imds.requests)}
        for name, was_asked in asked.items():
            assert was_asked == (name == CHAIN[first]), (name, asked)


def test_nothing_found(cli, env, closed_port):
    r = run(cli, env, "--debug")
    assert r.rc != 0
    assert r.lines == []
    msg = [l for l in r.stderr.splitlines() if l.startswith("creds_cli:")]
    assert len(msg) == 1
    for what in ("environment", "shared files", "container", "web identity",
                 "instance metadata", "127.0.0.1:%d" % closed_port):
        assert what in msg[0], what


# ---------------------------------------------------------------- refresh

def temporary_source(kind, env, tmp_path, expires_in):
    """Starts the stand-in for a temporary-credentials source and points the
    environment at it; returns (standin, source name)."""
    if kind == "container":
        s = ContainerStandin(auth_token="refresh-auth", expires_in=expires_in).start()
        env.update(AWS_CONTAINER_CREDENTIALS_FULL_URI=s.url + s.path,
                   AWS_CONTAINER_AUTHORIZATION_TOKEN="refresh-auth")
    elif kind == "web-identity":
        s = StsStandin(ROLE_ARN, "eyJ.refresh.sig", expires_in=expires_in).start()
        web_identity_env(env, tmp_path, s, "eyJ.refresh.sig")
    else:
        s = ImdsStandin(expires_in=expires_in).start()
        env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = s.url
    return s


@pytest.fixture
def source(request, env, tmp_path):
    started = []

    def make(kind, expires_in):
        s = temporary_source(kind, env, tmp_path, expires_in)
        started.append(s)
        return s
    yield make
    for s in started:
        s.stop()


KINDS = ["container", "web-identity", "imds"]


@pytest.mark.parametrize("kind", KINDS)
def test_refresh_within_five_minutes_of_expiry(cli, env, source, kind):
    s = source(kind, 120)
    r = run(cli, env, "--refresh-loop", "3")
    assert r.rc == 0, r.stderr
    assert len(s.issued) == 3
    for out, issued in zip(r.lines, s.issued):
        assert_matches(out, issued, kind)


@pytest.mark.parametrize("kind", KINDS)
def test_no_refresh_while_valid(cli, env, source, kind):
    s = source(kind, 3600)
    r = run(cli, env, "--refresh-loop", "3")
    assert r.rc == 0, r.stderr
    assert len(s.issued) == 1
    assert len(r.lines) == 3
    for out in r.lines:
        assert_matches(out, s.issued[0], kind)


@pytest.mark.parametrize("kind", KINDS)
def test_force_refresh(cli, env, source, kind):
    s = source(kind, 3600)
    r = run(cli, env, "--refresh-loop", "3", "--force")
    assert r.rc == 0, r.stderr
    assert len(s.issued) == 3
    assert [o["access_key"] for o in r.lines] == [i["AccessKeyId"] for i in s.issued]


@pytest.mark.parametrize("kind", KINDS)
def test_failed_refresh_keeps_valid_credentials(cli, env, source, kind):
    s = source(kind, 120)
    s.fail_after = 1
    r = run(cli, env, "--refresh-loop", "3")
    assert r.rc == 0, r.stderr
    assert len(s.issued) == 1
    for out in r.lines:
        assert_matches(out, s.issued[0], kind)
    assert len([l for l in r.stderr.splitlines() if "keeping" in l]) == 2
    assert s.issued[0]["SecretAccessKey"] not in r.stderr


def test_failed_refresh_of_expired_credentials_is_an_error(cli, env, source):
    s = source("container", -60)  # already expired when served
    s.fail_after = 1
    r = run(cli, env, "--refresh-loop", "2")
    assert r.rc != 0
    assert len(r.lines) == 1
    assert_matches(r.lines[0], s.issued[0], "container")
    assert "500" in r.stderr


def test_concurrent_gets_share_one_fetch(cli, env, source):
    s = source("container", 3600)
    r = run(cli, env, "--threads", "8", "--refresh-loop", "5")
    assert r.rc == 0, r.stderr
    assert len(r.lines) == 40
    assert len(s.issued) == 1
    for out in r.lines:
        assert_matches(out, s.issued[0], "container")


# ---------------------------------------------------------------- secrecy

def test_secrets_never_logged(cli, env, tmp_path):
    """Every provider, with debug logging, including failing refreshes and
    refused requests: no secret key, session token, web identity token,
    container authorization token or IMDS session token appears in any
    output. Outputs are checked at the end, once every issued secret is
    known."""
    runs = []
    secret = ["env-secret-never-logged", "env-token-never-logged",
              "file-secret-never-logged", "file-token-never-logged"]

    e = dict(env, AWS_ACCESS_KEY_ID="AKIASECRECY", AWS_SECRET_ACCESS_KEY=secret[0],
             AWS_SESSION_TOKEN=secret[1])
    runs.append(run(cli, e, "--debug", "--force", "--refresh-loop", "2"))

    creds = write_private(tmp_path / "secrecy-credentials",
                          "[default]\naws_access_key_id = AKIAFILESECRECY\n"
                          "aws_secret_access_key = %s\naws_session_token = %s\n"
                          % (secret[2], secret[3]), mode=0o666)
    runs.append(run(cli, dict(env, AWS_SHARED_CREDENTIALS_FILE=str(creds)), "--debug"))
    assert "warning" in runs[-1].stderr

    auth = "container-auth-never-logged"
    web_token = "eyJ.web-token-never-logged.sig"
    secret += [auth, web_token]
    with ContainerStandin(auth_token=auth, expires_in=120) as ctr, \
            StsStandin(ROLE_ARN, web_token, expires_in=120) as sts, \
            ImdsStandin(expires_in=120) as imds:
        ctr_env = dict(env, AWS_CONTAINER_CREDENTIALS_FULL_URI=ctr.url + ctr.path,
                       AWS_CONTAINER_AUTHORIZATION_TOKEN=auth)
        sts_env = dict(env)
        web_identity_env(sts_env, tmp_path, sts, web_token)
        imds_env = dict(env, AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.url)
        # Success, refreshes, then a failing refresh (old ones kept).
        for s, e in ((ctr, ctr_env), (sts, sts_env), (imds, imds_env)):
            s.fail_after = 2
            runs.append(run(cli, e, "--debug", "--refresh-loop", "3"))
            assert len(s.issued) == 2
        # Refused requests.
        runs.append(run(cli, dict(ctr_env, AWS_CONTAINER_AUTHORIZATION_TOKEN="x" + auth),
                        "--debug"))
        runs.append(run(cli, dict(sts_env, AWS_ROLE_ARN=ROLE_ARN + "-other"), "--debug"))
        for c in ctr.issued + sts.issued + imds.issued:
            secret += [c["SecretAccessKey"], c["Token"]]
        secret += sorted(imds.tokens)

    assert [r.rc == 0 for r in runs] == [True] * 5 + [False] * 2
    assert len(secret) == 6 + 2 * 6 + len(imds.tokens) and len(imds.tokens) >= 2
    for r in runs:
        for s in secret:
            assert s not in r.stdout
            assert s not in r.stderr


# ---------------------------------------------------------------- profiles: roles, processes

BASE_KEY, BASE_SECRET = "AKIAPROFILEBASE", "profile-base-secret"
ETL_ROLE = "arn:aws:iam::210987654321:role/etl-state-writer"
HOP_ROLE = "arn:aws:iam::123456789012:role/hop"


def role_files(env, tmp_path, config, credentials=None):
    """Writes the config file (and a credentials file holding the 'base'
    profile's static keys unless given) and points the environment at them."""
    if credentials is None:
        credentials = ("[base]\naws_access_key_id = %s\naws_secret_access_key = %s\n"
                       % (BASE_KEY, BASE_SECRET))
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(write_private(tmp_path / "credentials",
                                                           credentials))
    env["AWS_CONFIG_FILE"] = str(write_private(tmp_path / "config", config))


@pytest.fixture
def assume_role(env):
    started = []

    def make(roles=None, signers=None, region="eu-west-1", **kw):
        s = AssumeRoleStandin(roles or {ETL_ROLE: "ext-4711"},
                              signers or {BASE_KEY: (BASE_SECRET, None)},
                              region=region, **kw).start()
        started.append(s)
        env["AWS_ENDPOINT_URL_STS"] = s.url
        return s
    yield make
    for s in started:
        s.stop()


ETL_PROFILE = """\
[profile etl]
region = eu-west-1
role_arn = %s
source_profile = base
external_id = ext-4711
role_session_name = nightly-sales
duration_seconds = 1800
""" % ETL_ROLE


def test_role_with_source_profile(cli, env, tmp_path, assume_role):
    sts = assume_role()
    role_files(env, tmp_path, ETL_PROFILE)
    out = run(cli, env, "--profile", "etl").creds
    assert_matches(out, sts.issued[0], "assume-role")
    assert len(sts.calls) == 1
    call = sts.calls[0]
    assert call["signer"] == BASE_KEY  # signed (and verified) with the source keys
    assert {k: call["params"][k] for k in ("RoleArn", "RoleSessionName", "ExternalId",
                                           "DurationSeconds")} == {
        "RoleArn": ETL_ROLE, "RoleSessionName": "nightly-sales",
        "ExternalId": "ext-4711", "DurationSeconds": "1800"}


def test_role_defaults_and_aws_profile(cli, env, tmp_path, assume_role):
    """No session name, duration or external id: a bookmarkfs-<time> session,
    STS's default duration; the profile from AWS_PROFILE; the region signed
    for from AWS_REGION over the profile's."""
    sts = assume_role(roles={ETL_ROLE: None}, region="ap-south-1")
    role_files(env, tmp_path, "[profile etl]\nregion = eu-west-1\nrole_arn = %s\n"
               "source_profile = base\n" % ETL_ROLE)
    env.update(AWS_PROFILE="etl", AWS_REGION="ap-south-1")
    assert_matches(run(cli, env).creds, sts.issued[0], "assume-role")
    p = sts.calls[0]["params"]
    assert p["RoleSessionName"].startswith("bookmarkfs-")
    assert p["RoleSessionName"][len("bookmarkfs-"):].isdigit()
    assert "DurationSeconds" not in p and "ExternalId" not in p


@pytest.mark.parametrize("credential_source", ["Environment", "Ec2InstanceMetadata",
                                               "EcsContainer"])
def test_role_with_credential_source(cli, env, tmp_path, assume_role, credential_source):
    with ContainerStandin(auth_token="cs-auth") as ctr, ImdsStandin() as imds:
        sts = assume_role(roles={ETL_ROLE: None},
                          signers={"AKIACSENV": ("cs-env-secret", None)})
        sts.trust = [imds, ctr]
        env.update(AWS_ACCESS_KEY_ID="AKIACSENV", AWS_SECRET_ACCESS_KEY="cs-env-secret",
                   AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.url,
                   AWS_CONTAINER_CREDENTIALS_FULL_URI=ctr.url + ctr.path,
                   AWS_CONTAINER_AUTHORIZATION_TOKEN="cs-auth")
        role_files(env, tmp_path, "[profile etl]\nregion = eu-west-1\nrole_arn = %s\n"
                   "credential_source = %s\n" % (ETL_ROLE, credential_source))
        out = run(cli, env, "--profile", "etl").creds
        # --profile sets the environment's keys aside as the chain's first
        # source; credential_source picks the one that signs the call (the
        # stand-in trusts whatever IMDS and the container endpoint issued).
        assert_matches(out, sts.issued[0], "assume-role")
        signer = sts.calls[0]["signer"]
        asked = {"Environment": "AKIACSENV",
                 "Ec2InstanceMetadata": imds.issued and imds.issued[0]["AccessKeyId"],
                 "EcsContainer": ctr.issued and ctr.issued[0]["AccessKeyId"]}
        assert signer == asked[credential_source]
        assert len(imds.issued) + len(ctr.issued) == (credential_source != "Environment")


def test_environment_keys_win_over_aws_profile(cli, env, tmp_path, assume_role):
    """AWS_PROFILE (unlike --profile) does not set the environment's keys
    aside, as in the AWS CLI."""
    sts = assume_role()
    role_files(env, tmp_path, ETL_PROFILE)
    env.update(AWS_PROFILE="etl", AWS_ACCESS_KEY_ID="AKIAENVWINS",
               AWS_SECRET_ACCESS_KEY="env-wins-secret")
    out = run(cli, env).creds
    assert (out["source"], out["access_key"]) == ("environment", "AKIAENVWINS")
    assert sts.requests == []


def test_role_chain(cli, env, tmp_path, assume_role):
    """etl -> hop -> base: the second AssumeRole is signed with what the
    first one issued."""
    sts = assume_role(roles={ETL_ROLE: None, HOP_ROLE: None})
    role_files(env, tmp_path, "[profile etl]\nrole_arn = %s\nsource_profile = hop\n"
               "region = eu-west-1\n[profile hop]\nrole_arn = %s\nsource_profile = base\n"
               % (ETL_ROLE, HOP_ROLE))
    out = run(cli, env, "--profile", "etl").creds
    assert [c["params"]["RoleArn"] for c in sts.calls] == [HOP_ROLE, ETL_ROLE]
    assert sts.calls[0]["signer"] == BASE_KEY
    assert sts.calls[1]["signer"] == sts.issued[0]["AccessKeyId"]
    assert_matches(out, sts.issued[1], "assume-role")


def test_role_refreshed_before_expiry(cli, env, tmp_path, assume_role):
    sts = assume_role(expires_in=120)
    role_files(env, tmp_path, ETL_PROFILE)
    r = run(cli, env, "--profile", "etl", "--refresh-loop", "3")
    assert r.rc == 0, r.stderr
    assert len(sts.calls) == 3
    for out, issued in zip(r.lines, sts.issued):
        assert_matches(out, issued, "assume-role")


def test_role_valid_credentials_are_cached(cli, env, tmp_path, assume_role):
    sts = assume_role(expires_in=3600)
    role_files(env, tmp_path, ETL_PROFILE)
    r = run(cli, env, "--profile", "etl", "--refresh-loop", "3")
    assert r.rc == 0, r.stderr
    assert len(sts.calls) == 1 and len(r.lines) == 3


@pytest.mark.parametrize("config,why", [
    (ETL_PROFILE.replace("ext-4711", "ext-wrong"), "AccessDenied"),
    (ETL_PROFILE.replace("source_profile = base", "source_profile = nosuch"), "nosuch"),
    (ETL_PROFILE.replace("source_profile = base\n", ""), "neither source_profile"),
    (ETL_PROFILE + "credential_source = Environment\n", "both source_profile"),
    (ETL_PROFILE.replace("source_profile = base", "credential_source = Ec2Metadata"),
     "Ec2InstanceMetadata"),
    (ETL_PROFILE + "mfa_serial = arn:aws:iam::1:mfa/me\n", "mfa_serial"),
    (ETL_PROFILE.replace("1800", "60"), "duration_seconds"),
    (ETL_PROFILE.replace("source_profile = base", "source_profile = loop")
     + "[profile loop]\nrole_arn = %s\nsource_profile = etl\n" % HOP_ROLE, "loops"),
])
def test_role_errors(cli, env, tmp_path, assume_role, config, why):
    sts = assume_role()
    role_files(env, tmp_path, config)
    r = run(cli, env, "--profile", "etl", "--debug")
    assert r.rc != 0 and r.lines == [], r.stdout
    assert why in r.stderr
    assert sts.issued == []
    assert BASE_SECRET not in r.stderr


def test_role_with_web_identity_token_file(cli, env, tmp_path):
    token = "eyJ.profile-web-identity.sig"
    tok = write_private(tmp_path / "profile-token", token)
    with StsStandin(ETL_ROLE, token) as sts:
        env["AWS_ENDPOINT_URL_STS"] = sts.url
        role_files(env, tmp_path, "[profile etl]\nrole_arn = %s\n"
                   "web_identity_token_file = %s\nrole_session_name = from-profile\n"
                   % (ETL_ROLE, tok))
        assert_matches(run(cli, env, "--profile", "etl").creds, sts.issued[0],
                       "web-identity")
        assert StsStandin.params(sts.requests[0])["RoleSessionName"] == "from-profile"


PROCESS = """\
#!/bin/sh
# A credential_process: counts its runs, prints what the test asks for.
n=$(($(cat "$0.count" 2>/dev/null || echo 0) + 1))
echo $n > "$0.count"
echo "process run $n" >&2
exp=$(date -u -d "@$(($(date +%s) + EXPIRES))" +%Y-%m-%dT%H:%M:%SZ)
printf '{"Version": VERSION, "AccessKeyId": "ASIAPROC%04d", "SecretAccessKey": "proc-secret-%d", "SessionToken": "proc-token-%d", "Expiration": "%s"}\\n' $n $n $n "$exp"
exit STATUS
"""


def process_profile(env, tmp_path, expires=3600, version=1, status=0, args=""):
    script = tmp_path / "creds-helper"
    script.write_text(PROCESS.replace("EXPIRES", str(expires))
                      .replace("VERSION", str(version)).replace("STATUS", str(status)))
    os.chmod(script, 0o700)
    role_files(env, tmp_path, "[profile proc]\ncredential_process = %s%s\n"
               % (script, args), credentials="")
    return script


def test_credential_process(cli, env, tmp_path):
    script = process_profile(env, tmp_path, args=" --role 'etl writer'")
    r = run(cli, env, "--profile", "proc")
    out = r.creds
    assert (out["source"], out["access_key"]) == ("process", "ASIAPROC0001")
    assert out["secret_sha256"] == sha("proc-secret-1")
    assert out["session_token_sha256"] == sha("proc-token-1")
    assert 3500 < out["expiration"] - int(__import__("time").time()) <= 3600
    assert "process run 1" in r.stderr  # its stderr passes through
    assert (tmp_path / (script.name + ".count")).read_text().strip() == "1"


def test_credential_process_refreshed_before_expiry(cli, env, tmp_path):
    process_profile(env, tmp_path, expires=120)
    r = run(cli, env, "--profile", "proc", "--refresh-loop", "3")
    assert r.rc == 0, r.stderr
    assert [l["access_key"] for l in r.lines] == ["ASIAPROC%04d" % i for i in (1, 2, 3)]


@pytest.mark.parametrize("kw,why", [
    ({"status": 3}, "exited with status 3"),
    ({"version": 2}, "Version"),
    ({"args": "; echo trailing"}, "not print a JSON object"),
    ({"args": "; head -c 70000 /dev/zero | tr '\\0' x"}, "printed more than 64 KiB"),
])
def test_credential_process_errors(cli, env, tmp_path, kw, why):
    process_profile(env, tmp_path, **kw)
    r = run(cli, env, "--profile", "proc", "--debug")
    assert r.rc != 0 and r.lines == []
    assert why in r.stderr
    assert "proc-secret" not in r.stderr and "proc-token" not in r.stderr


def test_static_keys_of_the_credentials_file_beat_credential_process(cli, env, tmp_path):
    script = process_profile(env, tmp_path)
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(write_private(
        tmp_path / "credentials2",
        "[proc]\naws_access_key_id = AKIAFILEFIRST\naws_secret_access_key = s\n"))
    assert run(cli, env, "--profile", "proc").creds["access_key"] == "AKIAFILEFIRST"
    assert not (tmp_path / (script.name + ".count")).exists()


def test_role_and_process_secrets_never_logged(cli, env, tmp_path, assume_role):
    """AssumeRole through a role chain and credential_process, with debug
    logging and refreshes: neither the source profile's secret nor any
    secret or token they issued appears in any output."""
    sts = assume_role(roles={ETL_ROLE: "ext-4711", HOP_ROLE: None}, expires_in=120)
    role_files(env, tmp_path, ETL_PROFILE.replace("source_profile = base",
                                                  "source_profile = hop")
               + "[profile hop]\nrole_arn = %s\nsource_profile = base\n" % HOP_ROLE)
    runs = [run(cli, env, "--profile", "etl", "--debug", "--refresh-loop", "2")]
    assert runs[0].rc == 0, runs[0].stderr
    assert len(sts.issued) == 4  # two hops, twice
    secret = [BASE_SECRET] + [c[f] for c in sts.issued for f in ("SecretAccessKey", "Token")]
    penv = dict(env)
    (tmp_path / "p").mkdir()
    process_profile(penv, tmp_path / "p", expires=120)
    runs.append(run(cli, penv, "--profile", "proc", "--debug", "--refresh-loop", "2"))
    assert runs[1].rc == 0 and len(runs[1].lines) == 2, runs[1].stderr
    secret += ["proc-secret-1", "proc-token-1", "proc-secret-2", "proc-token-2"]
    for r in runs:
        assert "debug:" in r.stderr
        for s in secret:
            assert s not in r.stdout and s not in r.stderr, s
