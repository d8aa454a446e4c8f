//! The failover simulation: the real account actors and supervisor, the real routing, quota
//! and request-driver code, over the simulator's model (the same one `ccs sim serve` serves),
//! on a manual clock, with an in-memory store. No sockets, one thread: the same spec gives the
//! same run, byte for byte.
//!
//! The invariants of `specs/failover-invariants.md` are checked after every step; a run
//! returns a `Report` with what was served, the hops, the failures and any violation. Used by
//! `ccs sim run` and by the property tests. Must not: read the system clock, or sleep.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ccs_actors::account::{Deps, GetState, Initial};
use ccs_actors::lifecycle::{Failure, Phase, Policy};
use ccs_actors::ports::{BoxFuture, Refresher, Store, StoreError};
use ccs_actors::quota::{Quota, Status};
use ccs_actors::routing::{self, AccountId, Binding, Decision};
use ccs_actors::supervisor::{
    AddAccount, MemberView, RestoreBinding, SetPaused, SupervisorHandle, SupervisorView,
    DEFAULT_POOL,
};
use ccs_actors::{Clock, ManualClock, Secret, SharedClock, Timestamp, Token};
use serde::Serialize;
use serde_json::json;

use super::model::{Admission, AuthorizeQuery, Authorized, SimModel};
use super::scenario::{FaultKind, FaultSpec, Scenario, User};
use crate::proxy::drive::{drive, Answer, Driven, Upstream};

/// Where every simulated run starts (2025-10-09T08:53:20Z): fixed, so runs repeat exactly.
pub const T0: Timestamp = Timestamp::from_secs(1_760_000_000);
const CLIENT_ID: &str = "ccs-sim-harness";
const REDIRECT: &str = "http://localhost:1/callback";
/// Longest a simulated request may wait (for a slow refresh) before the run calls it stuck.
const MAX_REQUEST_WAIT_SECS: u64 = 1800;

