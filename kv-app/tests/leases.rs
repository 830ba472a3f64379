//! Leases on real `kv-server` processes: a lease renewed across the kill
//! of its leader keeps its key, and once the renewals stop the key goes,
//! the same on every replica; revoke deletes the attached keys; keepalive
//! keeps them; malformed lease requests get a clear 400; every node's
//! `/metrics` counts leases the same, also after a restart.
//!
//! No assertion here depends on how fast anything happens: each checks the
//! safe direction (a key renewed in time is present) or waits, with a
//! generous deadline, for what must happen eventually (an unrenewed key
//! disappears).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{ProcCluster, WAIT};
use kv_client::api::Consistency;
use reqwest::Method;
use serde_json::Value;

/// Waits until `key` is gone (linearizable reads), or fails after [`WAIT`].
async fn wait_gone(c: &ProcCluster, key: &str) {
    let client = c.client();
    let deadline = Instant::now() + WAIT;
    while client.get(key, Consistency::Linearizable).await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "{key:?} outlived its lease by more than {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Reads `key` (linearizable) and asserts that it holds `value`.
async fn assert_present(c: &ProcCluster, key: &str, value: &[u8], when: &str) {
    let read = c.client().get(key, Consistency::Linearizable).await.unwrap();
    assert_eq!(read.map(|r| r.value), Some(value.to_vec()), "{key:?} {when}");
}

/// The leader is killed while the lease's owner keeps renewing it through
/// the client's background keeper. The key must be there before, during
/// and after the failover, for more than a TTL after the new leader took
/// over; once the keeper is dropped, it must go, on every replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_lease_survives_the_kill_of_its_leader_and_expires_once_renewals_stop() {
    let mut c = ProcCluster::start(3, &[]).await;
    let client = c.client();
    let ttl = Duration::from_secs(3);
    let id = client.lease_grant(ttl).await.unwrap().id;
    client.put_with_lease("owned", b"by-lease", id, None).await.unwrap();
    client.put("free", b"no-lease", None).await.unwrap();
    let keeper = client.keep_lease_alive(id, ttl);

    let old = c.leader().await;
    c.kill(old);
    let new = c.leader().await;
    assert_ne!(new, old);
    // More than a TTL under the new leader, reading all the while: a new
    // leader that expired the lease by the old one's renewal times, or by
    // its own clock without the full TTL, would delete the key here.
    let until = Instant::now() + ttl + Duration::from_secs(1);
    while Instant::now() < until {
        assert_present(&c, "owned", b"by-lease", "while the lease is being renewed").await;
        assert!(keeper.lost().is_none(), "the keeper lost the lease: {:?}", keeper.lost());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let listed = client.leases().await.unwrap();
    assert_eq!(listed.node, new, "the leader answers lease lists");
    let lease = listed.leases.iter().find(|l| l.id == id).expect("the lease is listed");
    assert!(lease.renewals > 0 && lease.key_count == 1, "{lease:?}");
    assert!(lease.remaining_ms <= lease.ttl_ms, "{lease:?}");

    drop(keeper);
    wait_gone(&c, "owned").await;
    assert_present(&c, "free", b"no-lease", "a key without a lease stays").await;
    assert_eq!(client.lease_info(id).await.unwrap(), None, "the expired lease is gone");
    let renewed = client.lease_keep_alive(id).await.unwrap_err();
    assert_eq!(renewed.code(), Some(kv_client::api::codes::LEASE_NOT_FOUND), "{renewed}");

    // The killed node comes back and catches up: every replica applied the
    // expiry at the same index and holds the same data.
    c.spawn(old, &[]);
    let at = client.put("last", b"write", None).await.unwrap().index;
    c.converge(at).await;
    for id in c.nodes.keys().copied().collect::<Vec<_>>() {
        let read = client.get_from(&c.nodes[&id].http.clone(), "owned", Consistency::Stale).await.unwrap();
        assert_eq!(read, None, "node {id} still holds the expired key");
    }
}

/// Revoke deletes the keys attached to the lease and only those; a
/// keepalive keeps a lease (and its key) past its TTL; lease reads are
/// answered by the leader, also when asked through a follower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_deletes_the_attached_keys_and_keepalive_keeps_them() {
    let c = ProcCluster::start(3, &[]).await;
    let client = c.client();
    let ttl = Duration::from_millis(1_000);
    let id = client.lease_grant(Duration::from_secs(60)).await.unwrap().id;
    for key in ["a", "b/1"] {
        client.put_with_lease(key, b"v", id, None).await.unwrap();
    }
    client.put("c", b"v", None).await.unwrap();

    let leader = c.leader().await;
    let follower = *c.nodes.keys().find(|&&n| n != leader).unwrap();
    let (status, body) = c.request(follower, Method::GET, &format!("/v1/leases/{id}"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["node"], leader, "a follower forwards lease reads to the leader: {body}");
    assert_eq!(body["keys"], serde_json::json!(["a", "b/1"]));
    assert_eq!(body["key_count"], 2);

    let revoked = client.lease_revoke(id).await.unwrap();
    assert_eq!(revoked.keys_deleted, Some(2));
    for key in ["a", "b/1"] {
        assert_eq!(client.get(key, None).await.unwrap(), None, "{key:?} was revoked with its lease");
    }
    assert_present(&c, "c", b"v", "after an unrelated revoke").await;
    let again = client.lease_revoke(id).await.unwrap_err();
    assert_eq!(again.code(), Some(kv_client::api::codes::LEASE_NOT_FOUND), "{again}");

    // Keepalive keeps: three TTLs of renewals, the key present throughout.
    let short = client.lease_grant(ttl).await.unwrap().id;
    client.put_with_lease("kept", b"v", short, None).await.unwrap();
    let until = Instant::now() + 3 * ttl;
    while Instant::now() < until {
        client.lease_keep_alive(short).await.unwrap();
        assert_present(&c, "kept", b"v", "while renewed").await;
        tokio::time::sleep(ttl / 4).await;
    }
    wait_gone(&c, "kept").await;
}

/// Every malformed lease request is refused with 400 and a JSON error
/// naming what is wrong; requests naming a lease that does not exist get
/// 404 `lease_not_found`; none of them changes anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_lease_requests_get_a_clear_400_and_unknown_leases_a_404() {
    let c = ProcCluster::start(1, &[]).await;
    let before = c.status(1).await.unwrap().state_digest;
    let bad: &[(Method, &str, Option<&str>, &str)] = &[
        (Method::POST, "/v1/leases", Some("not json"), "invalid JSON body"),
        (Method::POST, "/v1/leases", None, "invalid JSON body"),
        (Method::POST, "/v1/leases", Some(r#"{}"#), "ttl_ms"),
        (Method::POST, "/v1/leases", Some(r#"{"ttl_ms": "ten"}"#), "invalid JSON body"),
        (Method::POST, "/v1/leases", Some(r#"{"ttl_ms": 10}"#), "ttl_ms is 10; it must be 500 to 86400000"),
        (Method::POST, "/v1/leases", Some(r#"{"ttl_ms": 86400001}"#), "it must be 500 to 86400000"),
        (Method::POST, "/v1/leases", Some(r#"{"ttl_ms": 1000, "extra": 1}"#), "unknown field"),
        (
            Method::POST,
            "/v1/leases",
            Some(r#"{"ttl_ms": 1000, "client_id": 1}"#),
            "give both client_id and seq",
        ),
        (Method::POST, "/v1/leases?durability=leader", Some(r#"{"ttl_ms": 1000}"#), "durability=leader"),
        (Method::POST, "/v1/leases?lease=1", Some(r#"{"ttl_ms": 1000}"#), "lease= applies to PUT"),
        (Method::POST, "/v1/leases/abc/keepalive", None, "invalid lease id \"abc\""),
        (Method::POST, "/v1/leases/0/keepalive", None, "a lease id is a positive integer"),
        (Method::POST, "/v1/leases/1/keepalive", Some("{"), "invalid JSON body"),
        (Method::DELETE, "/v1/leases/-1", None, "invalid lease id"),
        (Method::GET, "/v1/leases/1.5", None, "invalid lease id"),
        (Method::PUT, "/v1/kv/k?lease=abc", Some(r#"{"value": "v"}"#), "invalid query"),
        (
            Method::PUT,
            "/v1/kv/k?lease=1&durability=leader",
            Some(r#"{"value": "v"}"#),
            "cannot attach a lease",
        ),
        (Method::DELETE, "/v1/kv/k?lease=1", None, "lease= applies to PUT only"),
        (Method::POST, "/v1/cas/k?lease=1", Some(r#"{"expect_absent": true, "value": "v"}"#), "PUT only"),
    ];
    for (method, path, body, says) in bad {
        let (status, answer) = c.request(1, method.clone(), path, *body).await;
        assert_eq!(status, 400, "{method} {path} {body:?}: {answer}");
        assert_eq!(answer["error"], "bad_request", "{method} {path}: {answer}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{method} {path}: {message:?} should say {says:?}");
    }

    let missing: &[(Method, &str, Option<&str>)] = &[
        (Method::POST, "/v1/leases/42/keepalive", None),
        (Method::DELETE, "/v1/leases/42", None),
        (Method::GET, "/v1/leases/42", None),
        (Method::PUT, "/v1/kv/k?lease=42", Some(r#"{"value": "v"}"#)),
    ];
    for (method, path, body) in missing {
        let (status, answer) = c.request(1, method.clone(), path, *body).await;
        assert_eq!(
            (status, &answer["error"]),
            (404, &Value::from("lease_not_found")),
            "{method} {path}: {answer}"
        );
    }
    assert_eq!(c.status(1).await.unwrap().state_digest, before, "no refused request changed the data");
    let (status, list) = c.request(1, Method::GET, "/v1/leases", None).await;
    assert_eq!((status, list["leases"].as_array().map(Vec::len)), (200, Some(0)), "{list}");
}

/// The lease lines of node `id`'s `/metrics`, by name.
async fn lease_metrics(c: &ProcCluster, id: u64) -> BTreeMap<String, u64> {
    let (status, body) = c.request(id, Method::GET, "/metrics", None).await;
    assert_eq!(status, 200, "{body}");
    let text = body.as_str().unwrap();
    text.lines()
        .filter(|l| l.starts_with("kv_lease"))
        .map(|l| {
            let (name, value) = l.split_once(' ').unwrap();
            (name.to_owned(), value.parse().unwrap_or_else(|e| panic!("{l:?}: {e}")))
        })
        .collect()
}

/// What every node must show, in the order `(leases, lease_keys, granted,
/// keepalives, revoked, expired)`.
fn figures(f: [u64; 6]) -> BTreeMap<String, u64> {
    let names = [
        "kv_leases",
        "kv_lease_keys",
        "kv_leases_granted_total",
        "kv_lease_keepalives_total",
        "kv_leases_revoked_total",
        "kv_leases_expired_total",
    ];
    names.iter().map(|n| n.to_string()).zip(f).collect()
}

/// Waits until every running node applied `index`, then checks each
/// one's lease figures.
async fn assert_figures(c: &ProcCluster, index: u64, expected: [u64; 6], when: &str) {
    c.converge(index).await;
    let expected = figures(expected);
    for id in c.nodes.keys() {
        assert_eq!(lease_metrics(c, *id).await, expected, "node {id} {when}");
    }
}

/// Grant, attach, keepalive, revoke and expiry each show in `/metrics`,
/// with the same numbers on the followers as on the leader (they are read
/// from the applied state), and a restarted node shows them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_metrics_are_the_same_on_every_node_and_survive_a_restart() {
    let mut c = ProcCluster::start(3, &[]).await;
    let client = c.client();
    let long = Duration::from_secs(120);
    let kept = client.lease_grant(long).await.unwrap().id;
    let revoked = client.lease_grant(long).await.unwrap().id;
    for key in ["k1", "k2"] {
        client.put_with_lease(key, b"v", kept, None).await.unwrap();
    }
    let at = client.put_with_lease("k3", b"v", revoked, None).await.unwrap().index;
    assert_figures(&c, at, [2, 3, 2, 0, 0, 0], "after two grants and three attached keys").await;

    client.lease_keep_alive(kept).await.unwrap();
    client.lease_keep_alive(kept).await.unwrap();
    client.lease_keep_alive(revoked).await.unwrap();
    // Refused: no such lease. Counts nothing.
    assert!(client.lease_keep_alive(9_999).await.is_err());
    assert_eq!(client.lease_revoke(revoked).await.unwrap().keys_deleted, Some(1));
    assert!(client.lease_revoke(revoked).await.is_err(), "revoked already");

    // A lease nobody renews, with a key: the leader expires it.
    let expiring = client.lease_grant(Duration::from_secs(3)).await.unwrap().id;
    client.put_with_lease("k4", b"v", expiring, None).await.unwrap();
    wait_gone(&c, "k4").await;
    let at = client.put("after", b"v", None).await.unwrap().index;
    let expected = [1, 2, 3, 3, 1, 1];
    assert_figures(&c, at, expected, "after keepalives, a revoke and an expiry").await;

    // The totals are kept in the state, not counted by the process.
    let leader = c.leader().await;
    let follower = *c.nodes.keys().find(|&&id| id != leader).unwrap();
    c.terminate(follower).await;
    c.spawn(follower, &[]);
    c.serving(follower).await;
    assert_figures(&c, at, expected, "after a follower restarted").await;
}

/// Regression: a client that used one `(client_id, seq)` for a put and
/// then for a lease grant (or the reverse) got `500 internal`, "invariant:
/// a lease write has a lease outcome": the session answered the second
/// write with the first one's remembered outcome, which the handler did
/// not expect. It is the client's mistake, and now a `409
/// sequence_reused` that changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seq_reused_across_a_key_write_and_a_lease_write_is_a_409_not_a_500() {
    let c = ProcCluster::start(1, &[]).await;
    let put = r#"{"value": "v", "client_id": 7, "seq": 1}"#;
    assert_eq!(c.request(1, Method::PUT, "/v1/kv/k", Some(put)).await.0, 200);
    let grant = r#"{"ttl_ms": 60000, "client_id": 8, "seq": 1}"#;
    let (status, body) = c.request(1, Method::POST, "/v1/leases", Some(grant)).await;
    assert_eq!(status, 200, "{body}");
    let before = c.status(1).await.unwrap().state_digest;

    let reused: &[(Method, &str, &str)] = &[
        (Method::POST, "/v1/leases", r#"{"ttl_ms": 60000, "client_id": 7, "seq": 1}"#),
        (Method::POST, "/v1/leases/1/keepalive", r#"{"client_id": 7, "seq": 1}"#),
        (Method::PUT, "/v1/kv/other", r#"{"value": "w", "client_id": 8, "seq": 1}"#),
        (Method::DELETE, "/v1/kv/k", r#"{"client_id": 8, "seq": 1}"#),
    ];
    for (method, path, body) in reused {
        let (status, answer) = c.request(1, method.clone(), path, Some(body)).await;
        assert_eq!(
            (status, &answer["error"]),
            (409, &Value::from("sequence_reused")),
            "{method} {path} {body}: {answer}"
        );
        assert!(answer["index"].as_u64().is_some(), "{answer}");
    }
    assert_eq!(c.status(1).await.unwrap().state_digest, before, "nothing was applied");
    let (_, list) = c.request(1, Method::GET, "/v1/leases", None).await;
    assert_eq!(list["leases"].as_array().map(Vec::len), Some(1), "one grant, not two: {list}");
    // A retry of the same write is still answered as a duplicate.
    let (status, answer) = c.request(1, Method::PUT, "/v1/kv/k", Some(put)).await;
    assert_eq!((status, &answer["duplicate"]), (200, &Value::from(true)), "{answer}");
}
