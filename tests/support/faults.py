"""Helpers for the fault, bad-input, security and stress tests: an S3 store
reached through the fault proxy (or any endpoint) with chosen retry
settings, shell writes the way a user types them, and the bytes bookmarkfs
is expected to upload."""
import json
import shutil
import subprocess
import tempfile
import weakref

from .mount import DLZ, DOMAIN, DATASET, LZ, USER, S3Store

# errno names as the shell prints them (strerror)
EIO_TEXT = "Input/output error"
EACCES_TEXT = "Permission denied"
ETIMEDOUT_TEXT = "Connection timed out"


class EndpointStore(S3Store):
    """S3 (the s3rver behind `server`) reached at `endpoint` — typically a
    FaultProxy in front of that s3rver — with the given retry settings.
    objects()/get()/put() still talk to the s3rver directly."""

    def __init__(self, server, endpoint, retries=3, retry_time=1500, timeout=1000,
                 extra=(), env=None, buckets=(LZ, DLZ), clear=True):
        super().__init__(server, buckets, clear=clear)
        self.endpoint = endpoint
        self.retries = retries
        self.retry_time = retry_time
        self.timeout = timeout
        self.extra = list(extra)
        self._env = env
        # a journal of its own: never replays another test's keys
        self.cache_dir = tempfile.mkdtemp(prefix="bookmarkfs-cache-")
        weakref.finalize(self, shutil.rmtree, self.cache_dir, True)

    def args(self):
        return ["--store=s3", f"--endpoint={self.endpoint}", "--path-style",
                f"--lz-bucket={self.lz}", f"--dlz-bucket={self.dlz}", f"--domain={DOMAIN}",
                f"--dataset={DATASET}", f"--user={USER}", f"--retries={self.retries}",
                f"--retry-time={self.retry_time}", f"--timeout={self.timeout}",
                f"--connect-timeout={self.timeout}", f"--cache-dir={self.cache_dir}",
                *self.extra]

    def env(self):
        return self._env if self._env is not None else super().env()

    def bound_seconds(self):
        """The documented bound on one store operation: --retry-time plus one
        last attempt of at most --timeout."""
        return (self.retry_time + self.timeout) / 1000.0


def sh_write(path, text="1", timeout=60):
    """`echo TEXT > PATH` in a shell (coreutils' echo, which names the error
    as strerror does): returns the CompletedProcess."""
    return subprocess.run(["sh", "-c", 'env echo "$1" > "$0"', str(path), text],
                          capture_output=True, text=True, timeout=timeout)


def compact(obj) -> bytes:
    """What bookmarkfs uploads for a state: compact JSON, keys in order."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def last_upload(job_dir, kind="running"):
    return json.loads((job_dir / ".status").read_text())["last_upload"][kind]


def state_of(job_dir):
    return json.loads((job_dir / ".state.json").read_text())


def upload_key(job, kind="running", epoch_re=r"\d+"):
    """A regular expression for the object key of a job's upload."""
    return rf"{DOMAIN}/{DATASET}/upload_date={epoch_re}/{USER}/others/{job}_{kind}\.json"


def mount_once(store, mnt, extra=(), env=None, timeout=60):
    """Runs bookmarkfs in the foreground and expects it to refuse to mount:
    returns the CompletedProcess (stderr is what the user sees)."""
    from .mount import binary
    import os
    mnt.mkdir(parents=True, exist_ok=True)
    try:
        return subprocess.run([str(binary()), *store.args(), *extra, "-f", str(mnt)],
                              capture_output=True, text=True, timeout=timeout,
                              env=env or store.env(), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        # it mounted (or hung): subprocess.run killed our child; clean up
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)
        raise AssertionError("bookmarkfs did not refuse to mount")
