//! Making the certificates peer TLS needs: a cluster CA, and node
//! certificates that name their node (see [`super::node_uri`]).
//!
//! A node certificate may also name the hosts it is reached at (DNS names
//! and IP addresses), so that one certificate serves both the Raft port and
//! an application's HTTPS port; and [`client_cert`] makes a certificate for
//! an application's clients, which names no node.
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
///
/// Besides its `raft://` name it names `hosts`, each a DNS name or an IP
/// address, as HTTPS clients check them (peers ignore them: they know a node
/// by its id). With no hosts, the certificate serves the Raft port only.
pub fn node_cert(
    ca: &Pem,
    cluster_id: &str,
    node_id: NodeId,
    hosts: &[String],
    validity: Validity,
) -> Result<Pem, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
    params.distinguished_name.push(DnType::CommonName, format!("{cluster_id} node {node_id}"));
    let uri = node_uri(cluster_id, node_id);
    let uri = uri.clone().try_into().map_err(|e| TlsError::Config(format!("{uri:?} as a URI name: {e}")))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    for host in hosts {
        params.subject_alt_names.push(host_name(host)?);
    }
    // Every node is a server (it accepts peers) and a client (it connects
    // to them), with the same certificate.
    signed_leaf(
        ca,
        params,
        &[ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
        validity,
    )
}

/// A client certificate named `name` (its common name), signed by the CA
/// `ca`, valid for `validity`: what an application's server may ask its
/// clients for. It names no node, so the Raft port refuses it even where
/// the Raft port and the application share one CA.
pub fn client_cert(ca: &Pem, name: &str, validity: Validity) -> Result<Pem, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
    params.distinguished_name.push(DnType::CommonName, name);
    signed_leaf(ca, params, &[ExtendedKeyUsagePurpose::ClientAuth], validity)
}

/// A subject alternative name for `host`: an IP address if it parses as
/// one, else a DNS name.
fn host_name(host: &str) -> Result<SanType, TlsError> {
    let host = host.trim();
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let valid = !host.is_empty()
        && host.len() <= 253
        && host.split('.').enumerate().all(|(i, label)| {
            // A wildcard may only be the whole leftmost label (`*.example.com`).
            (i == 0 && label == "*")
                || (!label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        });
    if !valid {
        return Err(TlsError::Config(format!("{host:?} is neither an IP address nor a DNS name")));
    }
    let name = host.try_into().map_err(|e| TlsError::Config(format!("{host:?} as a DNS name: {e}")))?;
    Ok(SanType::DnsName(name))
}

/// Signs `params` as an end-entity certificate with a new key.
fn signed_leaf(
    ca: &Pem,
    mut params: CertificateParams,
    usages: &[ExtendedKeyUsagePurpose],
    validity: Validity,
) -> Result<Pem, TlsError> {
    let ca_key = KeyPair::from_pem(&ca.key).map_err(gen_err)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, ca_key).map_err(gen_err)?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = usages.to_vec();
    set_validity(&mut params, validity);
    let key = KeyPair::generate().map_err(gen_err)?;
    let cert = params.signed_by(&key, &issuer).map_err(gen_err)?;
    Ok(Pem { cert: cert.pem(), key: key.serialize_pem() })
}

fn set_validity(params: &mut CertificateParams, v: Validity) {
    params.not_before = rcgen::date_time_ymd(v.from, 1, 1);
    params.not_after = rcgen::date_time_ymd(v.until, 1, 1);
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

    use super::*;
    use crate::network::tls::identity_of;

    fn der(pem: &Pem) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.cert.as_bytes()).unwrap()
    }

    #[test]
    fn a_node_certificate_names_its_node_and_its_hosts_for_both_usages() {
        let ca = new_ca("test CA").unwrap();
        let hosts = ["localhost".to_string(), "127.0.0.1".into(), "::1".into(), "*.kv.example".into()];
        let pem = node_cert(&ca, "kv", 4, &hosts, Validity::years_from_now(1)).unwrap();
        let cert = der(&pem);
        let named = identity_of(&cert).unwrap();
        assert_eq!((named.cluster_id.as_str(), named.node_id), ("kv", 4));

        let (_, parsed) = X509Certificate::from_der(&cert).unwrap();
        let san = parsed.subject_alternative_name().unwrap().unwrap();
        let names: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => format!("dns:{d}"),
                GeneralName::IPAddress(ip) => format!("ip:{ip:?}"),
                GeneralName::URI(u) => format!("uri:{u}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            names,
            [
                "uri:raft://kv/node/4",
                "dns:localhost",
                "ip:[127, 0, 0, 1]",
                "ip:[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]",
                "dns:*.kv.example"
            ]
        );
        let eku = parsed.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
    }

    #[test]
    fn a_client_certificate_is_for_clients_only_and_names_no_node() {
        let ca = new_ca("test CA").unwrap();
        let pem = client_cert(&ca, "alice", Validity::years_from_now(1)).unwrap();
        let cert = der(&pem);
        assert!(identity_of(&cert).is_err());
        let (_, parsed) = X509Certificate::from_der(&cert).unwrap();
        let eku = parsed.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        let cn = parsed.subject().iter_common_name().next().unwrap().as_str().unwrap().to_string();
        assert_eq!(cn, "alice");
    }

    #[test]
    fn hosts_that_are_neither_ip_addresses_nor_dns_names_are_refused() {
        let ca = new_ca("test CA").unwrap();
        for bad in ["", "a b", "-x.example", "x..example", "a.*.example", "node_1", "h\u{e9}te"] {
            let err = node_cert(&ca, "kv", 1, &[bad.to_string()], Validity::years_from_now(1)).unwrap_err();
            assert!(err.to_string().contains("neither an IP address nor a DNS name"), "{bad:?}: {err}");
        }
    }
}
