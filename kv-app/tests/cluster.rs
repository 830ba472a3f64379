//! Real `kv-server` processes on 127.0.0.1: forwarding, leader failure, a
//! leader's graceful stop, read consistency levels, durability levels (with the rollback record of a
//! lost `leader`-durable write), exactly-once writes,
//! membership changes, log compaction and snapshot catch-up.

mod common;

use std::time::Duration;

use common::ProcCluster;
use kv_client::api::{Consistency, Durability};
use reqwest::Method;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_forwards_writes_and_leader_crash_loses_no_acknowledged_write() {
    let mut c = ProcCluster::start(3, &[]).await;
    let leader = c.leader().await;
    let follower = *c.nodes.keys().find(|id| **id != leader).unwrap();

    let (status, body) =
        c.request(follower, Method::PUT, "/v1/kv/via-follower", Some(r#"{"value":"x"}"#)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["node"], leader, "the write was forwarded to and committed by the leader");

    let client = c.client();
    for i in 0..100 {
        client.put(&format!("before/{i}"), b"v", None).await.unwrap();
    }
    c.kill(leader);
    let client = c.client(); // the survivors only
    let mut last = 0;
    for i in 0..100 {
        last = client.put(&format!("after/{i}"), b"v", None).await.unwrap().index;
    }
    let new_leader = c.leader().await;
    assert_ne!(new_leader, leader);
    for i in 0..100 {
        for key in [format!("before/{i}"), format!("after/{i}")] {
            let read = client.get(&key, Consistency::Linearizable).await.unwrap();
            assert!(read.is_some(), "acknowledged write {key} was lost");
        }
    }

    c.spawn(leader, &[]);
    c.converge(last).await;
    let s = c.status(leader).await.unwrap();
    assert_ne!(s.role, "leader");
    assert!(s.applied_index >= last, "the restarted node caught up: {s:?}");
}

/// SIGTERM is a graceful stop: the leader hands its leadership to a
/// caught-up voter before it exits, so a put through a survivor succeeds at
/// once, and a client writing throughout loses and duplicates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_the_leader_hands_off_and_the_next_put_through_a_survivor_succeeds() {
    const WRITES: usize = 200;
    let mut c = ProcCluster::start(3, &[]).await;
    let leader = c.leader().await;
    let old_term = c.status(leader).await.unwrap().term;
    // One client writes under its session throughout (retrying as it must).
    let client = c.client();
    let writer = tokio::spawn(async move {
        for i in 0..WRITES {
            client.put(&format!("w/{i:03}"), b"v", None).await.unwrap();
        }
    });
    while c.status(leader).await.is_some_and(|s| s.applied_index < 20) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    c.terminate(leader).await;

    // The old leader handed off before it stopped (an election after a
    // timeout would log no such line) ...
    let log = common::strip_ansi(&c.log(leader));
    let line = log.lines().find(|l| l.contains("handed leadership off")).unwrap_or_else(|| panic!("{log}"));
    let survivors: Vec<u64> = c.nodes.keys().copied().filter(|id| *id != leader).collect();
    let new = survivors.iter().copied().find(|id| line.contains(&format!("leader={id}"))).unwrap();
    assert_eq!(c.status(new).await.map(|s| (s.role, s.term)), Some(("leader".into(), old_term + 1)));
    // ... so the very next put through either survivor succeeds, with no
    // retry: one request each.
    for id in survivors {
        let (status, body) =
            c.request(id, Method::PUT, "/v1/kv/after-sigterm", Some(r#"{"value":"x"}"#)).await;
        assert_eq!(status, 200, "put through node {id}: {body}");
        assert_eq!(body["node"], new);
    }
    writer.await.unwrap();
    let client = c.client();
    let listed = client.list("w/", Some(WRITES + 1), Consistency::Linearizable).await.unwrap();
    assert_eq!(listed.items.len(), WRITES, "every acknowledged write is there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_linearizable_and_stale_reads_on_a_follower() {
    let c = ProcCluster::start(3, &[]).await;
    let leader = c.leader().await;
    let follower = *c.nodes.keys().find(|id| **id != leader).unwrap();
    let f_addr = c.nodes[&follower].http.clone();
    let client = c.client();

    let w = client.put("mine", b"1", None).await.unwrap();
    assert!(client.session_token() >= w.index);
    // Read-your-writes on a follower: it waits until it applied the token.
    let r = client.get_from(&f_addr, "mine", Consistency::Session).await.unwrap().unwrap();
    assert_eq!((r.value.as_slice(), r.node), (&b"1"[..], follower));
    assert!(r.index >= w.index, "a session read reflects the client's write");

    // A linearizable read served by the follower itself, after the leader's read index.
    client.put("mine", b"2", None).await.unwrap();
    let r = client.get_from(&f_addr, "mine", Consistency::Linearizable).await.unwrap().unwrap();
    assert_eq!((r.value.as_slice(), r.node), (&b"2"[..], follower));

    // A stale read states how far the node's state reaches.
    let r = client.get_from(&f_addr, "mine", Consistency::Stale).await.unwrap().unwrap();
    assert_eq!(r.node, follower);
    assert!(r.committed_index >= r.index, "lag = committed_index - index is never negative: {r:?}");

    // The leader reports each follower's matched index, lag, and how long
    // ago it last answered (polled: a leader elected a moment ago has not
    // heard from every follower yet).
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        let s = c.status(c.leader().await).await.unwrap();
        if s.followers.len() == 2 && s.followers.iter().all(|f| f.matched_index.is_some()) {
            assert!(s.followers.iter().all(|f| f.lag <= s.last_log_index), "{s:?}");
            // Both answer every heartbeat: well within ten seconds.
            assert!(s.followers.iter().all(|f| f.answered_ms_ago.is_some_and(|ms| ms < 10_000)), "{s:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the leader never reported both followers: {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durability_all_waits_while_a_voter_is_down() {
    let mut c = ProcCluster::start(3, &[]).await;
    let leader = c.leader().await;
    let follower = *c.nodes.keys().find(|id| **id != leader).unwrap();
    c.kill(follower);

    let (status, body) =
        c.request(leader, Method::PUT, "/v1/kv/sync?durability=all", Some(r#"{"value":"a"}"#)).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"], "not_fully_replicated");
    assert!(body["index"].as_u64().unwrap() > 0, "the write is committed and says where: {body}");
    let (status, body) = c.request(leader, Method::PUT, "/v1/kv/async", Some(r#"{"value":"b"}"#)).await;
    assert_eq!(status, 200, "majority durability does not wait for the missing voter: {body}");

    c.spawn(follower, &[]);
    let client = c.client();
    let w = client.put("sync", b"c", Durability::All).await.unwrap();
    assert!(w.index > 0);
}

/// Sends SIGSTOP (`pause`) or SIGCONT to node `id`.
fn signal(c: &ProcCluster, id: u64, pause: bool) {
    let child = c.nodes[&id].child.as_ref().unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let sig = if pause { nix::sys::signal::Signal::SIGSTOP } else { nix::sys::signal::Signal::SIGCONT };
    nix::sys::signal::kill(pid, sig).unwrap();
    // A stop takes effect when each thread next runs in the kernel, not
    // when kill returns: wait until every thread is stopped, or a loaded
    // machine lets a "paused" follower take the leader's next entry.
    let start = std::time::Instant::now();
    while pause && !all_threads_stopped(child.id()) {
        assert!(start.elapsed() < common::WAIT, "node {id} did not stop");
        std::thread::sleep(Duration::from_millis(1));
    }
    if pause {
        eprintln!("node {id} stopped {:?} after the signal", start.elapsed());
    }
}

/// Whether every thread of process `pid` is stopped (state `T` in
/// `/proc/<pid>/task/<tid>/stat`).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.flatten().all(|task| {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // The state follows the command name, which is in parentheses.
        stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('t'))
    })
}

/// `durability=leader`, end to end on real processes: a put is answered
/// while both followers are paused (SIGSTOP), so no follower has it and it
/// is not committed. Then every node crashes: the leader, and the paused
/// followers with the leader's AppendEntries still unread in their
/// sockets (a follower merely resumed would read them, and keep the put).
/// The followers restart and elect a new leader, whose log lacks the put;
/// the old leader comes back, removes the entry from its log, and keeps
/// it in a rollback record that the admin API shows, decoded and flagged
/// as acknowledged. (`raft-core/tests/partition.rs` loses such a write to
/// a partition instead.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_durable_put_lost_in_a_failover_is_kept_in_a_rollback_record() {
    let mut c = ProcCluster::start(3, &[]).await;
    let (status, body) = c
        .request(
            c.leader().await,
            Method::POST,
            "/v1/cas/k?durability=leader",
            Some(r#"{"value":"x","expect_absent":true}"#),
        )
        .await;
    assert_eq!(status, 400, "a CAS cannot be acknowledged before it is applied: {body}");
    assert!(body["message"].as_str().unwrap().contains("durability=leader"), "{body}");

    // The leader acknowledges within its lease after the followers stop
    // answering (half the election timeout here); a slow machine may miss
    // that window, so try a few times. Each try writes its own key under its
    // own session: a try that was not acknowledged may still commit once
    // the followers resume.
    let mut acknowledged = None;
    for attempt in 0..5u64 {
        let leader = c.leader().await;
        let followers: Vec<u64> = c.nodes.keys().copied().filter(|id| *id != leader).collect();
        for f in &followers {
            signal(&c, *f, true);
        }
        let key = format!("lost-{attempt}");
        let session_put = format!(r#"{{"value":"v","client_id":{},"seq":1}}"#, 77 + attempt);
        let path = format!("/v1/kv/{key}?durability=leader");
        let (status, body) = c.request(leader, Method::PUT, &path, Some(&session_put)).await;
        eprintln!("try {attempt}: leader {leader}, {status} {body}");
        if status == 200 {
            acknowledged = Some((leader, followers, body, key, session_put, 77 + attempt));
            break;
        }
        for f in &followers {
            signal(&c, *f, false);
        }
    }
    let (old, followers, body, key, session_put, client_id) =
        acknowledged.expect("a leader-durable put is acknowledged while followers pause");
    assert_eq!(body["committed"], false, "{body}");
    assert_eq!(body["node"], old, "{body}");
    let index = body["index"].as_u64().unwrap();

    c.kill(old);
    for f in &followers {
        c.kill(*f);
        c.spawn(*f, &[]);
    }
    let client = c.client();
    let after = client.put("after", b"new", None).await.unwrap();
    for id in c.nodes.keys() {
        eprintln!("after {after:?}: node {id}: {:?}", c.status(*id).await);
    }
    let (status, _) = c.request(after.node, Method::GET, &format!("/v1/kv/{key}"), None).await;
    assert_eq!(status, 404, "the new leader never had the put");
    c.spawn(old, &[]);
    c.serving(old).await;
    c.converge(after.index).await;

    let (status, list) = c.request(old, Method::GET, "/v1/cluster/rollback", None).await;
    assert_eq!(status, 200, "{list}");
    let records = list["records"].as_array().unwrap();
    let holding: Vec<_> = records
        .iter()
        .filter(|r| r["first_index"].as_u64() <= Some(index) && Some(index) <= r["last_index"].as_u64())
        .collect();
    assert_eq!(holding.len(), 1, "one record holds the lost entry: {list}");
    assert_eq!(holding[0]["acknowledged_writes"], 1, "{list}");
    let id = holding[0]["id"].as_u64().unwrap();
    let (status, record) = c.request(old, Method::GET, &format!("/v1/cluster/rollback/{id}"), None).await;
    assert_eq!(status, 200, "{record}");
    let entry =
        record["entries"].as_array().unwrap().iter().find(|e| e["index"] == index).expect("the entry");
    assert_eq!(entry["acknowledged"], true, "{record}");
    assert_eq!(entry["writes"][0]["op"], "put", "{record}");
    assert_eq!(entry["writes"][0]["key"], key.as_str(), "{record}");
    assert_eq!(entry["writes"][0]["value"]["value"], "v", "{record}");
    assert_eq!(
        (&entry["writes"][0]["client_id"], &entry["writes"][0]["seq"]),
        (&client_id.into(), &1.into()),
        "{record}"
    );
    // A try that was not acknowledged and lost its leadership may have left
    // a record elsewhere, but no acknowledged write is in one.
    for f in &followers {
        let (_, list) = c.request(*f, Method::GET, "/v1/cluster/rollback", None).await;
        let acknowledged: u64 = list["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["acknowledged_writes"].as_u64().unwrap())
            .sum();
        assert_eq!(acknowledged, 0, "node {f} never acknowledged a lost write: {list}");
    }
    let (status, _) = c.request(old, Method::GET, "/v1/cluster/rollback/99999", None).await;
    assert_eq!(status, 404);
    let (status, _) = c.request(old, Method::GET, &format!("/v1/kv/{key}?consistency=stale"), None).await;
    assert_eq!(status, 404, "the lost put is applied nowhere");

    // The client retries under the same session: applied once, then a
    // duplicate.
    let new = c.settled().await;
    let path = format!("/v1/kv/{key}");
    let (status, body) = c.request(new, Method::PUT, &path, Some(&session_put)).await;
    assert_eq!((status, &body["duplicate"], &body["created"]), (200, &false.into(), &true.into()), "{body}");
    let (status, body) = c.request(new, Method::PUT, &path, Some(&session_put)).await;
    assert_eq!((status, &body["duplicate"]), (200, &true.into()), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_write_is_applied_once() {
    let c = ProcCluster::start(3, &[]).await;
    let leader = c.leader().await;
    let put = r#"{"value":"first","client_id":7,"seq":1}"#;
    let (s1, b1) = c.request(leader, Method::PUT, "/v1/kv/once", Some(put)).await;
    let (s2, b2) = c.request(leader, Method::PUT, "/v1/kv/once", Some(put)).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!((b1["duplicate"].as_bool(), b2["duplicate"].as_bool()), (Some(false), Some(true)));
    assert!(b2["index"].as_u64() >= b1["index"].as_u64(), "the retry answers with a token at least as new");

    // A create-if-absent CAS, retried after another client changed the key:
    // re-applying it would fail (the key exists); dedup returns the original
    // success, and the other client's value stays.
    let cas = r#"{"expect_absent":true,"value":"mine","client_id":9,"seq":1}"#;
    let (s, b) = c.request(leader, Method::POST, "/v1/cas/lock", Some(cas)).await;
    assert_eq!((s, b["succeeded"].as_bool()), (200, Some(true)), "{b}");
    let (s, _) = c.request(leader, Method::PUT, "/v1/kv/lock", Some(r#"{"value":"theirs"}"#)).await;
    assert_eq!(s, 200);
    let (s, b) = c.request(leader, Method::POST, "/v1/cas/lock", Some(cas)).await;
    assert_eq!((s, b["succeeded"].as_bool(), b["duplicate"].as_bool()), (200, Some(true), Some(true)), "{b}");
    let (_, b) = c.request(leader, Method::GET, "/v1/kv/lock", None).await;
    assert_eq!(b["value"], "theirs", "the retry was not applied again");

    // An older seq after a newer one is refused, and changes nothing.
    let newer = r#"{"value":"two","client_id":7,"seq":2}"#;
    assert_eq!(c.request(leader, Method::PUT, "/v1/kv/once", Some(newer)).await.0, 200);
    let (s, b) = c.request(leader, Method::PUT, "/v1/kv/once", Some(put)).await;
    assert_eq!((s, b["error"].as_str()), (409, Some("stale_sequence")), "{b}");
    let (_, b) = c.request(leader, Method::GET, "/v1/kv/once", None).await;
    assert_eq!(b["value"], "two");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_node_joins_and_a_voter_is_removed() {
    let mut c = ProcCluster::start(3, &[]).await;
    let client = c.client();
    for i in 0..50 {
        client.put(&format!("k{i}"), b"v", None).await.unwrap();
    }
    c.add_node(4);
    let via = c.nodes[&1].http.clone();
    c.spawn(4, &["--join", &via]);
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        if let Some(s) = c.status(4).await {
            if s.voters.contains(&4) && s.applied_index > 50 {
                break;
            }
        }
        assert!(std::time::Instant::now() < deadline, "node 4 did not become a voter");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let leader = c.leader().await;
    let victim = *[1, 2, 3].iter().find(|id| **id != leader).unwrap();
    // Node 4 counts itself a voter from the joint configuration on; until
    // the final one commits, another change is refused as retryable.
    let (status, body) = loop {
        let (status, body) =
            c.request(4, Method::DELETE, &format!("/v1/cluster/members/{victim}"), None).await;
        if status != 409 || body["retryable"] != true || std::time::Instant::now() > deadline {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status, 200, "removal via a follower is forwarded: {body}");
    c.kill(victim);
    let (_, members) = c.request(leader, Method::GET, "/v1/cluster/members", None).await;
    let ids: Vec<u64> =
        members["members"].as_array().unwrap().iter().map(|m| m["id"].as_u64().unwrap()).collect();
    assert!(!ids.contains(&victim) && ids.contains(&4), "{members}");

    let w = c.client().put("after-removal", b"v", None).await.unwrap();
    c.converge(w.index).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_stays_bounded_and_a_lagging_node_catches_up_by_snapshot() {
    // Concurrent writes share log entries (group commit), so 20,000 writes
    // make far fewer entries: snapshot often to see purging.
    let mut c = ProcCluster::start(3, &["--snapshot-every", "200", "--snapshot-keep-entries", "50"]).await;
    let leader = c.leader().await;
    let lagging = *c.nodes.keys().find(|id| **id != leader).unwrap();
    c.kill(lagging);

    let endpoints = c.endpoints();
    let mut tasks = Vec::new();
    for t in 0..32 {
        let client = kv_client::client::Client::new(endpoints.clone()).unwrap();
        tasks.push(tokio::spawn(async move {
            let mut last = 0;
            for i in 0..(20_000 / 32 + 1) {
                last = client
                    .put(&format!("k{}", (t * 1000 + i) % 5000), b"some value", None)
                    .await
                    .unwrap()
                    .index;
            }
            last
        }));
    }
    let mut last = 0;
    for t in tasks {
        last = last.max(t.await.unwrap());
    }
    let s = c.status(leader).await.unwrap();
    let purged = s.purged_index.unwrap_or(0);
    assert!(purged > 500, "the leader purged its log behind snapshots: {s:?}");
    // At most: snapshot interval + entries kept behind it + one purge batch.
    assert!(s.last_log_index - purged <= 200 + 50 + 200 + 50, "log bounded: {s:?}");

    c.spawn(lagging, &[]);
    c.converge(last).await;
    let s = c.status(lagging).await.unwrap();
    assert!(s.snapshot_index.unwrap_or(0) > purged, "caught up by installing a snapshot: {s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let c = ProcCluster::start(1, &["--max-value-bytes", "1024"]).await;
    let (s, _) = c.request(1, Method::PUT, "/v1/kv/existing", Some(r#"{"value":"v"}"#)).await;
    assert_eq!(s, 200);
    let before = c.status(1).await.unwrap();

    let long_key = "k".repeat(4097);
    let big_value = format!(r#"{{"value":"{}"}}"#, "x".repeat(1025));
    let cases: Vec<(Method, String, Option<String>, u16, &str)> = vec![
        (Method::PUT, "/v1/kv/a".into(), Some("{not json".into()), 400, "bad_request"),
        (Method::PUT, "/v1/kv/a".into(), Some(r#"{"valu":"typo"}"#.into()), 400, "bad_request"),
        (Method::PUT, "/v1/kv/a".into(), Some(r#"{"value_b64":"***"}"#.into()), 400, "bad_request"),
        (Method::PUT, "/v1/kv/a".into(), Some(r#"{"value":"v","client_id":1}"#.into()), 400, "bad_request"),
        (
            Method::PUT,
            "/v1/kv/a".into(),
            Some(r#"{"value":"v","client_id":1,"seq":0}"#.into()),
            400,
            "bad_request",
        ),
        (Method::PUT, "/v1/kv/%FF%FE".into(), Some(r#"{"value":"v"}"#.into()), 400, "bad_request"),
        (Method::PUT, format!("/v1/kv/{long_key}"), Some(r#"{"value":"v"}"#.into()), 413, "too_large"),
        (Method::PUT, "/v1/kv/a".into(), Some(big_value), 413, "too_large"),
        (
            Method::PUT,
            "/v1/kv/a?durability=sometimes".into(),
            Some(r#"{"value":"v"}"#.into()),
            400,
            "bad_request",
        ),
        (Method::GET, "/v1/kv/existing?consistency=eventual".into(), None, 400, "bad_request"),
        (Method::GET, "/v1/kv/existing?token=abc".into(), None, 400, "bad_request"),
        (Method::GET, "/v1/kv?limit=0".into(), None, 400, "bad_request"),
        (
            Method::POST,
            "/v1/cas/a".into(),
            Some(r#"{"expected":"x","expect_absent":true,"value":"v"}"#.into()),
            400,
            "bad_request",
        ),
        (Method::POST, "/v1/cas/a".into(), Some(r#"{"value":"v"}"#.into()), 400, "bad_request"),
        (Method::POST, "/v1/cluster/members/42/promote".into(), None, 404, "unknown_node"),
        (Method::DELETE, "/v1/cluster/members/42".into(), None, 404, "unknown_node"),
        (Method::DELETE, "/v1/cluster/members/nope".into(), None, 400, "bad_request"),
        (Method::POST, "/v1/cluster/learners".into(), Some(r#"{"id":5}"#.into()), 400, "bad_request"),
        (Method::GET, "/v1/nothing-here".into(), None, 404, "not_found"),
        (Method::PATCH, "/v1/kv/a".into(), None, 405, "method_not_allowed"),
    ];
    for (method, path, body, want_status, want_code) in cases {
        let (status, reply) = c.request(1, method.clone(), &path, body.as_deref()).await;
        let shown = &path[..path.len().min(60)];
        assert_eq!(status, want_status, "{method} {shown}: {reply}");
        assert_eq!(reply["error"], want_code, "{method} {shown}: {reply}");
        assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()), "{method} {shown}: {reply}");
    }

    let after = c.status(1).await.unwrap();
    assert_eq!(after.last_log_index, before.last_log_index, "nothing was proposed");
    assert_eq!(after.state_digest, before.state_digest, "nothing changed");
    let (s, b) = c.request(1, Method::GET, "/v1/kv/existing", None).await;
    assert_eq!((s, b["value"].as_str()), (200, Some("v")), "the server still serves");
}

/// A node that answers on its Raft port but is not the node asked for (a
/// node of another cluster, or a member under another id) is refused with a
/// 409 before anything is proposed: the membership and the log stay as
/// they were. Before, the learner was added and the request waited for it
/// to catch up until the change timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_a_node_of_another_cluster_or_under_another_id_is_refused() {
    let c = ProcCluster::start(3, &[]).await;
    let other = ProcCluster::start(1, &["--cluster-id", "another-cluster"]).await;
    let leader = c.leader().await;
    let before = c.status(leader).await.unwrap();
    let (_, members_before) = c.request(leader, Method::GET, "/v1/cluster/members", None).await;

    let foreign = &other.nodes[&1];
    let member = &c.nodes[&(leader % 3 + 1)];
    let cases = [
        (4, foreign.raft.clone(), foreign.http.clone(), "cluster id mismatch"),
        (5, member.raft.clone(), member.http.clone(), &*format!("this is node {}, not node 5", member.id)),
    ];
    for (id, raft_addr, api_addr, why) in cases {
        let body = serde_json::json!({"id": id, "raft_addr": raft_addr, "api_addr": api_addr}).to_string();
        let (status, reply) = c.request(leader, Method::POST, "/v1/cluster/learners", Some(&body)).await;
        assert_eq!(status, 409, "node {id} at {raft_addr}: {reply}");
        assert_eq!(reply["error"], "conflict", "{reply}");
        let message = reply["message"].as_str().unwrap_or_default();
        assert!(message.contains(why) && message.contains("nothing changed"), "{message}");
    }

    let after = c.status(leader).await.unwrap();
    assert_eq!(after.last_log_index, before.last_log_index, "nothing was proposed");
    let (_, members_after) = c.request(leader, Method::GET, "/v1/cluster/members", None).await;
    assert_eq!(members_after, members_before);
    c.client().put("still-writable", b"v", None).await.unwrap();
}

/// How many `POST /v1/internal/read-index` requests node `id` has served
/// (from its `/metrics`).
async fn read_index_requests(c: &ProcCluster, id: u64) -> u64 {
    let (status, body) = c.request(id, Method::GET, "/metrics", None).await;
    assert_eq!(status, 200);
    let text = body.as_str().unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("kv_http_requests_total{") && l.contains(r#"route="/v1/internal/read-index""#)
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followers_concurrent_linearizable_reads_share_read_index_questions() {
    let c = ProcCluster::start(3, &[]).await;
    let leader = c.leader().await;
    let follower = *c.nodes.keys().find(|id| **id != leader).unwrap();
    let w = c.client().put("x", b"1", None).await.unwrap();
    let before = read_index_requests(&c, leader).await;

    let reads = 64;
    let path = "/v1/kv/x?consistency=linearizable";
    let answers =
        futures::future::join_all((0..reads).map(|_| c.request(follower, Method::GET, path, None))).await;
    for (status, body) in answers {
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["value"], "1", "{body}");
        assert!(body["index"].as_u64().unwrap() >= w.index, "{body}");
    }
    let asked = read_index_requests(&c, leader).await - before;
    assert!(asked >= 1, "the follower never asked the leader");
    assert!(asked < reads, "{reads} concurrent reads asked the leader {asked} times: no batching");
}
