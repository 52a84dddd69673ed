"""Several nodes: a client skips a dead one and rides out the loss of the leader. This
module runs its own cluster, since it kills nodes."""

import unittest

import slct
from slct import Case, select

from cluster import LocalCluster, free_port, unique

cluster = None


def setUpModule():
    global cluster
    cluster = LocalCluster()


def tearDownModule():
    cluster.stop()


class Failover(unittest.TestCase):
    def test_a_node_that_refuses_connections_is_skipped(self):
        dead = "http://127.0.0.1:%d" % free_port()
        c = slct.Client([dead] + cluster.urls)
        sid = unique("skip")
        c.put_state(sid, data={"via": "the next node"})
        self.assertEqual(c.get_state(sid)["data"], {"via": "the next node"})
        with self.assertRaises(slct.TransportError) as e:
            slct.Client(dead, attempts=2, max_wait=0.1).get_state(sid)
        self.assertFalse(e.exception.connected)

    def test_the_client_rides_out_the_loss_of_the_leader(self):
        leader = cluster.leader()
        # The leader first: the client's first request after the kill goes to it.
        urls = [cluster.url(leader)] + [u for u in cluster.urls if u != cluster.url(leader)]
        c = slct.Client(urls)
        sid = unique("ride")
        c.put_state(sid, selects=[select("g", Case.recv(sid + "/in"))])
        cluster.kill(leader)
        # Reads are retried on any 503 and go to the next node.
        self.assertEqual(c.get_state(sid)["status"], "waiting")
        # A write with an idempotency key is retried like a read.
        self.assertEqual(c.send(sid + "/in", 1, idempotency_key=unique("key")), "sent")
        [leased] = c.poll(prefix=sid, wait=5)
        c.update_state(leased["id"], leased["lease"]["token"], {"selects": []})
        self.assertEqual(c.get_state(sid)["status"], "done")
        new_leader = cluster.leader()
        self.assertNotEqual(new_leader, leader)


if __name__ == "__main__":
    unittest.main()
