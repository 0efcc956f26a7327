"""Mounts bookmarkfs for a test, on either store, and reads what it stored
with a client that is not ours (the file system for dir:, boto3 for s3).

    store = DirStore(tmp) or S3Store(s3rver)
    with Mount(store, tmp / "mnt", extra=["--resume-from=running"]) as m:
        (m.path / "job").mkdir()
"""
import os
import signal
import subprocess
import time
from pathlib import Path

from .paths import build_dir
from .s3rver import client_env

DOMAIN = "test_state_domain"
DATASET = "test_state_dataset"
USER = "test_user"
LZ = "lz-bucket"
DLZ = "dlz-bucket"
# Where job leases live by default (README, "Leases"): bookmarkfs' own
# objects, which objects() leaves out unless asked.
LEASES = f"{DOMAIN}/{DATASET}/_bookmarkfs_leases/"


def binary() -> Path:
    path = Path(os.environ.get("BOOKMARKFS_BIN", str(build_dir() / "fs" / "bookmarkfs")))
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"{path} is missing: build the project first")
    return path


class DirStore:
    kind = "dir"

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def args(self):
        return [f"--store=dir:{self.root}", f"--lz-bucket={LZ}", f"--dlz-bucket={DLZ}",
                f"--domain={DOMAIN}", f"--dataset={DATASET}", f"--user={USER}"]

    def env(self):
        return client_env()

    def objects(self, bucket=LZ, leases=False):
        """{key: bytes} of every object in bucket (lease objects only when
        asked)."""
        base = self.root / bucket
        out = {}
        if base.is_dir():
            for p in base.rglob("*"):
                key = str(p.relative_to(base))
                if p.is_file() and (leases or not key.startswith(LEASES)):
                    out[key] = p.read_bytes()
        return out

    def get(self, bucket, key) -> bytes:
        return (self.root / bucket / key).read_bytes()

    def location(self, bucket, key) -> str:
        """Where the log and .status say an object is: its file."""
        return f"{self.root}/{bucket}/{key}"

    def put(self, bucket, key, body: bytes, mtime=None):
        p = self.root / bucket / key
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(body)
        if mtime is not None:
            os.utime(p, (mtime, mtime))

    def break_bucket(self, bucket=LZ):
        """Make puts to bucket fail; returns a function that repairs it."""
        base = self.root / bucket
        moved = self.root / (".broken-" + bucket)
        base.rename(moved)
        base.write_bytes(b"not a directory")

        def repair():
            base.unlink()
            moved.rename(base)
        return repair


class S3Store:
    kind = "s3"

    def __init__(self, server, buckets=(LZ, DLZ), clear=True):
        """buckets: (lz, dlz), e.g. a fresh pair from the rgw_buckets fixture;
        clear: delete what they hold first."""
        self.server = server
        self.lz, self.dlz = buckets
        for b in (self.lz, self.dlz):
            try:
                server.create_bucket(b)
            except Exception:  # already there (module-scoped server)
                pass
        if clear:
            self.clear()

    def clear(self):
        for b in (self.lz, self.dlz):
            for key in list(self.objects(b, leases=True)):
                self.server.client.delete_object(Bucket=b, Key=key)

    def args(self):
        return ["--store=s3", f"--endpoint={self.server.endpoint}", "--path-style",
                f"--lz-bucket={self.lz}", f"--dlz-bucket={self.dlz}", f"--domain={DOMAIN}",
                f"--dataset={DATASET}", f"--user={USER}", "--retries=2",
                "--retry-time=3000", "--timeout=5000"]

    def env(self):
        return client_env()

    def objects(self, bucket=None, leases=False):
        """{key: bytes} of every object in bucket (lease objects only when
        asked)."""
        bucket = bucket or self.lz
        c = self.server.client
        out = {}
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for o in page.get("Contents", []):
                if not leases and o["Key"].startswith(LEASES):
                    continue
                out[o["Key"]] = c.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
        return out

    def get(self, bucket, key) -> bytes:
        return self.server.client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def location(self, bucket, key) -> str:
        """Where the log and .status say an object is."""
        return f"s3://{bucket}/{key}"

    def put(self, bucket, key, body: bytes, mtime=None):
        self.server.client.put_object(Bucket=bucket, Key=key, Body=body)
        if mtime is not None:
            time.sleep(0.01)  # LastModified is the server's clock

    def break_bucket(self, bucket=LZ):
        """Puts to a bucket that does not exist fail with NoSuchBucket."""
        c = self.server.client
        saved = {k: v for k, v in self.objects(bucket, leases=True).items()}
        for k in saved:
            c.delete_object(Bucket=bucket, Key=k)
        c.delete_bucket(Bucket=bucket)

        def repair():
            c.create_bucket(Bucket=bucket)
            for k, v in saved.items():
                c.put_object(Bucket=bucket, Key=k, Body=v)
        return repair


class Mount:
    def __init__(self, store, path: Path, extra=(), env=None):
        self.store = store
        self.path = Path(path)
        self.extra = list(extra)
        self.env = env or store.env()
        self.proc = None
        self.log_path = None

    def start(self):
        self.path.mkdir(parents=True, exist_ok=True)
        self.log_path = self.path.parent / (self.path.name + ".log")
        cmd = [str(binary()), *self.store.args(), *self.extra, "-f", str(self.path)]
        self.log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log_file,
                                     stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + 20
        while not os.path.ismount(self.path):
            if self.proc.poll() is not None:
                raise RuntimeError(f"bookmarkfs exited ({self.proc.returncode}):\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("bookmarkfs did not mount in time:\n" + self.log())
            time.sleep(0.02)
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self):
        if self.proc is None:
            return
        if os.path.ismount(self.path):
            subprocess.run(["fusermount3", "-u", str(self.path)], check=False)
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGTERM)  # ours, by PID
            rc = self.proc.wait(timeout=10)
        self.proc = None
        self.log_file.close()
        sanitizer = [line for line in self.log().splitlines()
                     if "Sanitizer" in line or "runtime error:" in line]
        assert not sanitizer, "sanitizer report:\n" + self.log()
        assert rc == 0, f"bookmarkfs exited with {rc}:\n{self.log()}"

    def kill(self):
        """kill -9 the daemon, then clean the dead mount."""
        self.proc.kill()
        self.proc.wait()
        self.proc = None
        self.log_file.close()
        subprocess.run(["fusermount3", "-u", "-z", str(self.path)], check=False)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
