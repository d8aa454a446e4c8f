//! The hot path: what the supervisor publishes for requests to read without a message. The
//! supervisor stays the one writer (of its members, pools and the affinity table); after each
//! change it copies the member or the pools here, and it shares the affinity table itself
//! behind a lock. A request of a conversation bound to an account that can keep it, with a
//! token it would lease, is placed from here: the same pure routing decision (`Kept`), no
//! mailbox, no await. Anything else (a new conversation, a hop, no usable token, a retry
//! after a failure) goes through the supervisor's `Route` as before.
//!
//! Must not: place on anything but a `Kept` decision, or hand out a lease the account would
//! not grant now.

use std::collections::{BTreeMap, HashMap};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::{Member, Placement};
use crate::clock::Timestamp;
use crate::routing::{self, AccountId, Affinity, Candidate, Decision};

/// Reads a lock whose writer may have panicked: the data is plain state, still whole.
pub(super) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

#[derive(Default)]
pub(super) struct Hot {
    /// Each account as the supervisor last knew it (health, quota, pause, lease, address).
    pub members: RwLock<HashMap<AccountId, Member>>,
    /// Pool name → members in drain order.
    pub pools: RwLock<BTreeMap<String, Vec<AccountId>>>,
    /// Session → account: written by the supervisor only.
    pub affinity: RwLock<Affinity>,
}

impl Hot {
    /// The placement of a request of `session` on its bound account, when routing would keep
    /// it there and the account holds a token it would lease at `now`, with the binding's last
    /// use as the supervisor knows it; `None`: ask the supervisor.
    pub fn place(
        &self,
        pool: &str,
        session: &str,
        family: Option<&str>,
        now: Timestamp,
        policy: &routing::Policy,
    ) -> Option<(Placement, Timestamp)> {
        let (bound, last_used) = {
            let affinity = read(&self.affinity);
            let b = affinity.get(session, now, policy.affinity_ttl)?;
            (b.account.clone(), b.last_used)
        };
        if !read(&self.pools).get(pool)?.contains(&bound) {
            return None;
        }
        let members = read(&self.members);
        let m = members.get(&bound)?;
        let candidate = Candidate {
            id: bound.clone(),
            routable: m.routable(now),
            limited_until: m.quota.limited_until(now, family),
            utilization_5h: m.quota.five_hour.utilization_at(now),
        };
        let decision = routing::route(&[candidate], Some(session), Some(&bound), &[], policy);
        if decision != Decision::Kept(bound.clone()) {
            return None;
        }
        let lease = m.ready_lease(now)?;
        let placed = Placement {
            account: bound,
            lease,
            decision,
            addr: m.addr.clone(),
            skipped: Vec::new(),
            probe: false,
        };
        Some((placed, last_used))
    }
}
