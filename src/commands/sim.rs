//! `ccs sim …`: run the simulated Anthropic for people and scripts.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;

use crate::sim::scenario::User;
use crate::sim::{fresh_seed, Scenario, SimHandle};

/// The scenario used without `--scenario`: three users with generous budgets.
pub fn default_scenario() -> Scenario {
    Scenario {
        users: ["alice@example.com", "bob@example.com", "carol@example.com"]
            .into_iter()
            .map(User::new)
            .collect(),
        ..Scenario::default()
    }
}

pub fn serve(
    scenario: Option<&Path>,
    port: u16,
    manual_clock: bool,
    seed: Option<u64>,
    json_out: bool,
) -> Result<()> {
    let scenario = match scenario {
        Some(p) => Scenario::load(p)?,
        None => default_scenario(),
    };
    let sim = SimHandle::start(
        &scenario,
        port,
        manual_clock,
        seed.unwrap_or_else(fresh_seed),
    )
    .with_context(|| {
        format!("cannot listen on 127.0.0.1:{port}: choose another --port (0 picks a free one)")
    })?;
    let url = sim.url();
    if json_out {
        println!(
            "{}",
            json!({"url": url, "port": sim.addr.port(), "users": scenario.users.iter().map(|u| &u.email).collect::<Vec<_>>()})
        );
    } else {
        println!("ccs simulator listening on {url}");
        for u in &scenario.users {
            println!(
                "  user {:<28} plan {:<5} 5h budget {:>6}  7d budget {:>7}",
                u.email, u.plan, u.five_hour, u.seven_day
            );
        }
        println!(
            "  token lifetime {}s, budgets count {:?}",
            scenario.token_ttl.0.as_secs(),
            scenario.budget_unit
        );
        println!("state: {url}/sim/state   stop: Ctrl-C");
    }
    actix_web::rt::System::new().block_on(async {
        let _ = tokio::signal::ctrl_c().await;
    });
    sim.stop();
    Ok(())
}

/// `ccs sim run`: the whole system, in-process, on a simulated clock.
pub fn run(
    accounts: usize,
    sessions: usize,
    hours: u64,
    seed: u64,
    faults: &[String],
    json_out: bool,
) -> Result<()> {
    let names: Vec<&str> = faults
        .iter()
        .map(String::as_str)
        .filter(|f| !f.is_empty())
        .collect();
    let spec = crate::sim::harness::generate(seed, accounts, sessions, hours, &names)
        .map_err(anyhow::Error::msg)?;
    let started = std::time::Instant::now();
    let report = crate::sim::harness::run_blocking(&spec);
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"spec": spec, "report": report}))?
        );
    } else {
        println!("ccs sim run: {accounts} accounts, {sessions} sessions, {hours} simulated hours, seed {seed}");
        println!(
            "  (ran in {:.2} s of real time)",
            started.elapsed().as_secs_f64()
        );
        println!("\nrequests         {}", report.requests);
        println!("served per account:");
        for (i, a) in spec.accounts.iter().enumerate() {
            let e = format!("acct{i}@sim.example");
            println!(
                "  {e:<22} {:>6}   (5-hour budget {}, weekly {})",
                report.served.get(&e).copied().unwrap_or(0),
                a.five_hour,
                a.seven_day
            );
        }
        let hops: Vec<String> = report
            .hops
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect();
        println!(
            "hops             {}",
            if hops.is_empty() {
                "none".into()
            } else {
                hops.join(", ")
            }
        );
        println!(
            "refreshes        {} ok of {} calls",
            report.refreshes, report.refresh_calls
        );
        println!("faults injected  {}", report.faults_injected);
        if report.failed.is_empty() {
            println!("failed requests  none");
        } else {
            println!("failed requests:");
            for (why, n) in &report.failed {
                println!("  {n:>6}  {why}");
            }
        }
        match report.pool_efficiency {
            Some(e) => println!("pool efficiency  {:.1}% of the pool's 5-hour quota used before the first refused request", e * 100.0),
            None => println!("pool efficiency  no request was refused"),
        }
        if report.violations.is_empty() {
            println!("invariants       all held (I1-I8, specs/failover-invariants.md)");
        } else {
            println!("INVARIANT VIOLATIONS ({}):", report.violations.len());
            for v in &report.violations {
                println!("  {v}");
            }
        }
    }
    if !report.violations.is_empty() {
        anyhow::bail!("{} invariant violation(s)", report.violations.len());
    }
    Ok(())
}
