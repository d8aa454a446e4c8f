//! AccountActor: one per account. Runs the account's lifecycle and quota machines and carries
//! out their effects: arms the refresh timer, makes the single refresh call, persists a new
//! token before anyone sees it, answers leases, and publishes health to the supervisor.
//!
//! Must not: hand out or publish a token the store has not accepted, or start a refresh the
//! machine did not ask for.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::clock::SharedClock;
use crate::lifecycle::{self, Effect, Event, Failure, Health, Phase, Policy};
use crate::ports::{Refresher, Store};
use crate::quota::{Headers, Quota, Verdict};
use crate::routing::AccountId;
use crate::token::{Secret, Token};

/// How long to wait before retrying a failed store write of a new token.
const PERSIST_RETRY: Duration = Duration::from_secs(1);
/// Utilization alone moves on every response; it is written down at most this often (limits,
/// resets and backoffs are written at once).
const QUOTA_SAVE_EVERY: Duration = Duration::from_secs(60);

/// The outside world of an account actor.
#[derive(Clone)]
pub struct Deps {
    pub clock: SharedClock,
    pub refresher: Arc<dyn Refresher>,
    pub store: Arc<dyn Store>,
    pub policy: Policy,
}

/// How an account starts.
#[derive(Clone, Debug)]
pub enum Initial {
    /// A persisted token, fed to the machine as `Loaded`.
    Token(Token),
    /// The store says the grant is gone.
    Dead,
}

/// The credential to send upstream for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub access: Secret,
    /// Which token this is; a 401 for an older generation is not the current token's fault.
    pub generation: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    #[error("the account's grant is gone: log it in again")]
    Dead,
    #[error("the account has no usable token right now (refresh pending)")]
    Unavailable,
    #[error("the account actor stopped")]
    Stopped,
}

/// The account's health and quota, as published to the supervisor.
#[derive(Clone, Debug, PartialEq, Message)]
#[rtype(result = "()")]
pub struct HealthChanged {
    pub account: AccountId,
    pub health: Health,
    pub quota: Quota,
}

/// Asks for the current access token; waits only while a refresh is in flight and the old
/// token has lapsed (or a new token is still being written down).
#[derive(Message)]
#[rtype(result = "Result<Lease, LeaseError>")]
pub struct GetLease;

/// The Messages API said 401 to the token of `generation`: refresh once (if that token is still
/// the current one) and answer with the lease to retry with.
#[derive(Message)]
#[rtype(result = "Result<Lease, LeaseError>")]
pub struct Unauthorized {
    pub generation: u64,
}

/// A Messages API response to fold into the quota machine.
#[derive(Message)]
#[rtype(result = "Verdict")]
pub struct Observe {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

/// A usage-endpoint body to fold into the quota machine.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ObserveUsage(pub crate::quota::UsageBody);

/// Periodic check, and what a simulation sends after a clock jump.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Tick;

#[derive(Message)]
#[rtype(result = "()")]
pub struct LoggedIn(pub Token);

#[derive(Message)]
#[rtype(result = "()")]
pub struct LoggedOut;

/// Stops the actor (its account was replaced or removed; simulations use it as a crash).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopAccount;

impl Handler<StopAccount> for AccountActor {
    type Result = ();

