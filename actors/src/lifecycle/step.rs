//! The transition function of the lifecycle machine: every (state, event) pair, as written in
//! `specs/token-lifecycle.toml`. Pure.

use std::time::Duration;

use super::{Effect, Event, Failure, Origin, Phase, State, PERSIST_RETRY};
use crate::clock::Timestamp;
use crate::planted::{on, Bug};

/// The refresh point of a token: expiry − lead, but never sooner than half its remaining life.
fn refresh_point(expires_at: Timestamp, now: Timestamp, lead: Duration) -> Timestamp {
    let life = expires_at.since(now);
    expires_at.minus(lead.min(life / 2))
}

/// Advances the machine by one event. See `specs/token-lifecycle.toml` for every row.
pub fn step(state: &State, event: Event, now: Timestamp) -> (State, Vec<Effect>) {
    use Phase::*;
    let mut s = state.clone();
    let mut fx = Vec::new();
    let saving = state.unsaved.is_some();
    match (state.phase, event) {
        (Fresh | Expiring, Event::LoadedDead) => {
            s.phase = Dead;
            s.retry_at = None;
            s.unsaved = None;
        }
        (Refreshing | Dead, Event::LoadedDead) => {}
        (Fresh | Expiring, Event::Loaded(token)) => {
            s.adopt(token);
            s.refresh_at = refresh_point(s.expires_at, now, s.policy.lead);
            s.failures = 0;
            s.retry_at = None;
            if now < s.refresh_at {
                s.phase = Fresh;
                fx.push(Effect::ArmTimer(s.refresh_at));
            } else {
                s.start_refresh(&mut fx);
            }
        }
        (Fresh | Expiring, Event::LoadedInDoubt(token)) => {
            s.adopt(token);
            s.refresh_at = refresh_point(s.expires_at, now, s.policy.lead);
            s.failures = 0;
            s.start_refresh(&mut fx);
        }
        (Refreshing | Dead, Event::Loaded(_) | Event::LoadedInDoubt(_)) => {}

        (Dead, Event::Tick) if on(Bug::TickRevivesDead) => s.phase = Expiring,
        (Fresh | Expiring, Event::Tick | Event::LeadReached) if state.due(now) => {
            s.start_refresh(&mut fx);
        }
        (Fresh, Event::LeadReached) => fx.push(Effect::ArmTimer(s.refresh_at)),
        (Expiring, Event::LeadReached) => {
            if let Some(at) = s.retry_at {
                fx.push(Effect::ArmTimer(at));
            }
        }
        // A refused write is retried when its timer fires.
        (Refreshing, Event::LeadReached) if saving => {
            if let Some((token, _)) = &state.unsaved {
                fx.push(Effect::Persist(token.clone()));
            }
        }
        (_, Event::Tick | Event::LeadReached) => {}

        (
            Refreshing,
            Event::RefreshSucceeded(_)
            | Event::RefreshFailed(_)
            | Event::RefreshOwnedElsewhere { .. }
            | Event::TokenFromPeer(_),
        ) if state.stale_in_flight => {
            // The newer login stands; the outcome for the older grant is stale.
            s.stale_in_flight = false;
            s.failures = 0;
            if saving {
                // The login's token is still being written; `Persisted` settles.
            } else if now >= s.refresh_at {
                s.start_refresh(&mut fx);
            } else {
                s.phase = Fresh;
                fx.push(Effect::ArmTimer(s.refresh_at));
            }
        }
        (
            Dead,
            Event::RefreshSucceeded(_)
            | Event::RefreshFailed(_)
            | Event::RefreshOwnedElsewhere { .. }
            | Event::TokenFromPeer(_),
        ) => {
            s.stale_in_flight = false;
        }
        // No call is out while a token is being written (the one that was has answered).
        (
            Refreshing,
            Event::RefreshSucceeded(_)
            | Event::RefreshFailed(_)
            | Event::RefreshOwnedElsewhere { .. }
            | Event::TokenFromPeer(_),
        ) if saving => {}
        (Refreshing, Event::RefreshSucceeded(t)) if on(Bug::TokenSavedLate) => {
            s.unwritten(t, now, &mut fx)
        }
        (Refreshing, Event::RefreshSucceeded(token)) => {
            // Its refresh token is the grant's only live one now: write it down first.
            fx.push(Effect::Persist(token.clone()));
            s.unsaved = Some((token, Origin::Refresh));
        }
        (Refreshing, Event::RefreshFailed(Failure::Transient { retry_after })) => {
            s.failures += 1;
            s.arm_retry(now, retry_after.unwrap_or_default(), &mut fx);
        }
        (Refreshing, Event::RefreshFailed(Failure::Unknown)) => {
            s.failures += 1;
            s.arm_retry(now, Duration::ZERO, &mut fx);
        }
        (Refreshing, Event::RefreshFailed(Failure::Fatal)) => {
            s.phase = Dead;
            s.retry_at = None;
            fx.push(Effect::PersistDead);
        }
        // A peer's newer token: the answer to this machine's refresh (a peer refreshed
        // first), or news while none is out. Written down first, as a refresh's answer is.
        // News of the token held already is no news.
        (_, Event::PeerNews(token)) if state.token.as_ref() == Some(&token) => {}
        (Fresh | Expiring | Refreshing, Event::TokenFromPeer(token))
        | (Fresh | Expiring, Event::PeerNews(token)) => {
            s.phase = Refreshing;
            s.retry_at = None;
            fx.push(Effect::Persist(token.clone()));
            s.unsaved = Some((token, Origin::Refresh));
        }
        (Refreshing, Event::RefreshOwnedElsewhere { until }) => {
            // Nothing was sent: wait for the peer's token (by the shared store, or at the
            // lease's end), counting no failure.
            s.phase = Expiring;
            let at = until.max(now);
            s.retry_at = Some(at);
            fx.push(Effect::ArmTimer(at));
        }
        (
            _,
            Event::RefreshSucceeded(_)
            | Event::RefreshFailed(_)
            | Event::RefreshOwnedElsewhere { .. },
        ) => {}

        (Refreshing, Event::Persisted(token))
            if state.unsaved.as_ref().is_some_and(|(t, _)| *t == token) =>
        {
            let origin = state.unsaved.as_ref().map(|(_, o)| *o);
            s.unsaved = None;
            s.adopt(token);
            s.refresh_at = refresh_point(s.expires_at, now, s.policy.lead);
            s.retry_at = None;
            if state.stale_in_flight {
                // A call for the older grant is out: wait for it to come back, then settle.
            } else if now < s.expires_at {
                s.phase = Fresh;
                s.failures = 0;
                fx.push(Effect::ArmTimer(s.refresh_at));
            } else if origin == Some(Origin::Login) {
                s.start_refresh(&mut fx);
            } else {
                // Saved (its refresh token is the only live one), but unusable: try again.
                s.failures += 1;
                s.arm_retry(now, Duration::ZERO, &mut fx);
            }
        }
        (Refreshing, Event::PersistFailed) if saving => {
            fx.push(Effect::ArmTimer(now.plus(PERSIST_RETRY)));
        }
        (_, Event::Persisted(_) | Event::PersistFailed) => {}

        // Refused again after a refresh: bench, do not rotate the grant once more.
        (Fresh | Expiring, Event::UpstreamUnauthorized { generation })
            if generation == state.generation && state.strikes > 0 =>
        {
            s.refuse(now);
        }
        (Fresh | Expiring, Event::UpstreamUnauthorized { generation })
            if generation == state.generation =>
        {
            s.start_refresh(&mut fx);
        }
        (Refreshing, Event::UpstreamUnauthorized { .. }) if !saving && on(Bug::DoubleRefresh) => {
            fx.extend(state.second_refresh())
        }
        (_, Event::UpstreamUnauthorized { .. }) => {}

        (Fresh | Expiring, Event::CredentialRefused { generation })
            if generation == state.generation =>
        {
            s.refuse(now);
        }
        (_, Event::CredentialRefused { .. }) => {}

        // Demand brings a pending retry forward (bounded; single flight: only from Expiring).
        (Expiring, Event::Demand)
            if state.retry_at.is_some_and(|at| at > now)
                && state
                    .failed_at
                    .is_some_and(|f| now >= f.plus(state.policy.demand_gap)) =>
        {
            s.start_refresh(&mut fx);
        }
        (_, Event::Demand) => {}
        (_, Event::Served) => {
            s.strikes = 0;
            s.refused_until = None;
        }

        // News of a peer's token while a refresh of this machine's is out: that refresh's
        // commit, or the next claim, meets the peer's token in the store.
        (Refreshing, Event::PeerNews(_)) => {}
        // A dead machine takes a peer's newer token as a new login.
        (_, Event::LoggedIn(token)) | (Dead, Event::PeerNews(token)) => {
            s.failures = 0;
            s.retry_at = None;
            s.strikes = 0;
            s.refused_until = None;
            // A call for the older grant may be out: its outcome is stale from now on.
            s.stale_in_flight = state.stale_in_flight || (state.phase == Refreshing && !saving);
            s.phase = Refreshing;
            fx.push(Effect::Persist(token.clone()));
            s.unsaved = Some((token, Origin::Login));
        }

        (Dead, Event::LoggedOut) => {}
        (_, Event::LoggedOut) => {
            s.stale_in_flight = state.stale_in_flight || (state.phase == Refreshing && !saving);
            s.phase = Dead;
            s.unsaved = None;
            s.retry_at = None;
            fx.push(Effect::PersistDead);
        }
    }
    if s.health() != state.health() {
        fx.push(Effect::Publish(s.health()));
    }
    (s, fx)
}

