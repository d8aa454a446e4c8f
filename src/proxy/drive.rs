//! One proxied request's journey through the pool, independent of the transport: route, lease,
//! send, feed the answer's headers to the account's quota machine, and, before any byte has
//! reached the client, move on to the next account on a rejected window, a 401 that one forced
//! refresh did not cure, or a connection lost or silent before headers. Every account left is recorded
//! with a typed `Left` reason; a request ends in 429 only when all of them are about quota.
//!
//! The daemon drives it over HTTP (`forward.rs`); the failover simulation drives it over the
//! simulator's model, so both run the same decisions. Must not: retry after handing an answer
//! back, or try an account twice for one request.

use std::future::Future;

use ccs_actors::account::{CredentialRefused, LeaseError, Observe, Unauthorized};
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

/// Why no answer came before its headers.
#[derive(Debug)]
pub enum SendError {
    /// The connection failed (refused, reset, TLS).
    Unreachable(String),
    /// No headers within the bound (the upstream accepted and went silent).
    TimedOut(std::time::Duration),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Unreachable(e) => write!(f, "{e}"),
            SendError::TimedOut(d) => write!(f, "no response headers within {} s", d.as_secs()),
        }
    }
}

/// Where requests go: the real API over HTTP, or the simulator's model.
pub trait Upstream {
    type Body;
    /// Sends the request with `access`; `Err` when no header came back.
    fn send(
        &self,
        account: &AccountId,
        access: &Secret,
    ) -> impl Future<Output = Result<Answer<Self::Body>, SendError>>;
}

/// Why an account was left for the next one, before any byte reached the client. Each says
/// which side failed; only `RateLimited` is about quota, so only it may end in a 429.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Left {
    /// The upstream rejected a window (or backed the account off): quota.
    RateLimited,
    /// The connection failed before any header: transport.
    Unreachable,
    /// No header came within the bound (`upstream.header_timeout*`): transport.
    TimedOut,
    /// The upstream refused the credential; `after_refresh`: also a freshly refreshed one (the
    /// account is broken, not expired), else the forced refresh itself failed.
    Unauthorized { after_refresh: bool },
    /// Routing chose the account but it could not lease a token (dead, or its refresh failed).
    NoToken,
    /// The upstream answered 403 (`permission_error`): this account may not serve it
    /// (specs/routing.md R9).
    Forbidden,
}

impl Left {
    pub fn as_str(self) -> &'static str {
        match self {
            Left::RateLimited => "rate limited",
            Left::Unreachable => "connection failed before headers",
            Left::TimedOut => "no response headers in time",
            Left::Unauthorized {
                after_refresh: true,
            } => "401 after a fresh token",
            Left::Unauthorized {
                after_refresh: false,
            } => "401 and the refresh failed",
            Left::NoToken => "no usable token",
            Left::Forbidden => "403 forbidden",
        }
    }

    /// Whether the account was left for lack of quota (the only reason a 429 may give).
    pub fn is_quota(self) -> bool {
        use ccs_actors::planted::{on, Bug};
        self == Left::RateLimited
            || (on(Bug::UnauthorizedIsQuota) && matches!(self, Left::Unauthorized { .. }))
    }
}

impl From<LeaseError> for Left {
    fn from(_: LeaseError) -> Self {
        Left::NoToken
    }
}

/// How a request ended.
pub enum Driven<B> {
    /// An account answered; relay it.
    Relay {
        account: AccountId,
        decision: Decision,
        answer: Answer<B>,
        /// Accounts tried first and left, with why.
        left: Vec<(AccountId, Left)>,
    },
    /// Nobody can take it for lack of quota: every account is limited, dead or paused, and
    /// every account tried first was left for quota. `left`: those tried first.
    AllLimited {
        earliest_reset: Option<Timestamp>,
        left: Vec<(AccountId, Left)>,
        /// Accounts in the pool.
        members: usize,
    },
    /// No account could serve, and at least one failed for a reason that is not quota
    /// (transport, a refused credential, no token): the client gets a 502, never a 429.
    Failed { left: Vec<(AccountId, Left)> },
    /// The supervisor is gone (shutting down).
    Stopped,
}

