"""The whole API through the client, against a live three-node cluster."""

import unittest
import uuid

import slct
from slct import Case, select

from cluster import eventually, shared, unique


def client():
    return slct.Client(shared().urls, timeout=30)


class States(unittest.TestCase):
    def test_a_process_life_create_pay_poll_update_done(self):
        c = client()
        sid = unique("order/py")
        chan = "payments/" + sid
        state = c.put_state(sid, data={"step": "awaiting"},
                            selects=[select("main", Case.recv(chan), Case.timer_after(60000))])
        self.assertEqual(state["status"], "waiting")
        self.assertEqual(state["data"], {"step": "awaiting"})
        with self.assertRaises(slct.Exists):
            c.put_state(sid, data={})
        self.assertEqual(c.send(chan, {"amount": 42}), "sent")
        self.assertEqual(c.get_state(sid)["status"], "pending")
        [leased] = c.poll(prefix=sid, wait=5, lease_ms=10000)
        self.assertEqual(leased["id"], sid)
        self.assertEqual(leased["status"], "leased")
        self.assertEqual(leased["results"][0]["data"], {"amount": 42})
        token = leased["lease"]["token"]
        lease = c.extend_lease(sid, token, 20000)
        self.assertGreater(lease["expires_at"], leased["lease"]["expires_at"] - 1)
        done = c.update_state(sid, token, {"data": {"step": "paid"}, "selects": []})
        self.assertEqual(done["status"], "done")
        self.assertEqual(c.get_state(sid, stale=True)["data"], {"step": "paid"})
        with self.assertRaises(slct.LeaseLost):
            c.update_state(sid, token, {"data": {}})
        events = [e["event"] for e in c.history(sid)["events"]]
        self.assertIn("leased", events)
        self.assertIn("updated", events)
        c.delete_state(sid)
        with self.assertRaises(slct.NotFound):
            c.get_state(sid)

    def test_an_update_sends_back_blocked_selects_with_their_values_and_timers(self):
        c = client()
        sid = unique("keep")
        c.put_state(sid, selects=[
            select("go", Case.recv(sid + "/go")),
            select("out", Case.send(sid + "/out", {"b": 1, "a": "été", "n": 2.5}),
                   Case.timer_after(600000)),
        ])
        c.send(sid + "/go", True)
        [leased] = c.poll(prefix=sid, wait=5)
        self.assertEqual([s["id"] for s in leased["selects"]], ["out"])
        self.assertIn("at", leased["selects"][0]["cases"][1])
        token = leased["lease"]["token"]
        with self.assertRaises(slct.InvalidUpdate):
            c.update_state(sid, token, {"selects": []})
        updated = c.update_state(sid, token, {"selects": leased["selects"] + [
            select("next", Case.recv(sid + "/next"))]})
        self.assertEqual(sorted(s["id"] for s in updated["selects"]), ["next", "out"])
        self.assertEqual(c.recv(sid + "/out", wait=5), slct.Received({"b": 1, "a": "été", "n": 2.5}, True))

    def test_listing_pages_and_filters(self):
        c = client()
        prefix = unique("list") + "/"
        for i in range(5):
            c.put_state(prefix + str(i), selects=[select("g", Case.recv(prefix + "never"))],
                        priority=i % 2)
        page = c.list_states(prefix=prefix, limit=2)
        self.assertEqual(len(page["states"]), 2)
        self.assertIsNotNone(page["next"])
        self.assertNotIn("data", page["states"][0])
        self.assertEqual([s["id"] for s in c.iter_states(prefix=prefix)],
                         [prefix + str(i) for i in range(5)])
        self.assertEqual(len(c.list_states(prefix=prefix, min_priority=1)["states"]), 2)
        self.assertEqual(len(c.list_states(prefix=prefix, status="waiting")["states"]), 5)

    def test_pause_resume_priority_and_retry(self):
        c = client()
        sid = unique("ctl")
        c.put_state(sid, selects=[select("g", Case.default())], priority=3)
        self.assertTrue(c.pause(sid)["paused"])
        self.assertTrue(c.pause(sid)["paused"])
        self.assertEqual(c.poll(prefix=sid, wait=0), [])
        self.assertEqual([s["id"] for s in c.list_states(prefix=sid, status="paused")["states"]],
                         [sid])
        self.assertFalse(c.resume(sid).get("paused", False))
        [leased] = c.poll(prefix=sid, wait=5, min_priority=3)
        self.assertEqual(leased["priority"], 3)
        c.release_lease(sid, leased["lease"]["token"])
        self.assertEqual(c.get_state(sid)["status"], "pending")
        with self.assertRaises(slct.Conflict):
            c.retry(sid)


