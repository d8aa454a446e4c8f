//! The token lifecycle machine: Fresh, Expiring, Refreshing, Dead.
//!
//! Pure: `step(state, event, now) -> (State, Vec<Effect>)`. No I/O, no clock reads, no async.
//! The `AccountActor` feeds it events and carries out its effects. Every (state, event) pair
//! is written down in `specs/token-lifecycle.toml`, and a test walks that table against `step`.
//!
//! The machine holds the tokens too (the current, durable one and one still being written),
//! so the choice of refresh token, the lease and the 401 check are decided here, not in the
//! actor. Must not: start a second refresh while one is in flight or a new token is unsaved
//! (`Refreshing` produces no `StartRefresh`), hand out a token the store has not accepted, or
//! leave `Dead` for anything but a new login.

mod step;

use std::time::Duration;

use crate::clock::Timestamp;
use crate::planted::{on, Bug};
use crate::token::{Secret, Token};

/// The four phases of the design: Fresh, Expiring, Refreshing, Dead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, strum::EnumIter)]
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
    /// While requests wait for an account whose refresh failed, a retry may come this soon after
    /// the failure instead of at its backoff (demand outweighs backoff, bounded by this gap).
    pub demand_gap: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            lead: Duration::from_secs(5 * 60),
            retry_base: Duration::from_secs(10),
            retry_cap: Duration::from_secs(10 * 60),
            demand_gap: Duration::from_secs(5),
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

/// Where a token that is not yet durable came from: what happens once the store accepts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The refresher's answer: its refresh token is now the grant's only live one.
    Refresh,
    /// A new login for the account.
    Login,
}

/// What the machine knows: its phase and timing, and the tokens themselves, so that every
/// decision (which refresh token a call uses, which token a lease hands out, whether a 401 is
/// about the current token) is made here and written in `specs/token-lifecycle.toml`. Its
/// fields are the machine's own: only `step` changes them; everyone else reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    phase: Phase,
    /// The token the store has accepted: the only one leases hand out and refreshes start from.
    token: Option<Token>,
    /// Bumped whenever `token` changes; a 401 for an older generation is not the current
    /// token's fault.
    generation: u64,
    /// A token the authority answered (or a login brought) that the store has not accepted yet.
    /// While it is set the phase is Refreshing: no refresh may start (its refresh token would be
    /// the rotated-away one) and leases wait for the write.
    unsaved: Option<(Token, Origin)>,
    /// Expiry of `token` (EPOCH before anything was loaded).
    expires_at: Timestamp,
    /// When `Fresh` becomes due for a refresh: expiry − lead, or earlier for tokens whose whole
    /// life is shorter than two leads (so a 60 s token is refreshed at 30 s, not immediately).
    refresh_at: Timestamp,
    /// In `Expiring`: when the next refresh attempt is due. `None` before anything was loaded.
    retry_at: Option<Timestamp>,
    /// Consecutive transient refresh failures; drives the backoff, reset by any success.
    failures: u32,
    /// When the last refresh attempt failed (for the demand retry's bound).
    failed_at: Option<Timestamp>,
    /// A refresh call is still outstanding but its outcome no longer matters: a login or a
    /// logout arrived while it was in flight. Its result must not replace (or kill) the newer
    /// login, and no second call may start until it has come back.
    stale_in_flight: bool,
    /// How many times in a row the API refused a freshly refreshed credential. While above
    /// zero a 401 starts no refresh (rotating a grant the API refuses anyway helps nobody);
    /// it benches the account instead. Cleared by a served request or a new login.
    strikes: u32,
    /// Until when the account is benched because the API refuses its credential.
    refused_until: Option<Timestamp>,
    policy: Policy,
}

