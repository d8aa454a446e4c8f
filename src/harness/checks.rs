//! The invariants of `specs/failover-invariants.md`, checked against the authority (the
//! simulator's model: its grants, tokens and windows) and against what the upstream really
//! answered, never against a recomputation of the daemon's own state from the same fields.
//!
//! Must not: excuse a decision with the reason the code under test gave for it; every reason
//! needs evidence from the authority or the upstream.

use std::collections::HashMap;

use ccs_actors::lifecycle::Phase;
use ccs_actors::quota::BACKOFF_CAP;
use ccs_actors::routing::{self, AccountId, Decision};
use ccs_actors::supervisor::{HopEvent, MemberView, SupervisorView, DEFAULT_POOL};
use ccs_actors::{Clock, Secret, Timestamp};

use super::store::lock;
use super::World;
use crate::proxy::drive::Left;
use crate::sim::model::SimModel;

/// What the authority answered one send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Delivered {
    Served,
    /// A 429 whose rate-limit headers reject a window.
    WindowRejected,
    Status(u16),
    /// The connection was cut before any header.
    Reset,
}

/// The per-step view the invariants are checked against.
#[derive(Default)]
pub(super) struct Checks {
    pub now: Timestamp,
    pub view: Option<SupervisorView>,
    pub paused: Vec<bool>,
    pub emails: Vec<String>,
    pub violations: Vec<String>,
    /// What the authority answered each send of the request being driven.
    pub delivered: Vec<(AccountId, Delivered)>,
    /// When the authority last answered each account with a 429.
    pub last_429: HashMap<String, Timestamp>,
    /// When the authority last answered each account with a 401 (a refused credential benches
    /// an account, and is the evidence for passing it over).
    pub last_401: HashMap<String, Timestamp>,
}

impl Checks {
    pub fn member(&self, id: &str) -> Option<&MemberView> {
        self.view.as_ref()?.accounts.iter().find(|m| &*m.id == id)
    }

    pub fn paused(&self, id: &str) -> bool {
        self.emails
            .iter()
            .position(|e| e == id)
            .is_some_and(|i| self.paused[i])
    }

    /// I4, I5: what is forwarded, with which token.
    pub fn on_send(&mut self, account: &AccountId, model: &SimModel, access: &Secret) {
        if model.access_token_lapsed(access.expose()) == Some(true) {
            self.violations.push(format!(
                "I4: a lapsed access token of {account} was forwarded at {:?}",
                self.now
            ));
        }
        if self.paused(account) {
            self.violations.push(format!(
                "I5: paused account {account} got traffic at {:?}",
                self.now
            ));
        }
        if self
            .member(account)
            .is_some_and(|m| m.health.phase == Phase::Dead)
        {
            self.violations.push(format!(
                "I5: dead account {account} got traffic at {:?}",
                self.now
            ));
        }
    }

    pub fn on_delivered(&mut self, account: &AccountId, d: Delivered) {
        if matches!(d, Delivered::Status(429) | Delivered::WindowRejected) {
            self.last_429.insert(account.to_string(), self.now);
        }
        if d == Delivered::Status(401) {
            self.last_401.insert(account.to_string(), self.now);
        }
        self.delivered.push((account.clone(), d));
    }

    fn was_delivered(&self, account: &AccountId, d: Delivered) -> bool {
        self.delivered.iter().any(|(a, x)| a == account && *x == d)
    }
}

/// Whether the authority would serve the account right now: its grant is alive and neither of
/// its windows is spent.
pub(super) fn authority_serves(model: &SimModel, email: &str) -> bool {
    model.grant_alive(email)
        && model
            .windows(email)
            .is_some_and(|w| w.iter().all(|(used, budget, _)| used < budget))
}

impl World {
    /// Whether the authority shows a cause for leaving `account` with `why` in this request.
    fn evidenced(&self, account: &AccountId, why: Left) -> bool {
        let c = self.checks.borrow();
        match why {
            Left::RateLimited => {
                c.was_delivered(account, Delivered::Status(429))
                    || c.was_delivered(account, Delivered::WindowRejected)
            }
            Left::Unreachable => c.was_delivered(account, Delivered::Reset),
            // The model answers at once: it never leaves an upstream silent.
            Left::TimedOut => false,
            Left::Forbidden => c.was_delivered(account, Delivered::Status(403)),
            Left::Unauthorized { .. } => c.was_delivered(account, Delivered::Status(401)),
            Left::NoToken => {
                !self.model.grant_alive(account)
                    || lock(&self.refresher.failed_at).contains_key(&**account)
                    || c.last_401.contains_key(&**account)
                    || c.member(account)
                        .is_some_and(|m| m.health.phase == Phase::Dead)
            }
        }
    }

