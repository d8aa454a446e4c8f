//! The token lifecycle machine: Fresh, Expiring, Refreshing, Dead.
//!
//! Pure: `step(state, event, now) -> (State, Vec<Effect>)`. No I/O, no clock reads, no async.
//! The `AccountActor` feeds it events and carries out its effects. Every (state, event) pair
//! is written down in `specs/token-lifecycle.toml`, and a test walks that table against `step`.
//!
//! Must not: start a second refresh while one is in flight (`Refreshing` produces no
//! `StartRefresh`), or leave `Dead` for anything but a new login.

use std::time::Duration;

use crate::clock::Timestamp;
use crate::token::Token;

/// The four phases of DESIGN.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// The access token is valid beyond the refresh point.
    Fresh,
    /// Inside the lead, lapsed, or waiting to retry after a transient refresh failure.
    Expiring,
    /// Exactly one refresh call is in flight.
    Refreshing,
    /// The grant is gone; only a new login brings the account back.
    Dead,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Fresh => "fresh",
            Phase::Expiring => "expiring",
            Phase::Refreshing => "refreshing",
            Phase::Dead => "dead",
        }
    }
}

/// Timing rules of the machine, from config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Refresh this long before the access token expires (config `refresh_lead`, default 5 min).
    pub lead: Duration,
    /// First retry delay after a transient refresh failure; doubles per failure.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_cap: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            lead: Duration::from_secs(5 * 60),
            retry_base: Duration::from_secs(10),
            retry_cap: Duration::from_secs(10 * 60),
        }
    }
}

impl Policy {
    /// Delay before retry number `failures` (1-based): base · 2^(failures−1), capped. No jitter,
    /// so simulations stay deterministic.
    pub fn backoff(&self, failures: u32) -> Duration {
        let shift = failures.saturating_sub(1).min(20);
        self.retry_base
            .saturating_mul(1u32 << shift)
            .min(self.retry_cap)
    }
}

/// What the machine knows. The token itself lives with the actor; the machine needs only
/// its timing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct State {
    pub phase: Phase,
    /// Expiry of the access token the account currently holds.
    pub expires_at: Timestamp,
    /// When `Fresh` becomes due for a refresh: expiry − lead, or earlier for tokens whose whole
    /// life is shorter than two leads (so a 60 s token is refreshed at 30 s, not immediately).
    pub refresh_at: Timestamp,
    /// In `Expiring`: when the next refresh attempt is due. `None` before anything was loaded.
    pub retry_at: Option<Timestamp>,
    /// Consecutive transient refresh failures; drives the backoff, reset by any success.
    pub failures: u32,
    /// A refresh call is still outstanding but its outcome no longer matters: a login or a
    /// logout arrived while it was in flight. Its result must not replace (or kill) the newer
    /// login, and no second call may start until it has come back.
    pub stale_in_flight: bool,
    pub policy: Policy,
}

/// What the machine publishes to the supervisor whenever something routing cares about changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Health {
    pub phase: Phase,
    pub expires_at: Timestamp,
    pub retry_at: Option<Timestamp>,
}

impl Health {
    /// Whether a request may be sent with the account's current access token at `now`.
    pub fn usable(&self, now: Timestamp) -> bool {
        self.phase != Phase::Dead && now < self.expires_at
    }
}

/// Why a refresh call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Network error, 5xx, 429: try again later (`retry_after` when the server said so).
    Transient { retry_after: Option<Duration> },
    /// `invalid_grant` or 401 from the token endpoint: the grant is gone.
    Fatal,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The persisted token, at actor start.
    Loaded(Token),
    /// Periodic check (also after the wall clock jumped).
    Tick,
    /// The armed timer fired.
    LeadReached,
    RefreshSucceeded(Token),
    RefreshFailed(Failure),
    /// The Messages API answered 401 to the current access token.
    UpstreamUnauthorized,
    LoggedIn(Token),
    LoggedOut,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Call the refresher with the current refresh token.
    StartRefresh,
    /// Write this token durably before anything else may use it.
    Persist(Token),
    /// Record durably that the grant is gone.
    PersistDead,
    /// (Re)arm the account's single timer; fires `LeadReached`.
    ArmTimer(Timestamp),
    Publish(Health),
}

impl State {
    /// The state of an actor that has not loaded its token yet.
    pub fn unloaded(policy: Policy) -> Self {
        State {
            phase: Phase::Expiring,
            expires_at: Timestamp::EPOCH,
            refresh_at: Timestamp::EPOCH,
            retry_at: None,
            failures: 0,
            stale_in_flight: false,
            policy,
        }
    }

    /// The state of an account whose grant is known to be gone.
    pub fn dead(policy: Policy) -> Self {
        State {
            phase: Phase::Dead,
            ..State::unloaded(policy)
        }
    }

    /// The phase to write down: a refresh in flight does not survive a restart, so Refreshing
    /// is stored as Expiring and retried on load.
    pub fn durable_phase(&self) -> Phase {
        match self.phase {
            Phase::Refreshing => Phase::Expiring,
            p => p,
        }
    }

    pub fn health(&self) -> Health {
        Health {
            phase: self.phase,
            expires_at: self.expires_at,
            retry_at: self.retry_at,
        }
    }

    /// Whether a timer firing at `now` should start a refresh.
    fn due(&self, now: Timestamp) -> bool {
        match self.phase {
            Phase::Fresh => now >= self.refresh_at,
            Phase::Expiring => self.retry_at.is_some_and(|at| now >= at),
            Phase::Refreshing | Phase::Dead => false,
        }
    }
}

