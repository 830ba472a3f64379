//! Shared by the client's tests: a fake node is an HTTP/1.1 server on
//! 127.0.0.1:0 on hyper (the HTTP library under reqwest, so that testing
//! the client needs no web framework), answering every request with a
//! handler the test writes.

use std::future::Future;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};

/// Serves `handle` on a new port of 127.0.0.1 until the test's runtime
/// ends; returns its `host:port`.
pub async fn serve<H, F>(handle: H) -> String
where
    H: Fn(hyper::Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<hyper::Response<Full<Bytes>>, hyper::Error>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = hyper::service::service_fn(handle.clone());
            tokio::spawn(async move {
                // A client that gave up on a slow answer has closed the
                // connection: nothing to report.
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}
