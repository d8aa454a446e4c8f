//! Alerts: events worth a person's attention, told once per change of state, rate-limited, on
//! every channel `config.yaml`'s `alerts:` names (a signed webhook, a desktop notification)
//! and on the dashboard's banner and the status line. Never a token or a secret: an alert
//! names accounts and pools, and says what to do.
//!
//! `Edges` (pure) turns the conditions the daemon sees at each look into the alerts to send;
//! `Alerts` keeps the recent ones and hands each to the channels (`channels.rs`) off the
//! request path: a receiver that is down or slow holds no request.

pub mod channels;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

pub use crate::api::{Alert, AlertKind as Kind};
use ccs_actors::Timestamp;

/// One event about one subject (an account's e-mail, a pool's name, or the daemon).
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub kind: Kind,
    pub subject: String,
    /// One line for a person, with what to do.
    pub text: String,
}

impl Event {
    pub fn new(kind: Kind, subject: &str, text: impl Into<String>) -> Event {
        Event {
            kind,
            subject: subject.to_string(),
            text: text.into(),
        }
    }

    fn key(&self) -> (Kind, String) {
        (self.kind, self.subject.clone())
    }
}

/// What was told about each condition, so each is told once per change of state and at most
/// every `min_interval`.
#[derive(Debug, Default)]
pub struct Edges {
    /// Conditions holding at the last look.
    holding: BTreeMap<(Kind, String), Event>,
    /// When each (event, subject) was last told.
    told: BTreeMap<(Kind, String), Timestamp>,
}

impl Edges {
    /// The conditions that hold now (every lasting kind, all of them): those that did not at
    /// the last look are to be told, unless the same was told within `min_interval`.
    pub fn look(
        &mut self,
        now_holding: Vec<Event>,
        now: Timestamp,
        min_interval: Duration,
    ) -> Vec<Event> {
        let mut fresh = Vec::new();
        let mut next = BTreeMap::new();
        for e in now_holding {
            debug_assert!(e.kind.lasts());
            let key = e.key();
            if !self.holding.contains_key(&key) && self.may_tell(&key, now, min_interval) {
                self.told.insert(key.clone(), now);
                fresh.push(e.clone());
            }
            next.insert(key, e);
        }
        self.holding = next;
        fresh
    }

    /// A moment (came back, restarted): told unless the same was told within `min_interval`.
    pub fn moment(&mut self, e: &Event, now: Timestamp, min_interval: Duration) -> bool {
        let key = e.key();
        let tell = self.may_tell(&key, now, min_interval);
        if tell {
            self.told.insert(key, now);
        }
        tell
    }

    fn may_tell(&self, key: &(Kind, String), now: Timestamp, min_interval: Duration) -> bool {
        self.told
            .get(key)
            .is_none_or(|t| now.since(*t) >= min_interval)
    }

    /// The conditions holding at the last look.
    pub fn holding(&self) -> impl Iterator<Item = &Event> {
        self.holding.values()
    }
}

/// How long a moment stays on the dashboard's banner and the status line.
pub const MOMENT_SHOWN_FOR: Duration = Duration::from_secs(15 * 60);

/// How long `ccs alerts test`'s alerts stay there.
pub const TEST_SHOWN_FOR: Duration = Duration::from_secs(120);

/// Alerts told, kept for the banner.
const KEPT: usize = 50;

/// The daemon's alerts: the edges, the recent alerts, and the channels they go to.
pub struct Alerts {
    state: Mutex<State>,
    min_interval: Duration,
    channels: channels::Channels,
}

#[derive(Default)]
struct State {
    edges: Edges,
    next_id: u64,
    recent: VecDeque<(Timestamp, Alert)>,
}

