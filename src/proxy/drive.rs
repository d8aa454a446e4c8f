//! One proxied request's journey through the pool, independent of the transport: route, lease,
//! send, feed the answer's headers to the account's quota machine, and, before any byte has
//! reached the client, move on to the next account on a rejected window, a 401 that one forced
//! refresh did not cure, or a connection lost before headers.
//!
//! The daemon drives it over HTTP (`forward.rs`); the failover simulation drives it over the
//! simulator's model, so both run the same decisions. Must not: retry after handing an answer
//! back, or try an account twice for one request.

use std::future::Future;

use ccs_actors::account::{Observe, Unauthorized};
use ccs_actors::quota::Verdict;
use ccs_actors::routing::{AccountId, Decision};
use ccs_actors::supervisor::{Placement, RouteError, SupervisorHandle};
use ccs_actors::{Secret, Timestamp};

/// What the upstream said before the body.
pub struct Answer<B> {
    pub status: u16,
    /// The headers the quota machine reads (rate-limit headers, `retry-after`,
    /// `x-should-retry`); taken by the driver for it.
    pub headers: Vec<(String, String)>,
    /// The rest of the answer, relayed as it is.
    pub body: B,
}

/// Where requests go: the real API over HTTP, or the simulator's model.
pub trait Upstream {
    type Body;
    /// Sends the request with `access`; `Err` when the connection failed before any header.
    fn send(
        &self,
        account: &AccountId,
        access: &Secret,
    ) -> impl Future<Output = Result<Answer<Self::Body>, String>>;
}

/// How a request ended.
pub enum Driven<B> {
    /// An account answered; relay it.
    Relay {
        account: AccountId,
        decision: Decision,
        answer: Answer<B>,
        /// Accounts tried first and left, with why.
        left: Vec<(AccountId, &'static str)>,
    },
    /// Nobody can take it. `left`: the accounts that were tried and failed it first.
    AllLimited {
        earliest_reset: Option<Timestamp>,
        left: Vec<(AccountId, &'static str)>,
    },
    /// The upstream could not be reached on the accounts that could take the request, and no
    /// other account can: a transport failure, not a quota one (the client gets a 502, not a 429).
    Unreachable {
        left: Vec<(AccountId, &'static str)>,
    },
    /// The supervisor is gone (shutting down).
    Stopped,
}

const UNREACHABLE: &str = "connection failed before headers";

enum Outcome<B> {
    Relay(Answer<B>),
    Next(&'static str),
}

/// Carries one request through the pool.
pub async fn drive<U: Upstream>(
    sup: &SupervisorHandle,
    up: &U,
    pool: &str,
    session: Option<&str>,
    family: Option<&str>,
) -> Driven<U::Body> {
    let mut exclude: Vec<AccountId> = Vec::new();
    let mut left = Vec::new();
    loop {
        let placement = match sup.place(pool, session, family, exclude.clone()).await {
            Ok(p) => p,
            Err(RouteError::AllLimited { earliest_reset }) => {
                if left.iter().any(|(_, why)| *why == UNREACHABLE) {
                    return Driven::Unreachable { left };
                }
                return Driven::AllLimited {
                    earliest_reset,
                    left,
                };
            }
            Err(RouteError::Stopped) => return Driven::Stopped,
        };
        match attempt(up, &placement).await {
            Outcome::Relay(answer) => {
                return Driven::Relay {
                    account: placement.account,
                    decision: placement.decision,
                    answer,
                    left,
                }
            }
            Outcome::Next(why) => {
                tracing::info!(account = %placement.account, why, "trying the next account");
                left.push((placement.account.clone(), why));
                exclude.push(placement.account);
            }
        }
    }
}

/// One account's go at a request: at most two sends (the second after a forced refresh).
async fn attempt<U: Upstream>(up: &U, p: &Placement) -> Outcome<U::Body> {
    let mut lease = p.lease.clone();
    let mut refreshed = false;
    loop {
        let mut answer = match up.send(&p.account, &lease.access).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(account = %p.account, error = %e, "upstream unreachable before any header");
                return Outcome::Next(UNREACHABLE);
            }
        };
        // The headers are the quota machine's alone: hand them over rather than copy them.
        let observe = Observe {
            status: answer.status,
            headers: std::mem::take(&mut answer.headers),
        };
        // Only a 429 waits for the quota machine's verdict; every other answer is relayed at
        // once while the account folds its headers.
        let verdict = if answer.status == 429 {
            p.addr.send(observe).await.unwrap_or(Verdict::Ok)
        } else {
            p.addr.do_send(observe);
            Verdict::Ok
        };
        match answer.status {
            401 if !refreshed => {
                refreshed = true;
                match p
                    .addr
                    .send(Unauthorized {
                        generation: lease.generation,
                    })
                    .await
                {
                    Ok(Ok(new)) => {
                        lease = new;
                        continue;
                    }
                    _ => return Outcome::Next("401 and the refresh failed"),
                }
            }
            401 => return Outcome::Next("401 after a fresh token"),
            429 => match verdict {
                Verdict::Limited { .. } | Verdict::BackedOff { .. } => {
                    return Outcome::Next("rate limited")
                }
                Verdict::RetryRequest | Verdict::Ok => return Outcome::Relay(answer),
            },
            _ => return Outcome::Relay(answer),
        }
    }
}
