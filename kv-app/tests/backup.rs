//! Backup, restore and disaster recovery, run as an operator would, on
//! real `kv-server` processes: `GET /v1/cluster/backup` under concurrent
//! writes, `kv-server restore` into a new cluster, its refusals, and
//! `--force-new-cluster` on the one survivor of a cluster.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::ProcCluster;
use kv_client::api::Consistency;
use kv_client::backup::{self, Reader, Verified};
use kv_client::client::Client;
use reqwest::Method;

/// Downloads a backup from `endpoint` into `path` and checks it.
async fn save(client: &Client, endpoint: Option<&str>, path: &Path) -> Verified {
    let mut download = client.backup(endpoint).await.unwrap();
    let announced = download.len();
    let mut file = File::create(path).unwrap();
    let mut got = 0;
    while let Some(piece) = download.next_piece().await.unwrap() {
        got += piece.len() as u64;
        file.write_all(&piece).unwrap();
    }
    assert_eq!(announced, Some(got), "the announced length is the length sent");
    backup::verify(BufReader::new(File::open(path).unwrap())).unwrap()
}

/// The data keys of a backup (without the `d/` prefix), with their values.
fn data_of(path: &Path) -> BTreeMap<String, String> {
    let mut reader = Reader::open(BufReader::new(File::open(path).unwrap())).unwrap();
    let mut data = BTreeMap::new();
    while let Some((k, v)) = reader.next_entry().unwrap() {
        if let Some(key) = k.strip_prefix(b"d/") {
            data.insert(String::from_utf8(key.to_vec()).unwrap(), String::from_utf8(v).unwrap());
        }
    }
    data
}

/// Writes keys `{name}-0`, `{name}-1`, ... until `stop`, recording each
/// acknowledged write's key, index, and whether the server reported it as
/// a retry's duplicate (whose index is the retry's, not the write's).
async fn writer(
    client: Client,
    name: &str,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(String, u64, bool)>>>,
) {
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("{name}-{i}");
        let w = client.put(&key, key.as_bytes(), None).await.unwrap();
        acked.lock().unwrap().push((key, w.index, w.duplicate));
        i += 1;
    }
}

