//! The shared store (specs/shared-store.md) against a real `redis-server`: the refresh lease
//! and the generation compare-and-set between two daemons' connections (S1, S2), and the
//! actors' store port behaving alike on sled alone and on sled + Redis.

mod common;

use std::sync::Arc;
use std::time::Duration;

use ccs::config::{Paths, Redis as RedisConfig, Span};
use ccs::shared::{Refreshes, Shared, SharedStore};
use ccs::store::SledStore;
use ccs_actors::ports::{Claim, Commit, Coordinator, Store, Ticket};
use ccs_actors::quota::Quota;
use ccs_actors::routing::Binding;
use ccs_actors::{Secret, SharedClock, SystemClock, Timestamp, Token};
use common::redis::RedisServer;

const ACCOUNT: &str = "a@example.com";

fn clock() -> SharedClock {
    Arc::new(SystemClock)
}

fn token(n: u32) -> Token {
    Token {
        access: Secret::new(format!("sk-ant-oat01-access-{n}")),
        refresh: Secret::new(format!("sk-ant-ort01-refresh-{n}")),
        // Fixed (2100-01-01 plus n seconds): a later token lapses later, as issued ones do.
        expires_at: Timestamp::from_secs(4_102_444_800 + u64::from(n)),
    }
}

fn config(redis: &RedisServer, prefix: &str, lease: Duration) -> RedisConfig {
    RedisConfig {
        url: Some(redis.url()),
        prefix: prefix.to_string(),
        lease: Span(lease),
    }
}

/// Two daemons' connections to one pool.
async fn two(redis: &RedisServer, lease: Duration) -> (Arc<Shared>, Arc<Shared>) {
    let c = config(redis, "t", lease);
    (
        Shared::connect(&c, clock()).await.unwrap(),
        Shared::connect(&c, clock()).await.unwrap(),
    )
}

fn mine(claim: Claim) -> Ticket {
    match claim {
        Claim::Mine(t) => t,
        other => panic!("expected this daemon's lease, got {other:?}"),
    }
}

#[tokio::test]
async fn one_daemon_refreshes_and_the_others_adopt_its_token() {
    let redis = RedisServer::start();
    let (a, b) = two(&redis, Duration::from_secs(60)).await;
    let (ra, rb) = (Refreshes(a.clone()), Refreshes(b.clone()));
    // A logs the account in: a new grant, generation 1; B starts from it.
    assert_eq!(a.offer(ACCOUNT, &token(1), None).await.unwrap(), Some(1));
    let (g, t) = b.read_token(ACCOUNT).await.unwrap().unwrap();
    assert_eq!((g, &t), (1, &token(1)));
    assert!(b.now_holds(ACCOUNT, &t));

    // Both reach the refresh point: one lease, the other waits for it.
    let ticket = mine(ra.claim(ACCOUNT, &token(1).refresh).get().await);
    match rb.claim(ACCOUNT, &token(1).refresh).get().await {
        Claim::Elsewhere { until } => assert!(until > clock().now(), "the lease ends later"),
        other => panic!("B must wait while A holds the lease, got {other:?}"),
    }
    let holders = b.leases().await.unwrap();
    assert_eq!(holders.len(), 1);
    assert_eq!(holders[0].daemon, a.daemon);

    // A's answer lands: generation 2, the lease is gone, B adopts instead of refreshing.
    assert_eq!(
        ra.commit(ACCOUNT, ticket, &token(2)).get().await,
        Commit::Kept
    );
    assert!(
        b.leases().await.unwrap().is_empty(),
        "the lease goes with the commit"
    );
    assert_eq!(
        rb.claim(ACCOUNT, &token(1).refresh).get().await,
        Claim::Peer(token(2))
    );
    assert_eq!(b.read_token(ACCOUNT).await.unwrap().unwrap().0, 2);
}

/// A takes the lease, then stalls past it (a paused VM); B takes the lease over. Answers
/// both daemons and their tickets.
async fn lapsed(redis: &RedisServer) -> (Refreshes, Refreshes, Ticket, Ticket) {
    let lease = Duration::from_millis(300);
    let (a, b) = two(redis, lease).await;
    let (ra, rb) = (Refreshes(a.clone()), Refreshes(b.clone()));
    a.offer(ACCOUNT, &token(1), None).await.unwrap();
    b.read_token(ACCOUNT).await.unwrap();
    assert!(b.now_holds(ACCOUNT, &token(1)));
    let stalled = mine(ra.claim(ACCOUNT, &token(1).refresh).get().await);
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    let ticket = mine(rb.claim(ACCOUNT, &token(1).refresh).get().await);
    (ra, rb, stalled, ticket)
}

