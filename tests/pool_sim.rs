//! Several daemons over a modelled shared store (`src/harness/pool/`): fixed seeds, so one commit
//! passes or fails the same way everywhere. `CCS_POOL_WORLDS` sets how many (default 24).

use ccs::harness::pool::{generate, run_blocking};

#[test]
fn one_refresher_per_generation_across_daemons_in_every_world() {
    let worlds: u64 = std::env::var("CCS_POOL_WORLDS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(24);
    let mut failures = Vec::new();
    let (mut calls, mut commits, mut fenced, mut adopted, mut replays) = (0, 0, 0, 0, 0);
    for seed in 0..worlds {
        let spec = generate(seed);
        let r = run_blocking(&spec);
        calls += r.refresh_calls;
        commits += r.commits;
        fenced += r.fenced;
        adopted += r.adopted;
        replays += r.replays;
        if !r.violations.is_empty() {
            failures.push(format!(
                "seed {seed} {spec:?}:\n  {}",
                r.violations.join("\n  ")
            ));
        }
    }
    println!(
        "{worlds} worlds: {calls} refresh calls, {commits} commits, {fenced} fenced, {adopted} adopted from a peer at claim, {replays} replays (stalls past the lease)"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(commits > worlds, "the worlds refreshed at all");
}

/// The teeth: a store that grants every claim (each daemon refreshes on its own, as daemons on
/// separate sled stores would) must break the checks.
#[test]
fn the_checks_fire_when_every_daemon_refreshes_on_its_own() {
    let mut fired = 0;
    for seed in 0..4 {
        let spec = ccs::harness::pool::PoolSpec {
            planted_no_lease: true,
            ..generate(seed)
        };
        if !run_blocking(&spec).violations.is_empty() {
            fired += 1;
        }
    }
    assert_eq!(fired, 4, "every world without leases must show a violation");
}
