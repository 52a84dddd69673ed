"""The example (examples/order.py) runs against the live cluster and prints both ends
of the order process."""

import os
import subprocess
import sys
import unittest

from cluster import shared

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "order.py")


class Example(unittest.TestCase):
    def test_one_order_is_paid_the_other_times_out(self):
        env = dict(os.environ, SLCT_SERVER=",".join(shared().urls), ORDER_TIMEOUT_MS="1000")
        out = subprocess.run([sys.executable, EXAMPLE], env=env, capture_output=True, text=True,
                             timeout=120)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertRegex(out.stdout, r"order \d+/a: paid")
        self.assertRegex(out.stdout, r"order \d+/b: cancelled: no payment in time")


if __name__ == "__main__":
    unittest.main()
