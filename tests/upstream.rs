//! The daemon's connections to the upstream: HTTP/2 where the upstream offers it, opened as
//! the daemon starts (so the first turn pays no handshake) and reused by every request after.
//! The simulator listens over HTTPS with its own certificate, trusted through
//! `upstream.ca_cert`, as a company's TLS-inspecting proxy would be.

mod common;

use std::sync::Arc;
use std::time::Duration;

use ccs::daemon::DaemonHandle;
use ccs::sim::SimHandle;
use ccs_actors::SharedClock;
use common::rig::{last_request, wait_fresh};
use common::*;

/// Waits (bounded) until `cond` holds.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_reach_the_upstream_over_http2_on_connections_opened_at_start() {
    // The simulator serves HTTPS with a certificate ccs makes, as a user's own upstream would.
    let cert = ccs::tls::self_signed(&["127.0.0.1".to_string()]).unwrap();
    let tls = ccs::tls::server_config_pem(&cert.cert_pem, &cert.key_pem).unwrap();
    let sim = SimHandle::start_tls(
        &scenario(&[("a@example.com", 100)]),
        true,
        42,
        (tls, cert.cert_pem),
    )
    .unwrap();
    let clock: SharedClock = Arc::new(sim.clock.clone().expect("manual clock"));
    let (_home, paths, mut config) = home_for(&sim.url());
    std::fs::write(
        paths.home.join("upstream-ca.pem"),
        sim.tls_ca_pem().unwrap(),
    )
    .unwrap();
    config.upstream.api_base = sim.tls_url().unwrap();
    config.upstream.ca_cert = Some("upstream-ca.pem".into());
    let daemon =
        tokio::task::block_in_place(|| DaemonHandle::start(paths.clone(), config, clock)).unwrap();

    // Each of the daemon's two HTTP workers opens its upstream connection as it starts.
    eventually("both workers' warm connections", || {
        sim.tls_connections() >= 2
    })
    .await;
    add_account(&sim.url(), &daemon.url, "a@example.com").await;
    wait_fresh(&daemon.url, 1).await;
    let warmed = sim.tls_connections();

    for i in 0..6 {
        let r = ask(&daemon.url, Some("conv-1"), i % 2 == 0).await;
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    assert_eq!(
        sim.tls_connections(),
        warmed,
        "a request opened an upstream connection of its own"
    );
    let last = last_request(&sim.url()).await;
    assert_eq!(last["version"], "HTTP/2.0", "{last}");
    tokio::task::block_in_place(|| daemon.stop()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_upstream_ca_is_refused_at_start_with_its_path() {
    let sim = SimHandle::start(&scenario(&[]), 0, false, 42).unwrap();
    let (_home, paths, mut config) = home_for(&sim.url());
    std::fs::write(paths.home.join("not-a-cert.pem"), "hello").unwrap();
    config.upstream.ca_cert = Some("not-a-cert.pem".into());
    let clock: SharedClock = Arc::new(ccs_actors::SystemClock);
    let err = tokio::task::block_in_place(|| DaemonHandle::start(paths.clone(), config, clock))
        .err()
        .expect("the daemon refuses to start");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("upstream.ca_cert") && msg.contains("not-a-cert.pem"),
        "{msg}"
    );
}
