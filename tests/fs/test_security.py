"""Security (README, "Bad input, store faults, security"): secrets never in
logs, TLS verified by default, the mount private to its owner unless -o
allow_other, and a warning for a credentials file that others can read."""
import os
import pwd
import shutil
import subprocess
import tempfile

import pytest

from tests.support.faultproxy import FaultProxy
from tests.support.faults import (EACCES_TEXT, EndpointStore, last_upload, mount_once,
                                  sh_write)
from tests.support.mount import LZ, DirStore, Mount
from tests.support.s3rver import client_env
from tests.support.tls import TlsS3rver, make_cert


# ---- secrets ---------------------------------------------------------------

@pytest.fixture(scope="module")
def session(rgw_server):
    """Temporary credentials from RGW's STS gateway, which checks the secret
    and the session token of every request: both must work, and never be
    logged."""
    return rgw_server.session_credentials()


def file_credentials_env(tmp_path, session, mode=0o600):
    creds = tmp_path / "aws" / "credentials"
    creds.parent.mkdir(parents=True, exist_ok=True)
    creds.write_text(f"[default]\naws_access_key_id = {session['AccessKeyId']}\n"
                     f"aws_secret_access_key = {session['SecretAccessKey']}\n"
                     f"aws_session_token = {session['SessionToken']}\n")
    os.chmod(creds, mode)
    env = client_env()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        env.pop(name, None)
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(creds),
               AWS_CONFIG_FILE=str(tmp_path / "aws" / "config"),
               HOME=str(tmp_path / "home"))
    return env


@pytest.mark.parametrize("source", ["environment", "file"])
def test_secrets_never_appear_in_debug_logs(rgw_server, session, tmp_path, source):
    if source == "environment":
        env = client_env(AWS_ACCESS_KEY_ID=session["AccessKeyId"],
                         AWS_SECRET_ACCESS_KEY=session["SecretAccessKey"],
                         AWS_SESSION_TOKEN=session["SessionToken"])
    else:
        env = file_credentials_env(tmp_path, session)
    with FaultProxy(rgw_server.sts_endpoint) as proxy:
        store = EndpointStore(rgw_server, proxy.endpoint, env=env)
        with Mount(store, tmp_path / "mnt", extra=["-d"]) as m:
            job = m.path / "j"
            job.mkdir()
            (job / "k").write_text('{"offset": 1}')
            assert sh_write(job / "running").returncode == 0
            proxy.script(["expired"])        # a forced refresh of the credentials
            assert sh_write(job / "completed").returncode == 0
            proxy.script(["badsignature"])   # a failure, logged in full
            assert EACCES_TEXT in sh_write(job / "running").stderr
            proxy.script(["403"] * 3)        # at load, in the error paths
            with pytest.raises(OSError):
                (m.path / "other" / "k").read_text()
        log = m.log_path.read_bytes()
    # the log is really a debug log, with the request signing in it
    assert b"debug:" in log and b"credentials expired, refreshing them" in log
    assert b"SignatureDoesNotMatch" in log and session["AccessKeyId"].encode() in log
    for secret in (session["SecretAccessKey"], session["SessionToken"]):
        assert secret.encode() not in log
        assert secret[:12].encode() not in log  # nor a prefix of it


def test_a_credentials_file_readable_by_others_draws_a_warning(rgw_server, session,
                                                               tmp_path):
    warning = "accessible by other users"
    for mode, warned in ((0o644, True), (0o600, False)):
        env = file_credentials_env(tmp_path, session, mode)
        store = EndpointStore(rgw_server, rgw_server.sts_endpoint, env=env)
        with Mount(store, tmp_path / f"mnt-{mode:o}") as m:
            (m.path / "j").mkdir()
            (m.path / "j" / "k").write_text("1")
            assert sh_write(m.path / "j" / "running").returncode == 0
        assert (warning in m.log()) == warned, m.log()
        if warned:
            assert "chmod 600" in m.log() and "644" in m.log()


# ---- TLS -------------------------------------------------------------------

class TlsRgw:
    """RGW's HTTPS endpoint as a test server: the store is reached over TLS,
    boto3 reads what it stored over plain HTTP from the same gateway."""

    def __init__(self, rgw, wrong_ca):
        self.rgw = rgw
        self.ca = rgw.ca
        self.wrong_ca = wrong_ca
        self.endpoint = rgw.tls_endpoint
        self.client = rgw.client
        self.create_bucket = rgw.create_bucket


