//! The failover simulation: the real account actors and supervisor, the real routing, quota
//! and request-driver code, over the simulator's model (the same one `ccs sim serve` serves),
//! on a manual clock, with a store that loses unflushed writes at a crash as sled does. No
//! sockets, one thread: the same spec gives the same run, byte for byte.
//!
//! `spec.rs` says what a world is, `store.rs` the durability model, `ports.rs` the refresher and
//! upstream over the model, `checks.rs` the invariants; this file runs the timeline. `pool/`
//! runs several daemons over a modelled shared store. It sits with ccs, which it drives; the
//! simulated Anthropic it drives it over is its own crate (`ccs-sim`).
//!
//! The invariants of `specs/failover-invariants.md` are checked after every step; a run
//! returns a `Report` with what was served, the hops, the failures and any violation. Used by
//! `ccs sim run` and by the property tests. Must not: read the system clock, or sleep.

mod checks;
pub mod pool;
pub(crate) mod ports;
mod spec;
pub(crate) mod store;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use ccs_actors::account::{Deps, GetState, Initial};
use ccs_actors::lifecycle::Policy;
use ccs_actors::ports::Store;
use ccs_actors::routing::{self, AccountId};
use ccs_actors::supervisor::{
    AddAccount, RestoreBinding, SetPaused, SupervisorHandle, SupervisorView, DEFAULT_POOL,
};
use ccs_actors::{Clock, ManualClock, SharedClock, Timestamp};
use serde_json::json;

use crate::proxy::drive::{drive, Driven, Left};
use crate::sim::model::{AuthorizeQuery, Authorized, SimModel};
use crate::sim::scenario::{FaultKind, FaultSpec, Scenario, User};
use checks::Checks;
use ports::{Body, ModelRefresher, ModelUpstream};
pub use spec::{
    generate, random, thinking_for, world, AccountSpec, Fault, FaultAt, Report, SessionSpec, Spec,
    ThinkingWorld,
};
use store::{lock, Records, SimStore};

/// Where every simulated run starts (2025-10-09T08:53:20Z): fixed, so runs repeat exactly.
pub const T0: Timestamp = Timestamp::from_secs(1_760_000_000);
pub(crate) const CLIENT_ID: &str = "ccs-sim-harness";
pub(crate) const REDIRECT: &str = "http://localhost:1/callback";
/// Longest a simulated request may wait (for a slow refresh) before the run calls it stuck.
const MAX_REQUEST_WAIT_SECS: u64 = 1800;

struct World {
    spec: Spec,
    clock: ManualClock,
    model: Arc<SimModel>,
    store: Arc<SimStore>,
    refresher: Arc<ModelRefresher>,
    sup: SupervisorHandle,
    checks: Rc<RefCell<Checks>>,
    report: Report,
    /// The account each session was last served by.
    last: HashMap<String, AccountId>,
    /// The conversations' histories, in a thinking world.
    conversations: Option<Rc<RefCell<ports::Conversations>>>,
    /// The runway forecast as the daemon makes it: sampled once a minute, the forecast of
    /// each minute kept (minute → dry at, in minutes of the run).
    meter: ccs_actors::runway::BurnMeter,
    forecasts: BTreeMap<u64, Option<f64>>,
    minute: u64,
}

fn email(i: usize) -> String {
    format!("acct{i}@sim.example")
}

fn deps(w_clock: &ManualClock, refresher: Arc<ModelRefresher>, store: Arc<SimStore>) -> Deps {
    Deps {
        clock: Arc::new(w_clock.clone()) as SharedClock,
        refresher,
        store,
        coordinator: std::sync::Arc::new(ccs_actors::ports::Solo),
        policy: Policy::default(),
    }
}

impl World {
    /// Lets every actor, timer and mailbox run until nothing moves.
    async fn settle(&self) {
        for _ in 0..4 {
            for _ in 0..16 {
                tokio::task::yield_now().await;
            }
            let Ok(view) = self.sup.view().await else {
                return;
            };
            for m in &view.accounts {
                if let Some(addr) = self.sup.account(&m.id).await {
                    let _ = addr.send(GetState).await;
                }
            }
        }
    }

