//! The bearer tokens of the HTTP API and the cluster secret: their files,
//! and `kv-server tokens` (which `kvctl tokens` runs), the tool that edits
//! them.
//!
//! # The token file
//!
//! `kv-server --token-file F` reads one token per line, as three fields
//! separated by spaces or tabs:
//!
//! ```text
//! # ROLE  NAME     HASH
//! admin   ops      sha256:1f0c…(64 hex digits)
//! read    grafana  sha256:9a47…
//! ```
//!
//! * `ROLE` is `read`, `write` or `admin`. Each includes the ones before it:
//!   a `write` token may read, an `admin` token may write ([`Role`]).
//! * `NAME` says whose token it is (1 to 64 of `A-Z a-z 0-9 . _ @ -`), for
//!   logs and for `tokens remove`; it is unique in the file.
//! * `HASH` is `sha256:` and the SHA-256 digest of the token, in hex. The
//!   token itself is stored nowhere: `tokens add` prints it once.
//!
//! Lines starting with `#` and blank lines are ignored. Any other line that
//! does not read as above makes the whole file malformed, and the error
//! names the line: a server refuses to start with it, and keeps its old
//! tokens if it was asked to reload it.
//!
//! # Why SHA-256 and not a password hash
//!
//! Passwords are stored with a deliberately slow hash (bcrypt, scrypt,
//! Argon2) because people choose them from a small space: whoever steals
//! the file can try every likely password against it. A token made here is
//! 32 bytes from the operating system's random generator, 2^256 candidates:
//! no number of guesses per second makes a search of that space end, so a
//! slow hash would add nothing but milliseconds of CPU to every request.
//! SHA-256 is one-way, so a stolen token file does not give the tokens
//! away. (This reasoning holds only for random tokens. A token file with a
//! hash of a human-chosen word would deserve a slow hash.)
//!
//! # The cluster secret
//!
//! `--cluster-secret-file F` holds the secret the nodes show each other on
//! the HTTP routes only nodes call (`server::auth`): one secret per line,
//! each at least [`MIN_SECRET_CHARS`] characters, `#` comments allowed.
//! A node sends the first and accepts any, which is what lets the secret
//! be changed without downtime: add a new one last, reload every node,
//! then retire the first, and reload again. Unlike the token file it holds
//! the secret itself (every node must be able to send it), so it is
//! written with mode 0600 and must be kept like a private key.
//!
//! # Comparing in constant time
//!
//! A presented token or secret is hashed, and its digest compared with
//! every stored digest with [`subtle`], which takes the same time whether
//! the first or the last byte differs; the loop does not stop at a match.
//! A response's timing therefore says nothing about how close a guess was.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context as _};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// The prefix of every token made here, so that a person (or a secret
/// scanner) recognizes one. The server does not check it.
pub const TOKEN_PREFIX: &str = "kv_";

/// Random bytes in a token or a secret made here: 256 bits.
pub const RANDOM_BYTES: usize = 32;

/// The shortest cluster secret accepted, in characters: 128 bits in hex. A
/// shorter one could be a word someone typed.
pub const MIN_SECRET_CHARS: usize = 32;

/// The longest token name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// What a token may do. Ordered: each role includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads: keys, listings, cluster status and members, `/metrics`.
    Read,
    /// Also writes: put, delete, compare-and-swap.
    Write,
    /// Also membership changes, snapshots and elections.
    Admin,
}

impl Role {
    /// Whether a token of this role may do what needs `needed`.
    pub fn includes(self, needed: Role) -> bool {
        self >= needed
    }

    /// The name used in the token file.
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "read" => Ok(Role::Read),
            "write" => Ok(Role::Write),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role {other:?}: use read, write or admin")),
        }
    }
}

/// The SHA-256 digest of a token or secret.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest of `secret`'s UTF-8 bytes.
    pub fn of(secret: &str) -> Digest {
        Digest(Sha256::digest(secret.as_bytes()).into())
    }

    /// Whether two digests are equal, in time that does not depend on
    /// where they differ.
    pub fn matches(&self, other: &Digest) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    /// Parses `sha256:` and 64 hex digits.
    fn parse(s: &str) -> Result<Digest, String> {
        let hex = s.strip_prefix("sha256:").ok_or_else(|| format!("{s:?} does not start with sha256:"))?;
        if hex.len() != 64 {
            return Err(format!("the hash has {} hex digits after sha256:; SHA-256 has 64", hex.len()));
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|_| format!("the hash {hex:?} is not hexadecimal"))?;
        }
        Ok(Digest(bytes))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// One line of the token file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEntry {
    /// What the token may do.
    pub role: Role,
    /// Whose it is.
    pub name: String,
    /// The digest of the token.
    pub digest: Digest,
}

