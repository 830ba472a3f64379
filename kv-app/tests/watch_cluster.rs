//! The change stream on three `kv-server` processes: a follower serves a
//! watch; a watcher whose node is killed under it resumes on another node,
//! and what it delivers equals, change for change, an uninterrupted watch
//! of the leader; a node restarted from a checkpoint keeps history only
//! after it, answers 410 for older indexes, and the client library finds a
//! node that still has them.

mod common;

use std::time::Duration;

use common::ProcCluster;
use kv_client::api::{codes, WatchEvent};
use kv_client::client::{Client, ClientOptions, Watch, WatchOptions};
use reqwest::Method;

/// Puts `w/000`.. for the numbers in `range`, by 8 writers at once, so
/// that the leader puts several into one log entry (the changes of one
/// index).
async fn write(client: &Client, range: std::ops::Range<usize>) {
    let keys: Vec<usize> = range.collect();
    let tasks: Vec<_> = keys
        .chunks(keys.len().div_ceil(8))
        .map(|chunk| {
            let (client, chunk) = (client.clone(), chunk.to_vec());
            tokio::spawn(async move {
                for i in chunk {
                    client.put(&format!("w/{i:03}"), format!("v{i}").as_bytes(), None).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

async fn take(watch: &mut Watch, n: usize) -> Vec<WatchEvent> {
    let mut events = Vec::with_capacity(n);
    while events.len() < n {
        events.push(watch.next().await.unwrap());
    }
    events
}

fn client_of(endpoints: Vec<String>) -> Client {
    let options = ClientOptions { deadline: Duration::from_secs(20), ..ClientOptions::default() };
    Client::with_options(endpoints, options).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumed_on_another_node_after_its_node_dies_misses_and_repeats_nothing() {
    const KEYS: usize = 200;
    let mut c = ProcCluster::start(3, &["--checkpoint-every", "50", "--watch-progress-ms", "200"]).await;
    let leader = c.leader().await;
    let followers: Vec<u64> = c.nodes.keys().copied().filter(|id| *id != leader).collect();
    let (f1, f2) = (followers[0], followers[1]);
    let addrs: std::collections::BTreeMap<u64, String> =
        c.nodes.values().map(|n| (n.id, n.http.clone())).collect();
    let http = |id: u64| addrs[&id].clone();

    // The watcher starts on a follower, and knows the other follower.
    let watcher = client_of(vec![http(f1), http(f2)]);
    let from_one = WatchOptions { from_index: Some(1), prev: true, ..WatchOptions::default() };
    let mut watch = watcher.watch("w/", from_one.clone()).await.unwrap();
    assert_eq!(watch.endpoint(), Some(format!("http://{}", http(f1)).as_str()), "a follower serves it");

    let writer = c.client();
    write(&writer, 0..KEYS / 2).await;
    let mut got = take(&mut watch, KEYS / 4).await;
    // SIGKILL: the connection breaks wherever the stream was.
    c.kill(f1);
    write(&c.client(), KEYS / 2..KEYS).await;
    got.extend(take(&mut watch, KEYS - KEYS / 4).await);
    assert!(watch.reconnects() >= 1);
    assert_eq!(watch.endpoint(), Some(format!("http://{}", http(f2)).as_str()));

    // The same stream, uninterrupted, from the leader.
    let mut reference = client_of(vec![http(leader)]).watch("w/", from_one.clone()).await.unwrap();
    let expected = take(&mut reference, KEYS).await;
    assert_eq!(got, expected);
    let mut keys: Vec<&str> = got.iter().map(|e| e.key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), KEYS, "every put once");
    assert!(got.windows(2).all(|w| w[0].index <= w[1].index), "in log order");
    let shared = got.windows(2).filter(|w| w[0].index == w[1].index).count();
    eprintln!("{shared} of {KEYS} changes shared a log index with the one before");

    // The killed node restarts from its last checkpoint (taken every 50
    // commands): it re-applies the log after it, and keeps history from
    // there on only.
    c.spawn(f1, &[]);
    c.serving(f1).await;
    let (status, body) = c.request(f1, Method::GET, "/v1/watch?from_index=1", None).await;
    assert_eq!((status, &body["error"]), (410, &serde_json::json!(codes::COMPACTED)), "{body}");
    let oldest = body["oldest_index"].as_u64().unwrap();
    assert!(oldest > 1, "its history starts after its checkpoint: {oldest}");
    // A client that asks it first is sent on to a node that has it all.
    let mut resumed = client_of(vec![http(f1), http(leader)]).watch("w/", from_one).await.unwrap();
    assert_eq!(resumed.endpoint(), Some(format!("http://{}", http(leader)).as_str()));
    assert_eq!(take(&mut resumed, KEYS).await, expected);
}
