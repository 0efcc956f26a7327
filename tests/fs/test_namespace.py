"""Mount namespaces, as containers use them, and the container examples in
deploy/.

A daemon started in a new private mount namespace (`unshare -m`) mounts
there only; a process that joins it (`nsenter -m`) uses the mount. The
Kubernetes sidecar pattern (deploy/kubernetes) relies on a shared mount: the
sidecar's mount propagates to its peers (Bidirectional), the job's container
sees it, and it goes away everywhere when the sidecar stops.
"""
import json
import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.mount import DirStore, binary
from tests.support.paths import REPO

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces need root")


def mountpoints(pid="self") -> list:
    return [line.split()[4] for line in
            Path(f"/proc/{pid}/mountinfo").read_text().splitlines()]


def nsenter(pid, *cmd):
    return subprocess.run(["nsenter", "-t", str(pid), "-m", "--", *map(str, cmd)],
                          capture_output=True, text=True, timeout=60)


def wait_for_mount(ns_pid, mnt: Path, proc: subprocess.Popen, log: Path):
    deadline = time.monotonic() + 20
    while str(mnt) not in mountpoints(ns_pid):
        assert proc.poll() is None, f"bookmarkfs exited ({proc.returncode}):\n{log.read_text()}"
        assert time.monotonic() < deadline, "bookmarkfs did not mount:\n" + log.read_text()
        time.sleep(0.02)


def stop(proc: subprocess.Popen):
    """End a daemon we started, by its PID: SIGTERM makes libfuse unmount."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def bookmarkfs_cmd(store: DirStore, tmp: Path, mnt: Path):
    return [str(binary()), *store.args(), f"--cache-dir={tmp / 'cache'}", "-f", str(mnt)]


JOB_SCRIPT = ('mkdir "$1/orders"; printf 42 > "$1/orders/last_id"; '
              'echo 1 > "$1/orders/running"; ls "$1"; ls "$1/orders"; '
              'cat "$1/orders/last_id"')


def start_in_private_namespace(tmp_path):
    """bookmarkfs on a dir store, in a mount namespace of its own: unshare
    execs it, so the process's pid is the daemon's."""
    store = DirStore(tmp_path / "store")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    log = tmp_path / "bookmarkfs.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["unshare", "-m", "--propagation", "private",
                                 *bookmarkfs_cmd(store, tmp_path, mnt)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    return store, mnt, log, proc


@needs_root
def test_private_namespace_mount_is_seen_only_by_who_joins_it(tmp_path):
    store, mnt, log, proc = start_in_private_namespace(tmp_path)
    try:
        wait_for_mount(proc.pid, mnt, proc, log)
        # Not here: our namespace has the plain, empty directory.
        assert str(mnt) not in mountpoints()
        assert not os.path.ismount(mnt) and os.listdir(mnt) == []

        r = nsenter(proc.pid, "sh", "-ec", JOB_SCRIPT, "sh", mnt)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["orders", "completed", "last_id", "running", "42"]

        # Another process joining later sees the same state.
        r = nsenter(proc.pid, "cat", mnt / "orders" / ".state.json")
        assert r.returncode == 0 and json.loads(r.stdout) == {"last_id": 42}, r
        (key, body), = store.objects().items()
        assert key.endswith("/orders_running.json") and body == b'{"last_id":42}'
        assert os.listdir(mnt) == []  # still nothing in our namespace

        r = nsenter(proc.pid, "fusermount3", "-u", mnt)
        assert r.returncode == 0, r.stderr
        assert proc.wait(timeout=30) == 0, log.read_text()
    finally:
        stop(proc)


@needs_root
def test_shared_mount_propagates_like_a_bidirectional_volume(tmp_path):
    """The pod: a 'job' namespace holds a shared directory (the volume); the
    sidecar's namespace is a copy of it, and bookmarkfs mounts below the
    shared directory there. The mount shows up in the job's namespace, and
    leaves it when the sidecar stops."""
    store = DirStore(tmp_path / "store")
    volume = tmp_path / "shared"
    mnt = volume / "state"
    mnt.mkdir(parents=True)
    log = tmp_path / "sidecar.log"
    job = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         'mount --bind "$1" "$1" && mount --make-shared "$1" && echo ready && '
         'exec sleep infinity', "sh", str(volume)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sidecar = None
    try:
        assert job.stdout.readline() == b"ready\n", job.stderr.read()
        with open(log, "wb") as out:
            # the sidecar: a new namespace copied from the job's, which keeps
            # the volume in the same peer group
            sidecar = subprocess.Popen(
                ["nsenter", "-t", str(job.pid), "-m", "--", "unshare", "-m",
                 "--propagation", "unchanged", *bookmarkfs_cmd(store, tmp_path, mnt)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        wait_for_mount(job.pid, mnt, sidecar, log)  # propagated to the job
        assert str(mnt) in mountpoints(sidecar.pid)
        assert str(mnt) not in mountpoints()

        r = nsenter(job.pid, "sh", "-ec", JOB_SCRIPT, "sh", mnt)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["orders", "completed", "last_id", "running", "42"]
        assert list(store.objects().values()) == [b'{"last_id":42}']

        stop(sidecar)  # SIGTERM, as Kubernetes stops the sidecar
        assert sidecar.returncode == 0, log.read_text()
        assert str(mnt) not in mountpoints(job.pid)  # no dead mount left behind
    finally:
        if sidecar is not None:
            stop(sidecar)
        job.kill()
        job.wait()
        job.stdout.close()
        job.stderr.close()


@needs_root
def test_sigterm_unmounts_and_exits_0(tmp_path):
    """docker stop and Kubernetes stop a container with SIGTERM: an orderly
    unmount, exit status 0."""
    store, mnt, log, proc = start_in_private_namespace(tmp_path)
    try:
        wait_for_mount(proc.pid, mnt, proc, log)
        r = nsenter(proc.pid, "sh", "-ec", JOB_SCRIPT, "sh", mnt)
        assert r.returncode == 0, r.stderr
        stop(proc)
        assert "unmounted" in log.read_text()
        assert proc.returncode == 0, log.read_text()
    finally:
        stop(proc)


# --- deploy/: the Dockerfile and the Kubernetes example ---------------------

DOCKERFILE = REPO / "deploy" / "Dockerfile"


def dockerfile_runs() -> list:
    """The shell commands of every RUN instruction (continuations joined),
    split at && and ;, whitespace normalised."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    cmds = []
    for line in text.splitlines():
        m = re.match(r"\s*RUN\s+(.*)", line)
        if m:
            for part in re.split(r"&&|;", m.group(1)):
                if part.strip():
                    cmds.append(" ".join(part.split()))
    return cmds


