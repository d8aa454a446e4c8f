//! One proxied request's journey through the pool, independent of the transport: route, lease,
//! send, feed the answer's headers to the account's quota machine, and, before any byte has
//! reached the client, move on to the next account on a rejected window, a 401 that one forced
//! refresh did not cure, or a connection lost or silent before headers. Every account left is recorded
//! with a typed `Left` reason; a request ends in 429 only when all of them are about quota.
//!
//! What to do after each send, and how a request no account served ends, is the pure policy of
//! `failover.rs` (`specs/failover.toml`); this file does the sending, leasing and refreshing it
//! asks for. The daemon drives it over HTTP (`forward.rs`); the failover simulation drives it
//! over the simulator's model, so both run the same decisions. Must not: retry after handing an answer
//! back, or try an account twice for one request.

use std::future::Future;

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

pub use super::failover::Left;
use super::failover::{conclude, step, Attempt, Ending, Step};

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
    /// (transport, a refused credential, no token): the client gets `ending`'s status (502, or
    /// 504 when every account went silent), never a 429.
    Failed {
        left: Vec<(AccountId, Left)>,
        ending: Ending,
    },
    /// The supervisor is gone (shutting down).
    Stopped,
}

enum Outcome<B> {
    Relay(Answer<B>),
    Leave(Left, Option<Answer<B>>),
}

/// Carries one request through the pool.
pub async fn drive<U: Upstream>(
    sup: &SupervisorHandle,
    up: &U,
    pool: &str,
    session: Option<&str>,
    family: Option<&str>,
) -> Driven<U::Body> {
    // The supervisor's side of the attempts (which accounts this request may still go to);
    // this side keeps why each one was left.
    let mut request = sup.request(pool, session, family);
    let mut left: Vec<(AccountId, Left)> = Vec::new();
    let mut forbidden: Option<(AccountId, Decision, Answer<U::Body>)> = None;
    loop {
        let mut placement = match request.place().await {
            Ok(p) => p,
            Err(RouteError::AllLimited {
                earliest_reset,
                skipped,
                members,
            }) => {
                left.extend(skipped.into_iter().map(|(a, e)| (a, Left::from(e))));
                let reasons: Vec<Left> = left.iter().map(|(_, why)| *why).collect();
                return match (conclude(&reasons, forbidden.is_some()), forbidden) {
                    // Every account refused the request itself: the upstream's own 403 says why.
                    (Ending::RelayForbidden, Some((account, decision, answer))) => {
                        let left = left.into_iter().filter(|(a, _)| *a != account).collect();
                        Driven::Relay {
                            account,
                            decision,
                            answer,
                            left,
                        }
                    }
                    (Ending::AllLimited, _) => Driven::AllLimited {
                        earliest_reset,
                        left,
                        members,
                    },
                    (ending, _) => Driven::Failed { left, ending },
                };
            }
            Err(RouteError::Stopped) => return Driven::Stopped,
        };
        left.extend(
            placement
                .skipped
                .iter()
                .map(|(a, e)| (a.clone(), Left::from(*e))),
        );
        match attempt(up, &mut placement).await {
            Outcome::Relay(answer) => {
                return Driven::Relay {
                    account: placement.account,
                    decision: placement.decision,
                    answer,
                    left,
                }
            }
            Outcome::Leave(why, kept) => {
                tracing::info!(account = %placement.account, why = why.as_str(), "trying the next account");
                left.push((placement.account.clone(), why));
                if let Some(answer) = kept {
                    forbidden = Some((placement.account, placement.decision, answer));
                }
            }
        }
    }
}

/// One account's go at a request: at most two sends (the second after a forced refresh), each
/// judged by the pure `step`.
async fn attempt<U: Upstream>(up: &U, p: &mut Placement) -> Outcome<U::Body> {
    let mut refreshed = false;
    // What the forced refresh came to, judged like a send.
    let mut refresh_failed = false;
    loop {
        let sent = if std::mem::take(&mut refresh_failed) {
            None
        } else {
            Some(up.send(&p.account, &p.lease.access).await)
        };
        let (tried, answer) = match sent {
            None => (Attempt::RefreshFailed, None),
            Some(Ok(mut answer)) => {
                // The headers are the quota machine's alone: hand them over rather than copy
                // them.
                let headers = std::mem::take(&mut answer.headers);
                let verdict = p.observe(answer.status, headers).await;
                let tried = Attempt::Answered {
                    status: answer.status,
                    verdict,
                };
                (tried, Some(answer))
            }
            Some(Err(e)) => {
                tracing::warn!(account = %p.account, error = %e, "no answer from upstream before any header");
                let tried = match e {
                    SendError::Unreachable(_) => Attempt::Unreachable,
                    SendError::TimedOut(_) => Attempt::TimedOut,
                };
                (tried, None)
            }
        };
        match (step(tried, refreshed), answer) {
            (Step::Relay, Some(answer)) => return Outcome::Relay(answer),
            (Step::Refresh, _) => {
                refreshed = true;
                refresh_failed = !p.unauthorized().await;
            }
            (Step::Leave(why), answer) => {
                if why
                    == (Left::Unauthorized {
                        after_refresh: true,
                    })
                {
                    p.refused();
                }
                let kept = answer.filter(|_| why == Left::Forbidden);
                return Outcome::Leave(why, kept);
            }
            (Step::Relay, None) => unreachable!("step relays only an answer (specs/failover.toml)"),
        }
    }
}
