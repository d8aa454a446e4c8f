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

/// Why the store could not do what an actor asked. The causes are kept (shared, so one flush's
/// outcome can answer every write it carried); the actors only log them and carry on.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed (the actors know no database: its error is kept as it came).
    #[error("store: the database: {0}")]
    Database(#[source] Cause),
    /// A record read back does not decode (damaged, or of a version this build does not read).
    #[error("store: {what} cannot be read: {source}")]
    Damaged { what: String, source: Cause },
    /// A record does not encode.
    #[error("store: {what} cannot be written: {source}")]
    Encode { what: String, source: Cause },
    /// A file of the store (a token file, accounts.json) could not be written or removed.
    #[error("store: {}: {source}", path.display())]
    File {
        path: std::path::PathBuf,
        source: std::sync::Arc<std::io::Error>,
    },
    /// The writer task is gone (the daemon is stopping).
    #[error("store: the store writer stopped")]
    WriterStopped,
}

/// The error beneath a `StoreError`.
pub type Cause = std::sync::Arc<dyn std::error::Error + Send + Sync>;

impl StoreError {
    /// The database's own error.
    pub fn database(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
        StoreError::Database(e.into().into())
    }

    /// `what` read back does not decode, for `why`.
    pub fn damaged(
        what: impl Into<String>,
        why: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> StoreError {
        StoreError::Damaged {
            what: what.into(),
            source: why.into().into(),
        }
    }

    /// `what` does not encode, for `why`.
    pub fn encode(
        what: impl Into<String>,
        why: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> StoreError {
        StoreError::Encode {
            what: what.into(),
            source: why.into().into(),
        }
    }

    /// A file of the store at `path` failed with `e`.
    pub fn file(path: &std::path::Path, e: std::io::Error) -> StoreError {
        StoreError::File {
            path: path.to_path_buf(),
            source: std::sync::Arc::new(e),
        }
    }
}

/// A write as the store starts it: done already (a store that writes in place), or on its way
/// (a store with a writer of its own, which answers once the write is durable). The actors
/// await it without blocking their thread (`.await`); code off the actors' thread may `wait`.
#[must_use = "a write's outcome says whether it is durable"]
pub enum Persisting {
    Done(Result<(), StoreError>),
    Pending(BoxFuture<Result<(), StoreError>>),
}

thread_local! {
    static ACTORS_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the calling thread as the one the actors run on: from then on, no write may be
/// waited for there (every actor would stall for the disk).
pub fn mark_actors_thread() {
    ACTORS_THREAD.with(|t| t.set(true));
}

/// Whether the calling thread is the actors' (`mark_actors_thread`).
pub fn on_actors_thread() -> bool {
    ACTORS_THREAD.with(std::cell::Cell::get)
}

/// Says loudly that a thread is about to wait on the disk where it must not: a debug build
/// panics (so a test that reaches such a wait fails), a release build logs it.
pub fn forbid_waiting_on_actors_thread() {
    if on_actors_thread() {
        debug_assert!(false, "a wait on the store on the actors' thread");
        tracing::error!("a wait on the store on the actors' thread: every actor stalls for it");
    }
}

impl Persisting {
    /// Blocks the calling thread until the write is durable (or failed). Never on the actors'
    /// thread: they `.await` it.
    pub fn wait(self) -> Result<(), StoreError> {
        use std::task::{Context, Poll, Wake, Waker};
        struct Unpark(std::thread::Thread);
        impl Wake for Unpark {
            fn wake(self: std::sync::Arc<Self>) {
                self.0.unpark();
            }
        }
        let mut pending = match self {
            Persisting::Done(result) => return result,
            Persisting::Pending(pending) => pending,
        };
        forbid_waiting_on_actors_thread();
        let waker = Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        loop {
            if let Poll::Ready(result) = pending.as_mut().poll(&mut cx) {
                return result;
            }
            std::thread::park();
        }
    }
}

impl std::future::IntoFuture for Persisting {
    type Output = Result<(), StoreError>;
    type IntoFuture = BoxFuture<Result<(), StoreError>>;

    fn into_future(self) -> Self::IntoFuture {
        match self {
            Persisting::Done(result) => Box::pin(std::future::ready(result)),
            Persisting::Pending(pending) => pending,
        }
    }
}

/// The writes the actors make, one method each. Two durability classes, as sled gives them: a
/// write that must survive a crash (`persist_token`, `persist_refresh_intent`, `persist_dead`,
/// and `persist_quota` with `durable`) answers only once it is on disk; the others are batched
/// and may be lost if the process dies within the store's flush interval (sled: 500 ms).
/// `specs/failover-invariants.md` I6 says what that may cost.
pub trait Store: Send + Sync + 'static {
    /// Writes the account's token durably. Called before the token is used or published.
    fn persist_token(&self, account: &str, token: &Token) -> Persisting;
    /// Writes down, durably, that a refresh is about to be sent with `refresh` (a refresh
    /// *intent*). At start, a stored token whose refresh token has an intent is in doubt: its
    /// refresh may have been answered (and the grant rotated) without the answer being written.
    /// The refresh call goes out only once this answers.
    fn persist_refresh_intent(&self, account: &str, refresh: &Secret) -> Persisting;
    /// Writes down, durably, that the account's grant is gone (after every token write asked
    /// for before it).
    fn persist_dead(&self, account: &str) -> Persisting;
    /// Writes the quota state; durable when its limits (a bench, a reset, a backoff) changed,
    /// batched (answered at once) when only utilization moved.
    fn persist_quota(&self, account: &str, quota: &Quota, durable: bool) -> Persisting;
    /// Batched: a binding lost in a crash only makes its session new again.
    fn save_binding(&self, session: &str, binding: &Binding) -> Result<(), StoreError>;
    /// Batched.
    fn remove_bindings(&self, sessions: &[String]) -> Result<(), StoreError>;
}

/// A refresh lease's receipt: handed back with the refresh's outcome, so the coordinator can
/// tell its own claim from a later one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    /// The fencing number the lease was taken with (0 for a daemon alone).
    pub fence: u64,
}

/// Who may send the account's next refresh, as the coordinator answers before one is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Send it: this daemon holds the refresh lease.
    Mine(Ticket),
    /// A peer already holds a newer token: adopt it, send nothing.
    Peer(Token),
    /// A peer holds the lease until then: wait for its token, send nothing.
    Elsewhere { until: crate::clock::Timestamp },
    /// The shared store cannot be reached: no lease, so no refresh (a transient failure).
    Unavailable,
}