    /// I2/I7's premise: every account a request passed over was passed over for a true reason.
    pub(super) fn check_left(&mut self, left: &[(AccountId, Left)]) {
        for (a, why) in left {
            if !self.evidenced(a, *why) {
                let now = self.clock.now();
                self.violation(format!(
                    "I2: {a} was passed over at {now:?} for {:?} but the authority shows no cause",
                    why.as_str()
                ));
            }
        }
    }

    /// I7: a new binding goes to the first account that can take it, below the threshold
    /// when one is.
    pub(super) fn check_fill_first(
        &mut self,
        decision: &Decision,
        left: &[(AccountId, Left)],
        view: Option<&SupervisorView>,
    ) {
        let to = match decision {
            Decision::Bound(a) | Decision::Moved { to: a, .. } => a,
            _ => return,
        };
        let Some(view) = view else { return };
        let c = self.checks.borrow();
        let Some(order) = view.pools.get(DEFAULT_POOL) else {
            return;
        };
        let threshold = routing::Policy::default().soft_threshold;
        let util = |m: &MemberView| m.quota.five_hour.utilization_at(c.now);
        let target_util = view
            .accounts
            .iter()
            .find(|m| &m.id == to)
            .map(util)
            .unwrap_or(0.0);
        let mut bad = None;
        for id in order.iter().take_while(|id| *id != to) {
            let Some(m) = view.accounts.iter().find(|m| &m.id == id) else {
                continue;
            };
            let passed_over = left.iter().any(|(a, _)| a == id);
            let past = util(m) >= threshold && target_util < threshold;
            let usable = !c.paused(id)
                && m.health.phase != Phase::Dead
                && (m.health.usable(c.now) || m.health.phase == Phase::Refreshing)
                && m.quota.limited_until(c.now, None).is_none();
            if usable && !passed_over && !past {
                bad = Some(id.clone());
            }
        }
        drop(c);
        if let Some(b) = bad {
            self.violation(format!("I7: a new session went to {to} while {b}, earlier in the drain order, could take it"));
        }
    }

    /// I2: a session changes account only when its account became limited, dead or paused, or
    /// failed the request before the first byte. Every hop the request made is judged with
    /// that request's evidence, at the moment of the hop, on the view taken just before it.
    pub(super) async fn check_hops(
        &mut self,
        session: &str,
        served_by: Option<&AccountId>,
        left: &[(AccountId, Left)],
        before: Option<&SupervisorView>,
    ) {
        let view = self.sup.view().await.ok();
        let made: Vec<HopEvent> = view
            .iter()
            .flat_map(|v| v.events.iter())
            .filter(|e| e.session == session)
            .filter(|e| before.is_none_or(|b| !b.events.contains(e)))
            .cloned()
            .collect();
        for hop in &made {
            self.judge_hop(hop, left, before);
        }
        let Some(account) = served_by else { return };
        let prev = self.last.insert(session.to_string(), account.clone());
        let Some(prev) = prev.filter(|p| p != account) else {
            return;
        };
        let recorded = view.as_ref().is_some_and(|v| {
            v.events
                .iter()
                .any(|e| e.session == session && &e.to == account)
        });
        // An expired binding makes the session new again: that is not a hop.
        let expired = view.as_ref().is_some_and(|v| {
            !v.bindings.contains_key(session) || v.bindings[session].account == *account
        });
        if !recorded && !expired {
            self.violation(format!(
                "I2: session {session} moved {prev} → {account} with no hop recorded"
            ));
        }
    }

