"""Loopback stand-ins for the AWS credential endpoints.

Each stand-in is a small threaded http.server on 127.0.0.1 (port 0), records
every request it receives, and issues fresh credentials on every successful
fetch, expiring `expires_in` seconds from the moment they are issued, so
tests can tell a cached answer from a refetched one. Use them as context
managers (or call start()/stop()); stop() shuts the server down.

- ContainerStandin: the ECS/EKS container credentials endpoint (GET PATH,
  checks the Authorization header, answers JSON).
- ImdsStandin: EC2 instance metadata, IMDSv2 only (PUT /latest/api/token
  first; GETs without a valid token get 401).
- StsStandin: STS AssumeRoleWithWebIdentity (form POST or GET query; checks
  RoleArn and WebIdentityToken; answers XML).
- AssumeRoleStandin: STS AssumeRole (form POST, SigV4-signed: the signature
  is recomputed with botocore's signer from the secret of the signing key,
  which must be one the test gave or one this stand-in issued; checks the
  role, its external id and the duration; answers XML).
"""

import datetime
import http.server
import json
import re
import secrets
import threading
import urllib.parse
from xml.sax.saxutils import escape


def _iso(ts, style):
    dt = datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc)
    if style == "frac":
        return dt.strftime("%Y-%m-%dT%H:%M:%S.123Z")
    if style == "offset":
        # The same instant written in another zone.
        other = dt.astimezone(datetime.timezone(datetime.timedelta(hours=2)))
        return other.strftime("%Y-%m-%dT%H:%M:%S+02:00")
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


class Issuer:
    """Mints distinct credentials; remembers what it issued."""

    def __init__(self, prefix, expires_in=3600, time_style="Z"):
        self.prefix = prefix
        self.expires_in = expires_in
        self.time_style = time_style
        self.issued = []
        self._lock = threading.Lock()

    def issue(self):
        with self._lock:
            n = len(self.issued) + 1
            exp = int(datetime.datetime.now(datetime.timezone.utc).timestamp()) \
                + self.expires_in
            cred = {
                "AccessKeyId": "ASIA%s%04d" % (self.prefix.upper(), n),
                "SecretAccessKey": "%s-secret-%d-%s" % (self.prefix, n, secrets.token_hex(12)),
                "Token": "%s-token-%d-%s" % (self.prefix, n, secrets.token_hex(24)),
                "Expiration": _iso(exp, self.time_style),
                "expiration_epoch": exp,
            }
            self.issued.append(cred)
            return cred


class _Handler(http.server.BaseHTTPRequestHandler):
    standin = None  # set per server subclass

    def log_message(self, fmt, *args):  # keep test output quiet
        pass

    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        req = {
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body.decode("utf-8", "replace"),
        }
        with self.standin.lock:
            self.standin.requests.append(req)
        status, ctype, payload = self.standin.override or self.standin.answer(req)
        data = payload.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_POST = _handle


class _Standin:
    def __init__(self, prefix, expires_in=3600, time_style="Z"):
        self.issuer = Issuer(prefix, expires_in, time_style)
        self.requests = []
        self.lock = threading.Lock()
        # When set, credential fetches answer HTTP 500 (refresh failures).
        self.failing = False
        # Fail every credential fetch after this many successful ones.
        self.fail_after = None
        # When set, (status, content type, body) answers every request.
        self.override = None
        self._server = None
        self._thread = None

    @property
    def issued(self):
        return self.issuer.issued

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    @property
    def port(self):
        return self._server.server_address[1]

    def _should_fail(self):
        return self.failing or (self.fail_after is not None
                                and len(self.issuer.issued) >= self.fail_after)

    def start(self):
        handler = type("Handler", (_Handler,), {"standin": self})
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def answer(self, req):
        raise NotImplementedError


def _json_creds(cred, imds=False):
    doc = {k: cred[k] for k in ("AccessKeyId", "SecretAccessKey", "Token", "Expiration")}
    if imds:
        doc.update({"Code": "Success", "Type": "AWS-HMAC",
                    "LastUpdated": _iso(cred["expiration_epoch"] - 3600, "Z")})
    return json.dumps(doc)


class ContainerStandin(_Standin):
    def __init__(self, auth_token=None, path="/v2/credentials/bookmarkfs-task",
                 **kw):
        super().__init__("ctr", **kw)
        self.auth_token = auth_token
        self.path = path

    def answer(self, req):
        if req["method"] != "GET" or req["path"] != self.path:
            return 404, "application/json", '{"code":"NotFound"}'
        if self.auth_token is not None and \
                req["headers"].get("authorization") != self.auth_token:
            return 401, "application/json", \
                '{"code":"AccessDenied","message":"bad authorization"}'
        if self._should_fail():
            return 500, "application/json", '{"code":"InternalError"}'
        return 200, "application/json", _json_creds(self.issuer.issue())


