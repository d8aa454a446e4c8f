//! AccountActor: one per account. Runs the account's lifecycle and quota machines and carries
//! out their effects: arms the refresh timer, makes the single refresh call, persists a new
//! token before anyone sees it, answers leases, and publishes health to the supervisor.
//!
//! Must not: hand out or publish a token the store has not accepted, or start a refresh the
//! machine did not ask for.

use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::clock::SharedClock;
use crate::lifecycle::{self, Effect, Event, Failure, Health, LeaseAnswer, Phase, Policy};
use crate::ports::{Claim, Commit, Coordinator, Persisting, Refresher, Soon, Store, Ticket};
use crate::quota::Quota;
use crate::routing::AccountId;
use crate::token::{Secret, Token};

mod control;
mod quota;

pub use control::{
    AccountState, CredentialRefused, Demand, GetState, LoggedIn, LoggedOut, SaveQuota, Settle,
    StopAccount, Tick,
};
pub use quota::{Observe, ObserveUsage, PeerQuota};

/// The outside world of an account actor.
#[derive(Clone)]
pub struct Deps {
    pub clock: SharedClock,
    pub refresher: Arc<dyn Refresher>,
    pub store: Arc<dyn Store>,
    /// Who sends each refresh when several daemons share the pool (`Solo` when alone).
    pub coordinator: Arc<dyn Coordinator>,
    pub policy: Policy,
}

