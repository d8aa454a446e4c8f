//! The usage book: tokens per account and model, counted into per-minute buckets as answers
//! end, rolled up into hours once a minute's hour is over, and kept for `KEEP` (about eight
//! days). The book is saved to the store's `usage` tree at every sweep and at stop, so the
//! charts survive a restart.
//!
//! Must not: grow without bound (old hours are dropped at every roll-up), or block a request
//! on the store (only the sweeper saves).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::api::{Tokens, Usage, UsageHour, UsageRow};
use crate::store::mirror::rfc3339;
use crate::store::SledStore;

pub const MINUTE_MS: u64 = 60_000;
pub const HOUR_MS: u64 = 3_600_000;
/// How long hours are kept.
pub const KEEP: Duration = Duration::from_secs(8 * 24 * 3600);

/// (account, model, client key name) → tokens.
type Cells = HashMap<(String, String, String), Tokens>;

#[derive(Default)]
struct Book {
    /// Minute start → cells, for minutes of the current hour (and any not yet rolled up).
    minutes: BTreeMap<u64, Cells>,
    /// Hour start → cells.
    hours: BTreeMap<u64, Cells>,
}

/// One stored hour (`V1`: the only shape so far).
#[derive(Serialize, Deserialize)]
struct StoredHour {
    v: u32,
    cells: Vec<StoredCell>,
}

#[derive(Serialize, Deserialize)]
struct StoredCell {
    account: String,
    model: String,
    #[serde(default = "default_client")]
    client: String,
    tokens: Tokens,
}

fn default_client() -> String {
    crate::api::DEFAULT_CLIENT.to_string()
}

#[derive(Default)]
pub struct UsageBook {
    book: Mutex<Book>,
}

fn add(cells: &mut Cells, key: (String, String, String), t: &Tokens) {
    cells.entry(key).or_default().add(t);
}