#[tokio::test]
async fn a_daemon_whose_lease_lapsed_never_overwrites_a_newer_token() {
    let redis = RedisServer::start();
    let (ra, rb, stalled, ticket) = lapsed(&redis).await;
    assert!(ticket.fence > stalled.fence, "fencing numbers only grow");
    assert_eq!(
        rb.commit(ACCOUNT, ticket, &token(2)).get().await,
        Commit::Kept
    );

    // A's late answer is fenced: Redis keeps B's token, and A is told to adopt it.
    assert_eq!(
        ra.commit(ACCOUNT, stalled, &token(3)).get().await,
        Commit::Fenced(token(2))
    );
    let (g, t) = ra.0.read_token(ACCOUNT).await.unwrap().unwrap();
    assert_eq!(
        (g, t),
        (2, token(2)),
        "the generation only grows, the newer token stands"
    );
}

#[tokio::test]
async fn a_refresh_refused_because_a_peer_rotated_first_adopts_the_peers_token() {
    let redis = RedisServer::start();
    let (ra, rb, stalled, ticket) = lapsed(&redis).await;
    rb.commit(ACCOUNT, ticket, &token(2)).get().await;
    // A's call comes back invalid_grant (its refresh token was rotated by B's call): not a
    // dead account, a peer's newer token.
    assert_eq!(
        ra.release(ACCOUNT, stalled, true).get().await,
        Some(token(2))
    );
    // A transient failure just gives the lease back.
    rb.0.now_holds(ACCOUNT, &token(2));
    let t = mine(rb.claim(ACCOUNT, &token(2).refresh).get().await);
    assert_eq!(rb.release(ACCOUNT, t, false).get().await, None);
    assert!(ra.0.leases().await.unwrap().is_empty());
}

