//! The routing policy: fill-first with session affinity and a soft threshold for new sessions.
//!
//! Pure: picks an account for a request from a snapshot of the pool. The rules are numbered
//! in `specs/routing.md` (R1–R10; R1–R7 are decided here, the rest by the supervisor and the
//! proxy) and the tests are named after them. Must not: read the clock, wait on an actor, or
//! pick an account that is dead, paused, limited or excluded.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::clock::Timestamp;

/// An account's stable identity (its e-mail address, lower-cased).
pub type AccountId = Arc<str>;

/// What routing needs to know of one pool member, in drain order.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub id: AccountId,
    /// Has a usable credential (or one whose refresh is in flight), is not dead, not paused.
    pub routable: bool,
    /// Until when its quota blocks this request's model family, if it does.
    pub limited_until: Option<Timestamp>,
    /// 5-hour utilization (0..1) at `now`, for the soft threshold.
    pub utilization_5h: f64,
}

impl Candidate {
    fn usable(&self, exclude: &[AccountId]) -> bool {
        self.routable && self.limited_until.is_none() && !exclude.contains(&self.id)
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    /// New sessions skip accounts at or above this 5-hour utilization while another is below.
    pub soft_threshold: f64,
    /// An idle binding is forgotten after this long.
    pub affinity_ttl: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            soft_threshold: 0.95,
            affinity_ttl: Duration::from_secs(3600),
        }
    }
}

/// Why a session ended up on the account it got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// R2: the session's binding holds.
    Kept(AccountId),
    /// R3: a new (or expired) session is bound to this account.
    Bound(AccountId),
    /// R4: R2 failed, so the session moves (placed by R3) off an account that can no longer
    /// serve it.
    Moved { from: AccountId, to: AccountId },
    /// R1: no session key; the account serves this request only.
    Unbound(AccountId),
    /// R5: nobody can take the request. `earliest_reset` is the soonest a limited account
    /// frees up (`None` when none of them will by itself: all dead, paused or excluded).
    AllLimited { earliest_reset: Option<Timestamp> },
}

impl Decision {
    pub fn account(&self) -> Option<&AccountId> {
        match self {
            Decision::Kept(a) | Decision::Bound(a) | Decision::Unbound(a) => Some(a),
            Decision::Moved { to, .. } => Some(to),
            Decision::AllLimited { .. } => None,
        }
    }
}

/// R3 (and R4's placement): the first usable account in drain order, preferring those below
/// the soft threshold.
fn pick<'a>(
    pool: &'a [Candidate],
    exclude: &[AccountId],
    policy: &Policy,
) -> Option<&'a Candidate> {
    use crate::planted::{on, Bug};
    let mut usable = pool.iter().filter(|c| c.usable(exclude));
    let first = usable.next()?;
    if first.utilization_5h < policy.soft_threshold {
        return Some(first);
    }
    let below = usable.find(|c| c.utilization_5h < policy.soft_threshold);
    below.or(Some(first).filter(|_| !on(Bug::RefusePastThreshold)))
}

/// Picks the account for one request. `bound` is the session's current binding, if any.
pub fn route(
    pool: &[Candidate],
    session: Option<&str>,
    bound: Option<&AccountId>,
    exclude: &[AccountId],
    policy: &Policy,
) -> Decision {
    if session.is_some() {
        if let Some(b) = bound {
            use crate::planted::{on, Bug::MoveBoundPastHalf};
            let keep = |c: &Candidate| !(on(MoveBoundPastHalf) && c.utilization_5h > 0.5);
            if pool
                .iter()
                .any(|c| &c.id == b && c.usable(exclude) && keep(c))
            {
                return Decision::Kept(b.clone());
            }
        }
    }
    match pick(pool, exclude, policy) {
        Some(c) => match (session, bound) {
            (None, _) => Decision::Unbound(c.id.clone()),
            (Some(_), Some(from)) if *from != c.id => Decision::Moved {
                from: from.clone(),
                to: c.id.clone(),
            },
            (Some(_), _) => Decision::Bound(c.id.clone()),
        },
        None => Decision::AllLimited {
            earliest_reset: pool
                .iter()
                .filter(|c| c.routable)
                .filter_map(|c| c.limited_until)
                .min(),
        },
    }
}

/// One session's binding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    pub account: AccountId,
    pub last_used: Timestamp,
}

/// The session-affinity table (R2, R6). Pure data: the caller passes `now` and persists changes.
#[derive(Clone, Debug, Default)]
pub struct Affinity {
    map: HashMap<String, Binding>,
}

impl Affinity {
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The live binding of `session` at `now` (expired bindings read as absent).
    pub fn get(&self, session: &str, now: Timestamp, ttl: Duration) -> Option<&Binding> {
        self.map
            .get(session)
            .filter(|b| now < b.last_used.plus(ttl))
    }

    pub fn bind(&mut self, session: &str, account: AccountId, now: Timestamp) {
        self.map.insert(
            session.to_string(),
            Binding {
                account,
                last_used: now,
            },
        );
    }

    /// Restores a binding read from the store.
    pub fn restore(&mut self, session: String, binding: Binding) {
        self.map.insert(session, binding);
    }

    /// Drops bindings idle for `ttl` or longer; returns the dropped session keys.
    pub fn expire(&mut self, now: Timestamp, ttl: Duration) -> Vec<String> {
        let gone: Vec<String> = self
            .map
            .iter()
            .filter(|(_, b)| now >= b.last_used.plus(ttl))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &gone {
            self.map.remove(k);
        }
        gone
    }

    /// Drops every binding to `account` (it was removed); returns the dropped session keys.
    pub fn forget_account(&mut self, account: &str) -> Vec<String> {
        let gone: Vec<String> = self
            .map
            .iter()
            .filter(|(_, b)| &*b.account == account)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &gone {
            self.map.remove(k);
        }
        gone
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Binding)> {
        self.map.iter()
    }
}

#[derive(Deserialize)]
struct BodyHead<'a> {
    #[serde(borrow)]
    metadata: Option<Metadata<'a>>,
}

#[derive(Deserialize)]
struct Metadata<'a> {
    #[serde(borrow)]
    user_id: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct UserId {
    session_id: Option<String>,
}

/// R1: the session key of a request. The `X-Claude-Code-Session-Id` header when present (the
/// body is then not read at all); else `session_id` inside the JSON string `metadata.user_id`;
/// else the legacy `…_session_<uuid>` suffix of that string.
pub fn session_key(header: Option<&str>, body: &[u8]) -> Option<String> {
    if let Some(h) = header.map(str::trim).filter(|h| !h.is_empty()) {
        return Some(h.to_string());
    }
    let head: BodyHead = serde_json::from_slice(body).ok()?;
    let user_id = head.metadata?.user_id?;
    if let Ok(parsed) = serde_json::from_str::<UserId>(&user_id) {
        return parsed.session_id.filter(|s| !s.is_empty());
    }
    let (_, suffix) = user_id.rsplit_once("_session_")?;
    Some(suffix.to_string()).filter(|s| !s.is_empty())
}