@pytest.fixture(scope="module", params=["s3rver", "rgw"])
def tls_server(request):
    """s3rver over TLS, and RGW's HTTPS endpoint (which checks the
    signature of what comes over TLS too)."""
    d = tempfile.mkdtemp(prefix="bookmarkfs-tls-")
    try:
        wrong_cert, _ = make_cert(d, dns="localhost", name="other-host")
        if request.param == "rgw":
            yield TlsRgw(request.getfixturevalue("rgw_server"), wrong_cert)
            return
        cert, key = make_cert(d, ip="127.0.0.1")
        with TlsS3rver(cert, key) as server:
            server.ca = cert
            server.wrong_ca = wrong_cert
            yield server
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_tls_is_verified_by_default(tls_server, tmp_path):
    store = EndpointStore(tls_server, tls_server.endpoint)
    assert store.endpoint.startswith("https://127.0.0.1:")
    r = mount_once(store, tmp_path / "mnt")
    assert r.returncode != 0
    assert "TLS" in r.stderr and tls_server.endpoint in r.stderr, r.stderr
    assert not os.path.ismount(tmp_path / "mnt")


def test_a_ca_file_for_another_host_is_refused(tls_server, tmp_path):
    store = EndpointStore(tls_server, tls_server.endpoint,
                          extra=[f"--ca-file={tls_server.wrong_ca}"])
    r = mount_once(store, tmp_path / "mnt")
    assert r.returncode != 0 and "TLS" in r.stderr, r.stderr
    assert not os.path.ismount(tmp_path / "mnt")


def test_tls_works_with_the_ca_file(tls_server, tmp_path):
    store = EndpointStore(tls_server, tls_server.endpoint,
                          extra=[f"--ca-file={tls_server.ca}"])
    with Mount(store, tmp_path / "mnt") as m:
        job = m.path / "j"
        job.mkdir()
        (job / "k").write_text('"over tls"')
        r = sh_write(job / "completed")
        assert r.returncode == 0, r.stderr
        key = last_upload(job, "completed")["key"]
    assert store.get(LZ, key) == b'{"k":"over tls"}'  # boto3, verifying the same CA


def ca_bundle_env(tmp_path, env_bundle=None, profile_bundle=None):
    """client_env with AWS_CA_BUNDLE and/or a config file whose default
    profile has ca_bundle (each only when given)."""
    env = client_env()
    env.pop("AWS_CA_BUNDLE", None)
    config = tmp_path / "aws-config"
    config.write_text(f"[default]\nca_bundle = {profile_bundle}\n" if profile_bundle
                      else "[default]\n")
    env["AWS_CONFIG_FILE"] = str(config)
    if env_bundle:
        env["AWS_CA_BUNDLE"] = env_bundle
    return env


def aws_cli_lists(server, env):
    """Whether the AWS CLI, in the same environment, lists the LZ bucket."""
    r = subprocess.run(["aws", "s3api", "list-objects-v2", "--bucket", LZ,
                        "--endpoint-url", server.endpoint, "--max-items", "1"],
                       env=env, capture_output=True, text=True, timeout=120)
    return r.returncode == 0


@pytest.mark.parametrize("where", ["AWS_CA_BUNDLE", "ca_bundle"])
def test_tls_with_the_aws_ca_bundle(tls_server, tmp_path, where):
    """AWS_CA_BUNDLE, or the profile's ca_bundle, names the bundle to trust,
    as for the AWS CLI (no --ca-file)."""
    env = ca_bundle_env(tmp_path, **{"env_bundle" if where == "AWS_CA_BUNDLE"
                                     else "profile_bundle": tls_server.ca})
    assert aws_cli_lists(tls_server, env)
    store = EndpointStore(tls_server, tls_server.endpoint, env=env)
    with Mount(store, tmp_path / "mnt") as m:
        job = m.path / "j"
        job.mkdir()
        (job / "k").write_text(f'"{where}"')
        assert sh_write(job / "completed").returncode == 0
        key = last_upload(job, "completed")["key"]
    assert store.get(LZ, key) == f'{{"k":"{where}"}}'.encode()