/// What became of a refresh's answer once it was offered to the shared store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Commit {
    /// The token is the account's newest everywhere it could be written (or the shared store
    /// was unreachable: it is kept here and offered again when the store returns).
    Kept,
    /// A peer wrote a newer token meanwhile (this daemon's lease lapsed): adopt that one.
    Fenced(Token),
}

/// A future, or its value at once (a daemon alone answers at once and adds no hop).
pub enum Soon<T> {
    Now(T),
    Later(BoxFuture<T>),
}

impl<T: Send + 'static> Soon<T> {
    pub async fn get(self) -> T {
        match self {
            Soon::Now(v) => v,
            Soon::Later(f) => f.await,
        }
    }
}

/// Several daemons refreshing one pool: who sends each refresh (one per token generation,
/// over all of them), and where a new token goes so the others learn it. A daemon alone uses
/// `Solo`: every refresh is its own.
pub trait Coordinator: Send + Sync + 'static {
    /// Before a refresh is sent with `refresh` (the machine's current refresh token).
    fn claim(&self, account: &str, refresh: &Secret) -> Soon<Claim>;
    /// The authority answered the claimed refresh with `token`.
    fn commit(&self, account: &str, ticket: Ticket, token: &Token) -> Soon<Commit>;
    /// The claimed refresh failed. `fatal`: the authority refused the grant; a peer's newer
    /// token (a peer refreshed first and the grant moved on) is returned to adopt instead of
    /// declaring the account dead.
    fn release(&self, account: &str, ticket: Ticket, fatal: bool) -> Soon<Option<Token>>;
}

/// The coordinator of a daemon alone: every refresh is its own.
pub struct Solo;

impl Coordinator for Solo {
    fn claim(&self, _account: &str, _refresh: &Secret) -> Soon<Claim> {
        Soon::Now(Claim::Mine(Ticket { fence: 0 }))
    }

    fn commit(&self, _account: &str, _ticket: Ticket, _token: &Token) -> Soon<Commit> {
        Soon::Now(Commit::Kept)
    }

    fn release(&self, _account: &str, _ticket: Ticket, _fatal: bool) -> Soon<Option<Token>> {
        Soon::Now(None)
    }
}

#[cfg(test)]
mod store_error_tests {
    use super::StoreError;
    use std::error::Error;

    #[test]
    fn a_store_error_keeps_its_cause_and_clones_with_it() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "read-only disk");
        let e = StoreError::file(std::path::Path::new("/h/auth/a.json"), io);
        assert_eq!(e.to_string(), "store: /h/auth/a.json: read-only disk");
        let copy = e.clone();
        let cause = copy.source().expect("the cause is kept");
        assert_eq!(cause.to_string(), "read-only disk");
        let db = StoreError::database("disk on fire");
        assert_eq!(db.source().unwrap().to_string(), "disk on fire");
        assert!(StoreError::WriterStopped.source().is_none());
    }
}
