//! The resumable watch against two scripted fake nodes on 127.0.0.1:0: a
//! connection that ends in the middle of a log index's changes is resumed
//! on the other node from that index, and the changes already delivered
//! are dropped when they come again; a progress line moves the resume
//! point past the index; `410 compacted` from every node is
//! [`ClientError::Compacted`] with the oldest index any of them keeps.
//! A real cluster does this in kv-app's `tests/watch_cluster.rs`; here the
//! break falls exactly where it must, every time.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use kv_client::api::{WatchEvent, WatchOp};
use kv_client::client::{Client, ClientError, ClientOptions, WatchOptions};

mod support;

/// A node that answers each `GET /v1/watch` with the next scripted
/// (status, body), whole, then 503; and records each query.
#[derive(Clone)]
struct FakeNode {
    script: Arc<Mutex<VecDeque<(u16, String)>>>,
    queries: Arc<Mutex<Vec<String>>>,
    addr: String,
}

impl FakeNode {
    async fn start(script: Vec<(u16, &str)>) -> FakeNode {
        let mut node = FakeNode {
            script: Arc::new(Mutex::new(script.into_iter().map(|(s, b)| (s, b.to_owned())).collect())),
            queries: Arc::default(),
            addr: String::new(),
        };
        let server = node.clone();
        node.addr = support::serve(move |request| server.clone().handle(request)).await;
        node
    }

    async fn handle(
        self,
        request: hyper::Request<Incoming>,
    ) -> Result<hyper::Response<Full<Bytes>>, hyper::Error> {
        self.queries.lock().unwrap().push(request.uri().query().unwrap_or("").to_owned());
        let (status, body) = self.script.lock().unwrap().pop_front().unwrap_or((503, String::new()));
        Ok(hyper::Response::builder().status(status).body(Full::new(Bytes::from(body))).unwrap())
    }

    fn queries(&self) -> Vec<String> {
        self.queries.lock().unwrap().clone()
    }
}

fn put(index: u64, key: &str) -> WatchEvent {
    WatchEvent { index, op: WatchOp::Put, key: key.into(), value: Some(b"v".to_vec()), prev_value: None }
}

fn line(event: &WatchEvent) -> String {
    serde_json::to_string(event).unwrap() + "\n"
}

#[tokio::test]
async fn a_break_inside_an_index_resumes_on_another_node_without_loss_or_repeat() {
    let (a5, b5, c6) = (put(5, "a"), put(5, "b"), put(6, "c"));
    let compacted = |oldest: u64| {
        format!(r#"{{"error":"compacted","message":"m","retryable":false,"oldest_index":{oldest}}}"#)
    };
    // Node 1 sends the first of index 5's two changes, then its stream ends.
    let first = format!("{{\"progress_index\":4}}\n{}", line(&a5));
    // Node 2 sends all of index 5 again, index 6, and a progress line.
    let second = format!(
        "{{\"progress_index\":4}}\n{}{}{}{{\"progress_index\":6}}\n",
        line(&a5),
        line(&b5),
        line(&c6)
    );
    let (c1, c2) = (compacted(100), compacted(90));
    let node1 = FakeNode::start(vec![(200, &first), (410, &c1)]).await;
    let node2 = FakeNode::start(vec![(200, &second), (410, &c2)]).await;
    let options = ClientOptions {
        deadline: Duration::from_secs(2),
        initial_backoff: Duration::from_millis(1),
        ..ClientOptions::default()
    };
    let client = Client::with_options(vec![node1.addr.clone(), node2.addr.clone()], options).unwrap();

    let mut watch =
        client.watch("", WatchOptions { from_index: Some(5), ..Default::default() }).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(watch.next().await.unwrap());
    }
    assert_eq!(got, vec![a5, b5, c6], "each change once, in order");
    assert_eq!(node2.queries(), vec!["prefix=&from_index=5"], "resumed at the index cut short");
    assert_eq!(watch.resume_index(), 7, "the progress line passed index 6");

    // Next, both nodes have dropped that history.
    match watch.next().await {
        Err(ClientError::Compacted { oldest_index, .. }) => assert_eq!(oldest_index, 90),
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert_eq!(node1.queries(), vec!["prefix=&from_index=5", "prefix=&from_index=7"]);
}
