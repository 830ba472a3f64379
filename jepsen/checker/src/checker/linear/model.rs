//! The register's sequential specification, on interned values.
//!
//! [`Step::apply`] is the model the search asks: may this operation take
//! effect on this value, and what value does it leave? Values are JSON, but
//! the search never compares JSON: before it starts, an [`Interner`] gives
//! each distinct value a small integer (every spelling of one JSON value
//! gets the same one), and the model works on those.

use std::collections::HashMap;

use crate::json::Json;

/// A value, interned: two equal JSON values have the same id, so the search
/// compares and hashes integers instead of JSON trees.
pub(super) type ValueId = usize;

/// The id of `null`, the register's initial (absent) value.
pub(super) const ABSENT: ValueId = 0;

/// Stands for every value that no operation observes (see
/// [`simplify`](super::prepare::simplify)).
pub(super) const UNOBSERVED: ValueId = ValueId::MAX;

/// A register operation, as the search sees it.
#[derive(Debug, Clone, Copy)]
pub(super) enum Step {
    Read(ValueId),
    Write(ValueId),
    Cas { from: ValueId, to: ValueId },
}

impl Step {
    /// The register's value after this operation takes effect on `state`,
    /// or `None` if it cannot take effect there (a read that would return
    /// another value, an `ok` cas that would not find `from`).
    pub(super) fn apply(self, state: ValueId) -> Option<ValueId> {
        match self {
            Step::Read(seen) => (seen == state).then_some(state),
            Step::Write(value) => Some(value),
            Step::Cas { from, to } => (from == state).then_some(to),
        }
    }
}

/// Gives each distinct JSON value a small id, in order of first sight.
/// Values are told apart by their canonical text ([`Json::write_canonical`]),
/// so every spelling of one value gets one id.
#[derive(Default)]
pub(super) struct Interner {
    ids: HashMap<Box<str>, ValueId>,
    /// Reused for each value's canonical text: interning a value seen before
    /// allocates nothing.
    scratch: String,
}

impl Interner {
    pub(super) fn intern(&mut self, value: &Json) -> ValueId {
        self.scratch.clear();
        value.write_canonical(&mut self.scratch);
        if let Some(&id) = self.ids.get(self.scratch.as_str()) {
            return id;
        }
        let id = self.ids.len();
        self.ids.insert(self.scratch.as_str().into(), id);
        id
    }
}