def test_dockerfile_builds_as_scripts_test_does():
    script = REPO / "scripts" / "test"
    if not script.exists():
        pytest.skip("scripts/test does not exist yet")
    build = [c for c in dockerfile_runs()
             if re.match(r"(meson setup|ninja|(\S*/)?scripts/build)(\s|$)", c)]
    assert build, "the Dockerfile has no build step"
    test_cmds = {" ".join(line.split()) for line in script.read_text().splitlines()}
    for cmd in build:
        assert cmd in test_cmds, f"{cmd!r} is not how scripts/test builds"


def test_dockerfile_installs_the_build_packages_of_scripts_deps():
    deps = (REPO / "scripts" / "deps").read_text()
    m = re.search(r'^BUILD_PACKAGES="([^"]*)"', deps, re.M)
    assert m, "scripts/deps has no BUILD_PACKAGES"
    installed = set()
    for cmd in dockerfile_runs():
        if "apt-get install" in cmd:
            installed |= {w for w in shlex.split(cmd) if not w.startswith("-")}
    missing = set(m.group(1).split()) - installed
    assert not missing, f"the Dockerfile does not install {sorted(missing)}"
    assert re.search(r"^FROM debian:bookworm", DOCKERFILE.read_text(), re.M)
    assert re.search(r'^ENTRYPOINT \["bookmarkfs", "-f"\]', DOCKERFILE.read_text(), re.M)


def test_kubernetes_sidecar_example_is_consistent():
    yaml = pytest.importorskip("yaml")
    docs = [d for f in sorted((REPO / "deploy" / "kubernetes").glob("*.yaml"))
            for d in yaml.safe_load_all(f.read_text()) if d]
    sa = next(d for d in docs if d["kind"] == "ServiceAccount")
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    (pod,) = [d["spec"]["template"]["spec"] for d in docs if d["kind"] == "Job"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (sidecar,) = [c for c in pod.get("initContainers", []) if c.get("restartPolicy") == "Always"]
    (etl,) = pod["containers"]

    sc = sidecar["securityContext"]
    assert "SYS_ADMIN" in sc["capabilities"]["add"]
    assert sc.get("privileged"), "Kubernetes allows Bidirectional only when privileged"
    fuse = [m for m in sidecar["volumeMounts"] if m["mountPath"] == "/dev/fuse"]
    assert fuse and volumes[fuse[0]["name"]]["hostPath"]["path"] == "/dev/fuse"

    bidi = [m for m in sidecar["volumeMounts"] if m.get("mountPropagation") == "Bidirectional"]
    assert len(bidi) == 1
    shared = bidi[0]
    mountpoint = sidecar["args"][-1]
    assert mountpoint.startswith(shared["mountPath"].rstrip("/") + "/")
    seen = [m for m in etl["volumeMounts"] if m["name"] == shared["name"]]
    assert seen and seen[0].get("mountPropagation") == "HostToContainer"
    # the same options bookmarkfs accepts, none with secrets in them
    for arg in sidecar["args"][:-1]:
        assert re.fullmatch(r"--[a-z-]+(=\S+)?", arg), arg
    assert not [e for e in sidecar.get("env", []) if "SECRET" in e["name"]]
