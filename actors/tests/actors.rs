//! The account actor and the supervisor on the manual clock, with a scripted refresher and an
//! in-memory store that can refuse writes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use ccs_actors::account::StopAccount;
use ccs_actors::account::{
    AccountActor, AccountState, Deps, GetLease, GetState, HealthChanged, Initial, LeaseError,
    Observe, Unauthorized,
};
use ccs_actors::lifecycle::{Failure, Phase, Policy};
use ccs_actors::ports::{BoxFuture, Persisting, Refresher, Store, StoreError};
use ccs_actors::quota::Quota;
use ccs_actors::routing::{self, AccountId, Binding, Decision};
use ccs_actors::supervisor::{AddAccount, HopReason, RouteError, SupervisorHandle, TOUCH_GRAIN};
use ccs_actors::{ManualClock, Secret, SharedClock, Timestamp, Token};
use tokio::sync::Semaphore;

const T0: u64 = 1_750_000_000;

/// Places a request of `session` in the default pool (one attempt).
async fn place(
    sup: &SupervisorHandle,
    session: &str,
) -> Result<ccs_actors::supervisor::Placement, RouteError> {
    sup.request("claude", Some(session), None).place().await
}

fn t(secs: u64) -> Timestamp {
    Timestamp::from_secs(T0 + secs)
}

fn token(n: u64, expires_at: Timestamp) -> Token {
    Token {
        access: Secret::new(format!("sk-ant-oat01-{n}")),
        refresh: Secret::new(format!("sk-ant-ort01-{n}")),
        expires_at,
    }
}

/// A refresher whose calls wait for a permit, then answer from a script (default: success
/// with a one-hour token).
struct ScriptedRefresher {
    clock: ManualClock,
    calls: AtomicU64,
    gate: Arc<Semaphore>,
    script: Mutex<Vec<Result<(), Failure>>>,
    seen_refresh_tokens: Mutex<Vec<String>>,
}

impl ScriptedRefresher {
    fn new(clock: ManualClock, open: bool) -> Arc<Self> {
        Arc::new(ScriptedRefresher {
            clock,
            calls: AtomicU64::new(0),
            gate: Arc::new(Semaphore::new(if open {
                Semaphore::MAX_PERMITS
            } else {
                0
            })),
            script: Mutex::new(Vec::new()),
            seen_refresh_tokens: Mutex::new(Vec::new()),
        })
    }

    fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Refresher for ScriptedRefresher {
    fn refresh(&self, _account: &str, refresh_token: &Secret) -> BoxFuture<Result<Token, Failure>> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        self.seen_refresh_tokens
            .lock()
            .unwrap()
            .push(refresh_token.expose().to_string());
        let outcome = {
            let mut s = self.script.lock().unwrap();
            if s.is_empty() {
                Ok(())
            } else {
                s.remove(0)
            }
        };
        let gate = self.gate.clone();
        let clock = self.clock.clone();
        Box::pin(async move {
            let _permit = gate.acquire().await.expect("gate open");
            use ccs_actors::Clock;
            outcome.map(|()| token(100 + n, clock.now().plus(Duration::from_secs(3600))))
        })
    }
}

struct MemStore {
    tokens: Mutex<HashMap<String, Token>>,
    dead: Mutex<Vec<String>>,
    refuse_tokens: AtomicBool,
    bindings: Mutex<HashMap<String, Binding>>,
    /// Durable quota writes wait for a permit (open by default), as a slow disk would.
    quota_gate: Arc<Semaphore>,
    /// Durable quota writes that reached the disk.
    quota_later: Arc<AtomicU64>,
}

impl Default for MemStore {
    fn default() -> Self {
        MemStore {
            tokens: Mutex::default(),
            dead: Mutex::default(),
            refuse_tokens: AtomicBool::new(false),
            bindings: Mutex::default(),
            quota_gate: Arc::new(Semaphore::new(Semaphore::MAX_PERMITS)),
            quota_later: Arc::default(),
        }
    }
}

