//! The backup file: a consistent copy of a cluster's applied state.
//!
//! `GET /v1/cluster/backup` streams one, `kvctl snapshot save` writes it to
//! a file, `kvctl snapshot status` checks it and `kv-server restore` seeds
//! the data directories of a new cluster from it (see `docs/operations.md`).
//! The format lives here, on the client side, because both ends need it: the
//! server writes it and clients keep and check it.
//!
//! # Layout
//!
//! All integers are little-endian.
//!
//! | bytes            | what                                                    |
//! |------------------|---------------------------------------------------------|
//! | 8                | `KVBACKUP`                                              |
//! | 4                | the format version, [`FORMAT`]                          |
//! | 4 + n            | n, then a [`BackupHeader`] as n bytes of JSON           |
//! | per entry        | key length (4), key, value length (4), value            |
//! | 8                | `KVBKEND!`, after exactly `header.entries` entries      |
//! | 32               | SHA-256 of every byte before it                         |
//!
//! The entries are the state machine's whole byte map in key order: the
//! data, the client sessions (so that a client retrying a write across a
//! restore still gets its write applied once) and the state machine's own
//! records. The header is JSON so that a person can read it with `head -c`,
//! and it comes first so that a reader knows what it is reading before the
//! data arrives.
//!
//! # Reading untrusted bytes
//!
//! A backup may have been truncated by a full disk, damaged in storage or
//! replaced with another file. [`Reader`] trusts nothing before the
//! checksum at the end has matched: every length is bounded before anything
//! is allocated for it, keys must come in strictly increasing order, the
//! number of entries must be the header's, and nothing may follow the
//! checksum. A caller that acts on the entries (a restore) must therefore
//! read the whole file first and act only once [`Reader::next_entry`] has
//! returned `None`.

use std::io::{self, Read};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The first bytes of every backup.
pub const MAGIC: &[u8; 8] = b"KVBACKUP";
/// The bytes after the last entry.
pub const END: &[u8; 8] = b"KVBKEND!";
/// The format version this build writes and reads.
pub const FORMAT: u32 = 1;
/// The largest header accepted.
pub const MAX_HEADER_BYTES: u32 = 64 << 10;
/// The largest key accepted (the service's keys are far smaller).
pub const MAX_KEY_BYTES: u32 = 64 << 10;
/// The largest value accepted.
pub const MAX_VALUE_BYTES: u32 = 1 << 30;
/// The length of the checksum at the end.
pub const CHECKSUM_BYTES: usize = 32;

/// What a backup holds, written before its entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    /// The `--cluster-id` of the cluster it was taken from. A restore
    /// refuses a backup of another cluster unless told otherwise.
    pub cluster_id: String,
    /// The node that wrote it.
    pub node_id: u64,
    /// The term of the last log entry the state reflects.
    pub term: u64,
    /// The index of the last log entry the state reflects: every write
    /// acknowledged before the backup began has an index at most this.
    pub index: u64,
    /// How many entries follow: data keys, sessions and the state
    /// machine's own records.
    pub entries: u64,
    /// How many of them are data keys.
    pub keys: u64,
    /// How many of them are client sessions.
    pub sessions: u64,
    /// The digest of the data, as `GET /v1/cluster/status` reports it as
    /// `state_digest`: a restored cluster reports the same.
    pub digest: String,
    /// When the backup began, in milliseconds since the Unix epoch, by the
    /// writing node's clock.
    pub created_at_ms: u64,
    /// The version of the kv-server that wrote it.
    pub server_version: String,
}

