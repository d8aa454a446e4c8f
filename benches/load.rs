//! The load benchmark: the simulator and the daemon as release processes on loopback, and a
//! load generator written on reqwest calling the simulator directly and through the daemon in
//! the same run. `cargo bench --bench load`; `LOAD_QUICK=1` for a short run.
//!
//! Prints one table: the direct figure, the proxied figure, and their ratio or the added
//! milliseconds; under the small and streamed rows, the same through nginx as a plain
//! keep-alive reverse proxy (`support/nginx.rs`), the floor of one HTTP hop on these cores. Two cores are shared by the load generator, the daemon and the simulator, so
//! throughput figures are a floor for each, not a ceiling.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;
use support::*;

/// An 80 KB, Claude-Code-shaped streaming request.
fn body_claude_code() -> Bytes {
    let system = "You are Claude Code. ".repeat(4000);
    Bytes::from(
        serde_json::to_vec(&json!({
            "model": "claude-sonnet-4-5", "max_tokens": 32000, "stream": true,
            "system": [{"type": "text", "text": &system[..78_000]}],
            "messages": [{"role": "user", "content": "explain this code"}],
            "metadata": {"user_id": "{\"device_id\":\"ab\",\"account_uuid\":\"\",\"session_id\":\"x\"}"}
        }))
        .unwrap(),
    )
}

fn body_10mb() -> Bytes {
    Bytes::from(serde_json::to_vec(&json!({"model": "claude-sonnet-4-5", "max_tokens": 1, "messages": [{"role": "user", "content": "x".repeat(10 << 20)}]})).unwrap())
}

