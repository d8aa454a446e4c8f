//! Micro-benchmarks of the pure machines: lifecycle `step`, quota header folding, routing over
//! 10 / 100 / 1,000 accounts with 10,000 bound sessions, and session-key extraction from an
//! 80 KB Claude Code body. `cargo bench --bench machines`.

use std::hint::black_box;
use std::time::Duration;

use ccs_actors::lifecycle::{step, Event, Policy, State};
use ccs_actors::quota::Quota;
use ccs_actors::routing::{
    route, session_key, AccountId, Affinity, Candidate, Policy as RoutingPolicy,
};
use ccs_actors::{Secret, Timestamp, Token};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

fn lifecycle(c: &mut Criterion) {
    let now = Timestamp::from_secs(1_760_000_000);
    let token = Token {
        access: Secret::new("sk-ant-oat01-x"),
        refresh: Secret::new("sk-ant-ort01-x"),
        expires_at: now.plus(Duration::from_secs(8 * 3600)),
    };
    let (fresh, _) = step(
        &State::unloaded(Policy::default()),
        Event::Loaded(token.clone()),
        now,
    );
    c.bench_function("lifecycle/step tick (no change)", |b| {
        b.iter(|| step(black_box(&fresh), Event::Tick, now))
    });
    let (refreshing, _) = step(
        &fresh,
        Event::UpstreamUnauthorized {
            generation: fresh.generation(),
        },
        now,
    );
    c.bench_function("lifecycle/step refresh succeeded", |b| {
        b.iter(|| {
            step(
                black_box(&refreshing),
                Event::RefreshSucceeded(token.clone()),
                now,
            )
        })
    });
}

fn quota(c: &mut Criterion) {
    let now = Timestamp::from_secs(1_760_000_000);
    let (r5, r7) = ("1760003600", "1760400000");
    let headers = [
        ("content-type", "text/event-stream"),
        ("anthropic-ratelimit-unified-status", "allowed"),
        ("anthropic-ratelimit-unified-reset", r5),
        (
            "anthropic-ratelimit-unified-representative-claim",
            "five_hour",
        ),
        ("anthropic-ratelimit-unified-5h-status", "allowed"),
        ("anthropic-ratelimit-unified-5h-utilization", "0.42"),
        ("anthropic-ratelimit-unified-5h-reset", r5),
        ("anthropic-ratelimit-unified-7d-status", "allowed"),
        ("anthropic-ratelimit-unified-7d-utilization", "0.13"),
        ("anthropic-ratelimit-unified-7d-reset", r7),
        ("request-id", "req_011CSx"),
    ];
    c.bench_function("quota/observe 200 with unified headers", |b| {
        let mut q = Quota::default();
        b.iter(|| q.observe(200, black_box(&headers[..]), now))
    });
}

fn routing(c: &mut Criterion) {
    let now = Timestamp::from_secs(1_760_000_000);
    let ttl = Duration::from_secs(3600);
    let mut group = c.benchmark_group("routing/route");
    for n in [10usize, 100, 1000] {
        // The first 90% are limited, so a new session scans most of the pool.
        let pool: Vec<Candidate> = (0..n)
            .map(|i| Candidate {
                id: AccountId::from(format!("acct{i}@example.com").as_str()),
                routable: true,
                limited_until: (i < n * 9 / 10).then(|| now.plus(ttl)),
                utilization_5h: 0.5,
            })
            .collect();
        let mut affinity = Affinity::default();
        for s in 0..10_000 {
            affinity.bind(
                &format!("session-{s}"),
                pool[n - 1 - s % (n / 10)].id.clone(),
                now,
            );
        }
        let policy = RoutingPolicy::default();
        group.bench_with_input(BenchmarkId::new("bound session", n), &n, |b, _| {
            b.iter(|| {
                let bound = affinity.get("session-4242", now, ttl).map(|b| &b.account);
                route(&pool, Some("session-4242"), bound, &[], &policy)
            })
        });
        group.bench_with_input(BenchmarkId::new("new session", n), &n, |b, _| {
            b.iter(|| {
                let bound = affinity.get("session-new", now, ttl).map(|b| &b.account);
                route(&pool, Some("session-new"), bound, &[], &policy)
            })
        });
    }
    group.finish();
}

fn claude_code_body() -> Vec<u8> {
    let filler = "x".repeat(78_000);
    format!(
        r#"{{"model":"claude-sonnet-4-5","max_tokens":32000,"stream":true,"system":[{{"type":"text","text":"{filler}"}}],"messages":[{{"role":"user","content":"hello"}}],"metadata":{{"user_id":"{{\"device_id\":\"{dev}\",\"account_uuid\":\"\",\"session_id\":\"0b7e6f0c-1d2e-4f3a-9b8c-7d6e5f4a3b2c\"}}"}}}}"#,
        dev = "ab".repeat(32)
    )
    .into_bytes()
}

fn session(c: &mut Criterion) {
    let body = claude_code_body();
    c.bench_function("session_key/header present (80 KB body)", |b| {
        b.iter(|| {
            session_key(
                Some("0b7e6f0c-1d2e-4f3a-9b8c-7d6e5f4a3b2c"),
                black_box(&body),
            )
        })
    });
    c.bench_function("session_key/from metadata (80 KB body)", |b| {
        b.iter(|| session_key(None, black_box(&body)))
    });
}

criterion_group!(benches, lifecycle, quota, routing, session);
criterion_main!(benches);