    async fn refresh_view(&mut self) {
        let view = self.sup.view().await.ok();
        let mut c = self.checks.borrow_mut();
        c.now = self.clock.now();
        c.view = view;
    }

    /// Builds the supervisor from the store, as the daemon does at start.
    async fn boot(&mut self) {
        let sup = SupervisorHandle::start(
            deps(&self.clock, self.refresher.clone(), self.store.clone()),
            routing::Policy::default(),
        );
        let (emails, paused_all) = {
            let c = self.checks.borrow();
            (c.emails.clone(), c.paused.clone())
        };
        let disk = self.store.read();
        for (e, paused) in emails.iter().zip(paused_all) {
            let dead = disk.dead.get(e).copied().unwrap_or(false);
            let token = disk.tokens.get(e).cloned();
            let initial = match (dead, token) {
                (false, Some(t)) if disk.in_doubt(e) => Initial::InDoubt(t),
                (false, Some(t)) => Initial::Token(t),
                _ => Initial::Dead,
            };
            let quota = disk.quota.get(e).cloned().unwrap_or_default();
            let _ = sup
                .add(AddAccount {
                    id: e.as_str().into(),
                    initial,
                    quota,
                    paused,
                    pools: vec![],
                })
                .await;
        }
        for (session, binding) in disk.bindings {
            let _ = sup.addr().send(RestoreBinding { session, binding }).await;
        }
        self.sup = sup;
        self.settle().await;
    }

    fn violation(&mut self, v: String) {
        self.checks.borrow_mut().violations.push(v);
    }

    async fn crash(&mut self) {
        self.settle().await;
        self.refresh_view().await;
        let before = self.checks.borrow().view.clone();
        // Stop every actor: what is not in the store is gone.
        if let Some(v) = &before {
            for m in &v.accounts {
                if let Some(addr) = self.sup.account(&m.id).await {
                    addr.do_send(ccs_actors::account::StopAccount);
                }
            }
        }
        self.sup
            .addr()
            .do_send(ccs_actors::supervisor::StopSupervisor);
        self.settle().await;
        // What was not flushed is gone; only batched writes may be (I6).
        let lost = self.store.crash();
        self.boot().await;
        self.refresh_view().await;
        // I6: no current token lost; cooldowns as before; bindings as before but for those the
        // store had not flushed yet (such a session is simply routed as a new one).
        let now = self.clock.now();
        let emails = self.checks.borrow().emails.clone();
        let disk = self.store.read();
        for e in emails {
            if self.model.grant_alive(&e) {
                let stored = disk.tokens.get(&e).map(|t| t.refresh.expose().to_string());
                if !stored
                    .as_deref()
                    .is_some_and(|r| self.model.refresh_token_is_current(r))
                {
                    self.violation(format!(
                        "I6: after the restart the store holds no current refresh token for {e}"
                    ));
                }
            }
        }
        let after = self.checks.borrow().view.clone();
        if let (Some(b), Some(a)) = (before, after) {
            let live = |v: &SupervisorView| -> BTreeMap<String, String> {
                v.bindings
                    .iter()
                    .filter(|(k, x)| {
                        !lost.contains(*k)
                            && now < x.last_used.plus(routing::Policy::default().affinity_ttl)
                    })
                    .map(|(k, x)| (k.clone(), x.account.to_string()))
                    .collect()
            };
            if live(&b) != live(&a) {
                self.violation(format!(
                    "I6: bindings changed across the restart at {now:?}"
                ));
            }
            for m in &b.accounts {
                let was = m.quota.limited_until(now, None);
                let is = a
                    .accounts
                    .iter()
                    .find(|x| x.id == m.id)
                    .and_then(|x| x.quota.limited_until(now, None));
                if was != is {
                    self.violation(format!(
                        "I6: cooldown of {} was {was:?}, after the restart {is:?}",
                        m.id
                    ));
                }
            }
        }
    }

