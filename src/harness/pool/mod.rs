//! Several daemons over a modelled shared store (specs/shared-store.md): each daemon's real
//! account actors and supervisor, its own store, the simulator's authority shared by all, and
//! the store modelled in `shared.rs` with latency, outages and stalled daemons, on a manual
//! clock. One thread, fixed seeds: the same spec gives the same run.
//!
//! Checks, over all daemons: a refresh is sent only under the sender's live lease (S1), never
//! two at once for one account (I3 across daemons), no refresh token is replayed unless a
//! daemon stalled past its lease between the authority's answer and its commit (the hole the
//! lease cannot close, `specs/shared-store.md`), no daemon's token ever goes back a generation
//! (S2), and at the end every daemon holds the grant's live token and no account is dead.
//! Requests and routing are not modelled here (`harness/` runs them, one daemon).

pub mod shared;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ccs_actors::account::{Deps, GetState, Initial};
use ccs_actors::lifecycle::{Failure, Phase, Policy};
use ccs_actors::ports::{BoxFuture, Refresher, Store};
use ccs_actors::routing;
use ccs_actors::supervisor::{AddAccount, SupervisorHandle};
use ccs_actors::{Clock, ManualClock, Secret, SharedClock, Token};
use rand::{Rng, SeedableRng};

use super::ports::ModelRefresher;
use super::store::{lock, Records, SimStore};
use super::{login_all, T0};
use crate::sim::model::SimModel;
use crate::sim::scenario::Scenario;
use shared::{Model, ModelCoordinator, PoolStore, Shared};

/// One world: how many daemons and accounts, the tokens' life, the network, and its faults.
#[derive(Clone, Debug)]
pub struct PoolSpec {
    pub seed: u64,
    pub daemons: usize,
    pub accounts: usize,
    pub token_ttl_secs: u64,
    pub lease_secs: u64,
    pub latency_ms: u64,
    pub horizon_secs: u64,
    /// (start, seconds) the shared store is down.
    pub outages: Vec<(u64, u64)>,
    /// (daemon, start, seconds) a daemon's calls to the store are held back.
    pub stalls: Vec<(usize, u64, u64)>,
    /// (daemon, from, seconds): the daemon's next commit after `from` is held back that long.
    pub commit_stalls: Vec<(usize, u64, u64)>,
    /// Planted: the store grants every claim (no lease), so the checks must fire.
    pub planted_no_lease: bool,
}

impl PoolSpec {
    /// Whether some commit stall outlasts the lease (the documented hole: a peer may refresh
    /// with the refresh token the stalled daemon's call already rotated, and be refused).
    pub fn stalls_past_lease(&self) -> bool {
        self.commit_stalls
            .iter()
            .any(|(_, _, secs)| *secs >= self.lease_secs)
    }
}

/// A random world from `seed`.
pub fn generate(seed: u64) -> PoolSpec {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let token_ttl_secs = rng.random_range(60..=300);
    let lease_secs = rng.random_range(5..=30);
    let horizon_secs = token_ttl_secs * rng.random_range(3..=5);
    let daemons = rng.random_range(2..=4);
    let outages = (0..rng.random_range(0..=2))
        .map(|_| {
            (
                rng.random_range(0..horizon_secs),
                rng.random_range(1..=token_ttl_secs / 3),
            )
        })
        .collect();
    // (daemon, start, seconds), up to `most` of them; half of them outlast the lease.
    let mut stalls = |most: usize| -> Vec<(usize, u64, u64)> {
        (0..rng.random_range(0..=most))
            .map(|_| {
                (
                    rng.random_range(0..daemons),
                    rng.random_range(0..horizon_secs),
                    rng.random_range(1..=lease_secs * 2),
                )
            })
            .collect()
    };
    let (stalls, commit_stalls) = (stalls(2), stalls(3));
    PoolSpec {
        seed,
        daemons,
        commit_stalls,
        planted_no_lease: false,
        accounts: rng.random_range(1..=3),
        token_ttl_secs,
        lease_secs,
        latency_ms: rng.random_range(0..=1500),
        horizon_secs,
        outages,
        stalls,
    }
}

