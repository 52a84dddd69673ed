"""A live three-node slct cluster for the tests: the built binary (``SLCT_BIN``) run
three times as ``slct serve`` on 127.0.0.1 ephemeral ports, each with its own data
directory under one temporary directory and its output in ``node-N.log`` there.

A missing ``SLCT_BIN`` fails the tests (scripts/test.sh sets it); nothing is skipped.
"""

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def eventually(what, check, timeout=60.0):
    """Polls ``check`` until it returns something true, or fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %gs waiting for %s" % (timeout, what))
        time.sleep(0.05)


class LocalCluster:
    def __init__(self, extra_args=()):
        binary = os.environ.get("SLCT_BIN")
        if not binary or not os.access(binary, os.X_OK):
            raise RuntimeError("SLCT_BIN must name the built slct binary (scripts/test.sh sets it)")
        self.binary = binary
        self.extra_args = list(extra_args)
        self.dir = tempfile.mkdtemp(prefix="slct-py-")
        self.addrs = {i: "127.0.0.1:%d" % free_port() for i in (1, 2, 3)}
        self.peers = ",".join("%d=%s" % kv for kv in self.addrs.items())
        self.procs = {}
        try:
            for i in self.addrs:
                self.spawn(i)
            for i in self.addrs:
                eventually("node %d ready (logs in %s)" % (i, self.dir), lambda i=i: self.ready(i))
        except BaseException:
            for i in list(self.procs):
                self.kill(i)
            raise

    @property
    def urls(self):
        return [self.url(i) for i in sorted(self.addrs)]

    def url(self, i):
        return "http://" + self.addrs[i]

    def spawn(self, i):
        log = open(os.path.join(self.dir, "node-%d.log" % i), "ab")
        self.procs[i] = subprocess.Popen(
            [self.binary, "serve", "--id", str(i), "--listen", self.addrs[i],
             "--data", os.path.join(self.dir, str(i)), "--peers", self.peers] + self.extra_args,
            stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def kill(self, i):
        proc = self.procs.pop(i)
        proc.kill()
        proc.wait()

    def ready(self, i):
        try:
            with urllib.request.urlopen(self.url(i) + "/readyz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def leader(self):
        """The id of the leader, as a running node sees it."""
        import json

        def ask():
            for i in self.procs:
                try:
                    with urllib.request.urlopen(self.url(i) + "/cluster", timeout=2) as r:
                        leader = json.load(r).get("leader")
                        if leader in self.procs:
                            return leader
                except OSError:
                    pass
            return None

        return eventually("a leader", ask)

    def stop(self):
        for i in list(self.procs):
            self.kill(i)
        shutil.rmtree(self.dir, ignore_errors=True)


#: The secret the shared cluster signs callbacks with.
CALLBACK_SECRET = "s3cret-for-tests"

_shared = None


def shared():
    """One cluster for every test module that does not kill nodes, started on first
    use and stopped when the tests end."""
    global _shared
    if _shared is None:
        import atexit

        _shared = LocalCluster(["--callback-secret", CALLBACK_SECRET])
        atexit.register(_shared.stop)
    return _shared


_counter = [0]


def unique(prefix):
    """A name no other test uses: ``prefix`` plus the time and a counter."""
    _counter[0] += 1
    return "%s-%d-%d" % (prefix, int(time.time() * 1000), _counter[0])