    async fn apply(&mut self, f: &Fault) {
        self.report.faults_injected += 1;
        let fault = |kind, i: usize| FaultSpec {
            kind,
            account: Some(email(i)),
            count: Some(1),
            ms: None,
            after_events: Some(2),
        };
        let n = self.spec.accounts.len();
        match *f {
            Fault::RefreshTransient(i) => {
                self.model.add_fault(fault(FaultKind::TokenDown, i % n));
            }
            Fault::RefreshFatal(i) => {
                self.model.revoke(&email(i % n));
            }
            Fault::TokenSlow(i, secs) => {
                lock(&self.refresher.slow).insert(email(i % n), secs);
            }
            Fault::Status429(i) => {
                self.model.add_fault(fault(FaultKind::Status429, i % n));
            }
            Fault::Status429Retry(i) => {
                self.model
                    .add_fault(fault(FaultKind::Status429Retry, i % n));
            }
            Fault::Status401(i) => {
                self.model.add_fault(fault(FaultKind::Status401, i % n));
            }
            Fault::Status529(i) => {
                self.model.add_fault(fault(FaultKind::Status529, i % n));
            }
            Fault::ResetBeforeHeaders(i) => {
                self.model
                    .add_fault(fault(FaultKind::CloseBeforeHeaders, i % n));
            }
            Fault::ResetMidStream(i) => {
                self.model
                    .add_fault(fault(FaultKind::CloseMidStream, i % n));
            }
            Fault::ExternalUse(i, units) => {
                self.model.use_outside(&email(i % n), units);
            }
            Fault::Crash => self.crash().await,
            Fault::ClockJump(mins) => {
                self.clock.advance(Duration::from_secs(mins * 60));
                self.settle().await;
            }
            Fault::Pause(i) | Fault::Resume(i) => {
                let paused = matches!(f, Fault::Pause(_));
                self.checks.borrow_mut().paused[i % n] = paused;
                let _ = self
                    .sup
                    .addr()
                    .send(SetPaused {
                        id: email(i % n).as_str().into(),
                        paused,
                    })
                    .await;
            }
        }
    }

    /// One turn of one session: a request through the driver, then its checks.
    async fn request(&mut self, session: &str) {
        self.settle().await;
        self.refresh_view().await;
        self.report.requests += 1;
        self.checks.borrow_mut().delivered.clear();
        let before = self.checks.borrow().view.clone();
        let up = ModelUpstream {
            model: self.model.clone(),
            checks: self.checks.clone(),
            session: session.to_string(),
            conversations: self.conversations.clone(),
        };
        let (sup, owned) = (self.sup.clone(), session.to_string());
        let mut task =
            actix::spawn(async move { drive(&sup, &up, DEFAULT_POOL, Some(&owned), None).await });
        // A request may wait on a refresh that takes simulated time (a slow token endpoint):
        // let the clock run, a second at a time, while it waits.
        let mut waited = 0u64;
        let driven = loop {
            for _ in 0..64 {
                tokio::task::yield_now().await;
            }
            if task.is_finished() {
                match (&mut task).await {
                    Ok(d) => break d,
                    Err(_) => return,
                }
            }
            if waited >= MAX_REQUEST_WAIT_SECS {
                task.abort();
                self.violation(format!(
                    "a request of {session} was still waiting after {waited} s of simulated time"
                ));
                return;
            }
            self.clock.advance(Duration::from_secs(1));
            waited += 1;
        };
        match driven {
            Driven::Relay {
                account,
                decision,
                answer,
                left,
            } => {
                let failure = match (answer.status, answer.body) {
                    (200, Body::Complete) => {
                        *self.report.served.entry(account.to_string()).or_default() += 1;
                        None
                    }
                    (200, Body::BrokenMidStream) => {
                        Some("reset mid-stream (relayed as an SSE error)".to_string())
                    }
                    (s, Body::HistoryRefused) => {
                        self.violation(format!(
                            "I9: a request of {session} was refused ({s}) for its history on {account}"
                        ));
                        Some(format!("{s} relayed to the client (its history)"))
                    }
                    (s, _) => Some(format!("{s} relayed to the client")),
                };
                if let Some(why) = failure {
                    self.fail(why);
                }
                self.check_left(&left);
                self.check_relayed_429(&account, answer.status);
                self.check_fill_first(&decision, &left, before.as_ref());
                self.check_hops(session, Some(&account), &left, before.as_ref())
                    .await;
            }
            Driven::AllLimited { left, .. } => {
                self.fail("429: every account limited".into());
                self.refresh_view().await;
                self.check_left(&left);
                self.check_all_limited(&left);
                self.check_hops(session, None, &left, before.as_ref()).await;
                if self.report.pool_efficiency.is_none() {
                    self.report.pool_efficiency = Some(self.pool_efficiency());
                    self.report.pool_efficiency_note = None;
                }
                if self.report.runway.is_none() && self.minute >= 60 {
                    self.report.runway = Some(spec::RunwayCheck {
                        dry_min: self.minute,
                        forecast_min: self.forecasts.get(&(self.minute - 60)).copied().flatten(),
                    });
                }
            }
            Driven::Failed { left, .. } => {
                self.check_left(&left);
                self.check_hops(session, None, &left, before.as_ref()).await;
                let why = if left.iter().all(|(_, w)| *w == Left::Unreachable) {
                    "502: upstream unreachable before headers".to_string()
                } else {
                    let reasons: std::collections::BTreeSet<&str> =
                        left.iter().map(|(_, w)| w.as_str()).collect();
                    format!(
                        "502: no account could serve ({})",
                        reasons.into_iter().collect::<Vec<_>>().join(", ")
                    )
                };
                self.fail(why);
            }
            Driven::Stopped => self.fail("daemon stopped".into()),
        }
    }

