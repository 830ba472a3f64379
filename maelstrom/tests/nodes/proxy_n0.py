#!/usr/bin/env python3
"""A linearizable lin-kv node in a few lines, independent of our Rust code.

n0 holds the only copy of the map. Every other node forwards each client
operation to n0 and relays n0's answer, so all operations take effect in
one place, one at a time: linearizable, as long as the network does not
lose messages (a partition makes forwarded operations time out, which is
still correct, only unavailable). Used by maelstrom/tests/runner.rs to show
that the local runner accepts a correct binary that is not ours.
"""
import json
import sys

node_id = None
data = {}
next_id = 0
# our msg_id -> (client, client's msg_id)
pending = {}


def send(dest, body):
    sys.stdout.write(json.dumps({"src": node_id, "dest": dest, "body": body}) + "\n")
    sys.stdout.flush()


def apply(body):
    """Apply a client operation to the map; return the reply body."""
    key = json.dumps(body.get("key"))
    kind = body["type"]
    if kind == "read":
        if key not in data:
            return {"type": "error", "code": 20, "text": "key does not exist"}
        return {"type": "read_ok", "value": data[key]}
    if kind == "write":
        data[key] = body["value"]
        return {"type": "write_ok"}
    if kind == "cas":
        if key not in data:
            return {"type": "error", "code": 20, "text": "key does not exist"}
        if data[key] != body["from"]:
            return {"type": "error", "code": 22, "text": "cas mismatch"}
        data[key] = body["to"]
        return {"type": "cas_ok"}
    return {"type": "error", "code": 10, "text": "unsupported"}


for line in sys.stdin:
    msg = json.loads(line)
    body = msg["body"]
    kind = body["type"]
    if kind == "init":
        node_id = body["node_id"]
        send(msg["src"], {"type": "init_ok", "in_reply_to": body["msg_id"]})
    elif kind in ("read", "write", "cas"):
        if node_id == "n0":
            reply = apply(body)
            reply["in_reply_to"] = body["msg_id"]
            send(msg["src"], reply)
        else:
            next_id += 1
            pending[next_id] = (msg["src"], body["msg_id"])
            send("n0", {"type": "proxy", "msg_id": next_id, "op": body})
    elif kind == "proxy":
        send(msg["src"], {"type": "proxy_ok", "in_reply_to": body["msg_id"], "reply": apply(body["op"])})
    elif kind == "proxy_ok":
        client, client_msg_id = pending.pop(body["in_reply_to"])
        reply = body["reply"]
        reply["in_reply_to"] = client_msg_id
        send(client, reply)
    else:
        print(f"ignoring {kind}", file=sys.stderr)
