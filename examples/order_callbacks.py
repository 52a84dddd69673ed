#!/usr/bin/env python3
"""An order process driven only by callbacks: slct POSTs the state whenever a select
completes, and the answer is the next step.

    start -> select { case <-payments/<order>: ship | case <-time.After(5s): cancel }
    ship  -> send the order on the `shipping` channel (buffered), then done

The callback receiver is a tiny HTTP server in this script. It checks the
`Slct-Timestamp` and `Slct-Signature` headers when SLCT_CALLBACK_SECRET is set (start the cluster with the
same `--callback-secret`). A warehouse loop receives from `shipping` over plain HTTP.

Run a cluster (`slct dev`), then: python3 examples/order_callbacks.py
Standard library only.
"""

import hashlib
import hmac
import json
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SERVER = os.environ.get("SLCT_SERVER", "http://127.0.0.1:7001")
SECRET = os.environ.get("SLCT_CALLBACK_SECRET")
done = threading.Event()
finished = set()


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(SERVER + path, data=data, method=method)
    req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, json.loads(raw) if raw else None


def q(name):
    return urllib.parse.quote(name, safe="")


def next_step(state):
    """The process itself: given the state with its new result, the updated state."""
    data, result = state["data"], state["results"][-1]
    order = data["order"]
    if data["step"] == "start":
        data["step"] = "awaiting payment"
        selects = [{"id": "pay", "cases": [
            {"op": "recv", "chan": f"payments/{order}"},
            {"op": "timer", "after_ms": 5000},
        ]}]
    elif data["step"] == "awaiting payment" and result["op"] == "recv":
        data["step"] = "shipping"
        selects = [{"id": "ship", "cases": [{"op": "send", "chan": "shipping", "data": order}]}]
    else:
        data["step"] = "done: shipped" if data["step"] == "shipping" else "done: cancelled"
        selects = []
    print(f"{state['id']} (attempt {state.get('attempts', 0) + 1}): now {data['step']}")
    if not selects:
        finished.add(state["id"])
    return {"data": data, "selects": selects, "callback": state["callback"]}


def signed(headers, body):
    """Slct-Signature is the HMAC of "<Slct-Timestamp>.<body>"; refuse old timestamps
    too, so that a captured request cannot be replayed later."""
    stamp = headers.get("slct-timestamp", "")
    if not stamp.isdigit() or abs(time.time() * 1000 - int(stamp)) > 5 * 60 * 1000:
        return False
    mac = hmac.new(SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest("sha256=" + mac.hexdigest(), headers.get("slct-signature", ""))


class Callback(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        if SECRET and not signed(self.headers, body):
            self.send_response(401)
            self.end_headers()
            return
        answer = json.dumps(next_step(json.loads(body))).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


def warehouse():
    while not done.is_set():
        status, body = call("POST", "/chan/shipping/recv?wait=1")
        if status == 200:
            print(f"warehouse: shipping order {body['data']}")


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Callback)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/callback"
    call("PUT", "/chan/shipping", {"capacity": 100})
    threading.Thread(target=warehouse, daemon=True).start()

    run = str(int(time.time()))
    orders = [f"{run}-paid", f"{run}-unpaid"]
    for order in orders:
        state = {
            "data": {"order": order, "step": "start"},
            "callback": {"url": url, "timeout_ms": 5000},
            "selects": [{"id": "start", "cases": [{"op": "default"}]}],
        }
        status, body = call("PUT", f"/state/{q('shop/' + order)}", state)
        assert status == 201, (status, body)
    time.sleep(0.5)
    status, _ = call("POST", f"/chan/{q('payments/' + orders[0])}/send", {"amount": 42})
    print(f"payment for {orders[0]} sent (HTTP {status})")

    deadline = time.time() + 30
    while len(finished) < len(orders) and time.time() < deadline:
        time.sleep(0.1)
    done.set()
    for order in orders:
        _, state = call("GET", f"/state/{q('shop/' + order)}")
        print(f"shop/{order}: {state['status']}, {state['data']['step']}")
    assert len(finished) == len(orders), "not every order finished"


if __name__ == "__main__":
    main()
