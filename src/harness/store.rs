//! The simulation's store, with sled's durability model: every write lands in memory at once
//! and reaches "disk" only at a flush; a crash keeps what was flushed and loses the rest.
//!
//! Writes the `Store` port calls durable (tokens, dead flags, quota with `durable`) flush at
//! once, as `SledStore` does; the rest wait for the periodic flush, which the run loop calls at
//! the start of every simulated minute (sled flushes every 500 ms, far inside one minute).
//! Must not: flush anything the port does not ask for, or the crash checks prove nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

use ccs_actors::ports::{fingerprint, Persisting, Store, StoreError};
use ccs_actors::quota::Quota;
use ccs_actors::routing::Binding;
use ccs_actors::{Secret, Token};

/// One copy of everything the store holds.
#[derive(Clone, Default, PartialEq)]
pub struct Records {
    pub tokens: HashMap<String, Token>,
    pub dead: HashMap<String, bool>,
    pub quota: HashMap<String, Quota>,
    pub bindings: BTreeMap<String, Binding>,
    /// Account → fingerprint of the refresh token a refresh was last sent with.
    pub intents: HashMap<String, String>,
}

impl Records {
    /// Whether the account's stored token is in doubt (see `Store::persist_refresh_intent`).
    pub fn in_doubt(&self, account: &str) -> bool {
        match (self.tokens.get(account), self.intents.get(account)) {
            (Some(t), Some(i)) => *i == fingerprint(&t.refresh),
            _ => false,
        }
    }
}

#[derive(Default)]
pub struct SimStore {
    /// What the process sees.
    live: Mutex<Records>,
    /// What survives a crash.
    disk: Mutex<Records>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SimStore {
    /// A store whose disk already holds `records` (the logins before the first boot).
    pub fn with(records: Records) -> Self {
        SimStore {
            live: Mutex::new(records.clone()),
            disk: Mutex::new(records),
        }
    }

    /// Makes every write so far durable (sled's periodic flush).
    pub fn flush(&self) {
        let live = lock(&self.live).clone();
        *lock(&self.disk) = live;
    }

    /// The process dies: what was not flushed is gone. Returns the sessions whose binding
    /// was lost or changed, the only records I6 allows a crash to lose.
    pub fn crash(&self) -> BTreeSet<String> {
        let disk = lock(&self.disk).clone();
        let mut live = lock(&self.live);
        let lost = live
            .bindings
            .iter()
            .filter(|(k, v)| disk.bindings.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .chain(
                disk.bindings
                    .keys()
                    .filter(|k| !live.bindings.contains_key(*k))
                    .cloned(),
            )
            .collect();
        *live = disk;
        lost
    }

    /// What the process sees now.
    pub fn read(&self) -> Records {
        lock(&self.live).clone()
    }

    fn write(&self, durable: bool, f: impl FnOnce(&mut Records)) -> Result<(), StoreError> {
        f(&mut lock(&self.live));
        if durable {
            self.flush();
        }
        Ok(())
    }
}

impl Store for SimStore {
    fn persist_token(&self, account: &str, token: &Token) -> Persisting {
        Persisting::Done(self.write(true, |r| {
            r.tokens.insert(account.to_string(), token.clone());
            r.dead.insert(account.to_string(), false);
        }))
    }
    fn persist_refresh_intent(&self, account: &str, refresh: &Secret) -> Persisting {
        Persisting::Done(self.write(true, |r| {
            r.intents.insert(account.to_string(), fingerprint(refresh));
        }))
    }
    fn persist_dead(&self, account: &str) -> Persisting {
        Persisting::Done(self.write(true, |r| {
            r.dead.insert(account.to_string(), true);
        }))
    }
    fn persist_quota(&self, account: &str, quota: &Quota, durable: bool) -> Persisting {
        // Planted at the disk's edge: a durable quota write (a bench) is only batched.
        let durable =
            durable && !ccs_actors::planted::on(ccs_actors::planted::Bug::BenchNotDurable);
        Persisting::Done(self.write(durable, |r| {
            r.quota.insert(account.to_string(), quota.clone());
        }))
    }
    fn save_binding(&self, session: &str, binding: &Binding) -> Result<(), StoreError> {
        self.write(false, |r| {
            r.bindings.insert(session.to_string(), binding.clone());
        })
    }
    fn remove_bindings(&self, sessions: &[String]) -> Result<(), StoreError> {
        self.write(false, |r| {
            for s in sessions {
                r.bindings.remove(s);
            }
        })
    }
}
