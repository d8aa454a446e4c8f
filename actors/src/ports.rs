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

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Exchanges a refresh token for a new token. Implementations classify their errors:
/// `Failure::Fatal` only when the authority says the grant is gone.
pub trait Refresher: Send + Sync + 'static {
    fn refresh(&self, account: &str, refresh_token: &Secret) -> BoxFuture<Result<Token, Failure>>;
}

#[derive(Debug, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(pub String);

/// Durable writes the actors make. Every method returns only once the write is durable.
pub trait Store: Send + Sync + 'static {
    /// Writes the account's token. Called before the token is used or published.
    fn save_token(&self, account: &str, token: &Token) -> Result<(), StoreError>;
    /// Writes down that the account's grant is gone.
    fn save_dead(&self, account: &str) -> Result<(), StoreError>;
    fn save_quota(&self, account: &str, quota: &Quota) -> Result<(), StoreError>;
    fn save_binding(&self, session: &str, binding: &Binding) -> Result<(), StoreError>;
    fn remove_bindings(&self, sessions: &[String]) -> Result<(), StoreError>;
}
