//! Mutual TLS between peers: who may speak on the Raft port.
//!
//! Without TLS the Raft handshake only guards against mistakes: anyone who
//! can reach the port and knows the cluster id can send AppendEntries or
//! votes. With a [`PeerTls`] in [`Config::peer_tls`](crate::Config::peer_tls)
//! every Raft connection is mutual TLS, and both ends prove who they are:
//!
//! * Both sides present a certificate signed by the cluster's CA, and each
//!   verifies the other's chain against that CA (and its validity period).
//!   A certificate from another CA, an expired one, or none at all ends the
//!   TLS handshake.
//! * Each node's certificate *names the node*: it carries the URI subject
//!   alternative name `raft://<cluster-id>/node/<node-id>` (see
//!   [`node_uri`]). The server accepts a connection only if the client's
//!   certificate names the cluster and the node that the Raft handshake
//!   claims (`cluster_id` and `from`); the client accepts a server only if
//!   its certificate names the node it meant to reach (`to`). So node 3
//!   cannot present node 2's certificate and speak as node 3, nor use its
//!   own certificate and claim to be node 2.
//!
//! Host names play no part: a node is known by its id, and addresses change
//! (the Jepsen harness puts a proxy in front of every node). The client
//! therefore checks the server's chain itself (`CaVerifier`, below) instead of
//! rustls' host name check, and compares identities after the handshake.
//!
//! # Where TLS starts
//!
//! The connection preamble (magic, version, handshake frame) stays in
//! plaintext, so that a node can tell an old or foreign client apart
//! without a TLS handshake, and so that a proxy can learn the link
//! `from → to` from it and forward the rest unchanged (the Jepsen harness
//! partitions links that way). A TLS server answers the preamble with
//! [`HandshakeAck::StartTls`](super::frame::HandshakeAck::StartTls); the
//! TLS handshake follows, and the real acknowledgement and every frame after
//! it travel inside TLS. The preamble is not secret and is not trusted: the
//! claims in it are checked against the certificates once TLS is up. See
//! `docs/architecture/raft-core.md`, "Peer TLS".
//!
//! A production system would also check certificate revocation, and reload
//! certificates without a restart; this one reads them once, at startup.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::types::NodeId;

pub mod certs;

/// The scheme of the URI that names a node in its certificate.
const URI_PREFIX: &str = "raft://";

/// The URI subject alternative name that a certificate for node `node_id`
/// of cluster `cluster_id` carries: `raft://<cluster-id>/node/<node-id>`.
///
/// The cluster id is written as it is, so it should be printable ASCII
/// without spaces (a URI in a certificate is an IA5 string).
pub fn node_uri(cluster_id: &str, node_id: NodeId) -> String {
    format!("{URI_PREFIX}{cluster_id}/node/{node_id}")
}

/// Who a certificate says its holder is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    /// The cluster named in the certificate.
    pub cluster_id: String,
    /// The node named in the certificate.
    pub node_id: NodeId,
}

impl std::fmt::Display for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "node {} of cluster {:?}", self.node_id, self.cluster_id)
    }
}

/// Why a [`PeerTls`] could not be built, or a certificate names no node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("reading {what} from {path}: {detail}")]
    Pem {
        /// "CA certificates", "certificate chain" or "private key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// rustls refused the certificates or the key (a key that does not
    /// match the certificate, an unsupported algorithm, an invalid CA).
    #[error("invalid TLS configuration: {0}")]
    Config(String),
    /// A certificate carries no `raft://<cluster-id>/node/<id>` name, or it
    /// does not parse.
    #[error("the certificate names no Raft node: {0}")]
    NoIdentity(String),
}

/// The certificates and key with which a node speaks mutual TLS to its
/// peers: the cluster's CA, this node's certificate chain, and its private
/// key. Cheap to clone.
///
/// Built once; the rustls configurations inside are shared by every
/// connection.
#[derive(Clone)]
pub struct PeerTls {
    inner: Arc<Inner>,
}

struct Inner {
    /// DER of the CA certificates, the certificate chain and the key, for
    /// equality and for [`PeerTls::identity`].
    ca: Vec<CertificateDer<'static>>,
    chain: Vec<CertificateDer<'static>>,
    key_der: Vec<u8>,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("PeerTls")
            .field("ca_certificates", &self.inner.ca.len())
            .field("identity", &self.identity().ok())
            .finish_non_exhaustive()
    }
}

impl PartialEq for PeerTls {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (&self.inner, &other.inner);
        a.ca == b.ca && a.chain == b.chain && a.key_der == b.key_der
    }
}

impl Eq for PeerTls {}

