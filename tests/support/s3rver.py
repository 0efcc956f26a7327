"""Runs s3rver (installed by scripts/install-s3rver) on 127.0.0.1 for a test.

    with S3rver() as s3:
        s3.create_bucket("b")
        s3.client.put_object(Bucket="b", Key="k", Body=b"{}")
        s3.endpoint  # "http://127.0.0.1:PORT"

Only the process this object started is ever stopped, by its PID.
"""
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time

from .paths import REPO

ACCESS_KEY = "S3RVER"  # s3rver's built-in credentials
SECRET_KEY = "S3RVER"
REGION = "us-east-1"


def s3rver_binary() -> str:
    """Path of the s3rver binary, installing it when missing."""
    out = subprocess.run([str(REPO / "scripts" / "install-s3rver")], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    path = out.strip().splitlines()[-1]
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"install-s3rver did not give an executable: {path}")
    return path


def client_env(**extra) -> dict:
    """Environment for the C tools and boto3: s3rver's credentials, no IMDS."""
    env = dict(os.environ)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
                 "AWS_ENDPOINT_URL_S3", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        env.pop(name, None)
    env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
               AWS_REGION=REGION, AWS_EC2_METADATA_DISABLED="true")
    env.update(extra)
    return env


class S3rver:
    def __init__(self, start_timeout=30.0):
        self.start_timeout = start_timeout
        self.listen_port = 0  # any free port
        self.proc = None
        self.tmp = None
        self.port = None
        self._client = None

    # -- lifecycle ---------------------------------------------------------
    def extra_args(self):
        """More s3rver arguments (subclasses: TLS)."""
        return []

    def command_prefix(self):
        """What runs s3rver (subclasses: nsenter into another namespace)."""
        return []

    def start(self):
        binary = s3rver_binary()
        self.tmp = tempfile.mkdtemp(prefix="bookmarkfs-s3rver-")
        data = os.path.join(self.tmp, "data")
        os.mkdir(data)
        self.log_path = os.path.join(self.tmp, "s3rver.log")
        env = dict(os.environ)
        # On this Node, without the legacy provider paginated listings
        # answer 500 (s3rver hashes continuation tokens with MD4).
        env["NODE_OPTIONS"] = (env.get("NODE_OPTIONS", "") +
                               " --openssl-legacy-provider").strip()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [*self.command_prefix(), binary, "-d", data, "-a", "127.0.0.1", "-p", str(self.listen_port),
                 "--no-vhost-buckets", *self.extra_args()],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env)
        try:
            self._wait_ready()
        except BaseException:
            self.close()
            raise
        return self

    def _wait_ready(self):
        deadline = time.monotonic() + self.start_timeout
        pattern = re.compile(rb"listening on 127\.0\.0\.1:(\d+)")
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("s3rver exited at start:\n" + self.log())
            with open(self.log_path, "rb") as f:
                m = pattern.search(f.read())
            if m:
                self.port = int(m.group(1))
                if self._answers():
                    return
            time.sleep(0.05)
        raise RuntimeError("s3rver did not start in time:\n" + self.log())

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                return s.recv(12).startswith(b"HTTP/1.")
        except OSError:
            return False

    def log(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")[-4000:]
        except OSError:
            return ""

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            # Only the process we started, by its PID.
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    # -- access ------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def client(self):
        if self._client is None:
            import boto3
            from botocore.config import Config
            self._client = boto3.client(
                "s3", endpoint_url=self.endpoint, region_name=REGION,
                aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                config=Config(s3={"addressing_style": "path"},
                              retries={"max_attempts": 1}))
        return self._client

    def create_bucket(self, name: str):
        self.client.create_bucket(Bucket=name)
        return name
