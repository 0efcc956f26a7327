"""s3rver over TLS on 127.0.0.1, with a self-signed certificate made by the
openssl command line for the test.

    cert, key = make_cert(tmp, ip="127.0.0.1")
    with TlsS3rver(cert, key) as s3:
        s3.endpoint  # "https://127.0.0.1:PORT"
"""
import os
import socket
import ssl
import subprocess

from .s3rver import ACCESS_KEY, REGION, SECRET_KEY, S3rver


def make_cert(directory, ip=None, dns=None, name="server"):
    """A self-signed certificate (its own CA) for the IP address or DNS name
    given: returns (cert path, key path)."""
    cert = os.path.join(directory, name + ".crt")
    key = os.path.join(directory, name + ".key")
    san = f"IP:{ip}" if ip else f"DNS:{dns}"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", key, "-out", cert, "-days", "2",
                    "-subj", f"/CN={ip or dns}", "-addext", f"subjectAltName={san}",
                    "-addext", "basicConstraints=critical,CA:TRUE"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


class TlsS3rver(S3rver):
    def __init__(self, cert, key, start_timeout=30.0):
        super().__init__(start_timeout)
        self.cert = cert
        self.key = key

    def extra_args(self):
        return ["--cert", self.cert, "--key", self.key]

    def _answers(self) -> bool:
        ctx = ssl.create_default_context(cafile=self.cert)
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as raw:
                with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                    s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              b"Connection: close\r\n\r\n")
                    return s.recv(12).startswith(b"HTTP/1.")
        except (OSError, ssl.SSLError):
            return False

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def client(self):
        if self._client is None:
            import boto3
            from botocore.config import Config
            self._client = boto3.client(
                "s3", endpoint_url=self.endpoint, region_name=REGION, verify=self.cert,
                aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                config=Config(s3={"addressing_style": "path"},
                              retries={"max_attempts": 1}))
        return self._client
