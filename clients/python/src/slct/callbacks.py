"""Receiving callbacks: checking ``Slct-Signature`` and ``Slct-Timestamp``, and a small
HTTP server that runs a handler for each delivered state.

With ``--callback-secret``, a node signs every callback POST:
``Slct-Timestamp: <unix ms>`` and ``Slct-Signature: sha256=<hex HMAC-SHA256 of
"<timestamp>.<body>">`` over the raw body bytes. ``verify`` checks the signature in
constant time and refuses a timestamp older (or further ahead) than ``max_age``
seconds, so a captured request cannot be replayed later.

``CallbackServer`` answers the way the node expects (README "Resuming by callback"):
the handler's update dict becomes a 200 with that body, applied under the callback's
lease; ``None`` becomes a 204 (the receiver PUTs the update itself, with the
``Slct-Lease`` token, within the lease); an exception becomes a 500, which the node
retries with backoff. A request without a valid signature is 401 and never reaches the
handler.
"""

import hashlib
import hmac
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .errors import SlctError

log = logging.getLogger("slct.callbacks")


class BadSignature(SlctError):
    """A callback whose signature or timestamp does not check out."""


def sign(secret, body, timestamp_ms):
    """The ``Slct-Signature`` value for ``body`` (bytes) sent at ``timestamp_ms``."""
    mac = hmac.new(secret.encode("utf-8"), b"%d." % int(timestamp_ms) + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret, body, timestamp, signature, max_age=300.0, now=None):
    """Raises ``BadSignature`` unless ``signature`` (the ``Slct-Signature`` header) signs
    ``body`` (the raw bytes) at ``timestamp`` (the ``Slct-Timestamp`` header) with
    ``secret``, and the timestamp is within ``max_age`` seconds of ``now``."""
    if not timestamp or not signature:
        raise BadSignature("Slct-Timestamp and Slct-Signature are required")
    try:
        ts = int(timestamp)
    except ValueError:
        raise BadSignature("Slct-Timestamp is not a number of milliseconds")
    now = time.time() if now is None else now
    if abs(now * 1000 - ts) > max_age * 1000:
        raise BadSignature("Slct-Timestamp is more than %gs away from now" % max_age)
    if not hmac.compare_digest(sign(secret, body, ts).encode(), signature.encode("utf-8", "replace")):
        raise BadSignature("Slct-Signature does not match the body")


class CallbackServer:
    """An HTTP server on ``host:port`` (port 0: any free port) that hands every POSTed
    state to ``handler(state, delivery)`` and answers with its update.

    ``delivery`` is a dict of the headers that come with it: ``state_id``, ``lease``
    (the token), ``attempt`` (int) and ``idempotency_key``. With a ``secret`` every
    request must carry a valid signature (``verify``)."""

    def __init__(self, handler, secret=None, host="127.0.0.1", port=0, max_age=300.0):
        self.handler = handler
        self.secret = secret
        self.max_age = max_age
        self._server = ThreadingHTTPServer((host, port), _make_request_handler(self))
        self._server.daemon_threads = True
        self._thread = None

    @property
    def url(self):
        """``http://host:port/``: the callback url to give the states."""
        host, port = self._server.server_address[:2]
        return "http://%s:%d/" % (host, port)

    def start(self):
        """Serves in a background thread; returns self."""
        self._thread = threading.Thread(target=self._server.serve_forever, name="slct-callbacks",
                                        daemon=True)
        self._thread.start()
        return self

    def serve_forever(self):
        """Serves in this thread until ``stop()``."""
        self._server.serve_forever()

    def stop(self):
        """Stops serving and closes the socket."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _deliver(self, headers, body):
        """(status, answer body or None) for one POST."""
        if self.secret is not None:
            try:
                verify(self.secret, body, headers.get("Slct-Timestamp"),
                       headers.get("Slct-Signature"), self.max_age)
            except BadSignature as e:
                return 401, {"error": {"code": "unauthorized", "message": str(e)}}
        try:
            state = json.loads(body)
        except ValueError:
            return 400, {"error": {"code": "invalid_json", "message": "the body is not JSON"}}
        try:
            attempt = int(headers.get("Slct-Attempt") or 0)
        except ValueError:
            attempt = 0
        delivery = {
            "state_id": headers.get("Slct-State-Id"),
            "lease": headers.get("Slct-Lease"),
            "attempt": attempt,
            "idempotency_key": headers.get("Idempotency-Key"),
        }
        try:
            update = self.handler(state, delivery)
        except Exception as e:  # the handler's failure: the node retries
            log.warning("slct callback handler failed on %r: %r", delivery["state_id"], e)
            return 500, {"error": {"code": "internal", "message": "the handler failed"}}
        if update is None:
            return 204, None
        return 200, update


def _make_request_handler(server):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            status, answer = server._deliver(self.headers, body)
            raw = b"" if answer is None else json.dumps(
                answer, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
            self.send_response(status)
            if answer is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, fmt, *args):
            log.debug("callback server: " + fmt, *args)

    return Handler
