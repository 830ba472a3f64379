//! Making the certificates peer TLS needs: a cluster CA, and node
//! certificates that name their node (see [`super::node_uri`]).
//!
//! For tools (`kvctl certs`) and tests. Keys are ECDSA P-256. A production
//! deployment may well use its own PKI instead; any CA works, as long as
//! each node certificate carries the `raft://<cluster-id>/node/<id>` URI
//! subject alternative name and both the server and the client extended
//! key usages.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use super::{node_uri, TlsError};
use crate::types::NodeId;

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct Pem {
    /// The certificate.
    pub cert: String,
    /// The private key (PKCS#8). A secret.
    pub key: String,
}

/// Years from January 1st of `from` to January 1st of `until`: a
/// certificate's validity period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// Valid from January 1st of this year.
    pub from: i32,
    /// Valid until January 1st of this year.
    pub until: i32,
}

impl Validity {
    /// From January 1st of the current year, for `years` years.
    pub fn years_from_now(years: i32) -> Validity {
        // Seconds per mean Gregorian year; a day's error does not matter,
        // as the period starts on January 1st.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let year = 1970 + (now / 31_556_952) as i32;
        Validity { from: year, until: year + years }
    }
}

fn gen_err(e: rcgen::Error) -> TlsError {
    TlsError::Config(format!("generating a certificate: {e}"))
}

/// A new self-signed cluster CA named `name`, valid for 10 years.
pub fn new_ca(name: &str) -> Result<Pem, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut params, Validity::years_from_now(10));
    let key = KeyPair::generate().map_err(gen_err)?;
    let cert = params.self_signed(&key).map_err(gen_err)?;
    Ok(Pem { cert: cert.pem(), key: key.serialize_pem() })
}

/// A certificate for node `node_id` of cluster `cluster_id`, signed by the
/// CA `ca`, valid for `validity`.
pub fn node_cert(ca: &Pem, cluster_id: &str, node_id: NodeId, validity: Validity) -> Result<Pem, TlsError> {
    let ca_key = KeyPair::from_pem(&ca.key).map_err(gen_err)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, ca_key).map_err(gen_err)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
    params.distinguished_name.push(DnType::CommonName, format!("{cluster_id} node {node_id}"));
    let uri = node_uri(cluster_id, node_id);
    let uri = uri.clone().try_into().map_err(|e| TlsError::Config(format!("{uri:?} as a URI name: {e}")))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Every node is a server (it accepts peers) and a client (it connects
    // to them), with the same certificate.
    params.extended_key_usages =
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    set_validity(&mut params, validity);
    let key = KeyPair::generate().map_err(gen_err)?;
    let cert = params.signed_by(&key, &issuer).map_err(gen_err)?;
    Ok(Pem { cert: cert.pem(), key: key.serialize_pem() })
}

fn set_validity(params: &mut CertificateParams, v: Validity) {
    params.not_before = rcgen::date_time_ymd(v.from, 1, 1);
    params.not_after = rcgen::date_time_ymd(v.until, 1, 1);
}