impl PeerTls {
    /// Reads the CA certificate(s), this node's certificate chain (its own
    /// certificate first) and its private key (PKCS#8, PKCS#1 or SEC1) from
    /// PEM files.
    pub fn from_pem_files(ca: &Path, cert: &Path, key: &Path) -> Result<PeerTls, TlsError> {
        fn pem_err(
            what: &'static str,
            path: &Path,
        ) -> impl FnOnce(rustls::pki_types::pem::Error) -> TlsError {
            let path = path.to_path_buf();
            move |e| TlsError::Pem { what, path, detail: e.to_string() }
        }
        let certs = |what, path: &Path| -> Result<Vec<CertificateDer<'static>>, TlsError> {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(pem_err(what, path))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(pem_err(what, path))?;
            if certs.is_empty() {
                return Err(TlsError::Pem {
                    what,
                    path: path.to_path_buf(),
                    detail: "no certificate".into(),
                });
            }
            Ok(certs)
        };
        let ca = certs("CA certificates", ca)?;
        let chain = certs("certificate chain", cert)?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(pem_err("private key", key))?;
        PeerTls::new(ca, chain, key)
    }

    /// Builds from DER: the CA certificate(s), this node's chain (its own
    /// certificate first), and its private key.
    pub fn new(
        ca: Vec<CertificateDer<'static>>,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<PeerTls, TlsError> {
        let config_err = |e: rustls::Error| TlsError::Config(e.to_string());
        // rustls 0.23.48 deprecates its ring provider because it offers no
        // post-quantum key exchange. It is kept because it builds with a C
        // compiler alone; aws-lc-rs (post-quantum, but a larger C build) is
        // the way to that, by changing this line and the crate features.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for cert in &ca {
            roots.add(cert.clone()).map_err(config_err)?;
        }
        let roots = Arc::new(roots);

        let client_verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(config_err)?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(config_err)?;
        // No session tickets: they would arrive on an idle client connection
        // unasked, and the client takes unasked bytes for a broken
        // connection (see `still_open` in `tcp/client.rs`). Connections
        // between peers are long-lived, so resumption would save little.
        server.send_tls13_tickets = 0;

        let client = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(config_err)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(CaVerifier { roots, provider }))
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(config_err)?;

        let key_der = key.secret_der().to_vec();
        let tls = PeerTls {
            inner: Arc::new(Inner { ca, chain, key_der, server: Arc::new(server), client: Arc::new(client) }),
        };
        tls.identity()?;
        Ok(tls)
    }

    /// The node this node's own certificate names.
    pub fn identity(&self) -> Result<NodeIdentity, TlsError> {
        identity_of(&self.inner.chain[0])
    }

    /// For accepting peers' connections.
    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.inner.server.clone())
    }

    /// For connecting to peers.
    pub(crate) fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.inner.client.clone())
    }
}

/// The name the client sends as SNI. Only the node id in the certificate
/// matters (checked after the handshake), so it is the same for every peer.
pub(crate) fn server_name() -> ServerName<'static> {
    ServerName::try_from("raft-peer").expect("invariant: \"raft-peer\" is a valid DNS name")
}

/// The node that `cert` names in its `raft://` URI subject alternative name.
pub fn identity_of(cert: &CertificateDer<'_>) -> Result<NodeIdentity, TlsError> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, parsed) = X509Certificate::from_der(cert).map_err(|e| TlsError::NoIdentity(e.to_string()))?;
    let san = parsed
        .subject_alternative_name()
        .map_err(|e| TlsError::NoIdentity(e.to_string()))?
        .ok_or_else(|| TlsError::NoIdentity("no subject alternative name".into()))?;
    let uri = san
        .value
        .general_names
        .iter()
        .find_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with(URI_PREFIX) => Some(*uri),
            _ => None,
        })
        .ok_or_else(|| TlsError::NoIdentity(format!("no {URI_PREFIX} URI among its names")))?;
    parse_node_uri(uri)
        .ok_or_else(|| TlsError::NoIdentity(format!("{uri:?} is not {URI_PREFIX}<cluster-id>/node/<id>")))
}

/// The inverse of [`node_uri`].
fn parse_node_uri(uri: &str) -> Option<NodeIdentity> {
    let (cluster_id, node_id) = uri.strip_prefix(URI_PREFIX)?.rsplit_once("/node/")?;
    Some(NodeIdentity { cluster_id: cluster_id.to_string(), node_id: node_id.parse().ok()? })
}

/// The node named by the first certificate a TLS peer presented.
pub(crate) fn peer_identity(certs: Option<&[CertificateDer<'_>]>) -> Result<NodeIdentity, TlsError> {
    match certs.and_then(|c| c.first()) {
        Some(cert) => identity_of(cert),
        None => Err(TlsError::NoIdentity("the peer presented no certificate".into())),
    }
}

/// Short names, so that each signature check of [`CaVerifier`] fits a line.
type Der<'a> = CertificateDer<'a>;
type Dss = DigitallySignedStruct;
type Signed = Result<HandshakeSignatureValid, rustls::Error>;

/// Checks a server's certificate chain against the cluster CA, and not its
/// host name: peers are known by node id, which the client compares with
/// the certificate's `raft://` name once the handshake is done.
#[derive(Debug)]
struct CaVerifier {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for CaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    // The handshake signatures are checked as rustls' own verifier does.
    fn verify_tls12_signature(&self, msg: &[u8], cert: &Der<'_>, dss: &Dss) -> Signed {
        verify_tls12_signature(msg, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(&self, msg: &[u8], cert: &Der<'_>, dss: &Dss) -> Signed {
        verify_tls13_signature(msg, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_uri_round_trips_even_with_slashes_in_the_cluster_id() {
        for (cluster, id) in [("c1", 3), ("a/b", 7), ("prod-eu", u64::MAX)] {
            let got = parse_node_uri(&node_uri(cluster, id)).unwrap();
            assert_eq!(got, NodeIdentity { cluster_id: cluster.into(), node_id: id });
        }
        assert_eq!(parse_node_uri("raft://c1/node/x"), None);
        assert_eq!(parse_node_uri("https://c1/node/1"), None);
    }
}
