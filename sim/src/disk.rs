//! A node's disk as the trace sees it: the [`SimBackend`] redb writes to,
//! with every sync, length change and failed call written into the trace.
//! Page writes are counted, not traced one by one (a run makes tens of
//! thousands); each sync line says how many came before it.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use raft_core::storage::SimBackend;
use raft_core::NodeId;
use redb::StorageBackend;

use crate::trace::Trace;

/// A [`SimBackend`] that reports to the trace.
pub struct TracedBackend {
    inner: SimBackend,
    node: NodeId,
    trace: Trace,
    writes_since_sync: AtomicU64,
}

impl TracedBackend {
    /// `inner`, the disk of node `node`, reporting to `trace`.
    pub fn new(inner: SimBackend, node: NodeId, trace: Trace) -> TracedBackend {
        TracedBackend { inner, node, trace, writes_since_sync: AtomicU64::new(0) }
    }

    fn failed<T>(&self, what: &str, result: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &result {
            self.trace.line(format_args!("disk {} {what} failed: {e}", self.node));
        }
        result
    }
}

impl fmt::Debug for TracedBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracedBackend").field("node", &self.node).finish_non_exhaustive()
    }
}

impl StorageBackend for TracedBackend {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let result = self.failed("set_len", self.inner.set_len(len));
        if result.is_ok() {
            self.trace.line(format_args!("disk {} set_len {len}", self.node));
        }
        result
    }

    fn sync_data(&self) -> io::Result<()> {
        let result = self.failed("sync", self.inner.sync_data());
        if result.is_ok() {
            let writes = self.writes_since_sync.swap(0, Ordering::Relaxed);
            self.trace.line(format_args!("disk {} sync after {writes} page writes", self.node));
        }
        result
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let result = self.failed("write", self.inner.write(offset, data));
        if result.is_ok() {
            self.writes_since_sync.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn close(&self) -> io::Result<()> {
        self.inner.close()
    }
}
