"""Signature checks, and the callback server against a live cluster that signs."""

import json
import time
import unittest

import slct
from slct import Case, select

from cluster import CALLBACK_SECRET, eventually, shared, unique


class Signatures(unittest.TestCase):
    def test_the_signature_is_hmac_sha256_of_timestamp_dot_body(self):
        # RFC 4231 test case 2, with the timestamp prefix the node signs.
        import hashlib
        import hmac
        body = b'{"id":"x"}'
        expected = hmac.new(b"Jefe", b"1764000000000." + body, hashlib.sha256).hexdigest()
        self.assertEqual(slct.sign("Jefe", body, 1764000000000), "sha256=" + expected)

    def test_verify_refuses_wrong_stale_and_missing(self):
        body, now = b'{"a":1}', time.time()
        ts = str(int(now * 1000))
        good = slct.sign("k", body, int(ts))
        slct.verify("k", body, ts, good)
        for secret, b, t, sig in (("other", body, ts, good), ("k", b'{"a":2}', ts, good),
                                  ("k", body, str(int(ts) - 301000), slct.sign("k", body, int(ts) - 301000)),
                                  ("k", body, None, good), ("k", body, ts, None),
                                  ("k", body, "soon", good)):
            with self.assertRaises(slct.BadSignature):
                slct.verify(secret, b, t, sig)


class Server(unittest.TestCase):
    def test_a_signed_callback_is_answered_with_the_update(self):
        c = slct.Client(shared().urls)
        sid = unique("cb/ok")
        seen = []

        def handler(state, delivery):
            seen.append(delivery)
            return {"data": {"paid": state["results"][0]["data"]}, "selects": []}

        with slct.CallbackServer(handler, secret=CALLBACK_SECRET) as server:
            c.put_state(sid, selects=[select("main", Case.recv(sid + "/pay"))],
                        callback={"url": server.url, "timeout_ms": 5000})
            c.send(sid + "/pay", 7)
            eventually("done", lambda: c.get_state(sid)["status"] == "done", timeout=30)
        self.assertEqual(c.get_state(sid)["data"], {"paid": 7})
        self.assertEqual(seen[0]["state_id"], sid)
        self.assertEqual(seen[0]["attempt"], 1)
        self.assertTrue(seen[0]["idempotency_key"].startswith(sid + ":"))

    def test_none_defers_and_the_receiver_puts_the_update_itself(self):
        c = slct.Client(shared().urls)
        sid = unique("cb/defer")
        deliveries = []
        with slct.CallbackServer(lambda s, d: deliveries.append(d), secret=CALLBACK_SECRET) as server:
            c.put_state(sid, selects=[select("main", Case.default())], callback=server.url)
            eventually("a delivery", lambda: deliveries, timeout=30)
        c.update_state(sid, deliveries[0]["lease"], {"data": "later", "selects": []})
        self.assertEqual(c.get_state(sid)["status"], "done")

    def test_a_wrong_secret_is_refused_before_the_handler(self):
        c = slct.Client(shared().urls)
        sid = unique("cb/bad")
        called = []
        with slct.CallbackServer(lambda s, d: called.append(s), secret="not the secret") as server:
            c.put_state(sid, selects=[select("main", Case.default())], callback=server.url)
            state = eventually("a failed attempt",
                               lambda: (lambda s: s if s.get("attempts") else None)(c.get_state(sid)),
                               timeout=30)
            c.delete_state(sid)
        self.assertEqual(called, [])
        self.assertIn("401", state["last_error"])


if __name__ == "__main__":
    unittest.main()
