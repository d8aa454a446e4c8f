//! The forecast's table of cases, and the meter's.

use super::*;
use crate::quota::{Status, Window};

const H: u64 = 3_600_000;
const MIN: u64 = 60_000;
const T0: u64 = 1_800_000_000_000;

fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(T0 + ms)
}

fn w(used: f64, resets_in: Option<u64>) -> WindowNow {
    WindowNow {
        used,
        resets_at: resets_in.map(at),
    }
}

fn member(id: &str, five: WindowNow, week: WindowNow) -> Member {
    Member {
        id: id.into(),
        five,
        week,
        usable: true,
        cost: None,
    }
}

fn empty(id: &str) -> Member {
    member(id, w(0.0, None), w(0.0, None))
}

/// A burn of `five_per_hour` windows an hour, in requests that cost a hundredth of a 5-hour
/// window each and `week_per_five` of that of the weekly one.
fn burn(five_per_hour: f64, week_per_five: Option<f64>) -> Option<Burn> {
    Some(Burn {
        requests_per_hour: five_per_hour * 100.0,
        average: Some(Cost {
            five: 0.01,
            week: 0.01 * week_per_five.unwrap_or(0.0),
        }),
    })
}

fn dry(at_ms: u64, freed: Option<(&str, u64, Which, f64)>) -> Runway {
    Runway::DryAt {
        at: at(at_ms),
        freed: freed.map(|(a, t, window, frees)| Freed {
            account: a.into(),
            at: at(t),
            window,
            frees,
        }),
    }
}

/// Forecasts within a second of the expected time, so float steps do not matter.
fn close(got: &Runway, want: &Runway) -> bool {
    let near = |a: Timestamp, b: Timestamp| a.since(b).max(b.since(a)) <= Duration::from_secs(1);
    match (got, want) {
        (Runway::DryAt { at: a, freed: fa }, Runway::DryAt { at: b, freed: fb }) => {
            near(*a, *b)
                && match (fa, fb) {
                    (Some(x), Some(y)) => {
                        x.account == y.account
                            && near(x.at, y.at)
                            && x.window == y.window
                            && (x.frees - y.frees).abs() < 1e-6
                    }
                    (None, None) => true,
                    _ => false,
                }
        }
        (a, b) => a == b,
    }
}

#[test]
fn the_table_of_cases() {
    let paused = Member {
        usable: false,
        ..empty("a")
    };
    let cases: Vec<(&str, Vec<Member>, Option<Burn>, Runway)> = vec![
        ("nothing known yet", vec![empty("a")], None, Runway::Unknown),
        (
            "nothing spent",
            vec![empty("a")],
            burn(0.0, None),
            Runway::Idle,
        ),
        (
            // Half a window an hour: a lasts 2 h, then b 2 h; a's window (begun now) resets
            // at 5 h.
            "steady burn, two accounts",
            vec![empty("a"), empty("b")],
            burn(0.5, None),
            dry(4 * H, Some(("a", 5 * H, Which::FiveHour, 1.0))),
        ),
        (
            // a resets at 60 min, while b serves (6..66 min): a serves again 66..126 min.
            "a reset in the middle",
            vec![member("a", w(0.9, Some(H)), w(0.0, None)), empty("b")],
            burn(1.0, None),
            dry(126 * MIN, Some(("b", 306 * MIN, Which::FiveHour, 1.0))),
        ),
        (
            // A tenth of a week per window: 5 % of the week left lasts 30 min; the 5-hour
            // window is half used then, and frees half of it when the week resets.
            "weekly binding",
            vec![member("a", w(0.0, None), w(0.95, Some(72 * H)))],
            burn(1.0, Some(0.1)),
            dry(30 * MIN, Some(("a", 72 * H, Which::Weekly, 0.5))),
        ),
        (
            // b costs twice what a does: 50 requests of its window, at 100 an hour.
            "an account's own cost",
            vec![
                empty("a"),
                Member {
                    cost: Some(Cost {
                        five: 0.02,
                        week: 0.0,
                    }),
                    ..empty("b")
                },
            ],
            burn(1.0, None),
            dry(90 * MIN, Some(("a", 5 * H, Which::FiveHour, 1.0))),
        ),
        (
            "requests, and no cost measured",
            vec![empty("a")],
            Some(Burn {
                requests_per_hour: 10.0,
                average: None,
            }),
            Runway::Unknown,
        ),
        (
            "a paused account takes nothing",
            vec![paused, empty("b")],
            burn(1.0, None),
            dry(H, Some(("b", 5 * H, Which::FiveHour, 1.0))),
        ),
        (
            // Three windows of 2 h each cover the 5 h until the first resets.
            "resets keep up",
            vec![empty("a"), empty("b"), empty("c")],
            burn(0.5, None),
            Runway::Lasts,
        ),
        (
            "already dry",
            vec![
                member("a", w(1.0, Some(3 * H)), w(0.2, Some(100 * H))),
                member("b", w(1.0, Some(2 * H)), w(0.2, Some(100 * H))),
            ],
            burn(1.0, Some(0.1)),
            dry(0, Some(("b", 2 * H, Which::FiveHour, 1.0))),
        ),
        (
            // Both spent: the account is back when the later of the two resets.
            "both windows spent",
            vec![member("a", w(1.0, Some(2 * H)), w(1.0, Some(50 * H)))],
            burn(1.0, Some(0.1)),
            dry(0, Some(("a", 50 * H, Which::Weekly, 1.0))),
        ),
    ];
    for (name, members, b, want) in cases {
        let got = forecast(&members, b, at(0));
        assert!(close(&got, &want), "{name}: got {got:?}, want {want:?}");
    }
}

