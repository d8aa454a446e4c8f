//! The account's control messages: the supervisor's and the daemon's (a refused credential, a
//! demand for a token, ticks, logins and logouts, stop, settle) and the state for views and
//! tests. Each feeds the lifecycle machine an event or reads it; nothing here decides.

use actix::prelude::*;
use tokio::sync::oneshot;

use super::AccountActor;
use crate::lifecycle::{self, Event, Phase};
use crate::quota::Quota;
use crate::token::Token;

/// The Messages API refused the credential of `generation` even right after a refresh: the
/// account is broken, not expired. Benches it with a backoff instead of refreshing again.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CredentialRefused {
    pub generation: u64,
}

impl Handler<CredentialRefused> for AccountActor {
    type Result = ();

    fn handle(&mut self, msg: CredentialRefused, ctx: &mut Context<Self>) {
        tracing::warn!(account = %self.id, "the API refuses this account's credential even after a refresh: benched");
        self.apply(
            Event::CredentialRefused {
                generation: msg.generation,
            },
            ctx,
        );
    }
}

/// A request wants this account and it has no usable token: the machine may bring its pending
/// refresh retry forward. Answers whether a refresh is on its way now.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Demand;

impl Handler<Demand> for AccountActor {
    type Result = bool;

    fn handle(&mut self, _msg: Demand, ctx: &mut Context<Self>) -> bool {
        self.apply(Event::Demand, ctx);
        self.machine.phase() == Phase::Refreshing
    }
}

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

/// Answers once the account has nothing outstanding: no refresh call out and no new token
/// waiting to be written. A stopping daemon waits for this (bounded), because a refresh
/// answered but not written is a grant lost.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Settle;

impl Handler<Settle> for AccountActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _msg: Settle, _ctx: &mut Context<Self>) -> Self::Result {
        if self.settled() {
            return Box::pin(async {});
        }
        let (tx, rx) = oneshot::channel();
        self.settle_waiters.push(tx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

/// Writes the account's quota down as it stands, utilization included (which is otherwise
/// written at most once a minute): a clean stop loses no figure. Answers once it is written.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SaveQuota;

impl Handler<SaveQuota> for AccountActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _msg: SaveQuota, _ctx: &mut Context<Self>) -> Self::Result {
        let write = self.deps.store.persist_quota(&self.id, &self.quota, false);
        self.quota_saved_at = Some(self.deps.clock.now());
        let id = self.id.clone();
        Box::pin(async move {
            if let Err(e) = write.await {
                tracing::warn!(account = %id, error = %e, "could not save quota state");
            }
        })
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
            machine: self.machine.clone(),
            quota: self.quota.clone(),
            generation: self.machine.generation(),
            refresh_calls: self.refresh_calls,
        })
    }
}
