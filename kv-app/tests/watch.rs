//! The change stream, `GET /v1/watch`, on one node running in this process
//! (`kv_app::server::start` on 127.0.0.1:0): before-images and values as
//! the KV API encodes them, `410 compacted` once retention dropped the
//! history and the documented way back (read, then watch from the read's
//! index + 1), the cut-off of a watcher that does not read and a resume
//! from its `resume_index` that loses nothing, the end of every watch when
//! the node stops, and a clear 400 for each malformed request.
//!
//! Resuming on another node, and a follower serving a watch, need several
//! nodes: `watch_cluster.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use kv_app::server::{self, Server, ServerConfig};
use kv_client::api::{codes, Consistency, WatchEnd, WatchEvent, WatchLine, WatchOp};
use kv_client::client::{Client, ClientError, WatchOptions};
use raft_core::Node;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpSocket};

/// One node serving in this process.
struct TestNode {
    server: Server,
    client: Client,
    _dir: tempfile::TempDir,
}

/// Starts a single-node cluster with `tune` applied to its configuration.
/// With `small_send_buffer`, the HTTP listener's sockets get the smallest
/// send buffer the kernel allows, so that a client that stops reading
/// stops the server's writes after a few kilobytes.
async fn start(tune: impl FnOnce(&mut ServerConfig), small_send_buffer: bool) -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    let http = if small_send_buffer {
        let socket = TcpSocket::new_v4().unwrap();
        // Accepted connections inherit the listener's send buffer (Linux).
        socket.set_send_buffer_size(4096).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        socket.listen(64).unwrap()
    } else {
        TcpListener::bind("127.0.0.1:0").await.unwrap()
    };
    let raft = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let member = Node::new(raft.local_addr().unwrap().to_string(), http.local_addr().unwrap().to_string());
    let mut config = ServerConfig::new(1, dir.path());
    config.initial_members = BTreeMap::from([(1, member)]);
    tune(&mut config);
    let server = server::start(config, http, raft).await.unwrap();
    assert_eq!(server.node().wait_for_leader(Duration::from_secs(30)).await, Some(1));
    let client = Client::new(vec![server.http_addr.to_string()]).unwrap();
    TestNode { server, client, _dir: dir }
}

/// A plain HTTP client (reqwest, built the one way this workspace allows).
fn http() -> reqwest::Client {
    kv_client::tls::http_client_builder(None).build().unwrap()
}

/// The next `n` events of `watch`.
async fn take(watch: &mut kv_client::client::Watch, n: usize) -> Vec<WatchEvent> {
    let mut events = Vec::with_capacity(n);
    while events.len() < n {
        events.push(watch.next().await.unwrap());
    }
    events
}