impl Store for MemStore {
    fn persist_token(&self, account: &str, token: &Token) -> Persisting {
        if self.refuse_tokens.load(Ordering::SeqCst) {
            return Persisting::Done(Err(StoreError::database("disk on fire")));
        }
        self.tokens
            .lock()
            .unwrap()
            .insert(account.to_string(), token.clone());
        Persisting::Done(Ok(()))
    }
    fn persist_refresh_intent(&self, _account: &str, _refresh: &Secret) -> Persisting {
        Persisting::Done(Ok(()))
    }
    fn persist_dead(&self, account: &str) -> Persisting {
        self.dead.lock().unwrap().push(account.to_string());
        Persisting::Done(Ok(()))
    }
    fn persist_quota(&self, _account: &str, _quota: &Quota, durable: bool) -> Persisting {
        if !durable {
            return Persisting::Done(Ok(()));
        }
        let gate = self.quota_gate.clone();
        let done = self.quota_later.clone();
        Persisting::Pending(Box::pin(async move {
            let _permit = gate.acquire().await.expect("gate open");
            done.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }))
    }
    fn save_binding(&self, session: &str, binding: &Binding) -> Result<(), StoreError> {
        self.bindings
            .lock()
            .unwrap()
            .insert(session.to_string(), binding.clone());
        Ok(())
    }
    fn remove_bindings(&self, sessions: &[String]) -> Result<(), StoreError> {
        let mut b = self.bindings.lock().unwrap();
        for s in sessions {
            b.remove(s);
        }
        Ok(())
    }
}

/// Collects what account actors publish.
#[derive(Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<HealthChanged>>>,
}

impl Actor for Recorder {
    type Context = Context<Self>;
}

impl Handler<HealthChanged> for Recorder {
    type Result = ();
    fn handle(&mut self, msg: HealthChanged, _ctx: &mut Context<Self>) {
        self.seen.lock().unwrap().push(msg);
    }
}

struct Rig {
    clock: ManualClock,
    refresher: Arc<ScriptedRefresher>,
    store: Arc<MemStore>,
    published: Arc<Mutex<Vec<HealthChanged>>>,
    deps: Deps,
}

fn rig(gate_open: bool) -> Rig {
    let clock = ManualClock::new(t(0));
    let refresher = ScriptedRefresher::new(clock.clone(), gate_open);
    let store = Arc::new(MemStore::default());
    let deps = Deps {
        clock: Arc::new(clock.clone()) as SharedClock,
        refresher: refresher.clone(),
        store: store.clone(),
        coordinator: Arc::new(ccs_actors::ports::Solo),
        policy: Policy::default(),
    };
    Rig {
        clock,
        refresher,
        store,
        published: Arc::default(),
        deps,
    }
}

impl Rig {
    fn start_account(&self, initial: Initial) -> Addr<AccountActor> {
        let recorder = Recorder {
            seen: self.published.clone(),
        }
        .start();
        AccountActor::new(
            AccountId::from("alice@example.com"),
            initial,
            Quota::default(),
            self.deps.clone(),
            recorder.recipient(),
        )
        .start()
    }
}

async fn state(addr: &Addr<AccountActor>) -> AccountState {
    addr.send(GetState).await.expect("actor alive")
}

