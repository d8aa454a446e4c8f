//! What the account learns from the Messages API's answers: `Observe` (status and rate-limit
//! headers) and `ObserveUsage` (a usage body), folded into the quota machine, published to the
//! supervisor when a limit or the utilization moves, and written down: limits durably, and the
//! verdict answered only once they are; utilization batched, at most every
//! `QUOTA_SAVE_EVERY`. The writes go through the store's own writer (`Store::persist_quota`),
//! never blocking this actor's thread.

use std::time::Duration;

use actix::prelude::*;

use super::AccountActor;
use crate::lifecycle::Event;
use crate::ports::Persisting;
use crate::quota::{Headers, Verdict};

/// Utilization alone moves on every response; it is written down at most this often (limits,
/// resets and backoffs are written at once).
const QUOTA_SAVE_EVERY: Duration = Duration::from_secs(60);

/// A Messages API response to fold into the quota machine.
#[derive(Message)]
#[rtype(result = "Verdict")]
pub struct Observe {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

/// A usage-endpoint body to fold into the quota machine.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ObserveUsage(pub crate::quota::UsageBody);

struct OwnedHeaders(Vec<(String, String)>);

impl Headers for OwnedHeaders {
    fn header(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Handler<Observe> for AccountActor {
    type Result = Response<Verdict>;

    fn handle(&mut self, msg: Observe, ctx: &mut Context<Self>) -> Self::Result {
        if (200..300).contains(&msg.status) {
            // Served with its credential: the machine ends a refusal, if there was one.
            self.apply(Event::Served, ctx);
        }
        let before = self.quota.limits();
        let now = self.deps.clock.now();
        let verdict = self
            .quota
            .observe(msg.status, &OwnedHeaders(msg.headers), now);
        let limits_changed = self.quota.limits() != before;
        let stale = self
            .quota_saved_at
            .is_none_or(|t| now.since(t) >= QUOTA_SAVE_EVERY);
        let mut write = None;
        if limits_changed || stale {
            // Durable when the limits changed: a bench lost in a crash would send requests
            // to a limited account.
            write = Some(
                self.deps
                    .store
                    .persist_quota(&self.id, &self.quota, limits_changed),
            );
            self.quota_saved_at = Some(now);
        }
        // Routing needs limits at once; utilization only for the soft threshold, so a move of
        // under one point is not worth a message.
        let moved = (self.quota.five_hour.utilization - self.published_util).abs() >= 0.01;
        if limits_changed || moved {
            self.publish();
        }
        // A changed limit is durable before the verdict is answered: a request that moves on
        // for it leaves an account whose bench survives a crash.
        match write {
            Some(Persisting::Pending(w)) => {
                let id = self.id.clone();
                Response::fut(async move {
                    if let Err(e) = w.await {
                        tracing::warn!(account = %id, error = %e, "could not save quota state");
                    }
                    verdict
                })
            }
            Some(Persisting::Done(Err(e))) => {
                tracing::warn!(account = %self.id, error = %e, "could not save quota state");
                Response::reply(verdict)
            }
            Some(Persisting::Done(Ok(()))) | None => Response::reply(verdict),
        }
    }
}

impl Handler<ObserveUsage> for AccountActor {
    type Result = ();

    fn handle(&mut self, msg: ObserveUsage, ctx: &mut Context<Self>) {
        let now = self.deps.clock.now();
        self.quota.observe_usage(&msg.0, now);
        let write = self.deps.store.persist_quota(&self.id, &self.quota, true);
        self.publish();
        self.logged(write, "could not save quota state", ctx);
    }
}

/// Several daemons: a peer saw this account's limits change (a bench, a reset, a backoff) and
/// wrote them to the shared store. Its record is the newer observation of the same account at
/// the same authority: it replaces this daemon's, and routing hears of it at once. Written down
/// here only batched (the shared store holds it durably), and never offered back to the peers.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PeerQuota(pub crate::quota::Quota);

impl Handler<PeerQuota> for AccountActor {
    type Result = ();

    fn handle(&mut self, msg: PeerQuota, ctx: &mut Context<Self>) {
        if self.quota.limits() == msg.0.limits() {
            return;
        }
        self.quota = msg.0;
        let write = self.deps.store.persist_quota(&self.id, &self.quota, false);
        self.publish();
        self.logged(write, "could not save quota state", ctx);
    }
}
