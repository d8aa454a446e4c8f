//! The refresh write window: from the moment the authority's answer to a refresh reaches the
//! daemon to the moment the new token is durable. Refresh tokens rotate, so a process killed
//! inside this window loses the account (the refresh intent then shows the loss at the next
//! start). Measured on the real account actor and the real `SledStore` in a temporary folder,
//! with an authority on a thread of its own that answers every call at once and stamps the
//! moment (the window, not the network, is what is measured).
//!
//! Two cases, in one run: one account refreshing alone, and 16 accounts refreshing at the same
//! moment. The figure ends when the store's writer answers that the token is durable (the sled
//! flush; the mirror file is written after), as the actor sees it.
//!
//! `cargo bench --bench refresh_window`. Prints p50/p99/max in milliseconds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use ccs::config::Paths;
use ccs::store::SledStore;
use ccs_actors::account::{AccountActor, Deps, GetState, HealthChanged, Initial, Unauthorized};
use ccs_actors::lifecycle::{Failure, Policy};
use ccs_actors::ports::{BoxFuture, Persisting, Refresher, Store, StoreError};
use ccs_actors::quota::Quota;
use ccs_actors::routing::Binding;
use ccs_actors::{Clock, Secret, SharedClock, SystemClock, Token};

/// When each account's refresh was answered.
type Answered = Arc<Mutex<HashMap<String, Instant>>>;

/// A call waiting for the "network" to deliver its answer.
type Pending = Arc<Mutex<Vec<(String, tokio::sync::oneshot::Sender<Token>)>>>;

/// The authority answers on its own thread, as a real one does: the moment it answers (and
/// rotates the grant) is stamped there, whatever the actors' thread is busy with.
struct NetworkRefresher {
    pending: Pending,
}

impl Refresher for NetworkRefresher {
    fn refresh(&self, account: &str, _r: &Secret) -> BoxFuture<Result<Token, Failure>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((account.to_string(), tx));
        Box::pin(async move { rx.await.map_err(|_| Failure::Unknown) })
    }
}