/// One simulated world.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Spec {
    pub seed: u64,
    /// In pool (drain) order.
    pub accounts: Vec<AccountSpec>,
    pub token_ttl_secs: u64,
    pub sessions: Vec<SessionSpec>,
    pub faults: Vec<FaultAt>,
    pub hours: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AccountSpec {
    pub five_hour: u64,
    pub seven_day: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SessionSpec {
    pub start_min: u64,
    pub turns: u32,
    pub gap_min: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FaultAt {
    pub at_min: u64,
    pub fault: Fault,
}

/// What can go wrong, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Fault {
    /// The next refresh of the account meets a token endpoint that answers 503.
    RefreshTransient(usize),
    /// The account's grant is revoked at the authority.
    RefreshFatal(usize),
    /// The next refresh of the account waits this many seconds before reaching the authority.
    TokenSlow(usize, u64),
    Status429(usize),
    Status429Retry(usize),
    Status401(usize),
    Status529(usize),
    ResetBeforeHeaders(usize),
    ResetMidStream(usize),
    /// The daemon crashes and restarts: actors rebuilt from the store.
    Crash,
    /// The laptop sleeps: the clock jumps this many minutes at once.
    ClockJump(u64),
    Pause(usize),
    Resume(usize),
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    pub requests: u64,
    pub served: BTreeMap<String, u64>,
    /// Hops by reason.
    pub hops: BTreeMap<String, u64>,
    /// Successful refreshes at the authority, and calls.
    pub refreshes: u64,
    pub refresh_calls: u64,
    /// Requests that did not end in a served answer, by why.
    pub failed: BTreeMap<String, u64>,
    /// Invariant violations: must be empty.
    pub violations: Vec<String>,
    /// Share of the pool's current 5-hour quota used when the first request found no account
    /// (`None`: no request was ever refused).
    pub pool_efficiency: Option<f64>,
    pub faults_injected: u64,
}

/// The store the actors write to: plain maps, surviving a simulated crash.
#[derive(Default)]
pub struct MemStore {
    pub tokens: Mutex<HashMap<String, Token>>,
    pub dead: Mutex<HashMap<String, bool>>,
    pub quota: Mutex<HashMap<String, Quota>>,
    pub bindings: Mutex<BTreeMap<String, Binding>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Store for MemStore {
    fn save_token(&self, account: &str, token: &Token) -> Result<(), StoreError> {
        lock(&self.tokens).insert(account.to_string(), token.clone());
        lock(&self.dead).insert(account.to_string(), false);
        Ok(())
    }
    fn save_dead(&self, account: &str) -> Result<(), StoreError> {
        lock(&self.dead).insert(account.to_string(), true);
        Ok(())
    }
    fn save_quota(&self, account: &str, quota: &Quota) -> Result<(), StoreError> {
        lock(&self.quota).insert(account.to_string(), quota.clone());
        Ok(())
    }
    fn save_binding(&self, session: &str, binding: &Binding) -> Result<(), StoreError> {
        lock(&self.bindings).insert(session.to_string(), binding.clone());
        Ok(())
    }
    fn remove_bindings(&self, sessions: &[String]) -> Result<(), StoreError> {
        let mut b = lock(&self.bindings);
        for s in sessions {
            b.remove(s);
        }
        Ok(())
    }
}

/// The refresher over the simulator's model: the same JSON grant, classified like the real one.
struct ModelRefresher {
    model: Arc<SimModel>,
    clock: ManualClock,
    /// Refresh calls out per account (I3).
    in_flight: Arc<Mutex<HashMap<String, u32>>>,
    /// Delays to apply before the next refresh of an account reaches the authority.
    slow: Arc<Mutex<HashMap<String, u64>>>,
    violations: Arc<Mutex<Vec<String>>>,
}

impl Refresher for ModelRefresher {
    fn refresh(&self, account: &str, refresh_token: &Secret) -> BoxFuture<Result<Token, Failure>> {
        let (model, clock) = (self.model.clone(), self.clock.clone());
        let (in_flight, violations) = (self.in_flight.clone(), self.violations.clone());
        let delay = lock(&self.slow).remove(account);
        let account = account.to_string();
        let rt = refresh_token.clone();
        {
            let mut f = lock(&in_flight);
            let n = f.entry(account.clone()).or_default();
            *n += 1;
            if *n > 1 {
                lock(&violations).push(format!(
                    "I3: two refresh calls in flight for {account} at {:?}",
                    clock.now()
                ));
            }
        }
        // The call is out until its future completes or is dropped (a crash cancels it).
        let guard = InFlight {
            map: in_flight,
            account,
        };
        Box::pin(async move {
            if let Some(secs) = delay {
                let at = clock.now().plus(Duration::from_secs(secs));
                clock.sleep_until(at).await;
            }
            let out = model.token(&json!({"grant_type": "refresh_token", "refresh_token": rt.expose(), "client_id": CLIENT_ID}));
            drop(guard);
            match out.result {
                Ok(v) => serde_json::from_value::<crate::oauth::TokenResponse>(v)
                    .ok()
                    .and_then(|t| t.token(clock.now(), Some(&rt)))
                    .ok_or(Failure::Transient { retry_after: None }),
                Err(e) => Err(crate::oauth::classify(e.status, &e.body.to_string(), None)),
            }
        })
    }
}

/// One refresh call out; counted down when it completes or is cancelled.
struct InFlight {
    map: Arc<Mutex<HashMap<String, u32>>>,
    account: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(n) = lock(&self.map).get_mut(&self.account) {
            *n = n.saturating_sub(1);
        }
    }
}

/// What the simulated client got back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Body {
    Complete,
    BrokenMidStream,
    Error,
}

struct ModelUpstream {
    model: Arc<SimModel>,
    checks: Rc<RefCell<Checks>>,
}

impl Upstream for ModelUpstream {
    type Body = Body;

    async fn send(&self, account: &AccountId, access: &Secret) -> Result<Answer<Body>, String> {
        self.checks
            .borrow_mut()
            .on_send(account, &self.model, access);
        match self.model.admit(
            Some(access.expose()),
            Some(super::model::OAUTH_BETA),
            4_000,
            false,
        ) {
            Admission::Serve(s) => Ok(Answer {
                status: 200,
                headers: s.headers.clone(),
                body: if s.close_after.is_some() {
                    Body::BrokenMidStream
                } else {
                    Body::Complete
                },
            }),
            Admission::Reject { error, .. } => Ok(Answer {
                status: error.status,
                headers: error.headers,
                body: Body::Error,
            }),
            Admission::CloseBeforeHeaders { .. } => {
                Err("connection reset before headers (simulated)".into())
            }
        }
    }
}

/// The per-step view the invariants are checked against.
#[derive(Default)]
struct Checks {
    now: Timestamp,
    view: Option<SupervisorView>,
    paused: Vec<bool>,
    emails: Vec<String>,
    violations: Vec<String>,
}

impl Checks {
    fn member(&self, id: &str) -> Option<&MemberView> {
        self.view.as_ref()?.accounts.iter().find(|m| &*m.id == id)
    }