#[tokio::test]
async fn redis_unreachable_means_no_lease_and_so_no_refresh() {
    let mut redis = RedisServer::start();
    let (a, _b) = two(&redis, Duration::from_secs(60)).await;
    a.offer(ACCOUNT, &token(1), None).await.unwrap();
    redis.stop();
    assert_eq!(
        Refreshes(a.clone())
            .claim(ACCOUNT, &token(1).refresh)
            .get()
            .await,
        Claim::Unavailable
    );
    assert!(!a.reachable());
    redis.resume();
    // Back (the connection manager reconnects on the next command): the lease is there again.
    let mut claim = Claim::Unavailable;
    for _ in 0..20 {
        claim = Refreshes(a.clone())
            .claim(ACCOUNT, &token(1).refresh)
            .get()
            .await;
        if claim != Claim::Unavailable {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(matches!(claim, Claim::Mine(_)), "{claim:?}");
    assert!(a.reachable());
    assert_eq!(
        a.read_token(ACCOUNT).await.unwrap().unwrap().1,
        token(1),
        "kept through the restart (AOF)"
    );
}

/// The port's behaviour both backends share: what is written reads back from the daemon's
/// own store.
async fn port_suite(store: Arc<dyn Store>, local: &SledStore) {
    let id = ccs::store::account_key(ACCOUNT);
    let account = local.new_account(ACCOUNT).unwrap();
    local.put_account(&account).unwrap();
    store.persist_token(&id, &token(1)).wait().unwrap();
    assert_eq!(local.token(&id).unwrap(), Some(token(1)));
    match store.persist_token(&id, &token(2)) {
        ccs_actors::ports::Persisting::Done(r) => r.unwrap(),
        ccs_actors::ports::Persisting::Pending(w) => w.await.unwrap(),
    }
    assert_eq!(local.token(&id).unwrap(), Some(token(2)));
    store
        .persist_refresh_intent(&id, &token(2).refresh)
        .wait()
        .unwrap();
    assert!(local.in_doubt(&id, &token(2)).unwrap());
    let quota = bench();
    store.persist_quota(&id, &quota, true).wait().unwrap();
    assert_eq!(local.quota(&id).unwrap().limits(), quota.limits());
    let binding = Binding {
        account: id.as_str().into(),
        last_used: clock().now(),
    };
    store.save_binding("s1", &binding).unwrap();
    local.sync_mirror().unwrap();
    assert!(local.bindings().unwrap().iter().any(|(s, _)| s == "s1"));
    store.remove_bindings(&["s1".to_string()]).unwrap();
    local.sync_mirror().unwrap();
    assert!(!local.bindings().unwrap().iter().any(|(s, _)| s == "s1"));
    store.persist_dead(&id).wait().unwrap();
    assert!(local.account(&id).unwrap().unwrap().dead);
}

#[tokio::test]
async fn the_store_port_behaves_alike_on_sled_and_on_redis() {
    let dir = tempfile::tempdir().unwrap();
    let sled = Arc::new(SledStore::open(&Paths::at(dir.path().join("sled")), clock()).unwrap());
    port_suite(sled.clone(), &sled).await;

    let redis = RedisServer::start();
    let local = Arc::new(SledStore::open(&Paths::at(dir.path().join("redis")), clock()).unwrap());
    let shared = Shared::connect(&config(&redis, "p", Duration::from_secs(60)), clock())
        .await
        .unwrap();
    let store = SharedStore::start(local.clone(), shared.clone(), Duration::from_secs(3600));
    port_suite(store, &local).await;

    // And Redis holds what the peers must see: the login's token (a new grant each time),
    // the bench until its reset, the binding until it was removed.
    let mut c = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let id = ccs::store::account_key(ACCOUNT);
    // Written behind the store's answers, in order: wait for the second.
    let mut generation: Option<u64> = None;
    for _ in 0..100 {
        generation = redis::cmd("HGET")
            .arg(format!("p:token:{}", id.as_str()))
            .arg("generation")
            .query_async(&mut c)
            .await
            .unwrap();
        if generation == Some(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(generation, Some(2), "two logins, two generations");
    let mut quota: Option<String> = None;
    for _ in 0..50 {
        quota = redis::cmd("GET")
            .arg(format!("p:quota:{}", id.as_str()))
            .query_async(&mut c)
            .await
            .unwrap();
        if quota.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        quota.unwrap_or_default().contains("rejected"),
        "the bench reached Redis"
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("p:quota:{}", id.as_str()))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(
        (1..=600_000).contains(&ttl),
        "the bench expires at its reset: {ttl} ms"
    );
    // Written in order behind the answers: the binding, then its removal.
    let mut bound: Option<String> = Some(String::new());
    for _ in 0..100 {
        bound = redis::cmd("GET")
            .arg("p:bind:s1")
            .query_async(&mut c)
            .await
            .unwrap();
        if bound.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(bound, None, "the binding was removed after it was made");
}

/// A bench written while Redis is away, on a daemon that then writes nothing more: how long
/// until Redis holds it, if it does within `within`.
async fn quota_in_redis(redis: &RedisServer, key: &str, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if let Ok(mut c) = redis::Client::open(redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
        {
            let v: Option<String> = redis::cmd("GET")
                .arg(key)
                .query_async(&mut c)
                .await
                .unwrap_or(None);
            if v.is_some() {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// An account benched for ten minutes: its 5-hour window rejected.
fn bench() -> Quota {
    let mut quota = Quota::default();
    let reset = (clock().now().as_millis() / 1000 + 600).to_string();
    quota.observe(
        429,
        &[
            ("anthropic-ratelimit-unified-5h-status", "rejected"),
            ("anthropic-ratelimit-unified-5h-utilization", "1.0"),
            ("anthropic-ratelimit-unified-5h-reset", reset.as_str()),
        ][..],
        clock().now(),
    );
    quota
}

/// S5 on a quiet daemon (issue 32 item 1): what was kept during an outage reaches Redis once
/// it is back, although nothing new is written; and a daemon that stops right after the
/// outage sends it before it goes (`drain`).
#[tokio::test]
async fn writes_kept_during_an_outage_reach_redis_without_a_new_write() {
    for stops_at_once in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut redis = RedisServer::start();
        let local = Arc::new(SledStore::open(&Paths::at(dir.path().join("d")), clock()).unwrap());
        let shared = Shared::connect(&config(&redis, "q", Duration::from_secs(60)), clock())
            .await
            .unwrap();
        let store = SharedStore::start(local.clone(), shared.clone(), Duration::from_secs(3600));
        let id = ccs::store::account_key(ACCOUNT);
        local
            .put_account(&local.new_account(ACCOUNT).unwrap())
            .unwrap();
        redis.stop();
        store.persist_quota(&id, &bench(), true).wait().unwrap();
        // The write was tried and kept.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while shared.unsent() == 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(shared.unsent(), 1, "kept while Redis is away");
        redis.resume();
        let key = format!("q:quota:{}", id.as_str());
        if stops_at_once {
            assert_eq!(
                store.drain(Duration::from_secs(10)).await,
                0,
                "a stop drains"
            );
            assert!(quota_in_redis(&redis, &key, Duration::from_millis(1)).await);
        } else {
            assert!(
                quota_in_redis(&redis, &key, Duration::from_secs(10)).await,
                "a quiet daemon's bench never reached Redis"
            );
            assert_eq!(shared.unsent(), 0);
        }
    }
}
