"""What only a server that verifies SigV4 can show (Ceph RGW; s3rver checks
no signature, no session token and no payload hash): a wrong secret, a
wrong session token and a clock two hours off are refused by the server
itself, with the README's messages ("S3 errors you may see", "Bad input"),
and a request altered after it was signed is refused. In every case nothing
lands in the store. The fault proxy only alters requests here; the answers
are RGW's own."""
import os
import re

import pytest

from tests.support.faultproxy import FaultProxy
from tests.support.faults import (EACCES_TEXT, EIO_TEXT, EndpointStore, mount_once,
                                  sh_write, upload_key)
from tests.support.mount import Mount
from tests.support.s3rver import client_env

FAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"
SKEW = "The local clock differs from the S3 endpoint's by more than 15 minutes " \
       "(RequestTimeTooSkewed); set the clock (NTP)."


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.strip()]


def seeded(store):
    """An object already in the store, and a function that asserts the store
    holds that object and nothing else."""
    key = "test_state_domain/test_state_dataset/upload_date=1700000000/test_user/" \
          "others/seeded_running.json"
    body = b'{"offset":1}'
    store.put(store.lz, key, body)

    def unchanged():
        assert store.objects(store.lz) == {key: body}
        assert store.objects(store.dlz) == {}
    return unchanged


def refused(store, tmp_path, env=None):
    """Mounts in the foreground, expects one line and no mount: the line."""
    r = mount_once(store, tmp_path / "mnt", env=env)
    assert r.returncode == 1, r.stderr
    lines = error_lines(r.stderr)
    assert len(lines) == 1, r.stderr
    assert not os.path.ismount(tmp_path / "mnt")
    assert lines[0].startswith("bookmarkfs: "), lines[0]
    return lines[0][len("bookmarkfs: "):]


@pytest.mark.parametrize("case, want", [
    ("wrong-secret", "The secret access key does not match the access key ID "
                     "(SignatureDoesNotMatch)."),
    ("unknown-key", "The AWS access key ID is not known to the store (InvalidAccessKeyId)."),
], ids=["wrong-secret", "unknown-key"])
def test_wrong_keys_at_mount_are_refused_by_the_server(rgw_server, rgw_buckets, tmp_path,
                                                       case, want):
    store = EndpointStore(rgw_server, rgw_server.endpoint, buckets=rgw_buckets)
    unchanged = seeded(store)
    if case == "wrong-secret":
        env = client_env(AWS_SECRET_ACCESS_KEY="not-the-secret-of-this-key")
    else:
        env = client_env(AWS_ACCESS_KEY_ID="AKIANOTKNOWNTORGW")
    assert refused(store, tmp_path, env) == want
    unchanged()


def session_env(creds, token=None):
    return client_env(AWS_ACCESS_KEY_ID=creds["AccessKeyId"],
                      AWS_SECRET_ACCESS_KEY=creds["SecretAccessKey"],
                      AWS_SESSION_TOKEN=token or creds["SessionToken"])


def test_session_token_is_signed_and_a_wrong_one_is_refused(rgw_server, rgw_buckets,
                                                            tmp_path):
    # The STS gateway checks the token against the temporary key: with its
    # own token the session works end to end (so the token is sent and
    # signed), with another it is refused.
    creds = rgw_server.session_credentials()
    store = EndpointStore(rgw_server, rgw_server.sts_endpoint, buckets=rgw_buckets)
    unchanged = seeded(store)
    token = creds["SessionToken"]
    damaged = token[:-8] + ("A" if token[-8] != "A" else "B") + token[-7:]
    line = refused(store, tmp_path, session_env(creds, damaged))
    # RGW 16 answers a token it cannot decrypt 400 InvalidArgument (AWS:
    # InvalidToken); the README gives both.
    assert line == f'Checking the bucket "{store.lz}" failed: HTTP 400 InvalidArgument.'
    unchanged()

    with Mount(store, tmp_path / "mnt2", env=session_env(creds)) as m:
        (m.path / "j").mkdir()
        (m.path / "j" / "k").write_text('{"n": 1}')
        assert sh_write(m.path / "j" / "running").returncode == 0
    keys = [k for k in store.objects(store.lz) if re.fullmatch(upload_key("j"), k)]
    assert len(keys) == 1
    assert store.get(store.lz, keys[0]) == b'{"k":{"n":1}}'