    fn handle(&mut self, _msg: StopAccount, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// The account's state, for status views and tests.
#[derive(Message)]
#[rtype(result = "AccountState")]
pub struct GetState;

#[derive(Clone, Debug, PartialEq)]
pub struct AccountState {
    pub machine: lifecycle::State,
    pub quota: Quota,
    pub generation: u64,
    pub refresh_calls: u64,
}

struct OwnedHeaders(Vec<(String, String)>);

impl Headers for OwnedHeaders {
    fn header(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub struct AccountActor {
    id: AccountId,
    deps: Deps,
    initial: Option<Initial>,
    machine: lifecycle::State,
    /// The token the store has accepted: the only one leases hand out.
    token: Option<Token>,
    /// Bumped whenever `token` changes.
    generation: u64,
    quota: Quota,
    supervisor: Recipient<HealthChanged>,
    timer: Option<SpawnHandle>,
    /// Effects held back because the store refused a new token; retried until it accepts.
    held: Option<(Token, Vec<Effect>)>,
    /// Leases waiting for the refresh in flight (or the held write) to finish.
    waiters: Vec<oneshot::Sender<Result<Lease, LeaseError>>>,
    refresh_calls: u64,
    /// When the quota was last written to the store.
    quota_saved_at: Option<crate::clock::Timestamp>,
    /// The 5-hour utilization the supervisor last heard.
    published_util: f64,
}

impl AccountActor {
    pub fn new(
        id: AccountId,
        initial: Initial,
        quota: Quota,
        deps: Deps,
        supervisor: Recipient<HealthChanged>,
    ) -> Self {
        let machine = lifecycle::State::unloaded(deps.policy);
        AccountActor {
            id,
            deps,
            initial: Some(initial),
            machine,
            token: None,
            generation: 0,
            quota,
            supervisor,
            timer: None,
            held: None,
            waiters: Vec::new(),
            refresh_calls: 0,
            quota_saved_at: None,
            published_util: 0.0,
        }
    }

    fn apply(&mut self, event: Event, ctx: &mut Context<Self>) {
        let now = self.deps.clock.now();
        let (next, effects) = lifecycle::step(&self.machine, event, now);
        self.machine = next;
        self.run(effects, ctx);
        self.wake_waiters();
    }

    fn run(&mut self, effects: Vec<Effect>, ctx: &mut Context<Self>) {
        let mut effects = effects.into_iter();
        while let Some(effect) = effects.next() {
            match effect {
                Effect::StartRefresh => self.start_refresh(ctx),
                Effect::Persist(token) => {
                    if let Err(e) = self.deps.store.save_token(&self.id, &token) {
                        tracing::error!(account = %self.id, error = %e, "could not save the new token; holding it back and retrying");
                        self.held = Some((token, effects.collect()));
                        self.retry_held(ctx);
                        return;
                    }
                    self.token = Some(token);
                    self.generation += 1;
                }
                Effect::PersistDead => {
                    if let Err(e) = self.deps.store.save_dead(&self.id) {
                        tracing::error!(account = %self.id, error = %e, "could not record the account as dead");
                    }
                }
                Effect::ArmTimer(at) => {
                    if let Some(h) = self.timer.take() {
                        ctx.cancel_future(h);
                    }
                    let sleep = self.deps.clock.sleep_until(at);
                    let handle = ctx.spawn(sleep.into_actor(self).map(|_, act, ctx| {
                        act.timer = None;
                        act.apply(Event::LeadReached, ctx);
                    }));
                    self.timer = Some(handle);
                }
                Effect::Publish(_) => self.publish(),
            }
        }
    }

    fn retry_held(&mut self, ctx: &mut Context<Self>) {
        let at = self.deps.clock.now().plus(PERSIST_RETRY);
        let sleep = self.deps.clock.sleep_until(at);
        ctx.spawn(sleep.into_actor(self).map(|_, act, ctx| {
            if let Some((token, rest)) = act.held.take() {
                let mut effects = vec![Effect::Persist(token)];
                effects.extend(rest);
                act.run(effects, ctx);
                act.wake_waiters();
            }
        }));
    }

    fn start_refresh(&mut self, ctx: &mut Context<Self>) {
        let Some(refresh) = self.token.as_ref().map(|t| t.refresh.clone()) else {
            // A machine that asks for a refresh always holds a token; if not, the grant is
            // unusable and only a login can help.
            ctx.notify(RefreshDone(Err(Failure::Fatal)));
            return;
        };
        self.refresh_calls += 1;
        let call = self.deps.refresher.refresh(&self.id, &refresh);
        ctx.spawn(call.into_actor(self).map(|result, _act, ctx| {
            ctx.notify(RefreshDone(result));
        }));
    }

    fn publish(&mut self) {
        self.published_util = self.quota.five_hour.utilization;
        self.supervisor.do_send(HealthChanged {
            account: self.id.clone(),
            health: self.machine.health(),
            quota: self.quota.clone(),
        });
    }

    fn lease_now(&self) -> Option<Result<Lease, LeaseError>> {
        if self.machine.phase == Phase::Dead {
            return Some(Err(LeaseError::Dead));
        }
        if self.held.is_some() {
            return None;
        }
        let token = self.token.as_ref()?;
        let now = self.deps.clock.now();
        if now < token.expires_at {
            return Some(Ok(Lease {
                access: token.access.clone(),
                generation: self.generation,
            }));
        }
        if self.machine.phase == Phase::Refreshing {
            return None;
        }
        Some(Err(LeaseError::Unavailable))
    }

    fn wake_waiters(&mut self) {
        if self.waiters.is_empty() || self.machine.phase == Phase::Refreshing || self.held.is_some()
        {
            return;
        }
        let answer = self.lease_now().unwrap_or(Err(LeaseError::Unavailable));
        for w in self.waiters.drain(..) {
            let _ = w.send(answer.clone());
        }
    }

    fn wait(&mut self) -> ResponseFuture<Result<Lease, LeaseError>> {
        let (tx, rx) = oneshot::channel();
        self.waiters.push(tx);
        Box::pin(async move { rx.await.unwrap_or(Err(LeaseError::Stopped)) })
    }
}

impl Actor for AccountActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        match self.initial.take() {
            Some(Initial::Token(token)) => {
                // Loaded tokens come from the store: they are already durable.
                self.token = Some(token.clone());
                self.generation = 1;
                self.apply(Event::Loaded(token), ctx);
            }
            Some(Initial::Dead) => {
                self.machine = lifecycle::State::dead(self.deps.policy);
                self.publish();
            }
            None => {}
        }
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        for w in self.waiters.drain(..) {
            let _ = w.send(Err(LeaseError::Stopped));
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct RefreshDone(Result<Token, Failure>);

impl Handler<RefreshDone> for AccountActor {
    type Result = ();

    fn handle(&mut self, msg: RefreshDone, ctx: &mut Context<Self>) {
        let event = match msg.0 {
            Ok(token) => Event::RefreshSucceeded(token),
            Err(failure) => {
                tracing::warn!(account = %self.id, ?failure, "token refresh failed");
                Event::RefreshFailed(failure)
            }
        };
        self.apply(event, ctx);
    }
}

impl Handler<GetLease> for AccountActor {
    type Result = ResponseFuture<Result<Lease, LeaseError>>;

    fn handle(&mut self, _msg: GetLease, _ctx: &mut Context<Self>) -> Self::Result {
        match self.lease_now() {
            Some(answer) => Box::pin(async move { answer }),
            None => self.wait(),
        }
    }
}

impl Handler<Unauthorized> for AccountActor {
    type Result = ResponseFuture<Result<Lease, LeaseError>>;

    fn handle(&mut self, msg: Unauthorized, ctx: &mut Context<Self>) -> Self::Result {
        if msg.generation == self.generation {
            self.apply(Event::UpstreamUnauthorized, ctx);
        }
        if self.machine.phase == Phase::Refreshing || self.held.is_some() {
            return self.wait();
        }
        let answer = self.lease_now().unwrap_or(Err(LeaseError::Unavailable));
        Box::pin(async move { answer })
    }
}

impl Handler<Observe> for AccountActor {
    type Result = MessageResult<Observe>;

    fn handle(&mut self, msg: Observe, _ctx: &mut Context<Self>) -> Self::Result {
        let before = self.quota.limits();
        let now = self.deps.clock.now();
        let verdict = self
            .quota
            .observe(msg.status, &OwnedHeaders(msg.headers), now);
        let limits_changed = self.quota.limits() != before;
        let stale = self
            .quota_saved_at
            .is_none_or(|t| now.since(t) >= QUOTA_SAVE_EVERY);
        if limits_changed || stale {
            if let Err(e) = self.deps.store.save_quota(&self.id, &self.quota) {
                tracing::warn!(account = %self.id, error = %e, "could not save quota state");
            }
            self.quota_saved_at = Some(now);
        }
        // Routing needs limits at once; utilization only for the soft threshold, so a move of
        // under one point is not worth a message.
        let moved = (self.quota.five_hour.utilization - self.published_util).abs() >= 0.01;
        if limits_changed || moved {
            self.publish();
        }
        MessageResult(verdict)
    }
}

impl Handler<ObserveUsage> for AccountActor {
    type Result = ();

    fn handle(&mut self, msg: ObserveUsage, _ctx: &mut Context<Self>) {
        let now = self.deps.clock.now();
        self.quota.observe_usage(&msg.0, now);
        if let Err(e) = self.deps.store.save_quota(&self.id, &self.quota) {
            tracing::warn!(account = %self.id, error = %e, "could not save quota state");
        }
        self.publish();
    }
}

impl Handler<Tick> for AccountActor {
    type Result = ();

    fn handle(&mut self, _msg: Tick, ctx: &mut Context<Self>) {
        self.apply(Event::Tick, ctx);
    }
}

impl Handler<LoggedIn> for AccountActor {
    type Result = ();

    fn handle(&mut self, msg: LoggedIn, ctx: &mut Context<Self>) {
        self.apply(Event::LoggedIn(msg.0), ctx);
    }
}

impl Handler<LoggedOut> for AccountActor {
    type Result = ();

    fn handle(&mut self, _msg: LoggedOut, ctx: &mut Context<Self>) {
        self.apply(Event::LoggedOut, ctx);
    }
}

impl Handler<GetState> for AccountActor {
    type Result = MessageResult<GetState>;

    fn handle(&mut self, _msg: GetState, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(AccountState {
            machine: self.machine,
            quota: self.quota.clone(),
            generation: self.generation,
            refresh_calls: self.refresh_calls,
        })
    }
}