    /// Samples the pool's quota into the meter and keeps this minute's runway forecast.
    async fn forecast(&mut self, minute: u64) {
        use ccs_actors::runway::Runway;
        let Ok(view) = self.sup.view().await else {
            return;
        };
        let now = self.clock.now();
        let served = &self.report.served;
        self.meter.observe_view(
            &view,
            |id| served.get(&id.to_string()).copied().unwrap_or(0),
            now,
        );
        let said = match self.meter.forecast_pool(&view, DEFAULT_POOL, now).0 {
            Runway::DryAt { at, .. } => Some(minute as f64 + at.since(now).as_secs_f64() / 60.0),
            _ => None,
        };
        self.forecasts.insert(minute, said);
    }

    fn fail(&mut self, why: String) {
        *self.report.failed.entry(why).or_default() += 1;
    }

    /// The share of what the authority would really have served that was used: each account's
    /// 5-hour window, capped by what its weekly window had left.
    fn pool_efficiency(&self) -> f64 {
        let (mut used, mut could) = (0u64, 0u64);
        for e in &self.checks.borrow().emails {
            if let Some([(u5, b5, _), (u7, b7, _)]) = self.model.windows(e) {
                let cap = b5.min(u5 + b7.saturating_sub(u7));
                used += u5.min(cap);
                could += cap;
            }
        }
        if could == 0 {
            1.0
        } else {
            used as f64 / could as f64
        }
    }
}

/// Runs a spec to the end. Must be called inside an actix system.
/// Logs every account in through the authority's code flow (no sockets): each e-mail with the
/// token it got.
pub(crate) fn login_all(
    model: &SimModel,
    clock: &ManualClock,
    emails: &[String],
) -> Vec<(String, ccs_actors::Token)> {
    let verifier = "harness-verifier-0123456789-0123456789-0123456789";
    let challenge = {
        use base64::Engine;
        use sha2::Digest;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(verifier.as_bytes()))
    };
    let mut out = Vec::new();
    for e in emails {
        let q = AuthorizeQuery {
            client_id: Some(CLIENT_ID.into()),
            response_type: Some("code".into()),
            redirect_uri: Some(REDIRECT.into()),
            code_challenge: Some(challenge.clone()),
            code_challenge_method: Some("S256".into()),
            state: Some("s".into()),
            login_hint: Some(e.clone()),
            ..Default::default()
        };
        if let Ok(Authorized::Approved { code, .. }) = model.authorize(&q) {
            let t = model.token(&json!({"grant_type":"authorization_code","code":code,"state":"s","client_id":CLIENT_ID,"redirect_uri":REDIRECT,"code_verifier":verifier}));
            if let Ok(v) = t.result {
                if let Some(tok) = serde_json::from_value::<crate::oauth::TokenResponse>(v)
                    .ok()
                    .and_then(|r| r.token(clock.now(), None))
                {
                    out.push((e.clone(), tok));
                }
            }
        }
    }
    out
}

