//! `jepsen test --tls`: the cluster with every security layer `kv-server`
//! has, and the harness as an authenticated client of it.
//!
//! Before the cluster starts, [`Credentials::create`] makes a new CA and
//! everything signed by it in the run's `tls/` directory, by running the
//! server binary's own tools, as an operator would (the harness never links
//! the server's code, and so also tests those tools):
//!
//! | file | made by | what |
//! |------|---------|------|
//! | `ca.pem`, `ca.key` | `kv-server certs init` | the run's CA |
//! | `node-<i>.pem`, `node-<i>.key` | `kv-server certs node --id i --cluster-id kv` | node `i`'s certificate: `raft://kv/node/i` for peer TLS, `localhost` and `127.0.0.1` for HTTPS |
//! | `client-jepsen.pem`, `client-jepsen.key` | `kv-server certs client --name jepsen` | the harness's client certificate |
//! | `tokens` | `kv-server tokens add --role admin --name jepsen` | the hash of the harness's token; the token itself, printed once, stays in memory |
//! | `cluster-secret` | `kv-server tokens secret` | the secret nodes show each other |
//!
//! Every node then runs with all of it ([`Credentials::node_args`]): mutual
//! TLS on the Raft port, HTTPS with `--client-cert-auth` on the HTTP API,
//! and bearer tokens with the cluster secret. The harness's HTTP client
//! trusts only `ca.pem`, presents `client-jepsen.pem`, and sends the token
//! in `Authorization: Bearer`. The token's role is `admin`: the workloads
//! need only `write`, but the membership fault removes nodes.
//!
//! The partition proxy ([`crate::net`]) needs nothing of this. A Raft
//! connection opens with a plaintext handshake naming both nodes, which the
//! proxy reads, and continues in TLS; the proxy forwards every byte
//! unchanged. Peer TLS names a node by its certificate's `raft://` name,
//! never by its address, so a connection through a proxy's address passes.
//! A node re-added with fresh data (`--join`) gets the same flags, and joins
//! over HTTPS with the cluster secret.
//!
//! The files are throwaway: a CA made for one run, for nodes on 127.0.0.1.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};
use kv_client::client::BearerToken;
use kv_client::tls::ClientTls;
use serde_json::{json, Value};

/// The cluster id the harness's nodes run with (`kv-server`'s default),
/// which every node certificate must name.
pub const CLUSTER_ID: &str = "kv";

/// The name of the harness's client certificate and token.
pub const CLIENT_NAME: &str = "jepsen";

/// The token file, in the credentials' directory.
const TOKEN_FILE: &str = "tokens";

/// The cluster secret file, in the credentials' directory.
const SECRET_FILE: &str = "cluster-secret";

/// What a `--tls` run's nodes and clients authenticate with. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Credentials {
    dir: PathBuf,
    client: ClientTls,
    token: BearerToken,
}

impl Credentials {
    /// Makes a CA, a certificate for each of nodes `1..=nodes`, a client
    /// certificate, an admin token and a cluster secret in `dir` (created
    /// if missing; it must not hold them already), with `server_bin`'s
    /// `certs` and `tokens` subcommands.
    ///
    /// # Errors
    /// If a subcommand fails (its message is passed on), or the files it
    /// wrote cannot be read back.
    pub fn create(server_bin: &Path, dir: &Path, nodes: u64) -> anyhow::Result<Credentials> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let run = |args: &[&str], files: &[(&str, &Path)]| -> anyhow::Result<String> {
            let mut cmd = Command::new(server_bin);
            kv_client::server_env::clear(&mut cmd).args(args);
            for (flag, path) in files {
                cmd.arg(flag).arg(path);
            }
            let out = cmd.output().with_context(|| format!("running {}", server_bin.display()))?;
            if !out.status.success() {
                bail!(
                    "`kv-server {}` failed ({}): {}",
                    args.join(" "),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            String::from_utf8(out.stdout).with_context(|| {
                format!("`kv-server {}` printed something that is not UTF-8", args.join(" "))
            })
        };
        run(&["certs", "init"], &[("--dir", dir)])?;
        for id in 1..=nodes {
            let id = id.to_string();
            run(&["certs", "node", "--id", &id, "--cluster-id", CLUSTER_ID], &[("--dir", dir)])?;
        }
        run(&["certs", "client", "--name", CLIENT_NAME], &[("--dir", dir)])?;
        let token_file = dir.join(TOKEN_FILE);
        let printed =
            run(&["tokens", "add", "--role", "admin", "--name", CLIENT_NAME], &[("--file", &token_file)])?;
        run(&["tokens", "secret"], &[("--file", &dir.join(SECRET_FILE))])?;

        // `tokens add` prints the token, and nothing else, on stdout.
        let token = match printed.split_whitespace().collect::<Vec<_>>().as_slice() {
            [token] => BearerToken::new(*token),
            _ => bail!("`kv-server tokens add` printed {printed:?}, not one token"),
        };
        let (cert, key) = client_files();
        let client = ClientTls::from_pem_files(&dir.join("ca.pem"), Some((&dir.join(cert), &dir.join(key))))
            .context("loading the harness's client certificate")?;
        Ok(Credentials { dir: dir.to_path_buf(), client, token })
    }

    /// The flags that give node `id` peer TLS, HTTPS with client
    /// certificates, and tokens. Node `id`'s certificate must exist: every
    /// id [`Credentials::create`] was asked for has one.
    pub fn node_args(&self, id: u64) -> Vec<OsString> {
        let file = |name: String| self.dir.join(name).into_os_string();
        let (ca, cert, key) =
            (file("ca.pem".into()), file(format!("node-{id}.pem")), file(format!("node-{id}.key")));
        let mut args = Vec::new();
        for (flag, path) in [
            ("--peer-ca", &ca),
            ("--peer-cert", &cert),
            ("--peer-key", &key),
            ("--tls-ca", &ca),
            ("--tls-cert", &cert),
            ("--tls-key", &key),
            ("--token-file", &file(TOKEN_FILE.into())),
            ("--cluster-secret-file", &file(SECRET_FILE.into())),
        ] {
            args.push(OsString::from(flag));
            args.push(path.clone());
        }
        args.push("--client-cert-auth".into());
        args
    }

    /// What the harness's client trusts and presents over HTTPS.
    pub fn client_tls(&self) -> &ClientTls {
        &self.client
    }

    /// The harness's admin token.
    pub fn token(&self) -> &BearerToken {
        &self.token
    }

    /// Where the files are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the nodes run with, for the report and the history.
    pub fn describe(&self) -> Value {
        json!({
            "peer_tls": true,
            "https": true,
            "client_cert_auth": true,
            "tokens": true,
            "token_role": "admin",
            "dir": self.dir,
        })
    }
}

/// The harness's client certificate and key file names.
fn client_files() -> (String, String) {
    (format!("client-{CLIENT_NAME}.pem"), format!("client-{CLIENT_NAME}.key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_tool_is_an_error_with_its_command_and_message() {
        let dir = tempfile::tempdir().unwrap();
        // `sh certs init --dir D` fails: there is no script named "certs".
        let err = Credentials::create(Path::new("/bin/sh"), dir.path(), 1).unwrap_err().to_string();
        assert!(err.contains("`kv-server certs init` failed") && err.contains("No such file"), "{err}");
        let missing = dir.path().join("no-such-kv-server");
        let err = Credentials::create(&missing, dir.path(), 1).unwrap_err().to_string();
        assert!(err.contains("running") && err.contains("no-such-kv-server"), "{err}");
    }
}
