//! Planted bugs: one test-only switch per invariant, so every check in the repo is shown to
//! fire when the behaviour it guards is broken (a check that cannot fail is not a check).
//!
//! Compiled in only with the `planted` feature; without it `on` is a constant `false` and the
//! optimiser removes every guarded branch. The switch is per thread: the failover simulation
//! and the property tests run each world on one thread, so a planted test cannot disturb
//! another test running beside it. Where a bug can act at an edge, it is planted there, as
//! sled's failpoints sit at I/O: `ReverseDrainOrder` in the pool the supervisor hands to
//! routing, `BenchNotDurable` in the simulation's store, `IgnorePaused` in the supervisor's
//! member; the ones that must sit in a decision read as one line each. Must not: be switched
//! on outside tests.

/// Each bug breaks the behaviour behind one invariant or property.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::EnumIter)]
pub enum Bug {
    /// I1: routing refuses new sessions when every account is past the soft threshold.
    RefusePastThreshold,
    /// I1: a 401 after a fresh token is reported as a quota refusal.
    UnauthorizedIsQuota,
    /// I1b: a 429 that rejects a window is relayed to the client instead of moving on.
    RelayRejectedWindow,
    /// I2: a bound session leaves its account once it is past 50 % of its 5-hour window.
    MoveBoundPastHalf,
    /// I3: a forced refresh starts a second call while one is in flight.
    DoubleRefresh,
    /// I4: a lease hands out a token up to an hour past its expiry.
    LeaseLapsed,
    /// I5: routing ignores the paused flag.
    IgnorePaused,
    /// I6: a bench (limits change) is written without a flush (by the simulation's store).
    BenchNotDurable,
    /// I6: a refreshed token is written only after it has been put to use.
    TokenSavedLate,
    /// I7: new sessions fill the pool from the end of its drain order.
    ReverseDrainOrder,
    /// I8: a rejected window benches its account two minutes past its reset.
    BenchPastReset,
    /// Liveness: a transient refresh failure arms no retry timer.
    NoRetryTimer,
    /// Dead is left only by a login: a tick revives a dead account.
    TickRevivesDead,
    /// I9: a moved conversation's history goes as it is, even to a model that refuses another
    /// account's thinking blocks (fitting off).
    FittingOff,
}

#[cfg(feature = "planted")]
thread_local! {
    static PLANTED: std::cell::Cell<Option<Bug>> = const { std::cell::Cell::new(None) };
}

/// Whether `bug` is planted on this thread.
#[inline(always)]
pub fn on(bug: Bug) -> bool {
    #[cfg(feature = "planted")]
    {
        PLANTED.with(|p| p.get() == Some(bug))
    }
    #[cfg(not(feature = "planted"))]
    {
        let _ = bug;
        false
    }
}

/// Plants `bug` on this thread (or none); returns a guard that removes it when dropped.
#[cfg(feature = "planted")]
pub fn plant(bug: Bug) -> Planted {
    PLANTED.with(|p| p.set(Some(bug)));
    Planted(())
}

/// The bug named `name` (its variant name), for a test that plants one in another process.
#[cfg(feature = "planted")]
pub fn by_name(name: &str) -> Option<Bug> {
    use strum::IntoEnumIterator;
    Bug::iter().find(|b| format!("{b:?}") == name)
}

/// Removes the planted bug when dropped, also on panic.
#[cfg(feature = "planted")]
pub struct Planted(());

#[cfg(feature = "planted")]
impl Drop for Planted {
    fn drop(&mut self) {
        PLANTED.with(|p| p.set(None));
    }
}