fn restore(backup: &Path, dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kv-server"))
        .arg("restore")
        .arg("--from")
        .arg(backup)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

fn refused(out: &Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the restore should have been refused");
    assert!(stderr.contains(expected), "expected {expected:?} in: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_writes_holds_every_acknowledged_write_and_restores_into_a_new_cluster() {
    let source = ProcCluster::start(3, &[]).await;
    let leader = source.leader().await;
    // A write with a session, to be retried against the restored cluster.
    let once = r#"{"value":"once","client_id":4242,"seq":1}"#;
    let (status, _) = source.request(leader, Method::PUT, "/v1/kv/session-key", Some(once)).await;
    assert_eq!(status, 200);

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|name| tokio::spawn(writer(source.client(), name, stop.clone(), acked.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = acked.lock().unwrap().clone();
    // From a follower: it asks the leader for a read index, as a
    // linearizable read there does.
    let follower = source.nodes.keys().copied().find(|id| *id != leader).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("backup.kvb");
    let verified = save(&source.client(), Some(&source.nodes[&follower].http), &file).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let after = acked.lock().unwrap().clone();

    let at = verified.header.index;
    let data = data_of(&file);
    assert!(!before.is_empty(), "writes were acknowledged before the save began");
    for (key, index, _) in &before {
        assert!(*index <= at, "{key} was acknowledged at {index}, before a backup at {at}");
        assert_eq!(data.get(key), Some(key), "{key}, acknowledged before the save began");
    }
    for (key, index, duplicate) in &after {
        if *index <= at {
            assert!(data.contains_key(key), "{key} (index {index}) is missing from the backup at {at}");
        } else if !duplicate {
            assert!(!data.contains_key(key), "{key} (index {index}) is in a backup of index {at}");
        }
    }
    assert!(after.iter().any(|(_, i, _)| *i > at), "the writes went on while the backup was taken");
    assert_eq!(verified.header.keys, data.len() as u64);
    assert!(verified.header.sessions >= 1);
    drop(source);

    let restored = ProcCluster::start_restored(3, &file).await;
    let digest = restored.converge(at).await;
    assert_eq!(digest, verified.header.digest, "the restored state is the source's at the saved index");
    let client = restored.client();
    let listing = client.list("", Some(10_000), Consistency::Linearizable).await.unwrap();
    assert!(!listing.more, "fewer than 10,000 keys were written");
    let listed: BTreeMap<String, String> =
        listing.items.into_iter().map(|kv| (kv.key, String::from_utf8(kv.value).unwrap())).collect();
    assert_eq!(listed, data, "the restored cluster holds exactly the backup's data");

    // The session came along: a retry of its write is recognised, not applied again.
    let leader = restored.leader().await;
    let twice = r#"{"value":"twice","client_id":4242,"seq":1}"#;
    let (status, body) = restored.request(leader, Method::PUT, "/v1/kv/session-key", Some(twice)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["duplicate"], true, "{body}");
    let read = client.get("session-key", Consistency::Linearizable).await.unwrap().unwrap();
    assert_eq!(read.value, b"once");
    // And the new cluster takes writes after the backup's position.
    let w = client.put("new", b"1", None).await.unwrap();
    assert!(w.index > at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_refuses_damaged_backups_other_clusters_and_used_directories() {
    let source = ProcCluster::start(1, &[]).await;
    let client = source.client();
    for i in 0..20 {
        client.put(&format!("k{i}"), b"value", None).await.unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.kvb");
    save(&client, None, &good).await;
    drop(source);
    let bytes = std::fs::read(&good).unwrap();

    let corrupt = tmp.path().join("corrupt.kvb");
    let mut flipped = bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    std::fs::write(&corrupt, &flipped).unwrap();
    let truncated = tmp.path().join("truncated.kvb");
    std::fs::write(&truncated, &bytes[..bytes.len() - 40]).unwrap();
    let not_a_backup = tmp.path().join("notes.txt");
    std::fs::write(&not_a_backup, b"shopping list").unwrap();

    let dir = tmp.path().join("data");
    refused(&restore(&corrupt, &dir, &[]), "the backup is corrupt");
    refused(&restore(&truncated, &dir, &[]), "the backup is truncated");
    refused(&restore(&not_a_backup, &dir, &[]), "not a kv backup");
    refused(&restore(&good, &dir, &["--cluster-id", "prod"]), "give --cluster-id kv");
    assert!(!dir.exists(), "a refused restore writes nothing");
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 4, "no staging directory is left behind: {leftovers:?}");

    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("raft.redb"), b"someone's data").unwrap();
    refused(&restore(&good, &dir, &[]), "not empty");
    assert_eq!(std::fs::read(dir.join("raft.redb")).unwrap(), b"someone's data");

    // The control: the same backup restores into an empty directory.
    let fresh = tmp.path().join("fresh");
    let out = restore(&good, &fresh, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("20 keys"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_new_cluster_on_one_survivor_keeps_every_committed_write() {
    let mut cluster = ProcCluster::start(3, &[]).await;
    let client = cluster.client();
    let mut last = 0;
    for i in 0..30 {
        last = client.put(&format!("k{i}"), format!("v{i}").as_bytes(), None).await.unwrap().index;
    }
    cluster.converge(last).await;
    // Disaster: the leader and another node are lost for good.
    let leader = cluster.leader().await;
    let survivor = cluster.nodes.keys().copied().find(|id| *id != leader).unwrap();
    for id in [1, 2, 3] {
        cluster.kill(id);
    }
    for id in [1, 2, 3].into_iter().filter(|id| *id != survivor) {
        cluster.nodes.remove(&id);
    }

    cluster.spawn(survivor, &["--force-new-cluster"]);
    assert_eq!(cluster.leader().await, survivor, "the survivor leads a cluster of its own");
    let status = cluster.status(survivor).await.unwrap();
    assert_eq!(status.voters, vec![survivor]);
    let client = cluster.client();
    for i in 0..30 {
        let read = client.get(&format!("k{i}"), Consistency::Linearizable).await.unwrap();
        assert_eq!(read.map(|r| r.value), Some(format!("v{i}").into_bytes()), "k{i}");
    }
    let after = client.put("after", b"yes", None).await.unwrap().index;

    // Members join it as they would any cluster, two at once: the second
    // waits while the first's change is in progress.
    let join = cluster.nodes[&survivor].http.clone();
    for id in [4, 5] {
        cluster.add_node(id);
        cluster.spawn(id, &["--join", &join]);
    }
    let deadline = std::time::Instant::now() + common::WAIT;
    while cluster.status(survivor).await.unwrap().voters != vec![survivor, 4, 5] {
        assert!(std::time::Instant::now() < deadline, "nodes 4 and 5 did not both join: {}", cluster.log(5));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.converge(after).await;
    assert!(cluster.log(survivor).contains("this node is now the only voter"));
}
