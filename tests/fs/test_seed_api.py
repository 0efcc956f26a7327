"""Every row of the amorphicutils API (README, "The tree"), from the shell
and from Python."""
import json
import re
import subprocess
import time

import pytest

from tests.support.mount import DATASET, DOMAIN, LZ, USER
from tests.support.statedata import StateData

KEY_RE = re.compile(
    rf"^{DOMAIN}/{DATASET}/upload_date=(\d+)/{USER}/others/(.+)_(running|completed)\.json$")


def sh(cmd, cwd):
    return subprocess.run(["bash", "-c", cmd], cwd=cwd, capture_output=True, text=True)


def uploads(store, job):
    """{kind: [(epoch, body-dict)]} of the job's objects in the LZ bucket."""
    out = {"running": [], "completed": []}
    for key, body in store.objects(LZ).items():
        m = KEY_RE.match(key)
        assert m, f"object outside the Amorphic layout: {key}"
        if m.group(2) == job:
            out[m.group(3)].append((int(m.group(1)), json.loads(body)))
    return out


def test_seed_example_from_python(store, mnt):
    model = StateData()
    before = int(time.time())
    (mnt / "test_job").mkdir()                                  # get_or_create
    with open(mnt / "test_job" / "DatasetId", "w") as f:        # add_element
        f.write(json.dumps({"epoch_time": 156234987}))
    model.add_element("DatasetId", {"epoch_time": 156234987})
    with open(mnt / "test_job" / "running", "w") as f:          # update
        f.write("1")
    with open(mnt / "test_job" / "completed", "w") as f:        # complete
        f.write("1")
    after = int(time.time())
    up = uploads(store, "test_job")
    assert len(up["running"]) == 1 and len(up["completed"]) == 1
    for kind in ("running", "completed"):
        epoch, body = up[kind][0]
        assert before <= epoch <= after
        assert body == json.loads(model.to_bytes())


def test_every_row_from_the_shell(store, mnt):
    model = StateData()
    r = sh("mkdir job1 && echo '{\"epoch_time\": 1}' > job1/a.b && echo '[1, 2]' > job1/c.d"
           " && echo '\"x\"' > job1/e", mnt)
    assert r.returncode == 0, r.stderr
    model.add_element("a.b", {"epoch_time": 1})
    model.add_element("c.d", [1, 2])
    model.add_element("e", "x")
    assert json.loads(sh("cat job1/.state.json", mnt).stdout) == model.data   # to_bytes
    assert sh("rm job1/c.d", mnt).returncode == 0                              # remove_element
    model.remove_element("c.d")
    assert json.loads(sh("cat job1/.state.json", mnt).stdout) == model.data
    r = sh("echo 1 > job1/running", mnt)                                       # update
    assert r.returncode == 0, r.stderr
    assert uploads(store, "job1")["running"][-1][1] == model.data
    # from_bytes replaces every key at once
    r = sh("echo '{\"z\": true, \"y\": null}' > job1/.state.json", mnt)
    assert r.returncode == 0
    model.from_bytes({"z": True, "y": None})
    assert sorted(p.name for p in (mnt / "job1").iterdir() if p.name not in
                  ("running", "completed", ".state.json")) == ["y", "z"]
    assert json.loads(sh("cat job1/.state.json", mnt).stdout) == model.data
    r = sh("touch job1/completed", mnt)                                        # complete
    assert r.returncode == 0
    assert uploads(store, "job1")["completed"][-1][1] == model.data
    # reset, both ways
    sh("echo '{}' > job1/.state.json", mnt)
    model.reset()
    assert sh("cat job1/.state.json", mnt).stdout.strip() == "{}"
    sh("echo 1 > job1/k1; echo 2 > job1/k2; rm job1/k1 job1/k2", mnt)
    assert sh("cat job1/.state.json", mnt).stdout.strip() == "{}"


def test_every_row_from_python(store, mnt):
    job = mnt / "pyjob"
    job.mkdir()
    model = StateData()
    for k, v in [("t1", {"a": [1, {"b": None}]}), ("t2", 3.5), ("t3", "héllo ☃"), ("t4", False)]:
        with open(job / k, "w", encoding="utf-8") as f:
            json.dump(v, f)
        model.add_element(k, v)
    with open(job / "t2", "w") as f:  # update keeps the position
        f.write("7")
    model.add_element("t2", 7)
    (job / "t1").unlink()
    model.remove_element("t1")
    with open(job / ".state.json", encoding="utf-8") as f:
        text = f.read()
    assert json.loads(text) == model.data
    assert list(json.loads(text)) == list(model.data)  # first-insertion order
    with open(job / "running", "w") as f:
        f.write("x")
    body = uploads(store, "pyjob")["running"][-1][1]
    assert body == model.data and list(body) == list(model.data)
    with open(job / ".state.json", "w") as f:
        json.dump({"only": 1}, f)
    model.from_bytes({"only": 1})
    with open(job / "completed", "w") as f:
        f.write("x")
    assert uploads(store, "pyjob")["completed"][-1][1] == model.data


def test_a_job_with_only_running_objects_is_there_and_starts_empty(store, mnt):
    """--resume-from=completed (the default) leaves its objects out, so
    get_or_create starts it empty; but ls, stat and mkdir agree that it is
    there (as .history/ does)."""
    key = f"{DOMAIN}/{DATASET}/upload_date=1700000000/{USER}/others/runonly_running.json"
    store.put(LZ, key, b'{"offset": 3}')
    assert "runonly" in [p.name for p in mnt.iterdir()]
    job = mnt / "runonly"
    assert job.is_dir()
    with pytest.raises(FileExistsError):
        job.mkdir()
    assert json.loads((job / ".state.json").read_text()) == {}
    assert not (job / "offset").exists()
    assert json.loads((job / ".status").read_text())["loaded"] == {}
    (job / "offset").write_text("4")
    assert sh("echo 1 > completed", cwd=job).returncode == 0
    assert uploads(store, "runonly")["completed"][-1][1] == {"offset": 4}
    assert store.get(LZ, key) == b'{"offset": 3}'  # the running object stays


def test_first_access_loads_a_stored_job(store, mnt):
    key = f"{DOMAIN}/{DATASET}/upload_date=1700000000/{USER}/others/stored_completed.json"
    store.put(LZ, key, b'{"DatasetId": {"epoch_time": 5}}')
    assert "stored" in [p.name for p in mnt.iterdir()]          # readdir shows it
    assert json.loads((mnt / "stored" / "DatasetId").read_text()) == {"epoch_time": 5}
    info = json.loads((mnt / "stored" / ".status").read_text())
    assert info["loaded"]["key"] == key and info["last_upload"]["completed"] == {}
    with pytest.raises(FileExistsError):
        (mnt / "stored").mkdir()