def test_aws_ca_bundle_replaces_the_profiles_and_ca_file_adds(tls_server, tmp_path):
    """AWS_CA_BUNDLE wins over ca_bundle and takes the place of the system
    bundle (the AWS CLI agrees); --ca-file adds certificates on top."""
    env = ca_bundle_env(tmp_path, env_bundle=tls_server.wrong_ca,
                        profile_bundle=tls_server.ca)
    assert not aws_cli_lists(tls_server, env)
    store = EndpointStore(tls_server, tls_server.endpoint, env=env)
    r = mount_once(store, tmp_path / "mnt")
    assert r.returncode == 1 and "TLS" in r.stderr, r.stderr
    assert not os.path.ismount(tmp_path / "mnt")
    store = EndpointStore(tls_server, tls_server.endpoint, env=env,
                          extra=[f"--ca-file={tls_server.ca}"])
    with Mount(store, tmp_path / "mnt") as m:
        (m.path / "j").mkdir()
        assert sh_write(m.path / "j" / "running").returncode == 0


def test_an_unreadable_ca_bundle_is_one_line_at_mount(tls_server, tmp_path):
    missing = tmp_path / "no-such-bundle.pem"
    env = ca_bundle_env(tmp_path, env_bundle=str(missing))
    r = mount_once(EndpointStore(tls_server, tls_server.endpoint, env=env),
                   tmp_path / "mnt")
    assert r.returncode == 1
    assert r.stderr.strip() == (f"bookmarkfs: The CA bundle {missing} (from "
                                "AWS_CA_BUNDLE) cannot be read: No such file or "
                                "directory."), r.stderr
    assert not os.path.ismount(tmp_path / "mnt")


# ---- who may use the mount --------------------------------------------------

def unused_uid():
    for uid in range(54321, 60000):
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
    pytest.fail("no unused uid")


def as_other_user(uid, *cmd):
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                           "--", *cmd], capture_output=True, text=True, timeout=60)


