"""A threaded HTTP proxy on 127.0.0.1 that sits in front of an S3 server
and injects faults, per request:

    pass       forward to the upstream server and relay its answer
    500        answer 500 InternalError (S3 error document)
    503        answer 503 SlowDown (S3 error document)
    403 / 404  answer AccessDenied / NoSuchKey (S3 error documents)
    expired    answer 400 ExpiredToken
    badsignature  answer 403 SignatureDoesNotMatch
    requesttimeout  answer 400 RequestTimeout
    reset      close the connection with a TCP reset, no answer
    slow       hold the request `slow_seconds` (beyond the client's
               time-out), then close without answering
    truncate   forward, then send the answer's headers and half its body
               and close
    malformed  answer 200 with a body that is not well-formed XML
    skew       forward with the X-Amz-Date header moved `skew_seconds` ahead,
               as a client whose clock is off would send it (the upstream
               server judges the time)
    tamper     forward the request altered after it was signed: with a body,
               one byte of the body changed (same length); without one, the
               X-Amz-Date header moved one second (a verifying server
               refuses either: XAmzContentSHA256Mismatch or
               SignatureDoesNotMatch)
    pass500    forward (the upstream server acts on it), then answer 500
               instead of its answer: a write that took place but whose
               answer was lost
    hold       wait until `proxy.release()` (`proxy.held` is set meanwhile),
               then forward as pass
    sametoken  answer a listing that is truncated and hands out the
               continuation token it was asked with (or "again"), with one key
    freshtoken answer a truncated listing with a new token each time; with
               `fresh_keys` the same keys on every page, else none
    rewrite    forward, then apply `proxy.rewrite(method, path, body)` to the
               answer's body (a stand-in for a store's own answers)

`proxy.on_list` (an action or None) overrides the script and the
probabilities for ListObjectsV2 requests that carry a prefix (listings of
a dataset, not the bucket check at mount).

The next actions come from the scripts of matching rules
(`proxy.match(lambda method, path: ..., [...])`, first), an explicit script
(`proxy.script([...])`) and, when those are empty, are drawn from
`probabilities` (seeded) or are "pass".
Every request is recorded as (method, path, action) in `proxy.log`; the
error documents the proxy answers carry the request ids FAULTPROXY-1,
FAULTPROXY-2, ... in `proxy.request_ids`, in the order they were sent.
"""
import calendar
import http.client
import random
import socket
import struct
import threading
import time
from xml.sax.saxutils import escape as xml_escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

ACTIONS = ("pass", "500", "503", "403", "404", "expired", "requesttimeout", "badsignature",
           "reset",
           "slow", "truncate", "malformed", "skew", "tamper", "hold", "pass500",
           "sametoken", "freshtoken", "rewrite")

_ERRORS = {
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
    "503": (503, "SlowDown", "Please reduce your request rate."),
    "403": (403, "AccessDenied", "Access Denied"),
    "404": (404, "NoSuchKey", "The specified key does not exist."),
    "badsignature": (403, "SignatureDoesNotMatch", "The request signature we calculated "
                     "does not match the signature you provided."),
    "expired": (400, "ExpiredToken", "The provided token has expired."),
    "requesttimeout": (400, "RequestTimeout", "Your socket connection to the server was "
                       "not read from or written to within the timeout period."),
}

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer",
               "upgrade", "proxy-authorization", "proxy-authenticate", "content-length"}


def _error_xml(code: str, message: str, request_id: str) -> bytes:
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message>"
            f"<RequestId>{request_id}</RequestId></Error>").encode()