/// One entry of a backup: a key of the state machine's map and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// Why bytes are not a usable backup.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// Reading failed.
    #[error("reading the backup: {0}")]
    Io(#[from] io::Error),
    /// The bytes do not start as a backup does.
    #[error("not a kv backup (it does not start with KVBACKUP)")]
    NotABackup,
    /// A backup of a format this build does not know.
    #[error("backup format {0}; this build reads format {FORMAT}")]
    UnsupportedFormat(u32),
    /// The bytes end before the backup does.
    #[error("the backup is truncated: it ends inside {0}")]
    Truncated(&'static str),
    /// Something in the backup cannot be right.
    #[error("the backup is corrupt: {0}")]
    Corrupt(String),
    /// The checksum at the end does not match the bytes before it.
    #[error("the backup is corrupt: its checksum is {stored}, its contents hash to {computed}")]
    ChecksumMismatch {
        /// The checksum the backup carries.
        stored: String,
        /// The checksum of what was read.
        computed: String,
    },
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a backup in pieces, for streaming: [`Encoder::entry`] for each
/// entry in key order, [`Encoder::take`] whenever enough has piled up, and
/// [`Encoder::finish`] for the last piece.
pub struct Encoder {
    hasher: Sha256,
    buf: Vec<u8>,
    expected: u64,
    written: u64,
}

impl Encoder {
    /// Starts a backup with `header`; the magic, the format and the header
    /// are the first bytes [`Encoder::take`] returns.
    pub fn new(header: &BackupHeader) -> Encoder {
        let json = header_json(header);
        let mut buf = Vec::with_capacity(16 + json.len());
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&FORMAT.to_le_bytes());
        buf.extend_from_slice(&(json.len() as u32).to_le_bytes());
        buf.extend_from_slice(&json);
        Encoder { hasher: Sha256::new(), buf, expected: header.entries, written: 0 }
    }

    /// Appends one entry. Entries must come in strictly increasing key
    /// order, as the state machine's map yields them.
    pub fn entry(&mut self, key: &[u8], value: &[u8]) {
        self.buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(key);
        self.buf.extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(value);
        self.written += 1;
    }

    /// How many bytes are waiting for [`Encoder::take`].
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The bytes appended since the last call.
    pub fn take(&mut self) -> Vec<u8> {
        self.hasher.update(&self.buf);
        std::mem::take(&mut self.buf)
    }

    /// The last bytes: what is buffered, the end marker and the checksum.
    /// Fails if the number of entries differs from the header's (the
    /// backup would be refused by every reader).
    pub fn finish(mut self) -> Result<Vec<u8>, BackupError> {
        if self.written != self.expected {
            return Err(BackupError::Corrupt(format!(
                "{} entries written, the header announced {}",
                self.written, self.expected
            )));
        }
        self.buf.extend_from_slice(END);
        self.hasher.update(&self.buf);
        let sum = self.hasher.finalize();
        let mut out = std::mem::take(&mut self.buf);
        out.extend_from_slice(&sum);
        Ok(out)
    }
}

fn header_json(header: &BackupHeader) -> Vec<u8> {
    // Serializing plain strings and integers cannot fail.
    serde_json::to_vec(header).unwrap_or_default()
}

/// The exact size of a backup with `header` whose keys and values add up to
/// `payload_bytes`: the `Content-Length` of its stream.
pub fn encoded_len(header: &BackupHeader, payload_bytes: u64) -> u64 {
    let fixed = (MAGIC.len() + 4 + 4 + END.len() + CHECKSUM_BYTES) as u64;
    fixed + header_json(header).len() as u64 + header.entries * 8 + payload_bytes
}

/// Hashes everything read through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Hashing<R> {
    /// Fills `buf`, or fails with [`BackupError::Truncated`] naming `what`.
    fn exact(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), BackupError> {
        match self.inner.read_exact(buf) {
            Ok(()) => {
                self.hasher.update(&*buf);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(BackupError::Truncated(what)),
            Err(e) => Err(e.into()),
        }
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, BackupError> {
        let mut b = [0; 4];
        self.exact(&mut b, what)?;
        Ok(u32::from_le_bytes(b))
    }

    /// `len` bytes, `len` already checked against its limit. Grows the
    /// buffer as bytes arrive rather than trusting `len` up front, so that a
    /// damaged length in a short file costs no more memory than the file.
    fn bytes(&mut self, len: u32, what: &'static str) -> Result<Vec<u8>, BackupError> {
        let mut out = Vec::with_capacity((len as usize).min(1 << 20));
        let got = (&mut self.inner).take(u64::from(len)).read_to_end(&mut out)?;
        if got != len as usize {
            return Err(BackupError::Truncated(what));
        }
        self.hasher.update(&out);
        Ok(out)
    }
}

/// Reads a backup, checking it as it goes (see the [module docs](self)).
pub struct Reader<R> {
    input: Hashing<R>,
    header: BackupHeader,
    read: u64,
    last_key: Option<Vec<u8>>,
    done: bool,
    checksum: Option<String>,
}

impl<R: Read> Reader<R> {
    /// Reads and checks the magic, the format and the header.
    pub fn open(input: R) -> Result<Reader<R>, BackupError> {
        let mut input = Hashing { inner: input, hasher: Sha256::new() };
        let mut magic = [0; 8];
        match input.exact(&mut magic, "the first 8 bytes") {
            Err(BackupError::Truncated(_)) => return Err(BackupError::NotABackup),
            r => r?,
        }
        if &magic != MAGIC {
            return Err(BackupError::NotABackup);
        }
        let format = input.u32("the format version")?;
        if format != FORMAT {
            return Err(BackupError::UnsupportedFormat(format));
        }
        let len = input.u32("the header's length")?;
        if len > MAX_HEADER_BYTES {
            return Err(BackupError::Corrupt(format!(
                "a header of {len} bytes (at most {MAX_HEADER_BYTES})"
            )));
        }
        let json = input.bytes(len, "the header")?;
        let header: BackupHeader = serde_json::from_slice(&json)
            .map_err(|e| BackupError::Corrupt(format!("the header does not parse: {e}")))?;
        if header.keys.saturating_add(header.sessions) > header.entries {
            return Err(BackupError::Corrupt(format!(
                "the header counts {} keys and {} sessions in {} entries",
                header.keys, header.sessions, header.entries
            )));
        }
        Ok(Reader { input, header, read: 0, last_key: None, done: false, checksum: None })
    }

    /// The header. Not to be trusted before [`Reader::next_entry`] has
    /// returned `None`, which means the checksum matched.
    pub fn header(&self) -> &BackupHeader {
        &self.header
    }

    /// The next entry, or `None` after the last one once the end marker and
    /// the checksum have been checked and nothing follows them.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, BackupError> {
        if self.done {
            return Ok(None);
        }
        if self.read == self.header.entries {
            self.finish()?;
            return Ok(None);
        }
        let key_len = self.input.u32("an entry's key length")?;
        if key_len == 0 || key_len > MAX_KEY_BYTES {
            return Err(BackupError::Corrupt(format!(
                "entry {} has a key of {key_len} bytes (1 to {MAX_KEY_BYTES})",
                self.read + 1
            )));
        }
        let key = self.input.bytes(key_len, "an entry's key")?;
        let value_len = self.input.u32("an entry's value length")?;
        if value_len > MAX_VALUE_BYTES {
            return Err(BackupError::Corrupt(format!(
                "entry {} has a value of {value_len} bytes (at most {MAX_VALUE_BYTES})",
                self.read + 1
            )));
        }
        let value = self.input.bytes(value_len, "an entry's value")?;
        if self.last_key.as_ref().is_some_and(|last| *last >= key) {
            return Err(BackupError::Corrupt(format!("entry {} is out of key order", self.read + 1)));
        }
        self.read += 1;
        self.last_key = Some(key.clone());
        Ok(Some((key, value)))
    }

    /// Reads the end marker and the checksum, and checks that nothing follows.
    fn finish(&mut self) -> Result<(), BackupError> {
        let mut end = [0; 8];
        self.input.exact(&mut end, "the end marker")?;
        if &end != END {
            return Err(BackupError::Corrupt(format!(
                "no end marker after the {} entries the header announced",
                self.header.entries
            )));
        }
        let computed = std::mem::take(&mut self.input.hasher).finalize();
        let mut stored = [0; CHECKSUM_BYTES];
        match self.input.inner.read_exact(&mut stored) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(BackupError::Truncated("the checksum"))
            }
            Err(e) => return Err(e.into()),
        }
        if stored[..] != computed[..] {
            return Err(BackupError::ChecksumMismatch { stored: hex(&stored), computed: hex(&computed) });
        }
        let mut extra = [0; 1];
        if self.input.inner.read(&mut extra)? != 0 {
            return Err(BackupError::Corrupt("bytes follow the checksum".into()));
        }
        self.done = true;
        self.checksum = Some(hex(&stored));
        Ok(())
    }

    /// The SHA-256 checksum, in hex, once the whole backup has been read.
    pub fn checksum(&self) -> Option<&str> {
        self.checksum.as_deref()
    }
}