class ImdsStandin(_Standin):
    ROLE_PATH = "/latest/meta-data/iam/security-credentials/"

    def __init__(self, role="bookmarkfs-instance-role", **kw):
        super().__init__("imds", **kw)
        self.role = role
        self.tokens = set()

    def answer(self, req):
        h = req["headers"]
        if req["path"] == "/latest/api/token":
            if req["method"] != "PUT":
                return 405, "text/plain", "method not allowed"
            ttl = h.get("x-aws-ec2-metadata-token-ttl-seconds", "")
            if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                return 400, "text/plain", "missing or bad ttl"
            token = "imds-session-" + secrets.token_hex(16)
            with self.lock:
                self.tokens.add(token)
            return 200, "text/plain", token
        if req["method"] != "GET":
            return 405, "text/plain", "method not allowed"
        with self.lock:
            ok = h.get("x-aws-ec2-metadata-token") in self.tokens
        if not ok:
            return 401, "text/plain", "unauthorized"
        if req["path"] == self.ROLE_PATH:
            if self.role is None:
                return 404, "text/plain", "not found"
            return 200, "text/plain", self.role
        if self.role is not None and req["path"] == self.ROLE_PATH + self.role:
            if self._should_fail():
                return 500, "text/plain", "internal error"
            return 200, "text/plain", _json_creds(self.issuer.issue(), imds=True)
        return 404, "text/plain", "not found"


class StsStandin(_Standin):
    NS = "https://sts.amazonaws.com/doc/2011-06-15/"

    def __init__(self, role_arn, web_identity_token, **kw):
        super().__init__("sts", **kw)
        self.role_arn = role_arn
        self.web_identity_token = web_identity_token

    @staticmethod
    def params(req):
        """The request's parameters (form body or query), one value each."""
        query = urllib.parse.urlsplit(req["path"]).query
        raw = req["body"] if req["method"] == "POST" else query
        return {k: v[0] for k, v in urllib.parse.parse_qs(raw).items()}

    def _error(self, status, code, message):
        doc = ('<ErrorResponse xmlns="%s"><Error><Type>Sender</Type>'
               "<Code>%s</Code><Message>%s</Message></Error>"
               "<RequestId>00000000-0000-0000-0000-000000000000</RequestId>"
               "</ErrorResponse>") % (self.NS, code, escape(message))
        return status, "text/xml", doc

    def answer(self, req):
        p = self.params(req)
        if p.get("Action") != "AssumeRoleWithWebIdentity" or \
                p.get("Version") != "2011-06-15":
            return self._error(400, "InvalidAction", "unknown action")
        if p.get("RoleArn") != self.role_arn:
            return self._error(403, "AccessDenied",
                               "Not authorized to perform sts:AssumeRoleWithWebIdentity")
        if p.get("WebIdentityToken") != self.web_identity_token:
            return self._error(400, "InvalidIdentityToken",
                               "The web identity token is not valid")
        if not p.get("RoleSessionName"):
            return self._error(400, "ValidationError", "RoleSessionName missing")
        if self._should_fail():
            return self._error(500, "ServiceUnavailable", "try again")
        c = self.issuer.issue()
        doc = ('<AssumeRoleWithWebIdentityResponse xmlns="%s">'
               "<AssumeRoleWithWebIdentityResult>"
               "<SubjectFromWebIdentityToken>system:serviceaccount:etl:job"
               "</SubjectFromWebIdentityToken>"
               "<AssumedRoleUser><Arn>%s/%s</Arn><AssumedRoleId>AROA:%s</AssumedRoleId>"
               "</AssumedRoleUser>"
               "<Credentials>"
               "<SessionToken>%s</SessionToken>"
               "<SecretAccessKey>%s</SecretAccessKey>"
               "<Expiration>%s</Expiration>"
               "<AccessKeyId>%s</AccessKeyId>"
               "</Credentials>"
               "<Provider>www.example.com</Provider>"
               "</AssumeRoleWithWebIdentityResult>"
               "<ResponseMetadata><RequestId>1</RequestId></ResponseMetadata>"
               "</AssumeRoleWithWebIdentityResponse>") % (
                   self.NS, escape(self.role_arn), escape(p["RoleSessionName"]),
                   escape(p["RoleSessionName"]), escape(c["Token"]),
                   escape(c["SecretAccessKey"]), c["Expiration"], c["AccessKeyId"])
        return 200, "text/xml", doc