impl Alerts {
    pub fn new(config: &crate::config::Config, client: reqwest::Client) -> Alerts {
        Alerts {
            state: Mutex::default(),
            min_interval: config.alerts.min_interval.0,
            channels: channels::Channels::new(config, client),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Delivers the webhook's queue for as long as the daemon runs.
    pub async fn run_webhook(&self) {
        self.channels.run_webhook().await
    }

    /// The conditions that hold now; the new ones are told.
    pub fn look(&self, holding: Vec<Event>, now: Timestamp) {
        let fresh = self.lock().edges.look(holding, now, self.min_interval);
        for e in fresh {
            self.tell(e, now, false);
        }
    }

    /// Something that happened now; told unless the same was within `min_interval`.
    pub fn moment(&self, e: Event, now: Timestamp) {
        if self.lock().edges.moment(&e, now, self.min_interval) {
            self.tell(e, now, false);
        }
    }

    /// One alert of each kind, marked as a test, past the edges and the rate limit: what
    /// `ccs alerts test` sends. Returns them, and how each channel took them.
    pub async fn test(&self, now: Timestamp) -> (Vec<Alert>, Vec<channels::Outcome>) {
        let examples = [
            (
                Kind::AccountDead,
                "someone@example.com",
                "ccs (test): someone@example.com needs a new login: run `ccs claude --auth --add`",
            ),
            (
                Kind::RunwayLow,
                "claude",
                "ccs (test): at this pace the pool claude runs dry in 25m",
            ),
            (
                Kind::PoolLimited,
                "claude",
                "ccs (test): every account of the pool claude is limited",
            ),
            (
                Kind::CameBack,
                "someone@example.com",
                "ccs (test): someone@example.com has quota again before its announced reset",
            ),
            (
                Kind::RefreshFailing,
                "someone@example.com",
                "ccs (test): someone@example.com's token refresh failed 3 times in a row",
            ),
            (
                Kind::RestartedAfterCrash,
                "daemon",
                "ccs (test): the daemon started after a run that did not stop cleanly",
            ),
        ];
        let alerts: Vec<Alert> = examples
            .into_iter()
            .map(|(kind, subject, text)| self.record(Event::new(kind, subject, text), now, true))
            .collect();
        let outcomes = self.channels.send_now(&alerts).await;
        (alerts, outcomes)
    }

    fn record(&self, e: Event, now: Timestamp, test: bool) -> Alert {
        let mut s = self.lock();
        s.next_id += 1;
        let alert = Alert {
            id: s.next_id,
            event: e.kind,
            subject: e.subject,
            text: e.text,
            at: crate::store::mirror::rfc3339(now.as_millis()),
            test,
        };
        s.recent.push_back((now, alert.clone()));
        while s.recent.len() > KEPT {
            s.recent.pop_front();
        }
        alert
    }

    fn tell(&self, e: Event, now: Timestamp, test: bool) {
        let alert = self.record(e, now, test);
        tracing::warn!(event = alert.event.as_str(), subject = %alert.subject, "alert: {}", alert.text);
        self.channels.queue(alert);
    }

    /// What the banner and the status line show: every condition that still holds (as it was
    /// told), and the moments of the last `MOMENT_SHOWN_FOR`; newest first.
    pub fn active(&self, now: Timestamp) -> Vec<Alert> {
        let s = self.lock();
        let holding: Vec<(Kind, String)> = s.edges.holding().map(Event::key).collect();
        let mut out: Vec<Alert> = s
            .recent
            .iter()
            .rev()
            .filter(|(at, a)| {
                if a.test {
                    now.since(*at) <= TEST_SHOWN_FOR
                } else if a.event.lasts() {
                    holding.contains(&(a.event, a.subject.clone()))
                } else {
                    now.since(*at) <= MOMENT_SHOWN_FOR
                }
            })
            .map(|(_, a)| a.clone())
            .collect();
        // One per (event, subject): the newest.
        let mut seen = std::collections::HashSet::new();
        out.retain(|a| seen.insert((a.event, a.subject.clone())));
        out
    }

    /// The alerts told, newest last.
    pub fn recent(&self) -> Vec<Alert> {
        self.lock().recent.iter().map(|(_, a)| a.clone()).collect()
    }
}

#[cfg(test)]
mod tests;