    fn index(&self, id: &str) -> Option<usize> {
        self.emails.iter().position(|e| e == id)
    }

    /// I4, I5: what is forwarded, with which token.
    fn on_send(&mut self, account: &AccountId, model: &SimModel, access: &Secret) {
        if model.access_token_lapsed(access.expose()) == Some(true) {
            self.violations.push(format!(
                "I4: a lapsed access token of {account} was forwarded at {:?}",
                self.now
            ));
        }
        if self.index(account).is_some_and(|i| self.paused[i]) {
            self.violations.push(format!(
                "I5: paused account {account} got traffic at {:?}",
                self.now
            ));
        }
        if self
            .member(account)
            .is_some_and(|m| m.health.phase == Phase::Dead)
        {
            self.violations.push(format!(
                "I5: dead account {account} got traffic at {:?}",
                self.now
            ));
        }
    }

    /// Whether the account could take a new request right now, in the daemon's view.
    fn usable(&self, m: &MemberView, paused: bool) -> bool {
        !paused
            && m.health.phase != Phase::Dead
            && (m.health.usable(self.now) || m.health.phase == Phase::Refreshing)
            && m.quota.limited_until(self.now, None).is_none()
    }
}

struct World {
    spec: Spec,
    clock: ManualClock,
    model: Arc<SimModel>,
    store: Arc<MemStore>,
    refresher: Arc<ModelRefresher>,
    sup: SupervisorHandle,
    checks: Rc<RefCell<Checks>>,
    report: Report,
    /// The account each session was last served by.
    last: HashMap<String, AccountId>,
}

fn email(i: usize) -> String {
    format!("acct{i}@sim.example")
}