/// What a run saw.
#[derive(Clone, Debug, Default)]
pub struct PoolReport {
    pub refresh_calls: u64,
    pub replays: usize,
    pub commits: u64,
    pub fenced: u64,
    pub adopted: u64,
    pub violations: Vec<String>,
}

/// A daemon's refresher: the shared one over the authority, after checking that this daemon
/// holds the account's lease now (S1).
struct LeasedRefresher {
    inner: Arc<ModelRefresher>,
    shared: Shared,
    daemon: usize,
    clock: ManualClock,
    calls: Arc<Mutex<u64>>,
}

impl Refresher for LeasedRefresher {
    fn refresh(&self, account: &str, refresh_token: &Secret) -> BoxFuture<Result<Token, Failure>> {
        let now = self.clock.now();
        {
            let mut m = lock(&self.shared);
            let leased = m
                .leases
                .get(account)
                .is_some_and(|(d, _, until)| *d == self.daemon && *until > now);
            if !leased {
                m.violations.push(format!(
                    "S1: daemon {} sent a refresh of {account} at {now:?} without a live lease",
                    self.daemon
                ));
            }
        }
        *lock(&self.calls) += 1;
        self.inner.refresh(account, refresh_token)
    }
}

fn email(i: usize) -> String {
    format!("acct{i}@pool.example")
}

/// Lets every actor of every daemon run until nothing moves.
async fn settle(daemons: &[SupervisorHandle], emails: &[String]) {
    for _ in 0..3 {
        for _ in 0..16 {
            tokio::task::yield_now().await;
        }
        for sup in daemons {
            for e in emails {
                if let Some(addr) = sup.account(&e.as_str().into()).await {
                    let _ = addr.send(GetState).await;
                }
            }
        }
    }
}

/// Every daemon's account state: (daemon, account) → (phase, its token).
async fn states(
    daemons: &[SupervisorHandle],
    emails: &[String],
) -> HashMap<(usize, String), (Phase, Option<Token>)> {
    let mut out = HashMap::new();
    for (d, sup) in daemons.iter().enumerate() {
        for e in emails {
            if let Some(addr) = sup.account(&e.as_str().into()).await {
                if let Ok(s) = addr.send(GetState).await {
                    out.insert(
                        (d, e.clone()),
                        (s.machine.phase(), s.machine.token().cloned()),
                    );
                }
            }
        }
    }
    out
}