/// Answers every pending call as soon as it is seen, stamping the answer time.
fn network(pending: Pending, answered: Answered, stop: Arc<std::sync::atomic::AtomicBool>) {
    let mut n = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let calls: Vec<_> = std::mem::take(&mut *pending.lock().unwrap_or_else(|p| p.into_inner()));
        for (account, tx) in calls {
            n += 1;
            let token = Token {
                access: Secret::new(format!("sk-ant-oat01-bench-{n}")),
                refresh: Secret::new(format!("sk-ant-ort01-bench-{n}")),
                expires_at: SystemClock.now().plus(Duration::from_secs(8 * 3600)),
            };
            answered
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(account, Instant::now());
            let _ = tx.send(token);
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// The real store, timing each token write against its answer.
struct TimedStore {
    inner: Arc<SledStore>,
    answered: Answered,
    windows: Arc<Mutex<Vec<Duration>>>,
}

impl TimedStore {
    /// Records the window of `account`'s answered refresh, ending now.
    fn durable(answered: &Answered, windows: &Arc<Mutex<Vec<Duration>>>, account: &str) {
        let done = Instant::now();
        if let Some(at) = answered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(account)
        {
            windows
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(done - at);
        }
    }
}

impl Store for TimedStore {
    /// The store's own writer, timed when it answers.
    fn persist_token(&self, account: &str, token: &Token) -> Persisting {
        match self.inner.persist_token(account, token) {
            Persisting::Done(r) => {
                TimedStore::durable(&self.answered, &self.windows, account);
                Persisting::Done(r)
            }
            Persisting::Pending(write) => {
                let (answered, windows) = (self.answered.clone(), self.windows.clone());
                let account = account.to_string();
                Persisting::Pending(Box::pin(async move {
                    let r = write.await;
                    TimedStore::durable(&answered, &windows, &account);
                    r
                }))
            }
        }
    }
    fn persist_refresh_intent(&self, account: &str, r: &Secret) -> Persisting {
        self.inner.persist_refresh_intent(account, r)
    }
    fn persist_dead(&self, account: &str) -> Persisting {
        self.inner.persist_dead(account)
    }
    fn persist_quota(&self, account: &str, q: &Quota, durable: bool) -> Persisting {
        self.inner.persist_quota(account, q, durable)
    }
    fn save_binding(&self, s: &str, b: &Binding) -> Result<(), StoreError> {
        self.inner.save_binding(s, b)
    }
    fn remove_bindings(&self, s: &[String]) -> Result<(), StoreError> {
        self.inner.remove_bindings(s)
    }
}

struct Sink;
impl Actor for Sink {
    type Context = Context<Self>;
}
impl Handler<HealthChanged> for Sink {
    type Result = ();
    fn handle(&mut self, _m: HealthChanged, _c: &mut Context<Self>) {}
}

/// `rounds` rounds of every one of `accounts` accounts refreshing at once; the windows seen.
fn measure(accounts: usize, rounds: usize) -> Vec<Duration> {
    let dir = tempfile::tempdir().expect("temp dir");
    let paths = Paths::at(dir.path());
    let clock: SharedClock = Arc::new(SystemClock);
    let store = Arc::new(SledStore::open(&paths, clock.clone()).expect("store"));
    let answered: Answered = Arc::default();
    let windows: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let emails: Vec<String> = (0..accounts)
        .map(|i| format!("a{i}@bench.example"))
        .collect();
    let first = Token {
        access: Secret::new("sk-ant-oat01-first"),
        refresh: Secret::new("sk-ant-ort01-first"),
        expires_at: clock.now().plus(Duration::from_secs(8 * 3600)),
    };
    for e in &emails {
        let a = store.new_account(e).expect("account");
        store.put_account(&a).expect("put");
        store.persist_token(e, &first).wait().expect("token");
    }
    let pending: Pending = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let net = {
        let (p, a, s) = (pending.clone(), answered.clone(), stop.clone());
        std::thread::spawn(move || network(p, a, s))
    };
    let deps = Deps {
        clock,
        refresher: Arc::new(NetworkRefresher { pending }),
        store: Arc::new(TimedStore {
            inner: store,
            answered,
            windows: windows.clone(),
        }),
        coordinator: std::sync::Arc::new(ccs_actors::ports::Solo),
        policy: Policy::default(),
    };
    System::new().block_on(async move {
        let sink = Sink.start().recipient();
        let addrs: Vec<_> = emails
            .iter()
            .map(|e| {
                AccountActor::new(
                    e.as_str().into(),
                    Initial::Token(first.clone()),
                    Quota::default(),
                    deps.clone(),
                    sink.clone(),
                )
                .start()
            })
            .collect();
        for _ in 0..rounds {
            // A 401 on every account's current token at once: one forced refresh each.
            let mut generations = Vec::new();
            for a in &addrs {
                generations.push(a.send(GetState).await.expect("actor").generation);
            }
            let pending: Vec<_> = addrs
                .iter()
                .zip(generations)
                .map(|(a, generation)| a.send(Unauthorized { generation }))
                .collect();
            for p in pending {
                let _ = p.await;
            }
        }
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = net.join();
    let w = windows.lock().unwrap_or_else(|p| p.into_inner()).clone();
    w
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn report(name: &str, mut w: Vec<Duration>) {
    w.sort();
    if w.is_empty() {
        println!("{name:<34} no refresh measured");
        return;
    }
    println!(
        "{name:<34} n={:<5} p50 {:>6.2} ms   p99 {:>6.2} ms   max {:>6.2} ms",
        w.len(),
        percentile(&w, 0.5),
        percentile(&w, 0.99),
        percentile(&w, 1.0)
    );
}

fn main() {
    println!("refresh answer -> token durable (persist_token answered), real SledStore:");
    report("1 account, 300 refreshes", measure(1, 300));
    report("16 accounts at once, 40 rounds", measure(16, 40));
}
