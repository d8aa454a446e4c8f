//! The teeth of the failover invariants: with one bug planted in the code under test
//! (`actors/src/planted.rs`), the simulation must report the invariant that guards against it.
//! A check that no planted bug can fire proves nothing.
//!
//! Built only with `--features planted` (`cargo xtask test` turns it on). Each case searches
//! the fixed worlds, or runs a named one, until the expected violation shows.

use ccs::harness::{self, AccountSpec, Fault, FaultAt, SessionSpec, Spec};
use ccs_actors::planted::{plant, Bug};

const SEED: u64 = 0x7ee7_0012;

/// Whether some world, with `bug` planted, reports a violation starting with `invariant`.
fn fires(bug: Bug, invariant: &str, worlds: impl IntoIterator<Item = Spec>) -> bool {
    let _planted = plant(bug);
    worlds.into_iter().any(|spec| {
        harness::run_blocking(&spec)
            .violations
            .iter()
            .any(|v| v.starts_with(invariant))
    })
}

/// A world kept in `tests/regressions/NAME.json`.
fn kept(name: &str) -> Spec {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/regressions")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let v: serde_json::Value = serde_json::from_str(&text).expect("a regression file");
    serde_json::from_value(v["spec"].clone()).expect("a spec")
}

fn random_worlds() -> impl Iterator<Item = Spec> {
    (0..96).map(|i| harness::world(SEED, i))
}

fn busy_world(faults: Vec<FaultAt>, token_ttl_secs: u64) -> Spec {
    Spec {
        seed: 11,
        accounts: vec![
            AccountSpec {
                five_hour: 6,
                seven_day: 100,
            },
            AccountSpec {
                five_hour: 6,
                seven_day: 100,
            },
            AccountSpec {
                five_hour: 40,
                seven_day: 100,
            },
        ],
        token_ttl_secs,
        sessions: (0..6)
            .map(|i| SessionSpec {
                start_min: i * 3,
                turns: 12,
                gap_min: 2,
            })
            .collect(),
        faults,
        hours: 1,
        thinking: None,
    }
}

#[test]
fn i1_fires_when_routing_refuses_past_the_threshold() {
    assert!(fires(Bug::RefusePastThreshold, "I1", random_worlds()));
}

#[test]
fn i1_fires_when_a_refused_credential_counts_as_quota() {
    let spec = kept("i1_a_refused_credential_is_not_a_quota_429");
    assert!(fires(Bug::UnauthorizedIsQuota, "I1", [spec]));
}

#[test]
fn i1_fires_when_a_rejected_window_is_relayed() {
    // Account 0 is spent elsewhere; its next 429 rejects the window while account 2 has room.
    let spec = busy_world(
        vec![FaultAt {
            at_min: 1,
            fault: Fault::ExternalUse(0, 50),
        }],
        8 * 3600,
    );
    assert!(fires(Bug::RelayRejectedWindow, "I1", [spec]));
}

#[test]
fn i2_fires_when_bound_sessions_move_for_no_reason() {
    assert!(fires(Bug::MoveBoundPastHalf, "I2", random_worlds()));
}

#[test]
fn i3_fires_when_a_401_starts_a_second_refresh() {
    // The refresh at minute 10 is slow; a 401 arrives for the same account meanwhile.
    let spec = Spec {
        seed: 13,
        accounts: vec![AccountSpec {
            five_hour: 100,
            seven_day: 1000,
        }],
        token_ttl_secs: 900,
        sessions: vec![SessionSpec {
            start_min: 0,
            turns: 30,
            gap_min: 1,
        }],
        faults: vec![
            FaultAt {
                at_min: 9,
                fault: Fault::TokenSlow(0, 300),
            },
            FaultAt {
                at_min: 10,
                fault: Fault::Status401(0),
            },
        ],
        hours: 1,
        thinking: None,
    };
    assert!(fires(
        Bug::DoubleRefresh,
        "I3",
        std::iter::once(spec).chain(random_worlds())
    ));
}

#[test]
fn i4_fires_when_a_lapsed_token_is_leased() {
    let spec = kept("i4_a_request_during_a_slow_refresh_past_expiry_waits");
    assert!(fires(Bug::LeaseLapsed, "I4", [spec]));
}

#[test]
fn i5_fires_when_paused_accounts_get_traffic() {
    let spec = busy_world(
        vec![FaultAt {
            at_min: 0,
            fault: Fault::Pause(0),
        }],
        8 * 3600,
    );
    assert!(fires(Bug::IgnorePaused, "I5", [spec]));
}

#[test]
fn i6_fires_when_a_bench_is_not_flushed() {
    assert!(fires(
        Bug::BenchNotDurable,
        "I6",
        (0..400)
            .map(|i| harness::world(SEED, i))
            .filter(|s| { s.faults.iter().any(|f| f.fault == Fault::Crash) })
    ));
}

#[test]
fn i6_fires_when_a_token_is_used_before_it_is_saved() {
    // Tokens live 15 min and are refreshed at 10; the crash comes in the same minute.
    let spec = busy_world(
        vec![FaultAt {
            at_min: 10,
            fault: Fault::Crash,
        }],
        900,
    );
    assert!(fires(Bug::TokenSavedLate, "I6", [spec]));
}

#[test]
fn i7_fires_when_the_drain_order_is_reversed() {
    assert!(fires(Bug::ReverseDrainOrder, "I7", random_worlds()));
}

#[test]
fn i8_fires_when_a_bench_outlives_its_window() {
    assert!(fires(Bug::BenchPastReset, "I8", random_worlds()));
}

#[test]
fn i9_fires_when_fitting_is_off() {
    let refusing = random_worlds().filter(|w| {
        w.thinking
            .as_ref()
            .is_some_and(|t| t.binding == ccs::sim::scenario::ThinkingBinding::Reject)
    });
    assert!(fires(Bug::FittingOff, "I9", refusing));
}