/// How an account starts.
#[derive(Clone, Debug)]
pub enum Initial {
    /// A persisted token, fed to the machine as `Loaded`.
    Token(Token),
    /// A persisted token with a refresh intent for it (see `Store::persist_refresh_intent`): fed
    /// as `LoadedInDoubt`, which checks the grant at once.
    InDoubt(Token),
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
    /// The token the account would lease now (while `health` says it is usable): what a
    /// request of a conversation bound here is sent with, without asking this actor.
    pub lease: Option<Lease>,
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

pub struct AccountActor {
    id: AccountId,
    deps: Deps,
    initial: Option<Initial>,
    /// The lifecycle machine, tokens included: every decision about them is made there.
    machine: lifecycle::State,
    quota: Quota,
    supervisor: Recipient<HealthChanged>,
    timer: Option<SpawnHandle>,
    /// Leases waiting for the refresh in flight (or the write of its answer) to finish. Not
    /// machine state: who waits changes nothing the machine decides, only who hears of it.
    /// Each with the oldest token generation it accepts (after a 401: a newer one).
    waiters: Vec<(u64, oneshot::Sender<Result<Lease, LeaseError>>)>,
    /// Who waits for the account to settle (no refresh call out, no token unwritten): a
    /// stopping daemon, which must not abandon a rotation half done.
    settle_waiters: Vec<oneshot::Sender<()>>,
    refresh_calls: u64,
    /// When the quota was last written to the store.
    quota_saved_at: Option<crate::clock::Timestamp>,
    /// The 5-hour utilization the supervisor last heard.
    published_util: f64,
    /// What the last publication said of the lease: (generation, leasable now); a change
    /// publishes again, so the supervisor's copy never outlives the token it names.
    published_lease: (u64, bool),
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
            quota,
            supervisor,
            timer: None,
            settle_waiters: Vec::new(),
            waiters: Vec::new(),
            refresh_calls: 0,
            quota_saved_at: None,
            published_util: 0.0,
            published_lease: (0, false),
        }
    }

    /// The machine's health as it stands (before the actor starts: nothing loaded yet).
    pub fn health(&self) -> Health {
        self.machine.health()
    }

    /// Feeds one event to the machine and carries out its effects; an effect that answers at
    /// once (a store write) feeds its outcome back as the next event.
    fn apply(&mut self, event: Event, ctx: &mut Context<Self>) {
        let mut next = Some(event);
        while let Some(event) = next.take() {
            let now = self.deps.clock.now();
            let (state, effects) = lifecycle::step(&self.machine, event, now);
            self.machine = state;
            for effect in effects {
                if let Some(outcome) = self.carry_out(effect, ctx) {
                    next = Some(outcome);
                }
            }
        }
        if self.lease_key() != self.published_lease {
            self.publish();
        }
        self.wake_waiters();
    }

    fn carry_out(&mut self, effect: Effect, ctx: &mut Context<Self>) -> Option<Event> {
        match effect {
            Effect::StartRefresh(refresh) => self.start_refresh(refresh, ctx),
            Effect::Persist(token) => match self.deps.store.persist_token(&self.id, &token) {
                Persisting::Done(result) => return Some(self.persisted(token, result)),
                Persisting::Pending(write) => {
                    // The write runs on the store's own writer; the machine stays Refreshing
                    // (the token unsaved, leases waiting) until it answers.
                    ctx.spawn(write.into_actor(self).map(move |result, act, ctx| {
                        let event = act.persisted(token, result);
                        act.apply(event, ctx);
                    }));
                }
            },
            Effect::PersistDead => {
                let write = self.deps.store.persist_dead(&self.id);
                self.logged(write, "could not record the account as dead", ctx);
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
        None
    }

    /// Lets a write finish on the store's writer, logging a failure; nothing waits for it.
    fn logged(&self, write: Persisting, what: &'static str, ctx: &mut Context<Self>) {
        match write {
            Persisting::Done(Ok(())) => {}
            Persisting::Done(Err(e)) => tracing::warn!(account = %self.id, error = %e, "{what}"),
            Persisting::Pending(w) => {
                let id = self.id.clone();
                ctx.spawn(fut::wrap_future(async move {
                    if let Err(e) = w.await {
                        tracing::warn!(account = %id, error = %e, "{what}");
                    }
                }));
            }
        }
    }

    /// The machine's event for the outcome of a token write.
    fn persisted(&self, token: Token, result: Result<(), crate::ports::StoreError>) -> Event {
        match result {
            Ok(()) => Event::Persisted(token),
            Err(e) => {
                tracing::error!(account = %self.id, error = %e, "could not save the new token; holding it back and retrying");
                Event::PersistFailed
            }
        }
    }

    /// The machine asked for a refresh: first the coordinator says whose it is (a daemon
    /// alone: always this one's, at once).
    fn start_refresh(&mut self, refresh: Secret, ctx: &mut Context<Self>) {
        match self.deps.coordinator.claim(&self.id, &refresh) {
            Soon::Now(claim) => self.claimed(refresh, claim, ctx),
            Soon::Later(claim) => {
                ctx.spawn(claim.into_actor(self).map(move |claim, act, ctx| {
                    act.claimed(refresh, claim, ctx);
                }));
            }
        }
    }

    fn claimed(&mut self, refresh: Secret, claim: Claim, ctx: &mut Context<Self>) {
        match claim {
            Claim::Mine(ticket) => self.write_intent(refresh, ticket, ctx),
            Claim::Peer(token) => {
                tracing::info!(account = %self.id, "a peer daemon refreshed this account first: adopting its token");
                ctx.notify(RefreshDone(Outcome::FromPeer(token)));
            }
            Claim::Elsewhere { until } => {
                tracing::info!(account = %self.id, "a peer daemon holds the refresh lease: waiting for its token");
                ctx.notify(RefreshDone(Outcome::OwnedElsewhere { until }));
            }
            Claim::Unavailable => {
                tracing::warn!(account = %self.id, "the shared store is unreachable: no refresh without its lease; the current token is served while it lasts");
                ctx.notify(RefreshDone(Outcome::Own(Err(Failure::Transient {
                    retry_after: None,
                }))));
            }
        }
    }

    fn write_intent(&mut self, refresh: Secret, ticket: Ticket, ctx: &mut Context<Self>) {
        // The intent first: if the process dies between the authority's answer and the write,
        // the next start knows to check this grant at once.
        match self.deps.store.persist_refresh_intent(&self.id, &refresh) {
            Persisting::Done(result) => self.intent_written(refresh, ticket, result, ctx),
            Persisting::Pending(write) => {
                ctx.spawn(write.into_actor(self).map(move |result, act, ctx| {
                    act.intent_written(refresh, ticket, result, ctx);
                }));
            }
        }
    }

    /// Sends the refresh call once its intent is durable, then offers its answer to the
    /// coordinator; a refused intent is a transient failure (nothing was sent, so nothing can
    /// be lost).
    fn intent_written(
        &mut self,
        refresh: Secret,
        ticket: Ticket,
        result: Result<(), crate::ports::StoreError>,
        ctx: &mut Context<Self>,
    ) {
        let coordinator = self.deps.coordinator.clone();
        let id = self.id.clone();
        if let Err(e) = result {
            tracing::error!(account = %self.id, error = %e, "could not write the refresh intent; not refreshing until the store works");
            let release = coordinator.release(&id, ticket, false);
            ctx.spawn(
                fut::wrap_future(release.get()).map(|_, _act, ctx: &mut Context<Self>| {
                    ctx.notify(RefreshDone(Outcome::Own(Err(Failure::Transient {
                        retry_after: None,
                    }))));
                }),
            );
            return;
        }
        self.refresh_calls += 1;
        let call = self.deps.refresher.refresh(&self.id, &refresh);
        let outcome = async move {
            match call.await {
                Ok(token) => match coordinator.commit(&id, ticket, &token).get().await {
                    Commit::Kept => Outcome::Own(Ok(token)),
                    Commit::Fenced(newer) => {
                        tracing::error!(account = %id, "this daemon's refresh lease lapsed and a peer wrote a newer token: adopting the peer's");
                        Outcome::FromPeer(newer)
                    }
                },
                Err(failure) => {
                    let fatal = failure == Failure::Fatal;
                    match coordinator.release(&id, ticket, fatal).get().await {
                        Some(newer) => Outcome::FromPeer(newer),
                        None => Outcome::Own(Err(failure)),
                    }
                }
            }
        };
        ctx.spawn(outcome.into_actor(self).map(|outcome, _act, ctx| {
            ctx.notify(RefreshDone(outcome));
        }));
    }

    fn publish(&mut self) {
        self.published_util = self.quota.five_hour.utilization;
        self.published_lease = self.lease_key();
        self.supervisor.do_send(HealthChanged {
            account: self.id.clone(),
            health: self.machine.health(),
            quota: self.quota.clone(),
            lease: match self.lease_now() {
                Some(Ok(lease)) => Some(lease),
                _ => None,
            },
        });
    }

    /// What decides whether a published lease still holds: the token's generation and whether
    /// the machine grants it now (not dead, nothing unsaved, a token held).
    fn lease_key(&self) -> (u64, bool) {
        let grants = matches!(self.lease_now(), Some(Ok(_)));
        (self.machine.generation(), grants)
    }

    /// The machine's answer to a lease request now; `None`: wait for the next step.
    fn lease_now(&self) -> Option<Result<Lease, LeaseError>> {
        match self.machine.lease(self.deps.clock.now()) {
            LeaseAnswer::Grant { access, generation } => Some(Ok(Lease { access, generation })),
            LeaseAnswer::Wait => None,
            LeaseAnswer::Dead => Some(Err(LeaseError::Dead)),
            LeaseAnswer::Unavailable => Some(Err(LeaseError::Unavailable)),
        }
    }

    /// The answer for a waiter that accepts generation `min` or newer; `None`: keep waiting.
    fn answer_for(&self, min: u64) -> Option<Result<Lease, LeaseError>> {
        match self.lease_now()? {
            Ok(lease) if lease.generation < min => {
                // The token this waiter was refused with: wait while a new one is on its way.
                (self.machine.phase() != Phase::Refreshing).then_some(Err(LeaseError::Unavailable))
            }
            answer => Some(answer),
        }
    }

    /// Whether nothing is outstanding: no refresh call out, no token waiting to be written.
    fn settled(&self) -> bool {
        self.machine.phase() != Phase::Refreshing && !self.machine.stale_in_flight()
    }

    fn wake_waiters(&mut self) {
        if self.settled() {
            for w in self.settle_waiters.drain(..) {
                let _ = w.send(());
            }
        }
        let waiters = std::mem::take(&mut self.waiters);
        for (min, w) in waiters {
            match self.answer_for(min) {
                Some(answer) => {
                    let _ = w.send(answer);
                }
                None => self.waiters.push((min, w)),
            }
        }
    }

    fn wait(&mut self, min_generation: u64) -> ResponseFuture<Result<Lease, LeaseError>> {
        let (tx, rx) = oneshot::channel();
        self.waiters.push((min_generation, tx));
        Box::pin(async move { rx.await.unwrap_or(Err(LeaseError::Stopped)) })
    }
}

impl Actor for AccountActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        match self.initial.take() {
            // Loaded tokens come from the store: they are already durable.
            Some(Initial::Token(token)) => self.apply(Event::Loaded(token), ctx),
            Some(Initial::InDoubt(token)) => {
                tracing::warn!(account = %self.id, "a refresh was sent before the last stop and its answer was never written: checking the grant now");
                self.apply(Event::LoadedInDoubt(token), ctx)
            }
            Some(Initial::Dead) => self.apply(Event::LoadedDead, ctx),
            None => {}
        }
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        for (_, w) in self.waiters.drain(..) {
            let _ = w.send(Err(LeaseError::Stopped));
        }
    }
}

