//! The trace of one run: every message, disk sync, crash and client event,
//! each stamped with simulated time. Off unless asked for (`sim replay`),
//! because formatting every message costs more than simulating it.

use std::fmt;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

/// A run's trace, shared by everything that writes to it. Cheap to clone.
#[derive(Clone, Default)]
pub struct Trace {
    inner: Option<Arc<Mutex<Lines>>>,
}

struct Lines {
    start: Instant,
    lines: Vec<String>,
}

impl Trace {
    /// A trace that records nothing.
    pub fn off() -> Trace {
        Trace { inner: None }
    }

    /// A trace that records, with times counted from now (simulated).
    pub fn on() -> Trace {
        Trace { inner: Some(Arc::new(Mutex::new(Lines { start: Instant::now(), lines: Vec::new() }))) }
    }

    /// Whether lines are being recorded.
    pub fn is_on(&self) -> bool {
        self.inner.is_some()
    }

    /// Appends a line, stamped with the simulated time in microseconds.
    pub fn line(&self, what: fmt::Arguments<'_>) {
        if let Some(inner) = &self.inner {
            let mut l = inner.lock().unwrap_or_else(|e| e.into_inner());
            let micros = l.start.elapsed().as_micros();
            l.lines.push(format!("{:>7}.{:03}ms {what}", micros / 1000, micros % 1000));
        }
    }

    /// The lines so far.
    pub fn lines(&self) -> Vec<String> {
        match &self.inner {
            Some(inner) => inner.lock().unwrap_or_else(|e| e.into_inner()).lines.clone(),
            None => Vec::new(),
        }
    }
}
