"""Everyday tools against real mounts (README, "What everyday tools do"):
shells, python3, perl, node, sed, vim, nano, rsync, tar, coreutils,
moreutils' sponge, jq and tmux, run as the real programs. No bookmark is
dropped, mixed with a state that never existed, or polluted with a tool's
temp file; what the store holds is read back with the file system (dir
store) or boto3 (S3)."""
import errno
import fnmatch
import json
import os
import re
import subprocess
import sys
import time
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
    ("append", "echo 6 >> k"),  # "5\n6\n" is two values
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
    # ... nor by a shell, whose redirection closes a duplicate before it
    # writes (that close makes the key null, which the refusal takes back);
    # nor when only the end reveals it.
    r = sh("echo day2.csv > newkey", cwd=job)
    assert r.returncode != 0 and "Invalid argument" in r.stderr, r
    assert sh("printf '{\"a\": ' > newkey2", cwd=job).returncode == 0  # close errors: ignored
    assert sorted(os.listdir(job)) == [".state.json", "completed", "k", "running"]
    assert json.loads((job / ".state.json").read_text()) == {"k": 5}
    assert not (job / "newkey").exists()
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
    refusals = len(REFUSING_WRITERS) + 4
    assert st["values_refused"] == refusals, st
    last = st["last_error"]
    assert last["job"] == "j" and last["key"] == "k" and last["reason"], last
    assert "job 'j' key 'k'" in last["message"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", last["time"])
    errors = [l for l in mount.log().splitlines() if "not one JSON value" in l]
    assert len(errors) == refusals, mount.log()
    assert uploads(mount.store) == {}  # nothing was uploaded on the way
    # The journal has it so too: the refused new keys do not come back.
    mount.stop()
    mount.start()
    assert json.loads((job / ".state.json").read_text()) == {"k": "day2.csv",
                                                             "k2": "day3.csv"}


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


# ---- 3. tools' temp, backup and probe files are never uploaded -------------

# Each tool edits its own key in place, toggling it between 1 and 2.
EDITORS = {
    "k_sed": "sed -i 's/1/3/;s/2/1/;s/3/2/' k_sed",
    "k_sedbak": "sed -i.bak 's/1/3/;s/2/1/;s/3/2/' k_sedbak",
    "k_perl": "perl -pi -e 'tr/12/21/' k_perl",
    "k_py": (f"{sys.executable} -c 'import os, tempfile\n"
             "v = 3 - int(open(\"k_py\").read())\n"
             "f = tempfile.NamedTemporaryFile(\"w\", dir=\".\", delete=False)\n"
             "f.write(str(v)); f.close(); os.replace(f.name, \"k_py\")'"),
    # with a suffix, as atomic writers often give one
    "k_pysfx": (f"{sys.executable} -c 'import os, tempfile\n"
                "v = 3 - int(open(\"k_pysfx\").read())\n"
                "f = tempfile.NamedTemporaryFile(\"w\", dir=\".\", suffix=\".json\", "
                "delete=False)\n"
                "f.write(str(v)); f.close(); os.replace(f.name, \"k_pysfx\")'"),
    "k_vim": "vim -u NONE -i NONE -N -es -c 'set backup writebackup' "
             "-c 's/1/3/e|s/2/1/e|s/3/2/e' -c wq k_vim",
    "k_cp": "echo $((3 - $(cat k_cp))) > \"$CPSRC\" && cp --backup=simple \"$CPSRC\" k_cp",
}


def uploaded_keys_each(store_root):
    """The key sets of every state object in the dir store, read now."""
    out = []
    for p in (store_root / LZ).rglob("*.json"):
        try:
            out.append(set(json.loads(p.read_bytes())))
        except (OSError, ValueError):
            pass  # replaced meanwhile by a newer upload of the same second
    return out


def test_tools_temp_and_backup_files_are_never_uploaded(dmount, tmp_path):
    """Every tool runs in a loop for two seconds while `echo 1 > running`
    uploads as fast as it can; every object uploaded is read right after its
    upload: none has a name but the keys. Then each tool is killed between
    its close and its rename (strace kills it as it enters rename): the temp
    file stays, and the next upload does not have it either."""
    job = dmount.path / "j"
    job.mkdir()
    for k in EDITORS:
        (job / k).write_text("1")
    loops = [subprocess.Popen(["bash", "-c", f"end=$((SECONDS + 2)); n=0; "
                               f"while [ $SECONDS -lt $end ]; do {cmd} || exit 1; "
                               f"n=$((n + 1)); done; echo $n"],
                              cwd=job, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=dict(os.environ, CPSRC=str(tmp_path / "cpsrc")))
             for cmd in EDITORS.values()]
    seen = []
    while any(p.poll() is None for p in loops):
        assert sh("echo 1 > running", cwd=job).returncode == 0
        seen.extend(uploaded_keys_each(dmount.store.root))
    for name, p in zip(EDITORS, loops):
        out, err = p.communicate()
        assert p.returncode == 0 and int(out) > 0, (name, out, err)
    assert len(seen) > 10
    # No upload lacks a key either: sed -i, perl -pi and os.replace replace
    # it atomically, and an upload waits for the new value of a key that a
    # tool renamed to its backup name (sed -i.bak, cp --backup).
    for keys in seen:
        assert keys == set(EDITORS), keys
    for k in EDITORS:
        assert json.loads((job / k).read_text()) in (1, 2), k

    # Killed between close and rename: the temp file is left behind.
    before = set(os.listdir(job))
    kill = ["strace", "-f", "-qq", "-o", "/dev/null",
            "-e", "inject=rename,renameat,renameat2:error=EIO:signal=KILL"]
    for k in ("k_sed", "k_sedbak", "k_perl", "k_py", "k_pysfx"):
        r = subprocess.run([*kill, "bash", "-c", EDITORS[k]], cwd=job, capture_output=True,
                           text=True)
        assert r.returncode != 0, (k, r)
    left = sorted(set(os.listdir(job)) - before)
    kinds = sorted(next(p for p in ("sed??????", "XX??????", "tmp????????", "tmp????????.*")
                        if fnmatch.fnmatchcase(n, p)) for n in left)
    assert kinds == ["XX??????", "sed??????", "sed??????", "tmp????????",
                     "tmp????????.*"], left
    assert sh("echo 1 > running", cwd=job).returncode == 0
    newest = max((dmount.store.root / LZ).rglob("*.json"), key=lambda p: p.stat().st_mtime_ns)
    assert set(json.loads(newest.read_bytes())) == set(EDITORS)
    assert set(json.loads((job / ".state.json").read_text())) == set(EDITORS)

    # A key renamed to a backup name for good (mv): the next upload waits
    # for it a moment, then goes without it; the backup stays local.
    assert sh("mv k_cp k_cp.bak && echo 1 > running", cwd=job).returncode == 0
    newest = max((dmount.store.root / LZ).rglob("*.json"), key=lambda p: p.stat().st_mtime_ns)
    assert set(json.loads(newest.read_bytes())) == set(EDITORS) - {"k_cp"}
    assert json.loads((job / "k_cp.bak").read_text()) in (1, 2)


def test_scratch_patterns_are_a_mount_option(tmp_path):
    """--scratch=+LIST adds patterns to the default ones, --scratch= leaves
    only dot-names; a scratch file renamed onto a key commits it."""
    store = DirStore(tmp_path / "store")
    with Mount(store, tmp_path / "mnt", extra=["--scratch=+*.wip/draft-*"]) as m:
        job = m.path / "j"
        job.mkdir()
        for n in ("a.wip", "draft-1", "b.bak", "sedAbC123", "tmpab_cd123"):
            (job / n).write_text("not json at all")  # scratch: plain bytes
        (job / "a.wip").write_text('"day2.csv"')
        (job / "a.wip").rename(job / "a")
        # A name like a tool's temp file is one, whoever writes it.
        assert sh("echo 7 > tmp_counter", cwd=job).returncode == 0
        assert (job / "tmp_counter").read_text() == "7\n"
        with pytest.raises(OSError):
            (job / "draft-1").rename(job / "d")  # not JSON: refused, both kept
        assert (job / "draft-1").read_text() == "not json at all"
        assert sh("echo 1 > completed", cwd=job).returncode == 0
        assert json.loads((job / ".state.json").read_text()) == {"a": "day2.csv"}
        assert sorted(os.listdir(job)) == sorted(
            [".state.json", "completed", "running", "a", "draft-1", "b.bak", "sedAbC123",
             "tmpab_cd123", "tmp_counter"])
    assert [set(b) for b in uploads(store).values()] == [{"a"}]
    with Mount(store, tmp_path / "mnt", extra=["--scratch="]) as m:
        job = m.path / "j"
        (job / "b.bak").write_text("2")
        (job / ".b.swp").write_text("swap")
        assert json.loads((job / ".state.json").read_text()) == {"a": "day2.csv", "b.bak": 2}


# ---- 5. editors save; each key has its own mtime ---------------------------

class Tmux:
    """A tmux server of our own, one per program: each start has its own
    socket (the server of a program that quit exits, and a new session on
    that socket could meet it exiting)."""

    def __init__(self, path):
        self.base = str(path)
        self.started = 0
        self.sock = self.base

    def cmd(self, *args, check=True):
        return subprocess.run(["tmux", "-S", self.sock, *args], capture_output=True,
                              text=True, check=check, timeout=30)

    def start(self, cwd, command):
        self.started += 1
        self.sock = f"{self.base}.{self.started}"
        self.cmd("new-session", "-d", "-x", "100", "-y", "30", "-c", str(cwd),
                 "-e", "TERM=xterm", command)

    def screen(self):
        r = self.cmd("capture-pane", "-p", check=False)
        return r.stdout if r.returncode == 0 else None

    def wait(self, pred, what, timeout=20):
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if pred(screen):
                return screen
            assert time.monotonic() < deadline, f"{what}; the screen:\n{screen}"
            time.sleep(0.05)

    def keys(self, *keys):
        self.cmd("send-keys", *keys)

    def kill(self):
        self.cmd("kill-server", check=False)


def edit_while_the_job_changes(tmux, job, command, ready, edit):
    """Opens a key in an editor, changes another key of the job meanwhile (a
    running ETL job does), then saves and quits."""
    tmux.start(job, command)
    tmux.wait(lambda s: s is not None and ready in s, "the editor did not start")
    assert sh("echo 7 > other", cwd=job).returncode == 0
    time.sleep(0.05)  # the change is older than the save by a clock tick
    edit()
    tmux.wait(lambda s: s is None, "the editor did not quit (a warning?)")


def test_editors_save_and_keys_have_their_own_mtime(dmount, tmp_path):
    job = dmount.path / "j"
    job.mkdir()
    for k in ("k_vim", "k_es", "k_nano", "other"):
        (job / k).write_text("1")
    # vim -es, with swap and backup on
    r = sh("vim -u NONE -i NONE -N -es -c 'set swapfile backup writebackup' "
           "-c 's/1/2/' -c wq k_es", cwd=job)
    assert r.returncode == 0, r
    assert json.loads((job / "k_es").read_text()) == 2
    tmux = Tmux(tmp_path / "tmux.sock")
    try:
        # vim, interactive, with swap and backup on
        def vim_edit():
            tmux.keys(":s/1/2/", "Enter")
            tmux.keys(":wq", "Enter")
        edit_while_the_job_changes(
            tmux, job, "vim -u NONE -i NONE -N -c 'set swapfile backup writebackup' k_vim",
            '"k_vim"', vim_edit)
        # nano
        def nano_edit():
            tmux.keys("End", "0")
            tmux.keys("C-o")
            tmux.wait(lambda s: s and "File Name to Write" in s, "no write prompt")
            tmux.keys("Enter")
            tmux.wait(lambda s: s and "Wrote" in s, "nano did not write")
            tmux.keys("C-x")
        edit_while_the_job_changes(tmux, job, "nano k_nano", "GNU nano", nano_edit)
    finally:
        tmux.kill()
    assert json.loads((job / "k_vim").read_text()) == 2
    assert json.loads((job / "k_nano").read_text()) == 10
    state = json.loads((job / ".state.json").read_text())
    assert {k: state[k] for k in ("k_vim", "k_es", "k_nano", "other")} == {
        "k_vim": 2, "k_es": 2, "k_nano": 10, "other": 7}
    assert set(state) <= {"k_vim", "k_es", "k_nano", "other"}, state  # no backup, no swap

    # ls -lt and find -newer: each key's own last change; touch -d sets it.
    for k in ("ka", "kb", "kc"):
        (job / k).write_text("1")
        time.sleep(0.01)
    r = sh("ls -t ka kb kc", cwd=job)
    assert r.stdout.split() == ["kc", "kb", "ka"], r
    assert sh("touch -d '2020-01-02 03:04:05 UTC' kb", cwd=job).returncode == 0
    assert sh("ls -t ka kb kc", cwd=job).stdout.split() == ["kc", "ka", "kb"]
    assert sh("find . -name 'k?' -newer ka", cwd=job).stdout.split() == ["./kc"]
    assert os.stat(job / "kb").st_mtime == 1577934245
    assert json.loads((job / "kb").read_text()) == 1  # touch changed no value
    (job / "kb").write_text("2")
    assert sh("ls -t ka kb kc", cwd=job).stdout.split()[0] == "kb"
    os.rename(job / "kb", job / "kd")  # a rename keeps the mtime
    assert os.stat(job / "kd").st_mtime >= os.stat(job / "kc").st_mtime
    assert uploads(dmount.store) == {}


# ---- 4. restoring a copy of a job uploads nothing --------------------------

RESTORES = {
    "cp": "cp bk/* mnt/{job}/",
    "cp -a": "cp -a bk/. mnt/{job}/",
    "cp -r": "cp -r bk/. mnt/{job}/",
    "tar -x": "tar -C mnt/{job} -xf bk.tar",
    "rsync -a": "rsync -a bk/ mnt/{job}/",
}


def test_restoring_a_copy_of_a_job_uploads_nothing(dmount):
    """A copy of a job (cp -r MNT/job bk) holds its keys, .state.json and
    empty control files (the read-out is the job's .status, which a copy
    does not list); copying it into jobs, fresh or with other keys, with
    cp, cp -a, tar -x and rsync -a restores every key and uploads nothing.
    Only an explicit trigger uploads: a write to a control file, touch,
    truncate. What each tool does to the control files was checked with
    strace: cp opens them O_TRUNC and writes nothing; cp -a also sets
    explicit times; tar -x removes them and creates them O_EXCL; rsync -a
    renames its .running.XXXXXX onto them."""
    top = dmount.path.parent
    src = dmount.path / "src"
    src.mkdir()
    state = {"last_file": "day2.csv", "epoch": 156234987, "files": ["a", "b"]}
    for k, v in state.items():
        (src / k).write_text(json.dumps(v))
    assert sh("echo 1 > src/completed", cwd=dmount.path).returncode == 0
    first, = uploads(dmount.store).values()
    assert first == state
    r = sh("cp -r mnt/src bk && tar -C bk -cf bk.tar .", cwd=top)
    assert r.returncode == 0, r
    assert (top / "bk" / "running").read_bytes() == b""
    assert (top / "bk" / "completed").read_bytes() == b""
    assert sorted(os.listdir(top / "bk")) == [".state.json", "completed", "epoch", "files",
                                              "last_file", "running"]
    readout = json.loads((src / ".status").read_text())
    assert readout["last_upload"]["completed"]["keys"] == 3
    assert readout["last_upload"]["running"] == {}
    for i, (tool, cmd) in enumerate(RESTORES.items()):
        for fresh in (True, False):
            job = f"r{i}{'f' if fresh else 'o'}"
            (dmount.path / job).mkdir()
            if not fresh:  # a job with a key of its own and another value
                (dmount.path / job / "own").write_text("1")
                (dmount.path / job / "epoch").write_text("5")
            r = sh(cmd.format(job=job), cwd=top)
            assert r.returncode == 0, (tool, r)
            got = json.loads((dmount.path / job / ".state.json").read_text())
            # With .state.json in the copy (all but cp of the glob), the
            # job is the copy; else the copy's keys on top of its own.
            want = dict(state, own=1) if not fresh and tool == "cp" else state
            assert got == want, (tool, fresh, got)
            assert sorted(os.listdir(dmount.path / job))[:3] == [".state.json",
                                                                 "completed", "epoch"]
            assert (dmount.path / job / "running").exists(), tool
    # The copy's directory copied as a new job: every key, no upload, but
    # cp creates with O_EXCL in the directory it made, and a new job has
    # its control files and .state.json already (README, "Copies").
    for i, cmd in enumerate(("cp -r bk mnt/n0", "cp -a bk mnt/n1")):
        r = sh(cmd, cwd=top)
        assert r.returncode == 1, (cmd, r)
        assert sorted(re.findall(r"'mnt/n\d/(.*)': File exists", r.stderr)) == [
            ".state.json", "completed", "running"], r.stderr
        assert json.loads((dmount.path / f"n{i}" / ".state.json").read_text()) == state
    assert list(uploads(dmount.store).values()) == [first]  # nothing more
    assert status(dmount.path)["uploads"]["done"] == 1

    # Explicit triggers, each one upload.
    job = dmount.path / "r0f"
    n = 1
    for trigger in ("echo 1 > running", "touch running", "truncate -s0 running",
                    "python3 -c 'open(\"completed\", \"w\").write(\"x\")'"):
        assert sh(trigger, cwd=job).returncode == 0, trigger
        n += 1
        assert status(dmount.path)["uploads"]["done"] == n, trigger
    # Not triggers: an O_TRUNC open with no write, explicit times.
    for quiet in (": > running", "touch -d '2020-01-01' completed", "cat running",
                  "cp /dev/null completed"):
        assert sh(quiet, cwd=job).returncode == 0, quiet
        assert status(dmount.path)["uploads"]["done"] == n, quiet
    assert (job / "running").read_bytes() == b"" and os.stat(job / "running").st_size == 0
    for body in uploads(dmount.store).values():
        assert body == state


# ---- 6. whole-state replaces, rm -rf of a job, dot-dirs at the root --------

def test_whole_state_replace_rm_rf_and_dot_dirs(dmount):
    mnt = dmount.path
    job = mnt / "j"
    job.mkdir()
    (job / "old").write_text("1")
    assert sh("echo 1 > completed", cwd=job).returncode == 0
    # os.replace onto .state.json: from_bytes, like a write.
    r = subprocess.run([sys.executable, "-c", (
        "import json, os, tempfile\n"
        "f = tempfile.NamedTemporaryFile('w', dir='.', delete=False)\n"
        "json.dump({'a': 1, 'b': [2]}, f); f.close()\n"
        "os.replace(f.name, '.state.json')")], cwd=job, capture_output=True, text=True)
    assert r.returncode == 0, r
    assert json.loads((job / ".state.json").read_text()) == {"a": 1, "b": [2]}
    assert sorted(os.listdir(job)) == [".state.json", "a", "b", "completed", "running"]
    # not an object: refused, the state stays, the temp file too
    (job / ".new").write_text("[1]")
    with pytest.raises(OSError) as e:
        os.rename(job / ".new", job / ".state.json")
    assert e.value.errno == errno.EINVAL
    assert sh("mv .new .state.json", cwd=job).returncode != 0  # mv words EINVAL oddly
    assert json.loads((job / ".state.json").read_text()) == {"a": 1, "b": [2]}
    assert (job / ".new").exists()
    # jq's filter written back through a scratch file and mv
    assert sh("jq '.a += 1' .state.json > .s.tmp && mv .s.tmp .state.json", cwd=job) \
        .returncode == 0
    assert json.loads((job / ".state.json").read_text()) == {"a": 2, "b": [2]}
    # sponge writes in place
    assert sh("jq '.b += [3]' .state.json | sponge .state.json", cwd=job).returncode == 0
    assert json.loads((job / ".state.json").read_text()) == {"a": 2, "b": [2, 3]}
    uploaded_before = dict(dmount.store.objects(LZ))
    assert len(uploaded_before) == 1

    # rm -rf of the job: exit 0, forgotten locally, nothing uploaded; the
    # stored state is back at the next access.
    r = sh("rm -rf j", cwd=mnt)
    assert r.returncode == 0, r
    assert dmount.store.objects(LZ) == uploaded_before
    assert json.loads((job / ".state.json").read_text()) == {"old": 1}
    r = sh("rm -rf j; ls -A j", cwd=mnt)
    assert r.returncode == 0 and r.stdout.split() == [".state.json", "completed", "old",
                                                       "running"], r
    (mnt / "k").mkdir()
    (mnt / "k" / "x").write_text("1")
    assert sh("rm -rf k", cwd=mnt).returncode == 0
    assert not (mnt / "k").exists()  # never stored: gone
    # A removed control file is back when created again.
    assert sh("rm running && ls && echo 1 > running", cwd=job).returncode == 0
    assert "running" in os.listdir(job)

    # git init MNT makes no job: dot-names at the root are not jobs.
    r = subprocess.run(["git", "init", "-q", str(mnt)], capture_output=True, text=True)
    assert r.returncode != 0 and "Operation not permitted" in r.stderr, r
    assert not any(n.startswith(".") and n != ".status" for n in os.listdir(mnt))
    for bad in (lambda: (mnt / ".cache").mkdir(), lambda: (mnt / ".git" / "x").write_text("1")):
        with pytest.raises(OSError):
            bad()
    assert sorted(os.listdir(mnt)) == [".status", "j"]


# ---- 7. the newcomer's first steps -----------------------------------------

REPO = Path(__file__).resolve().parents[2]


def test_demo_uses_a_throwaway_store_and_the_readme_starts_with_the_default_mount(tmp_path):
    """./scripts/demo leaves nothing in the user's default store or cache
    (nor in its temp dir), and ends by showing how to mount the embedded
    default; the README's first screen shows that mount, where the binary
    is, and that plain text must be quoted JSON."""
    home = tmp_path / "home"
    env = dict(os.environ, HOME=str(home), XDG_DATA_HOME=str(home / "data"),
               XDG_STATE_HOME=str(home / "state"), TMPDIR=str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    home.mkdir()
    r = subprocess.run([str(REPO / "scripts" / "demo")], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert out.splitlines().count("first run: no bookmark yet") == 1
    assert "refused: not JSON" in out and "write error: Invalid argument" in r.stderr
    assert "the job resumes from its completed bookmark" in out
    assert '"last_file":"day2.csv"' in out  # the second run, after the remount
    assert f"mkdir -p ~/state && {REPO}/build/fs/bookmarkfs ~/state" in out
    assert list(home.rglob("*")) == []  # no default store, no journal
    assert list((tmp_path / "tmp").iterdir()) == []  # the throwaway store is gone

    first_screen = "\n".join((REPO / "README.md").read_text().splitlines()[:40])
    assert "build/fs/bookmarkfs ~/state" in first_screen
    assert "The binary is `build/fs/bookmarkfs`" in first_screen
    assert "echo '\"day2.csv\"' >" in first_screen and "jq -R . <<< day2.csv" in first_screen
    assert "plain text must be quoted JSON" in first_screen


def test_vim_saves_the_whole_state(dmount):
    """vim on .state.json (swap and backup on): its swap and probe files are
    scratch files, whose creation and removal are no change of the state,
    so the save finds .state.json as it read it and writes it; -es would
    otherwise answer its "file changed since reading" prompt with no and
    exit 0 having written nothing."""
    job = dmount.path / "j"
    job.mkdir()
    (job / "a").write_text("1")
    (job / "b").write_text('"x"')
    before = os.stat(job / ".state.json").st_mtime_ns
    (job / ".probe").write_text("x")
    (job / ".probe").rename(job / ".probe2")
    (job / ".probe2").unlink()
    assert os.stat(job / ".state.json").st_mtime_ns == before
    r = sh("vim -u NONE -i NONE -N -es -c 'set swapfile backup writebackup' "
           "-c 's/\"a\":1/\"a\":2/' -c wq .state.json", cwd=job)
    assert r.returncode == 0, r
    assert json.loads((job / ".state.json").read_text()) == {"a": 2, "b": "x"}
    assert json.loads((job / "a").read_text()) == 2
    assert sorted(os.listdir(job)) == [".state.json", "a", "b", "completed", "running"]
    assert uploads(dmount.store) == {}
