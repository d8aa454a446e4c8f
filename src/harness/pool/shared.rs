//! The shared store as the pool simulation models it: the same semantics as the Redis scripts
//! of `src/shared/refresh.rs` (claim: adopt a newer token, else wait for a live lease, else take
//! it with the next fencing number; commit: write only over the generation the claim saw;
//! release: give the lease back, and after a refusal look for a peer's newer token), with what
//! a network adds: latency on every call, outages (every call fails), and stalled daemons
//! (their calls arrive late, after their lease may have run out). News of a new token reaches
//! the other daemons after the latency, while the store is up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ccs_actors::account::PeerToken;
use ccs_actors::ports::{
    self, Claim, Commit, Coordinator, Persisting, Soon, Store, StoreError, Ticket,
};
use ccs_actors::quota::Quota;
use ccs_actors::routing::Binding;
use ccs_actors::supervisor::SupervisorHandle;
use ccs_actors::{Clock, ManualClock, Secret, Timestamp, Token};

use crate::harness::store::{lock, SimStore};

/// The modelled Redis, and what the checks read of it.
#[derive(Default)]
pub struct Model {
    /// Account → (generation, token).
    pub tokens: HashMap<String, (u64, Token)>,
    fences: HashMap<String, u64>,
    /// Account → (daemon, fence, until).
    pub leases: HashMap<String, (usize, u64, Timestamp)>,
    /// (daemon, account) → the generation of the token that daemon holds.
    held: HashMap<(usize, String), u64>,
    claims: HashMap<(usize, String), (u64, u64)>,
    /// (daemon, account) → a token whose commit could not reach the store, and its claim's
    /// generation.
    pending: HashMap<(usize, String), (Token, u64)>,
    pub down: bool,
    /// Daemon → until when its calls are held back.
    pub stalled: HashMap<usize, Timestamp>,
    /// Daemon → how long its next commit is held back (a daemon paused between the
    /// authority's answer and the write: the case fencing is for).
    pub stall_next_commit: HashMap<usize, Duration>,
    /// Planted: every claim is this daemon's (no lease, no peer check), to show the checks fire.
    pub no_lease: bool,
    pub latency: Duration,
    pub lease: Duration,
    /// Each daemon's supervisor, for the news.
    pub daemons: Vec<SupervisorHandle>,
    pub commits: u64,
    pub fenced: u64,
    pub adopted: u64,
    pub violations: Vec<String>,
}

pub type Shared = Arc<Mutex<Model>>;

impl Model {
    pub fn new(latency: Duration, lease: Duration) -> Model {
        Model {
            latency,
            lease,
            ..Model::default()
        }
    }

    fn tell_others(&self, from: usize, account: &str, token: &Token, clock: &ManualClock) {
        let at = clock.now().plus(self.latency);
        for (d, sup) in self.daemons.iter().enumerate() {
            if d == from {
                continue;
            }
            let (sup, clock, account, token) = (
                sup.clone(),
                clock.clone(),
                account.to_string(),
                token.clone(),
            );
            actix::spawn(async move {
                clock.sleep_until(at).await;
                if let Some(addr) = sup.account(&account.as_str().into()).await {
                    addr.do_send(PeerToken(token));
                }
            });
        }
    }

    /// The store is back: the commits kept meanwhile are offered (over their claim's
    /// generation), and every daemon hears of the newest token.
    pub fn recover(&mut self, clock: &ManualClock) {
        self.down = false;
        let pending: Vec<_> = self.pending.drain().collect();
        for ((_, account), (token, from)) in pending {
            let gen = self.tokens.get(&account).map_or(0, |t| t.0);
            if gen == from {
                self.tokens.insert(account, (gen + 1, token));
                self.commits += 1;
            }
        }
        let newest: Vec<(String, Token)> = self
            .tokens
            .iter()
            .map(|(a, (_, t))| (a.clone(), t.clone()))
            .collect();
        for (account, token) in newest {
            self.tell_others(usize::MAX, &account, &token, clock);
        }
    }
}

/// One daemon's coordinator over the model.
pub struct ModelCoordinator {
    pub shared: Shared,
    pub daemon: usize,
    pub clock: ManualClock,
}

impl ModelCoordinator {
    /// Waits out the latency and any stall of this daemon; `None`: the store is down.
    fn reach(&self) -> impl std::future::Future<Output = bool> + Send + 'static {
        let (shared, clock, d) = (self.shared.clone(), self.clock.clone(), self.daemon);
        async move {
            let latency = lock(&shared).latency;
            clock.sleep_until(clock.now().plus(latency)).await;
            loop {
                let until = lock(&shared).stalled.get(&d).copied();
                match until {
                    Some(t) if t > clock.now() => clock.sleep_until(t).await,
                    _ => break,
                }
            }
            !lock(&shared).down
        }
    }
}

