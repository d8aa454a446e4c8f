//! What the daemon tells about itself as it runs: the live feed of requests and hops (the
//! dashboard's Live page), the usage book (tokens per account and model, `usage.rs`), the
//! Prometheus figures (`metrics.rs`) and the latest refresh outcomes. Everything is fed from
//! the request path's end (`RequestLog`'s drop), the supervisor's hop callback and the
//! refresher wrapper, and costs the request path a mutex and a few atomics.
//!
//! Must not: block or slow a request (nothing here touches the disk on the request path), or
//! keep a secret.

pub mod metrics;
pub mod scan;
pub mod usage;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ccs_actors::lifecycle::Failure;
use ccs_actors::ports::{BoxFuture, Refresher};
use ccs_actors::supervisor::{HopEvent, SupervisorView};
use ccs_actors::{Secret, SharedClock, Token};
use tokio::sync::broadcast;

use crate::api::{self, LiveEvent, RequestRecord};
use crate::store::mirror::rfc3339;
use metrics::{
    Metrics, OutcomeLabels, PoolLabels, ReasonLabels, RequestLabels, StateLabels, TokenLabels,
    WindowLabels,
};

/// Refresh outcomes kept for the health page.
const REFRESHES_KEPT: usize = 50;
/// Live events a slow dashboard may fall behind by before it skips some.
const LIVE_BACKLOG: usize = 256;

pub struct Telemetry {
    clock: SharedClock,
    live: broadcast::Sender<LiveEvent>,
    pub usage: usage::UsageBook,
    pub metrics: Metrics,
    refreshes: Mutex<VecDeque<api::RefreshRecord>>,
    /// Per conversation: the account of its last answer, and what the first answer on that
    /// account read uncached (what its move cost). Bounded by `CONVERSATIONS_KEPT`.
    last_answer: Mutex<std::collections::HashMap<String, (String, u64)>>,
    /// The model names each client key has been counted under (at most `MODELS_PER_KEY`).
    models: Mutex<std::collections::HashMap<String, std::collections::BTreeSet<String>>>,
}

/// How many distinct model names one client key may bring into the metrics, the usage book,
/// the logs and the dashboard; beyond them its requests count under `other` (a key holder
/// must not be able to grow the daemon's memory and `/metrics` at will: issue 32 item 4).
pub const MODELS_PER_KEY: usize = 24;

/// What a model past a key's bound is counted as.
pub const OTHER_MODEL: &str = "other";

/// The most conversations whose last account the telemetry remembers.
const CONVERSATIONS_KEPT: usize = 10_000;

impl Telemetry {
    pub fn new(
        clock: SharedClock,
        store_flush: prometheus_client::metrics::histogram::Histogram,
    ) -> Arc<Self> {
        Arc::new(Telemetry {
            clock,
            live: broadcast::channel(LIVE_BACKLOG).0,
            usage: usage::UsageBook::default(),
            metrics: Metrics::new(store_flush),
            refreshes: Mutex::default(),
            last_answer: Mutex::default(),
            models: Mutex::default(),
        })
    }

    /// Takes in the models each key already has in the usage book (after its restore).
    pub fn seed_models(&self) {
        *self.models.lock().unwrap_or_else(|p| p.into_inner()) = self.usage.models_by_client();
    }

    /// The label `client`'s request for `model` counts under: the model itself while the key
    /// has brought fewer than `MODELS_PER_KEY` names (those of the usage book kept across
    /// restarts included), `other` after.
    pub fn model_label(&self, client: &str, model: &str) -> String {
        let mut m = self.models.lock().unwrap_or_else(|p| p.into_inner());
        let seen = m.entry(client.to_string()).or_default();
        if seen.contains(model) {
            return model.to_string();
        }
        if seen.len() < MODELS_PER_KEY {
            seen.insert(model.to_string());
            return model.to_string();
        }
        OTHER_MODEL.to_string()
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now().as_millis()
    }

