#!/usr/bin/env python3
"""An order that waits for its payment or gives up after a timeout, resumed by polling.

Each order is one slct state blocked on a Go-style select:

    select {
    case p := <-payments/<order>:   // paid
    case <-time.After(5s):          // cancelled
    }

A worker long-polls `GET /state/poll?prefix=order/` for orders whose select has
completed, decides what happens next, and PUTs the state back under its lease. Here
the process ends after one step; a longer process would send new selects instead of [].

Run a cluster (`slct dev`), then: python3 examples/order_poller.py
Standard library only. SLCT_SERVER (default http://127.0.0.1:7001) picks the node.
"""

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request

SERVER = os.environ.get("SLCT_SERVER", "http://127.0.0.1:7001")


def call(method, path, body=None, headers=None):
    """One request; returns (status, JSON body or None)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(SERVER + path, data=data, method=method)
    req.add_header("content-type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, json.loads(raw) if raw else None


def q(name):
    return urllib.parse.quote(name, safe="")


def start_order(order_id, amount):
    """PUT /state/order/<id>: blocked on payment or a 5 s timer."""
    state = {
        "data": {"order": order_id, "amount": amount, "status": "awaiting payment"},
        "selects": [{
            "id": "main",
            "cases": [
                {"op": "recv", "chan": f"payments/{order_id}"},
                {"op": "timer", "after_ms": 5000},
            ],
        }],
    }
    status, body = call("PUT", f"/state/{q('order/' + order_id)}", state)
    assert status == 201, (status, body)
    print(f"order {order_id}: created, {body['status']}")


def step(state):
    """The process: what an order does when its select completes."""
    result = state["results"][-1]
    data = state["data"]
    if result["op"] == "recv":
        data["status"] = "paid"
        data["payment"] = result["data"]
    else:
        data["status"] = "cancelled: no payment in time"
    return {"data": data, "selects": [], "lease": {"token": state["lease"]["token"]}}


def main():
    run = str(int(time.time()))
    paid, unpaid = f"{run}-a", f"{run}-b"
    start_order(paid, 42)
    start_order(unpaid, 7)
    status, _ = call("POST", f"/chan/{q('payments/' + paid)}/send", {"card": "4242", "amount": 42})
    print(f"payment for {paid} sent (HTTP {status})")

    finished = set()
    while len(finished) < 2:
        status, states = call("GET", "/state/poll?prefix=" + q(f"order/{run}") + "&wait=30&limit=10")
        assert status == 200, (status, states)
        for state in states:
            update = step(state)
            status, body = call("PUT", f"/state/{q(state['id'])}", update)
            assert status == 200, (status, body)
            print(f"{state['id']}: {update['data']['status']} -> state {body['status']}")
            finished.add(state["id"])


if __name__ == "__main__":
    main()
