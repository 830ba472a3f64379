//! HTTPS: what a client trusts, and what it presents.
//!
//! A kv-server started with `--tls-cert` serves its HTTP API over TLS only.
//! To talk to it, a client needs [`ClientTls`]: the CA certificate(s) that
//! signed the servers' certificates (`kvctl --cacert`), and, for a cluster
//! run with `--client-cert-auth`, a certificate and key of its own signed by
//! the cluster's CA (`kvctl --cert`, `--key`).
//!
//! The client trusts *only* the CA it is given, not the system's trust
//! store: a cluster's certificates come from its own CA (`kvctl certs`).
//! It checks the host name as every HTTPS client does: the certificate must
//! name the host of the endpoint (`kvctl certs node --host`).
//!
//! # Why every HTTP client in this workspace is built here
//!
//! reqwest is built with its `rustls-no-provider` feature: rustls with the
//! `ring` provider (which builds with a C compiler alone), configured here,
//! instead of reqwest's default aws-lc-rs. Cargo unifies features, so *every*
//! reqwest client linked with this crate has that TLS backend, and building
//! one without a preconfigured rustls configuration panics ("No rustls
//! crypto provider is configured"). [`http_client_builder`] is the one way
//! to make a reqwest client here; the workspace's `clippy.toml` forbids
//! `reqwest::Client::new` and `reqwest::Client::builder` everywhere else.
//!
//! # What a TLS failure looks like
//!
//! [`describe`] turns rustls' errors into sentences that say what to change:
//! the server's certificate is signed by another CA, names another host, or
//! has expired; the server wants a client certificate, or does not trust
//! the one it got. The client reports them as
//! [`ClientError::Tls`](crate::client::ClientError::Tls).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{AlertDescription, CertificateError, RootCertStore};

/// Why a [`ClientTls`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// A PEM file could not be read, or holds no certificate or key.
    #[error("reading {what} from {path}: {detail}")]
    Pem {
        /// "CA certificates", "certificate chain" or "private key".
        what: &'static str,
        /// The file, or "(memory)" for PEM given as bytes.
        path: String,
        /// What went wrong.
        detail: String,
    },
    /// rustls refused the certificates or the key: a CA certificate it
    /// cannot parse, a key that does not match the certificate, an
    /// unsupported algorithm.
    #[error("invalid TLS configuration: {0}")]
    Invalid(String),
}

/// What a client trusts and presents over HTTPS. Cheap to clone.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
    ca_certificates: usize,
    has_identity: bool,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("ClientTls")
            .field("ca_certificates", &self.ca_certificates)
            .field("client_certificate", &self.has_identity)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Trusts the CA certificate(s) in the PEM file `ca`; presents the
    /// certificate chain in `identity.0` with the private key in
    /// `identity.1` (PKCS#8, PKCS#1 or SEC1) when a server asks for one.
    pub fn from_pem_files(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<ClientTls, TlsConfigError> {
        let ca = read_certs("CA certificates", ca)?;
        let identity = match identity {
            Some((cert, key)) => Some((read_certs("certificate chain", cert)?, read_key(key)?)),
            None => None,
        };
        ClientTls::new(ca, identity)
    }

    /// Like [`ClientTls::from_pem_files`], with the PEM text given.
    pub fn from_pem(ca: &[u8], identity: Option<(&[u8], &[u8])>) -> Result<ClientTls, TlsConfigError> {
        let certs = |what, pem: &[u8]| {
            let certs = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| pem_error(what, "(memory)", e))?;
            non_empty(what, "(memory)", certs)
        };
        let ca = certs("CA certificates", ca)?;
        let identity = match identity {
            Some((cert, key)) => Some((
                certs("certificate chain", cert)?,
                PrivateKeyDer::from_pem_slice(key).map_err(|e| pem_error("private key", "(memory)", e))?,
            )),
            None => None,
        };
        ClientTls::new(ca, identity)
    }

    /// Builds from DER: the CA certificate(s) to trust, and optionally a
    /// certificate chain (its own certificate first) and its key.
    pub fn new(
        ca: Vec<CertificateDer<'static>>,
        identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    ) -> Result<ClientTls, TlsConfigError> {
        let invalid = |e: rustls::Error| TlsConfigError::Invalid(e.to_string());
        let mut roots = RootCertStore::empty();
        for cert in &ca {
            roots.add(cert.clone()).map_err(invalid)?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(invalid)?
            .with_root_certificates(roots);
        let has_identity = identity.is_some();
        let mut config = match identity {
            Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(invalid)?,
            None => builder.with_no_client_auth(),
        };
        // kv-server speaks HTTP/1.1 (reqwest is built without HTTP/2).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ClientTls { config: Arc::new(config), ca_certificates: ca.len(), has_identity })
    }

    /// Whether this client presents a certificate of its own.
    pub fn has_client_certificate(&self) -> bool {
        self.has_identity
    }

    /// The rustls configuration, for clients other than reqwest.
    pub fn rustls_config(&self) -> Arc<rustls::ClientConfig> {
        self.config.clone()
    }
}

