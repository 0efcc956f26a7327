"""The container recipes run for real (README, "Containers" and
"Kubernetes"): Debian's podman builds the image from deploy/Dockerfile and
runs it. Skipped, with the reason, where podman cannot run containers (not
root, podman/runc/debootstrap missing, no /dev/fuse).

- the image mounts inside a container (--network=none, /dev/fuse,
  SYS_ADMIN), takes writes through `podman exec`, uploads, and unmounts on
  SIGTERM (podman stop), exit status 0;
- the README's build and run commands, as written (docker -> podman, plus
  the S3 endpoint of the test), against s3rver;
- the mount propagates from one container (rshared) to the host and into a
  second container (rslave, as Kubernetes' HostToContainer), which runs the
  Kubernetes example's ETL script; the script refuses a plain directory;
- the Kubernetes example's pod through `podman kube play` (podman 4.3 knows
  no Job and no native sidecar: the Job's pod template becomes a Pod, the
  sidecar an ordinary container).

S3 is an s3rver on the host, run inside the network namespace of a holder
container that has no network (--network=none): the containers that need
S3 join that namespace, and the test reads the bucket with the AWS CLI run
there too. Images and layers are cached (tests/support/podman.py): the
first run on a machine spends about two minutes on debootstrap and three on
the image build; later runs about one.
"""
import json
import os
import re
import shlex
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.support import podman as podman_support
from tests.support.s3rver import ACCESS_KEY, REGION, SECRET_KEY, S3rver

REPO = Path(__file__).resolve().parents[1]
IMAGE = "localhost/bookmarkfs:latest"  # what the README's build tags: bookmarkfs
BASE = podman_support.BASE_NAMES[0]
DOMAIN, DATASET, USER = "sales", "etl_state", "etl"  # the README's and the manifest's

WHY_NOT = podman_support.why_not()
pytestmark = pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT or "")