/// Reads of the machine's state (only `step` writes it).
impl State {
    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn token(&self) -> Option<&Token> {
        self.token.as_ref()
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn unsaved(&self) -> Option<&(Token, Origin)> {
        self.unsaved.as_ref()
    }

    pub fn expires_at(&self) -> Timestamp {
        self.expires_at
    }

    pub fn refresh_at(&self) -> Timestamp {
        self.refresh_at
    }

    pub fn retry_at(&self) -> Option<Timestamp> {
        self.retry_at
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn failed_at(&self) -> Option<Timestamp> {
        self.failed_at
    }

    pub fn stale_in_flight(&self) -> bool {
        self.stale_in_flight
    }

    pub fn strikes(&self) -> u32 {
        self.strikes
    }

    pub fn refused_until(&self) -> Option<Timestamp> {
        self.refused_until
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }
}

/// What the machine publishes to the supervisor whenever something routing cares about changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Health {
    pub phase: Phase,
    pub expires_at: Timestamp,
    pub retry_at: Option<Timestamp>,
    /// The API refuses the account's credential even fresh: benched until then.
    pub refused_until: Option<Timestamp>,
}

impl Health {
    /// Whether a request may be sent with the account's current access token at `now`.
    pub fn usable(&self, now: Timestamp) -> bool {
        self.phase != Phase::Dead
            && now < self.expires_at
            && self.refused_until.is_none_or(|t| now >= t)
    }

    /// Whether routing may choose the account at `now`: its token is usable, or a refresh is
    /// bringing one (the lease then waits for it).
    pub fn routable(&self, now: Timestamp) -> bool {
        self.usable(now) || self.phase == Phase::Refreshing
    }

    /// Whether the lease the account last published may be handed out at `now` without asking
    /// it: the token is usable and no refresh may replace it any moment.
    pub fn published_lease_holds(&self, now: Timestamp) -> bool {
        self.phase != Phase::Refreshing && self.usable(now)
    }
}

/// Why a refresh call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The request never reached the authority, or it answered 5xx or 429: try again later
    /// (`retry_after` when the server said so).
    Transient { retry_after: Option<Duration> },
    /// The request was sent and no answer came within the (long) bound: the authority may
    /// have rotated the grant. Retried like a transient failure (nothing else can be done),
    /// but told apart, so a grant lost this way is named as such.
    Unknown,
    /// `invalid_grant` or 401 from the token endpoint: the grant is gone.
    Fatal,
}

/// Everything that happens to an account. `EventKind` (derived) names the variants, so the
/// spec test can require a row for each.
#[derive(Clone, Debug, PartialEq, Eq, strum::EnumDiscriminants)]
#[strum_discriminants(name(EventKind), derive(strum::EnumIter, strum::IntoStaticStr))]
#[strum_discriminants(strum(serialize_all = "snake_case"))]
pub enum Event {
    /// The persisted token, at actor start.
    Loaded(Token),
    /// At actor start: the store has the account marked dead (its grant is gone).
    LoadedDead,
    /// The persisted token, at actor start, with a refresh intent for it: a refresh was sent
    /// with its refresh token and no answer was written. The grant may have rotated: check at
    /// once, so a loss shows now with its fix, not at the next refresh hours later.
    LoadedInDoubt(Token),
    /// Periodic check (also after the wall clock jumped).
    Tick,
    /// The armed timer fired.
    LeadReached,
    RefreshSucceeded(Token),
    RefreshFailed(Failure),
    /// The store accepted this token (the answer to `Persist`).
    Persisted(Token),
    /// The store refused the last `Persist`; it is retried when the armed timer fires.
    PersistFailed,
    /// The Messages API answered 401 to the access token of `generation`.
    UpstreamUnauthorized {
        generation: u64,
    },
    /// The Messages API answered 401 again right after a refresh: the account's credential is
    /// refused, not expired.
    CredentialRefused {
        generation: u64,
    },
    /// A request with the current credential was served (every 2xx answer; it ends a refusal).
    Served,
    /// A request wants this account and it has no usable token: retry the refresh now if the
    /// last attempt failed at least `demand_gap` ago, instead of waiting out the backoff.
    Demand,
    LoggedIn(Token),
    LoggedOut,
    /// Several daemons: a peer holds the refresh lease until then. The answer to a refresh
    /// this machine asked for, of which nothing was sent: wait for the peer's token, then look
    /// again; no failure is counted.
    RefreshOwnedElsewhere {
        until: Timestamp,
    },
    /// Several daemons: a peer's newer token (durable in the shared store), as the answer to
    /// this machine's refresh (the coordinator says a peer refreshed first). Written down and
    /// adopted as a refresh's answer is. A dead machine ignores it.
    TokenFromPeer(Token),
    /// Several daemons: news of a peer's newer token, unasked (from the shared store's
    /// channel, or a reconcile after an outage). Adopted while no refresh is out; ignored while
    /// one is (its commit, or the next claim, meets the peer's token in the store instead);
    /// taken as a new login by a dead machine (a grant a peer holds is alive: this daemon may
    /// have been refused a refresh token that a stalled peer had already rotated).
    PeerNews(Token),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Call the refresher with this refresh token (the current one, chosen by the machine).
    StartRefresh(Secret),
    /// Write this token durably; answer with `Persisted` or `PersistFailed`.
    Persist(Token),
    /// Record durably that the grant is gone.
    PersistDead,
    /// (Re)arm the account's single timer; fires `LeadReached`.
    ArmTimer(Timestamp),
    Publish(Health),
}

