#!/usr/bin/env python3
"""A lin-kv node that is NOT linearizable: each node keeps its own map and
never talks to the others.

A write through n1 is invisible to a read through n0, so as soon as clients
on different nodes share a key, a read returns a value (or absence) that no
single order of the operations explains. The local runner must report it
invalid; maelstrom/tests/runner.rs checks that it does.
"""
import json
import sys

node_id = None
data = {}


def send(dest, body):
    sys.stdout.write(json.dumps({"src": node_id, "dest": dest, "body": body}) + "\n")
    sys.stdout.flush()


for line in sys.stdin:
    msg = json.loads(line)
    body = msg["body"]
    kind = body["type"]
    key = json.dumps(body.get("key"))
    if kind == "init":
        node_id = body["node_id"]
        reply = {"type": "init_ok"}
    elif kind == "read":
        if key in data:
            reply = {"type": "read_ok", "value": data[key]}
        else:
            reply = {"type": "error", "code": 20, "text": "key does not exist"}
    elif kind == "write":
        data[key] = body["value"]
        reply = {"type": "write_ok"}
    elif kind == "cas":
        if key not in data:
            reply = {"type": "error", "code": 20, "text": "key does not exist"}
        elif data[key] != body["from"]:
            reply = {"type": "error", "code": 22, "text": "cas mismatch"}
        else:
            data[key] = body["to"]
            reply = {"type": "cas_ok"}
    else:
        continue
    reply["in_reply_to"] = body["msg_id"]
    send(msg["src"], reply)
