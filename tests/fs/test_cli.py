"""The command line (README, "Command line"). Missing or contradictory options: one line and
exit status 2 before anything is mounted; every long option has its -o form."""
import json
import os
import re
import subprocess

import pytest

from tests.support.mount import DirStore, Mount, binary


def run(*args, env=None):
    return subprocess.run([str(binary()), *args], capture_output=True, text=True,
                          timeout=30, env=env)


@pytest.mark.parametrize("args, message", [
    ([], "missing MOUNTPOINT"),
    (["--store=s3", "MNT"], "missing --lz-bucket"),
    (["--lz-bucket=b", "MNT"], "missing --domain"),
    (["--lz-bucket=b", "--domain=d", "--dataset=s", "MNT"], "missing --user"),
    (["--store=ftp", "MNT"], "invalid --store"),
    (["--store=dir:", "MNT"], "missing PATH"),
    (["--resume-from=yesterday", "MNT"], "invalid --resume-from"),
    (["--endpoint=http://127.0.0.1:1", "MNT"], "--endpoint applies to --store=s3 only"),
    (["--path-style", "--store=dir:/tmp/x", "MNT"], "--path-style applies to --store=s3 only"),
    (["--domain=a/b", "MNT"], "invalid --domain"),
    (["--timeout=soon", "MNT"], "invalid --timeout"),
    (["--spin-us=-1", "MNT"], "invalid --spin-us"),
    (["--spin-us=1001", "MNT"], "invalid --spin-us '1001': at most 1000"),
    (["-o", "spin_us=fast", "MNT"], "invalid --spin-us"),
    (["--relist-window=-5", "MNT"], "invalid --relist-window"),
    (["-o", "relist_window=2592001", "MNT"], "invalid --relist-window '2592001': at most"),
    (["--no-such-option=1", "MNT"], "unknown option '--no-such-option'"),
    (["-o", "store=ftp", "MNT"], "invalid --store"),
    (["-o", "lz_bucket=b,store=s3", "MNT"], "missing --domain"),
    # an empty value never means the default (nor reads past its buffer)
    (["--cache-dir=", "MNT"], "invalid --cache-dir '': the value is empty"),
    (["-o", "cache_dir=", "MNT"], "invalid --cache-dir '': the value is empty"),
    (["--lz-bucket=b", "--domain=d", "--dataset=s", "--user=u", "--endpoint=", "MNT"],
     "invalid --endpoint '': the value is empty"),
    (["--lz-bucket=b", "--domain=d", "--dataset=s", "--user=u", "--region=", "MNT"],
     "invalid --region '': the value is empty"),
    (["--lz-bucket=b", "--domain=d", "--dataset=s", "--user=u", "--profile=", "MNT"],
     "invalid --profile '': the value is empty"),
    (["--lz-bucket=b", "--domain=d", "--dataset=s", "--user=u", "--ca-file=", "MNT"],
     "invalid --ca-file '': the value is empty"),
    (["--resume-from=", "MNT"], "invalid --resume-from '': the value is empty"),
    (["--timeout=", "MNT"], "invalid --timeout '': the value is empty"),
    # numbers that would be cut to a narrower type or overflow the time sums
    (["--retries=4294967297", "MNT"], "invalid --retries '4294967297': at most 100"),
    (["--retry-time=0", "MNT"], "invalid --retry-time '0': expected a whole number >= 1"),
    (["--timeout=9223372036854775807", "MNT"],
     "invalid --timeout '9223372036854775807': at most 86400000"),
    (["--connect-timeout=99999999999999999999", "MNT"], "invalid --connect-timeout"),
    (["-o", "max_threads=0", "MNT"], "invalid -o max_threads=0: 1 to 100000"),
    (["-o", "max_threads=200000", "MNT"], "invalid -o max_threads=200000: 1 to 100000"),
])
def test_bad_command_lines_exit_2_with_one_line(tmp_path, args, message):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    args = [str(mnt) if a == "MNT" else a for a in args]
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "data"))
    r = run(*args, env=env)
    assert r.returncode == 2, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert not os.path.ismount(mnt)


def test_help_lists_every_option_and_version():
    r = run("--help")
    assert r.returncode == 0
    for opt in ["--store", "--lz-bucket", "--dlz-bucket", "--domain", "--dataset", "--user",
                "--file-type", "--resume-from", "--endpoint", "--region", "--path-style",
                "--profile", "--ca-file", "--cache-dir", "-f", "-d", "-o"]:
        assert re.search(rf"(^|\s){re.escape(opt)}\b", r.stdout), opt
    r = run("--version")
    assert r.returncode == 0 and re.match(r"bookmarkfs \d+\.\d+\.\d+", r.stdout)


def test_o_forms_equal_the_long_options(tmp_path):
    store = DirStore(tmp_path / "store")

    class OForm(DirStore):
        def args(self):
            return ["-o", f"store=dir:{self.root},lz_bucket=L,dlz_bucket=D,domain=dom,"
                          "dataset=ds,user=u,file_type=csv,resume_from=completed"]
    of = OForm(store.root)
    with Mount(of, tmp_path / "mnt") as m:
        (m.path / "j").mkdir()
        (m.path / "j" / "k").write_text("1")
        (m.path / "j" / "running").write_text("1")
        key = json.loads((m.path / "j" / ".status").read_text())["last_upload"]["running"]["key"]
    assert re.fullmatch(r"dom/ds/upload_date=\d+/u/csv/j_running\.json", key)
    assert (store.root / "L" / key).read_bytes() == b'{"k":1}'


def test_embedded_default_is_the_local_store_under_the_data_dir(tmp_path):
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "data"),
               XDG_STATE_HOME=str(tmp_path / "state"))

    class Default(DirStore):
        def args(self):
            return []
    with Mount(Default(tmp_path / "unused"), tmp_path / "mnt", env=env) as m:
        (m.path / "j").mkdir()
        (m.path / "j" / "completed").write_text("1")
        key = json.loads((m.path / "j" / ".status").read_text())["last_upload"]["completed"]["key"]
    import pwd
    user = pwd.getpwuid(os.geteuid()).pw_name
    assert re.fullmatch(rf"state/bookmarks/upload_date=\d+/{user}/others/j_completed\.json", key)
    assert (tmp_path / "data" / "bookmarkfs" / "lz" / key).read_bytes() == b"{}"
