//! `SupervisorHandle`: the typed handle over the supervisor's address, and `place`, which
//! routes a request and leases its token (asking tokenless accounts to retry their refresh
//! before refusing). Route and lease are one step: `Route` answers with the token when the
//! account has one ready, else binds nothing until the account has leased one (`Bind`). A request of a conversation its account keeps is placed from what the
//! supervisor publishes (`hot.rs`), without a message. Must not: decide routing itself (the
//! supervisor's policy does, on either path).

use actix::prelude::*;

use std::sync::Arc;

use super::hot::Hot;
use super::route::{Bind, Touch};
use super::{
    AccountAddr, AddAccount, Route, SaveQuotas, SettleAll, Supervisor, SupervisorView, View,
};
use crate::account::{AccountActor, Deps, GetLease, Lease, LeaseError};
use crate::clock::{SharedClock, Timestamp};
use crate::routing::{self, AccountId, Decision};

/// A request the router could place.
#[derive(Clone, Debug)]
pub struct Placement {
    pub account: AccountId,
    pub lease: Lease,
    pub decision: Decision,
    pub addr: Addr<AccountActor>,
    /// Accounts routing chose first whose lease failed (and why), in the order tried: the
    /// request was placed elsewhere because of them, so the caller must know.
    pub skipped: Vec<(AccountId, LeaseError)>,
    /// The account was limited on a guess and gets this request as its probe (R10): the
    /// caller waits for its answer to be folded, so the next request sees the outcome.
    pub probe: bool,
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

    /// Routes a request and leases a token from the chosen account; an account that cannot
    /// lease (dead, or no usable token) is excluded and the request routed again.
    pub async fn place(
        &self,
        pool: &str,
        session: Option<&str>,
        family: Option<&str>,
        mut exclude: Vec<AccountId>,
    ) -> Result<Placement, RouteError> {
        if let (Some(s), true) = (session, exclude.is_empty()) {
            let now = self.clock.now();
            if let Some((p, last_used)) = self.hot.place(pool, s, family, now, &self.policy) {
                if now.since(last_used) >= super::TOUCH_GRAIN {
                    self.addr.do_send(Touch {
                        session: s.to_string(),
                        account: p.account.clone(),
                        at: now,
                    });
                }
                return Ok(p);
            }
        }
        let mut skipped = Vec::new();
        let mut demanded = false;
        loop {
            let routed = self
                .addr
                .send(Route {
                    pool: pool.to_string(),
                    session: session.map(str::to_string),
                    family: family.map(str::to_string),
                    exclude: exclude.clone(),
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
            match leased {
                Ok(Ok(lease)) => {
                    if let (true, Some(s)) = (routed.deferred, session) {
                        self.addr.do_send(Bind {
                            session: s.to_string(),
                            decision: routed.decision.clone(),
                            exclude: exclude.clone(),
                            family: family.map(str::to_string),
                        });
                    }
                    return Ok(Placement {
                        account,
                        lease,
                        decision: routed.decision,
                        addr,
                        skipped,
                        probe: routed.probe,
                    });
                }
                Ok(Err(e)) => {
                    skipped.push((account.clone(), e));
                    exclude.push(account);
                }
                Err(_) => {
                    skipped.push((account.clone(), LeaseError::Stopped));
                    exclude.push(account);
                }
            }
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