    /// The live feed, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<LiveEvent> {
        self.live.subscribe()
    }

    /// What the first answer of `session` on `account` read uncached, if `account` served its
    /// last answer.
    pub fn reread(&self, session: &str, account: &str) -> Option<u64> {
        let last = self.last_answer.lock().unwrap_or_else(|p| p.into_inner());
        last.get(session)
            .filter(|(a, _)| a == account)
            .map(|(_, n)| *n)
    }

    /// A request's history was fitted to its account (`removed` thinking blocks).
    pub fn fitted(&self, removed: usize, after_400: bool) {
        self.metrics.fits.inc();
        if after_400 {
            self.metrics.fits_after_400.inc();
        }
        self.metrics.blocks_removed.inc_by(removed as u64);
    }

    /// The API dropped `n` thinking blocks of a request's history (`input_transformations`).
    pub fn api_dropped(&self, n: usize) {
        self.metrics.api_dropped.inc_by(n as u64);
    }

    /// `account`'s bench lifted before its announced reset (the usage endpoint said so); open
    /// dashboards refresh.
    pub fn came_back(&self, account: &str) {
        self.metrics.came_back.inc();
        self.changed(account, "came_back");
    }

    /// A request is past its body and on its way.
    pub fn request_started(&self) {
        self.metrics.in_flight.inc();
    }

    /// A request is over (answered, refused or abandoned). Its record's `at` is stamped here.
    pub fn request_finished(
        &self,
        mut r: RequestRecord,
        latency: Duration,
        ttfb: Option<Duration>,
    ) {
        let m = &self.metrics;
        m.in_flight.dec();
        let account = r.account.clone().unwrap_or_else(|| "-".into());
        let model = r.model.clone().unwrap_or_else(|| "-".into());
        let client = r.client.clone().unwrap_or_else(|| "-".into());
        m.requests
            .get_or_create(&RequestLabels {
                account: account.clone(),
                status: r.status,
                model: model.clone(),
                client: client.clone(),
            })
            .inc();
        m.latency.observe(latency.as_secs_f64());
        if let Some(t) = ttfb {
            m.ttfb.observe(t.as_secs_f64());
        }
        if let (Some(t), Some(a), Some(session)) = (&r.tokens, &r.account, &r.session) {
            let mut last = self.last_answer.lock().unwrap_or_else(|p| p.into_inner());
            if last.get(session).is_none_or(|(acc, _)| acc != a) {
                if last.len() >= CONVERSATIONS_KEPT {
                    last.clear();
                }
                last.insert(session.clone(), (a.clone(), t.input + t.cache_creation));
            }
        }
        if let (Some(t), Some(a)) = (&r.tokens, &r.account) {
            self.usage.record(self.now_ms(), a, &model, &client, t);
            for (kind, n) in [
                ("input", t.input),
                ("output", t.output),
                ("cache_read", t.cache_read),
                ("cache_creation", t.cache_creation),
            ] {
                m.tokens
                    .get_or_create(&TokenLabels {
                        account: account.clone(),
                        model: model.clone(),
                        client: client.clone(),
                        kind: kind.into(),
                    })
                    .inc_by(n);
            }
        }
        // Formatted and sent only while a dashboard watches.
        if self.live.receiver_count() > 0 {
            r.at = rfc3339(self.now_ms());
            let _ = self.live.send(LiveEvent::Request(r));
        }
    }

    /// The supervisor moved a conversation.
    pub fn hop(&self, e: &HopEvent) {
        self.metrics
            .hops
            .get_or_create(&ReasonLabels {
                reason: e.reason.as_str().into(),
            })
            .inc();
        let _ = self.live.send(LiveEvent::Hop(api::Hop::from(e)));
    }

    /// An account was added, logged in again or logged out (so open dashboards refresh).
    pub fn changed(&self, account: &str, what: &str) {
        let _ = self.live.send(LiveEvent::Changed(api::Changed {
            at: rfc3339(self.now_ms()),
            account: account.to_string(),
            what: what.to_string(),
        }));
    }

    fn refreshed(&self, account: &str, outcome: &str, took: Duration) {
        self.metrics
            .refreshes
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
        let mut r = self.refreshes.lock().unwrap_or_else(|p| p.into_inner());
        if r.len() >= REFRESHES_KEPT {
            r.pop_front();
        }
        r.push_back(api::RefreshRecord {
            at: rfc3339(self.now_ms()),
            account: account.to_string(),
            outcome: outcome.to_string(),
            millis: took.as_millis() as u64,
        });
    }

    /// The latest refresh outcomes, newest last.
    pub fn refreshes(&self) -> Vec<api::RefreshRecord> {
        self.refreshes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// The latest warnings and errors of the log.
    pub fn errors(&self) -> Vec<api::LogRecord> {
        crate::logging::recent_problems()
    }

    /// The Prometheus text, with the per-account gauges set from `view`.
    pub fn scrape(&self, view: &SupervisorView, runway: &[api::Runway]) -> String {
        let m = &self.metrics;
        let now = self.clock.now();
        m.state.clear();
        m.utilization.clear();
        m.resets_at.clear();
        m.runway.clear();
        for r in runway {
            // Seconds until dry; +Inf for a pool that does not run dry; absent when unknown.
            let seconds = match r.state {
                api::RunwayState::Idle | api::RunwayState::Lasts => f64::INFINITY,
                _ => match r.seconds {
                    Some(s) => s as f64,
                    None => continue,
                },
            };
            m.runway
                .get_or_create(&PoolLabels {
                    pool: r.pool.clone(),
                })
                .set(seconds);
        }
        for a in &view.accounts {
            let account = a.id.to_string();
            m.state
                .get_or_create(&StateLabels {
                    account: account.clone(),
                    state: a.health.phase.as_str().into(),
                })
                .set(1);
            for (name, w) in [
                ("five_hour", &a.quota.five_hour),
                ("seven_day", &a.quota.seven_day),
            ] {
                let labels = WindowLabels {
                    account: account.clone(),
                    window: name.into(),
                };
                m.utilization
                    .get_or_create(&labels)
                    .set(w.utilization_at(now));
                if let Some(r) = w.resets_at.filter(|r| *r > now) {
                    m.resets_at
                        .get_or_create(&labels)
                        .set((r.as_millis() / 1000) as i64);
                }
            }
        }
        m.encode()
    }
}

/// The refresher the actors get: the real one, with each call's outcome noted.
pub struct Observed<R> {
    pub inner: R,
    pub telemetry: Arc<Telemetry>,
}

impl<R: Refresher> Refresher for Observed<R> {
    fn refresh(&self, account: &str, refresh_token: &Secret) -> BoxFuture<Result<Token, Failure>> {
        let call = self.inner.refresh(account, refresh_token);
        let (t, account) = (self.telemetry.clone(), account.to_string());
        Box::pin(async move {
            let started = Instant::now();
            let r = call.await;
            let outcome = match &r {
                Ok(_) => "ok",
                Err(Failure::Fatal) => "fatal",
                Err(Failure::Transient { .. }) => "transient",
                Err(Failure::Unknown) => "unknown",
            };
            t.refreshed(&account, outcome, started.elapsed());
            r
        })
    }
}