class AssumeRoleStandin(_Standin):
    NS = "https://sts.amazonaws.com/doc/2011-06-15/"
    AUTH = re.compile(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/sts/"
                      r"aws4_request, ?SignedHeaders=([a-z0-9;-]+), ?"
                      r"Signature=([0-9a-f]{64})$")

    def __init__(self, roles, signers, region="us-east-1", **kw):
        """roles: {role ARN: required external id, or None};
        signers: {access key: (secret, session token or None)}."""
        super().__init__("role", **kw)
        self.roles = dict(roles)
        self.signers = dict(signers)
        self.region = region
        # Other stand-ins whose issued credentials may sign (credential_source).
        self.trust = []
        self.calls = []  # {"params": ..., "signer": access key} per good call

    _error = StsStandin._error

    def _signer(self, req):
        """The access key that signed req, or an error answer."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials
        h = req["headers"]
        m = self.AUTH.match(h.get("authorization", ""))
        if not m:
            return None, self._error(403, "IncompleteSignature", "no SigV4 signature")
        ak, day, region, signed, sig = m.groups()
        with self.lock:
            known = dict(self.signers)
        for other in self.trust:
            known.update({c["AccessKeyId"]: (c["SecretAccessKey"], c["Token"])
                          for c in other.issued})
        with self.lock:
            known.update({c["AccessKeyId"]: (c["SecretAccessKey"], c["Token"])
                          for c in self.issued})
        if ak not in known:
            return None, self._error(403, "InvalidClientTokenId",
                                     "The security token included in the request is invalid")
        secret, token = known[ak]
        if h.get("x-amz-security-token") != token:
            return None, self._error(403, "InvalidClientTokenId",
                                     "The session token does not match the key")
        if region != self.region or not h.get("x-amz-date", "").startswith(day):
            return None, self._error(403, "SignatureDoesNotMatch", "wrong scope")
        names = signed.split(";")
        if "host" not in names or any(n not in h for n in names):
            return None, self._error(403, "SignatureDoesNotMatch", "bad SignedHeaders")
        request = AWSRequest(method=req["method"],
                             url="http://127.0.0.1:%d%s" % (self.port, req["path"]),
                             data=req["body"].encode(),
                             headers={n: h[n] for n in names})
        request.context["timestamp"] = h["x-amz-date"]
        auth = SigV4Auth(Credentials(ak, secret, token), "sts", region)
        cr = auth.canonical_request(request)
        expected = auth.signature(auth.string_to_sign(request, cr), request)
        if expected != sig:
            return None, self._error(403, "SignatureDoesNotMatch",
                                     "The request signature we calculated does not match")
        return ak, None

    def answer(self, req):
        p = StsStandin.params(req)
        if req["method"] != "POST" or p.get("Action") != "AssumeRole" or \
                p.get("Version") != "2011-06-15":
            return self._error(400, "InvalidAction", "unknown action")
        signer, err = self._signer(req)
        if err:
            return err
        arn = p.get("RoleArn")
        if arn not in self.roles or (self.roles[arn] is not None
                                     and p.get("ExternalId") != self.roles[arn]):
            return self._error(403, "AccessDenied",
                               "User is not authorized to perform: sts:AssumeRole")
        if not p.get("RoleSessionName"):
            return self._error(400, "ValidationError", "RoleSessionName missing")
        if "DurationSeconds" in p and not 900 <= int(p["DurationSeconds"]) <= 43200:
            return self._error(400, "ValidationError", "bad DurationSeconds")
        if self._should_fail():
            return self._error(500, "ServiceUnavailable", "try again")
        c = self.issuer.issue()
        with self.lock:
            self.calls.append({"params": p, "signer": signer})
        doc = ('<AssumeRoleResponse xmlns="%s"><AssumeRoleResult>'
               "<AssumedRoleUser><Arn>%s/%s</Arn><AssumedRoleId>AROA:%s</AssumedRoleId>"
               "</AssumedRoleUser><Credentials>"
               "<AccessKeyId>%s</AccessKeyId><SecretAccessKey>%s</SecretAccessKey>"
               "<SessionToken>%s</SessionToken><Expiration>%s</Expiration>"
               "</Credentials></AssumeRoleResult>"
               "<ResponseMetadata><RequestId>2</RequestId></ResponseMetadata>"
               "</AssumeRoleResponse>") % (
                   self.NS, escape(arn), escape(p["RoleSessionName"]),
                   escape(p["RoleSessionName"]), c["AccessKeyId"],
                   escape(c["SecretAccessKey"]), escape(c["Token"]), c["Expiration"])
        return 200, "text/xml", doc