/// Why a token file or a secret file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The file could not be read (missing, no permission).
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line does not follow the file's format.
    #[error("{}, line {line}: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The line's number, from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A cluster secret file holds no secret.
    #[error("{}: no cluster secret in it (make one with `kv-server tokens secret --file {0}`)", path.display())]
    NoSecret {
        /// The file.
        path: PathBuf,
    },
}

/// The tokens a server accepts: a parsed token file.
#[derive(Debug, Clone, Default)]
pub struct TokenFile {
    entries: Vec<TokenEntry>,
}

impl TokenFile {
    /// Reads and parses the token file at `path`.
    pub fn load(path: &Path) -> Result<TokenFile, FileError> {
        TokenFile::parse_from(path, &read(path)?)
    }

    /// Parses `text`, read from `path`.
    fn parse_from(path: &Path, text: &str) -> Result<TokenFile, FileError> {
        TokenFile::parse(text).map_err(|(line, reason)| FileError::Malformed {
            path: path.to_owned(),
            line,
            reason,
        })
    }

    /// Parses a token file's text; an error names the line (from 1).
    pub fn parse(text: &str) -> Result<TokenFile, (usize, String)> {
        let mut entries: Vec<TokenEntry> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let Some(entry) = parse_line(line).map_err(|reason| (i + 1, reason))? else { continue };
            if entries.iter().any(|e| e.name == entry.name) {
                return Err((i + 1, format!("the name {:?} is already used by an earlier line", entry.name)));
            }
            if entries.iter().any(|e| e.digest.matches(&entry.digest)) {
                return Err((i + 1, "the same token hash appears on an earlier line".into()));
            }
            entries.push(entry);
        }
        Ok(TokenFile { entries })
    }

    /// The entry of `token`, if it is one of these. Compares with every
    /// entry, in constant time each, before answering.
    pub fn find(&self, token: &str) -> Option<&TokenEntry> {
        let digest = Digest::of(token);
        let mut found = None;
        for entry in &self.entries {
            if entry.digest.matches(&digest) {
                found = Some(entry);
            }
        }
        found
    }

    /// Every entry, in file order.
    pub fn entries(&self) -> &[TokenEntry] {
        &self.entries
    }

    /// How many tokens have `role`.
    pub fn count(&self, role: Role) -> usize {
        self.entries.iter().filter(|e| e.role == role).count()
    }
}

/// A comment or blank line: `None`; otherwise the entry, or what is wrong.
fn parse_line(line: &str) -> Result<Option<TokenEntry>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [role, name, hash] = fields[..] else {
        return Err(format!("expected ROLE NAME HASH, found {} field(s)", fields.len()));
    };
    let role: Role = role.parse()?;
    check_name(name)?;
    let digest = Digest::parse(hash)?;
    Ok(Some(TokenEntry { role, name: name.to_owned(), digest }))
}

/// A token name: 1 to [`MAX_NAME_CHARS`] of `A-Z a-z 0-9 . _ @ -`.
pub fn check_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-');
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || !name.chars().all(allowed) {
        return Err(format!(
            "the name {name:?} is not 1 to {MAX_NAME_CHARS} of the characters A-Z a-z 0-9 . _ @ -"
        ));
    }
    Ok(())
}

/// The secrets a node accepts from its peers; it sends the first.
#[derive(Clone)]
pub struct ClusterSecrets {
    send: String,
    accept: Vec<Digest>,
}

impl fmt::Debug for ClusterSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterSecrets({} accepted, values hidden)", self.accept.len())
    }
}

impl ClusterSecrets {
    /// Reads and parses the cluster secret file at `path`.
    pub fn load(path: &Path) -> Result<ClusterSecrets, FileError> {
        let text = read(path)?;
        let malformed = |line, reason| FileError::Malformed { path: path.to_owned(), line, reason };
        let mut secrets = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.contains(char::is_whitespace) {
                return Err(malformed(i + 1, "a secret is one word, without spaces".into()));
            }
            if line.chars().count() < MIN_SECRET_CHARS || !line.is_ascii() {
                return Err(malformed(
                    i + 1,
                    format!("a secret is at least {MIN_SECRET_CHARS} ASCII characters"),
                ));
            }
            secrets.push(line.to_owned());
        }
        let Some(send) = secrets.first().cloned() else {
            return Err(FileError::NoSecret { path: path.to_owned() });
        };
        Ok(ClusterSecrets { send, accept: secrets.iter().map(|s| Digest::of(s)).collect() })
    }

    /// The secret this node sends to its peers.
    pub fn to_send(&self) -> &str {
        &self.send
    }

    /// Whether `presented` is one of the secrets, compared in constant
    /// time with each.
    pub fn accepts(&self, presented: &str) -> bool {
        let digest = Digest::of(presented);
        self.accept.iter().fold(false, |found, d| d.matches(&digest) | found)
    }

    /// How many secrets are accepted.
    pub fn count(&self) -> usize {
        self.accept.len()
    }
}

