"""A client of one slct cluster through any of its nodes: the whole HTTP API, with
failover between nodes and retries that never repeat a write that may have been applied.

Every node serves the whole API and forwards to the leader, so any node will do; the
client is given several so that it survives the loss of one. It sends each request to
the node that answered last, and moves on to the next node when a request

- cannot connect (it reached no node, so it changed nothing), or
- is answered 503 with a code that says nothing was applied (``no_leader``,
  ``not_leader``, ``no_quorum``, ``not_ready``, ``clock_jump``).

Reads (GETs, long-polls included: a state a lost poll leased is redelivered when its
lease lapses), idempotent writes (pause, resume, a lease extension, making a channel,
membership changes) and writes sent with an ``idempotency_key`` are also retried on
every other 503 (``leader_unreachable``, ``outcome_unknown``, ...) and when the answer
was lost after the request was sent. Other writes that fail that way may have been
applied, so they are not retried: the caller gets the error, whose ``outcome_unknown``
is True, and decides (read the state, then repeat or not).

A node that answered 503 is not asked again before its ``Retry-After`` (capped by
``max_wait``); one that refused the connection, not for a second. Each node is tried at
most ``attempts`` times per request.

Values are sent as compact JSON with non-ASCII text as it is. The server keeps the text
of a send case's value and compares a still-blocked select byte for byte in an update,
so send back the selects you received: values this client wrote come back identical
(a number another client wrote as ``1e15`` would not).
"""

import http.client
import json
import socket
import ssl
import threading
import time
import urllib.parse
from collections import namedtuple

from . import errors

#: What a receive got: the value (None once ``ok`` is False) and whether one came.
Received = namedtuple("Received", ["data", "ok"])

# How a request may be repeated (see the module docs).
_UNSAFE = "unsafe"  # only when nothing was applied
_SAFE = "safe"  # on any 503 and on a lost answer
_ONCE = "once"  # never: the caller asked one node

_NO_BODY = object()


class Case:
    """Builders of a select's cases (plain dicts, as the API writes them)."""

    @staticmethod
    def recv(chan):
        """A receive from ``chan``."""
        return {"op": "recv", "chan": chan}

    @staticmethod
    def send(chan, data):
        """A send of ``data`` on ``chan``."""
        return {"op": "send", "chan": chan, "data": data}

    @staticmethod
    def timer_at(at_ms):
        """A timer firing at ``at_ms`` (Unix ms, log time)."""
        return {"op": "timer", "at": at_ms}

    @staticmethod
    def timer_after(ms):
        """A timer firing ``ms`` after the select is registered."""
        return {"op": "timer", "after_ms": ms}

    @staticmethod
    def default():
        """The default case: the select completes at once if nothing else is ready."""
        return {"op": "default"}


def select(select_id, *cases):
    """A select: one blocked goroutine, named ``select_id`` within its state."""
    return {"id": select_id, "cases": list(cases)}


def _seg(name):
    """Percent-encodes one path segment (a state id or channel name)."""
    return urllib.parse.quote(name, safe="")


