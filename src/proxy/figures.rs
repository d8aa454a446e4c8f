//! What the accounts served, as this daemon saw it: requests per minute of the last hour (for
//! status), each account's served count and last use (the runway's burn, `accounts.json`'s
//! `lastUsedAt`, written down at most once a minute off the request's thread), when its usage
//! was last fetched, and the burn meter the runway forecast learns from.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ccs_actors::routing::AccountId;
use ccs_actors::SharedClock;

use super::counter;
use crate::store::SledStore;

/// The usage endpoint is itself rate-limited: ask it at most this often per account.
pub const USAGE_CACHE: Duration = Duration::from_secs(30);
/// An account's last use is written to the store at most this often.
pub const LAST_USED_EVERY: Duration = Duration::from_secs(60);

/// An account's use as this daemon saw it.
#[derive(Default)]
struct Use {
    /// Requests served since start, for the runway's burn rate.
    served: u64,
    /// When it last served.
    last_ms: u64,
    /// When that was last written to the store.
    noted_ms: u64,
}

pub struct Figures {
    store: Arc<SledStore>,
    clock: SharedClock,
    /// When each account's usage was last fetched.
    usage_fetched: Mutex<HashMap<AccountId, ccs_actors::Timestamp>>,
    /// Served requests per minute of the last hour, for status.
    recent: counter::PerMinute,
    /// What each account served since start: one lock on the request path.
    use_of: Mutex<HashMap<AccountId, Use>>,
    /// The accounts' spend over time (`runway.rs`), sampled every `cliproxy.runway_sample`.
    pub runway: Mutex<ccs_actors::runway::BurnMeter>,
}

impl Figures {
    /// Nothing served yet; the burn meter keeps `runway_span` of samples.
    pub fn new(store: Arc<SledStore>, clock: SharedClock, runway_span: Duration) -> Figures {
        Figures {
            store,
            clock,
            usage_fetched: Mutex::default(),
            recent: counter::PerMinute::default(),
            use_of: Mutex::default(),
            runway: Mutex::new(ccs_actors::runway::BurnMeter::new(runway_span)),
        }
    }

    /// An account served a request: counted, and its last use noted (written to the store,
    /// and so to `accounts.json`, at most once a minute per account, off the request's thread).
    pub fn record_request(self: &Arc<Self>, account: &AccountId) {
        let now = self.clock.now();
        self.recent.add(now, 1);
        let ms = now.as_millis();
        let due = {
            let mut m = self.use_of.lock().unwrap_or_else(|p| p.into_inner());
            let e = m.entry(account.clone()).or_default();
            e.served += 1;
            e.last_ms = ms;
            let due = ms.saturating_sub(e.noted_ms) >= LAST_USED_EVERY.as_millis() as u64;
            if due {
                e.noted_ms = ms;
            }
            due
        };
        if due {
            let (me, id) = (self.clone(), account.clone());
            actix_web::rt::task::spawn_blocking(move || me.note_last_use(&id, ms));
        }
    }

    /// Writes `account`'s last use down.
    fn note_last_use(&self, account: &AccountId, ms: u64) {
        if let Err(e) = self
            .store
            .update_account(account, move |a| a.last_used_at_ms = Some(ms))
        {
            tracing::warn!(account = %account, error = %e, "cannot note the account's last use");
        }
    }

    /// Every last use not yet in the store written down (a clean stop).
    pub fn save_last_used(&self) {
        let pending: Vec<(AccountId, u64)> = {
            let mut m = self.use_of.lock().unwrap_or_else(|p| p.into_inner());
            m.iter_mut()
                .filter(|(_, e)| e.last_ms > e.noted_ms)
                .map(|(id, e)| {
                    e.noted_ms = e.last_ms;
                    (id.clone(), e.last_ms)
                })
                .collect()
        };
        for (id, ms) in pending {
            self.note_last_use(&id, ms);
        }
    }

    /// When `account` last served, as this daemon saw it (newer than the store's note).
    pub fn last_used_ms(&self, account: &str) -> Option<u64> {
        let m = self.use_of.lock().unwrap_or_else(|p| p.into_inner());
        m.get(account).map(|e| e.last_ms)
    }

    /// Requests `account` served since start.
    pub fn served(&self, account: &AccountId) -> u64 {
        let m = self.use_of.lock().unwrap_or_else(|p| p.into_inner());
        m.get(account).map_or(0, |e| e.served)
    }

    /// The request counts to keep across a restart.
    pub fn recent_snapshot(&self) -> Vec<(u64, u64)> {
        self.recent.snapshot()
    }

    pub fn restore_recent(&self, buckets: &[(u64, u64)]) {
        self.recent.restore(buckets);
    }

    pub fn requests_last_hour(&self) -> u64 {
        self.recent.last_hour(self.clock.now())
    }

    /// Whether the usage of `account` may be fetched now (at most every 30 s); marks it.
    pub fn usage_due(&self, account: &AccountId, max_age: Duration) -> bool {
        let now = self.clock.now();
        let mut m = self.usage_fetched.lock().unwrap_or_else(|p| p.into_inner());
        let due = m
            .get(account)
            .is_none_or(|t| now.since(*t) >= max_age.max(USAGE_CACHE));
        if due {
            m.insert(account.clone(), now);
        }
        due
    }
}
