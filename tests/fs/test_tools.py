"""Everyday tools against real mounts (README, "What everyday tools do"):
shells, python3, perl, node, sed, vim, nano, rsync, tar, coreutils,
moreutils' sponge, jq and tmux, run as the real programs. No bookmark is
dropped, mixed with a state that never existed, or polluted with a tool's
temp file; what the store holds is read back with the file system (dir
store) or boto3 (S3)."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.mount import LZ, DirStore, Mount


def sh(cmd, cwd=None, timeout=60, **kw):
    return subprocess.run(["bash", "-c", cmd], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, **kw)


def status(mnt):
    return json.loads((mnt / ".status").read_text())


def uploads(store):
    """{object key: parsed body} of every state object in the LZ bucket."""
    return {k: json.loads(v) for k, v in store.objects(LZ).items()
            if k.endswith((".json"))}


@pytest.fixture
def dmount(tmp_path):
    """A mount on the local directory store (the tools do not care which)."""
    m = Mount(DirStore(tmp_path / "store"), tmp_path / "mnt",
              extra=[f"--cache-dir={tmp_path / 'cache'}"])
    m.start()
    yield m
    m.stop()


# ---- 1. a refused value is never silent ------------------------------------

REFUSING_WRITERS = [
    ("bash", "echo day2.csv > k"),
    ("dash", "dash -c 'echo day2.csv > k'"),
    ("python print", f"{sys.executable} -c 'print(\"day2.csv\")' > k"),
    ("perl print", "perl -e 'print \"day2.csv\\n\"' > k"),
    ("node stdout", "node -e 'process.stdout.write(\"day2.csv\\n\")' > k"),
    ("printf", "printf 'x\\n' > k"),
    ("tee", "echo day2.csv | tee k >/dev/null"),
]


def test_a_refused_value_fails_the_writer_and_is_counted(dmount):
    """The write() that makes the bytes impossible as JSON fails with EINVAL,
    so every writer exits non-zero; the old value stays; a new key is not
    created; .status counts each refusal and names the last one; the log
    has every one."""
    mount = dmount
    job = mount.path / "j"
    job.mkdir()
    assert sh("echo 5 > k", cwd=job).returncode == 0
    for name, cmd in REFUSING_WRITERS:
        r = sh(cmd, cwd=job)
        assert r.returncode != 0, (name, r)
        assert (job / "k").read_text() == "5\n", name
    # A new key whose first write is refused is not created ...
    r = subprocess.run([sys.executable, "-c", 'f = open("newkey", "w"); f.write("day2.csv"); f.close()'],
                       cwd=job, capture_output=True, text=True)
    assert r.returncode != 0 and "Invalid argument" in r.stderr, r
    assert sorted(os.listdir(job)) == [".state.json", "completed", "k", "running"]
    # ... but a shell's redirection closes a duplicate before it writes,
    # which creates the key empty (null).
    r = sh("echo day2.csv > newkey", cwd=job)
    assert r.returncode != 0 and "Invalid argument" in r.stderr, r
    assert (job / "newkey").read_text() == "null\n"
    # What only the end reveals fails the close().
    r = subprocess.run([sys.executable, "-c", 'f = open("k", "w"); f.write(\'{"a": \'); f.close()'],
                       cwd=job, capture_output=True, text=True)
    assert r.returncode != 0 and "Invalid argument" in r.stderr, r
    assert (job / "k").read_text() == "5\n"
    # Quoted, the same text is a value.
    assert sh("echo '\"day2.csv\"' > k && jq -R . <<< day3.csv > k2", cwd=job).returncode == 0
    assert json.loads((job / "k").read_text()) == "day2.csv"
    assert json.loads((job / "k2").read_text()) == "day3.csv"

    st = status(mount.path)
    refusals = len(REFUSING_WRITERS) + 3
    assert st["values_refused"] == refusals, st
    last = st["last_error"]
    assert last["job"] == "j" and last["key"] == "k" and last["reason"], last
    assert "job 'j' key 'k'" in last["message"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", last["time"])
    errors = [l for l in mount.log().splitlines() if "not one JSON value" in l]
    assert len(errors) == refusals, mount.log()
    assert uploads(mount.store) == {}  # nothing was uploaded on the way


@pytest.mark.parametrize("how", ["--log-file=", "-o log_file="])
def test_log_file_option(tmp_path, how):
    log = tmp_path / "bookmarkfs.log"
    extra = [f"--log-file={log}"] if how.startswith("--") else ["-o", f"log_file={log}"]
    with Mount(DirStore(tmp_path / "store"), tmp_path / "mnt",
               extra=[f"--cache-dir={tmp_path / 'cache'}", *extra]) as m:
        (m.path / "j").mkdir()
        assert sh("echo day2.csv > k", cwd=m.path / "j").returncode != 0
        assert sh("echo 1 > running", cwd=m.path / "j").returncode == 0
    lines = log.read_text().splitlines()
    pattern = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z bookmarkfs\[\d+\]: (\w+): (.*)"
    parsed = [re.fullmatch(pattern, l) for l in lines]
    assert all(parsed), lines
    msgs = [(p.group(1), p.group(2)) for p in parsed]
    assert ("error", "job 'j' key 'k': not one JSON value (invalid token near 'day'); "
            "old value kept") in msgs, msgs
    assert any(lvl == "info" and "running uploaded" in msg for lvl, msg in msgs), msgs
    assert msgs[-1][1].startswith("unmounted"), msgs
    assert "not one JSON value" not in m.log()  # not on stderr as well