fn deps(w_clock: &ManualClock, refresher: Arc<ModelRefresher>, store: Arc<MemStore>) -> Deps {
    Deps {
        clock: Arc::new(w_clock.clone()) as SharedClock,
        refresher,
        store,
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
        for (e, paused) in emails.iter().zip(paused_all) {
            let dead = lock(&self.store.dead).get(e).copied().unwrap_or(false);
            let token = lock(&self.store.tokens).get(e).cloned();
            let initial = match (dead, token) {
                (false, Some(t)) => Initial::Token(t),
                _ => Initial::Dead,
            };
            let quota = lock(&self.store.quota).get(e).cloned().unwrap_or_default();
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
        let bindings: Vec<(String, Binding)> = lock(&self.store.bindings)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (session, binding) in bindings {
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
        self.boot().await;
        self.refresh_view().await;
        // I6: no current token lost; bindings and cooldowns as before.
        let now = self.clock.now();
        let emails = self.checks.borrow().emails.clone();
        for e in emails {
            if self.model.grant_alive(&e) {
                let stored = lock(&self.store.tokens)
                    .get(&e)
                    .map(|t| t.refresh.expose().to_string());
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
                    .filter(|(_, x)| {
                        now < x.last_used.plus(routing::Policy::default().affinity_ttl)
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
        let before = self.checks.borrow().view.clone();
        let up = ModelUpstream {
            model: self.model.clone(),
            checks: self.checks.clone(),
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
                match (answer.status, answer.body) {
                    (200, Body::Complete) => {
                        *self.report.served.entry(account.to_string()).or_default() += 1
                    }
                    (200, Body::BrokenMidStream) => {
                        *self
                            .report
                            .failed
                            .entry("reset mid-stream (relayed as an SSE error)".into())
                            .or_default() += 1
                    }
                    (s, _) => {
                        *self
                            .report
                            .failed
                            .entry(format!("{s} relayed to the client"))
                            .or_default() += 1
                    }
                }
                self.check_fill_first(&decision, &left, before.as_ref());
                self.check_hop(session, &account, &left).await;
            }
            Driven::AllLimited { left, .. } => {
                *self
                    .report
                    .failed
                    .entry("429: every account limited".into())
                    .or_default() += 1;
                self.check_all_limited(&left).await;
                if self.report.pool_efficiency.is_none() {
                    let (mut used, mut budget) = (0u64, 0u64);
                    for e in &self.checks.borrow().emails {
                        if let Some([(u, b, _), _]) = self.model.windows(e) {
                            used += u.min(b);
                            budget += b;
                        }
                    }
                    self.report.pool_efficiency = Some(if budget == 0 {
                        1.0
                    } else {
                        used as f64 / budget as f64
                    });
                }
            }
            Driven::Unreachable { .. } => {
                *self
                    .report
                    .failed
                    .entry("502: upstream unreachable before headers".into())
                    .or_default() += 1
            }
            Driven::Stopped => {
                *self
                    .report
                    .failed
                    .entry("daemon stopped".into())
                    .or_default() += 1
            }
        }
    }

    /// I7: a new binding goes to the first account that can take it, below the threshold
    /// when one is.
    fn check_fill_first(
        &mut self,
        decision: &Decision,
        left: &[(AccountId, &'static str)],
        view: Option<&SupervisorView>,
    ) {
        let to = match decision {
            Decision::Bound(a) | Decision::Moved { to: a, .. } => a,
            _ => return,
        };
        let Some(view) = view else { return };
        let c = self.checks.borrow();
        let Some(order) = view.pools.get(DEFAULT_POOL) else {
            return;
        };
        let threshold = routing::Policy::default().soft_threshold;
        let target_util = view
            .accounts
            .iter()
            .find(|m| &m.id == to)
            .map(|m| m.quota.five_hour.utilization_at(c.now))
            .unwrap_or(0.0);
        let mut bad = None;
        for id in order.iter().take_while(|id| *id != to) {
            let Some(m) = view.accounts.iter().find(|m| &m.id == id) else {
                continue;
            };
            let paused = c.index(id).is_some_and(|i| c.paused[i]);
            let tried = left.iter().any(|(a, _)| a == id);
            let past =
                m.quota.five_hour.utilization_at(c.now) >= threshold && target_util < threshold;
            if c.usable(m, paused) && !tried && !past {
                bad = Some(id.clone());
            }
        }
        drop(c);
        if let Some(b) = bad {
            self.violation(format!("I7: a new session went to {to} while {b}, earlier in the drain order, could take it"));
        }
    }

    /// I2: a session changes account only when its account became limited, dead or paused
    /// (or failed the request before the first byte).
    async fn check_hop(
        &mut self,
        session: &str,
        account: &AccountId,
        left: &[(AccountId, &'static str)],
    ) {
        let prev = self.last.insert(session.to_string(), account.clone());
        let Some(prev) = prev.filter(|p| p != account) else {
            return;
        };
        let view = self.sup.view().await.ok();
        let hop = view.as_ref().and_then(|v| {
            v.events
                .iter()
                .rev()
                .find(|e| e.session == session && &e.to == account && e.from == prev)
                .cloned()
        });
        let Some(hop) = hop else {
            // An expired binding makes the session new again: that is not a hop.
            let expired = view.as_ref().is_some_and(|v| {
                !v.bindings.contains_key(session) || v.bindings[session].account == *account
            });
            if !expired {
                self.violation(format!(
                    "I2: session {session} moved {prev} → {account} with no hop recorded"
                ));
            }
            return;
        };
        let c = self.checks.borrow();
        let m = c.member(&prev);
        let paused = c.index(&prev).is_some_and(|i| c.paused[i]);
        let justified = match hop.reason.as_str() {
            "limited" => {
                m.is_some_and(|m| m.quota.limited_until(c.now, None).is_some())
                    || left.iter().any(|(a, _)| *a == prev)
            }
            "dead" => {
                m.is_none_or(|m| m.health.phase == Phase::Dead)
                    || left.iter().any(|(a, _)| *a == prev)
            }
            "paused" => paused,
            "failed" | "no_token" => true,
            _ => false,
        };
        drop(c);
        if !justified {
            self.violation(format!(
                "I2: session {session} moved {prev} → {account} for {:?} without cause",
                hop.reason
            ));
        }
    }

    /// I1: a refusal only when no account could take the request.
    async fn check_all_limited(&mut self, left: &[(AccountId, &'static str)]) {
        self.refresh_view().await;
        let c = self.checks.borrow();
        let Some(view) = c.view.as_ref() else { return };
        let mut able = Vec::new();
        for m in &view.accounts {
            let paused = c.index(&m.id).is_some_and(|i| c.paused[i]);
            if c.usable(m, paused) {
                able.push(m.id.to_string());
            }
        }
        drop(c);
        if !able.is_empty() {
            let now = self.clock.now();
            self.violation(format!("I1: a 429 was returned at {now:?} while {able:?} could take the request (tried first: {left:?})"));
        }
    }

    /// I8 and I3 after every step.
    fn check_step(&mut self) {
        let c = self.checks.borrow();
        let now = c.now;
        let mut found = Vec::new();
        if let Some(view) = &c.view {
            for m in &view.accounts {
                let q = &m.quota;
                let window_until = [&q.five_hour, &q.seven_day]
                    .into_iter()
                    .chain(q.families.values())
                    .filter(|w| w.status == Status::Rejected)
                    .filter_map(|w| w.resets_at)
                    .filter(|r| *r > now)
                    .max();
                let expected = [window_until, q.backoff_until.filter(|b| *b > now)]
                    .into_iter()
                    .flatten()
                    .max();
                if q.limited_until(now, None) != expected {
                    found.push(format!(
                        "I8: {} is still benched at {now:?} although its windows reset",
                        m.id
                    ));
                }
            }
        }
        drop(c);
        for v in found {
            self.violation(v);
        }
        for (e, counters) in self.model.counters() {
            if counters.refresh_replays > 0 {
                self.violation(format!(
                    "I3: a refresh for {e} used a refresh token the authority had already rotated"
                ));
            }
        }
    }
}

/// Runs a spec to the end. Must be called inside an actix system.
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
        ..Scenario::default()
    };
    let model = Arc::new(SimModel::new(&scenario, Arc::new(clock.clone()), spec.seed));
    let store = Arc::new(MemStore::default());
    let violations = Arc::new(Mutex::new(Vec::new()));
    let refresher = Arc::new(ModelRefresher {
        model: model.clone(),
        clock: clock.clone(),
        in_flight: Arc::default(),
        slow: Arc::default(),
        violations: violations.clone(),
    });
    // Log every account in through the authority's code flow (no sockets).
    let verifier = "harness-verifier-0123456789-0123456789-0123456789";
    let challenge = {
        use base64::Engine;
        use sha2::Digest;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(verifier.as_bytes()))
    };
    let emails: Vec<String> = (0..spec.accounts.len()).map(email).collect();
    for e in &emails {
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
                    let _ = store.save_token(e, &tok);
                }
            }
        }
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
        report: Report::default(),
        last: HashMap::new(),
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
        w.settle().await;
        for f in faults.get(&minute).cloned().unwrap_or_default() {
            w.apply(&f).await;
        }
        for s in turns.get(&minute).cloned().unwrap_or_default() {
            w.request(&s).await;
        }
        w.settle().await;
        w.refresh_view().await;
        w.check_step();
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

/// A spec from a seed: `accounts` accounts with random budgets, `sessions` sessions spread over
/// `hours`, and the named faults at random times.
pub fn generate(
    seed: u64,
    accounts: usize,
    sessions: usize,
    hours: u64,
    faults: &[&str],
) -> Result<Spec, String> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let accounts = accounts.clamp(1, 64);
    let hours = hours.max(1);
    let minutes = hours * 60;
    let mut spec = Spec {
        seed,
        accounts: (0..accounts)
            .map(|_| AccountSpec {
                five_hour: rng.random_range(10..=60),
                seven_day: rng.random_range(100..=600),
            })
            .collect(),
        token_ttl_secs: rng.random_range(1800..=8 * 3600),
        sessions: (0..sessions)
            .map(|_| SessionSpec {
                start_min: rng.random_range(0..minutes),
                turns: rng.random_range(1..=30),
                gap_min: rng.random_range(1..=10),
            })
            .collect(),
        faults: Vec::new(),
        hours,
    };
    for name in faults {
        let at_min = rng.random_range(0..minutes);
        let i = rng.random_range(0..accounts);
        let fault = match *name {
            "refresh" | "refresh_transient" => Fault::RefreshTransient(i),
            "fatal" | "refresh_fatal" => Fault::RefreshFatal(i),
            "slow" | "token_slow" => Fault::TokenSlow(i, rng.random_range(1..=120)),
            "429" => Fault::Status429(i),
            "429_retry" => Fault::Status429Retry(i),
            "401" => Fault::Status401(i),
            "529" => Fault::Status529(i),
            "reset" | "reset_before_headers" => Fault::ResetBeforeHeaders(i),
            "midstream" | "reset_mid_stream" => Fault::ResetMidStream(i),
            "crash" => Fault::Crash,
            "jump" | "clock_jump" => Fault::ClockJump(rng.random_range(5..=240)),
            "pause" => Fault::Pause(i),
            other => return Err(format!("unknown fault {other:?}: use refresh, fatal, slow, 429, 429_retry, 401, 529, reset, midstream, crash, jump or pause")),
        };
        spec.faults.push(FaultAt { at_min, fault });
    }
    Ok(spec)
}
