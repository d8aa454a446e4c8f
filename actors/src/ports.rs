//! What the actors need from the outside world: a way to refresh a grant and a place to write
//! things down. The daemon plugs in the OAuth client and the sled store; simulations plug in
//! the simulator's model and an in-memory store.
//!
//! Must not: grow methods the actors do not call.

use std::future::Future;
use std::pin::Pin;

use crate::lifecycle::Failure;
use crate::quota::Quota;
use crate::routing::Binding;
use crate::token::{Secret, Token};

/// A stable, non-secret fingerprint of a refresh token, for the intent record: enough to tell
/// whether the stored token is the one a refresh was sent with, and useless to anyone who
/// reads it.
pub fn fingerprint(refresh: &Secret) -> String {
    // FNV-1a, 64 bits: not for security, only to compare without storing the token twice.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in refresh.expose().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Exchanges a refresh token for a new token. Implementations classify their errors:
/// `Failure::Fatal` only when the authority says the grant is gone.
pub trait Refresher: Send + Sync + 'static {
    fn refresh(&self, account: &str, refresh_token: &Secret) -> BoxFuture<Result<Token, Failure>>;
}

#[derive(Debug, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(pub String);

/// A token write as the actor starts it: done already (a store that writes in place), or on
/// its way (a store with a writer of its own, which answers when the token is durable).
pub enum Persisting {
    Done(Result<(), StoreError>),
    Pending(BoxFuture<Result<(), StoreError>>),
}

/// The writes the actors make. Two durability classes, as sled gives them: a write that must
/// survive a crash (`save_token`, `save_dead`, and `save_quota` with `durable`) returns only
/// once it is on disk; the others are batched and may be lost if the process dies within the
/// store's flush interval (sled: 500 ms). `specs/failover-invariants.md` I6 says what that may
/// cost.
pub trait Store: Send + Sync + 'static {
    /// Writes the account's token durably. Called before the token is used or published.
    fn save_token(&self, account: &str, token: &Token) -> Result<(), StoreError>;
    /// The actor's way to write a new token: without blocking its thread when the store can
    /// help it. The default writes in place.
    fn persist_token(&self, account: &str, token: &Token) -> Persisting {
        Persisting::Done(self.save_token(account, token))
    }
    /// Writes down, durably, that a refresh is about to be sent with `refresh` (a refresh
    /// *intent*). At start, a stored token whose refresh token has an intent is in doubt: its
    /// refresh may have been answered (and the grant rotated) without the answer being written.
    fn save_refresh_intent(&self, account: &str, refresh: &Secret) -> Result<(), StoreError>;
    /// The actor's way to write a refresh intent: without blocking its thread when the store
    /// can help it. The refresh call goes out only once this answers. Default: in place.
    fn persist_refresh_intent(&self, account: &str, refresh: &Secret) -> Persisting {
        Persisting::Done(self.save_refresh_intent(account, refresh))
    }
    /// Writes down, durably, that the account's grant is gone.
    fn save_dead(&self, account: &str) -> Result<(), StoreError>;
    /// The actor's way to write the dead flag: without blocking its thread when the store can
    /// help it (after every token write asked for before it). Default: in place.
    fn persist_dead(&self, account: &str) -> Persisting {
        Persisting::Done(self.save_dead(account))
    }
    /// Writes the quota state; `durable` when its limits (a bench, a reset, a backoff) changed,
    /// batched when only utilization moved.
    fn save_quota(&self, account: &str, quota: &Quota, durable: bool) -> Result<(), StoreError>;
    /// The actor's way to write the quota state: without blocking its thread when the store
    /// can help it; a durable write answers once it is on disk. Default: in place.
    fn persist_quota(&self, account: &str, quota: &Quota, durable: bool) -> Persisting {
        Persisting::Done(self.save_quota(account, quota, durable))
    }
    /// Batched: a binding lost in a crash only makes its session new again.
    fn save_binding(&self, session: &str, binding: &Binding) -> Result<(), StoreError>;
    /// Batched.
    fn remove_bindings(&self, sessions: &[String]) -> Result<(), StoreError>;
}