fn put(index: u64, key: &str, value: &[u8], prev: Option<&[u8]>) -> WatchEvent {
    let value = Some(value.to_vec());
    WatchEvent { index, op: WatchOp::Put, key: key.into(), value, prev_value: Some(prev.map(<[u8]>::to_vec)) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_delivers_each_change_under_its_prefix_with_the_value_before_it() {
    let node = start(|_| {}, false).await;
    let c = &node.client;
    let i1 = c.put("a/1", b"one", None).await.unwrap().index;
    c.put("b/other", b"not under a/", None).await.unwrap();
    let i2 = c.put("a/1", b"two", None).await.unwrap().index;
    let i3 = c.cas("a/1", Some(b"two"), b"three", None).await.unwrap().index;
    let mismatch = c.cas("a/1", Some(b"two"), b"never", None).await.unwrap();
    assert!(!mismatch.succeeded, "a CAS that fails changes nothing, and is no event");
    let i4 = c.delete("a/1", None).await.unwrap().index;
    c.delete("a/1", None).await.unwrap(); // deletes nothing: no event
    let i5 = c.put("a/bin", &[0, 159, 255], None).await.unwrap().index;

    let options = WatchOptions { from_index: Some(1), prev: true, ..WatchOptions::default() };
    let mut watch = c.watch("a/", options).await.unwrap();
    let delete = WatchEvent {
        index: i4,
        op: WatchOp::Delete,
        key: "a/1".into(),
        value: None,
        prev_value: Some(Some(b"three".to_vec())),
    };
    let expected = vec![
        put(i1, "a/1", b"one", None),
        put(i2, "a/1", b"two", Some(b"one")),
        put(i3, "a/1", b"three", Some(b"two")),
        delete,
        put(i5, "a/bin", &[0, 159, 255], None),
    ];
    assert_eq!(take(&mut watch, expected.len()).await, expected);

    // Live: a change made now arrives too; without prev, no prev_value.
    let mut plain = c.watch("a/", WatchOptions::default()).await.unwrap();
    let i6 = c.put("a/new", b"v", None).await.unwrap().index;
    let live = WatchEvent {
        index: i6,
        op: WatchOp::Put,
        key: "a/new".into(),
        value: Some(b"v".to_vec()),
        prev_value: None,
    };
    assert_eq!(take(&mut plain, 1).await, vec![live.clone()]);
    assert_eq!(take(&mut watch, 1).await, vec![WatchEvent { prev_value: Some(None), ..live }]);
    node.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_from_index_behind_the_history_gets_410_and_a_read_then_a_watch_recovers() {
    let node = start(|c| c.watch.retention.max_changes = 5, false).await;
    let c = &node.client;
    let mut last = 0;
    for i in 0..20 {
        last = c.put(&format!("k/{i:02}"), b"v", None).await.unwrap().index;
    }

    // Raw: 410 with the oldest index kept.
    let url = format!("http://{}/v1/watch?prefix=k/&from_index=1", node.server.http_addr);
    let response = http().get(&url).send().await.unwrap();
    assert_eq!(response.status(), 410);
    let end: WatchEnd = response.json().await.unwrap();
    assert_eq!(end.error, codes::COMPACTED);
    let oldest = end.oldest_index.unwrap();
    assert_eq!(oldest, last - 4, "five changes kept, one per index");

    // The client library says so as a distinct error.
    let from_one = WatchOptions { from_index: Some(1), ..WatchOptions::default() };
    match c.watch("k/", from_one).await {
        Err(ClientError::Compacted { oldest_index, .. }) => assert_eq!(oldest_index, oldest),
        other => panic!("expected Compacted, got {other:?}"),
    }
    // The oldest index kept is still served.
    let mut at_oldest =
        c.watch("k/", WatchOptions { from_index: Some(oldest), ..Default::default() }).await.unwrap();
    assert_eq!(take(&mut at_oldest, 1).await[0].index, oldest);

    // The way back (docs/watch.md): read the keys, then watch from the
    // read's index + 1; the listing plus the stream is every change.
    let listing = c.list("k/", None, Consistency::Linearizable).await.unwrap();
    assert_eq!(listing.items.len(), 20);
    let mut watch = c
        .watch("k/", WatchOptions { from_index: Some(listing.index + 1), ..Default::default() })
        .await
        .unwrap();
    let next = c.put("k/20", b"v", None).await.unwrap().index;
    let event = take(&mut watch, 1).await.remove(0);
    assert_eq!((event.index, event.key.as_str()), (next, "k/20"), "nothing before it, nothing missed");
    node.server.shutdown().await;
}

/// Sends `GET path` as HTTP/1.0 (so the body ends when the connection
/// closes: no chunked encoding to undo) on a socket with the smallest
/// receive buffer, and returns it unread.
async fn raw_watch(addr: std::net::SocketAddr, path: &str) -> tokio::net::TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes()).await.unwrap();
    stream
}

/// The lines of an HTTP/1.0 response's body, read to the end.
async fn body_lines(mut stream: tokio::net::TcpStream) -> Vec<WatchLine> {
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).await.unwrap();
    let text = String::from_utf8(bytes).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"), "{head}");
    body.lines().map(|l| WatchLine::parse(l.as_bytes()).unwrap()).collect()
}