def readme_commands(first_word):
    """The README's `docker ...` commands of the Containers section, joined
    at their continuations, split as the shell would."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("### Containers"):text.index("### Kubernetes")]
    joined = re.sub(r"\\\n\s*", " ", section)
    return [shlex.split(line) for line in joined.splitlines()
            if line.strip().startswith(f"docker {first_word} ")]


def manifest():
    docs = [d for d in yaml.safe_load_all(
        (REPO / "deploy/kubernetes/etl-job-with-bookmarkfs.yaml").read_text()) if d]
    return next(d for d in docs if d["kind"] == "Job")


def etl_script():
    return manifest()["spec"]["template"]["spec"]["containers"][0]["command"]


class NetnsS3rver(S3rver):
    """s3rver run in another network namespace (nsenter --net)."""

    def __init__(self, netns, port=0):
        super().__init__()
        self.netns = netns
        self.listen_port = port

    def command_prefix(self):
        return ["nsenter", f"--net={self.netns}"]

    def _answers(self):
        return True  # "listening on" was logged; the host cannot connect

    def aws(self, *args):
        env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY,
                   AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_REGION=REGION,
                   AWS_EC2_METADATA_DISABLED="true")
        env.pop("AWS_PROFILE", None)
        r = subprocess.run(["nsenter", f"--net={self.netns}", "aws", "--endpoint-url",
                            self.endpoint, *args], env=env, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout) if r.stdout.strip() else None

    def make_bucket(self, bucket):
        if bucket not in {b["Name"] for b in self.aws("s3api", "list-buckets")["Buckets"]}:
            self.aws("s3api", "create-bucket", "--bucket", bucket)

    def objects(self, bucket):
        """{key: body} of the bucket, read with the AWS CLI."""
        listing = self.aws("s3api", "list-objects-v2", "--bucket", bucket) or {}
        out = {}
        with tempfile.TemporaryDirectory() as d:
            for o in listing.get("Contents", []):
                path = os.path.join(d, "o")
                self.aws("s3api", "get-object", "--bucket", bucket, "--key", o["Key"],
                         path)
                out[o["Key"]] = Path(path).read_bytes()
        return out


@pytest.fixture(scope="module")
def engine():
    p = podman_support.Podman()
    try:
        info = p.run("info", check=False)
        if info.returncode != 0:  # e.g. no overlay storage on this file system
            lines = (info.stderr or info.stdout).strip().splitlines() or ["no output"]
            pytest.skip(f"podman cannot run containers here: {lines[-1]}")
        # The README's build command, as written but for podman's flags;
        # after a `prepare` run (scripts/test starts one in the background),
        # its layers are all in the cache.
        (build,) = readme_commands("build")
        assert build[:2] == ["docker", "build"] and build[-1] == "."
        assert build[1:-1] == podman_support.README_BUILD
        with p.prepared():
            p.ensure_base_images()
            p.build_as_readme(build[1:-1])
        assert p.run("image", "exists", IMAGE, check=False).returncode == 0
        yield p
    finally:
        p.close()


@pytest.fixture(scope="module")
def holder(engine):
    """A container with no network whose namespace holds s3rver."""
    name = "bookmarkfs-netns-" + uuid.uuid4().hex[:8]
    engine.run("run", "-d", "--name", name, "--network=none", BASE, "sleep", "infinity")
    pid = engine.run("inspect", "-f", "{{.State.Pid}}", name).stdout.strip()
    with NetnsS3rver(f"/proc/{pid}/ns/net") as s3:
        s3.container = name
        yield s3
    engine.run("rm", "-f", "-t", "0", name, check=False)


def fuse_mounts(path):
    r = subprocess.run(["findmnt", "-rn", "-o", "FSTYPE", "-M", str(path)],
                       capture_output=True, text=True)
    return r.stdout.split()


def wait_mounted(engine, name, path, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = engine.run("exec", name, "grep", "-qs", f" {path} fuse.bookmarkfs ",
                       "/proc/self/mounts", check=False)
        if r.returncode == 0:
            return
        time.sleep(0.3)
    logs = engine.run("logs", name, check=False)
    raise AssertionError(f"{path} not mounted in {name}:\n{logs.stdout}{logs.stderr}")


def completed(objects, job):
    (key,) = [k for k in objects if k.endswith(f"/{job}_completed.json")]
    return key, json.loads(objects[key])


def test_mount_in_a_container_exec_writes_and_sigterm(engine, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    name = "bookmarkfs-" + uuid.uuid4().hex[:8]
    engine.run("run", "-d", "--name", name, "--network=none", "--device", "/dev/fuse",
               "--cap-add", "SYS_ADMIN", "-v", f"{store}:/store", IMAGE,
               "--store=dir:/store", f"--domain={DOMAIN}", f"--dataset={DATASET}",
               f"--user={USER}", "/state")
    try:
        wait_mounted(engine, name, "/state")
        r = engine.run("exec", name, "sh", "-ec",
                       "mkdir /state/nightly; echo 42 > /state/nightly/last_epoch;"
                       " echo 1 > /state/nightly/completed")
        (obj,) = list((store / "lz").rglob("nightly_completed.json"))
        assert json.loads(obj.read_bytes()) == {"last_epoch": 42}
        assert obj.relative_to(store / "lz").parts[:2] == (DOMAIN, DATASET)
        engine.run("stop", "-t", "30", name)  # SIGTERM
        assert engine.run("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "0"
        logs = engine.run("logs", name).stderr
        assert "unmounted /state" in logs, logs
    finally:
        engine.run("rm", "-f", "-t", "0", name, check=False)


def test_the_readme_example_as_written(engine, holder):
    (run,) = readme_commands("run")
    assert run[:2] == ["docker", "run"]
    holder.make_bucket("my-lz")
    name = "bookmarkfs-readme-" + uuid.uuid4().hex[:8]
    # As written; the test adds a name, the namespace of S3 and its endpoint.
    cmd = engine.cmd("run", "--name", name, "--network", f"container:{holder.container}",
                     "-e", f"AWS_ENDPOINT_URL={holder.endpoint}", *run[2:])
    env = dict(engine.env, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, stdin=subprocess.DEVNULL)
    try:
        wait_mounted(engine, name, "/state")
        engine.run("exec", name, "sh", "-ec",
                   "mkdir -p /state/nightly-sales; echo 156234987 > "
                   "/state/nightly-sales/last_epoch; echo 1 > /state/nightly-sales/completed")
        key, body = completed(holder.objects("my-lz"), "nightly-sales")
        assert body == {"last_epoch": 156234987}
        assert key.startswith(f"{DOMAIN}/{DATASET}/upload_date=")
        engine.run("stop", "-t", "30", name)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "unmounted /state" in err
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        engine.run("rm", "-f", "-t", "0", name, check=False)


@pytest.fixture
def shared_dir(tmp_path):
    """A directory that is a shared mount (/ is private here): what a volume
    needs to carry a FUSE mount out of a container."""
    d = tmp_path / "shared"
    d.mkdir()
    subprocess.run(["mount", "--bind", str(d), str(d)], check=True)
    try:
        subprocess.run(["mount", "--make-rshared", str(d)], check=True)
        yield d
    finally:
        subprocess.run(["umount", "-R", "-l", str(d)], check=False)


def test_mount_propagates_to_the_host_and_a_second_container(engine, shared_dir,
                                                             tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    (shared_dir / "state").mkdir()
    name = "bookmarkfs-side-" + uuid.uuid4().hex[:8]
    engine.run("run", "-d", "--name", name, "--network=none", "--device", "/dev/fuse",
               "--cap-add", "SYS_ADMIN", "-v", f"{shared_dir}:/shared:rshared",
               "-v", f"{store}:/store", IMAGE, "--store=dir:/store", f"--domain={DOMAIN}",
               f"--dataset={DATASET}", f"--user={USER}", "/shared/state")
    try:
        wait_mounted(engine, name, "/shared/state")
        deadline = time.monotonic() + 10
        while "fuse.bookmarkfs" not in fuse_mounts(shared_dir / "state"):
            assert time.monotonic() < deadline, "the mount did not reach the host"
            time.sleep(0.2)
        assert json.loads((shared_dir / "state" / ".status").read_text())["store"]["kind"] == "dir"
        # The Kubernetes example's ETL script in a second container, which
        # sees the mount through an rslave volume (HostToContainer).
        r = engine.run("run", "--rm", "--network=none", "-v",
                       f"{shared_dir}:/shared:rslave", "-e", "MOUNT_WAIT=10", BASE,
                       *etl_script(), check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "processing after 0" in r.stdout
        (obj,) = list((store / "lz").rglob("orders_completed.json"))
        assert json.loads(obj.read_bytes()) == {"last_id": 12345}
        assert list((store / "lz").rglob("orders_running.json"))
        # seen from the host, too
        assert (shared_dir / "state" / "orders" / "last_id").read_text() == "12345\n"
        engine.run("stop", "-t", "30", name)
        assert engine.run("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "0"
        assert "fuse.bookmarkfs" not in fuse_mounts(shared_dir / "state")
    finally:
        engine.run("rm", "-f", "-t", "0", name, check=False)


def test_the_etl_script_refuses_a_plain_directory(engine, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    r = engine.run("run", "--rm", "--network=none", "-v", f"{plain}:/shared:rslave",
                   "-e", "MOUNT_WAIT=1", BASE, *etl_script(), check=False)
    assert r.returncode == 1
    assert "/shared/state is not a bookmarkfs mount: refusing to run" in r.stderr
    assert list(plain.iterdir()) == []  # nothing written where it would be lost


def test_the_kubernetes_example_through_kube_play(engine, tmp_path):
    """The manifest's pod, as a Pod: its images are the test's and the IRSA
    credentials s3rver's keys; everything else is the manifest's. The pod
    has no network (--network none); s3rver runs in its namespace."""
    job = manifest()
    spec = job["spec"]["template"]["spec"]
    (sidecar,) = spec.pop("initContainers")
    assert sidecar.pop("restartPolicy") == "Always"  # a native sidecar: no such thing in 4.3
    sidecar.pop("startupProbe")  # the ETL script waits for the mount itself
    sidecar["image"] = IMAGE
    (etl,) = spec["containers"]
    etl["image"] = BASE
    spec["containers"] = [sidecar, etl]
    spec.pop("serviceAccountName")
    # A namespace of its own: any port is free there.
    endpoint = "http://127.0.0.1:9000"
    sidecar["env"] = [e for e in sidecar.get("env", []) if e["name"].startswith("AWS_STS")]
    sidecar["env"] += [{"name": "AWS_ENDPOINT_URL", "value": endpoint},
                       {"name": "AWS_ACCESS_KEY_ID", "value": ACCESS_KEY},
                       {"name": "AWS_SECRET_ACCESS_KEY", "value": SECRET_KEY}]
    name = "etl-orders-" + uuid.uuid4().hex[:6]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}
    path = tmp_path / "pod.yaml"

    # emptyDir volumes live in podman's storage: that directory must be a
    # shared mount for Bidirectional to carry the mount out of the sidecar.
    volumes = engine.cache / "storage" / "volumes"
    volumes.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "--bind", str(volumes), str(volumes)], check=True)
    try:
        subprocess.run(["mount", "--make-rshared", str(volumes)], check=True)
        # Created, not started; then only its infra container, whose network
        # namespace s3rver joins before the sidecar checks the buckets.
        path.write_text(yaml.safe_dump(pod))
        engine.run("kube", "play", "--start=false", "--network", "none", str(path))
        try:
            infra = engine.run("pod", "inspect", "-f", "{{.InfraContainerID}}", name)
            engine.run("start", infra.stdout.strip())
            pid = engine.run("inspect", "-f", "{{.State.Pid}}", infra.stdout.strip())
            with NetnsS3rver(f"/proc/{pid.stdout.strip()}/ns/net", port=9000) as s3:
                assert s3.endpoint == endpoint
                s3.make_bucket("my-lz")
                s3.make_bucket("my-dlz")
                engine.run("pod", "start", name)
                r = engine.run("wait", f"{name}-etl", timeout=180)
                logs = engine.run("logs", f"{name}-etl", check=False)
                side = engine.run("logs", f"{name}-bookmarkfs", check=False)
                assert r.stdout.strip() == "0", logs.stdout + logs.stderr + side.stderr
                assert "processing after 0" in logs.stdout
                key, body = completed(s3.objects("my-lz"), "orders")
                assert body == {"last_id": 12345}
                assert key.startswith(f"{DOMAIN}/{DATASET}/upload_date=")
                # The pod ends: the sidecar gets SIGTERM and unmounts.
                engine.run("pod", "stop", "-t", "30", name)
                side = engine.run("logs", f"{name}-bookmarkfs")
                assert "unmounted /shared/state" in side.stderr, side.stderr
                code = engine.run("inspect", "-f", "{{.State.ExitCode}}",
                                  f"{name}-bookmarkfs")
                assert code.stdout.strip() == "0"
        finally:
            engine.run("kube", "down", str(path), check=False, timeout=120)
    finally:
        subprocess.run(["umount", "-l", str(volumes)], check=False)