fn main() {
    let quick = std::env::var_os("LOAD_QUICK").is_some();
    let scale = |n: usize| if quick { (n / 10).max(50) } else { n };
    let tmp = tempfile::tempdir().unwrap();
    let (_sim, sim) = spawn_sim(tmp.path(), 50);
    // The floor: the cheapest HTTP hop there is, in front of the same simulator.
    let nginx = spawn_nginx(&tmp.path().join("nginx"), &sim);
    if let Err(why) = &nginx {
        eprintln!("no nginx floor rows: {why}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    header("direct", "proxied");

    let (daemon_proc, daemon, ready) = spawn_daemon(&tmp.path().join("home1"), &sim);
    let pid = daemon_proc.0.id();
    row(
        "daemon start to ready (empty store), ms",
        "-".into(),
        format!("{:.1}", ms(ready)),
        "target ≤ 150".into(),
    );
    rt.block_on(async {
        let c = client();
        let access = add_accounts(&c, &sim, &daemon, 0, 1).await;
        let direct = Target {
            url: sim.clone(),
            token: access,
            beta: true,
        };
        let proxied = Target {
            url: daemon.clone(),
            token: KEY.into(),
            beta: false,
        };
        let floor = nginx.as_ref().ok().map(|(_, url)| Target {
            url: url.clone(),
            ..direct.clone()
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        row(
            "daemon RSS idle, 1 account, MB",
            "-".into(),
            format!("{:.1}", rss_kb(pid) as f64 / 1024.0),
            "target ≤ 20".into(),
        );

        // Status end to end: the real CLI, as a person runs it.
        let mut times = Vec::new();
        for _ in 0..scale(30) {
            let t = Instant::now();
            let out = std::process::Command::new(ccs_bin())
                .args(["cliproxy", "status"])
                .env("CCS_HOME", tmp.path().join("home1"))
                .output()
                .unwrap();
            assert!(out.status.success());
            times.push(t.elapsed());
        }
        row(
            "`ccs cliproxy status` end to end, median ms",
            "-".into(),
            format!("{:.1}", ms(pct(&times, 0.5))),
            "target ≤ 20".into(),
        );

        run(&c, &direct, 4, 400, body_small(), 0).await;
        run(&c, &proxied, 4, 400, body_small(), 0).await;
        if let Some(f) = &floor {
            run(&c, f, 4, 400, body_small(), 0).await;
        }
        for conc in [1usize, 16, 64] {
            let total = scale(if conc == 1 { 2_000 } else { 8_000 });
            let d = run(&c, &direct, conc, total, body_small(), 0).await;
            let sampler = PeakRss::start(pid, Duration::from_millis(20));
            let p = run(&c, &proxied, conc, total, body_small(), 1_000).await;
            let peak_kb = sampler.stop();
            row(
                &format!("small non-streaming, c={conc}: requests/s"),
                format!("{:.0}", d.rps()),
                format!("{:.0}", p.rps()),
                format!("{:.2}×", p.rps() / d.rps()),
            );
            added(
                &format!("small non-streaming, c={conc}: p50 ms"),
                &d.latencies,
                &p.latencies,
                0.5,
            );
            added(
                &format!("small non-streaming, c={conc}: p99 ms"),
                &d.latencies,
                &p.latencies,
                0.99,
            );
            if let Some(f) = &floor {
                let n = run(&c, f, conc, total, body_small(), 1_000).await;
                row(
                    &format!("  nginx floor, c={conc}: requests/s"),
                    format!("{:.0}", d.rps()),
                    format!("{:.0}", n.rps()),
                    format!("{:.2}×", n.rps() / d.rps()),
                );
                added(
                    &format!("  nginx floor, c={conc}: p50 ms"),
                    &d.latencies,
                    &n.latencies,
                    0.5,
                );
                added(
                    &format!("  nginx floor, c={conc}: p99 ms"),
                    &d.latencies,
                    &n.latencies,
                    0.99,
                );
                row(
                    &format!("  ccs's share of direct ÷ nginx's, c={conc}"),
                    "-".into(),
                    "-".into(),
                    format!("{:.2}", p.rps() / n.rps()),
                );
            }
            if conc == 64 {
                row(
                    "daemon RSS peak under load (c=64), 1 account, MB",
                    "-".into(),
                    format!("{:.1}", peak_kb as f64 / 1024.0),
                    "-".into(),
                );
            }
        }
        for conc in [1usize, 16] {
            let total = scale(if conc == 1 { 300 } else { 1_600 });
            let d = run(&c, &direct, conc, total, body_claude_code(), 0).await;
            let p = run(&c, &proxied, conc, total, body_claude_code(), 100).await;
            added(
                &format!("80 KB body, SSE 50 events, c={conc}: first event p50 ms"),
                &d.first_event,
                &p.first_event,
                0.5,
            );
            added(
                &format!("80 KB body, SSE 50 events, c={conc}: total p50 ms"),
                &d.latencies,
                &p.latencies,
                0.5,
            );
            row(
                &format!("80 KB body, SSE 50 events, c={conc}: chunks per response"),
                format!("{:.1}", d.chunks as f64 / total as f64),
                format!("{:.1}", p.chunks as f64 / total as f64),
                "-".into(),
            );
            if let Some(f) = &floor {
                let n = run(&c, f, conc, total, body_claude_code(), 100).await;
                added(
                    &format!("  nginx floor, 80 KB SSE, c={conc}: first event p50 ms"),
                    &d.first_event,
                    &n.first_event,
                    0.5,
                );
                added(
                    &format!("  nginx floor, 80 KB SSE, c={conc}: total p50 ms"),
                    &d.latencies,
                    &n.latencies,
                    0.5,
                );
            }
        }
        // The same small requests from an external generator (wrk, one C thread), which
        // costs far less per request than the one above and so leaves the two cores to the
        // hops it measures.
        let wrk_dir = tmp.path().join("wrk");
        std::fs::create_dir_all(&wrk_dir).unwrap();
        let small = String::from_utf8(body_small().to_vec()).unwrap();
        let secs = if quick { 2 } else { 5 };
        for conc in [1usize, 64] {
            let measured = (|| -> Result<_, String> {
                let d = wrk(&wrk_dir, &direct, &small, conc, secs)?;
                let p = wrk(&wrk_dir, &proxied, &small, conc, secs)?;
                let n = match &floor {
                    Some(f) => Some(wrk(&wrk_dir, f, &small, conc, secs)?),
                    None => None,
                };
                Ok((d, p, n))
            })();
            let (d, p, n) = match measured {
                Ok(m) => m,
                Err(why) => {
                    eprintln!("no wrk rows: {why}");
                    break;
                }
            };
            row(
                &format!("wrk, small, c={conc}: requests/s"),
                format!("{:.0}", d.rps),
                format!("{:.0}", p.rps),
                format!("{:.2}×", p.rps / d.rps),
            );
            row(
                &format!("wrk, small, c={conc}: p50 ms"),
                format!("{:.3}", ms(d.p50)),
                format!("{:.3}", ms(p.p50)),
                format!("+{:.3} ms", ms(p.p50) - ms(d.p50)),
            );
            if let Some(n) = n {
                row(
                    &format!("  wrk, nginx floor, c={conc}: requests/s"),
                    format!("{:.0}", d.rps),
                    format!("{:.0}", n.rps),
                    format!("{:.2}×", n.rps / d.rps),
                );
                row(
                    &format!("  wrk, nginx floor, c={conc}: p50 ms"),
                    format!("{:.3}", ms(d.p50)),
                    format!("{:.3}", ms(n.p50)),
                    format!("+{:.3} ms", ms(n.p50) - ms(d.p50)),
                );
                row(
                    &format!("  wrk, ccs's share of direct ÷ nginx's, c={conc}"),
                    "-".into(),
                    "-".into(),
                    format!("{:.2}", p.rps / n.rps),
                );
            }
        }

        let base_rss = rss_kb(pid);
        let sampler = PeakRss::start(pid, Duration::from_millis(5));
        let total = scale(40).max(8);
        let d = run(&c, &direct, 4, total, body_10mb(), 0).await;
        let p = run(&c, &proxied, 4, total, body_10mb(), 0).await;
        let peak_kb = sampler.stop();
        row(
            "10 MB body, c=4: p50 ms",
            format!("{:.1}", ms(pct(&d.latencies, 0.5))),
            format!("{:.1}", ms(pct(&p.latencies, 0.5))),
            format!(
                "+{:.1} ms",
                ms(pct(&p.latencies, 0.5)) - ms(pct(&d.latencies, 0.5))
            ),
        );
        row(
            "10 MB body, c=4: daemon RSS growth over idle, MB",
            "-".into(),
            format!("{:.1}", (peak_kb.saturating_sub(base_rss)) as f64 / 1024.0),
            "4 in flight".into(),
        );
    });
    drop(daemon_proc);

    for n in [100usize, 1000] {
        let (proc_n, daemon_n, _) = spawn_daemon(&tmp.path().join(format!("home{n}")), &sim);
        let pid = proc_n.0.id();
        rt.block_on(async {
            let c = client();
            add_accounts(&c, &sim, &daemon_n, 1_000 * n, 1_000 * n + n).await;
            let proxied = Target {
                url: daemon_n.clone(),
                token: KEY.into(),
                beta: false,
            };
            if n == 1000 {
                // 10,000 bound sessions.
                run(&c, &proxied, 64, 10_000, body_small(), 10_000).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            let label = if n == 1000 {
                format!("daemon RSS idle, {n} accounts, 10,000 sessions, MB")
            } else {
                format!("daemon RSS idle, {n} accounts, MB")
            };
            row(
                &label,
                "-".into(),
                format!("{:.1}", rss_kb(pid) as f64 / 1024.0),
                if n == 1000 {
                    "target ≤ 40".into()
                } else {
                    "-".into()
                },
            );
        });
    }
}
