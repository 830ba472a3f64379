#!/usr/bin/env python3
"""Time from stopping a cluster's leader to the first successful put, with http.client.

A second, lighter prober than `kvctl bench failover` (see docs/benchmarks.md),
to check that its numbers do not depend on its own HTTP stack. Against a
3-node kv or etcd cluster already running on this machine, each round:

  1. find the leader (kv: GET /v1/cluster/status; etcd: POST /v3/maintenance/status);
  2. every --interval-ms, start one thread per other node that sends it a put
     on a new connection (open loop: nobody waits for earlier answers);
  3. after 300 ms and a random part of an interval, send the leader SIGTERM
     (or SIGKILL) and record the time from the signal to the first successful
     answer to a put sent after it;
  4. start the stopped process again with its own command line, working
     directory and log (read from /proc), and wait until every node names the
     same leader.

Usage:
  scripts/failover-probe.py --target kv --endpoints 127.0.0.1:8080,127.0.0.1:8081,127.0.0.1:8082
  scripts/failover-probe.py --target etcd --endpoints 127.0.0.1:2379,... --rounds 10 --stop term
Options: --rounds N (10), --stop term|kill (term), --interval-ms MS (10),
  --cluster-json FILE: kv started by `kvctl cluster up --dir D`: D/cluster.json,
  whose pids are updated as nodes restart, so `kvctl cluster down` still stops them.
Linux only (/proc). Restarted nodes keep running after the script exits, as before it.
"""
import argparse, base64, http.client, json, math, os, random, signal, subprocess, sys, threading, time


def request(ep, method, path, body=None):
    host, port = ep.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=2)
    try:
        conn.request(method, path, body=body, headers={"content-type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def leader_of(target, ep):
    """The leader `ep` names (kv: a node id; etcd: a member id), and whether it is `ep`."""
    if target == "kv":
        s = json.loads(request(ep, "GET", "/v1/cluster/status")[1])
        return s["leader"], s["role"] == "leader"
    s = json.loads(request(ep, "POST", "/v3/maintenance/status", b"{}")[1])
    return s.get("leader"), s.get("leader") == s["header"]["member_id"]


def settled_leader(target, eps, wait=60):
    """The endpoint of the leader, once every node names it."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            views = [leader_of(target, ep) for ep in eps]
            leaders = [ep for ep, (_, me) in zip(eps, views) if me]
            if len(leaders) == 1 and len({named for named, _ in views}) == 1:
                return leaders[0]
        except (OSError, ValueError, KeyError, http.client.HTTPException):
            pass
        time.sleep(0.05)
    sys.exit(f"no leader that every node names within {wait} s")


def put(target, ep, n):
    key = f"failover-probe/{n}"
    if target == "kv":
        return request(ep, "PUT", "/v1/kv/" + key, b'{"value":"x"}')[0] == 200
    body = json.dumps({"key": base64.b64encode(key.encode()).decode(), "value": "eA=="}).encode()
    return request(ep, "POST", "/v3/kv/put", body)[0] == 200


def process_of(ep):
    """pid, argv, cwd and log path (or None) of the kv-server or etcd serving `ep`."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[:-1]
            if argv and os.path.basename(argv[0]) in (b"kv-server", b"etcd") and (
                ep.encode() in argv or b"http://" + ep.encode() in argv
            ):
                log = os.readlink(f"/proc/{pid}/fd/2")
                return int(pid), argv, os.readlink(f"/proc/{pid}/cwd"), log if log.startswith("/") else None
        except OSError:
            continue
    sys.exit(f"no kv-server or etcd process serves {ep}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--target", choices=["kv", "etcd"], required=True)
    p.add_argument("--endpoints", required=True)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--stop", choices=["term", "kill"], default="term")
    p.add_argument("--interval-ms", type=float, default=10)
    p.add_argument("--cluster-json")
    args = p.parse_args()
    eps = [e.removeprefix("http://") for e in args.endpoints.split(",")]
    sig = signal.SIGTERM if args.stop == "term" else signal.SIGKILL
    children, samples, serial = {}, [], iter(range(1 << 62))
    for rnd in range(1, args.rounds + 1):
        lead = settled_leader(args.target, eps)
        pid, argv, cwd, log = process_of(lead)
        results, stop = [], threading.Event()

        def probe(ep, n):
            sent = time.monotonic()
            try:
                ok = put(args.target, ep, n)
            except (OSError, http.client.HTTPException):
                ok = False
            results.append((sent, time.monotonic(), ok))

        survivors = [e for e in eps if e != lead]

        def ticker():
            due = time.monotonic()
            while not stop.is_set():
                for ep in survivors:
                    threading.Thread(target=probe, args=(ep, next(serial)), daemon=True).start()
                due += args.interval_ms / 1000
                time.sleep(max(0.0, due - time.monotonic()))

        tick = threading.Thread(target=ticker)
        tick.start()
        time.sleep(0.3 + random.uniform(0, args.interval_ms / 1000))  # the signal at a random phase
        if not any(ok for _, _, ok in list(results)):
            stop.set()
            sys.exit(f"round {rnd}: no put succeeded before the signal")
        t0 = time.monotonic()
        os.kill(pid, sig)
        first = None
        while first is None and time.monotonic() < t0 + 10:
            done = [d for s, d, ok in list(results) if ok and s >= t0]
            first = min(done) - t0 if done else None
            time.sleep(0.001)
        stop.set()
        tick.join()
        print(f"{args.target} round {rnd}/{args.rounds}: leader {lead}, first put after "
              + (f"{first * 1000:.1f} ms" if first is not None else "none within 10 s"), file=sys.stderr)
        if first is not None:
            samples.append(first * 1000)
        if pid in children:
            children.pop(pid).wait()
        while os.path.exists(f"/proc/{pid}"):
            time.sleep(0.01)
        out = open(log, "ab") if log else subprocess.DEVNULL
        child = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                 start_new_session=True)
        children[child.pid] = child
        if args.cluster_json:
            with open(args.cluster_json) as f:
                cluster = json.load(f)
            for node in cluster["nodes"]:
                node["pid"] = child.pid if node["http_addr"] == lead else node["pid"]
            with open(args.cluster_json, "w") as f:
                json.dump(cluster, f, indent=2)
        settled_leader(args.target, eps)
    samples.sort()

    def rank(q):  # nearest rank, as an HDR histogram reports it
        return samples[max(0, math.ceil(len(samples) * q) - 1)] if samples else math.nan

    print(f"{args.target}: {len(samples)} rounds, SIG{args.stop.upper()}, probes every {args.interval_ms:g} ms; "
          f"p50 {rank(0.5):.1f} ms, p90 {rank(0.9):.1f} ms, min {rank(0):.1f} ms, max {rank(1):.1f} ms, "
          f"failed {args.rounds - len(samples)}")
    sys.exit(1 if len(samples) < args.rounds else 0)


if __name__ == "__main__":
    main()
