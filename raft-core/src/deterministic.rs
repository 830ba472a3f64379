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

use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

thread_local! {
    /// The seeded generator while deterministic mode is on.
    static RNG: RefCell<Option<StdRng>> = const { RefCell::new(None) };
    /// The simulator's settings while deterministic mode is on.
    static KNOBS: Cell<Knobs> = const { Cell::new(Knobs::NONE) };
}

/// What a simulator may change about storage in deterministic mode, beyond
/// the seed. Nothing here exists outside deterministic mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Knobs {
    /// How long each write of the log writer takes, drawn uniformly from
    /// this range (simulated time; inclusive). `None`: no time at all.
    /// Without it a leader's own fsync would never overlap its replication
    /// to the followers, and the orderings that overlap allows would never
    /// be tried.
    pub storage_latency: Option<(Duration, Duration)>,
    /// **A bug on purpose**, for the simulator's negative control: the log
    /// writer reports appended entries as durable *before* it commits them
    /// (the flush callback fires first, then the write takes its time). A
    /// power cut in between loses entries that a leader counted towards a
    /// commit. The simulator must catch it.
    pub unsafe_flush_before_commit: bool,
}

impl Knobs {
    const NONE: Knobs = Knobs { storage_latency: None, unsafe_flush_before_commit: false };
}

/// Deterministic mode on this thread, until dropped. Not `Send`: it belongs
/// to the thread that entered it.
#[must_use = "deterministic mode ends when the guard is dropped"]
pub struct Guard {
    previous: Option<StdRng>,
    previous_knobs: Knobs,
    _thread_bound: PhantomData<*const ()>,
}

/// Turns deterministic mode on for the current thread (see the module
/// documentation), with every random draw coming from `seed`. Entering again
/// while on replaces the generator; dropping the inner guard restores the
/// outer one.
pub fn enter(seed: u64) -> Guard {
    enter_with(seed, Knobs::default())
}

/// [`enter`], with the simulator's [`Knobs`].
pub fn enter_with(seed: u64, knobs: Knobs) -> Guard {
    let previous = RNG.with(|r| r.borrow_mut().replace(StdRng::seed_from_u64(seed)));
    let previous_knobs = KNOBS.with(|k| k.replace(knobs));
    Guard { previous, previous_knobs, _thread_bound: PhantomData }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let previous = self.previous.take();
        RNG.with(|r| *r.borrow_mut() = previous);
        KNOBS.with(|k| k.set(self.previous_knobs));
    }
}

/// The knobs in force (all off outside deterministic mode).
pub(crate) fn knobs() -> Knobs {
    KNOBS.with(Cell::get)
}

/// How long the next log write takes, if the knobs say it takes time.
pub(crate) fn storage_latency() -> Option<Duration> {
    let (min, max) = knobs().storage_latency?;
    Some(if max > min { with_rng(|r| rand::Rng::gen_range(r, min..=max)) } else { min })
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
