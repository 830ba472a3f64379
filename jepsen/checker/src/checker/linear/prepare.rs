//! A history made ready for the search: split by key, and simplified.
//!
//! Linearizability is local, so [`partition`] gives each key its own
//! [`KeyOps`]: the `ok` operations the search must place, and the unknown
//! writes and cas it may place, each as a model [`Step`] on interned values.
//! Failed operations and unknown reads are dropped here, as they constrain
//! nothing. [`simplify`] then drops the unknown writes whose value no
//! operation observes, and makes all unobserved values one. Both steps are
//! exact: the verdict on the prepared key is the verdict on the history's.

use std::collections::HashSet;

use super::model::{Interner, Step, ValueId, ABSENT, UNOBSERVED};
use super::LinearError;
use crate::history::{Function, Op, Outcome};
use crate::json::Json;

/// An operation the search must (or, if unknown, may) place.
#[derive(Debug, Clone, Copy)]
pub(super) struct RegOp {
    /// Index into the caller's `ops`.
    pub(super) op: usize,
    pub(super) step: Step,
    /// Invocation position in the history.
    pub(super) call: usize,
    /// Completion position; unused for unknown operations.
    pub(super) ret: usize,
}

/// One key's share of the history.
pub(super) struct KeyOps {
    pub(super) key: Json,
    /// Operations that completed `ok`: each must be placed.
    pub(super) ok: Vec<RegOp>,
    /// Unknown writes and cas, sorted by call: each may be placed, or not.
    pub(super) info: Vec<RegOp>,
    /// The register's value before any operation: [`ABSENT`], or
    /// [`UNOBSERVED`] if no operation can see that it is absent.
    pub(super) initial: ValueId,
}

impl KeyOps {
    pub(super) fn len(&self) -> usize {
        self.ok.len() + self.info.len()
    }
}

pub(super) fn partition(ops: &[Op], values: &mut Interner) -> Result<Vec<KeyOps>, LinearError> {
    let mut keys = Interner::default();
    let mut parts: Vec<KeyOps> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let index = op.invoke_index;
        let step = match &op.f {
            Function::Read => Step::Read(values.intern(&op.value)),
            Function::Write => Step::Write(values.intern(&op.value)),
            Function::Cas => match op.value.elements().as_deref() {
                Some([from, to]) => Step::Cas { from: values.intern(from), to: values.intern(to) },
                _ => return Err(LinearError::MalformedCas { index, value: op.value.clone() }),
            },
            Function::Other(_) => return Err(LinearError::UnsupportedFunction { index, f: op.f.clone() }),
        };
        let ret = match (op.outcome, op.complete_index) {
            (_, Some(ret)) if ret <= index => {
                return Err(LinearError::InconsistentOp { index, reason: "completed before it was invoked" })
            }
            (Outcome::Ok, None) => {
                return Err(LinearError::InconsistentOp { index, reason: "ok but never completed" })
            }
            (_, ret) => ret.unwrap_or(usize::MAX),
        };

        let k = keys.intern(&op.key);
        if k == parts.len() {
            parts.push(KeyOps { key: op.key.clone(), ok: Vec::new(), info: Vec::new(), initial: ABSENT });
        }
        let part = &mut parts[k];
        let reg = RegOp { op: i, step, call: index, ret };
        match (op.outcome, step) {
            (Outcome::Ok, _) => part.ok.push(reg),
            // Certainly not applied: nothing to explain.
            (Outcome::Fail, _) => {}
            // Changed nothing, and what it returned is unknown.
            (Outcome::Info, Step::Read(_)) => {}
            (Outcome::Info, _) => part.info.push(reg),
        }
    }
    for part in &mut parts {
        // The search indexes ok operations in call order (see `OkSet`).
        part.ok.sort_by_key(|r| r.call);
        simplify(part);
        part.info.sort_by_key(|r| r.call);
    }
    Ok(parts)
}

/// Simplifies a key's operations using what the history shows of each
/// value. A value is *observed* if some `ok` read returns it or some cas
/// expects it (`from`). An unobserved value can never be seen: once it is
/// written, the next operation to look at the register must be a write
/// (a read would return it, a cas would find it), so it vanishes unseen.
/// Two consequences, both exact (the verdict is unchanged):
///
/// * An unknown write or cas that sets an unobserved value never needs to
///   take effect: removing it leaves every result the same. It is dropped.
///   In a real test most timed-out writes either never happened or were
///   overwritten unread, and the search need not try each everywhere.
/// * The model cannot tell unobserved values apart, so they all become one
///   value, [`UNOBSERVED`]. Configurations that differ only in which
///   unobserved value the register holds merge: with unique values per
///   write, many concurrent writes are overwritten before anyone reads them.
pub(super) fn simplify(part: &mut KeyOps) {
    let mut observed = HashSet::new();
    for reg in part.ok.iter().chain(&part.info) {
        match reg.step {
            Step::Read(seen) => {
                observed.insert(seen);
            }
            Step::Cas { from, .. } => {
                observed.insert(from);
            }
            Step::Write(_) => {}
        }
    }
    part.info.retain(|reg| match reg.step {
        Step::Write(value) | Step::Cas { to: value, .. } => observed.contains(&value),
        Step::Read(_) => false,
    });
    let merge = |value: ValueId| if observed.contains(&value) { value } else { UNOBSERVED };
    for reg in part.ok.iter_mut().chain(&mut part.info) {
        reg.step = match reg.step {
            Step::Write(value) => Step::Write(merge(value)),
            Step::Cas { from, to } => Step::Cas { from, to: merge(to) },
            read => read,
        };
    }
    part.initial = merge(ABSENT);
}