def faketime_env(offset_file, env=None):
    """bookmarkfs with its wall clock moved by the offset in offset_file
    (libfaketime, read again at every call), its monotonic clock untouched."""
    env = dict(env or client_env())
    env.update(LD_PRELOAD=FAKETIME, FAKETIME_TIMESTAMP_FILE=str(offset_file),
               FAKETIME_NO_CACHE="1", FAKETIME_DONT_FAKE_MONOTONIC="1")
    # under ASan, libfaketime comes before the sanitizer's runtime
    env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0").strip(":")
    return env


@pytest.mark.skipif(not os.path.exists(FAKETIME), reason="libfaketime is not installed "
                    "(scripts/deps --test installs faketime)")
def test_a_clock_two_hours_off_is_refused_by_the_server(rgw_server, rgw_buckets,
                                                        tmp_path):
    store = EndpointStore(rgw_server, rgw_server.endpoint, buckets=rgw_buckets)
    unchanged = seeded(store)
    offset = tmp_path / "faketime"
    offset.write_text("+2h\n")
    env = faketime_env(offset)
    assert refused(store, tmp_path, env) == SKEW
    unchanged()

    # A clock that goes wrong after the mount: the commit is EACCES, the log
    # says why, nothing lands; set right, the same write succeeds.
    offset.write_text("+0\n")
    with Mount(store, tmp_path / "mnt2", env=env) as m:
        (m.path / "j").mkdir()
        (m.path / "j" / "k").write_text("1")
        offset.write_text("-2h\n")
        r = sh_write(m.path / "j" / "running")
        assert r.returncode != 0 and EACCES_TEXT in r.stderr
        assert "RequestTimeTooSkewed" in m.log()
        assert "set the clock (NTP)" in m.log()
        unchanged()
        offset.write_text("+0\n")
        assert sh_write(m.path / "j" / "running").returncode == 0
    keys = [k for k in store.objects(store.lz) if re.fullmatch(upload_key("j"), k)]
    assert len(keys) == 1 and store.get(store.lz, keys[0]) == b'{"k":1}'


def test_a_request_altered_after_signing_is_refused(rgw_server, rgw_buckets, tmp_path):
    with FaultProxy(rgw_server.endpoint) as proxy:
        store = EndpointStore(rgw_server, proxy.endpoint, buckets=rgw_buckets)
        unchanged = seeded(store)
        # at mount: the bucket check (no body) with its signed date moved
        proxy.script(["tamper"])
        assert refused(store, tmp_path) == (
            "The secret access key does not match the access key ID "
            "(SignatureDoesNotMatch).")
        assert proxy.actions() == ["tamper"]
        unchanged()

        with Mount(store, tmp_path / "mnt2") as m:
            (m.path / "j").mkdir()
            (m.path / "j" / "k").write_text('{"n": 2}')
            # the upload's body changed after its hash was signed: a 400,
            # never retried
            proxy.reset_log()
            proxy.script(["tamper"])
            r = sh_write(m.path / "j" / "running")
            assert r.returncode != 0 and EIO_TEXT in r.stderr
            assert [(meth, a) for meth, _, a in proxy.log] == [("PUT", "tamper")]
            assert "XAmzContentSHA256Mismatch" in m.log()
            unchanged()
            assert sh_write(m.path / "j" / "running").returncode == 0
    keys = [k for k in store.objects(store.lz) if re.fullmatch(upload_key("j"), k)]
    assert len(keys) == 1 and store.get(store.lz, keys[0]) == b'{"k":{"n":2}}'
