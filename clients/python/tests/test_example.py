"""The examples (examples/) run against the live cluster and print both ends of the
order process."""

import os
import subprocess
import sys
import unittest

from cluster import CALLBACK_SECRET, shared

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


def run(example, **env):
    env = dict(os.environ, SLCT_SERVER=",".join(shared().urls), ORDER_TIMEOUT_MS="1000", **env)
    return subprocess.run([sys.executable, os.path.join(EXAMPLES, example)], env=env,
                          capture_output=True, text=True, timeout=120)


class Example(unittest.TestCase):
    def test_one_order_is_paid_the_other_times_out(self):
        out = run("order.py")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertRegex(out.stdout, r"order \d+/a: paid")
        self.assertRegex(out.stdout, r"order \d+/b: cancelled: no payment in time")

    def test_callbacks_ship_the_paid_order_and_cancel_the_other(self):
        out = run("order_callbacks.py", SLCT_CALLBACK_SECRET=CALLBACK_SECRET)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertRegex(out.stdout, r"shop/\d+-paid: done, done: shipped")
        self.assertRegex(out.stdout, r"shop/\d+-unpaid: done, done: cancelled")
        self.assertRegex(out.stdout, r"warehouse: shipping order \d+-paid")


if __name__ == "__main__":
    unittest.main()
