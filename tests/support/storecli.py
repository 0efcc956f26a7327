"""Runs tests/store_cli (the store interface on S3) against an endpoint."""
import json
import subprocess

from .s3rver import client_env


class StoreCli:
    """Runs store_cli against an endpoint."""

    def __init__(self, path, endpoint, extra=()):
        self.path = path
        self.endpoint = endpoint
        self.extra = list(extra)

    def run(self, *args, input=b"", extra=(), env=None, timeout=120):
        cmd = [str(self.path), "--endpoint", self.endpoint, "--path-style",
               *self.extra, *extra, *args]
        r = subprocess.run(cmd, input=input, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=client_env(**(env or {})),
                           timeout=timeout)
        # Under an ASan+UBSan build, any report fails the test.
        for marker in (b"ERROR: AddressSanitizer", b"ERROR: LeakSanitizer",
                       b"runtime error:"):
            assert marker not in r.stderr, r.stderr.decode(errors="replace")
        return r

    def list(self, bucket, prefix="", start_after=None, **kw):
        args = ("list", bucket, prefix) + ((start_after,) if start_after is not None else ())
        r = self.run(*args, **kw)
        assert r.returncode == 0, r.stderr.decode()
        return [json.loads(line) for line in r.stdout.decode().splitlines()]

    def put(self, bucket, key, body, **kw):
        r = self.run("put", bucket, key, input=body, **kw)
        assert r.returncode == 0, r.stderr.decode()
        return json.loads(r.stdout)

    def get(self, bucket, key, **kw):
        r = self.run("get", bucket, key, **kw)
        assert r.returncode == 0, r.stderr.decode()
        return r.stdout