class FaultProxy:
    def __init__(self, upstream: str, probabilities=None, seed=0, slow_seconds=3.0):
        u = urlsplit(upstream)
        if u.hostname != "127.0.0.1":
            raise ValueError("the fault proxy only forwards to 127.0.0.1")
        self.upstream_port = u.port
        self.probabilities = dict(probabilities or {})
        for a in self.probabilities:
            if a not in ACTIONS:
                raise ValueError(f"unknown action {a}")
        self.rng = random.Random(seed)
        self.slow_seconds = slow_seconds
        self.skew_seconds = 2 * 3600
        self.log = []  # (method, path, action)
        self.request_ids = []  # of the error documents answered, in order
        self._script = []
        self._rules = []  # (predicate, [actions])
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.on_list = None
        self.fresh_keys = ()
        self.rewrite = None
        self._tokens = 0
        self.held = threading.Event()  # a "hold" request is waiting
        self._released = threading.Event()
        self._server = None
        self._thread = None

    # -- control -----------------------------------------------------------
    def script(self, actions):
        for a in actions:
            if a not in ACTIONS:
                raise ValueError(f"unknown action {a}")
        with self._lock:
            self._script = list(actions)

    def match(self, predicate, actions):
        """The next requests for which predicate(method, path) holds take
        these actions, one each, before any other script."""
        for a in actions:
            if a not in ACTIONS:
                raise ValueError(f"unknown action {a}")
        with self._lock:
            self._rules.append((predicate, list(actions)))

    def release(self):
        """Lets every held request (and any later "hold") through."""
        self._released.set()

    def reset_log(self):
        with self._lock:
            self.log = []

    def actions(self):
        with self._lock:
            return [a for _, _, a in self.log]

    def _next_action(self, method, path):
        with self._lock:
            q = parse_qs(urlsplit(path).query)
            rule = next((r for r in self._rules if r[1] and r[0](method, path)), None)
            if rule:
                action = rule[1].pop(0)
            elif self.on_list and method == "GET" and "list-type" in q and "prefix" in q:
                action = self.on_list
            elif self._script:
                action = self._script.pop(0)
            else:
                action = "pass"
                r = self.rng.random()
                acc = 0.0
                for a, p in self.probabilities.items():
                    acc += p
                    if r < acc:
                        action = a
                        break
            self.log.append((method, path, action))
            return action

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):  # quiet
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                action = proxy._next_action(self.command, self.path)
                fn = getattr(self, "_do_" + action, None) if action[0].isalpha() else None
                (fn or self._do_error)(action, body)

            do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _handle

            def _send(self, status, headers, body, send_len=None):
                self.send_response_only(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body if send_len is None else body[:send_len])
                self.wfile.flush()

            def _do_error(self, action, body):
                status, code, msg = _ERRORS[action]
                with proxy._lock:
                    rid = f"FAULTPROXY-{len(proxy.request_ids) + 1}"
                    proxy.request_ids.append(rid)
                xml = _error_xml(code, msg, rid)
                self._send(status, [("Content-Type", "application/xml")], xml)

            def _upstream(self, body):
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port,
                                                  timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items()
                               if k.lower() not in ("connection", "expect")}
                    conn.request(self.command, self.path, body=body if body else None,
                                 headers=headers)
                    r = conn.getresponse()
                    data = r.read()
                    hdrs = [(k, v) for k, v in r.getheaders()
                            if k.lower() not in _HOP_BY_HOP]
                    return r.status, hdrs, data
                finally:
                    conn.close()

            def _do_pass(self, action, body):
                status, hdrs, data = self._upstream(body)
                self._send(status, hdrs, data)

            def _do_pass500(self, action, body):
                self._upstream(body)
                self._do_error("500", body)

            def _do_truncate(self, action, body):
                status, hdrs, data = self._upstream(body)
                if len(data) < 2:
                    data = data + b" " * (2 - len(data))
                self._send(status, hdrs, data, send_len=len(data) // 2)
                self.close_connection = True

            def _do_malformed(self, action, body):
                xml = (b'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult>'
                       b"<Contents><Key>a</Key><Size>1</Ke></Contents")
                self._send(200, [("Content-Type", "application/xml")], xml)

            def _listing(self, keys, token):
                q = parse_qs(urlsplit(self.path).query)
                prefix = q.get("prefix", [""])[0]
                contents = "".join(
                    f"<Contents><Key>{xml_escape(k)}</Key>"
                    "<LastModified>2026-01-01T00:00:00.000Z</LastModified>"
                    "<ETag>&quot;0&quot;</ETag><Size>2</Size>"
                    "<StorageClass>STANDARD</StorageClass></Contents>" for k in keys)
                xml = ('<?xml version="1.0" encoding="UTF-8"?>\n'
                       '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                       f"<Name>b</Name><Prefix>{xml_escape(prefix)}</Prefix>"
                       f"<KeyCount>{len(keys)}</KeyCount><MaxKeys>1000</MaxKeys>"
                       f"<IsTruncated>true</IsTruncated>{contents}"
                       f"<NextContinuationToken>{xml_escape(token)}</NextContinuationToken>"
                       "</ListBucketResult>")
                self._send(200, [("Content-Type", "application/xml")], xml.encode())

            def _do_sametoken(self, action, body):
                q = parse_qs(urlsplit(self.path).query)
                token = q.get("continuation-token", ["again"])[0]
                prefix = q.get("prefix", [""])[0]
                self._listing([prefix + "upload_date=1/u/others/x_completed.json"], token)

            def _do_freshtoken(self, action, body):
                with proxy._lock:
                    proxy._tokens += 1
                    token = f"t{proxy._tokens}"
                self._listing(list(proxy.fresh_keys), token)

            def _do_rewrite(self, action, body):
                status, hdrs, data = self._upstream(body)
                self._send(status, hdrs, proxy.rewrite(self.command, self.path, data))

            def _do_reset(self, action, body):
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True

            def _shift_date(self, seconds):
                when = self.headers.get("X-Amz-Date")
                if when:
                    t = calendar.timegm(time.strptime(when, "%Y%m%dT%H%M%SZ"))
                    shifted = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(t + seconds))
                    self.headers.replace_header("X-Amz-Date", shifted)

            def _do_skew(self, action, body):
                self._shift_date(proxy.skew_seconds)
                self._do_pass(action, body)

            def _do_tamper(self, action, body):
                if body:
                    body = body[:-1] + (b"0" if body[-1:] != b"0" else b"1")
                else:
                    self._shift_date(1)
                self._do_pass(action, body)

            def _do_hold(self, action, body):
                proxy.held.set()
                while not proxy._released.wait(0.05):
                    if proxy._stopping.is_set():
                        self.close_connection = True
                        return
                self._do_pass(action, body)

            def _do_slow(self, action, body):
                proxy._stopping.wait(proxy.slow_seconds)
                self.close_connection = True

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def handle_error(self, request, client_address):
                pass  # clients that time out or resets we made are expected

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def close(self):
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=10)
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