enum Outcome<B> {
    Relay(Answer<B>),
    Next(Left),
    /// A 403: try the next account, but keep the answer to relay if no account serves and
    /// every one of them refused the same way.
    Forbidden(Answer<B>),
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
    let mut left: Vec<(AccountId, Left)> = Vec::new();
    let mut forbidden: Option<(AccountId, Decision, Answer<U::Body>)> = None;
    loop {
        let placement = match sup.place(pool, session, family, exclude.clone()).await {
            Ok(p) => p,
            Err(RouteError::AllLimited {
                earliest_reset,
                skipped,
                members,
            }) => {
                left.extend(skipped.into_iter().map(|(a, e)| (a, Left::from(e))));
                // Every account refused the request itself: the upstream's own 403 says why.
                if let Some((account, decision, answer)) = forbidden {
                    if left.iter().all(|(_, why)| *why == Left::Forbidden) {
                        let left = left.into_iter().filter(|(a, _)| *a != account).collect();
                        return Driven::Relay {
                            account,
                            decision,
                            answer,
                            left,
                        };
                    }
                }
                if left.iter().all(|(_, why)| why.is_quota()) {
                    return Driven::AllLimited {
                        earliest_reset,
                        left,
                        members,
                    };
                }
                return Driven::Failed { left };
            }
            Err(RouteError::Stopped) => return Driven::Stopped,
        };
        left.extend(
            placement
                .skipped
                .iter()
                .map(|(a, e)| (a.clone(), Left::from(*e))),
        );
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
                tracing::info!(account = %placement.account, why = why.as_str(), "trying the next account");
                left.push((placement.account.clone(), why));
                exclude.push(placement.account);
            }
            Outcome::Forbidden(answer) => {
                tracing::info!(account = %placement.account, "403 forbidden: trying the next account");
                left.push((placement.account.clone(), Left::Forbidden));
                forbidden = Some((placement.account.clone(), placement.decision, answer));
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
                tracing::warn!(account = %p.account, error = %e, "no answer from upstream before any header");
                return Outcome::Next(match e {
                    SendError::Unreachable(_) => Left::Unreachable,
                    SendError::TimedOut(_) => Left::TimedOut,
                });
            }
        };
        // The headers are the quota machine's alone: hand them over rather than copy them.
        let observe = Observe {
            status: answer.status,
            headers: std::mem::take(&mut answer.headers),
        };
        // Only a 429 waits for the quota machine's verdict; every other answer is relayed at
        // once while the account folds its headers.
        // A probe's answer is waited for too, so the next request sees whether it freed the
        // account.
        let verdict = if answer.status == 429 || p.probe {
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
                    _ => {
                        return Outcome::Next(Left::Unauthorized {
                            after_refresh: false,
                        })
                    }
                }
            }
            401 => {
                // Refused with a token fresh from the authority: the account is broken, not
                // expired. Bench it rather than rotate its grant on every request.
                p.addr.do_send(CredentialRefused {
                    generation: lease.generation,
                });
                return Outcome::Next(Left::Unauthorized {
                    after_refresh: true,
                });
            }
            429 => match verdict {
                Verdict::Limited { .. }
                    if ccs_actors::planted::on(ccs_actors::planted::Bug::RelayRejectedWindow) =>
                {
                    return Outcome::Relay(answer)
                }
                Verdict::Limited { .. } | Verdict::BackedOff { .. } => {
                    return Outcome::Next(Left::RateLimited)
                }
                Verdict::RetryRequest | Verdict::Ok => return Outcome::Relay(answer),
            },
            403 => return Outcome::Forbidden(answer),
            _ => return Outcome::Relay(answer),
        }
    }
}
