"""Runs Ceph's RADOS Gateway (scripts/rgw: one monitor, one OSD on memstore,
two gateways) on 127.0.0.1 for the tests, beside s3rver and with the same
interface:

    with Rgw() as s3:
        s3.create_bucket("b")
        s3.client.put_object(Bucket="b", Key="k", Body=b"{}")
        s3.endpoint      # "http://127.0.0.1:PORT": checks SigV4, ignores tokens
        s3.sts_endpoint  # the gateway that also serves STS and checks tokens
        s3.tls_endpoint  # "https://127.0.0.1:PORT", certificate s3.ca

RGW is a verifying server: every request's signature, its payload hash and
its date are checked. Its user has s3rver's access key and secret, so
client_env() serves both servers. Only the daemons scripts/rgw started are
stopped, by their PIDs.
"""
import json
import os
import shutil
import subprocess
import tempfile
import uuid

from .paths import REPO
from .s3rver import ACCESS_KEY, REGION, SECRET_KEY
from .tls import make_cert


class Rgw:
    kind = "rgw"

    def __init__(self, start_timeout=60):
        self.start_timeout = start_timeout
        self.tmp = None
        self.port = None
        self.sts_port = None
        self.tls_port = None
        self.ca = None
        self._client = None

    def _script(self, *args, timeout=None):
        env = dict(os.environ, RGW_ACCESS_KEY=ACCESS_KEY, RGW_SECRET_KEY=SECRET_KEY,
                   RGW_START_TIMEOUT=str(self.start_timeout))
        if self.ca:
            env.update(RGW_TLS_CERT=self.ca, RGW_TLS_KEY=self._key)
        return subprocess.run([str(REPO / "scripts" / "rgw"), *args, self.tmp],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              env=env, check=False,
                              timeout=timeout or self.start_timeout + 30)

    def start(self):
        self.tmp = tempfile.mkdtemp(prefix="bookmarkfs-rgw-")
        try:
            # a self-signed certificate for 127.0.0.1: its own CA
            self.ca, self._key = make_cert(self.tmp, ip="127.0.0.1", name="tls")
            r = self._script("start")
            if r.returncode != 0:
                raise RuntimeError(f"scripts/rgw start failed ({r.returncode}):\n"
                                   f"{r.stderr}\n{self.log()}")
            values = dict(line.split("=", 1) for line in r.stdout.splitlines()
                          if line.startswith(("port=", "sts_port=", "tls_port=")))
            self.port = int(values["port"])
            self.sts_port = int(values["sts_port"])
            self.tls_port = int(values["tls_port"])
        except BaseException:
            self.close()
            raise
        return self

    def log(self) -> str:
        """The end of the gateway's log."""
        try:
            with open(os.path.join(self.tmp, "log", "client.rgw.log"), "rb") as f:
                return f.read().decode("utf-8", "replace")[-4000:]
        except (OSError, TypeError):
            return ""

    def close(self):
        if self.tmp:
            self._script("stop", timeout=30)
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
    def tls_endpoint(self) -> str:
        return f"https://127.0.0.1:{self.tls_port}"

    @property
    def sts_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.sts_port}"

    def _boto3(self, service, endpoint, **kw):
        import boto3
        from botocore.config import Config
        return boto3.client(
            service, endpoint_url=endpoint, region_name=REGION,
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
            **kw)

    @property
    def client(self):
        if self._client is None:
            self._client = self._boto3("s3", self.endpoint)
        return self._client

    def create_bucket(self, name: str):
        self.client.create_bucket(Bucket=name)
        return name

    def unique_bucket(self, stem: str) -> str:
        """A new bucket with a valid AWS name (3 to 63 characters)."""
        return self.create_bucket(f"{stem}-{uuid.uuid4().hex[:12]}")

    def session_credentials(self, seconds=3600) -> dict:
        """Temporary credentials from the STS gateway (GetSessionToken), the
        user first allowing itself to ask for them: {AccessKeyId,
        SecretAccessKey, SessionToken, Expiration}."""
        policy = {"Version": "2012-10-17",
                  "Statement": [{"Effect": "Allow",
                                 "Action": ["sts:GetSessionToken", "s3:*"],
                                 "Resource": "*"}]}
        self._boto3("iam", self.sts_endpoint).put_user_policy(
            UserName="test", PolicyName="session", PolicyDocument=json.dumps(policy))
        return self._boto3("sts", self.sts_endpoint).get_session_token(
            DurationSeconds=seconds)["Credentials"]