pub async fn run(spec: &PoolSpec) -> PoolReport {
    let clock = ManualClock::new(T0);
    let ttl = Duration::from_secs(spec.token_ttl_secs);
    let emails: Vec<String> = (0..spec.accounts).map(email).collect();
    let scenario = Scenario::roomy(&emails, ttl);
    let model = Arc::new(SimModel::new(&scenario, Arc::new(clock.clone()), spec.seed));
    let tokens = login_all(&model, &clock, &emails);
    let shared: Shared = Arc::new(Mutex::new(Model::new(
        Duration::from_millis(spec.latency_ms),
        Duration::from_secs(spec.lease_secs),
    )));
    lock(&shared).no_lease = spec.planted_no_lease;
    for (e, t) in &tokens {
        lock(&shared).tokens.insert(e.clone(), (1, t.clone()));
    }
    let refresher = Arc::new(ModelRefresher::new(model.clone(), clock.clone()));
    let calls = Arc::new(Mutex::new(0u64));
    let mut daemons = Vec::new();
    for d in 0..spec.daemons {
        let store = Arc::new(PoolStore {
            inner: Arc::new(SimStore::with(Records::default())),
            shared: shared.clone(),
            daemon: d,
        });
        for (e, t) in &tokens {
            let _ = store.persist_token(e, t);
        }
        let deps = Deps {
            clock: Arc::new(clock.clone()) as SharedClock,
            refresher: Arc::new(LeasedRefresher {
                inner: refresher.clone(),
                shared: shared.clone(),
                daemon: d,
                clock: clock.clone(),
                calls: calls.clone(),
            }),
            store,
            coordinator: Arc::new(ModelCoordinator {
                shared: shared.clone(),
                daemon: d,
                clock: clock.clone(),
            }),
            policy: Policy::default(),
        };
        let sup = SupervisorHandle::start(deps, routing::Policy::default());
        for (e, t) in &tokens {
            let _ = sup
                .add(AddAccount {
                    id: e.as_str().into(),
                    initial: Initial::Token(t.clone()),
                    quota: Default::default(),
                    paused: false,
                    pools: vec![],
                })
                .await;
        }
        daemons.push(sup);
    }
    lock(&shared).daemons = daemons.clone();
    settle(&daemons, &emails).await;

    let mut report = PoolReport::default();
    // Per (daemon, account): the newest generation (at the authority) its token ever had.
    let mut newest: HashMap<(usize, String), u64> = HashMap::new();
    let end = spec.horizon_secs;
    for t in 0..end + 3 * spec.token_ttl_secs {
        let last = t >= end;
        {
            let mut m = lock(&shared);
            for (start, secs) in &spec.outages {
                if !last && t == *start {
                    m.down = true;
                }
                if m.down && (t == start + secs || (last && t == end)) {
                    m.recover(&clock);
                }
            }
            for (d, start, secs) in &spec.stalls {
                if !last && t == *start {
                    m.stalled
                        .insert(*d, clock.now().plus(Duration::from_secs(*secs)));
                }
            }
            for (d, from, secs) in &spec.commit_stalls {
                if !last && t == *from {
                    m.stall_next_commit.insert(*d, Duration::from_secs(*secs));
                }
            }
            if last && t == end {
                m.stalled.clear();
                m.stall_next_commit.clear();
                if m.down {
                    m.recover(&clock);
                }
            }
        }
        clock.advance(Duration::from_secs(1));
        settle(&daemons, &emails).await;
        if t % 10 == 0 || last {
            for ((d, e), (_, token)) in states(&daemons, &emails).await {
                let gen = token
                    .and_then(|t| model.generation_of(t.refresh.expose()))
                    .unwrap_or(0);
                let seen = newest.entry((d, e.clone())).or_default();
                if gen < *seen {
                    lock(&shared).violations.push(format!(
                        "S2: daemon {d}'s token of {e} went back from generation {seen} to {gen} at {:?}",
                        clock.now()
                    ));
                }
                *seen = (*seen).max(gen);
            }
        }
    }
    // The end: once the refreshes under way have landed (at most a lease and a few round
    // trips), every daemon holds the grant's live token, and no account is dead anywhere.
    let live = |token: &Option<Token>| {
        token
            .as_ref()
            .is_some_and(|t| model.refresh_token_is_current(t.refresh.expose()))
    };
    for _ in 0..spec.lease_secs + 60 {
        let quiet = states(&daemons, &emails)
            .await
            .values()
            .all(|(phase, token)| *phase == Phase::Fresh && live(token));
        if quiet {
            break;
        }
        clock.advance(Duration::from_secs(1));
        settle(&daemons, &emails).await;
    }
    let mut violations = std::mem::take(&mut lock(&shared).violations);
    for ((d, e), (phase, token)) in states(&daemons, &emails).await {
        let live = live(&token);
        if phase == Phase::Dead || !live || !model.grant_alive(&e) {
            violations.push(format!(
                "end: daemon {d} holds {e} {} ({}), grant {}",
                phase.as_str(),
                if live {
                    "the live token"
                } else {
                    "not the live token"
                },
                if model.grant_alive(&e) {
                    "alive"
                } else {
                    "gone"
                }
            ));
        }
    }
    violations.extend(
        lock(&refresher.violations)
            .drain(..)
            .map(|v| format!("{v} (across daemons)")),
    );
    let replays = model.replays();
    if !replays.is_empty() && !spec.stalls_past_lease() {
        violations.push(format!(
            "S1: {} refresh tokens replayed with no daemon stalled past its lease",
            replays.len()
        ));
    }
    let m = lock(&shared);
    report.refresh_calls = *lock(&calls);
    report.replays = replays.len();
    report.commits = m.commits;
    report.fenced = m.fenced;
    report.adopted = m.adopted;
    report.violations = violations;
    report
}

/// `run` on an actix system of its own.
pub fn run_blocking(spec: &PoolSpec) -> PoolReport {
    let spec = spec.clone();
    actix::System::new().block_on(async move { run(&spec).await })
}