@pytest.fixture
def public_dir():
    """A directory every user may enter (pytest's tmp_path is private)."""
    if os.geteuid() != 0:
        pytest.fail("these tests mount as root and switch to another uid")
    d = tempfile.mkdtemp(prefix="bookmarkfs-sec-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def mount_with_a_key(public_dir, extra=()):
    store = DirStore(os.path.join(public_dir, "store"))
    m = Mount(store, os.path.join(public_dir, "mnt"), extra=extra)
    m.start()
    (m.path / "j").mkdir()
    (m.path / "j" / "k").write_text('"mine"')
    return m


def test_the_mount_is_private_to_its_owner(public_dir):
    uid = unused_uid()
    m = mount_with_a_key(public_dir)
    try:
        # the other user reaches the mount point: what stops it is the mount
        r = as_other_user(uid, "ls", public_dir)
        assert r.returncode == 0 and "mnt" in r.stdout, r.stderr
        for cmd in (["ls", str(m.path)], ["cat", str(m.path / "j" / "k")],
                    ["sh", "-c", 'echo 1 > "$0"', str(m.path / "j" / "k")],
                    ["sh", "-c", 'echo 1 > "$0"', str(m.path / "j" / "running")]):
            r = as_other_user(uid, *cmd)
            assert r.returncode != 0 and EACCES_TEXT in r.stderr, (cmd, r.stderr)
        assert (m.path / "j" / "k").read_text() == '"mine"\n'
        assert last_upload(m.path / "j") == {}
    finally:
        m.stop()


def test_allow_other_lets_others_read(public_dir):
    uid = unused_uid()
    m = mount_with_a_key(public_dir, extra=["-o", "allow_other"])
    try:
        r = as_other_user(uid, "cat", str(m.path / "j" / "k"))
        assert r.returncode == 0 and r.stdout == '"mine"\n', r.stderr
        r = as_other_user(uid, "ls", str(m.path / "j"))
        assert r.returncode == 0 and "k" in r.stdout.split(), r.stderr
    finally:
        m.stop()


def test_allow_other_does_not_let_others_write(public_dir):
    uid = unused_uid()
    m = mount_with_a_key(public_dir, extra=["-o", "allow_other"])
    try:
        for cmd in (["sh", "-c", 'echo 1 > "$0"', str(m.path / "j" / "k")],
                    ["sh", "-c", 'echo 1 > "$0"', str(m.path / "j" / "running")],
                    ["mkdir", str(m.path / "theirs")]):
            r = as_other_user(uid, *cmd)
            assert r.returncode != 0 and EACCES_TEXT in r.stderr, (cmd, r.stderr)
        assert (m.path / "j" / "k").read_text() == '"mine"\n'
        assert last_upload(m.path / "j") == {}
    finally:
        m.stop()


# ---- the cache dir, the journal directory and the journal ------------------

OTHER_UID = 65534  # nobody: stands for another user on the machine


def _journal_dir(cache):
    (d,) = [p for p in cache.iterdir() if len(p.name) == 64]  # SHA-256 of the identity
    return d


def _tamper(cache, how):
    """Makes the cache dir, the journal directory or the journal look like
    another user's (or reachable through a link); returns an undo."""
    if how == "cache-dir-owner":
        os.chown(cache, OTHER_UID, -1)
        return lambda: os.chown(cache, os.getuid(), -1)
    if how == "cache-dir-mode":
        os.chmod(cache, 0o777)
        return lambda: os.chmod(cache, 0o700)
    if how == "cache-dir-group-writable":
        os.chmod(cache, 0o770)
        return lambda: os.chmod(cache, 0o700)
    if how == "cache-dir-symlink":
        real = cache.with_name(cache.name + "-real")
        cache.rename(real)
        cache.symlink_to(real)

        def undo():
            cache.unlink()
            real.rename(cache)
        return undo
    jdir = _journal_dir(cache)
    if how == "journal-dir-owner":
        os.chown(jdir, OTHER_UID, -1)
        return lambda: os.chown(jdir, os.getuid(), -1)
    if how == "journal-dir-symlink":
        real = cache / "elsewhere"
        jdir.rename(real)
        jdir.symlink_to(real)

        def undo():
            jdir.unlink()
            real.rename(jdir)
        return undo
    target = jdir / ("journal" if how.startswith("journal-") else "lock")
    if how in ("journal-owner", "lock-owner"):
        os.chown(target, OTHER_UID, -1)
        return lambda: os.chown(target, os.getuid(), -1)
    if how == "journal-mode":
        os.chmod(target, 0o666)
        return lambda: os.chmod(target, 0o600)
    if how == "journal-symlink":
        real = jdir / "journal-real"
        target.rename(real)
        target.symlink_to(real)

        def undo():
            target.unlink()
            real.rename(target)
        return undo
    raise ValueError(how)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
@pytest.mark.parametrize("how, message", [
    ("cache-dir-owner", "belongs to uid 65534, not to the mounting user"),
    ("cache-dir-mode", "is writable by other users (mode 0777)"),
    ("cache-dir-group-writable", "is writable by its group (mode 0770)"),
    ("cache-dir-symlink", "is a symbolic link or not a directory"),
    ("journal-dir-owner", "belongs to uid 65534, not to the mounting user"),
    ("journal-dir-symlink", "a symbolic link or not a directory"),
    ("journal-owner", "belongs to uid 65534, not to the mounting user"),
    ("journal-mode", "is writable by other users (mode 0666)"),
    ("journal-symlink", "cannot read the journal"),
    ("lock-owner", "belongs to uid 65534, not to the mounting user"),
])
def test_a_cache_dir_or_journal_of_another_user_is_refused(tmp_path, how, message):
    store = DirStore(tmp_path / "store")
    cache = tmp_path / "cache"
    extra = [f"--cache-dir={cache}"]
    with Mount(store, tmp_path / "mnt", extra=extra) as m:
        (m.path / "j").mkdir()
        (m.path / "j" / "k").write_text("1")  # closed, not uploaded: journaled
    undo = _tamper(cache, how)
    journal_before = (_journal_dir(cache) / "journal").read_bytes() \
        if not how.startswith("cache-dir") else None
    r = mount_once(store, tmp_path / "mnt2", extra=extra)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert not os.path.ismount(tmp_path / "mnt2")
    if journal_before is not None:  # read nothing into it, wrote nothing
        assert (_journal_dir(cache) / "journal").read_bytes() == journal_before
    undo()
    # nothing was lost: with the owner and modes put right, the key is back
    with Mount(store, tmp_path / "mnt", extra=extra) as m:
        assert (m.path / "j" / "k").read_text() == "1\n"
    assert store.objects() == {}


def test_a_new_cache_dir_and_journal_are_private(tmp_path):
    cache = tmp_path / "new" / "cache"
    with Mount(DirStore(tmp_path / "store"), tmp_path / "mnt",
               extra=[f"--cache-dir={cache}"]) as m:
        (m.path / "j").mkdir()
        (m.path / "j" / "k").write_text("1")
    jdir = _journal_dir(cache)
    for p, mode in [(cache.parent, 0o700), (cache, 0o700), (jdir, 0o700),
                    (jdir / "journal", 0o600), (jdir / "lock", 0o600)]:
        st = os.lstat(p)
        assert st.st_uid == os.geteuid() and (st.st_mode & 0o7777) == mode, (p, oct(st.st_mode))
