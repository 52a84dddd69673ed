#!/usr/bin/env python3
"""An order process driven only by callbacks, with the Python client: slct POSTs the
state whenever a select completes, and the answer is the next step.

    start -> select { case <-payments/<order>: ship | case <-time.After(5s): cancel }
    ship  -> send the order on the `shipping` channel (buffered), then done

The callback receiver is a `slct.CallbackServer` in this script; with
SLCT_CALLBACK_SECRET set (start the cluster with the same `--callback-secret`) it
refuses requests whose `Slct-Signature` or `Slct-Timestamp` do not check out. A
warehouse loop receives from `shipping` over plain HTTP.

    pip install ./clients/python
    slct dev &                          # or any cluster
    python3 clients/python/examples/order_callbacks.py

SLCT_SERVER names the nodes, comma-separated (default the three of `slct dev`); the
client fails over between them. ORDER_TIMEOUT_MS sets the payment timeout (default
5000).
"""

import os
import threading
import time

import slct
from slct import Case, select

TIMEOUT_MS = int(os.environ.get("ORDER_TIMEOUT_MS", "5000"))
finished = set()


def next_step(state, delivery):
    """The process itself: given the state with its new result, the updated state."""
    data, result = state["data"], state["results"][-1]
    order = data["order"]
    if data["step"] == "start":
        data["step"] = "awaiting payment"
        selects = [select("pay", Case.recv("payments/" + order), Case.timer_after(TIMEOUT_MS))]
    elif data["step"] == "awaiting payment" and result["op"] == "recv":
        data["step"] = "shipping"
        selects = [select("ship", Case.send("shipping", order))]
    else:
        data["step"] = "done: shipped" if data["step"] == "shipping" else "done: cancelled"
        selects = []
    print("%s (attempt %d): now %s" % (state["id"], delivery["attempt"], data["step"]))
    if not selects:
        finished.add(state["id"])
    return {"data": data, "selects": selects}


def warehouse(client, done):
    while not done.is_set():
        try:
            print("warehouse: shipping order %s" % client.recv("shipping", wait=1).data)
        except slct.Timeout:
            pass


def main():
    client = slct.Client(os.environ.get(
        "SLCT_SERVER", "http://127.0.0.1:7001,http://127.0.0.1:7002,http://127.0.0.1:7003"))
    server = slct.CallbackServer(next_step, secret=os.environ.get("SLCT_CALLBACK_SECRET"))
    done = threading.Event()
    with server:
        client.make_chan("shipping", 100)
        threading.Thread(target=warehouse, args=(client, done), daemon=True).start()
        run = str(int(time.time() * 1000))
        orders = [run + "-paid", run + "-unpaid"]
        for order in orders:
            client.put_state("shop/" + order, data={"order": order, "step": "start"},
                             selects=[select("start", Case.default())],
                             callback={"url": server.url, "timeout_ms": 5000})
        time.sleep(0.5)
        print("payment for %s: %s" % (orders[0], client.send("payments/" + orders[0], {"amount": 42})))

        deadline = time.time() + 30
        while len(finished) < len(orders) and time.time() < deadline:
            time.sleep(0.1)
        done.set()
        for order in orders:
            state = client.get_state("shop/" + order)
            print("shop/%s: %s, %s" % (order, state["status"], state["data"]["step"]))
    assert len(finished) == len(orders), "not every order finished"


if __name__ == "__main__":
    main()