class Chans(unittest.TestCase):
    def test_buffered_send_recv_close(self):
        c = client()
        name = unique("chan with spaces/and slashes é")
        made = c.make_chan(name, 2)
        self.assertEqual(made["capacity"], 2)
        c.make_chan(name, 2)
        with self.assertRaises(slct.Exists):
            c.make_chan(name, 3)
        self.assertEqual(c.send(name, 1), "sent")
        self.assertEqual(c.send(name, None, wait=0), "sent")
        with self.assertRaises(slct.WouldBlock):
            c.send(name, 3, wait=0)
        info = c.get_chan(name)
        self.assertEqual((info["len"], info["closed"]), (2, False))
        self.assertIn(name, [ch["name"] for ch in c.list_chans(prefix=name)["chans"]])
        self.assertEqual(c.recv(name, wait=1), (1, True))
        self.assertEqual(c.recv(name, wait=0), (None, True))
        with self.assertRaises(slct.WouldBlock):
            c.recv(name, wait=0)
        with self.assertRaises(slct.Timeout):
            c.recv(name, wait=1)
        c.close_chan(name)
        with self.assertRaises(slct.Closed):
            c.close_chan(name)
        with self.assertRaises(slct.Closed):
            c.send(name, 4)
        self.assertEqual(c.recv(name, wait=1), slct.Received(None, False))

    def test_a_detached_send_parks_until_received(self):
        c = client()
        name = unique("parked")
        self.assertEqual(c.send(name, {"x": 1}), "parked")
        self.assertEqual(c.get_chan(name)["senders"], 1)
        self.assertEqual(c.recv(name, wait=5).data, {"x": 1})


class Errors(unittest.TestCase):
    def test_each_code_is_its_own_class(self):
        c = client()
        with self.assertRaises(slct.Invalid) as e:
            c.put_state(unique("two-defaults"), selects=[select("g", Case.default(), Case.default())])
        self.assertEqual((e.exception.status, e.exception.code), (400, "invalid"))
        self.assertIsInstance(e.exception, slct.BadRequest)
        with self.assertRaises(slct.NotFound):
            c.get_chan(unique("nothing"))
        with self.assertRaises(slct.LeaseLost):
            sid = unique("lost")
            c.put_state(sid, data={})
            c.update_state(sid, uuid.uuid4(), {"data": 1})
        with self.assertRaises(slct.Invalid):
            c.update_state(sid, "not-a-uuid", {"data": 1})
        e = slct.from_answer(503, "no_leader", "m", 1.0)
        self.assertIsInstance(e, slct.NoLeader)
        self.assertTrue(e.nothing_applied)
        self.assertTrue(slct.from_answer(503, "outcome_unknown", "m").outcome_unknown)
        self.assertIs(type(slct.from_answer(409, "brand_new", "m")), slct.ConflictError)
        self.assertIs(type(slct.from_answer(418, "teapot", "m")), slct.ApiError)
        full = slct.from_answer(507, "disk_full", "m")
        self.assertIs(type(full), slct.DiskFull)
        self.assertEqual(full.code_name, "disk_full")

    def test_a_token_the_cluster_does_not_ask_for_is_harmless(self):
        c = slct.Client(shared().urls, token="anything")
        self.assertIn(c.cluster()["state"], ("Leader", "Follower"))
        self.assertNotIn("anything", repr(c))


def _ready(c, url):
    try:
        c.ready(url)
        return True
    except slct.NotReady:
        return False


class Cluster(unittest.TestCase):
    def test_cluster_health_ready_metrics(self):
        c = client()
        info = c.cluster(leader=True)
        self.assertEqual(info["state"], "Leader")
        self.assertEqual(len(info["members"]), 3)
        for url in c.urls:
            c.health(url)
            # Readiness needs a heartbeat from the leader within 600 ms: a loaded
            # machine can miss one, so wait for it rather than demand it.
            eventually("%s ready" % url, lambda: _ready(c, url), timeout=30)
        self.assertIn("slct_raft_term", c.metrics())


if __name__ == "__main__":
    unittest.main()