/// The refresh point of a token fresh from the authority: expiry − lead, but never sooner than
/// half its remaining life.
fn refresh_point(expires_at: Timestamp, now: Timestamp, lead: Duration) -> Timestamp {
    let life = expires_at.since(now);
    expires_at.minus(lead.min(life / 2))
}

/// Advances the machine by one event. See `specs/token-lifecycle.toml` for every row.
pub fn step(state: &State, event: Event, now: Timestamp) -> (State, Vec<Effect>) {
    use Phase::*;
    let mut s = *state;
    let mut fx = Vec::new();
    match (state.phase, event) {
        (Fresh | Expiring, Event::Loaded(token)) => {
            s.expires_at = token.expires_at;
            s.refresh_at = token.expires_at.minus(s.policy.lead);
            s.failures = 0;
            s.retry_at = None;
            if now < s.refresh_at {
                s.phase = Fresh;
                fx.push(Effect::ArmTimer(s.refresh_at));
            } else {
                s.phase = Refreshing;
                fx.push(Effect::StartRefresh);
            }
        }
        (Refreshing | Dead, Event::Loaded(_)) => {}

        (Fresh | Expiring, Event::Tick | Event::LeadReached) if state.due(now) => {
            s.phase = Refreshing;
            s.retry_at = None;
            fx.push(Effect::StartRefresh);
        }
        (Fresh, Event::LeadReached) => fx.push(Effect::ArmTimer(s.refresh_at)),
        (Expiring, Event::LeadReached) => {
            if let Some(at) = s.retry_at {
                fx.push(Effect::ArmTimer(at));
            }
        }
        (_, Event::Tick | Event::LeadReached) => {}

        (Refreshing, Event::RefreshSucceeded(_) | Event::RefreshFailed(_))
            if state.stale_in_flight =>
        {
            // The newer login stands; the outcome for the older grant is stale.
            s.stale_in_flight = false;
            s.failures = 0;
            if now >= s.refresh_at {
                fx.push(Effect::StartRefresh);
            } else {
                s.phase = Fresh;
                fx.push(Effect::ArmTimer(s.refresh_at));
            }
        }
        (Dead, Event::RefreshSucceeded(_) | Event::RefreshFailed(_)) => {
            s.stale_in_flight = false;
        }
        (Refreshing, Event::RefreshSucceeded(token)) => {
            s.expires_at = token.expires_at;
            fx.push(Effect::Persist(token));
            if now < s.expires_at {
                s.phase = Fresh;
                s.failures = 0;
                s.retry_at = None;
                s.refresh_at = refresh_point(s.expires_at, now, s.policy.lead);
                fx.push(Effect::ArmTimer(s.refresh_at));
            } else {
                // Saved (its refresh token is the only live one), but unusable: try again.
                s.phase = Expiring;
                s.failures += 1;
                let at = now.plus(s.policy.backoff(s.failures));
                s.retry_at = Some(at);
                fx.push(Effect::ArmTimer(at));
            }
        }
        (Refreshing, Event::RefreshFailed(Failure::Transient { retry_after })) => {
            s.phase = Expiring;
            s.failures += 1;
            let wait = s
                .policy
                .backoff(s.failures)
                .max(retry_after.unwrap_or_default());
            let at = now.plus(wait);
            s.retry_at = Some(at);
            fx.push(Effect::ArmTimer(at));
        }
        (Refreshing, Event::RefreshFailed(Failure::Fatal)) => {
            s.phase = Dead;
            s.retry_at = None;
            fx.push(Effect::PersistDead);
        }
        (_, Event::RefreshSucceeded(_) | Event::RefreshFailed(_)) => {}

        (Fresh | Expiring, Event::UpstreamUnauthorized) => {
            s.phase = Refreshing;
            s.retry_at = None;
            fx.push(Effect::StartRefresh);
        }
        (Refreshing | Dead, Event::UpstreamUnauthorized) => {}

        (_, Event::LoggedIn(token)) => {
            s.expires_at = token.expires_at;
            s.refresh_at = refresh_point(token.expires_at, now, s.policy.lead);
            s.failures = 0;
            s.retry_at = None;
            fx.push(Effect::Persist(token));
            if state.phase == Refreshing || state.stale_in_flight {
                // A call for the older grant is out: wait for it to come back, then settle.
                s.phase = Refreshing;
                s.stale_in_flight = true;
            } else if now < s.expires_at {
                s.phase = Fresh;
                fx.push(Effect::ArmTimer(s.refresh_at));
            } else {
                s.phase = Refreshing;
                fx.push(Effect::StartRefresh);
            }
        }

        (Dead, Event::LoggedOut) => {}
        (_, Event::LoggedOut) => {
            s.stale_in_flight = state.phase == Refreshing;
            s.phase = Dead;
            s.retry_at = None;
            fx.push(Effect::PersistDead);
        }
    }
    if s.health() != state.health() {
        fx.push(Effect::Publish(s.health()));
    }
    (s, fx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let p = Policy::default();
        assert_eq!(p.backoff(1), Duration::from_secs(10));
        assert_eq!(p.backoff(2), Duration::from_secs(20));
        assert_eq!(p.backoff(4), Duration::from_secs(80));
        assert_eq!(p.backoff(10), Duration::from_secs(600));
        assert_eq!(p.backoff(u32::MAX), Duration::from_secs(600));
    }

    #[test]
    fn short_lived_tokens_refresh_at_half_life() {
        let now = Timestamp::from_secs(1000);
        let lead = Duration::from_secs(300);
        assert_eq!(
            refresh_point(now.plus(Duration::from_secs(60)), now, lead),
            now.plus(Duration::from_secs(30))
        );
        assert_eq!(
            refresh_point(now.plus(Duration::from_secs(3600)), now, lead),
            now.plus(Duration::from_secs(3300))
        );
    }
}
