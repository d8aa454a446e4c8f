//! `SupervisorHandle`: the typed handle over the supervisor's address, and the one way a request
//! goes through the pool. `request` starts a request's attempts; each `Request::place` routes
//! it and leases its token (asking tokenless accounts to retry their refresh before refusing),
//! and never places it twice on one account. Route and lease are one step: `Route` answers with
//! the token when the account has one ready, else binds nothing until the account has leased
//! one (`Bind`). A request of a conversation its account keeps is placed from what the
//! supervisor publishes (`hot.rs`), without a message. What came of a placement goes back
//! through the `Placement` (`observe`, `unauthorized`, `refused`): the caller never names an
//! account's actor. Must not: decide routing itself (the supervisor's policy does, on either
//! path).

use actix::prelude::*;

use std::sync::Arc;

use super::hot::Hot;
use super::route::{Bind, Touch};
use super::{
    AccountAddr, AddAccount, Route, SaveQuotas, SettleAll, Supervisor, SupervisorView, View,
};
use crate::account::{
    AccountActor, CredentialRefused, Deps, GetLease, Lease, LeaseError, Observe, Unauthorized,
};
use crate::clock::{SharedClock, Timestamp};
use crate::quota::Verdict;
use crate::routing::{self, AccountId, Decision};

/// A request the router placed on an account.
#[derive(Clone, Debug)]
pub struct Placement {
    pub account: AccountId,
    /// The token to send with; `unauthorized` replaces it.
    pub lease: Lease,
    pub decision: Decision,
    pub(super) addr: Addr<AccountActor>,
    /// Accounts routing chose first whose lease failed (and why), in the order tried: the
    /// request was placed elsewhere because of them, so the caller must know.
    pub skipped: Vec<(AccountId, LeaseError)>,
    /// The account was limited on a guess and gets this request as its probe (R10): its
    /// answer is waited for, so the next request sees the outcome.
    pub probe: bool,
}

impl Placement {
    /// Hands an answer's status and headers to the account's quota machine. A 429, and a
    /// probe's answer, wait for its verdict (the request moves on knowing it; the next request
    /// sees what the probe found); any other answer is folded while it is relayed (`Ok`).
    pub async fn observe(&self, status: u16, headers: Vec<(String, String)>) -> Verdict {
        let observe = Observe { status, headers };
        if status == 429 || self.probe {
            self.addr.send(observe).await.unwrap_or(Verdict::Ok)
        } else {
            self.addr.do_send(observe);
            Verdict::Ok
        }
    }

    /// The API refused the lease's token (401): the account refreshes once, if that token is
    /// still its current one, and the new lease replaces this one. False when none came.
    pub async fn unauthorized(&mut self) -> bool {
        let asked = Unauthorized {
            generation: self.lease.generation,
        };
        match self.addr.send(asked).await {
            Ok(Ok(lease)) => {
                self.lease = lease;
                true
            }
            _ => false,
        }
    }

    /// The API refused the token a forced refresh just brought: the account benches the
    /// credential rather than rotate its grant on every request.
    pub fn refused(&self) {
        self.addr.do_send(CredentialRefused {
            generation: self.lease.generation,
        });
    }
}

/// One request's attempts: where it goes next. Every account it was placed on, or whose lease
/// failed for it, is never chosen again, so a retry goes to the supervisor with all of them
/// excluded (never to the hot path, which only keeps a conversation where it is).
pub struct Request<'a> {
    sup: &'a SupervisorHandle,
    pool: &'a str,
    session: Option<&'a str>,
    family: Option<&'a str>,
    tried: Vec<AccountId>,
}