/// Waits (in real time, bounded) until the account's state satisfies `cond`.
async fn until(
    addr: &Addr<AccountActor>,
    what: &str,
    cond: impl Fn(&AccountState) -> bool,
) -> AccountState {
    for _ in 0..500 {
        let s = state(addr).await;
        if cond(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!(
        "timed out waiting for: {what}; last state {:?}",
        state(addr).await
    );
}

/// Runs the single-threaded test runtime until the actor is idle, so that a negative check
/// means something: every task that can run gets many turns, and the actor's answer to a
/// state query, which it gives only after everything queued before it, is the signal. No
/// real-time sleep: nothing here waits on wall-clock time.
async fn settle(addr: &Addr<AccountActor>) {
    for _ in 0..8 {
        for _ in 0..32 {
            tokio::task::yield_now().await;
        }
        let _ = addr.send(GetState).await;
    }
}

#[actix::test]
async fn refresh_starts_at_expiry_minus_lead() {
    let rig = rig(true);
    let addr = rig.start_account(Initial::Token(token(1, t(3600))));
    until(&addr, "fresh", |s| s.machine.phase() == Phase::Fresh).await;

    rig.clock.set(t(3600 - 300 - 1));
    settle(&addr).await;
    assert_eq!(rig.refresher.calls(), 0, "refreshed before expiry - lead");

    rig.clock.advance(Duration::from_secs(1));
    let s = until(&addr, "refreshed once", |s| {
        s.refresh_calls == 1 && s.machine.phase() == Phase::Fresh
    })
    .await;
    assert_eq!(s.machine.expires_at(), t(3600 - 300 + 3600));
    assert_eq!(
        rig.refresher.seen_refresh_tokens.lock().unwrap()[0],
        "sk-ant-ort01-1"
    );
    let saved = rig.store.tokens.lock().unwrap()["alice@example.com"].clone();
    assert_eq!(
        saved.expires_at,
        s.machine.expires_at(),
        "the new token was persisted"
    );
    let lease = addr.send(GetLease).await.unwrap().unwrap();
    assert_eq!(lease.access, saved.access);
}

#[actix::test]
async fn a_thousand_leases_during_a_refresh_make_one_refresher_call() {
    let rig = rig(false);
    let addr = rig.start_account(Initial::Token(token(1, t(600))));
    until(&addr, "fresh", |s| s.machine.phase() == Phase::Fresh).await;
    // Past the lead and past expiry: the refresh is out (held at the gate), the token lapsed.
    rig.clock.set(t(700));
    until(&addr, "refreshing", |s| {
        s.machine.phase() == Phase::Refreshing
    })
    .await;

    let leases: Vec<_> = (0..1000).map(|_| addr.send(GetLease)).collect();
    let unauthorized: Vec<_> = (0..50)
        .map(|_| addr.send(Unauthorized { generation: 1 }))
        .collect();
    settle(&addr).await;
    assert_eq!(rig.refresher.calls(), 1);

    rig.refresher.gate.add_permits(10_000);
    let results = futures_join(leases).await;
    let fresh = rig.store.tokens.lock().unwrap()["alice@example.com"]
        .access
        .clone();
    assert_eq!(results.len(), 1000);
    for r in results {
        assert_eq!(r.expect("mailbox").expect("lease").access, fresh);
    }
    for r in futures_join(unauthorized).await {
        assert_eq!(r.expect("mailbox").expect("lease").access, fresh);
    }
    assert_eq!(
        rig.refresher.calls(),
        1,
        "exactly one call to the refresher"
    );
}

async fn futures_join<F: std::future::Future>(fs: Vec<F>) -> Vec<F::Output> {
    let mut out = Vec::with_capacity(fs.len());
    for f in fs {
        out.push(f.await);
    }
    out
}

#[actix::test]
async fn an_unsaved_token_is_never_published_or_leased() {
    let rig = rig(true);
    let addr = rig.start_account(Initial::Token(token(1, t(600))));
    until(&addr, "fresh", |s| s.machine.phase() == Phase::Fresh).await;
    rig.store.refuse_tokens.store(true, Ordering::SeqCst);

    rig.clock.set(t(700)); // lapsed: the refresh runs, returns, and the store refuses the token
    for _ in 0..200 {
        if rig.refresher.calls() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    settle(&addr).await;
    let waiting = addr.send(GetLease);
    settle(&addr).await;

    // The crash: the actor goes away while the new token is only in memory.
    addr.do_send(StopAccount);
    let answer = waiting.await.expect("mailbox");
    assert_eq!(
        answer,
        Err(LeaseError::Stopped),
        "leased an unsaved token: {answer:?}"
    );
    assert!(rig.store.tokens.lock().unwrap().is_empty());
    let published = rig.published.lock().unwrap();
    assert!(
        published.iter().all(|h| h.health.expires_at <= t(600)),
        "published the unsaved token's expiry: {:?}",
        published.last()
    );
}

#[actix::test]
async fn a_held_token_is_published_once_the_store_accepts_it() {
    let rig = rig(true);
    let addr = rig.start_account(Initial::Token(token(1, t(600))));
    until(&addr, "fresh", |s| s.machine.phase() == Phase::Fresh).await;
    rig.store.refuse_tokens.store(true, Ordering::SeqCst);
    rig.clock.set(t(700));
    for _ in 0..200 {
        if rig.refresher.calls() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    settle(&addr).await;
    let waiting = addr.send(GetLease);
    rig.store.refuse_tokens.store(false, Ordering::SeqCst);
    rig.clock.advance(Duration::from_secs(2)); // the held write is retried after 1 s
    let lease = waiting
        .await
        .expect("mailbox")
        .expect("lease after the write");
    let saved = rig.store.tokens.lock().unwrap()["alice@example.com"].clone();
    assert_eq!(lease.access, saved.access);
    assert_eq!(
        rig.refresher.calls(),
        1,
        "the token was kept, not refreshed again"
    );
}

#[actix::test]
async fn transient_failures_retry_with_backoff_and_fatal_gives_dead() {
    let rig = rig(true);
    rig.refresher.script.lock().unwrap().extend([
        Err(Failure::Transient { retry_after: None }),
        Err(Failure::Transient { retry_after: None }),
        Err(Failure::Fatal),
    ]);
    let addr = rig.start_account(Initial::Token(token(1, t(3600))));
    until(&addr, "fresh", |s| s.machine.phase() == Phase::Fresh).await;

    rig.clock.set(t(3300)); // lead reached
    let s = until(&addr, "first failure", |s| {
        s.machine.phase() == Phase::Expiring && s.machine.failures() == 1
    })
    .await;
    assert_eq!(
        s.machine.retry_at(),
        Some(t(3310)),
        "first retry after 10 s"
    );

    rig.clock.set(t(3310));
    let s = until(&addr, "second failure", |s| {
        s.machine.failures() == 2 && s.machine.phase() == Phase::Expiring
    })
    .await;
    assert_eq!(
        s.machine.retry_at(),
        Some(t(3330)),
        "second retry after 20 s"
    );
    // Still usable meanwhile: the old token has not lapsed.
    assert!(addr.send(GetLease).await.unwrap().is_ok());

    rig.clock.set(t(3330));
    until(&addr, "dead", |s| s.machine.phase() == Phase::Dead).await;
    assert_eq!(rig.refresher.calls(), 3);
    assert_eq!(addr.send(GetLease).await.unwrap(), Err(LeaseError::Dead));
    assert_eq!(
        *rig.store.dead.lock().unwrap(),
        vec!["alice@example.com".to_string()]
    );
    let last = rig
        .published
        .lock()
        .unwrap()
        .last()
        .cloned()
        .expect("published");
    assert_eq!(last.health.phase, Phase::Dead);
}

#[actix::test]
async fn unauthorized_forces_one_refresh_then_answers_with_the_new_token() {
    let rig = rig(true);
    let addr = rig.start_account(Initial::Token(token(1, t(3600))));
    until(&addr, "fresh", |s| s.machine.phase() == Phase::Fresh).await;
    let old = addr.send(GetLease).await.unwrap().unwrap();
    let new = addr
        .send(Unauthorized {
            generation: old.generation,
        })
        .await
        .unwrap()
        .unwrap();
    assert_ne!(new.access, old.access);
    assert_eq!(rig.refresher.calls(), 1);
    // A late 401 for the old token does not refresh again.
    let again = addr
        .send(Unauthorized {
            generation: old.generation,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again, new);
    assert_eq!(rig.refresher.calls(), 1);
}

fn rejected_5h(reset: Timestamp) -> Vec<(String, String)> {
    vec![
        (
            "anthropic-ratelimit-unified-status".into(),
            "rejected".into(),
        ),
        (
            "anthropic-ratelimit-unified-5h-status".into(),
            "rejected".into(),
        ),
        (
            "anthropic-ratelimit-unified-5h-reset".into(),
            reset.as_secs().to_string(),
        ),
    ]
}

/// A supervisor with accounts a@x and b@x (pool order a, b), tokens until `expires_at`, once
/// both have published their loaded health.
async fn two_fresh_accounts(rig: &Rig, expires_at: Timestamp) -> SupervisorHandle {
    let sup = SupervisorHandle::start(rig.deps.clone(), routing::Policy::default());
    for (i, who) in ["a@x", "b@x"].into_iter().enumerate() {
        sup.add(AddAccount {
            id: AccountId::from(who),
            initial: Initial::Token(token(i as u64, expires_at)),
            quota: Quota::default(),
            paused: false,
            pools: vec![],
        })
        .await
        .unwrap();
    }
    view_until(&sup, "both accounts fresh", |v| {
        v.accounts.iter().all(|a| a.health.phase == Phase::Fresh)
    })
    .await;
    sup
}

#[actix::test]
async fn supervisor_fills_first_moves_a_limited_session_and_reports_all_limited() {
    let rig = rig(true);
    let sup = two_fresh_accounts(&rig, t(36_000)).await;

    let p = place(&sup, "s1").await.unwrap();
    assert_eq!(&*p.account, "a@x");
    assert_eq!(p.decision, Decision::Bound(AccountId::from("a@x")));

    // Account a hits its 5-hour limit.
    let verdict = p.observe(429, rejected_5h(t(1800))).await;
    assert!(matches!(
        verdict,
        ccs_actors::quota::Verdict::Limited { .. }
    ));
    let mut moved = None;
    for _ in 0..200 {
        let p = place(&sup, "s1").await.unwrap();
        if &*p.account == "b@x" {
            moved = Some(p);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let moved = moved.expect("session moved to b");
    assert_eq!(
        moved.decision,
        Decision::Moved {
            from: AccountId::from("a@x"),
            to: AccountId::from("b@x")
        }
    );
    let view = sup.view().await.unwrap();
    assert_eq!(view.events.len(), 1);
    assert_eq!(view.events[0].reason, HopReason::Limited);
    assert_eq!(&*view.bindings["s1"].account, "b@x");
    assert_eq!(&*rig.store.bindings.lock().unwrap()["s1"].account, "b@x");

    // b is limited too: nobody can serve, and the earliest reset is a's.
    moved.observe(429, rejected_5h(t(3600))).await;
    let mut answer = None;
    for _ in 0..200 {
        match place(&sup, "s2").await {
            Err(e) => {
                answer = Some(e);
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
    assert_eq!(
        answer,
        Some(RouteError::AllLimited {
            earliest_reset: Some(t(1800)),
            skipped: vec![],
            members: 2,
        })
    );

    // After a's reset, a serves new sessions again.
    rig.clock.set(t(1800));
    let p = place(&sup, "s3").await.unwrap();
    assert_eq!(&*p.account, "a@x");
}

#[actix::test]
async fn a_401_while_the_new_token_waits_for_the_store_replays_nothing() {
    // The refresh at the lead is answered, but the store refuses the new token. Until it is
    // written, its refresh token is the grant's only live one: a 401 for the current (old) token
    // must not start a refresh from the rotated-away refresh token (which kills the grant).
    let rig = rig(true);
    let addr = rig.start_account(Initial::Token(token(1, t(3600))));
    until(&addr, "fresh", |s| s.machine.phase() == Phase::Fresh).await;
    rig.store.refuse_tokens.store(true, Ordering::SeqCst);
    rig.clock.set(t(3310)); // past the refresh point, the old token still valid
    until(&addr, "answered but unsaved", |s| {
        s.machine.unsaved().is_some()
    })
    .await;
    assert_eq!(rig.refresher.calls(), 1);

    let retry = addr.send(Unauthorized { generation: 1 });
    settle(&addr).await;
    assert_eq!(
        rig.refresher.calls(),
        1,
        "a 401 during the refused write started another refresh: {:?}",
        rig.refresher.seen_refresh_tokens.lock().unwrap()
    );

    // The store accepts on the next try: the new token becomes current, once.
    rig.store.refuse_tokens.store(false, Ordering::SeqCst);
    rig.clock.set(t(3312));
    let s = until(&addr, "saved", |s| s.machine.unsaved().is_none()).await;
    assert_eq!(s.machine.phase(), Phase::Fresh);
    assert_eq!(s.generation, 2);
    assert_eq!(
        s.machine
            .token()
            .as_ref()
            .map(|t| t.refresh.expose().to_string()),
        Some("sk-ant-ort01-101".to_string())
    );
    let lease = retry.await.expect("mailbox").expect("a lease");
    assert_eq!(
        lease.generation, 2,
        "the 401 is answered with the new token"
    );
    assert_eq!(rig.refresher.calls(), 1);
    assert_eq!(
        rig.store
            .tokens
            .lock()
            .unwrap()
            .get("alice@example.com")
            .map(|t| t.refresh.expose().to_string()),
        Some("sk-ant-ort01-101".to_string())
    );
}

/// Waits (in real time, bounded) until the supervisor's view satisfies `cond`.
async fn view_until(
    sup: &SupervisorHandle,
    what: &str,
    cond: impl Fn(&ccs_actors::supervisor::SupervisorView) -> bool,
) -> ccs_actors::supervisor::SupervisorView {
    for _ in 0..400 {
        let v = sup.view().await.unwrap();
        if cond(&v) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[actix::test]
async fn a_kept_conversation_is_placed_without_a_message_until_its_account_cannot_keep_it() {
    let rig = rig(true);
    let sup = two_fresh_accounts(&rig, t(3_000)).await;

    // A new conversation is the supervisor's decision.
    let first = place(&sup, "s1").await.unwrap();
    assert_eq!(first.decision, Decision::Bound(AccountId::from("a@x")));
    assert_eq!(sup.view().await.unwrap().routed, 1);

    // Its next requests are placed from the published state: same account, same token, no
    // `Route`; the binding's last use still moves (a `Touch` sent without waiting).
    rig.clock.set(t(100));
    for _ in 0..20 {
        let p = place(&sup, "s1").await.unwrap();
        assert_eq!(p.decision, Decision::Kept(AccountId::from("a@x")));
        assert_eq!(p.lease, first.lease);
    }
    let v = sup.view().await.unwrap();
    assert_eq!(
        v.routed, 1,
        "no request of the kept conversation went to the supervisor"
    );
    assert_eq!(v.bindings["s1"].last_used, t(100));
    // Within the grain, the last use is not sent again (no message at all); past it, it is.
    rig.clock
        .set(t(100).plus(TOUCH_GRAIN - Duration::from_secs(1)));
    place(&sup, "s1").await.unwrap();
    assert_eq!(sup.view().await.unwrap().bindings["s1"].last_used, t(100));
    rig.clock.set(t(100).plus(TOUCH_GRAIN));
    place(&sup, "s1").await.unwrap();
    assert_eq!(
        sup.view().await.unwrap().bindings["s1"].last_used,
        t(100).plus(TOUCH_GRAIN)
    );
    // A retry after a failure (an account excluded) and another pool are the supervisor's.
    let mut request = sup.request("claude", Some("s1"), None);
    let kept = request.place().await.unwrap();
    assert_eq!(kept.decision, Decision::Kept(AccountId::from("a@x")));
    let retry = request.place().await.unwrap();
    assert_eq!(&*retry.account, "b@x");
    assert_eq!(sup.view().await.unwrap().routed, 2);

    // b now holds s1. Its token is refreshed: the kept conversation gets the new one.
    // Inside the refresh lead, well within the binding's idle time.
    rig.clock.set(t(3_000 - 60));
    let refreshed = loop {
        let p = place(&sup, "s1").await.unwrap();
        if p.lease.generation > retry.lease.generation {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_ne!(refreshed.lease.access, retry.lease.access);
    assert_eq!(&*refreshed.account, "b@x");

    // b is limited: the hot path declines, and the supervisor moves the conversation.
    refreshed.observe(429, rejected_5h(t(40_000))).await;
    view_until(&sup, "b's limit published", |v| {
        v.accounts
            .iter()
            .any(|a| &*a.id == "b@x" && a.quota.limited_until(t(3_000 - 60), None).is_some())
    })
    .await;
    let before = sup.view().await.unwrap().routed;
    let moved = place(&sup, "s1").await.unwrap();
    assert_eq!(
        moved.decision,
        Decision::Moved {
            from: AccountId::from("b@x"),
            to: AccountId::from("a@x")
        }
    );
    assert_eq!(sup.view().await.unwrap().routed, before + 1);
}

#[actix::test]
async fn one_request_never_goes_to_an_account_twice_whichever_path_placed_it() {
    let rig = rig(true);
    let sup = two_fresh_accounts(&rig, t(36_000)).await;
    place(&sup, "s1").await.unwrap();
    let mut request = sup.request("claude", Some("s1"), None);
    // The first placement of the kept conversation comes from the hot path, the next from the
    // supervisor: both count as tried for this request.
    let kept = request.place().await.unwrap();
    assert_eq!(kept.decision, Decision::Kept(AccountId::from("a@x")));
    let next = request.place().await.unwrap();
    assert_eq!(&*next.account, "b@x");
    match request.place().await {
        Err(RouteError::AllLimited {
            members: 2,
            skipped,
            ..
        }) if skipped.is_empty() => {}
        other => panic!("a third placement with both accounts tried: {other:?}"),
    }
    // A new request starts over.
    assert_eq!(&*place(&sup, "s1").await.unwrap().account, "b@x");
}

#[actix::test]
async fn a_lease_that_fails_leaves_no_binding_and_no_hop_behind() {
    // a's token has lapsed and its refresh will find the grant gone; routing still picks a
    // (a refresh is in flight) and the lease waits for it. The session must end up bound to b
    // directly: no binding to a, no hop a → b for a move that never served a request.
    let rig = rig(false);
    rig.refresher
        .script
        .lock()
        .unwrap()
        .push(Err(Failure::Fatal));
    let sup = SupervisorHandle::start(rig.deps.clone(), routing::Policy::default());
    for (who, expires_at) in [("a@x", t(0)), ("b@x", t(36_000))] {
        sup.add(AddAccount {
            id: AccountId::from(who),
            initial: Initial::Token(token(1, expires_at)),
            quota: Quota::default(),
            paused: false,
            pools: vec![],
        })
        .await
        .unwrap();
    }
    view_until(&sup, "a refreshing, b fresh", |v| {
        v.accounts
            .iter()
            .any(|a| &*a.id == "a@x" && a.health.phase == Phase::Refreshing)
            && v.accounts
                .iter()
                .any(|a| &*a.id == "b@x" && a.health.phase == Phase::Fresh)
    })
    .await;
    let placing = {
        let sup = sup.clone();
        actix::spawn(async move { place(&sup, "s1").await })
    };
    // The lease on a is waiting: nothing may be bound yet.
    view_until(&sup, "the route answered", |v| v.routed >= 1).await;
    assert!(
        !sup.view().await.unwrap().bindings.contains_key("s1"),
        "s1 was bound before its account leased a token"
    );
    rig.refresher.gate.add_permits(1);
    let placed = placing.await.expect("task").expect("b serves");
    assert_eq!(placed.decision, Decision::Bound(AccountId::from("b@x")));
    assert_eq!(placed.skipped.len(), 1, "a was tried and skipped");
    let v = view_until(&sup, "s1 bound", |v| v.bindings.contains_key("s1")).await;
    assert_eq!(&*v.bindings["s1"].account, "b@x");
    assert!(v.events.is_empty(), "hop events: {:?}", v.events);
}

#[actix::test]
async fn a_bench_is_written_off_the_actors_thread_and_durable_before_its_verdict() {
    // The disk is slow: the durable write of a bench waits. The account must go on answering
    // (a lease, its state) meanwhile, and the 429's verdict must wait for the write.
    // A wait on the store on this thread (the actors') panics.
    ccs_actors::ports::mark_actors_thread();
    let rig = rig(true);
    let addr = rig.start_account(Initial::Token(token(1, t(36_000))));
    until(&addr, "fresh", |s| s.machine.phase() == Phase::Fresh).await;
    let gate = rig.store.quota_gate.clone();
    gate.forget_permits(Semaphore::MAX_PERMITS);

    let verdict = addr.send(Observe {
        status: 429,
        headers: rejected_5h(t(1800)),
    });
    let verdict = actix::spawn(verdict);
    // Answered while the write waits: the actor's thread is not held by the store.
    let lease = addr.send(GetLease).await.expect("mailbox");
    assert!(lease.is_ok(), "{lease:?}");
    let s = state(&addr).await;
    assert!(
        s.quota.limited_until(t(1), None).is_some(),
        "the bench is in force at once"
    );
    assert!(
        !verdict.is_finished(),
        "the verdict came before the bench was durable"
    );
    assert_eq!(rig.store.quota_later.load(Ordering::SeqCst), 0);

    gate.add_permits(1);
    let verdict = verdict.await.expect("task").expect("mailbox");
    assert!(
        matches!(verdict, ccs_actors::quota::Verdict::Limited { .. }),
        "{verdict:?}"
    );
    assert_eq!(rig.store.quota_later.load(Ordering::SeqCst), 1);
}
