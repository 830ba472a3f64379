//! `kv-server certs` (and `kvctl certs`, which runs it): the files peer TLS
//! and HTTPS need, made with `raft_core::network::tls::certs`.
//!
//! * `init --dir D` writes a new cluster CA: `D/ca.pem` and `D/ca.key`.
//! * `node --id N --cluster-id C [--host H ...] --dir D` writes
//!   `D/node-N.pem` and `D/node-N.key`, a certificate for node N of
//!   cluster C signed by `D`'s CA, valid for 5 years. It names the node
//!   (`raft://C/node/N`, for the Raft port) and the hosts H (for HTTPS;
//!   by default `localhost` and `127.0.0.1`), and serves both as a server
//!   and as a client certificate.
//! * `client --name NAME --dir D` writes `D/client-NAME.pem` and
//!   `D/client-NAME.key`, a client certificate for `--client-cert-auth`.
//!
//! Give each node `--peer-ca D/ca.pem --peer-cert D/node-N.pem --peer-key
//! D/node-N.key`, and for HTTPS `--tls-ca D/ca.pem --tls-cert D/node-N.pem
//! --tls-key D/node-N.key`. `ca.key` signs new nodes and clients into the
//! cluster: keep it off the nodes. Existing files are never overwritten.
//! Keys are written with mode 0600.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use raft_core::network::tls::certs::{self, Pem, Validity};
use raft_core::NodeId;

/// How long a node certificate made here is valid, in years.
pub const NODE_CERT_YEARS: i32 = 5;

/// The CA certificate's file name in a certificate directory.
pub const CA_CERT: &str = "ca.pem";
/// The CA key's file name.
pub const CA_KEY: &str = "ca.key";

/// How long a client certificate made here is valid, in years.
pub const CLIENT_CERT_YEARS: i32 = 2;

/// The hosts a node certificate names when none are given: enough for a
/// cluster on one machine, whose nodes reach each other on 127.0.0.1.
pub const DEFAULT_HOSTS: [&str; 2] = ["localhost", "127.0.0.1"];

/// Node `id`'s certificate and key file names.
pub fn node_files(id: NodeId) -> (String, String) {
    (format!("node-{id}.pem"), format!("node-{id}.key"))
}

/// Client `name`'s certificate and key file names.
pub fn client_files(name: &str) -> (String, String) {
    (format!("client-{name}.pem"), format!("client-{name}.key"))
}

/// Makes a new CA in `dir` (created if missing). Returns the files written.
pub fn init(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // A name of its own for each CA: a certificate from another cluster's
    // CA is then reported as signed by an unknown CA (UnknownIssuer,
    // curl's "unable to get local issuer certificate"), not as a bad
    // signature by a CA of the same name. The name is not a secret and need
    // not be unpredictable, only different.
    let made_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    let name = format!("kv cluster CA {:016x}", made_at ^ u64::from(std::process::id()));
    let ca = certs::new_ca(&name).context("making the CA")?;
    write_pair(dir, CA_CERT, CA_KEY, &ca)
}

/// Makes node `id`'s certificate for cluster `cluster_id`, naming `hosts`
/// (DNS names or IP addresses) for HTTPS, signed by the CA in `dir`.
/// Returns the files written.
pub fn node(dir: &Path, id: NodeId, cluster_id: &str, hosts: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    if id == 0 {
        bail!("--id must be a positive integer");
    }
    let ca = read_ca(dir)?;
    let pem = certs::node_cert(&ca, cluster_id, id, hosts, Validity::years_from_now(NODE_CERT_YEARS))
        .with_context(|| format!("making the certificate of node {id}"))?;
    let (cert, key) = node_files(id);
    write_pair(dir, &cert, &key, &pem)
}

/// Makes client `name`'s certificate, signed by the CA in `dir`, for a
/// cluster run with `--client-cert-auth`. The name becomes part of the
/// file names, so it may hold letters, digits, `-`, `_` and `.` only.
pub fn client(dir: &Path, name: &str) -> anyhow::Result<Vec<PathBuf>> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.starts_with('.') || !name.chars().all(allowed) {
        bail!("--name {name:?}: use letters, digits, '-', '_' and '.' (not first)");
    }
    let ca = read_ca(dir)?;
    let pem = certs::client_cert(&ca, name, Validity::years_from_now(CLIENT_CERT_YEARS))
        .with_context(|| format!("making the client certificate {name:?}"))?;
    let (cert, key) = client_files(name);
    write_pair(dir, &cert, &key, &pem)
}

/// The CA that `init` wrote in `dir`.
fn read_ca(dir: &Path) -> anyhow::Result<Pem> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).with_context(|| {
            format!("reading {} (make a CA first: certs init --dir {})", path.display(), dir.display())
        })
    };
    Ok(Pem { cert: read(CA_CERT)?, key: read(CA_KEY)? })
}

fn write_pair(dir: &Path, cert: &str, key: &str, pem: &Pem) -> anyhow::Result<Vec<PathBuf>> {
    let (cert, key) = (dir.join(cert), dir.join(key));
    for path in [&cert, &key] {
        if path.exists() {
            bail!("{} exists; not overwriting it", path.display());
        }
    }
    write_new(&key, &pem.key, 0o600)?;
    write_new(&cert, &pem.cert, 0o644)?;
    Ok(vec![cert, key])
}

fn write_new(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    file.sync_all().with_context(|| format!("syncing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_core::network::PeerTls;

    #[test]
    fn init_then_node_makes_files_that_load_and_name_the_node() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path()).unwrap();
        let written = node(dir.path(), 3, "prod", &[]).unwrap();
        assert_eq!(written, vec![dir.path().join("node-3.pem"), dir.path().join("node-3.key")]);
        let tls = PeerTls::from_pem_files(&dir.path().join(CA_CERT), &written[0], &written[1]).unwrap();
        let named = tls.identity().unwrap();
        assert_eq!((named.cluster_id.as_str(), named.node_id), ("prod", 3));
        // Never overwrites.
        let err = node(dir.path(), 3, "prod", &[]).unwrap_err();
        assert!(err.to_string().contains("exists; not overwriting"), "{err}");
        let err = init(dir.path()).unwrap_err();
        assert!(err.to_string().contains("exists; not overwriting"), "{err}");
    }

    #[test]
    fn node_without_a_ca_says_to_make_one() {
        let dir = tempfile::tempdir().unwrap();
        let err = format!("{:#}", node(dir.path(), 1, "kv", &[]).unwrap_err());
        assert!(err.contains("make a CA first"), "{err}");
        let err = format!("{:#}", client(dir.path(), "alice").unwrap_err());
        assert!(err.contains("make a CA first"), "{err}");
    }

    #[test]
    fn client_writes_a_pair_named_for_the_client_and_refuses_unsafe_names() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path()).unwrap();
        let written = client(dir.path(), "alice").unwrap();
        assert_eq!(written, vec![dir.path().join("client-alice.pem"), dir.path().join("client-alice.key")]);
        for bad in ["", "../x", "a/b", ".hidden", "a b"] {
            let err = client(dir.path(), bad).unwrap_err();
            assert!(err.to_string().contains("use letters, digits"), "{bad:?}: {err}");
        }
    }
}
