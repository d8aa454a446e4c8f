//! Routing one request: the `Route` message (the pure policy over the health snapshot, then the
//! binding it implies, persisted and recorded as a hop when it moves), `Peek` and
//! `ExpireBindings`. Must not: wait on an account (only `Demand` goes out, from the handle).

use actix::prelude::*;

use super::{hot, HopEvent, Supervisor, EVENTS_KEPT, TOUCH_PERSIST_EVERY};
use crate::account::{AccountActor, Lease};
use crate::lifecycle::Phase;
use crate::routing::{self, AccountId, Decision};

/// One routing decision: which account, and its actor to lease from.
#[derive(Message)]
#[rtype(result = "Routed")]
pub struct Route {
    pub pool: String,
    pub session: Option<String>,
    pub family: Option<String>,
    /// Accounts that already failed this request.
    pub exclude: Vec<AccountId>,
}

pub struct Routed {
    pub decision: Decision,
    pub addr: Option<Addr<AccountActor>>,
    /// The chosen account's token, when it has one it would lease now: route and lease in one
    /// step. `None`: ask the account (`GetLease`), which may wait for a refresh.
    pub lease: Option<Lease>,
    /// The session's new binding (or move) waits for the lease: the caller sends `Bind` once
    /// the account has leased, so a lease that fails leaves no binding and no hop behind.
    pub deferred: bool,
    /// With `AllLimited`: the pool's accounts that were passed over for want of a usable token
    /// (not paused, not dead, not limited): the refusal is then not about quota.
    pub tokenless: Vec<(AccountId, Addr<AccountActor>)>,
    /// Accounts in the pool, so a refusal can say how many without a snapshot of everything.
    pub members: usize,
    /// The decision is a probe of an account limited on a guess (R10).
    pub probe: bool,
}

impl Handler<Route> for Supervisor {
    type Result = MessageResult<Route>;

    fn handle(&mut self, msg: Route, _ctx: &mut Context<Self>) -> Self::Result {
        self.routed += 1;
        let now = self.deps.clock.now();
        let family = msg.family.as_deref();
        let pool = self.candidates(&msg.pool, family, now);
        let session = msg.session.as_deref();
        let bound = session.and_then(|s| {
            hot::read(&self.hot.affinity)
                .get(s, now, self.policy.affinity_ttl)
                .map(|b| b.account.clone())
        });
        let mut decision =
            routing::route(&pool, session, bound.as_ref(), &msg.exclude, &self.policy);
        let mut probe = false;
        if matches!(decision, Decision::AllLimited { .. }) {
            if let Some(id) = self.probe(&pool, &msg.exclude, family, now) {
                // The probe serves the session like any placement: bound there, and a hop
                // recorded when it moves.
                decision = match (session, bound.as_ref()) {
                    (None, _) => Decision::Unbound(id),
                    (Some(_), Some(from)) if *from == id => Decision::Kept(id),
                    (Some(_), Some(from)) => Decision::Moved {
                        from: from.clone(),
                        to: id,
                    },
                    (Some(_), None) => Decision::Bound(id),
                };
                probe = true;
            }
        }
        let chosen = decision.account().and_then(|a| self.accounts.get(a));
        let addr = chosen.map(|m| m.addr.clone());
        let lease = chosen.and_then(|m| m.ready_lease(now));
        let rebinds = matches!(decision, Decision::Bound(_) | Decision::Moved { .. });
        let deferred = session.is_some() && rebinds && lease.is_none();
        if let (Some(s), false) = (session, deferred) {
            self.apply(s, &decision, &msg.exclude, family, now);
        }
        let tokenless = match decision {
            Decision::AllLimited { .. } => pool
                .iter()
                .filter(|c| !c.routable && !msg.exclude.contains(&c.id))
                .filter_map(|c| {
                    let m = self.accounts.get(&c.id)?;
                    (!m.paused && m.health.phase != Phase::Dead)
                        .then(|| (c.id.clone(), m.addr.clone()))
                })
                .collect(),
            _ => Vec::new(),
        };
        MessageResult(Routed {
            decision,
            addr,
            lease,
            deferred,
            tokenless,
            members: self.pools.get(&msg.pool).map_or(0, Vec::len),
            probe,
        })
    }
}

/// The binding a `Route` deferred, now that its account has leased a token. Sent without
/// waiting for an answer; applied only if nothing rebound the session meanwhile.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Bind {
    pub session: String,
    /// `Bound` or `Moved`, as `Route` decided it.
    pub decision: Decision,
    pub exclude: Vec<AccountId>,
    pub family: Option<String>,
}

impl Handler<Bind> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: Bind, _ctx: &mut Context<Self>) {
        let now = self.deps.clock.now();
        let current = hot::read(&self.hot.affinity)
            .get(&msg.session, now, self.policy.affinity_ttl)
            .map(|b| b.account.clone());
        let decision = match (msg.decision, current) {
            (Decision::Bound(a), None) => Decision::Bound(a),
            (Decision::Moved { from, to }, Some(c)) if c == from => Decision::Moved { from, to },
            // The old binding expired meanwhile: a new one, not a move.
            (Decision::Moved { to, .. }, None) => Decision::Bound(to),
            // Decided otherwise meanwhile: the newer binding stands.
            _ => return,
        };
        self.apply(
            &msg.session,
            &decision,
            &msg.exclude,
            msg.family.as_deref(),
            now,
        );
    }
}

