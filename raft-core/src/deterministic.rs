//! Deterministic mode: what a simulator switches on for the thread that
//! runs a whole cluster.
//!
//! A deterministic simulation (the workspace's `sim` crate) runs every node
//! of a cluster as tasks on one current-thread tokio runtime with a paused
//! clock, so that a seed decides everything that happens. Three things in
//! this crate would otherwise escape the seed:
//!
//! * **randomness**: the election timeout and the early-campaign spread
//!   ([`crate::election`]), openraft's own random draws (through
//!   [`crate::rt::Runtime`]) and the id of a snapshot transfer;
//! * **threads**: the log store's writer thread and the blocking pool that
//!   storage work runs on. Work on another thread finishes at a moment the
//!   seed does not choose, and while it runs the paused clock, seeing the
//!   runtime idle, jumps ahead to the next timer;
//! * (in the application) the wall clock. That one is the caller's: the
//!   simulator stamps commands with simulated time itself.
//!
//! [`enter`] turns deterministic mode on for the current thread: from then
//! on every random draw in this crate comes from one generator seeded by the
//! caller, the log writer is a task on the caller's runtime instead of a
//! thread, and storage work runs inline on the task that asks for it. A
//! production node never calls it; only code on the thread that called
//! [`enter`] is affected, and only until the guard is dropped.
//!
//! Inline storage work blocks the thread while it runs. On a simulated disk
//! (memory) that takes microseconds and, in simulated time, nothing; on a
//! real disk it would stall every task of the node. Hence a thread-wide
//! switch for simulators, not an option a service could set.

use std::cell::RefCell;
use std::marker::PhantomData;

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

thread_local! {
    /// The seeded generator while deterministic mode is on.
    static RNG: RefCell<Option<StdRng>> = const { RefCell::new(None) };
}

/// Deterministic mode on this thread, until dropped. Not `Send`: it belongs
/// to the thread that entered it.
#[must_use = "deterministic mode ends when the guard is dropped"]
pub struct Guard {
    previous: Option<StdRng>,
    _thread_bound: PhantomData<*const ()>,
}

/// Turns deterministic mode on for the current thread (see the module
/// documentation), with every random draw coming from `seed`. Entering again
/// while on replaces the generator; dropping the inner guard restores the
/// outer one.
pub fn enter(seed: u64) -> Guard {
    let previous = RNG.with(|r| r.borrow_mut().replace(StdRng::seed_from_u64(seed)));
    Guard { previous, _thread_bound: PhantomData }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let previous = self.previous.take();
        RNG.with(|r| *r.borrow_mut() = previous);
    }
}

/// True while deterministic mode is on for this thread.
pub fn is_on() -> bool {
    RNG.with(|r| r.borrow().is_some())
}

/// Calls `f` with this thread's random number generator: the seeded one in
/// deterministic mode, otherwise the operating system's.
pub(crate) fn with_rng<T>(f: impl FnOnce(&mut dyn RngCore) -> T) -> T {
    RNG.with(|r| match r.borrow_mut().as_mut() {
        Some(rng) => f(rng),
        None => f(&mut rand::thread_rng()),
    })
}

/// A random `u64` from [`with_rng`].
pub(crate) fn random_u64() -> u64 {
    with_rng(|r| r.next_u64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_draws_and_dropping_restores_the_os_generator() {
        let draws = |seed| {
            let _on = enter(seed);
            assert!(is_on());
            (0..4).map(|_| random_u64()).collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
        assert!(!is_on());
    }

    #[test]
    fn an_inner_guard_restores_the_outer_generator_where_it_was() {
        let _outer = enter(1);
        let first = random_u64();
        {
            let _inner = enter(2);
            random_u64();
        }
        let second = random_u64();
        let _again = enter(1);
        assert_eq!((first, second), (random_u64(), random_u64()));
    }
}
