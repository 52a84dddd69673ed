#!/usr/bin/env python3
"""An order that waits for its payment or gives up after a timeout, with the Python
client: each order is one slct state blocked on a Go-style select,

    select {
    case p := <-payments/<order>:   // paid
    case <-time.After(5s):          // cancelled
    }

and a Worker long-polls the orders whose select completed, runs `step` on each and PUTs
the result back under the lease. Here the process ends after one step; a longer one
would return new selects instead of [].

    pip install ./clients/python
    slct dev &                          # or any cluster
    python3 clients/python/examples/order.py

SLCT_SERVER names the nodes, comma-separated (default http://127.0.0.1:7001); the
client fails over between them. ORDER_TIMEOUT_MS sets the timeout (default 5000).
"""

import os
import time

import slct
from slct import Case, select


def start_order(client, order_id, amount, timeout_ms):
    """Creates the order's state, blocked on its payment or a timer."""
    client.put_state(
        "order/" + order_id,
        data={"order": order_id, "amount": amount, "status": "awaiting payment"},
        selects=[select("main", Case.recv("payments/" + order_id), Case.timer_after(timeout_ms))],
    )


def step(state):
    """The process: what an order does when its select completes."""
    result = state["results"][-1]
    data = state["data"]
    if result["op"] == "recv":
        data["status"] = "paid"
        data["payment"] = result["data"]
    else:
        data["status"] = "cancelled: no payment in time"
    return {"data": data, "selects": []}


def main():
    client = slct.Client(os.environ.get("SLCT_SERVER", "http://127.0.0.1:7001"))
    timeout_ms = int(os.environ.get("ORDER_TIMEOUT_MS", "5000"))
    run = str(int(time.time() * 1000))
    paid, unpaid = run + "/a", run + "/b"
    worker = slct.Worker(client, step, prefix="order/" + run + "/", concurrency=2,
                         poll_wait=5).start()
    try:
        start_order(client, paid, 42, timeout_ms)
        start_order(client, unpaid, 7, timeout_ms)
        print("orders %s and %s: awaiting payment" % (paid, unpaid))
        client.send("payments/" + paid, {"amount": 42, "card": "4242"})
        for order_id in (paid, unpaid):
            while True:
                state = client.get_state("order/" + order_id)
                if state["status"] == "done":
                    break
                time.sleep(0.1)
            print("order %s: %s" % (order_id, state["data"]["status"]))
    finally:
        worker.stop()


if __name__ == "__main__":
    main()
