//! Test support for the fuzz tests: damaging valid encodings, and a
//! runtime whose panics are counted.
//!
//! Shared by `raft-core/tests/fuzz_decoders.rs` and the kv-app fuzz tests
//! (which include this file by path), so that the Raft port and the HTTP
//! API are damaged the same ways: a bit flipped, a byte overwritten, a run
//! of bytes inserted, a byte deleted, the tail cut off.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::sample::Index;

/// Panics in any thread of this process since [`counted_runtime`] was
/// first called: a panic in a server's task only drops a connection, which
/// a client cannot tell from a close, so the tests count them instead.
pub static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Where the first of [`PANICS`] happened, and its message. A panic in a
/// thread the test harness does not watch is printed into the output of
/// the test that started the thread, which may be another, passing test:
/// this keeps it for the failing test's message.
pub static FIRST_PANIC: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// [`FIRST_PANIC`], for an assertion's message.
pub fn first_panic() -> String {
    FIRST_PANIC.lock().unwrap_or_else(|e| e.into_inner()).clone().unwrap_or_default()
}

/// A two-thread tokio runtime, with a panic hook that counts into
/// [`PANICS`] (and still prints). Call once per test process.
pub fn counted_runtime() -> tokio::runtime::Runtime {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        FIRST_PANIC.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(|| info.to_string());
        previous(info);
    }));
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// One way to damage an encoding. Positions are `Index`es, resolved
/// against the length of the bytes at the time the mutation applies.
#[derive(Debug, Clone)]
pub enum Mutation {
    FlipBit(Index, u8),
    Overwrite(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index),
    Truncate(Index),
}

pub fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 0..8u8).prop_map(|(i, bit)| Mutation::FlipBit(i, bit)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Overwrite(i, b)),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<Index>().prop_map(Mutation::Delete),
        any::<Index>().prop_map(Mutation::Truncate),
    ]
}

pub fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len();
    match m {
        Mutation::FlipBit(i, bit) if len > 0 => bytes[i.index(len)] ^= 1 << bit,
        Mutation::Overwrite(i, b) if len > 0 => bytes[i.index(len)] = *b,
        Mutation::Insert(i, run) => {
            let at = i.index(len + 1);
            bytes.splice(at..at, run.iter().copied());
        }
        Mutation::Delete(i) if len > 0 => {
            bytes.remove(i.index(len));
        }
        Mutation::Truncate(i) => bytes.truncate(i.index(len + 1)),
        _ => {}
    }
}

/// One of `seeds`, damaged by one to four mutations.
pub fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (prop::sample::select(seeds), prop::collection::vec(mutation(), 1..5)).prop_map(|(mut bytes, ms)| {
        for m in &ms {
            apply(&mut bytes, m);
        }
        bytes
    })
}