impl UsageBook {
    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An answer ended at `now_ms` with these tokens, for `client` (a client key's name).
    pub fn record(&self, now_ms: u64, account: &str, model: &str, client: &str, t: &Tokens) {
        let minute = now_ms - now_ms % MINUTE_MS;
        let mut b = self.lock();
        add(
            b.minutes.entry(minute).or_default(),
            (account.to_string(), model.to_string(), client.to_string()),
            t,
        );
    }

    /// Each client key's models in the book (for the per-key bound on model labels).
    pub fn models_by_client(&self) -> HashMap<String, std::collections::BTreeSet<String>> {
        let b = self.lock();
        let mut out: HashMap<String, std::collections::BTreeSet<String>> = HashMap::new();
        for cells in b.hours.values().chain(b.minutes.values()) {
            for (_, model, client) in cells.keys() {
                out.entry(client.clone()).or_default().insert(model.clone());
            }
        }
        out
    }

    /// Folds minutes of finished hours into their hour and drops hours older than `KEEP`.
    pub fn roll_up(&self, now_ms: u64) {
        let this_hour = now_ms - now_ms % HOUR_MS;
        let mut b = self.lock();
        let done: Vec<u64> = b.minutes.range(..this_hour).map(|(m, _)| *m).collect();
        for m in done {
            let cells = b.minutes.remove(&m).unwrap_or_default();
            let hour = b.hours.entry(m - m % HOUR_MS).or_default();
            for (k, t) in cells {
                add(hour, k, &t);
            }
        }
        let keep_from = now_ms.saturating_sub(KEEP.as_millis() as u64);
        b.hours = b.hours.split_off(&(keep_from - keep_from % HOUR_MS));
    }

    /// Every hour with its cells, minutes folded in, from `from_ms` on.
    fn hours_from(&self, from_ms: u64) -> BTreeMap<u64, Cells> {
        let b = self.lock();
        let mut out: BTreeMap<u64, Cells> = b
            .hours
            .range(from_ms - from_ms % HOUR_MS..)
            .map(|(h, c)| (*h, c.clone()))
            .collect();
        for (m, cells) in &b.minutes {
            if *m + MINUTE_MS <= from_ms {
                continue;
            }
            let hour = out.entry(m - m % HOUR_MS).or_default();
            for (k, t) in cells {
                add(hour, k.clone(), t);
            }
        }
        out
    }

    /// The figures of the last `span` (rounded out to whole hours), as of `now_ms`.
    pub fn report(&self, now_ms: u64, span: Duration, span_name: &str) -> Usage {
        self.report_with(now_ms, span, span_name, &[])
    }

    /// The first hour a report over `span` at `now_ms` covers.
    pub fn first_hour(now_ms: u64, span: Duration) -> u64 {
        let this_hour = now_ms - now_ms % HOUR_MS;
        let n = (span.as_millis() as u64).div_ceil(HOUR_MS).max(1);
        this_hour.saturating_sub((n - 1) * HOUR_MS)
    }

    /// `report`, with other daemons' hours (as `encoded_hours` makes them) counted in: the
    /// figures of a shared pool.
    pub fn report_with(
        &self,
        now_ms: u64,
        span: Duration,
        span_name: &str,
        others: &[(u64, Vec<u8>)],
    ) -> Usage {
        let n = (span.as_millis() as u64).div_ceil(HOUR_MS).max(1);
        let first = Self::first_hour(now_ms, span);
        let mut hours = self.hours_from(first);
        for (hour, bytes) in others.iter().filter(|(h, _)| *h >= first) {
            if let Ok(h) = serde_json::from_slice::<StoredHour>(bytes) {
                let cells = hours.entry(*hour).or_default();
                for c in h.cells {
                    add(cells, (c.account, c.model, c.client), &c.tokens);
                }
            }
        }
        let mut total = Tokens::default();
        let mut by_account: BTreeMap<String, Tokens> = BTreeMap::new();
        let mut by_model: BTreeMap<String, Tokens> = BTreeMap::new();
        let mut by_client: BTreeMap<String, Tokens> = BTreeMap::new();
        for cells in hours.values() {
            for ((account, model, client), t) in cells {
                total.add(t);
                by_account.entry(account.clone()).or_default().add(t);
                by_model.entry(model.clone()).or_default().add(t);
                by_client.entry(client.clone()).or_default().add(t);
            }
        }
        let rows = |m: BTreeMap<String, Tokens>| {
            let mut v: Vec<UsageRow> = m
                .into_iter()
                .map(|(name, tokens)| UsageRow { name, tokens })
                .collect();
            v.sort_by_key(|r| std::cmp::Reverse(r.tokens.total()));
            v
        };
        let hours = (0..n)
            .map(|i| {
                let at = first + i * HOUR_MS;
                let mut tokens = Tokens::default();
                for t in hours.get(&at).into_iter().flat_map(|c| c.values()) {
                    tokens.add(t);
                }
                UsageHour {
                    at: rfc3339(at),
                    tokens,
                }
            })
            .collect();
        Usage {
            span: span_name.to_string(),
            total,
            by_account: rows(by_account),
            by_model: rows(by_model),
            by_client: rows(by_client),
            hours,
        }
    }

    /// Writes the book to the store: every hour, minutes folded in.
    pub fn save(&self, store: &SledStore, now_ms: u64) {
        self.roll_up(now_ms);
        let keep_from = now_ms.saturating_sub(KEEP.as_millis() as u64);
        let encoded = self.encoded_hours(keep_from);
        if let Err(e) = store.put_usage_hours(&encoded, keep_from - keep_from % HOUR_MS) {
            tracing::warn!(error = %e, "cannot save the usage figures");
        }
    }

    /// Every hour from `from_ms` on, minutes folded in, as stored (JSON per hour).
    pub fn encoded_hours(&self, from_ms: u64) -> Vec<(u64, Vec<u8>)> {
        self.hours_from(from_ms)
            .into_iter()
            .filter_map(|(h, cells)| {
                let stored = StoredHour {
                    v: 1,
                    cells: cells
                        .into_iter()
                        .map(|((account, model, client), tokens)| StoredCell {
                            account,
                            model,
                            client,
                            tokens,
                        })
                        .collect(),
                };
                serde_json::to_vec(&stored).ok().map(|b| (h, b))
            })
            .collect()
    }

    /// Takes in what the store kept (at start, before any answer is counted).
    pub fn restore(&self, store: &SledStore) {
        let stored = match store.usage_hours() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the saved usage figures; starting empty");
                return;
            }
        };
        let mut b = self.lock();
        for (hour, bytes) in stored {
            let Ok(h) = serde_json::from_slice::<StoredHour>(&bytes) else {
                tracing::warn!(hour = %rfc3339(hour), "a saved usage hour is unreadable; passed over");
                continue;
            };
            let cells = b.hours.entry(hour).or_default();
            for c in h.cells {
                add(cells, (c.account, c.model, c.client), &c.tokens);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(input: u64, output: u64) -> Tokens {
        Tokens {
            requests: 1,
            input,
            output,
            ..Tokens::default()
        }
    }

    const T0: u64 = 1_800_000_000_000 - 1_800_000_000_000 % HOUR_MS;

    #[test]
    fn minutes_roll_into_hours_and_reports_count_each_once() {
        let b = UsageBook::default();
        b.record(T0 + 5 * MINUTE_MS, "a", "opus", "ann", &t(10, 1));
        b.record(T0 + 59 * MINUTE_MS, "b", "opus", "bob", &t(20, 2));
        b.record(T0 + HOUR_MS + MINUTE_MS, "a", "sonnet", "ann", &t(30, 3));
        let now = T0 + HOUR_MS + 2 * MINUTE_MS;
        let before = b.report(now, Duration::from_secs(24 * 3600), "24h");
        b.roll_up(now);
        let after = b.report(now, Duration::from_secs(24 * 3600), "24h");
        assert_eq!(before, after, "rolling up changes no figure");
        assert_eq!(after.total.input, 60);
        assert_eq!(after.total.requests, 3);
        assert_eq!(after.hours.len(), 24);
        assert_eq!(after.hours[22].tokens.input, 30, "the hour before");
        assert_eq!(after.hours[23].tokens.input, 30, "this hour");
        let a = after.by_account.iter().find(|r| r.name == "a").unwrap();
        assert_eq!(a.tokens.input, 40);
        let opus = after.by_model.iter().find(|r| r.name == "opus").unwrap();
        assert_eq!((opus.tokens.input, opus.tokens.output), (30, 3));
        let ann = after.by_client.iter().find(|r| r.name == "ann").unwrap();
        assert_eq!((ann.tokens.input, ann.tokens.requests), (40, 2));
    }

    #[test]
    fn hours_older_than_the_keep_are_dropped() {
        let b = UsageBook::default();
        b.record(T0, "a", "m", "c", &t(1, 1));
        let later = T0 + KEEP.as_millis() as u64 + 2 * HOUR_MS;
        b.record(later, "a", "m", "c", &t(2, 2));
        b.roll_up(later);
        let r = b.report(later, KEEP, "8d");
        assert_eq!(r.total.input, 2);
        assert_eq!(b.lock().hours.len(), 0, "the old hour is gone");
    }

    #[test]
    fn a_span_shows_only_its_hours() {
        let b = UsageBook::default();
        b.record(T0, "a", "m", "c", &t(1, 0));
        b.record(T0 + 30 * HOUR_MS, "a", "m", "c", &t(2, 0));
        let now = T0 + 30 * HOUR_MS;
        assert_eq!(
            b.report(now, Duration::from_secs(24 * 3600), "24h")
                .total
                .input,
            2
        );
        assert_eq!(
            b.report(now, Duration::from_secs(7 * 24 * 3600), "7d")
                .total
                .input,
            3
        );
    }
}
