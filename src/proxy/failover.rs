//! The failover policy, pure: what one send of a request came to (`Attempt`) and whether the
//! account already had its forced refresh decide the next step (`step`); the reasons every
//! account was left for decide how a request that no account served ends (`conclude`).
//! `specs/failover.toml` is the table of both, walked row by row by `tests/failover_spec.rs`.
//!
//! `drive.rs` does the sending, leasing and refreshing and asks these two functions what to do
//! next; the daemon and the failover simulation run it alike. Must not: do I/O, or decide on
//! anything but the typed inputs (no reading of messages or bodies).

use ccs_actors::planted::{on, Bug};
use ccs_actors::quota::Verdict;

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
        self == Left::RateLimited
            || (on(Bug::UnauthorizedIsQuota) && matches!(self, Left::Unauthorized { .. }))
    }
}

impl From<ccs_actors::account::LeaseError> for Left {
    fn from(_: ccs_actors::account::LeaseError) -> Self {
        Left::NoToken
    }
}

/// What one send of the request came to, as the policy reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The connection failed before any header (refused, reset, TLS).
    Unreachable,
    /// No header within the bound: the upstream accepted and went silent.
    TimedOut,
    /// The upstream answered with `status`. `verdict`: the quota machine's reading of the
    /// answer's headers, waited for on a 429 (and on a probe's answer); `Verdict::Ok` when it was
    /// not waited for.
    Answered { status: u16, verdict: Verdict },
    /// After a 401, the forced refresh did not give a new token.
    RefreshFailed,
}

/// What to do after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Hand this answer to the client; the request is done.
    Relay,
    /// Force one refresh of this account's token and send again with the new one.
    Refresh,
    /// Leave this account for the next one. With `Unauthorized { after_refresh: true }` the
    /// account's credential is benched; with `Forbidden` the answer is kept, to relay if every
    /// account refuses the same way.
    Leave(Left),
}

/// The next step after `attempt`; `refreshed`: this account already had its forced refresh
/// for this request.
pub fn step(attempt: Attempt, refreshed: bool) -> Step {
    match attempt {
        Attempt::Unreachable => Step::Leave(Left::Unreachable),
        Attempt::TimedOut => Step::Leave(Left::TimedOut),
        Attempt::RefreshFailed => Step::Leave(Left::Unauthorized {
            after_refresh: false,
        }),
        Attempt::Answered { status: 401, .. } if !refreshed => Step::Refresh,
        // Refused with a token fresh from the authority: the account is broken, not expired.
        Attempt::Answered { status: 401, .. } => Step::Leave(Left::Unauthorized {
            after_refresh: true,
        }),
        Attempt::Answered { status: 403, .. } => Step::Leave(Left::Forbidden),
        Attempt::Answered {
            status: 429,
            verdict: Verdict::Limited { .. },
        } if on(Bug::RelayRejectedWindow) => Step::Relay,
        Attempt::Answered {
            status: 429,
            verdict: Verdict::Limited { .. } | Verdict::BackedOff { .. },
        } => Step::Leave(Left::RateLimited),
        // A 429 about the request (`x-should-retry`) or one the quota machine could not read
        // as a window goes to the client, whose own retry handles it; so does every other
        // answer, success or not: it is the upstream's word on this request.
        Attempt::Answered { .. } => Step::Relay,
    }
}

/// How a request that no account served ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Every account tried refused the request itself with a 403: relay the last one.
    RelayForbidden,
    /// Every account is limited (or was left for quota): a 429 with the earliest reset.
    AllLimited,
    /// Every account tried went silent: a 504.
    TimedOut,
    /// Anything else: a 502 naming each account and why, never a 429.
    Failed,
}

impl Ending {
    /// The status the client gets (`RelayForbidden`: the upstream's own).
    pub fn status(self) -> u16 {
        match self {
            Ending::RelayForbidden => 403,
            Ending::AllLimited => 429,
            Ending::TimedOut => 504,
            Ending::Failed => 502,
        }
    }
}

/// How a request ends once routing has no account left for it. `left`: every account left and
/// why (tried, or skipped for want of a token), in order; `kept_403`: a 403 answer is kept.
pub fn conclude(left: &[Left], kept_403: bool) -> Ending {
    if kept_403 && left.iter().all(|w| *w == Left::Forbidden) {
        Ending::RelayForbidden
    } else if left.iter().all(|w| w.is_quota()) {
        Ending::AllLimited
    } else if left.iter().all(|w| *w == Left::TimedOut) {
        Ending::TimedOut
    } else {
        Ending::Failed
    }
}
