//! HTTPS on the HTTP API: the certificates a node serves and trusts, and
//! the listener that turns TCP connections into TLS streams for axum.
//!
//! A node started with `--tls-cert`, `--tls-key` and `--tls-ca` ([`HttpTls`])
//! serves its HTTP API over TLS only, and calls the other nodes (forwarding
//! to the leader, asking it for a read index, joining) with `https://`,
//! trusting `--tls-ca` and presenting its own certificate when asked. With
//! `--client-cert-auth` it also requires every client to present a
//! certificate signed by `--tls-ca`. A cluster speaks HTTPS on every node or
//! on none.
//!
//! # The listener
//!
//! [`TlsListener`] is an [`axum::serve::Listener`]. Each TCP connection's
//! handshake runs in a task of its own, bounded by [`HANDSHAKE_TIMEOUT`], and
//! only finished TLS streams reach axum: a client that is slow, silent or
//! sends garbage holds up nobody but itself. At most [`MAX_HANDSHAKES`] run
//! at once; beyond that new connections wait in the kernel's backlog.
//!
//! A client that speaks plain HTTP to the HTTPS port (its first byte is not
//! a TLS handshake record) gets a `400` with the usual JSON error body
//! saying to use `https://`, and the connection is closed: a client that
//! forgot the scheme learns why at once, instead of seeing a connection
//! reset. A failed handshake is logged as a warning with the client's
//! address; the client sees a TLS alert (`UnknownCA`, `CertificateRequired`,
//! ...), which `kv_client::tls::describe` explains.
//!
//! A production system would also reload certificates without a restart
//! and check revocation; this one reads them once, at startup.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kv_client::api::{codes, ErrorBody};
use kv_client::tls::{provider, read_certs, read_key, ClientTls, TlsConfigError};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::RootCertStore;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::Ctx;

/// How long a client has, from its TCP connection being accepted, to
/// finish the TLS handshake. A handshake is two round trips; ten seconds
/// covers a slow network and a busy node, and frees the slot of a client
/// that never finishes.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The most handshakes in progress at once. Each costs a task and a few
/// kilobytes; the bound keeps a flood of connections that never finish
/// their handshake from costing more.
pub const MAX_HANDSHAKES: usize = 1024;

/// How long a refused connection is drained before it is closed (see
/// `close_gently`).
const LINGER: Duration = Duration::from_secs(1);

/// The first byte of every TLS connection: the record type of a handshake
/// message (RFC 8446 §5.1), which carries the ClientHello.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// A node's HTTPS: the certificate it serves, the CA it trusts for the
/// other nodes' certificates and (with `--client-cert-auth`) for clients'.
/// Cheap to clone.
#[derive(Clone)]
pub struct HttpTls {
    server: Arc<rustls::ServerConfig>,
    /// For calls to the other nodes: trusts the CA, presents this node's
    /// certificate when a node with `--client-cert-auth` asks for one.
    client: ClientTls,
    /// This node's own certificate, to check the names it carries.
    cert: CertificateDer<'static>,
    client_cert_auth: bool,
}

impl std::fmt::Debug for HttpTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("HttpTls").field("client_cert_auth", &self.client_cert_auth).finish_non_exhaustive()
    }
}

impl HttpTls {
    /// Reads this node's certificate chain (its own certificate first) and
    /// private key, and the CA certificate(s) it trusts, from PEM files.
    /// With `client_cert_auth`, every client must present a certificate
    /// signed by that CA.
    pub fn from_pem_files(
        cert: &Path,
        key: &Path,
        ca: &Path,
        client_cert_auth: bool,
    ) -> Result<HttpTls, TlsConfigError> {
        let invalid = |e: rustls::Error| TlsConfigError::Invalid(e.to_string());
        let chain = read_certs("certificate chain", cert)?;
        let key = read_key(key)?;
        let ca = read_certs("CA certificates", ca)?;

        let provider = provider();
        let verifier = if client_cert_auth {
            let mut roots = RootCertStore::empty();
            for cert in &ca {
                roots.add(cert.clone()).map_err(invalid)?;
            }
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| TlsConfigError::Invalid(e.to_string()))?
        } else {
            WebPkiClientVerifier::no_client_auth()
        };
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(invalid)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(invalid)?;
        // axum serves HTTP/1.1 here (it is built without HTTP/2).
        server.alpn_protocols = vec![b"http/1.1".to_vec()];

