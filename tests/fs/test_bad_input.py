"""The bad-input matrix (README, "Bad input"): for each bad input, the error the
user sees and proof that nothing was lost."""
import errno
import json
import os
import re
import subprocess

import pytest

from tests.support.faultproxy import FaultProxy
from tests.support.faults import (EACCES_TEXT, EIO_TEXT, EndpointStore, compact,
                                  last_upload, mount_once, sh_write, state_of)
from tests.support.mount import DATASET, DOMAIN, LZ, USER, DirStore, Mount, S3Store
from tests.support.s3rver import client_env

KEY_VALUE_MAX = 16 << 20  # fs/ops.h
JSON_DEPTH_MAX = 2048     # jansson's parser


def committed(store, job_dir):
    """Uploads `completed` and returns what the store holds for it."""
    r = sh_write(job_dir / "completed")
    assert r.returncode == 0, r.stderr
    return store.get(LZ, last_upload(job_dir, "completed")["key"])


def write_raw(path, data, chunk=1 << 20):
    """open/write/close without buffering; the OSError of the first failing
    step, or None."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    except OSError as e:
        return e
    err = None
    try:
        for off in range(0, len(data), chunk):
            os.write(fd, data[off:off + chunk])
    except OSError as e:
        err = e
    try:
        os.close(fd)
    except OSError as e:
        err = err or e
    return err


@pytest.fixture
def job(mnt):
    j = mnt / "j"
    j.mkdir()
    (j / "k").write_text('{"offset": 1}')
    return j


# ---- key files and .state.json -------------------------------------------

@pytest.mark.parametrize("text", ["{bad", "1 2", "[1,", "'single'", "tru", "NaN"])
def test_invalid_json_is_einval_and_the_old_value_stays(store, mount, job, text):
    r = sh_write(job / "k", text)
    assert r.returncode != 0 and "Invalid argument" in r.stderr, r.stderr
    assert (job / "k").read_text() == '{"offset":1}\n'
    assert "job 'j' key 'k': not one JSON value" in mount.log()
    assert committed(store, job) == b'{"k":{"offset":1}}'


@pytest.mark.parametrize("text", ["{bad", "[1, 2]", '"text"', "null"])
def test_state_json_that_is_not_an_object_is_einval_and_state_kept(store, mount, job,
                                                                   text):
    r = sh_write(job / ".state.json", text)
    assert r.returncode != 0 and "Invalid argument" in r.stderr, r.stderr
    assert state_of(job) == {"k": {"offset": 1}}
    assert "job 'j' .state.json: not a JSON object" in mount.log()


def test_value_over_the_size_limit_is_efbig_and_the_old_value_stays(store, mount, job,
                                                                    tmp_path):
    big = tmp_path / "big.json"
    big.write_bytes(b'"' + b"a" * (KEY_VALUE_MAX - 1) + b'"')  # limit + 1 bytes
    r = subprocess.run(["sh", "-c", 'cat "$1" > "$0"', str(job / "k"), str(big)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "File too large" in r.stderr, r.stderr
    assert (job / "k").read_text() == '{"offset":1}\n'
    # .state.json keys are bounded the same way when they arrive as one key
    at_limit = b'"' + b"b" * (KEY_VALUE_MAX - 2) + b'"'
    assert write_raw(job / "exact", at_limit) is None
    assert os.path.getsize(job / "exact") == KEY_VALUE_MAX + 1  # plus the newline
    body = committed(store, job)
    assert body == b'{"k":{"offset":1},"exact":' + at_limit + b"}"


@pytest.mark.parametrize("depth", [JSON_DEPTH_MAX + 1, 200000])
def test_too_deep_nesting_is_einval_never_a_crash(store, mount, job, depth):
    err = write_raw(job / "k", b"[" * depth + b"]" * depth)
    assert err is not None and err.errno == errno.EINVAL
    assert (job / "k").read_text() == '{"offset":1}\n'
    assert "maximum parsing depth" in mount.log()
    assert committed(store, job) == b'{"k":{"offset":1}}'


def test_deepest_accepted_value_survives_a_remount(store, mount, job):
    depth = JSON_DEPTH_MAX
    value = b"[" * depth + b"]" * depth
    err = write_raw(job / "deep", value)
    if err is not None:  # refused at write: fine, as long as it says EINVAL
        assert err.errno == errno.EINVAL
        return
    committed(store, job)
    mount.stop()
    mount.start()
    assert (mount.path / "j" / "deep").read_bytes() == value + b"\n"


@pytest.mark.parametrize("value", [b'"\xff"', b'"caf\xc3"', b'"\\ud800"',
                                   b'{"\xfe": 1}'])
def test_invalid_utf8_in_values_is_einval(store, mount, job, value):
    err = write_raw(job / "k", value)
    assert err is not None and err.errno == errno.EINVAL
    assert (job / "k").read_text() == '{"offset":1}\n'
    assert committed(store, job) == b'{"k":{"offset":1}}'


def test_invalid_utf8_in_names_is_eilseq(store, mount, job):
    root = bytes(mount.path)
    jb = bytes(job)
    for op in (lambda: open(jb + b"/bad\xff", "w").close(),
               lambda: os.mkdir(root + b"/job\xfe"),
               lambda: os.rename(jb + b"/k", jb + b"/k\xff")):
        with pytest.raises(OSError) as e:
            op()
        assert e.value.errno == errno.EILSEQ
    assert sorted(os.listdir(job)) == [".state.json", "completed", "k", "running"]
    assert sorted(os.listdir(mount.path)) == [".status", "j"]
    assert committed(store, job) == b'{"k":{"offset":1}}'


NAMES_255 = ["a" * 255, "\u20ac" * 85]  # 255 bytes each


@pytest.mark.parametrize("name", NAMES_255)
def test_key_names_of_255_bytes_work_and_256_do_not(store, mount, job, name):
    assert len(name.encode()) == 255
    (job / name).write_text("7")
    with pytest.raises(OSError) as e:
        (job / (name + "x")).write_text("8")
    assert e.value.errno == errno.ENAMETOOLONG
    with pytest.raises(OSError) as e:
        (mount.path / ("j" * 256)).mkdir()
    assert e.value.errno == errno.ENAMETOOLONG
    assert json.loads(committed(store, job)) == {"k": {"offset": 1}, name: 7}
    assert sorted(os.listdir(mount.path)) == [".status", "j"]


def test_a_job_name_of_255_bytes_works_on_the_dir_store(tmp_path):
    # Only the dir store: s3rver keeps each object in a file named after the
    # key's last segment plus a suffix, and dies on such names (real S3 has
    # no per-segment limit).
    store = DirStore(tmp_path / "store")
    name = "a" * 255
    with Mount(store, tmp_path / "mnt") as m:
        jb = m.path / name
        try:
            jb.mkdir()
        except OSError as e:  # refusing at mkdir is fine, if it says why
            assert e.errno == errno.ENAMETOOLONG
            return
        (jb / "k").write_text("1")
        r = sh_write(jb / "running")
        assert r.returncode == 0, r.stderr
        key = last_upload(jb)["key"]
        assert key.endswith(f"/{name}_running.json")
        assert store.get(LZ, key) == b'{"k":1}'


def test_reserved_names_are_eperm_and_nothing_changes(store, mount, job):
    (job / "b").write_text("2")
    attempts = [
        lambda: os.rename(job / "running", job / "r2"),
        lambda: os.rename(job / "b", job / "completed"),
        lambda: os.rename(job / ".state.json", job / "c"),
        lambda: os.mkdir(job / "sub"),
        lambda: open(mount.path / "file-at-root", "w").close(),
        lambda: os.mkdir(mount.path / ".git"),
        lambda: os.unlink(job / ".status"),
    ]
    for op in attempts:
        with pytest.raises(OSError) as e:
            op()
        assert e.value.errno == errno.EPERM
    # b (2) onto .state.json is from_bytes of a non-object
    with pytest.raises(OSError) as e:
        os.rename(job / "b", job / ".state.json")
    assert e.value.errno == errno.EINVAL
    assert state_of(job) == {"k": {"offset": 1}, "b": 2}
    assert sorted(os.listdir(job)) == [".state.json", "b", "completed", "k", "running"]
    assert json.loads(committed(store, job)) == {"k": {"offset": 1}, "b": 2}


# ---- what the store holds -------------------------------------------------

def object_key(job, date=1700000000, kind="completed"):
    return f"{DOMAIN}/{DATASET}/upload_date={date}/{USER}/others/{job}_{kind}.json"


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'"text"', b"", b'{"a": 1',
                                  b"\xff\xfe{}"])
def test_a_store_object_that_is_not_a_json_object_is_eio_and_kept(store, mount, body):
    key = object_key("broken")
    store.put(LZ, key, body)
    jb = mount.path / "broken"
    for op in (lambda: os.listdir(jb),
               lambda: (jb / "k").read_text(),
               lambda: os.mkdir(jb)):
        with pytest.raises(OSError) as e:
            op()
        assert e.value.errno == errno.EIO
    # writes to the job that failed to load: errors, nothing uploaded
    for target in ("k", "running", "completed", ".state.json"):
        r = sh_write(jb / target, "{}")
        assert r.returncode != 0 and EIO_TEXT in r.stderr, (target, r.stderr)
    assert f"{key} is not a JSON object" in mount.log()
    assert store.objects(LZ) == {key: body}  # never replaced by an empty state
    # a newer sound object: the job loads
    newer = object_key("broken", date=1700000001)
    store.put(LZ, newer, b'{"k": 5}')
    assert (jb / "k").read_text() == "5\n"
    assert store.objects(LZ) == {key: body, newer: b'{"k": 5}'}


def test_a_huge_store_object_loads_whole_and_round_trips(store, mount):
    blob = "z" * (KEY_VALUE_MAX + 4096)  # larger than a key file may be written
    state = {"offset": 3, "blob": blob, "tail": [1, 2, 3]}
    key = object_key("huge")
    store.put(LZ, key, compact(state))
    jb = mount.path / "huge"
    assert (jb / "offset").read_text() == "3\n"
    assert os.path.getsize(jb / "blob") == len(blob) + 3  # quotes and newline
    # it cannot be written back as one key file (EFBIG), but stays in the state
    err = write_raw(jb / "blob2", (jb / "blob").read_bytes())
    assert err is not None and err.errno == errno.EFBIG
    assert "blob2" not in os.listdir(jb)
    assert committed(store, jb) == compact(state)


# ---- the store at mount time ----------------------------------------------

def error_lines(stderr):
    """What the user is told, without progress (info/warning) lines."""
    return [line for line in stderr.strip().splitlines()
            if not line.startswith(("bookmarkfs: info:", "bookmarkfs: warning:"))]


def test_a_missing_bucket_is_one_line_and_no_mount(store, tmp_path):
    if store.kind == "s3":
        class Missing(S3Store):
            def args(self):
                return [a if not a.startswith("--lz-bucket=") else "--lz-bucket=no-such-bkt"
                        for a in super().args()]
        bad = Missing(store.server)
        want = 'The bucket "no-such-bkt" does not exist.'
    else:
        bad = DirStore(tmp_path / "store")
        (bad.root / LZ).write_bytes(b"")  # where the bucket's directory would be
        want = "Cannot create the store directory"
    r = mount_once(bad, tmp_path / "mnt")
    assert r.returncode != 0
    lines = error_lines(r.stderr)
    assert len(lines) == 1 and want in lines[0], r.stderr
    assert not os.path.ismount(tmp_path / "mnt")


def no_credentials_env(tmp_path):
    env = client_env()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_ROLE_ARN"):
        env.pop(name, None)
    env.update(HOME=str(tmp_path / "home"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none" / "credentials"),
               AWS_CONFIG_FILE=str(tmp_path / "none" / "config"))
    return env


@pytest.fixture
def proxy(s3server):
    with FaultProxy(s3server.endpoint, seed=7) as p:
        yield p


@pytest.mark.parametrize("case, want", [
    ("missing", "No AWS credentials"),
    ("unknown-key", "InvalidAccessKeyId"),
    ("wrong-secret", "SignatureDoesNotMatch"),
    ("expired", "ExpiredToken"),
    ("skewed-clock", "clock"),
])
def test_bad_credentials_or_clock_at_mount_is_one_line_and_no_mount(s3server, proxy,
                                                                    tmp_path, case, want):
    env = client_env()
    if case == "missing":
        env = no_credentials_env(tmp_path)
    elif case == "unknown-key":
        env = client_env(AWS_ACCESS_KEY_ID="AKIANOTKNOWNTOTHESTORE")
    elif case == "wrong-secret":
        # the proxy's answer; RGW's own: tests/fs/test_verifying_server.py
        proxy.probabilities = {"badsignature": 1.0}
    elif case == "expired":
        proxy.probabilities = {"expired": 1.0}
    else:
        proxy.probabilities = {"skew": 1.0}  # the server judges X-Amz-Date: 15 min
    store = EndpointStore(s3server, proxy.endpoint, env=env)
    r = mount_once(store, tmp_path / "mnt")
    assert r.returncode != 0
    lines = error_lines(r.stderr)
    assert len(lines) == 1 and want in lines[0], r.stderr
    assert not os.path.ismount(tmp_path / "mnt")


@pytest.mark.parametrize("fault, want_log", [("403", "AccessDenied"),
                                             ("expired", "ExpiredToken"),
                                             ("badsignature", "SignatureDoesNotMatch"),
                                             ("skew", "clock")])
def test_credentials_or_clock_going_bad_after_mount_is_eacces(s3server, proxy, tmp_path,
                                                             fault, want_log):
    store = EndpointStore(s3server, proxy.endpoint)
    with Mount(store, tmp_path / "mnt") as m:
        job = m.path / "j"
        job.mkdir()
        (job / "k").write_text("1")
        before = store.objects(LZ)
        proxy.probabilities = {fault: 1.0}
        r = sh_write(job / "running", timeout=store.bound_seconds() + 30)
        assert r.returncode != 0 and EACCES_TEXT in r.stderr, r.stderr
        assert want_log in m.log()
        assert state_of(job) == {"k": 1} and last_upload(job) == {}
        assert store.objects(LZ) == before
        proxy.probabilities = {}
        assert sh_write(job / "running").returncode == 0
        assert store.get(LZ, last_upload(job)["key"]) == b'{"k":1}'
        assert re.search(r"upload_date=\d+/", last_upload(job)["key"])


def test_a_job_whose_object_key_would_pass_1024_bytes_is_refused_at_mkdir(tmp_path):
    seg = "d" * 250

    class LongPath(DirStore):
        def args(self):
            return [f"--store=dir:{self.root}", "--lz-bucket=lz", f"--domain={seg}",
                    f"--dataset={seg}", f"--user={seg}"]

    store = LongPath(tmp_path / "store")
    # "<250>/<250>/upload_date=<epoch>/<250>/others/<job>_completed.json"
    fixed = 3 * 250 + len("others") + 5 + len("upload_date=") + len("_completed.json")
    with Mount(store, tmp_path / "mnt") as m:
        fits = "f" * (1024 - fixed - 19)   # room for the largest epoch
        too_long = "t" * (1024 - fixed - 10 + 1)  # over even with today's epoch
        with pytest.raises(OSError) as e:
            (m.path / too_long).mkdir()
        assert e.value.errno == errno.ENAMETOOLONG
        assert too_long not in os.listdir(m.path)
        (m.path / fits).mkdir()
        (m.path / fits / "k").write_text("1")
        assert sh_write(m.path / fits / "completed").returncode == 0
        key = last_upload(m.path / fits, "completed")["key"]
        assert len(key.encode()) <= 1024 and store.get("lz", key) == b'{"k":1}'


# ---- control characters in job names and in the store's keys -------------

CONTROL_NAMES = ["a\x01b", "cr\rjob", "lf\njob", "tab\tjob", "del\x7fjob", "esc\x1bjob"]


def upload_key_of(job, epoch=1700000000, kind="completed"):
    return f"{DOMAIN}/{DATASET}/upload_date={epoch}/{USER}/others/{job}_{kind}.json"


def test_control_characters_in_a_job_name_are_einval_at_mkdir(store, mount):
    for name in CONTROL_NAMES:
        with pytest.raises(OSError) as e:
            os.mkdir(mount.path / name)
        assert e.value.errno == errno.EINVAL, name
        r = subprocess.run(["mkdir", str(mount.path / name)], capture_output=True, text=True)
        assert r.returncode != 0 and "Invalid argument" in r.stderr, r.stderr
    assert [n for n in os.listdir(mount.path) if not n.startswith(".")] == []
    (mount.path / "fine job").mkdir()  # a space is no control character
    (mount.path / "fine job" / "k").write_text("1")
    assert committed(store, mount.path / "fine job") == b'{"k":1}'


def test_objects_with_control_characters_stop_no_job_and_no_mount(store, tmp_path):
    """Objects put by another client whose keys hold control characters: on
    a server that encodes listings (RGW, S3) and on the dir store they load
    by their exact names; on one that ignores encoding-type=url (s3rver)
    they are skipped, never shown under a wrong name (CR as LF). Either
    way every other job, every mount and the bucket check work."""
    good = b'{"offset":7}'
    store.put(LZ, upload_key_of("etl"), good)
    odd = {name: json.dumps({"name": name}).encode() for name in ("a\x01b", "cr\rjob")}
    for name, body in odd.items():
        store.put(LZ, upload_key_of(name), body)
    exact = store.kind == "dir" or type(store.server).__name__ == "Rgw"
    if not exact or store.kind == "dir":
        store.put(LZ, "\x01first-in-the-bucket", b"{}")  # what the bucket check lists
    else:
        # RGW fails a truncated listing whose last key holds a control
        # character, whatever the client asks (its bug): the bucket check
        # (max-keys=1) must not end at one there
        store.put(LZ, "0-first-in-the-bucket", b"{}")
    try:
        _mount_beside_odd_objects(store, tmp_path, good, odd, exact)
    finally:
        if store.kind == "s3":  # boto3's own listings of s3rver choke on them
            for key in [upload_key_of(n) for n in odd] + ["\x01first-in-the-bucket",
                                                          "0-first-in-the-bucket"]:
                # (deleting a key that is not there is no error in S3)
                store.server.client.delete_object(Bucket=LZ, Key=key)


def _mount_beside_odd_objects(store, tmp_path, good, odd, exact):
    with Mount(store, tmp_path / "mnt") as m:
        names = os.listdir(m.path)
        assert "etl" in names and "cr\njob" not in names, names
        assert (m.path / "etl" / "offset").read_text() == "7\n"
        (m.path / "new").mkdir()
        (m.path / "new" / "k").write_text('"v"')
        assert committed(store, m.path / "new") == b'{"k":"v"}'
        if exact:
            assert set(odd) <= set(names), names
            for name, body in odd.items():
                assert json.loads((m.path / name / ".state.json").read_text()) == \
                    json.loads(body)
        else:
            assert not set(odd) & set(names), names
            assert "skipped" in m.log()
    # a second mount of the same bucket works too
    with Mount(store, tmp_path / "mnt2") as m:
        assert (m.path / "etl" / "offset").read_text() == "7\n"
        assert (m.path / "new" / "k").read_text() == '"v"\n'


def _aws_style_listing(method, path, body):
    """What S3 answers to encoding-type=url, made from s3rver's answer (which
    ignores it): each Key URL-encoded as S3 does (a space as '+'), plus
    <EncodingType>url</EncodingType>."""
    from urllib.parse import quote_plus
    from xml.sax.saxutils import unescape
    if method != "GET" or "list-type=2" not in path or b"<ListBucketResult" not in body:
        return body

    def enc(mt):
        raw = unescape(mt.group(1).decode("utf-8"))
        return b"<Key>" + quote_plus(raw, safe="/").encode() + b"</Key>"
    body = re.sub(rb"<Key>(.*?)</Key>", enc, body, flags=re.S)
    return body.replace(b"</ListBucketResult>",
                        b"<EncodingType>url</EncodingType></ListBucketResult>")


def test_url_encoded_listings_are_decoded_as_s3_encodes_them(s3rver_server, tmp_path):
    """s3rver ignores encoding-type=url; the fault proxy rewrites its answers
    into what S3 sends, so the decoding ('+' a space, %2B a '+', %0D a CR)
    is what the test sees."""
    with FaultProxy(s3rver_server.endpoint) as proxy:
        proxy.rewrite = _aws_style_listing
        proxy.probabilities = {"rewrite": 1.0}
        store = EndpointStore(s3rver_server, proxy.endpoint, retries=3, retry_time=3000,
                              timeout=5000)
        names = ["a b+c%d&e", "caf\u00e9 50%", "cr\rjob", "x+y"]
        for name in names:
            store.put(LZ, upload_key_of(name), json.dumps({"n": name}).encode())
        try:
            with Mount(store, tmp_path / "mnt") as m:
                listed = [n for n in os.listdir(m.path) if not n.startswith(".")]
                assert sorted(listed) == sorted(names), listed
                for name in names:
                    assert json.loads((m.path / name / ".state.json").read_text()) == \
                        {"n": name}
        finally:
            # boto3 decodes s3rver's raw keys as if encoded: its own listings
            # would name these wrongly, so they go by their exact keys
            for name in names:
                store.server.client.delete_object(Bucket=LZ, Key=upload_key_of(name))
        assert any(a == "rewrite" for a in proxy.actions())
        assert all("encoding-type=url" in p for mth, p, _ in proxy.log
                   if mth == "GET" and "list-type=2" in p)