/// What a lease request gets now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseAnswer {
    /// Send with this access token, of this generation.
    Grant { access: Secret, generation: u64 },
    /// A new token is on its way (a refresh call or a write is out): wait for the next step.
    Wait,
    /// The grant is gone.
    Dead,
    /// No usable token and none on its way.
    Unavailable,
}

/// First bench of an account whose fresh credential the API refuses; doubles per refusal.
pub const REFUSED_BASE: Duration = Duration::from_secs(30);
/// Longest such bench.
pub const REFUSED_CAP: Duration = Duration::from_secs(30 * 60);

/// How long a refused token write waits before it is tried again.
pub const PERSIST_RETRY: Duration = Duration::from_secs(1);

impl State {
    /// The state of an actor that has not loaded its token yet.
    pub fn unloaded(policy: Policy) -> Self {
        State {
            phase: Phase::Expiring,
            token: None,
            generation: 0,
            unsaved: None,
            expires_at: Timestamp::EPOCH,
            refresh_at: Timestamp::EPOCH,
            retry_at: None,
            failures: 0,
            failed_at: None,
            stale_in_flight: false,
            strikes: 0,
            refused_until: None,
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

    pub fn health(&self) -> Health {
        Health {
            phase: self.phase,
            expires_at: self.expires_at,
            retry_at: self.retry_at,
            refused_until: self.refused_until,
        }
    }

    /// What a lease request gets at `now`.
    pub fn lease(&self, now: Timestamp) -> LeaseAnswer {
        if self.phase == Phase::Dead {
            return LeaseAnswer::Dead;
        }
        if self.unsaved.is_some() {
            return LeaseAnswer::Wait;
        }
        let lapse_slack = Duration::from_secs(on(Bug::LeaseLapsed) as u64 * 3600);
        match &self.token {
            Some(t) if now < t.expires_at.plus(lapse_slack) => LeaseAnswer::Grant {
                access: t.access.clone(),
                generation: self.generation,
            },
            _ if self.phase == Phase::Refreshing => LeaseAnswer::Wait,
            _ => LeaseAnswer::Unavailable,
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

    /// Starts the one refresh call, from the current token's refresh token. With no token to
    /// refresh from, only a login can help.
    fn start_refresh(&mut self, fx: &mut Vec<Effect>) {
        self.retry_at = None;
        match &self.token {
            Some(t) => {
                self.phase = Phase::Refreshing;
                fx.push(Effect::StartRefresh(t.refresh.clone()));
            }
            None => {
                self.phase = Phase::Dead;
                fx.push(Effect::PersistDead);
            }
        }
    }

    /// Makes `token` (durable now) the current one.
    fn adopt(&mut self, token: Token) {
        self.expires_at = token.expires_at;
        self.token = Some(token);
        self.generation += 1;
    }

    /// Benches the account for refusal number `self.strikes` (30 s doubling, 30 min cap).
    fn refuse(&mut self, now: Timestamp) {
        self.strikes = self.strikes.saturating_add(1);
        let shift = (self.strikes - 1).min(6);
        let wait = (REFUSED_BASE * (1u32 << shift)).min(REFUSED_CAP);
        self.refused_until = Some(now.plus(wait));
    }

    /// Arms the retry after transient failure number `self.failures`.
    fn arm_retry(&mut self, now: Timestamp, at_least: Duration, fx: &mut Vec<Effect>) {
        self.phase = Phase::Expiring;
        self.failed_at = Some(now);
        let at = now.plus(self.policy.backoff(self.failures).max(at_least));
        self.retry_at = Some(at);
        fx.extend((!on(Bug::NoRetryTimer)).then_some(Effect::ArmTimer(at)));
    }
}

pub use step::step;

#[cfg(test)]
mod spec_tests;