/// The planted bugs' transitions, kept out of the table's arms.
impl State {
    /// Planted bug DoubleRefresh (I3): another call with the refresh token already out.
    fn second_refresh(&self) -> Option<Effect> {
        let t = self.token.as_ref()?;
        Some(Effect::StartRefresh(t.refresh.clone()))
    }

    /// Planted bug TokenSavedLate (I6): a refresh's answer put to use without being written
    /// down.
    fn unwritten(&mut self, token: crate::token::Token, now: Timestamp, fx: &mut Vec<Effect>) {
        self.adopt(token);
        self.phase = Phase::Fresh;
        self.refresh_at = refresh_point(self.expires_at, now, self.policy.lead);
        fx.push(Effect::ArmTimer(self.refresh_at));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::Policy;
    use crate::token::{Secret, Token};

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
    fn a_short_token_is_refreshed_at_half_its_life_also_when_loaded() {
        // A 60 s token at load: refreshed at 30 s, not at once; a 6-minute one at 3 minutes,
        // not after 1 (expiry − the 5-minute lead).
        let now = Timestamp::from_secs(1000);
        for (life, due) in [(60, 30), (360, 180)] {
            let token = Token {
                access: Secret::new("a"),
                refresh: Secret::new("r"),
                expires_at: now.plus(Duration::from_secs(life)),
            };
            let (s, fx) = step(
                &State::unloaded(Policy::default()),
                Event::Loaded(token),
                now,
            );
            assert_eq!(s.phase, Phase::Fresh, "a {life} s token");
            assert!(
                fx.contains(&Effect::ArmTimer(now.plus(Duration::from_secs(due)))),
                "a {life} s token: {fx:?}"
            );
        }
    }

    #[test]
    fn news_of_the_token_held_already_changes_nothing_in_any_phase() {
        let now = Timestamp::from_secs(1000);
        let token = Token {
            access: Secret::new("a"),
            refresh: Secret::new("r"),
            expires_at: now.plus(Duration::from_secs(3600)),
        };
        let (fresh, _) = step(
            &State::unloaded(Policy::default()),
            Event::Loaded(token.clone()),
            now,
        );
        let (refreshing, _) = step(&fresh, Event::Tick, now.plus(Duration::from_secs(3400)));
        let expiring = State {
            phase: Phase::Expiring,
            ..fresh.clone()
        };
        let dead = State {
            phase: Phase::Dead,
            ..fresh.clone()
        };
        assert_eq!(refreshing.phase, Phase::Refreshing);
        for s in [fresh, refreshing, expiring, dead] {
            let (next, fx) = step(&s, Event::PeerNews(token.clone()), now);
            assert_eq!(next, s, "{:?}", s.phase);
            assert!(fx.is_empty(), "{:?}: {fx:?}", s.phase);
        }
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
