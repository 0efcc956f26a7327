"""A loopback HTTP server that answers S3 requests itself and records them:
as an endpoint (path-style requests) or as an HTTP proxy (absolute-URI
requests; CONNECT is refused, so no tunnel is ever opened and nothing is
forwarded)."""
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

EMPTY_LISTING = (b'<?xml version="1.0" encoding="UTF-8"?>'
                 b'<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                 b"<Name>b</Name><KeyCount>0</KeyCount><IsTruncated>false</IsTruncated>"
                 b"</ListBucketResult>")

class Recorder:
    """On 127.0.0.1, forwards nothing: records each request (method, request
    target, headers) and answers a GET with an empty listing, a CONNECT with
    403."""

    def __init__(self):
        self.requests = []
        rec = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                rec.requests.append((self.command, self.path, dict(self.headers)))
                self.send_response(200)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(EMPTY_LISTING)))
                self.end_headers()
                self.wfile.write(EMPTY_LISTING)

            def do_CONNECT(self):
                rec.requests.append((self.command, self.path, dict(self.headers)))
                self.send_response(403)
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()