    fn judge_hop(
        &mut self,
        hop: &HopEvent,
        left: &[(AccountId, Left)],
        before: Option<&SupervisorView>,
    ) {
        let prev = &hop.from;
        let m = before.and_then(|v| v.accounts.iter().find(|m| m.id == *prev));
        let left_for = |f: fn(Left) -> bool| left.iter().any(|(a, w)| a == prev && f(*w));
        let justified = match hop.reason.as_str() {
            "limited" => {
                m.is_some_and(|m| m.quota.limited_until(hop.at, None).is_some())
                    || left_for(Left::is_quota)
            }
            "dead" => {
                m.is_none_or(|m| m.health.phase == Phase::Dead) || !self.model.grant_alive(prev)
            }
            "paused" => self.checks.borrow().paused(prev),
            // Evidence for each reason left is checked by `check_left`.
            "failed" => left_for(|_| true),
            "no_token" => {
                let cause = lock(&self.refresher.failed_at).contains_key(&**prev)
                    || self.checks.borrow().last_401.contains_key(&**prev);
                left_for(|w| w == Left::NoToken)
                    || m.is_some_and(|m| {
                        !m.health.usable(hop.at) && m.health.phase != Phase::Refreshing
                    }) && cause
            }
            _ => false,
        };
        if !justified {
            self.violation(format!(
                "I2: session {} moved {prev} → {} for {:?} without cause",
                hop.session, hop.to, hop.reason
            ));
        }
    }

    /// I1: a 429 only when the authority would have served no routable account: each one is
    /// paused, dead, out of quota at the authority, or benched after a 429 it really sent.
    pub(super) fn check_all_limited(&mut self, left: &[(AccountId, Left)]) {
        let now = self.clock.now();
        let c = self.checks.borrow();
        let Some(view) = c.view.as_ref() else { return };
        let mut able = Vec::new();
        for m in &view.accounts {
            let excused = c.paused(&m.id)
                || m.health.phase == Phase::Dead
                || !authority_serves(&self.model, &m.id)
                || c.was_delivered(&m.id, Delivered::Status(429))
                || c.was_delivered(&m.id, Delivered::WindowRejected)
                || backoff_after_a_real_429(m, c.last_429.get(&*m.id), now);
            if !excused {
                able.push(m.id.to_string());
            }
        }
        drop(c);
        if !able.is_empty() {
            self.violation(format!("I1: a 429 was returned at {now:?} while the authority would have served {able:?} (tried first: {left:?})"));
        }
    }

    /// I1b: a 429 that rejects a window is never relayed while another account could serve.
    pub(super) fn check_relayed_429(&mut self, account: &AccountId, status: u16) {
        let c = self.checks.borrow();
        let rejected = c
            .delivered
            .iter()
            .rev()
            .find(|(a, _)| a == account)
            .is_some_and(|(_, d)| *d == Delivered::WindowRejected);
        if status != 429 || !rejected {
            return;
        }
        let others: Vec<String> = c
            .emails
            .iter()
            .filter(|e| e.as_str() != &**account && !c.paused(e))
            .filter(|e| c.member(e).is_some_and(|m| m.health.phase != Phase::Dead))
            .filter(|e| authority_serves(&self.model, e))
            .cloned()
            .collect();
        drop(c);
        if !others.is_empty() {
            self.violation(format!(
                "I1: a rejected-window 429 of {account} was relayed while {others:?} could serve"
            ));
        }
    }

    /// I8 and I3 after every step. I8 against the authority: a bench stands only while the
    /// authority refuses the account, or as a backoff after a 429 the authority really sent.
    pub(super) fn check_step(&mut self) {
        let c = self.checks.borrow();
        let now = c.now;
        let mut found = Vec::new();
        if let Some(view) = &c.view {
            for m in &view.accounts {
                let Some(until) = m.quota.limited_until(now, None) else {
                    continue;
                };
                let refused = !authority_serves(&self.model, &m.id);
                if !refused && !backoff_after_a_real_429(m, c.last_429.get(&*m.id), now) {
                    found.push(format!(
                        "I8: {} is benched at {now:?} until {until:?} although the authority would serve it",
                        m.id
                    ));
                }
            }
        }
        drop(c);
        for v in found {
            self.violation(v);
        }
        for (e, counters) in self.model.counters() {
            if counters.refresh_replays > 0 {
                self.violation(format!(
                    "I3: a refresh for {e} used a refresh token the authority had already rotated"
                ));
            }
        }
    }
}

/// Whether the account's bench is a backoff that a 429 from the authority started (a 429 with
/// no usable reset benches for at most `BACKOFF_CAP`).
fn backoff_after_a_real_429(m: &MemberView, last_429: Option<&Timestamp>, now: Timestamp) -> bool {
    match (m.quota.backoff_until, last_429) {
        (Some(until), Some(at)) => until > now && until <= at.plus(BACKOFF_CAP),
        _ => false,
    }
}