/// The `WatchOp::Put` keys of `events`, which must come in increasing
/// index order.
fn keys_in_order(events: &[WatchEvent]) -> Vec<String> {
    assert!(events.windows(2).all(|w| w[0].index < w[1].index), "one put per index, in log order");
    events.iter().map(|e| e.key.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_does_not_read_is_cut_off_and_resuming_from_its_index_loses_nothing() {
    // 8 changes may wait for a watcher; the history keeps all of them.
    const WRITES: usize = 400;
    let node = start(|c| c.watch.buffer_changes = 8, true).await;
    let c = &node.client;
    let first = c.put("warmup", b"v", None).await.unwrap().index + 1;
    let stuck = raw_watch(node.server.http_addr, &format!("/v1/watch?prefix=s/&from_index={first}")).await;

    // 1.6 MB of changes: far more than the socket buffers and what hyper
    // holds back, so the server stops writing to the watcher and the
    // changes pile up for it.
    let value = vec![b'x'; 4096];
    let mut written = Vec::new();
    for i in 0..WRITES {
        let key = format!("s/{i:04}");
        c.put(&key, &value, None).await.unwrap();
        written.push(key);
    }

    let lines = body_lines(stuck).await;
    let (end, lines) = lines.split_last().unwrap();
    let WatchLine::End(end) = end else { panic!("the stream ends with an end line: {end:?}") };
    assert_eq!((end.error.as_str(), end.retryable), (codes::SLOW_WATCHER, true), "{}", end.message);
    let delivered: Vec<WatchEvent> = lines
        .iter()
        .filter_map(|l| match l {
            WatchLine::Event(e) => Some(e.clone()),
            WatchLine::Progress(_) => None,
            WatchLine::End(e) => panic!("an end line before the last: {e:?}"),
        })
        .collect();
    assert!(delivered.len() < WRITES, "cut off before the end ({} delivered)", delivered.len());
    let resume = end.resume_index.unwrap();
    assert_eq!(
        resume,
        delivered.last().map_or(first, |e| e.index + 1),
        "resume right after the last change sent"
    );

    // Watching again from resume_index delivers the rest, exactly.
    let mut watch =
        c.watch("s/", WatchOptions { from_index: Some(resume), ..Default::default() }).await.unwrap();
    let rest = take(&mut watch, WRITES - delivered.len()).await;
    let all: Vec<WatchEvent> = delivered.into_iter().chain(rest).collect();
    assert_eq!(keys_in_order(&all), written);
    assert!(all.iter().all(|e| e.value.as_deref() == Some(&value[..])));

    // /metrics counted the cut-off, and the resumed watch is open.
    let metrics = http().get(format!("http://{}/metrics", node.server.http_addr)).send().await.unwrap();
    let text = metrics.text().await.unwrap();
    assert!(text.contains("kv_watch_ends_total{reason=\"slow_watcher\"} 1"), "{text}");
    assert!(text.lines().any(|l| l == "kv_watches 1"), "{text}");
    node.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_node_ends_every_watch_with_the_index_to_resume_from() {
    let node = start(|_| {}, false).await;
    let index = node.client.put("k", b"v", None).await.unwrap().index;
    let url = format!("http://{}/v1/watch?from_index=1", node.server.http_addr);
    let response = http().get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let reader = tokio::spawn(async move { response.text().await.unwrap() });
    // Stopping does not wait for the watch: it ends it.
    node.server.shutdown().await;
    let body = reader.await.unwrap();
    let lines: Vec<WatchLine> = body.lines().map(|l| WatchLine::parse(l.as_bytes()).unwrap()).collect();
    let Some(WatchLine::End(end)) = lines.last() else { panic!("no end line in {body}") };
    assert_eq!(end.error, codes::SHUTTING_DOWN);
    assert!(end.resume_index.unwrap() > index, "the change at {index} was sent before: {body}");
    assert!(lines.iter().any(|l| matches!(l, WatchLine::Event(e) if e.index == index)), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_watch_requests_get_400_naming_the_problem() {
    let node = start(|_| {}, false).await;
    let base = format!("http://{}/v1/watch", node.server.http_addr);
    let long_prefix = format!("prefix={}", "p".repeat(5000));
    for (query, named) in [
        ("from_index=0", "from_index"),
        ("from_index=abc", "from_index"),
        ("from_index=-3", "from_index"),
        ("from_index=1.5", "from_index"),
        ("from_index=", "from_index"),
        ("prev=yes", "prev"),
        (long_prefix.as_str(), "prefix"),
        ("prefix=a&prefix=b", "prefix"),
    ] {
        let response = http().get(format!("{base}?{query}")).send().await.unwrap();
        assert_eq!(response.status(), 400, "{query}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"], codes::BAD_REQUEST, "{query}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(named), "{query}: {message}");
    }
    let response = http().post(&base).send().await.unwrap();
    assert_eq!(response.status(), 405, "a watch is a GET");
    assert!(matches!(
        node.client.watch("", WatchOptions { from_index: Some(0), ..Default::default() }).await,
        Err(ClientError::InvalidArgument { .. })
    ));
    node.server.shutdown().await;
}