/// How a refresh the machine asked for came out.
enum Outcome {
    /// This daemon's call, answered.
    Own(Result<Token, Failure>),
    /// A peer's newer token instead (it refreshed first).
    FromPeer(Token),
    /// A peer holds the refresh lease; nothing was sent.
    OwnedElsewhere { until: crate::clock::Timestamp },
}

#[derive(Message)]
#[rtype(result = "()")]
struct RefreshDone(Outcome);

impl Handler<RefreshDone> for AccountActor {
    type Result = ();

    fn handle(&mut self, msg: RefreshDone, ctx: &mut Context<Self>) {
        let event = match msg.0 {
            Outcome::Own(Ok(token)) => Event::RefreshSucceeded(token),
            Outcome::Own(Err(failure)) => {
                tracing::warn!(account = %self.id, ?failure, "token refresh failed");
                Event::RefreshFailed(failure)
            }
            Outcome::FromPeer(token) => Event::TokenFromPeer(token),
            Outcome::OwnedElsewhere { until } => Event::RefreshOwnedElsewhere { until },
        };
        self.apply(event, ctx);
    }
}

/// Several daemons: a peer wrote a newer token for this account to the shared store. Adopted
/// unless a refresh of this daemon's is out or a token is being written (that refresh's
/// commit, or the next claim, meets the peer's token in the store instead). A dead account
/// takes it as a login: the grant a peer holds is alive (this daemon may have been refused a
/// refresh token that a stalled peer had already rotated), and only a new grant leaves Dead.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PeerToken(pub Token);

