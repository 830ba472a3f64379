//! `kv-server certs` (and `kvctl certs`, which runs it): the files peer TLS
//! needs, made with `raft_core::network::tls::certs`.
//!
//! * `init --dir D` writes a new cluster CA: `D/ca.pem` and `D/ca.key`.
//! * `node --id N --cluster-id C --dir D` writes `D/node-N.pem` and
//!   `D/node-N.key`, a certificate for node N of cluster C signed by
//!   `D`'s CA, valid for 5 years.
//!
//! Give each node `--peer-ca D/ca.pem --peer-cert D/node-N.pem --peer-key
//! D/node-N.key`. `ca.key` signs new nodes into the cluster: keep it off
//! the nodes. Existing files are never overwritten. Keys are written with
//! mode 0600.

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

/// Node `id`'s certificate and key file names.
pub fn node_files(id: NodeId) -> (String, String) {
    (format!("node-{id}.pem"), format!("node-{id}.key"))
}

/// Makes a new CA in `dir` (created if missing). Returns the files written.
pub fn init(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca = certs::new_ca("kv cluster CA").context("making the CA")?;
    write_pair(dir, CA_CERT, CA_KEY, &ca)
}

/// Makes node `id`'s certificate for cluster `cluster_id`, signed by the
/// CA in `dir`. Returns the files written.
pub fn node(dir: &Path, id: NodeId, cluster_id: &str) -> anyhow::Result<Vec<PathBuf>> {
    if id == 0 {
        bail!("--id must be a positive integer");
    }
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).with_context(|| {
            format!("reading {} (make a CA first: certs init --dir {})", path.display(), dir.display())
        })
    };
    let ca = Pem { cert: read(CA_CERT)?, key: read(CA_KEY)? };
    let pem = certs::node_cert(&ca, cluster_id, id, Validity::years_from_now(NODE_CERT_YEARS))
        .with_context(|| format!("making the certificate of node {id}"))?;
    let (cert, key) = node_files(id);
    write_pair(dir, &cert, &key, &pem)
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
        let written = node(dir.path(), 3, "prod").unwrap();
        assert_eq!(written, vec![dir.path().join("node-3.pem"), dir.path().join("node-3.key")]);
        let tls = PeerTls::from_pem_files(&dir.path().join(CA_CERT), &written[0], &written[1]).unwrap();
        let named = tls.identity().unwrap();
        assert_eq!((named.cluster_id.as_str(), named.node_id), ("prod", 3));
        // Never overwrites.
        let err = node(dir.path(), 3, "prod").unwrap_err();
        assert!(err.to_string().contains("exists; not overwriting"), "{err}");
        let err = init(dir.path()).unwrap_err();
        assert!(err.to_string().contains("exists; not overwriting"), "{err}");
    }

    #[test]
    fn node_without_a_ca_says_to_make_one() {
        let dir = tempfile::tempdir().unwrap();
        let err = format!("{:#}", node(dir.path(), 1, "kv").unwrap_err());
        assert!(err.contains("make a CA first"), "{err}");
    }
}