/// A request of `session` was placed on its bound `account` from the hot path at `at`: the
/// binding's last use moves, as a `Kept` decision of `Route` would move it. Sent without
/// waiting for an answer.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Touch {
    pub session: String,
    pub account: AccountId,
    pub at: crate::clock::Timestamp,
}

impl Handler<Touch> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: Touch, _ctx: &mut Context<Self>) {
        let last = hot::read(&self.hot.affinity)
            .get(&msg.session, msg.at, self.policy.affinity_ttl)
            .filter(|b| b.account == msg.account)
            .map(|b| b.last_used);
        // Moved or expired meanwhile: the newer decision stands.
        if let Some(last) = last {
            self.keep(&msg.session, &msg.account, last, msg.at);
        }
    }
}

impl Supervisor {
    /// What `decision` means for `session`'s binding: kept (its last use moves), bound, or
    /// moved (a hop event, with its reason judged now).
    fn apply(
        &mut self,
        s: &str,
        decision: &Decision,
        exclude: &[AccountId],
        family: Option<&str>,
        now: crate::clock::Timestamp,
    ) {
        match decision {
            Decision::Kept(a) => {
                let last = hot::read(&self.hot.affinity)
                    .get(s, now, self.policy.affinity_ttl)
                    .map_or(now, |b| b.last_used);
                self.keep(s, a, last, now);
            }
            Decision::Bound(a) => {
                hot::write(&self.hot.affinity).bind(s, a.clone(), now);
                self.persist_binding(s);
            }
            Decision::Moved { from, to } => {
                let reason = self.hop_reason(from, exclude, family, now);
                tracing::info!(session = s, from = %from, to = %to, reason = reason.as_str(), "session moved");
                let hop = HopEvent {
                    at: now,
                    session: s.to_string(),
                    from: from.clone(),
                    to: to.clone(),
                    reason,
                };
                if let Some(watch) = &self.on_hop {
                    watch(&hop);
                }
                self.events.push_back(hop);
                while self.events.len() > EVENTS_KEPT {
                    self.events.pop_front();
                }
                hot::write(&self.hot.affinity).bind(s, to.clone(), now);
                self.persist_binding(s);
            }
            Decision::Unbound(_) | Decision::AllLimited { .. } => {}
        }
    }

    /// A session stays on `account`: its last use is now, written down at most every
    /// `TOUCH_PERSIST_EVERY` while it is merely kept.
    fn keep(
        &mut self,
        session: &str,
        account: &AccountId,
        last: crate::clock::Timestamp,
        now: crate::clock::Timestamp,
    ) {
        hot::write(&self.hot.affinity).bind(session, account.clone(), now);
        if now.since(last) >= TOUCH_PERSIST_EVERY {
            self.persist_binding(session);
        }
    }

    /// Before a client is refused: an account limited only by a guess (a 429 that named no
    /// reset) that has not been probed in this spell gets the request (R10). Single
    /// flight: it is marked at once, so requests meanwhile are refused as before.
    fn probe(
        &mut self,
        pool: &[routing::Candidate],
        exclude: &[AccountId],
        family: Option<&str>,
        now: crate::clock::Timestamp,
    ) -> Option<AccountId> {
        let id = pool
            .iter()
            .filter(|c| c.routable && !exclude.contains(&c.id) && !self.probed.contains(&c.id))
            .find(|c| {
                self.accounts
                    .get(&c.id)
                    .is_some_and(|m| m.quota.limited_by_guess(now, family))
            })?
            .id
            .clone();
        tracing::info!(account = %id, "every account is limited, this one only on a guess: probing it with this request");
        self.probed.insert(id.clone());
        Some(id)
    }
}

/// Which account a new session of `pool` would get now, without binding anything.
#[derive(Message)]
#[rtype(result = "Option<AccountId>")]
pub struct Peek {
    pub pool: String,
    pub family: Option<String>,
}

impl Handler<Peek> for Supervisor {
    type Result = Option<AccountId>;

    fn handle(&mut self, msg: Peek, _ctx: &mut Context<Self>) -> Self::Result {
        let now = self.deps.clock.now();
        let pool = self.candidates(&msg.pool, msg.family.as_deref(), now);
        routing::route(&pool, Some(""), None, &[], &self.policy)
            .account()
            .cloned()
    }
}

/// Drops idle bindings; the daemon sends it periodically.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct ExpireBindings;

impl Handler<ExpireBindings> for Supervisor {
    type Result = usize;

    fn handle(&mut self, _msg: ExpireBindings, _ctx: &mut Context<Self>) -> usize {
        let now = self.deps.clock.now();
        let gone = hot::write(&self.hot.affinity).expire(now, self.policy.affinity_ttl);
        if let Err(e) = self.deps.store.remove_bindings(&gone) {
            tracing::warn!(error = %e, "could not remove expired bindings");
        }
        gone.len()
    }
}

/// Several daemons: a peer bound (or moved) `session` to `account`. Applied to the affinity
/// table as this daemon's own binding would be, but not written back (the peer wrote it), and
/// only if the account is one of this daemon's; the newest word on a session wins.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PeerBound {
    pub session: String,
    pub account: AccountId,
}

impl Handler<PeerBound> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: PeerBound, _ctx: &mut Context<Self>) {
        if !self.accounts.contains_key(&msg.account) {
            return;
        }
        let now = self.deps.clock.now();
        hot::write(&self.hot.affinity).bind(&msg.session, msg.account, now);
    }
}
