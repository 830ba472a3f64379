//! `--pool connection`: each worker owns one bare HTTP/1.1 connection and
//! drives it from its own task, as wrk's workers do.
//!
//! reqwest's pooled client (`--pool shared`) is what an application would
//! use. But it pays per request for what a closed loop on one connection
//! does not need: parsing the URL, looking up and returning a pooled
//! connection, and a hand-off between the worker's task and the task that
//! owns the socket (hyper's connection future, spawned by the pool). Here
//! the worker polls the connection future itself while its request is in
//! flight, so a request and its answer never leave the worker's task.
//!
//! The connection is opened lazily and opened again after any error (a
//! closed connection, a timeout, a server that went away): a failed
//! request drops it, so the next request starts from a fresh one, the way
//! a pooled client discards a broken connection.

use std::time::Duration;

use anyhow::{bail, Context as _};
use axum::body::Bytes;
use futures::FutureExt as _;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use kv_client::client::BearerToken;
use kv_client::tls::ClientTls;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A byte stream a connection runs over: TCP, or TLS over TCP.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

type Io = TokioIo<Box<dyn Stream>>;

/// An open connection: hyper's handle for sending, and the future that
/// reads and writes the socket, which the owner must poll.
struct Live {
    sender: SendRequest<Full<Bytes>>,
    conn: Connection<Io, Full<Bytes>>,
}

/// One endpoint, and this worker's connection to it.
pub(super) struct Conn {
    /// `host:port`, for connecting and for the `Host` header.
    authority: String,
    host_header: HeaderValue,
    /// HTTPS: the connector and the name the certificate must carry.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    auth: Option<HeaderValue>,
    timeout: Duration,
    live: Option<Live>,
}

impl Conn {
    /// A connection (not yet open) to `base`, `http://host:port` or
    /// `https://host:port`.
    pub(super) fn new(
        base: &str,
        timeout: Duration,
        token: Option<&BearerToken>,
        tls: Option<&ClientTls>,
    ) -> anyhow::Result<Conn> {
        let (https, rest) = match (base.strip_prefix("http://"), base.strip_prefix("https://")) {
            (Some(rest), _) => (false, rest),
            (_, Some(rest)) => (true, rest),
            _ => bail!("endpoint {base:?} has no http:// or https://"),
        };
        let authority = rest.trim_end_matches('/').to_owned();
        if authority.is_empty() || authority.contains('/') {
            bail!("endpoint {base:?} is not scheme://host:port");
        }
        let tls = match (https, tls) {
            (false, _) => None,
            (true, None) => bail!("endpoint {base:?} is HTTPS but no TLS configuration was given"),
            (true, Some(tls)) => {
                let host = match authority.rsplit_once(':') {
                    Some((host, port)) if port.parse::<u16>().is_ok() => host,
                    _ => authority.as_str(),
                };
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let name = ServerName::try_from(host.to_owned())
                    .with_context(|| format!("{host:?} is not a name a certificate can carry"))?;
                Some((TlsConnector::from(tls.rustls_config()), name))
            }
        };
        Ok(Conn {
            host_header: HeaderValue::from_str(&authority)
                .context("the endpoint is not a valid Host header")?,
            authority,
            tls,
            auth: token.map(BearerToken::header_value).transpose()?,
            timeout,
            live: None,
        })
    }

    /// Sends one request and reads the whole answer: its status and body.
    /// Errors are short names (`"connect"`, `"timeout"`, `"tls: ..."` with
    /// what a TLS failure means, hyper's words), as the report counts them.
    pub(super) async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(u16, Bytes), String> {
        let result = match tokio::time::timeout(self.timeout, self.exchange(method, path, body)).await {
            Ok(result) => result,
            Err(_) => Err("timeout".to_owned()),
        };
        if result.is_err() {
            self.live = None;
        }
        result
    }

