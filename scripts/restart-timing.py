#!/usr/bin/env python3
"""How long a SIGKILLed kv-server takes to serve again.

Expects a 3-node cluster started on its data directories DIR/n1..n3 with
HTTP on 127.0.0.1:18081-18083 and Raft on 127.0.0.1:19081-19083, for example:

    M=1=127.0.0.1:19081/127.0.0.1:18081,2=127.0.0.1:19082/127.0.0.1:18082,3=127.0.0.1:19083/127.0.0.1:18083
    for i in 1 2 3; do
      target/release/kv-server --id $i --data-dir DIR/n$i --http-addr 127.0.0.1:1808$i \\
        --raft-addr 127.0.0.1:1908$i --initial-members $M &
    done

Then it SIGKILLs a follower, the leader, and all three at once, restarts each
on its directory (with EXTRA arguments, if given), and prints the time from
the spawn until the node answers GET /v1/cluster/status and until a
linearizable GET through it is served. The restarted nodes keep running; the
node logs (DIR/n<i>.restart.log) say how the start-up time splits.

usage: restart-timing.py BIN DIR [EXTRA...]
"""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

BIN, DIR, EXTRA = sys.argv[1], sys.argv[2], sys.argv[3:]
MEMBERS = ",".join(f"{i}=127.0.0.1:1908{i}/127.0.0.1:1808{i}" for i in (1, 2, 3))


def status(i):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:1808{i}/v1/cluster/status", timeout=0.5) as r:
            return json.load(r)
    except Exception:
        return None


def linearizable_read(i):
    try:
        url = f"http://127.0.0.1:1808{i}/v1/kv/k1?consistency=linearizable"
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except Exception:
        return None


def pid_of(i):
    out = subprocess.run(["pgrep", "-f", f"kv-server --id {i} --data-dir {DIR}/n{i}"],
                         capture_output=True, text=True).stdout.split()
    return int(out[0]) if out else None


def start(i):
    args = [BIN, "--id", str(i), "--data-dir", f"{DIR}/n{i}", "--http-addr", f"127.0.0.1:1808{i}",
            "--raft-addr", f"127.0.0.1:1908{i}", "--initial-members", MEMBERS] + EXTRA
    log = open(f"{DIR}/n{i}.restart.log", "a")
    subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)


def wait(t0, pred, limit=30):
    while time.monotonic() - t0 < limit:
        if pred():
            return time.monotonic() - t0
        time.sleep(0.005)
    return float("nan")


nodes = {i: status(i) for i in (1, 2, 3)}
if not all(nodes.values()):
    sys.exit(f"not every node answers: {nodes}")
print("before:", [(s["id"], s["role"], s["applied_index"], s.get("checkpointed_index")) for s in nodes.values()])
leader = next(i for i, s in nodes.items() if s["role"] == "leader")
follower = next(i for i in (1, 2, 3) if i != leader)
for name, victims in [("a follower", [follower]), ("the leader", [leader]), ("all three", [1, 2, 3])]:
    for i in victims:
        os.kill(pid_of(i), signal.SIGKILL)
    time.sleep(0.3)
    t0 = time.monotonic()
    for i in victims:
        start(i)
    http = wait(t0, lambda: all(status(i) is not None for i in victims))
    read = wait(t0, lambda: all(linearizable_read(i) in (200, 404) for i in victims))
    print(f"{name} SIGKILLed and restarted: HTTP answering {http:.3f} s, "
          f"a linearizable read through it {read:.3f} s after the spawn", flush=True)
    time.sleep(2)
