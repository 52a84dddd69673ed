"""``Worker``: resumes processes by long-polling pending states and running a handler
for each, the poller side of resuming (README "Resuming by worker").

One loop long-polls for as many states as there are free handler slots
(``concurrency``), so a worker holds no more leases than it can work on. Each leased
state runs in its own thread: the handler gets the state (a dict, results and lease
included) and returns the update, a dict (``data``, ``selects``, ...: see
``Client.update_state``), which the worker PUTs under the lease. While the handler
runs, the worker extends the lease every third of its length, so a slow handler keeps
it. A handler that raises gives the lease back, so the state is pending again and is
redelivered at once rather than when the lease would have lapsed.

Delivery is at-least-once: a handler whose lease was lost (it ran past the lease
despite heartbeats, e.g. cut off from the cluster) finds its update refused with
``lease_lost`` and the state goes to someone else; handlers should be idempotent, or key
their side effects on the state's id and ``version``.

Stopping: ``stop()`` starts no new poll and abandons the one in flight (a state it
leased in that instant is redelivered when the lease lapses); the handlers already
running finish and submit their updates before ``run()`` returns.
"""

import dataclasses
import logging
import threading

from . import errors
from .client import Cancelled, _Cancel

log = logging.getLogger("slct.worker")

#: The longest pause after a failed poll, in seconds.
MAX_BACKOFF = 30.0


@dataclasses.dataclass
class WorkerStats:
    """A worker's counters since it was made."""

    #: States leased and handed to the handler.
    polled: int = 0
    #: Updates the server accepted.
    completed: int = 0
    #: Handler errors, and updates refused for another reason than a lost lease.
    failed: int = 0
    #: States whose lease was lost before the update.
    lease_lost: int = 0
    #: Lease extensions the server accepted.
    heartbeats: int = 0
    #: Polls that failed (the worker backs off and polls again).
    poll_errors: int = 0
    #: Handlers running now.
    in_flight: int = 0


class Worker:
    """Polls states whose id starts with ``prefix`` through ``client`` and runs
    ``handler(state) -> update`` for each, at most ``concurrency`` at once, under leases
    of ``lease`` seconds; one poll waits up to ``poll_wait`` seconds (1-300)."""

    def __init__(self, client, handler, prefix="", concurrency=4, lease=30.0, poll_wait=30,
                 min_priority=None):
        self.client = client
        self.handler = handler
        self.prefix = prefix
        self.concurrency = max(1, concurrency)
        self.lease = lease
        self.poll_wait = poll_wait
        self.min_priority = min_priority
        self._lock = threading.Condition()
        self._stats = WorkerStats()
        self._stopping = False
        self._cancel = None
        self._threads = []
        self._runner = None

    @property
    def stats(self):
        """A copy of the counters now."""
        with self._lock:
            return dataclasses.replace(self._stats)

    def _bump(self, field, by=1):
        with self._lock:
            setattr(self._stats, field, getattr(self._stats, field) + by)
            self._lock.notify_all()

    def start(self):
        """Runs the worker in a background thread; returns self."""
        self._runner = threading.Thread(target=self.run, name="slct-worker", daemon=True)
        self._runner.start()
        return self

    def stop(self, timeout=None):
        """Stops polling, waits for the running handlers (if ``start`` ran the worker,
        up to ``timeout`` seconds) and returns the counters."""
        with self._lock:
            self._stopping = True
            cancel = self._cancel
            self._lock.notify_all()
        if cancel is not None:
            cancel.cancel()
        if self._runner is not None:
            self._runner.join(timeout)
        return self.stats

    def run(self):
        """Polls and handles states until ``stop()``, then waits for the running
        handlers and returns the counters."""
        backoff = 0.1
        while True:
            with self._lock:
                while not self._stopping and self._stats.in_flight >= self.concurrency:
                    self._lock.wait()
                if self._stopping:
                    break
                free = self.concurrency - self._stats.in_flight
                self._cancel = _Cancel()
                cancel = self._cancel
            try:
                states = self.client.poll(
                    prefix=self.prefix, wait=self.poll_wait, limit=free,
                    lease_ms=max(1, int(self.lease * 1000)), min_priority=self.min_priority,
                    _cancel=cancel)
            except Cancelled:
                break
            except errors.SlctError as e:
                self._bump("poll_errors")
                log.warning("slct worker: poll failed: %s; retrying in %.1fs", e, backoff)
                with self._lock:
                    if not self._stopping:
                        self._lock.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            backoff = 0.1
            for state in states:
                with self._lock:
                    self._stats.polled += 1
                    self._stats.in_flight += 1
                thread = threading.Thread(target=self._handle, args=(state,),
                                          name="slct-handler", daemon=True)
                self._threads = [t for t in self._threads if t.is_alive()]
                self._threads.append(thread)
                thread.start()
        for thread in self._threads:
            thread.join()
        return self.stats

    def _handle(self, state):
        """Runs the handler on one leased state with heartbeats, then submits or gives
        the lease back."""
        try:
            token = (state.get("lease") or {}).get("token")
            if token is None:
                # A poll always leases what it returns; nothing to do without a token.
                self._bump("failed")
                return
            done = threading.Event()
            lost = threading.Event()
            beat = threading.Thread(target=self._heartbeat, args=(state["id"], token, done, lost),
                                    name="slct-heartbeat", daemon=True)
            beat.start()
            try:
                update = self.handler(state)
                if not isinstance(update, dict):
                    raise TypeError("the handler returned %r, not an update dict" % (update,))
            except Exception as e:  # the handler's failure, whatever it is
                done.set()
                beat.join()
                self._give_back(state["id"], token, lost.is_set(), e)
                return
            done.set()
            beat.join()
            self._submit(state["id"], token, update)
        finally:
            self._bump("in_flight", -1)

    def _heartbeat(self, state_id, token, done, lost):
        """Extends the lease every third of its length until ``done``; sets ``lost``
        when the lease is gone."""
        while not done.wait(self.lease / 3):
            try:
                self.client.extend_lease(state_id, token, max(1, int(self.lease * 1000)))
                self._bump("heartbeats")
            except (errors.LeaseLost, errors.NotFound):
                lost.set()
                return
            except errors.SlctError as e:
                log.warning("slct worker: cannot extend the lease of %r: %s", state_id, e)

    def _submit(self, state_id, token, update):
        try:
            self.client.update_state(state_id, token, update)
            self._bump("completed")
        except errors.LeaseLost:
            self._bump("lease_lost")
            log.warning("slct worker: the lease of %r was lost; its update is void", state_id)
        except errors.SlctError as e:
            self._bump("failed")
            log.warning("slct worker: the update of %r failed: %s", state_id, e)
            self._release(state_id, token)

    def _give_back(self, state_id, token, lost, error):
        self._bump("failed")
        log.warning("slct worker: the handler failed on %r: %r", state_id, error)
        if lost:
            self._bump("lease_lost")
            return
        self._release(state_id, token)

    def _release(self, state_id, token):
        try:
            self.client.release_lease(state_id, token)
        except errors.SlctError as e:
            log.warning("slct worker: cannot give back the lease of %r: %s", state_id, e)