/// The rustls crypto provider of every TLS configuration in this workspace.
///
/// rustls 0.23.48 deprecates its ring provider because it offers no
/// post-quantum key exchange. It is kept because it builds with a C
/// compiler alone (raft-core's peer TLS makes the same choice).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A reqwest client builder with this workspace's TLS backend: with `tls`,
/// it speaks HTTPS trusting `tls`'s CA; without, it trusts no certificate
/// at all, so only `http://` URLs work. See the module docs for why every
/// reqwest client must start here.
pub fn http_client_builder(tls: Option<&ClientTls>) -> reqwest::ClientBuilder {
    let config = match tls {
        Some(tls) => (*tls.config).clone(),
        None => rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("invariant: the ring provider supports the default protocol versions")
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth(),
    };
    // The one allowed use (see the workspace's clippy.toml).
    #[allow(clippy::disallowed_methods)]
    reqwest::Client::builder().tls_backend_preconfigured(config)
}

/// The TLS error behind a failed request, if TLS is why it failed: rustls'
/// own error, found in the chain of causes. tokio-rustls wraps it in a
/// `std::io::Error`, and hyper-rustls wraps that in another; an
/// `io::Error`'s `source` skips the error it wraps, so this follows
/// `get_ref` through those instead.
pub fn tls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cause = Some(e);
    while let Some(e) = cause {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        cause = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

/// What a TLS failure means for whoever configured the client, followed by
/// rustls' own words.
pub fn describe(e: &rustls::Error) -> String {
    use rustls::Error as E;
    let meaning = match e {
        // BadSignature: issued in the name of the trusted CA, but signed
        // with another key (another CA of the same name).
        E::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature) => {
            "the server's certificate is not signed by the CA this client trusts (--cacert)"
        }
        E::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => "the server's certificate does not name the host in the endpoint (kv-server certs node --host)",
        E::InvalidCertificate(
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. },
        ) => "the server's certificate is outside its validity period",
        E::InvalidCertificate(_) => "the server's certificate was refused",
        E::AlertReceived(AlertDescription::CertificateRequired) => {
            "the server requires a client certificate (--cert and --key)"
        }
        E::AlertReceived(
            AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateExpired
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::AccessDenied
            | AlertDescription::DecryptError,
        ) => "the server refused this client's certificate (is it signed by the cluster's CA, and valid?)",
        E::AlertReceived(_) => "the server ended the TLS handshake",
        E::InvalidMessage(_) | E::InappropriateMessage { .. } | E::InappropriateHandshakeMessage { .. } => {
            "the server does not speak TLS here (is this endpoint plain http://?)"
        }
        _ => "the TLS handshake failed",
    };
    format!("{meaning} ({e})")
}

/// Reads the certificates in the PEM file `path` (at least one); `what`
/// names them in errors ("CA certificates"). kv-server reads its own with
/// it too.
pub fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let shown = path.display().to_string();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(what, &shown, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(what, &shown, e))?;
    non_empty(what, &shown, certs)
}

/// Reads the private key (PKCS#8, PKCS#1 or SEC1) in the PEM file `path`.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| pem_error("private key", &path.display().to_string(), e))
}

fn non_empty(
    what: &'static str,
    path: &str,
    certs: Vec<CertificateDer<'static>>,
) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    if certs.is_empty() {
        return Err(TlsConfigError::Pem { what, path: path.into(), detail: "no certificate in it".into() });
    }
    Ok(certs)
}

fn pem_error(what: &'static str, path: &str, e: rustls::pki_types::pem::Error) -> TlsConfigError {
    TlsConfigError::Pem { what, path: path.into(), detail: e.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_without_a_certificate_is_refused_with_what_was_wanted() {
        let err = ClientTls::from_pem(b"not pem", None).unwrap_err();
        assert!(err.to_string().contains("reading CA certificates from (memory)"), "{err}");
        let err = ClientTls::from_pem_files(Path::new("/nonexistent/ca.pem"), None).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn tls_errors_are_found_inside_io_errors_and_explained() {
        let inner = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, inner);
        // As hyper-rustls hands it on: an io::Error in an io::Error.
        let io = std::io::Error::other(io);
        let found = tls_error(&io).unwrap();
        assert!(describe(found).contains("not signed by the CA this client trusts"), "{}", describe(found));
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(tls_error(&plain).is_none());
        let required = rustls::Error::AlertReceived(AlertDescription::CertificateRequired);
        assert!(describe(&required).contains("--cert and --key"));
    }

    #[test]
    fn the_builder_without_tls_still_builds_a_client() {
        // Without the preconfigured backend, building panics (module docs).
        http_client_builder(None).build().unwrap();
    }
}