    async fn exchange(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(u16, Bytes), String> {
        // A connection the server closed while it was idle ends as soon as
        // it is polled: find that out before sending on it.
        if let Some(live) = self.live.as_mut() {
            if live.sender.is_closed() || (&mut live.conn).now_or_never().is_some() {
                self.live = None;
            }
        }
        if self.live.is_none() {
            let opened = open(&self.authority, self.tls.as_ref()).await;
            self.live = Some(opened.map_err(|e| error_name(e.as_ref(), "connect"))?);
        }
        let mut req = Request::builder().method(method).uri(path).header(HOST, self.host_header.clone());
        if body.is_some() {
            req = req.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        if let Some(auth) = &self.auth {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        let req = req.body(Full::new(body.unwrap_or_default())).map_err(|e| e.to_string())?;
        let Some(Live { sender, conn }) = self.live.as_mut() else {
            return Err("connect".to_owned());
        };
        let answer = async {
            sender.ready().await?;
            let (parts, body) = sender.send_request(req).await?.into_parts();
            Ok::<_, hyper::Error>((parts.status.as_u16(), body.collect().await?.to_bytes()))
        };
        tokio::pin!(answer);
        // Drive the socket on this task until the answer is whole.
        tokio::select! {
            biased;
            result = &mut answer => result.map_err(|e| hyper_error(&e)),
            ended = conn => match ended {
                Err(e) => Err(hyper_error(&e)),
                // Closed cleanly: an answer that is not whole by now never
                // will be.
                Ok(()) => match answer.now_or_never() {
                    Some(result) => result.map_err(|e| hyper_error(&e)),
                    None => Err("connection closed".to_owned()),
                },
            },
        }
    }
}

/// `"tls: "` and what the failure means if TLS is why `e` happened (a
/// server certificate this client does not trust, a client certificate the
/// server wants), else `otherwise`.
fn error_name(e: &(dyn std::error::Error + 'static), otherwise: &str) -> String {
    match kv_client::tls::tls_error(e) {
        Some(tls) => format!("tls: {}", kv_client::tls::describe(tls)),
        None => otherwise.to_owned(),
    }
}

fn hyper_error(e: &hyper::Error) -> String {
    error_name(e, &e.to_string())
}

/// Opens a connection to `authority`, over TLS if `tls` is given.
async fn open(authority: &str, tls: Option<&(TlsConnector, ServerName<'static>)>) -> anyhow::Result<Live> {
    let tcp = TcpStream::connect(authority).await?;
    tcp.set_nodelay(true)?;
    let stream: Box<dyn Stream> = match tls {
        None => Box::new(tcp),
        Some((connector, name)) => Box::new(connector.connect(name.clone(), tcp).await?),
    };
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    Ok(Live { sender, conn })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    use super::*;

    /// A server that answers each request read on a connection with `204`,
    /// closing the connection after `per_conn` answers, and counts the
    /// connections it accepted. A request is read up to its blank line
    /// (the tests send bodiless requests).
    async fn server(per_conn: usize) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    for _ in 0..per_conn {
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            let mut chunk = [0u8; 1024];
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.clear();
                        let answer: &[u8] = b"HTTP/1.1 204 No Content\r\n\r\n";
                        if sock.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                    // Closes without saying so, as a server that drops idle
                    // connections does.
                });
            }
        });
        (base, accepted)
    }

    #[tokio::test]
    async fn one_connection_carries_every_request() {
        let (base, accepted) = server(usize::MAX).await;
        let mut conn = Conn::new(&base, Duration::from_secs(5), None, None).unwrap();
        for _ in 0..5 {
            assert_eq!(conn.send(Method::GET, "/x", None).await.unwrap().0, 204);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_opened_again() {
        let (base, accepted) = server(1).await;
        let mut conn = Conn::new(&base, Duration::from_secs(5), None, None).unwrap();
        for i in 0..4 {
            // Wait until the server has closed the connection, as it
            // would have closed an idle one.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let answer = conn.send(Method::GET, "/x", None).await;
            assert_eq!(answer.map(|a| a.0), Ok(204), "request {i}");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 4, "one connection per request");
    }

    #[tokio::test]
    async fn errors_have_short_names() {
        // Nothing listens on a port just freed.
        let free = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let mut conn = Conn::new(&format!("http://{free}"), Duration::from_secs(5), None, None).unwrap();
        assert_eq!(conn.send(Method::GET, "/x", None).await.unwrap_err(), "connect");

        // A server that accepts and never answers.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let mut conn = Conn::new(&format!("http://{addr}"), Duration::from_millis(100), None, None).unwrap();
        assert_eq!(conn.send(Method::GET, "/x", None).await.unwrap_err(), "timeout");
        drop(silent);
    }

    #[test]
    fn endpoints_need_a_scheme_and_https_needs_tls() {
        let t = Duration::from_secs(1);
        assert!(Conn::new("127.0.0.1:1", t, None, None).is_err());
        assert!(Conn::new("http://127.0.0.1:1/v1", t, None, None).is_err());
        let e = Conn::new("https://127.0.0.1:1", t, None, None).err().unwrap();
        assert!(e.to_string().contains("no TLS configuration"), "{e}");
        assert!(Conn::new("http://127.0.0.1:1/", t, None, None).is_ok());
    }
}