fn quota(five: f64, five_reset: Option<u64>, week: f64) -> Quota {
    Quota {
        five_hour: Window {
            status: if five >= 1.0 {
                Status::Rejected
            } else {
                Status::Allowed
            },
            utilization: five,
            resets_at: five_reset.map(at),
            seen_at: None,
        },
        seven_day: Window {
            status: Status::Allowed,
            utilization: week,
            resets_at: Some(at(100 * H)),
            seen_at: None,
        },
        ..Quota::default()
    }
}

#[test]
fn the_meter_averages_bursts_over_the_hour_and_learns_each_accounts_cost() {
    let (a, b): (AccountId, AccountId) = ("a".into(), "b".into());
    let mut m = BurnMeter::default();
    let reset = Some(5 * H);
    for minute in 0..=60u64 {
        // a: two bursts of 30 requests (at 10 and 40 min), a hundredth of its window each;
        // b: nothing.
        let served = match minute {
            0..=9 => 0,
            10..=39 => 30,
            _ => 60,
        };
        let five = served as f64 / 100.0;
        let qa = quota(five, reset, five / 10.0);
        let qb = quota(0.0, None, 0.0);
        m.observe(at(minute * MIN), [(&a, &qa, served), (&b, &qb, 0)]);
        if minute < 5 {
            assert_eq!(
                m.burn(std::slice::from_ref(&a), at(minute * MIN)),
                None,
                "too early"
            );
        }
    }
    let now = at(60 * MIN);
    let got = m.burn(&[a.clone(), b.clone()], now).unwrap();
    assert!((got.requests_per_hour - 60.0).abs() < 1e-9, "{got:?}");
    let cost = m.cost(&a, now).unwrap();
    assert!(
        (cost.five - 0.01).abs() < 1e-9 && (cost.week - 0.001).abs() < 1e-9,
        "{cost:?}"
    );
    assert_eq!(m.cost(&b, now), None, "b served nothing");
    // A pool of b alone burns nothing.
    let idle = m.burn(&[b], now).unwrap();
    assert_eq!(idle.requests_per_hour, 0.0);
    assert_eq!(idle.average, None);
}

#[test]
fn a_window_that_resets_between_samples_counts_its_new_use() {
    let a: AccountId = "a".into();
    let mut m = BurnMeter::default();
    m.observe(at(0), [(&a, &quota(0.9, Some(10 * MIN), 0.0), 90)]);
    // Reset at 10 min, then 20 requests of the new window by 11 min.
    m.observe(
        at(11 * MIN),
        [(&a, &quota(0.2, Some(5 * H + 10 * MIN), 0.0), 110)],
    );
    let cost = m.cost(&a, at(11 * MIN)).unwrap();
    assert!((cost.five - 0.01).abs() < 1e-9, "{cost:?}");
}

#[test]
fn a_rejected_window_counts_as_spent() {
    let q = quota(0.97, Some(H), 0.1);
    let mut q = q;
    q.five_hour.status = Status::Rejected;
    let m = Member::of("a".into(), &q, true, at(0));
    assert_eq!(m.five.used, 1.0);
    assert_eq!(
        forecast(&[m], burn(1.0, None), at(0)),
        Runway::DryAt {
            at: at(0),
            freed: Some(Freed {
                account: "a".into(),
                at: at(H),
                window: Which::FiveHour,
                frees: 1.0
            })
        }
    );
}