def _dumps(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _wire_selects(body):
    """A copy of a state body whose timer cases carry one of ``at`` and ``after_ms``:
    the server shows a relative timer with both but takes only one (``at`` matches the
    blocked select)."""
    selects = body.get("selects")
    if not isinstance(selects, list):
        return body
    out = dict(body)
    out["selects"] = []
    for sel in selects:
        cases = sel.get("cases") if isinstance(sel, dict) else None
        if isinstance(cases, list):
            sel = dict(sel)
            sel["cases"] = [
                {k: v for k, v in c.items() if k != "after_ms"}
                if isinstance(c, dict) and c.get("op") == "timer" and "at" in c and "after_ms" in c
                else c
                for c in cases
            ]
        out["selects"].append(sel)
    return out


def may_retry(kind, error, idempotency_key=None):
    """Whether a request of ``kind`` that failed with ``error`` may be sent again (to
    this node or another): the rules of the module docs."""
    if isinstance(error, errors.TransportError):
        if not error.connected:
            return True
    elif isinstance(error, errors.Unavailable):
        if error.nothing_applied:
            return kind != _ONCE
    else:
        return False
    return kind == _SAFE or (kind == _UNSAFE and idempotency_key is not None)


class _Node:
    def __init__(self, url):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("server %r must be an http:// or https:// URL" % url)
        self.url = url.rstrip("/")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.base = parts.path.rstrip("/")
        self.not_before = 0.0


class _Cancel:
    """Lets another thread abandon a request in flight (the worker's stop)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._conn = None
        self.cancelled = False

    def attach(self, conn):
        with self._lock:
            if self.cancelled:
                return False
            self._conn = conn
            return True

    def cancel(self):
        with self._lock:
            self.cancelled = True
            conn = self._conn
        if conn is not None and conn.sock is not None:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Cancelled(errors.SlctError):
    """The request was abandoned by ``_Cancel.cancel``."""


class Client:
    """A client of one slct cluster. Safe to share between threads.

    ``urls``: one node's URL, a list of them, or a comma-separated string
    (``"http://10.0.0.1:7001,http://10.0.0.2:7001"``). ``token``: sent as
    ``Authorization: Bearer`` (the node's ``--token``, or the admin token for
    membership changes). ``attempts``: tries per node for one request. ``max_wait``:
    the longest pause before asking a node again, whatever ``Retry-After`` says.
    ``timeout``: seconds one request may take beyond the wait it asks for.
    """

    def __init__(self, urls, token=None, attempts=5, max_wait=2.0, timeout=30.0,
                 connect_timeout=5.0, ssl_context=None):
        if isinstance(urls, str):
            urls = [u.strip() for u in urls.split(",") if u.strip()]
        if not urls:
            raise ValueError("a client needs at least one node URL")
        self._nodes = [_Node(u) for u in urls]
        self._token = token
        self._attempts = max(1, attempts)
        self._max_wait = max_wait
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._ssl = ssl_context
        self._lock = threading.Lock()
        self._current = 0

    def __repr__(self):
        return "Client(%r, token=%s)" % (self.urls, "<set>" if self._token else None)

    @property
    def urls(self):
        """The nodes' URLs, in the order given."""
        return [n.url for n in self._nodes]

    # States (DESIGN §3.1).

    def put_state(self, state_id, data=None, selects=None, callback=None, priority=None,
                  idempotency_key=None):
        """Creates a state and registers its selects; ``Exists`` if it exists.
        ``callback`` is a URL or ``{"url", "timeout_ms"}``."""
        body = {}
        if data is not None:
            body["data"] = data
        if selects is not None:
            body["selects"] = selects
        if callback is not None:
            body["callback"] = {"url": callback} if isinstance(callback, str) else callback
        if priority is not None:
            body["priority"] = priority
        return self._json("PUT", "/state/" + _seg(state_id), body=_wire_selects(body),
                          idempotency_key=idempotency_key)

    def update_state(self, state_id, token, update, idempotency_key=None):
        """Updates a leased state under its lease ``token`` and ends the lease.

        ``update`` is a dict: ``data``, ``selects`` (every still-blocked select
        unchanged, plus new ones; ``[]`` with no results left finishes the process),
        ``callback``, ``priority``. An omitted key keeps its value, ``None`` clears it.
        ``LeaseLost`` if the lease is gone, ``InvalidUpdate`` if a blocked select is
        missing or changed."""
        body = {k: v for k, v in update.items() if k != "lease"}
        return self._json("PUT", "/state/" + _seg(state_id), body=_wire_selects(body),
                          headers={"Slct-Lease": str(token)}, idempotency_key=idempotency_key)

    def get_state(self, state_id, stale=False):
        """Reads a state (linearizable; ``stale=True`` answers from the node asked)."""
        return self._json("GET", "/state/" + _seg(state_id), query={"stale": stale or None})

    def delete_state(self, state_id, idempotency_key=None):
        """Deletes a state; its blocked selects leave every queue."""
        self._json("DELETE", "/state/" + _seg(state_id), idempotency_key=idempotency_key)

    def list_states(self, prefix="", status=None, min_priority=None, limit=None, after=None,
                    full=False, stale=False):
        """One page of states: ``{"states": [...], "next": cursor or None}`` (summaries
        without ``data`` unless ``full``). ``status`` may also be ``"paused"``."""
        return self._json("GET", "/states", query={
            "prefix": prefix, "status": status, "min_priority": min_priority, "limit": limit,
            "after": after, "full": full or None, "stale": stale or None})

    def iter_states(self, prefix="", status=None, min_priority=None, full=False, stale=False):
        """Every matching state, page after page."""
        after = None
        while True:
            page = self.list_states(prefix=prefix, status=status, min_priority=min_priority,
                                    after=after, full=full, stale=stale)
            for state in page["states"]:
                yield state
            after = page.get("next")
            if after is None:
                return

    # Resuming (DESIGN §3.2).

    def poll(self, prefix="", wait=30, limit=1, lease_ms=30000, min_priority=None, _cancel=None):
        """Long-polls: leases and returns up to ``limit`` pending states without a
        callback whose id starts with ``prefix`` (``[]`` after ``wait`` seconds)."""
        return self._json("GET", "/state/poll", query={
            "prefix": prefix, "wait": wait, "limit": limit, "lease_ms": lease_ms,
            "min_priority": min_priority}, wait=wait, cancel=_cancel)

    def extend_lease(self, state_id, token, extend_ms=30000):
        """Extends a lease to ``extend_ms`` from now (a heartbeat); returns the lease."""
        return self._json("POST", "/state/%s/lease" % _seg(state_id),
                          body={"token": str(token), "extend_ms": extend_ms}, kind=_SAFE)

    def release_lease(self, state_id, token, idempotency_key=None):
        """Gives a leased state back: it is pending again."""
        self._json("DELETE", "/state/%s/lease" % _seg(state_id), query={"token": str(token)},
                   idempotency_key=idempotency_key)

    def retry(self, state_id, idempotency_key=None):
        """Re-arms a failed state; ``Conflict`` if it has not failed."""
        return self._json("POST", "/state/%s/retry" % _seg(state_id),
                          idempotency_key=idempotency_key)

    # Process control (DESIGN §3.6).

    def pause(self, state_id):
        """Pauses a state (idempotent): it is delivered to no one until resumed."""
        return self._json("POST", "/state/%s/pause" % _seg(state_id), kind=_SAFE)

    def resume(self, state_id):
        """Resumes a paused state (idempotent)."""
        return self._json("POST", "/state/%s/resume" % _seg(state_id), kind=_SAFE)

    def history(self, state_id, limit=None, before=None, stale=False):
        """A page of the state's events, newest first: ``{"events", "next"}``."""
        return self._json("GET", "/state/%s/history" % _seg(state_id), query={
            "limit": limit, "before": before, "stale": stale or None})

    # Channels (DESIGN §3.3).

    def make_chan(self, name, capacity=0):
        """Makes a channel with a buffer of ``capacity``; the same again is fine,
        another capacity is ``Exists``."""
        return self._json("PUT", "/chan/" + _seg(name), body={"capacity": capacity}, kind=_SAFE)

    def get_chan(self, name, stale=False):
        """A channel's counts; ``NotFound`` for an implicit channel holding nothing."""
        return self._json("GET", "/chan/" + _seg(name), query={"stale": stale or None})

    def send(self, name, value, wait=None, idempotency_key=None):
        """Sends ``value``. ``wait=None``: a detached durable send, returns ``"sent"``
        or ``"parked"`` (until a receiver takes it). ``wait=0``: ``WouldBlock`` unless it
        completes now. ``wait=N``: blocks up to N seconds, then ``Timeout``. A closed
        channel is ``Closed``."""
        answer = self._json("POST", "/chan/%s/send" % _seg(name), query={"wait": wait},
                            body=value, wait=wait or 0, idempotency_key=idempotency_key)
        return answer["status"]

    def recv(self, name, wait=30):
        """Receives, blocking up to ``wait`` seconds (``Timeout`` after; ``wait=0`` is a
        try-receive, ``WouldBlock``). Returns ``Received(data, ok)``; ``ok`` is False once
        the channel is closed and drained. A value matched to a request whose answer is
        lost is lost: receive through states when that matters."""
        answer = self._json("POST", "/chan/%s/recv" % _seg(name), query={"wait": wait},
                            wait=wait)
        return Received(answer.get("data"), answer["ok"])

    def close_chan(self, name, idempotency_key=None):
        """Closes a channel (``Closed`` if it is closed); returns the answer, which lists
        the parked detached sends the close discarded."""
        return self._json("POST", "/chan/%s/close" % _seg(name),
                          idempotency_key=idempotency_key)

    def list_chans(self, prefix="", limit=None, after=None, stale=False):
        """One page of stored channels: ``{"chans": [...], "next"}``."""
        return self._json("GET", "/chans", query={
            "prefix": prefix, "limit": limit, "after": after, "stale": stale or None})

    # Cluster and operations (DESIGN §3.5).

    def cluster(self, leader=False):
        """The cluster as a node sees it (``leader=True``: as the leader sees it)."""
        return self._json("GET", "/cluster", query={"leader": leader or None})

    def add_learner(self, node_id, addr):
        """Adds a learner (admin token)."""
        return self._json("POST", "/cluster/learners", body={"id": node_id, "addr": addr},
                          kind=_SAFE)

    def remove_learner(self, node_id):
        """Removes a learner (admin token)."""
        return self._json("DELETE", "/cluster/learners/%d" % node_id)

    def change_membership(self, members, force=False):
        """Sets the voters (admin token); fewer than three only with ``force``."""
        return self._json("POST", "/cluster/membership", query={"force": force or None},
                          body={"members": list(members)}, kind=_SAFE)

    def health(self, url=None):
        """``GET /healthz`` on one node (``url``, default the first): raises unless up."""
        self._json("GET", "/healthz", kind=_ONCE, node=url)

    def ready(self, url=None):
        """``GET /readyz`` on one node: raises ``Unavailable`` unless ready."""
        self._json("GET", "/readyz", kind=_ONCE, node=url)

    def metrics(self, url=None):
        """``GET /metrics`` of one node, as text."""
        return self._call("GET", "/metrics", kind=_ONCE, node=url)[1].decode("utf-8")

    # Plumbing.

    def _json(self, method, path, **kw):
        status, raw = self._call(method, path, **kw)
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as e:
            raise errors.DecodeError("%s %s: the answer is not JSON: %s" % (method, path, e))

    def _call(self, method, path, query=None, body=_NO_BODY, headers=None, kind=None, wait=0,
              idempotency_key=None, node=None, cancel=None):
        if kind is None:
            kind = _SAFE if method == "GET" else _UNSAFE
        if query:
            query = {k: _qv(v) for k, v in query.items() if v is not None}
            if query:
                path += "?" + urllib.parse.urlencode(query)
        payload = None if body is _NO_BODY else _dumps(body)
        all_headers = {"Accept": "application/json"}
        if payload is not None:
            all_headers["Content-Type"] = "application/json"
        if self._token:
            all_headers["Authorization"] = "Bearer " + self._token
        if idempotency_key is not None:
            all_headers["Idempotency-Key"] = idempotency_key
        all_headers.update(headers or {})
        if node is not None:
            nodes = [n for n in self._nodes if n.url == node.rstrip("/")]
            if not nodes:
                raise ValueError("%r is not one of this client's nodes" % node)
            return self._once(nodes[0], method, path, payload, all_headers, wait, cancel)
        if kind == _ONCE:
            return self._once(self._nodes[0], method, path, payload, all_headers, wait, cancel)
        tries = self._attempts * len(self._nodes)
        with self._lock:
            start = self._current
        for attempt in range(tries):
            index = (start + attempt) % len(self._nodes)
            target = self._nodes[index]
            pause = min(target.not_before - time.monotonic(), self._max_wait)
            if pause > 0:
                time.sleep(pause)
            try:
                answer = self._once(target, method, path, payload, all_headers, wait, cancel)
            except errors.SlctError as e:
                if attempt + 1 >= tries or not may_retry(kind, e, idempotency_key):
                    raise
                after = getattr(e, "retry_after", None)
                target.not_before = time.monotonic() + (1.0 if after is None else after)
                with self._lock:
                    if self._current == index:
                        self._current = (index + 1) % len(self._nodes)
                continue
            with self._lock:
                self._current = index
            return answer
        raise AssertionError("unreachable: the last try raises or returns")

    def _once(self, node, method, path, payload, headers, wait, cancel):
        """One try against one node: (status, body) of a 2xx, else the error."""
        if node.https:
            conn = http.client.HTTPSConnection(node.host, node.port, timeout=self._connect_timeout,
                                               context=self._ssl)
        else:
            conn = http.client.HTTPConnection(node.host, node.port, timeout=self._connect_timeout)
        try:
            try:
                conn.connect()
            except OSError as e:
                raise errors.TransportError("%s: cannot connect: %s" % (node.url, e), False)
            if cancel is not None and not cancel.attach(conn):
                raise Cancelled("cancelled")
            conn.sock.settimeout(self._timeout + (wait or 0))
            try:
                conn.request(method, node.base + path, body=payload, headers=headers)
                answer = conn.getresponse()
                raw = answer.read()
            except (OSError, http.client.HTTPException) as e:
                if cancel is not None and cancel.cancelled:
                    raise Cancelled("cancelled")
                raise errors.TransportError("%s %s%s: %s" % (method, node.url, path, e), True)
        finally:
            conn.close()
        if 200 <= answer.status < 300:
            return answer.status, raw
        retry_after = answer.getheader("Retry-After")
        try:
            retry_after = float(retry_after) if retry_after is not None else None
        except ValueError:
            retry_after = None
        code, message = "", raw.decode("utf-8", "replace")
        try:
            err = json.loads(raw)["error"]
            code, message = err["code"], err["message"]
        except (ValueError, KeyError, TypeError):
            pass
        raise errors.from_answer(answer.status, code, message, retry_after)


def _qv(value):
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)