/// A backup read to its end and found whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verified {
    /// Its header.
    pub header: BackupHeader,
    /// Its SHA-256 checksum, in hex.
    pub checksum: String,
    /// The bytes of keys and values it holds.
    pub payload_bytes: u64,
}

/// Reads a whole backup and checks it, keeping none of its entries.
pub fn verify(input: impl Read) -> Result<Verified, BackupError> {
    let mut reader = Reader::open(input)?;
    let mut payload_bytes = 0u64;
    while let Some((k, v)) = reader.next_entry()? {
        payload_bytes += (k.len() + v.len()) as u64;
    }
    Ok(Verified {
        checksum: reader.checksum().unwrap_or_default().to_string(),
        header: reader.header.clone(),
        payload_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(entries: u64) -> BackupHeader {
        BackupHeader {
            cluster_id: "kv".into(),
            node_id: 1,
            term: 3,
            index: 42,
            entries,
            keys: entries,
            sessions: 0,
            digest: "0123456789abcdef".into(),
            created_at_ms: 1_700_000_000_000,
            server_version: "0.1.0".into(),
        }
    }

    fn encode(entries: &[(&[u8], &[u8])], take_every: usize) -> Vec<u8> {
        let mut e = Encoder::new(&header(entries.len() as u64));
        let mut out = Vec::new();
        for (i, (k, v)) in entries.iter().enumerate() {
            e.entry(k, v);
            if take_every > 0 && i % take_every == 0 {
                out.extend(e.take());
            }
        }
        out.extend(e.take());
        out.extend(e.finish().unwrap());
        out
    }

    const ENTRIES: &[(&[u8], &[u8])] =
        &[(b"d/a", b"1"), (b"d/b", b""), (b"m/meta", &[0, 255]), (b"s/x", b"r")];

    fn read_all(bytes: &[u8]) -> Result<Vec<Entry>, BackupError> {
        let mut r = Reader::open(bytes)?;
        let mut out = Vec::new();
        while let Some(e) = r.next_entry()? {
            out.push(e);
        }
        Ok(out)
    }

    #[test]
    fn a_backup_reads_back_whatever_the_pieces_and_its_length_is_known_in_advance() {
        for take_every in [0, 1, 3] {
            let bytes = encode(ENTRIES, take_every);
            let got = read_all(&bytes).unwrap();
            let want: Vec<_> = ENTRIES.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
            assert_eq!(got, want);
            let payload: u64 = ENTRIES.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
            assert_eq!(encoded_len(&header(ENTRIES.len() as u64), payload), bytes.len() as u64);
            let v = verify(&bytes[..]).unwrap();
            assert_eq!(v.header, header(4));
            assert_eq!(v.payload_bytes, payload);
            assert_eq!(v.checksum.len(), 64);
        }
    }

    #[test]
    fn every_flipped_byte_and_every_truncation_is_refused() {
        let bytes = encode(ENTRIES, 0);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(verify(&bad[..]).is_err(), "a flipped bit at byte {i} went unnoticed");
            assert!(verify(&bytes[..i]).is_err(), "a backup cut to {i} bytes was accepted");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(verify(&longer[..]), Err(BackupError::Corrupt(m)) if m.contains("follow")));
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        assert!(matches!(verify(&b"PK\x03\x04 a zip file"[..]), Err(BackupError::NotABackup)));
        assert!(matches!(verify(&b""[..]), Err(BackupError::NotABackup)));
        let bytes = encode(ENTRIES, 0);
        let mut v2 = bytes.clone();
        v2[8] = 2;
        assert!(matches!(verify(&v2[..]), Err(BackupError::UnsupportedFormat(2))));
        let cut = &bytes[..bytes.len() - 10];
        assert!(matches!(verify(cut), Err(BackupError::Truncated("the checksum"))));
        let mut sum = bytes.clone();
        let last = sum.len() - 1;
        sum[last] ^= 0xff;
        assert!(matches!(verify(&sum[..]), Err(BackupError::ChecksumMismatch { .. })));
        // Entries out of order, with a valid checksum: refused all the same.
        let unordered = encode(&[(b"b", b"1"), (b"a", b"2")], 0);
        assert!(matches!(verify(&unordered[..]), Err(BackupError::Corrupt(m)) if m.contains("order")));
    }

    #[test]
    fn a_huge_length_in_a_short_file_is_refused_without_allocating_it() {
        let mut bytes = encode(&[(b"k", b"v")], 0);
        // The value length of the one entry: after magic, format, header.
        let at = 16 + header_json(&header(1)).len() + 4 + 1;
        bytes[at..at + 4].copy_from_slice(&(MAX_VALUE_BYTES - 1).to_le_bytes());
        assert!(matches!(verify(&bytes[..]), Err(BackupError::Truncated("an entry's value"))));
        bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(verify(&bytes[..]), Err(BackupError::Corrupt(m)) if m.contains("value of")));
    }

    #[test]
    fn an_encoder_fed_fewer_entries_than_announced_refuses_to_finish() {
        let mut e = Encoder::new(&header(2));
        e.entry(b"a", b"1");
        assert!(e.finish().is_err());
    }
}