impl Coordinator for ModelCoordinator {
    fn claim(&self, account: &str, _refresh: &Secret) -> Soon<Claim> {
        let (shared, clock, d, a) = (
            self.shared.clone(),
            self.clock.clone(),
            self.daemon,
            account.to_string(),
        );
        let reach = self.reach();
        Soon::Later(Box::pin(async move {
            if !reach.await {
                return Claim::Unavailable;
            }
            let now = clock.now();
            let mut m = lock(&shared);
            if m.no_lease {
                let gen = m.tokens.get(&a).map_or(0, |t| t.0);
                m.claims.insert((d, a), (0, gen));
                return Claim::Mine(Ticket { fence: 0 });
            }
            let gen = m.tokens.get(&a).map_or(0, |t| t.0);
            if gen > m.held.get(&(d, a.clone())).copied().unwrap_or(0) {
                m.adopted += 1;
                return Claim::Peer(m.tokens[&a].1.clone());
            }
            if let Some((holder, _, until)) = m.leases.get(&a).copied() {
                if holder != d && until > now {
                    return Claim::Elsewhere { until };
                }
            }
            let fence = {
                let f = m.fences.entry(a.clone()).or_default();
                *f += 1;
                *f
            };
            let until = now.plus(m.lease);
            m.leases.insert(a.clone(), (d, fence, until));
            m.claims.insert((d, a), (fence, gen));
            Claim::Mine(Ticket { fence })
        }))
    }

    fn commit(&self, account: &str, ticket: Ticket, token: &Token) -> Soon<Commit> {
        let (shared, clock, d, a, token) = (
            self.shared.clone(),
            self.clock.clone(),
            self.daemon,
            account.to_string(),
            token.clone(),
        );
        let reach = self.reach();
        Soon::Later(Box::pin(async move {
            let pause = lock(&shared).stall_next_commit.remove(&d);
            if let Some(p) = pause {
                clock.sleep_until(clock.now().plus(p)).await;
            }
            let up = reach.await;
            let mut m = lock(&shared);
            let Some((fence, from)) = m
                .claims
                .remove(&(d, a.clone()))
                .filter(|c| c.0 == ticket.fence)
            else {
                return Commit::Kept;
            };
            if !up {
                m.pending.insert((d, a), (token, from));
                return Commit::Kept;
            }
            let gen = m.tokens.get(&a).map_or(0, |t| t.0);
            if gen != from {
                m.fenced += 1;
                return Commit::Fenced(m.tokens[&a].1.clone());
            }
            m.tokens.insert(a.clone(), (gen + 1, token.clone()));
            m.commits += 1;
            if m.leases.get(&a).is_some_and(|l| l.0 == d && l.1 == fence) {
                m.leases.remove(&a);
            }
            m.tell_others(d, &a, &token, &clock);
            Commit::Kept
        }))
    }

    fn release(&self, account: &str, ticket: Ticket, fatal: bool) -> Soon<Option<Token>> {
        let (shared, d, a) = (self.shared.clone(), self.daemon, account.to_string());
        let reach = self.reach();
        Soon::Later(Box::pin(async move {
            let up = reach.await;
            let mut m = lock(&shared);
            let (fence, from) = m
                .claims
                .remove(&(d, a.clone()))
                .filter(|c| c.0 == ticket.fence)?;
            if !up {
                return None;
            }
            if m.leases.get(&a).is_some_and(|l| l.0 == d && l.1 == fence) {
                m.leases.remove(&a);
            }
            match m.tokens.get(&a) {
                Some((g, t)) if fatal && *g > from => Some(t.clone()),
                _ => None,
            }
        }))
    }
}

/// A daemon's own store, telling the model which token the daemon now holds (as
/// `SharedStore` does through `Shared::now_holds`).
pub struct PoolStore {
    pub inner: Arc<SimStore>,
    pub shared: Shared,
    pub daemon: usize,
}

impl PoolStore {
    fn holds(&self, account: &str, token: &Token) {
        let mut m = lock(&self.shared);
        let fp = ports::fingerprint(&token.refresh);
        let gen = m
            .tokens
            .get(account)
            .filter(|(_, t)| ports::fingerprint(&t.refresh) == fp)
            .map(|(g, _)| *g);
        if let Some(g) = gen {
            let h = m
                .held
                .entry((self.daemon, account.to_string()))
                .or_default();
            *h = (*h).max(g);
        }
    }
}

impl Store for PoolStore {
    fn persist_token(&self, account: &str, token: &Token) -> Persisting {
        // The in-memory store writes in place: the token is held once it answers.
        let written = self.inner.persist_token(account, token).wait();
        if written.is_ok() {
            self.holds(account, token);
        }
        Persisting::Done(written)
    }
    fn persist_refresh_intent(&self, account: &str, refresh: &Secret) -> Persisting {
        self.inner.persist_refresh_intent(account, refresh)
    }
    fn persist_dead(&self, account: &str) -> Persisting {
        self.inner.persist_dead(account)
    }
    fn persist_quota(&self, account: &str, quota: &Quota, durable: bool) -> Persisting {
        self.inner.persist_quota(account, quota, durable)
    }
    fn save_binding(&self, session: &str, binding: &Binding) -> Result<(), StoreError> {
        self.inner.save_binding(session, binding)
    }
    fn remove_bindings(&self, sessions: &[String]) -> Result<(), StoreError> {
        self.inner.remove_bindings(sessions)
    }
}