fn read(path: &Path) -> Result<String, FileError> {
    std::fs::read_to_string(path).map_err(|source| FileError::Read { path: path.to_owned(), source })
}

/// [`RANDOM_BYTES`] from the operating system's generator, in hex.
fn random_hex() -> String {
    let mut bytes = [0u8; RANDOM_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new token: [`TOKEN_PREFIX`] and 256 random bits in hex.
pub fn new_token() -> String {
    format!("{TOKEN_PREFIX}{}", random_hex())
}

/// The first lines of a token file made by `tokens add`.
const TOKEN_FILE_HEADER: &str = "\
# kv-server token file (--token-file): ROLE NAME HASH, one token per line.
# Made and edited by `kv-server tokens`; see docs/security.md.
";

/// The first lines of a cluster secret file made by `tokens secret`.
const SECRET_FILE_HEADER: &str = "\
# kv-server cluster secret (--cluster-secret-file): nodes send the first
# secret to each other and accept any. Keep this file like a private key.
";

/// `tokens add`: makes a token with `role` named `name`, appends its line
/// to the token file at `path` (created, mode 0600, if missing), and
/// returns the token. Refuses a file that does not parse and a name that
/// is taken.
pub fn add(path: &Path, role: Role, name: &str) -> anyhow::Result<String> {
    check_name(name).map_err(anyhow::Error::msg)?;
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let token = new_token();
    let line = format!("{role} {name} {}\n", Digest::of(&token));
    match existing {
        None => write_new(path, &format!("{TOKEN_FILE_HEADER}{line}"))?,
        Some(text) => {
            let tokens = TokenFile::parse_from(path, &text)?;
            if tokens.entries.iter().any(|e| e.name == name) {
                bail!(
                    "{} already has a token named {name:?}; remove it first or pick another name",
                    path.display()
                );
            }
            let separator = if text.is_empty() || text.ends_with('\n') { "" } else { "\n" };
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?;
            file.write_all(format!("{separator}{line}").as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(token)
}

/// `tokens list`: the entries of the token file at `path`.
pub fn list(path: &Path) -> anyhow::Result<Vec<TokenEntry>> {
    Ok(TokenFile::load(path)?.entries)
}

/// `tokens remove`: rewrites the token file at `path` without the line of
/// the token named `name`, keeping every other line (comments included)
/// as it was. Returns the removed entry. The new file replaces the old one
/// by a rename, so a server reloading meanwhile reads one or the other.
pub fn remove(path: &Path, name: &str) -> anyhow::Result<TokenEntry> {
    let text = read(path)?;
    TokenFile::parse_from(path, &text)?;
    let mut removed = None;
    let mut kept = String::with_capacity(text.len());
    for line in text.lines() {
        match parse_line(line) {
            Ok(Some(entry)) if entry.name == name => removed = Some(entry),
            _ => {
                kept.push_str(line);
                kept.push('\n');
            }
        }
    }
    let Some(removed) = removed else {
        bail!("{} has no token named {name:?} (`tokens list` shows the names)", path.display());
    };
    replace(path, &kept)?;
    Ok(removed)
}

/// How `tokens secret` changes a cluster secret file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretChange {
    /// Make a new file with one new secret.
    Create,
    /// Append a new secret to an existing file: accepted at once, sent
    /// once the ones before it are retired.
    Add,
    /// Remove the first (oldest) secret, so that the next one is sent.
    RetireFirst,
}

/// `tokens secret`: makes or changes the cluster secret file at `path`
/// (always mode 0600). Returns how many secrets it holds afterwards.
pub fn change_secret(path: &Path, change: SecretChange) -> anyhow::Result<usize> {
    match change {
        SecretChange::Create => {
            if path.exists() {
                bail!("{} exists; not overwriting it (--add adds a secret to it)", path.display());
            }
            write_new(path, &format!("{SECRET_FILE_HEADER}{}\n", random_hex()))?;
        }
        SecretChange::Add => {
            let text = read(path)?;
            ClusterSecrets::load(path)?;
            let separator = if text.ends_with('\n') { "" } else { "\n" };
            replace(path, &format!("{text}{separator}{}\n", random_hex()))?;
        }
        SecretChange::RetireFirst => {
            let text = read(path)?;
            if ClusterSecrets::load(path)?.count() < 2 {
                bail!("{} holds one secret; --add a new one before retiring the old", path.display());
            }
            let mut retired = false;
            let mut kept = String::with_capacity(text.len());
            for line in text.lines() {
                let trimmed = line.trim();
                if !retired && !trimmed.is_empty() && !trimmed.starts_with('#') {
                    retired = true;
                    continue;
                }
                kept.push_str(line);
                kept.push('\n');
            }
            replace(path, &kept)?;
        }
    }
    Ok(ClusterSecrets::load(path)?.count())
}

/// Creates `path` with `text`, mode 0600; fails if it exists.
fn write_new(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// Replaces `path` with `text` through a temporary file in the same
/// directory and a rename, keeping the file's permissions.
fn replace(path: &Path, text: &str) -> anyhow::Result<()> {
    let name = path.file_name().with_context(|| format!("{} names no file", path.display()))?;
    let tmp = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    let _ = std::fs::remove_file(&tmp);
    write_new(&tmp, text)?;
    let permissions = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    std::fs::set_permissions(&tmp, permissions.permissions())
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("replacing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash_of(token: &str) -> String {
        Digest::of(token).to_string()
    }

    #[test]
    fn roles_include_the_roles_below_them() {
        assert!(Role::Admin.includes(Role::Write) && Role::Admin.includes(Role::Read));
        assert!(Role::Write.includes(Role::Read) && !Role::Write.includes(Role::Admin));
        assert!(!Role::Read.includes(Role::Write));
        for role in [Role::Read, Role::Write, Role::Admin] {
            assert_eq!(role.name().parse::<Role>(), Ok(role));
        }
        assert!("root".parse::<Role>().unwrap_err().contains("use read, write or admin"));
    }

    #[test]
    fn digest_prints_as_sha256_hex_and_parses_back() {
        // SHA-256 of "abc", from FIPS 180-2's examples.
        let d = Digest::of("abc");
        assert_eq!(d.to_string(), "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(Digest::parse(&d.to_string()), Ok(d));
        assert!(Digest::parse("md5:00").unwrap_err().contains("does not start with sha256:"));
        assert!(Digest::parse("sha256:abcd").unwrap_err().contains("has 4 hex digits"));
        assert!(Digest::parse(&format!("sha256:{}", "zz".repeat(32)))
            .unwrap_err()
            .contains("not hexadecimal"));
    }

    #[test]
    fn a_token_file_with_comments_and_blank_lines_finds_each_token() {
        let text = format!(
            "# a comment\n\nadmin ops {}\n  read\tgrafana   {}  \n# read old {}\n",
            hash_of("t-admin"),
            hash_of("t-read"),
            hash_of("t-old")
        );
        let file = TokenFile::parse(&text).unwrap();
        assert_eq!(file.entries().len(), 2);
        assert_eq!(file.find("t-admin").map(|e| (e.role, e.name.as_str())), Some((Role::Admin, "ops")));
        assert_eq!(file.find("t-read").map(|e| (e.role, e.name.as_str())), Some((Role::Read, "grafana")));
        assert!(file.find("t-old").is_none(), "a commented-out line grants nothing");
        assert!(file.find("").is_none() && file.find("t-admin ").is_none());
        assert_eq!((file.count(Role::Admin), file.count(Role::Write), file.count(Role::Read)), (1, 0, 1));
    }

    #[test]
    fn each_malformed_line_is_named_with_what_is_wrong() {
        let good = hash_of("x");
        let cases = [
            (format!("read a {good} extra"), 1, "expected ROLE NAME HASH, found 4 field(s)"),
            (format!("# c\nroot a {good}"), 2, "unknown role \"root\""),
            (format!("\n\nread a b {good}"), 3, "found 4 field(s)"),
            (format!("read a {good}\nwrite a {}", hash_of("y")), 2, "already used by an earlier line"),
            (format!("read a {good}\nwrite b {good}"), 2, "the same token hash"),
            ("read a 0123".to_string(), 1, "does not start with sha256:"),
            (format!("read a/b {good}"), 1, "is not 1 to 64 of the characters"),
            (format!("read {} {good}", "n".repeat(65)), 1, "is not 1 to 64"),
            ("read a".to_string(), 1, "found 2 field(s)"),
        ];
        for (text, line, reason) in cases {
            let (got_line, got) = TokenFile::parse(&text).unwrap_err();
            assert_eq!(got_line, line, "{text:?}: {got}");
            assert!(got.contains(reason), "{text:?}: {got:?} lacks {reason:?}");
        }
    }

    #[test]
    fn add_list_and_remove_edit_the_file_and_keep_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let admin = add(&path, Role::Admin, "ops").unwrap();
        let reader = add(&path, Role::Read, "grafana").unwrap();
        assert!(admin.starts_with(TOKEN_PREFIX) && admin.len() == TOKEN_PREFIX.len() + 2 * RANDOM_BYTES);
        assert_ne!(admin, reader);
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);

        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&admin) && !text.contains(&reader), "the file holds hashes, never tokens");
        let file = TokenFile::load(&path).unwrap();
        assert_eq!(file.find(&admin).unwrap().name, "ops");
        assert_eq!(file.find(&reader).unwrap().role, Role::Read);

        let err = add(&path, Role::Write, "ops").unwrap_err().to_string();
        assert!(err.contains("already has a token named \"ops\""), "{err}");
        let names: Vec<_> = list(&path).unwrap().into_iter().map(|e| (e.name, e.role)).collect();
        assert_eq!(names, [("ops".to_string(), Role::Admin), ("grafana".to_string(), Role::Read)]);

        assert_eq!(remove(&path, "ops").unwrap().role, Role::Admin);
        let file = TokenFile::load(&path).unwrap();
        assert!(file.find(&admin).is_none() && file.find(&reader).is_some());
        assert!(std::fs::read_to_string(&path).unwrap().starts_with(TOKEN_FILE_HEADER), "comments kept");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let err = remove(&path, "ops").unwrap_err().to_string();
        assert!(err.contains("has no token named \"ops\""), "{err}");
    }

    #[test]
    fn add_refuses_a_malformed_file_and_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "# ok\nread only-two-fields\n").unwrap();
        let err = format!("{:#}", add(&path, Role::Read, "x").unwrap_err());
        assert!(err.contains("line 2: expected ROLE NAME HASH"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "# ok\nread only-two-fields\n", "unchanged");
    }

    #[test]
    fn cluster_secrets_send_the_first_accept_any_and_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        assert_eq!(change_secret(&path, SecretChange::Create).unwrap(), 1);
        let first = ClusterSecrets::load(&path).unwrap();
        assert!(first.accepts(first.to_send()));
        assert!(!first.accepts("") && !first.accepts(&first.to_send()[1..]));
        let err = change_secret(&path, SecretChange::RetireFirst).unwrap_err().to_string();
        assert!(err.contains("holds one secret"), "{err}");
        assert!(change_secret(&path, SecretChange::Create).unwrap_err().to_string().contains("exists"));

        assert_eq!(change_secret(&path, SecretChange::Add).unwrap(), 2);
        let both = ClusterSecrets::load(&path).unwrap();
        assert_eq!(both.to_send(), first.to_send(), "the old secret is still the one sent");
        assert_eq!(change_secret(&path, SecretChange::RetireFirst).unwrap(), 1);
        let second = ClusterSecrets::load(&path).unwrap();
        assert_ne!(second.to_send(), first.to_send());
        assert!(both.accepts(second.to_send()), "nodes that accept both accept the new one");
        assert!(!second.accepts(first.to_send()));
        assert!(std::fs::read_to_string(&path).unwrap().starts_with(SECRET_FILE_HEADER));
    }

    #[test]
    fn a_short_or_missing_cluster_secret_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "# only a comment\n\n").unwrap();
        assert!(matches!(ClusterSecrets::load(&path), Err(FileError::NoSecret { .. })));
        std::fs::write(&path, "# c\nhunter2\n").unwrap();
        let err = ClusterSecrets::load(&path).unwrap_err().to_string();
        assert!(err.contains("line 2: a secret is at least 32 ASCII characters"), "{err}");
        std::fs::write(&path, format!("{} {}\n", "a".repeat(32), "b".repeat(32))).unwrap();
        let err = ClusterSecrets::load(&path).unwrap_err().to_string();
        assert!(err.contains("line 1: a secret is one word"), "{err}");
        let err = ClusterSecrets::load(&dir.path().join("none")).unwrap_err().to_string();
        assert!(err.starts_with("reading ") && err.contains("none"), "{err}");
    }
}