        let cert = chain[0].clone();
        let client = ClientTls::new(ca, Some((chain, key)))?;
        Ok(HttpTls { server: Arc::new(server), client, cert, client_cert_auth })
    }

    /// What this node trusts and presents when it calls other nodes.
    pub fn client(&self) -> &ClientTls {
        &self.client
    }

    /// Whether every client must present a certificate.
    pub fn client_cert_auth(&self) -> bool {
        self.client_cert_auth
    }

    /// Checks that this node's certificate names `host` (a DNS name or an
    /// IP address), as HTTPS clients that reach it there will require.
    pub fn check_names(&self, host: &str) -> Result<(), String> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| format!("{host:?} is not a host name or IP address: {e}"))?;
        let cert = ParsedCertificate::try_from(&self.cert).map_err(|e| e.to_string())?;
        rustls::client::verify_server_name(&cert, &name).map_err(|e| e.to_string())
    }
}

impl Ctx {
    /// The URL of `path` on the node whose HTTP address is `addr`: `https`
    /// when this node serves HTTPS (so does every node of its cluster),
    /// else `http`.
    pub fn node_url(&self, addr: &str, path: &str) -> String {
        let scheme = if self.config.http_tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{addr}{path}")
    }
}

/// A reqwest client builder for calls from this node to the others,
/// speaking HTTPS if `tls` is set.
pub fn node_client_builder(tls: Option<&HttpTls>) -> reqwest::ClientBuilder {
    kv_client::tls::http_client_builder(tls.map(HttpTls::client))
}

/// Accepts TLS connections for axum: each handshake runs in its own task
/// (see the module docs), and `accept` hands over the finished streams.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
    node_id: u64,
}