impl Request<'_> {
    /// Routes the request and leases a token from the chosen account; an account that cannot
    /// lease (dead, or no usable token) is left out and the request routed again.
    pub async fn place(&mut self) -> Result<Placement, RouteError> {
        let (pool, session, family) = (self.pool, self.session, self.family);
        let sup = self.sup;
        if let (Some(s), true) = (session, self.tried.is_empty()) {
            let now = sup.clock.now();
            if let Some((p, last_used)) = sup.hot.place(pool, s, family, now, &sup.policy) {
                if now.since(last_used) >= super::TOUCH_GRAIN {
                    sup.addr.do_send(Touch {
                        session: s.to_string(),
                        account: p.account.clone(),
                        at: now,
                    });
                }
                self.tried.push(p.account.clone());
                return Ok(p);
            }
        }
        let mut skipped = Vec::new();
        let mut demanded = false;
        loop {
            let routed = sup
                .addr
                .send(Route {
                    pool: pool.to_string(),
                    session: session.map(str::to_string),
                    family: family.map(str::to_string),
                    exclude: self.tried.clone(),
                })
                .await
                .map_err(|_| RouteError::Stopped)?;
            let (account, addr) = match (routed.decision.account(), routed.addr) {
                (Some(a), Some(addr)) => (a.clone(), addr),
                _ => {
                    // Nobody can serve, but some accounts only lack a token: ask them to retry
                    // their refresh now (bounded by the machine); if one starts, route again
                    // once and wait for it rather than refuse the request.
                    if !demanded && !routed.tokenless.is_empty() {
                        demanded = true;
                        let mut started = false;
                        for (_, addr) in &routed.tokenless {
                            started |= addr.send(crate::account::Demand).await.unwrap_or(false);
                        }
                        if started {
                            continue;
                        }
                    }
                    skipped.extend(
                        routed
                            .tokenless
                            .into_iter()
                            .map(|(a, _)| (a, LeaseError::Unavailable)),
                    );
                    let earliest_reset = match routed.decision {
                        Decision::AllLimited { earliest_reset } => earliest_reset,
                        _ => None,
                    };
                    return Err(RouteError::AllLimited {
                        earliest_reset,
                        skipped,
                        members: routed.members,
                    });
                }
            };
            let leased = match routed.lease {
                Some(lease) => Ok(Ok(lease)),
                None => addr.send(GetLease).await,
            };
            let failed = match leased {
                Ok(Ok(lease)) => {
                    if let (true, Some(s)) = (routed.deferred, session) {
                        sup.addr.do_send(Bind {
                            session: s.to_string(),
                            decision: routed.decision.clone(),
                            exclude: self.tried.clone(),
                            family: family.map(str::to_string),
                        });
                    }
                    self.tried.push(account.clone());
                    return Ok(Placement {
                        account,
                        lease,
                        decision: routed.decision,
                        addr,
                        skipped,
                        probe: routed.probe,
                    });
                }
                Ok(Err(e)) => e,
                Err(_) => LeaseError::Stopped,
            };
            skipped.push((account.clone(), failed));
            self.tried.push(account);
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Routing found no account it may use. `skipped`: accounts it chose whose lease failed.
    #[error("every account in the pool is limited, dead or paused")]
    AllLimited {
        earliest_reset: Option<Timestamp>,
        skipped: Vec<(AccountId, LeaseError)>,
        /// Accounts in the pool (0: no such pool, or an empty one).
        members: usize,
    },
    #[error("the supervisor stopped")]
    Stopped,
}

/// A typed handle over the supervisor's address.
#[derive(Clone)]
pub struct SupervisorHandle {
    addr: Addr<Supervisor>,
    hot: Arc<Hot>,
    clock: SharedClock,
    policy: routing::Policy,
}

impl SupervisorHandle {
    pub fn start(deps: Deps, policy: routing::Policy) -> Self {
        let clock = deps.clock.clone();
        let supervisor = Supervisor::new(deps, policy);
        let hot = supervisor.hot.clone();
        SupervisorHandle {
            addr: supervisor.start(),
            hot,
            clock,
            policy,
        }
    }

    pub fn addr(&self) -> &Addr<Supervisor> {
        &self.addr
    }

    /// Whether `session` is bound now (read from the hot path, no message).
    pub fn bound(&self, session: &str) -> bool {
        let now = self.clock.now();
        super::hot::read(&self.hot.affinity)
            .get(session, now, self.policy.affinity_ttl)
            .is_some()
    }

    /// Starts a request of `session` (when it has one) for `pool`; its model `family` decides
    /// which weekly limits apply.
    pub fn request<'a>(
        &'a self,
        pool: &'a str,
        session: Option<&'a str>,
        family: Option<&'a str>,
    ) -> Request<'a> {
        Request {
            sup: self,
            pool,
            session,
            family,
            tried: Vec::new(),
        }
    }

    pub async fn add(&self, msg: AddAccount) -> Result<(), RouteError> {
        self.addr.send(msg).await.map_err(|_| RouteError::Stopped)
    }

    /// Waits until no account has a refresh call out or a token unwritten.
    pub async fn settle(&self) {
        let _ = self.addr.send(SettleAll).await;
    }

    /// Writes every account's quota down as it stands (a clean stop).
    pub async fn save_quotas(&self) {
        let _ = self.addr.send(SaveQuotas).await;
    }

    pub async fn view(&self) -> Result<SupervisorView, RouteError> {
        self.addr.send(View).await.map_err(|_| RouteError::Stopped)
    }

    pub async fn account(&self, id: &AccountId) -> Option<Addr<AccountActor>> {
        self.addr.send(AccountAddr(id.clone())).await.ok().flatten()
    }
}

impl std::fmt::Debug for SupervisorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SupervisorHandle")
    }
}
