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
        outln!(
            "{}",
            json!({"url": url, "port": sim.addr.port(), "users": scenario.users.iter().map(|u| &u.email).collect::<Vec<_>>()})
        );
    } else {
        outln!("ccs simulator listening on {url}");
        for u in &scenario.users {
            outln!(
                "  user {:<28} plan {:<5} 5h budget {:>6}  7d budget {:>7}",
                u.email,
                u.plan,
                u.five_hour,
                u.seven_day
            );
        }
        outln!(
            "  token lifetime {}s, budgets count {:?}",
            scenario.token_ttl.0.as_secs(),
            scenario.budget_unit
        );
        outln!("state: {url}/sim/state   stop: Ctrl-C");
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
    let spec = crate::harness::generate(seed, accounts, sessions, hours, &names)
        .map_err(anyhow::Error::msg)?;
    report(
        &spec,
        &format!(
            "{}, {}, {}, seed {seed}",
            crate::term::count(accounts as u64, "account"),
            crate::term::count(sessions as u64, "session"),
            crate::term::count(hours, "simulated hour")
        ),
        json_out,
    )
}

/// `ccs sim run --spec FILE`: one world from a regression file or a bare spec.
pub fn replay(file: &Path, json_out: bool) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
    let spec_value = value.get("spec").cloned().unwrap_or(value);
    let spec: crate::harness::Spec = serde_json::from_value(spec_value).with_context(|| {
        format!(
            "{} holds no simulated world: expected a regression file (tests/regressions/*.json) or a spec",
            file.display()
        )
    })?;
    report(&spec, &format!("the world in {}", file.display()), json_out)
}

fn report(spec: &crate::harness::Spec, what: &str, json_out: bool) -> Result<()> {
    let started = std::time::Instant::now();
    let report = crate::harness::run_blocking(spec);
    if json_out {
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({"spec": spec, "report": report}))?
        );
    } else {
        outln!("ccs sim run: {what}");
        outln!(
            "  (ran in {:.2} s of real time)",
            started.elapsed().as_secs_f64()
        );
        outln!("\nrequests         {}", report.requests);
        outln!("served per account:");
        for (i, a) in spec.accounts.iter().enumerate() {
            let e = format!("acct{i}@sim.example");
            outln!(
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
        outln!(
            "hops             {}",
            if hops.is_empty() {
                "none".into()
            } else {
                hops.join(", ")
            }
        );
        outln!(
            "refreshes        {} ok of {} calls",
            report.refreshes,
            report.refresh_calls
        );
        outln!("faults injected  {}", report.faults_injected);
        if report.failed.is_empty() {
            outln!("failed requests  none");
        } else {
            outln!("failed requests:");
            for (why, n) in &report.failed {
                outln!("  {n:>6}  {why}");
            }
        }
        match (report.pool_efficiency, &report.pool_efficiency_note) {
            (Some(e), _) => outln!("pool efficiency  {:.1}% of what the authority would have served (5-hour windows, capped by what each weekly window had left) was used before the first refused request", e * 100.0),
            (None, Some(why)) => outln!("pool efficiency  no figure: {why}"),
            (None, None) => outln!("pool efficiency  no figure"),
        }
        if report.violations.is_empty() {
            outln!("invariants       all held (I1-I8, specs/failover-invariants.md)");
        } else {
            outln!("INVARIANT VIOLATIONS ({}):", report.violations.len());
            for v in &report.violations {
                outln!("  {v}");
            }
        }
    }
    if !report.violations.is_empty() {
        anyhow::bail!("{} invariant violation(s)", report.violations.len());
    }
    Ok(())
}

/// `ccs sim soak`: world `i` of `seed` for every `i < worlds`, on `jobs` threads.
pub fn soak(worlds: u64, seed: u64, jobs: Option<usize>) -> Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let jobs = jobs
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1)
        .max(1) as u64;
    let started = std::time::Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    errln!("ccs sim soak: {worlds} worlds of seed {seed} on {jobs} threads");
    let handles: Vec<_> = (0..jobs)
        .map(|j| {
            let done = done.clone();
            std::thread::spawn(move || {
                let mut failed = Vec::new();
                for i in (j..worlds).step_by(jobs as usize) {
                    let spec = crate::harness::world(seed, i);
                    let report = crate::harness::run_blocking(&spec);
                    if !report.violations.is_empty() {
                        failed.push((i, spec, report.violations));
                    }
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if n % 500 == 0 || n == worlds {
                        errln!(
                            "  {n}/{worlds} worlds, {:.0} s",
                            started.elapsed().as_secs_f64()
                        );
                    }
                }
                failed
            })
        })
        .collect();
    let mut failed: Vec<_> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap_or_default())
        .collect();
    failed.sort_by_key(|(i, _, _)| *i);
    for (i, spec, violations) in &failed {
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "name": format!("soak_seed{seed}_world{i}"),
                "why": violations,
                "spec": spec,
            }))?
        );
    }
    let secs = started.elapsed().as_secs_f64();
    outln!(
        "ccs sim soak: {} of {worlds} worlds broke an invariant (seed {seed}, {secs:.0} s)",
        failed.len()
    );
    if !failed.is_empty() {
        anyhow::bail!(
            "{} world(s) failed: keep each JSON above as tests/regressions/NAME.json",
            failed.len()
        );
    }
    Ok(())
}
