//! The property-tested failover simulation (specs/failover-invariants.md): random worlds of
//! 1–8 accounts, sessions over simulated hours and faults, run through the real actors and
//! driver over the simulator's model, with every invariant checked after every step.
//!
//! 256 worlds by default (every invariant is checked in every world); `PROPTEST_CASES=5000`
//! for a long soak. Failures shrink to a minimal world and are kept in
//! `proptest-regressions/failover_sim.txt`.

use ccs::sim::harness::{self, AccountSpec, Fault, FaultAt, SessionSpec, Spec};
use proptest::prelude::*;

fn fault(accounts: usize) -> impl Strategy<Value = Fault> {
    let i = 0..accounts;
    prop_oneof![
        i.clone().prop_map(Fault::RefreshTransient),
        i.clone().prop_map(Fault::RefreshFatal),
        (i.clone(), 1u64..900).prop_map(|(i, s)| Fault::TokenSlow(i, s)),
        i.clone().prop_map(Fault::Status429),
        i.clone().prop_map(Fault::Status429Retry),
        i.clone().prop_map(Fault::Status401),
        i.clone().prop_map(Fault::Status529),
        i.clone().prop_map(Fault::ResetBeforeHeaders),
        i.clone().prop_map(Fault::ResetMidStream),
        Just(Fault::Crash),
        (1u64..240).prop_map(Fault::ClockJump),
        i.clone().prop_map(Fault::Pause),
        i.prop_map(Fault::Resume),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    (1usize..=8, 1u64..=4, any::<u64>()).prop_flat_map(|(n, hours, seed)| {
        let minutes = hours * 60;
        (
            proptest::collection::vec(
                (1u64..=30, 5u64..=200).prop_map(|(f, s)| AccountSpec {
                    five_hour: f,
                    seven_day: s,
                }),
                n,
            ),
            prop_oneof![Just(900u64), 1800u64..=8 * 3600],
            proptest::collection::vec(
                (0..minutes, 1u32..=25, 1u64..=10).prop_map(|(start_min, turns, gap_min)| {
                    SessionSpec {
                        start_min,
                        turns,
                        gap_min,
                    }
                }),
                1..=15,
            ),
            proptest::collection::vec(
                (0..minutes, fault(n)).prop_map(|(at_min, fault)| FaultAt { at_min, fault }),
                0..=8,
            ),
        )
            .prop_map(move |(accounts, token_ttl_secs, sessions, faults)| Spec {
                seed,
                accounts,
                token_ttl_secs,
                sessions,
                faults,
                hours,
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    /// I1–I8 hold in every generated world.
    #[test]
    fn every_invariant_holds(spec in spec()) {
        let report = harness::run_blocking(&spec);
        prop_assert!(report.violations.is_empty(), "violations: {:#?}\nspec: {:?}", report.violations, spec);
        prop_assert!(report.requests > 0);
    }
}

#[test]
fn the_same_spec_gives_the_same_run_byte_for_byte() {
    let spec = harness::generate(
        7,
        4,
        30,
        6,
        &[
            "refresh",
            "429",
            "401",
            "crash",
            "jump",
            "midstream",
            "reset",
        ],
    )
    .unwrap();
    let a = serde_json::to_string(&harness::run_blocking(&spec)).unwrap();
    let b = serde_json::to_string(&harness::run_blocking(&spec)).unwrap();
    assert_eq!(a, b);
}

#[test]
fn a_reset_on_the_only_usable_account_is_a_502_not_a_429() {
    // One account with room, one fault cutting its connection before headers: the client must
    // hear of a transport failure, not of a quota it does not lack.
    let spec = Spec {
        seed: 1,
        accounts: vec![AccountSpec {
            five_hour: 30,
            seven_day: 300,
        }],
        token_ttl_secs: 8 * 3600,
        sessions: vec![SessionSpec {
            start_min: 2,
            turns: 3,
            gap_min: 1,
        }],
        faults: vec![FaultAt {
            at_min: 1,
            fault: Fault::ResetBeforeHeaders(0),
        }],
        hours: 1,
    };
    let report = harness::run_blocking(&spec);
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!(
        report
            .failed
            .get("502: upstream unreachable before headers"),
        Some(&1),
        "{report:?}"
    );
    assert_eq!(
        report.failed.get("429: every account limited"),
        None,
        "{report:?}"
    );
    assert_eq!(report.served.get("acct0@sim.example"), Some(&2));
}

#[test]
fn a_crash_during_a_slow_refresh_loses_no_token() {
    let spec = Spec {
        seed: 3,
        accounts: vec![
            AccountSpec {
                five_hour: 30,
                seven_day: 300,
            },
            AccountSpec {
                five_hour: 30,
                seven_day: 300,
            },
        ],
        token_ttl_secs: 900,
        sessions: vec![SessionSpec {
            start_min: 0,
            turns: 20,
            gap_min: 2,
        }],
        faults: vec![
            FaultAt {
                at_min: 5,
                fault: Fault::TokenSlow(0, 120),
            },
            FaultAt {
                at_min: 8,
                fault: Fault::Crash,
            },
            FaultAt {
                at_min: 20,
                fault: Fault::Crash,
            },
        ],
        hours: 1,
    };
    let report = harness::run_blocking(&spec);
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert!(
        report.refreshes >= 2,
        "tokens were refreshed across the crashes: {report:?}"
    );
}

#[test]
fn a_request_during_a_slow_refresh_past_expiry_waits_for_the_new_token() {
    // The refresh at expiry - 5 min takes 10 min to come back: requests in between must wait
    // for the new token, never go out with the lapsed one (I4).
    let spec = Spec {
        seed: 5,
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
        faults: vec![FaultAt {
            at_min: 1,
            fault: Fault::TokenSlow(0, 600),
        }],
        hours: 1,
    };
    let report = harness::run_blocking(&spec);
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!(
        report.served.get("acct0@sim.example"),
        Some(&30),
        "{report:?}"
    );
}
