"""The Worker against a live cluster: handlers, heartbeats, giving leases back, stop."""

import threading
import time
import unittest

import slct
from slct import Case, select

from cluster import eventually, shared, unique


def client():
    return slct.Client(shared().urls)


def start_orders(c, prefix, n):
    for i in range(n):
        c.put_state("%s%d" % (prefix, i), data={"n": i},
                    selects=[select("main", Case.recv("%s%d/pay" % (prefix, i)))])
        c.send("%s%d/pay" % (prefix, i), {"amount": i})


class Workers(unittest.TestCase):
    def test_n_handlers_finish_every_pending_state(self):
        c = client()
        prefix = unique("w-many") + "/"
        running, most = [0], [0]
        lock = threading.Lock()

        def handler(state):
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            time.sleep(0.05)
            with lock:
                running[0] -= 1
            return {"data": {"paid": state["results"][0]["data"]["amount"]}, "selects": []}

        worker = slct.Worker(c, handler, prefix=prefix, concurrency=3, poll_wait=1).start()
        start_orders(c, prefix, 9)
        eventually("9 updates", lambda: worker.stats.completed == 9)
        stats = worker.stop(timeout=30)
        self.assertEqual((stats.polled, stats.failed, stats.in_flight), (9, 0, 0))
        self.assertLessEqual(most[0], 3)
        for i in range(9):
            state = c.get_state("%s%d" % (prefix, i))
            self.assertEqual((state["status"], state["data"]), ("done", {"paid": i}))

    def test_a_failing_handler_gives_the_lease_back_and_the_state_comes_again(self):
        c = client()
        prefix = unique("w-fail") + "/"
        calls = []

        def handler(state):
            calls.append(state["id"])
            if len(calls) == 1:
                raise RuntimeError("the first try fails")
            return {"selects": []}

        worker = slct.Worker(c, handler, prefix=prefix, concurrency=1, lease=60, poll_wait=1)
        worker.start()
        start_orders(c, prefix, 1)
        # A 60 s lease: redelivery within the test's deadline means the lease came back.
        eventually("the state done", lambda: c.get_state(prefix + "0")["status"] == "done",
                   timeout=30)
        stats = worker.stop(timeout=30)
        self.assertEqual(calls, [prefix + "0", prefix + "0"])
        self.assertEqual((stats.failed, stats.completed), (1, 1))
        events = [e["event"] for e in c.history(prefix + "0")["events"]]
        self.assertIn("lease_released", events)

    def test_a_slow_handler_keeps_its_lease_by_heartbeats(self):
        c = client()
        prefix = unique("w-slow") + "/"
        release = threading.Event()

        def handler(state):
            release.wait(30)
            return {"selects": []}

        worker = slct.Worker(c, handler, prefix=prefix, concurrency=1, lease=0.9, poll_wait=1)
        worker.start()
        start_orders(c, prefix, 1)
        # Three heartbeats: the handler has held its 0.9 s lease well past its length.
        eventually("three heartbeats", lambda: worker.stats.heartbeats >= 3, timeout=30)
        self.assertEqual(c.get_state(prefix + "0")["status"], "leased")
        release.set()
        eventually("the update", lambda: worker.stats.completed == 1)
        stats = worker.stop(timeout=30)
        self.assertEqual((stats.polled, stats.lease_lost), (1, 0))
        self.assertEqual(c.get_state(prefix + "0")["status"], "done")

    def test_stop_abandons_the_poll_and_waits_for_running_handlers(self):
        c = client()
        prefix = unique("w-stop") + "/"
        started, release = threading.Event(), threading.Event()

        def handler(state):
            started.set()
            release.wait(30)
            return {"data": "finished", "selects": []}

        worker = slct.Worker(c, handler, prefix=prefix, concurrency=2, poll_wait=300).start()
        start_orders(c, prefix, 1)
        self.assertTrue(started.wait(30))
        stopper = threading.Thread(target=worker.stop)
        t0 = time.monotonic()
        stopper.start()
        stopper.join(0.5)
        self.assertTrue(stopper.is_alive(), "stop waits for the running handler")
        release.set()
        stopper.join(30)
        self.assertFalse(stopper.is_alive())
        # The second slot's 300 s poll was abandoned, not waited for.
        self.assertLess(time.monotonic() - t0, 20)
        self.assertEqual(c.get_state(prefix + "0")["data"], "finished")


if __name__ == "__main__":
    unittest.main()