impl TlsListener {
    /// Serves `tls` on the already-bound `tcp`, for node `node_id` (in logs).
    pub fn new(tcp: TcpListener, tls: &HttpTls, node_id: u64) -> TlsListener {
        TlsListener {
            tcp,
            acceptor: TlsAcceptor::from(tls.server.clone()),
            handshakes: JoinSet::new(),
            node_id,
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                accepted = self.tcp.accept(), if self.handshakes.len() < MAX_HANDSHAKES => match accepted {
                    Ok((stream, addr)) => {
                        // A response may leave in several TLS records; do not
                        // let Nagle's algorithm hold back the last one.
                        let _ = stream.set_nodelay(true);
                        let acceptor = self.acceptor.clone();
                        self.handshakes.spawn(handshake(acceptor, stream, addr, self.node_id));
                    }
                    Err(e) => accept_failed(e).await,
                },
                Some(done) = self.handshakes.join_next() => match done {
                    Ok(Some(connection)) => return connection,
                    // Refused; the task logged why.
                    Ok(None) => {}
                    Err(e) => tracing::error!(node_id = self.node_id, error = %e, "a TLS handshake task failed"),
                },
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// What axum's own TCP listener does on an accept error: a connection that
/// went away before it was accepted is no error; anything else (out of file
/// descriptors, say) is, and a pause gives the node a chance to recover.
async fn accept_failed(e: io::Error) {
    use io::ErrorKind as K;
    if matches!(e.kind(), K::ConnectionRefused | K::ConnectionAborted | K::ConnectionReset) {
        return;
    }
    tracing::error!(error = %e, "accepting an HTTPS connection failed; pausing for a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// One connection's TLS handshake, within [`HANDSHAKE_TIMEOUT`]. `None`:
/// refused, timed out or closed, and logged.
async fn handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    client: SocketAddr,
    node_id: u64,
) -> Option<(TlsStream<TcpStream>, SocketAddr)> {
    let shake = async {
        let mut first = [0u8; 1];
        match stream.peek(&mut first).await {
            Ok(0) => {
                tracing::debug!(node_id, %client, "HTTPS connection closed before the TLS handshake");
                return None;
            }
            Ok(_) if first[0] != TLS_HANDSHAKE_RECORD => {
                tracing::warn!(node_id, %client, "plain HTTP on the HTTPS port; answered 400 and closed");
                answer_plain_http(stream).await;
                return None;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(node_id, %client, error = %e, "HTTPS connection failed before the handshake");
                return None;
            }
        }
        match acceptor.accept(stream).into_fallible().await {
            Ok(tls) => Some((tls, client)),
            Err((e, stream)) if peer_left(&e) => {
                // A client that went away halfway (a killed process, a
                // dropped connection) was refused nothing.
                tracing::debug!(node_id, %client, error = %e, "connection closed during the TLS handshake");
                close_gently(stream).await;
                None
            }
            Err((e, stream)) => {
                tracing::warn!(node_id, %client, error = %e, "TLS handshake refused");
                close_gently(stream).await;
                None
            }
        }
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, shake).await {
        Ok(done) => done,
        Err(_) => {
            tracing::warn!(node_id, %client, "TLS handshake not finished within {HANDSHAKE_TIMEOUT:?}; closed");
            None
        }
    }
}

/// Whether a TLS handshake failed because the client went away (end of
/// stream, reset), not because anything it sent was refused.
fn peer_left(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    matches!(e.kind(), UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe)
}

/// Answers a plain HTTP request on the HTTPS port with a 400 and the usual
/// JSON error body, then closes the connection.
async fn answer_plain_http(mut stream: TcpStream) {
    // Read (and ignore) what the request sent so far, so that closing does
    // not reset the connection under the answer.
    let mut request = [0u8; 8192];
    let _ = stream.read(&mut request).await;
    let body = ErrorBody {
        error: codes::BAD_REQUEST.into(),
        message:
            "this port speaks HTTPS: use https:// (with the cluster's CA: curl --cacert, kvctl --cacert)"
                .into(),
        retryable: false,
        leader: None,
        index: None,
    };
    let body = serde_json::to_string(&body).expect("invariant: an ErrorBody serializes to JSON");
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(answer.as_bytes()).await;
    close_gently(stream).await;
}

/// Closes a refused connection so that its last words arrive: sends FIN
/// after them, then reads and drops what the client still sends until it
/// closes too (or [`LINGER`] passes). Closing a socket with unread data
/// makes the kernel send a reset, which can destroy a TLS alert or a 400
/// still on its way; in TLS 1.3 the client sends its request right after
/// its certificate, before it learns the certificate was refused.
async fn close_gently(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(LINGER, async {
        let mut drained = 0usize;
        while drained < 256 * 1024 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}

/// Whether `addr` (`host:port`, as given to `--http-addr` or `--raft-addr`)
/// binds only the loopback interface: a loopback IP address, or the host
/// name `localhost`. Anything else (`0.0.0.0`, a LAN address, another host
/// name) may be reachable from other machines.
pub fn is_loopback(addr: &str) -> bool {
    if let Ok(socket) = addr.parse::<SocketAddr>() {
        return socket.ip().is_loopback();
    }
    match addr.rsplit_once(':') {
        Some((host, _port)) => host.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_addresses_count_as_loopback() {
        for addr in ["127.0.0.1:8080", "127.0.0.2:1", "[::1]:8080", "localhost:8080", "LOCALHOST:1"] {
            assert!(is_loopback(addr), "{addr}");
        }
        for addr in ["0.0.0.0:8080", "[::]:8080", "192.168.1.5:8080", "example.com:80", "localhost", "x"] {
            assert!(!is_loopback(addr), "{addr}");
        }
    }
}