impl Handler<PeerToken> for AccountActor {
    type Result = ();

    fn handle(&mut self, msg: PeerToken, ctx: &mut Context<Self>) {
        // The machine's to decide (`Event::PeerNews`: no news when it holds the token already,
        // adopted, ignored while a refresh is out, a login when dead).
        let was_dead = self.machine.phase() == Phase::Dead;
        self.apply(Event::PeerNews(msg.0), ctx);
        if was_dead && self.machine.phase() != Phase::Dead {
            tracing::info!(account = %self.id, "a peer daemon holds a newer token for this dead account: taken as a new login");
        }
    }
}

impl Handler<GetLease> for AccountActor {
    type Result = ResponseFuture<Result<Lease, LeaseError>>;

    fn handle(&mut self, _msg: GetLease, _ctx: &mut Context<Self>) -> Self::Result {
        match self.lease_now() {
            Some(answer) => Box::pin(async move { answer }),
            None => self.wait(0),
        }
    }
}

impl Handler<Unauthorized> for AccountActor {
    type Result = ResponseFuture<Result<Lease, LeaseError>>;

    fn handle(&mut self, msg: Unauthorized, ctx: &mut Context<Self>) -> Self::Result {
        self.apply(
            Event::UpstreamUnauthorized {
                generation: msg.generation,
            },
            ctx,
        );
        let min = msg.generation + 1;
        match self.answer_for(min) {
            Some(answer) => Box::pin(async move { answer }),
            None => self.wait(min),
        }
    }
}