pub async fn run(spec: &Spec) -> Report {
    let clock = ManualClock::new(T0);
    let scenario = Scenario {
        token_ttl: crate::config::Span(Duration::from_secs(spec.token_ttl_secs.max(60))),
        users: spec
            .accounts
            .iter()
            .enumerate()
            .map(|(i, a)| User {
                five_hour: a.five_hour,
                seven_day: a.seven_day,
                ..User::new(&email(i))
            })
            .collect(),
        models: spec
            .thinking
            .iter()
            .map(|t| {
                (
                    t.model.clone(),
                    crate::sim::scenario::ModelOverride {
                        thinking_binding: Some(t.binding),
                        ..Default::default()
                    },
                )
            })
            .collect(),
        ..Scenario::default()
    };
    let model = Arc::new(SimModel::new(&scenario, Arc::new(clock.clone()), spec.seed));
    let store = Arc::new(SimStore::with(Records::default()));
    let refresher = Arc::new(ModelRefresher::new(model.clone(), clock.clone()));
    let violations = refresher.violations.clone();
    let emails: Vec<String> = (0..spec.accounts.len()).map(email).collect();
    for (e, tok) in login_all(&model, &clock, &emails) {
        let _ = store.persist_token(&e, &tok);
    }
    let checks = Rc::new(RefCell::new(Checks {
        paused: vec![false; emails.len()],
        emails,
        ..Checks::default()
    }));
    let placeholder = SupervisorHandle::start(
        deps(&clock, refresher.clone(), store.clone()),
        routing::Policy::default(),
    );
    let mut w = World {
        spec: spec.clone(),
        clock: clock.clone(),
        model,
        store,
        refresher,
        sup: placeholder,
        checks,
        report: Report {
            pool_efficiency_note: Some("no request was refused".into()),
            ..Report::default()
        },
        last: HashMap::new(),
        meter: Default::default(),
        forecasts: BTreeMap::new(),
        minute: 0,
        conversations: spec
            .thinking
            .clone()
            .map(|t| Rc::new(RefCell::new(ports::Conversations::new(t)))),
    };
    w.boot().await;

    // The timeline, minute by minute.
    let mut turns: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (i, s) in spec.sessions.iter().enumerate() {
        for t in 0..s.turns as u64 {
            turns
                .entry(s.start_min + t * s.gap_min.max(1))
                .or_default()
                .push(format!("session-{i}"));
        }
    }
    let mut faults: BTreeMap<u64, Vec<Fault>> = BTreeMap::new();
    for f in &spec.faults {
        faults.entry(f.at_min).or_default().push(f.fault.clone());
    }
    for minute in 0..spec.hours.max(1) * 60 {
        if minute > 0 {
            clock.advance(Duration::from_secs(60));
        }
        w.minute = minute;
        // sled flushes every 500 ms: everything written in the last minute is on disk now.
        w.store.flush();
        w.settle().await;
        let (crashes, others): (Vec<Fault>, Vec<Fault>) = faults
            .get(&minute)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .partition(|f| *f == Fault::Crash);
        for f in &others {
            w.apply(f).await;
        }
        for s in turns.get(&minute).cloned().unwrap_or_default() {
            w.request(&s).await;
        }
        // A crash comes right after the minute's traffic, inside the store's flush interval:
        // what that traffic wrote without a flush is lost.
        for f in &crashes {
            w.apply(f).await;
        }
        w.settle().await;
        w.refresh_view().await;
        w.check_step();
        w.forecast(minute).await;
    }
    w.settle().await;
    let view = w.sup.view().await.ok();
    for (e, c) in w.model.counters() {
        w.report.refreshes += c.refresh_ok;
        w.report.refresh_calls += c.refresh_calls;
        let _ = e;
    }
    if let Some(v) = view {
        for e in v.events {
            *w.report
                .hops
                .entry(e.reason.as_str().to_string())
                .or_default() += 1;
        }
    }
    let mut all = std::mem::take(&mut w.checks.borrow_mut().violations);
    all.extend(lock(&violations).drain(..));
    all.dedup();
    w.report.violations = all;
    w.report
}

/// Runs a spec on a fresh actix system of its own (for the CLI and tests).
pub fn run_blocking(spec: &Spec) -> Report {
    let spec = spec.clone();
    actix::System::new().block_on(async move { run(&spec).await })
}
