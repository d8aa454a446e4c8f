//! What HTTPS adds to the request path: two daemons on one simulator in the same run, one
//! serving plain HTTP and one HTTPS (a self-signed certificate, as `ccs cliproxy cert` makes),
//! the same small requests through each, at c=1 and c=16. Connections are kept alive, as Claude
//! Code and the SDKs keep them; one more row opens a new connection per request, to show the
//! handshake itself. `cargo bench --bench tls`; `LOAD_QUICK=1` for a short run.

mod support;

use support::*;

fn main() {
    let quick = std::env::var_os("LOAD_QUICK").is_some();
    let scale = |n: usize| if quick { (n / 10).max(50) } else { n };
    let tmp = tempfile::tempdir().unwrap();
    let (_sim, sim) = spawn_sim(tmp.path(), 50);
    let (_plain, plain_url, _) = spawn_daemon(&tmp.path().join("plain"), &sim);
    let (_tls, tls_url, cert) = spawn_daemon_tls(&tmp.path().join("tls"), &sim);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    header("plain HTTP", "HTTPS");
    let trusting = |pool: usize| {
        reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(pool)
            .add_root_certificate(reqwest::Certificate::from_pem(cert.as_bytes()).unwrap())
            .build()
            .unwrap()
    };
    rt.block_on(async {
        let c = trusting(256);
        // Both daemons serve the same simulator account.
        add_accounts(&client(), &sim, &plain_url, 0, 1).await;
        let tls_admin = trusting(4);
        let t = login(&tls_admin, &sim, "u0@bench.example").await;
        let r = tls_admin
            .post(format!("{tls_url}/v0/management/accounts"))
            .bearer_auth(SECRET)
            .json(&serde_json::json!({ "token_response": t }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let target = |url: &str| Target {
            url: url.to_string(),
            token: KEY.into(),
            beta: false,
        };
        let (plain, tls) = (target(&plain_url), target(&tls_url));
        run(&c, &plain, 4, 400, body_small(), 0).await;
        run(&c, &tls, 4, 400, body_small(), 0).await;
        for conc in [1usize, 16] {
            let total = scale(if conc == 1 { 2_000 } else { 8_000 });
            let p = run(&c, &plain, conc, total, body_small(), 1_000).await;
            let s = run(&c, &tls, conc, total, body_small(), 1_000).await;
            row(
                &format!("small non-streaming, c={conc}: requests/s"),
                format!("{:.0}", p.rps()),
                format!("{:.0}", s.rps()),
                format!("{:.2}×", s.rps() / p.rps()),
            );
            for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
                added(
                    &format!("small non-streaming, c={conc}: {name} ms"),
                    &p.latencies,
                    &s.latencies,
                    q,
                );
            }
        }
        let fresh = trusting(0);
        let total = scale(500);
        let p = run(&fresh, &plain, 1, total, body_small(), 0).await;
        let s = run(&fresh, &tls, 1, total, body_small(), 0).await;
        added(
            "new connection per request, c=1: p50 ms",
            &p.latencies,
            &s.latencies,
            0.5,
        );
    });
}
