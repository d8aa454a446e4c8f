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
