//! The quota machine against real-looking header sets (specs/anthropic.md §3), and
//! its properties over random responses.

mod common;

use std::time::Duration;

use ccs_actors::quota::{Quota, Status, UsageBody, Verdict, BACKOFF_CAP};
use ccs_actors::Timestamp;
use proptest::prelude::*;

const NOW: u64 = 1_760_000_000;

fn now() -> Timestamp {
    Timestamp::from_secs(NOW)
}

fn secs(n: u64) -> String {
    (NOW + n).to_string()
}

fn observe(q: &mut Quota, status: u16, headers: &[(&str, &str)]) -> Verdict {
    q.observe(status, headers, now())
}

#[test]
fn allowed_response_records_both_windows_and_limits_nothing() {
    let (r5, r7) = (secs(3600), secs(86_400));
    let h = [
        ("anthropic-ratelimit-unified-status", "allowed"),
        ("anthropic-ratelimit-unified-5h-status", "allowed"),
        ("anthropic-ratelimit-unified-5h-utilization", "0.42"),
        ("anthropic-ratelimit-unified-5h-reset", r5.as_str()),
        ("anthropic-ratelimit-unified-7d-status", "allowed"),
        ("anthropic-ratelimit-unified-7d-utilization", "0.1"),
        ("anthropic-ratelimit-unified-7d-reset", r7.as_str()),
        (
            "anthropic-ratelimit-unified-representative-claim",
            "five_hour",
        ),
    ];
    let mut q = Quota::default();
    assert_eq!(observe(&mut q, 200, &h), Verdict::Ok);
    assert_eq!(q.five_hour.status, Status::Allowed);
    assert!((q.five_hour.utilization - 0.42).abs() < 1e-9);
    assert_eq!(
        q.five_hour.resets_at,
        Some(Timestamp::from_secs(NOW + 3600))
    );
    assert_eq!(
        q.seven_day.resets_at,
        Some(Timestamp::from_secs(NOW + 86_400))
    );
    assert!(q.available(now(), None));
    assert_eq!(q.limited_until(now(), None), None);
}

#[test]
fn allowed_warning_is_still_available() {
    let r5 = secs(600);
    let h = [
        ("anthropic-ratelimit-unified-status", "allowed_warning"),
        ("anthropic-ratelimit-unified-5h-status", "allowed_warning"),
        ("anthropic-ratelimit-unified-5h-utilization", "0.91"),
        ("anthropic-ratelimit-unified-5h-reset", r5.as_str()),
        ("anthropic-ratelimit-unified-5h-surpassed-threshold", "0.9"),
    ];
    let mut q = Quota::default();
    assert_eq!(observe(&mut q, 200, &h), Verdict::Ok);
    assert_eq!(q.five_hour.status, Status::AllowedWarning);
    assert!(q.available(now(), None));
}

#[test]
fn rejected_5h_benches_until_its_reset() {
    let r5 = secs(1800);
    let h = [
        ("anthropic-ratelimit-unified-status", "rejected"),
        ("anthropic-ratelimit-unified-reset", r5.as_str()),
        (
            "anthropic-ratelimit-unified-representative-claim",
            "five_hour",
        ),
        ("anthropic-ratelimit-unified-5h-status", "rejected"),
        ("anthropic-ratelimit-unified-5h-utilization", "1.02"),
        ("anthropic-ratelimit-unified-5h-reset", r5.as_str()),
        ("anthropic-ratelimit-unified-7d-status", "allowed"),
        ("anthropic-ratelimit-unified-7d-utilization", "0.3"),
    ];
    let mut q = Quota::default();
    let until = Timestamp::from_secs(NOW + 1800);
    assert_eq!(observe(&mut q, 429, &h), Verdict::Limited { until });
    assert_eq!(q.limited_until(now(), None), Some(until));
    assert!(!q.available(now().plus(Duration::from_secs(1799)), None));
    assert!(q.available(until, None), "free again at the reset");
    assert_eq!(q.five_hour.utilization_at(until), 0.0);
}

#[test]
fn rejected_7d_benches_until_the_weekly_reset() {
    let r7 = secs(3 * 86_400);
    let h = [
        ("anthropic-ratelimit-unified-status", "rejected"),
        (
            "anthropic-ratelimit-unified-representative-claim",
            "seven_day",
        ),
        ("anthropic-ratelimit-unified-reset", r7.as_str()),
        ("anthropic-ratelimit-unified-7d-status", "rejected"),
        ("anthropic-ratelimit-unified-7d-utilization", "1.0"),
        ("anthropic-ratelimit-unified-7d-reset", r7.as_str()),
    ];
    let mut q = Quota::default();
    let until = Timestamp::from_secs(NOW + 3 * 86_400);
    assert_eq!(observe(&mut q, 429, &h), Verdict::Limited { until });
    assert_eq!(q.limited_until(now(), Some("sonnet")), Some(until));
}

#[test]
fn both_rejected_benches_until_the_later_reset() {
    let (r5, r7) = (secs(600), secs(90_000));
    let h = [
        ("anthropic-ratelimit-unified-status", "rejected"),
        ("anthropic-ratelimit-unified-5h-status", "rejected"),
        ("anthropic-ratelimit-unified-5h-reset", r5.as_str()),
        ("anthropic-ratelimit-unified-7d-status", "rejected"),
        ("anthropic-ratelimit-unified-7d-reset", r7.as_str()),
    ];
    let mut q = Quota::default();
    let later = Timestamp::from_secs(NOW + 90_000);
    assert_eq!(observe(&mut q, 429, &h), Verdict::Limited { until: later });
    assert_eq!(
        q.limited_until(now().plus(Duration::from_secs(700)), None),
        Some(later)
    );
}

#[test]
fn seven_day_oi_rejection_limits_only_that_model_family() {
    let r = secs(40_000);
    let h = [
        ("anthropic-ratelimit-unified-status", "rejected"),
        ("anthropic-ratelimit-unified-5h-status", "allowed"),
        ("anthropic-ratelimit-unified-5h-utilization", "0.2"),
        ("anthropic-ratelimit-unified-7d_oi-status", "rejected"),
        ("anthropic-ratelimit-unified-7d_oi-utilization", "1.0"),
        ("anthropic-ratelimit-unified-7d_oi-reset", r.as_str()),
    ];
    let mut q = Quota::default();
    let until = Timestamp::from_secs(NOW + 40_000);
    assert_eq!(observe(&mut q, 429, &h), Verdict::Limited { until });
    assert_eq!(q.limited_until(now(), Some("opus")), Some(until));
    assert!(q.available(now(), Some("sonnet")));
    assert!(q.available(now(), None));
}

#[test]
fn missing_resets_back_off_exponentially_then_reset_on_success() {
    let h = [
        ("anthropic-ratelimit-unified-status", "rejected"),
        ("anthropic-ratelimit-unified-5h-status", "rejected"),
    ];
    let mut q = Quota::default();
    let waits: Vec<u64> = (0..8)
        .map(|_| match observe(&mut q, 429, &h) {
            Verdict::BackedOff { until } => until.since(now()).as_secs(),
            v => panic!("expected a backoff, got {v:?}"),
        })
        .collect();
    assert_eq!(waits, vec![30, 60, 120, 240, 480, 960, 1800, 1800]);
    assert!(!q.available(now(), None));
    assert_eq!(observe(&mut q, 200, &[]), Verdict::Ok);
    assert!(q.available(now(), None));
    assert_eq!(q.backoff_step, 0);
    match observe(&mut q, 429, &[]) {
        Verdict::BackedOff { until } => assert_eq!(until.since(now()).as_secs(), 30),
        v => panic!("expected a fresh backoff, got {v:?}"),
    }
}

#[test]
fn bare_429_honours_a_longer_retry_after() {
    let mut q = Quota::default();
    match observe(&mut q, 429, &[("retry-after", "120")]) {
        Verdict::BackedOff { until } => assert_eq!(until.since(now()).as_secs(), 120),
        v => panic!("{v:?}"),
    }
}

#[test]
fn should_retry_without_unified_headers_benches_nobody() {
    let mut q = Quota::default();
    assert_eq!(
        observe(&mut q, 429, &[("x-should-retry", "true")]),
        Verdict::RetryRequest
    );
    assert!(q.available(now(), None));
    assert_eq!(q.backoff_until, None);
}

#[test]
fn resets_in_the_past_or_absurdly_far_are_not_trusted() {
    let past = (NOW - 10).to_string();
    let far = secs(9 * 86_400);
    for reset in [past.as_str(), far.as_str(), "soon", "-5"] {
        let h = [
            ("anthropic-ratelimit-unified-status", "rejected"),
            ("anthropic-ratelimit-unified-5h-status", "rejected"),
            ("anthropic-ratelimit-unified-5h-reset", reset),
        ];
        let mut q = Quota::default();
        let v = observe(&mut q, 429, &h);
        assert!(
            matches!(v, Verdict::BackedOff { .. }),
            "reset {reset:?} should not be trusted, got {v:?}"
        );
        assert_eq!(q.five_hour.resets_at, None);
        let until = q.limited_until(now(), None).expect("backed off");
        assert!(until <= now().plus(BACKOFF_CAP));
    }
}

#[test]
fn overall_reset_stands_in_for_a_missing_window_reset() {
    let r = secs(5000);
    let h = [
        ("anthropic-ratelimit-unified-status", "rejected"),
        ("anthropic-ratelimit-unified-reset", r.as_str()),
        (
            "anthropic-ratelimit-unified-representative-claim",
            "five_hour",
        ),
    ];
    let mut q = Quota::default();
    let until = Timestamp::from_secs(NOW + 5000);
    assert_eq!(observe(&mut q, 429, &h), Verdict::Limited { until });
}

#[test]
fn usage_body_folds_percent_and_iso_resets() {
    let body: UsageBody = serde_json::from_str(
        r#"{"five_hour":{"utilization":100.0,"resets_at":"2025-10-09T10:00:00+00:00"},
            "seven_day":{"utilization":35,"resets_at":"2025-10-12T08:53:20Z"},
            "seven_day_opus":{"utilization":12.5,"resets_at":null},
            "extra_usage":{"is_enabled":false}}"#,
    )
    .expect("usage body");
    // 2025-10-09T08:53:20Z = 1760000000
    let mut q = Quota::default();
    q.observe_usage(&body, now());
    assert!((q.seven_day.utilization - 0.35).abs() < 1e-9);
    assert_eq!(q.five_hour.status, Status::Rejected);
    let reset = Timestamp::from_secs(1_760_004_000);
    assert_eq!(q.limited_until(now(), None), Some(reset));
    assert!((q.families["opus"].utilization - 0.125).abs() < 1e-9);
    assert!(q.available(reset, None));
}

fn header_set() -> impl Strategy<Value = (u16, Vec<(String, String)>)> {
    let status = prop_oneof![Just(200u16), Just(429u16), Just(529u16), Just(401u16)];
    let window_status = prop_oneof![
        Just("allowed"),
        Just("allowed_warning"),
        Just("rejected"),
        Just("blocked")
    ];
    let reset = prop_oneof![
        (-100_000i64..900_000).prop_map(|d| (NOW as i64 + d).to_string()),
        Just("garbage".to_string()),
    ];
    let window = (
        prop_oneof![Just("5h"), Just("7d"), Just("7d_oi")],
        window_status,
        proptest::option::of(reset),
        proptest::option::of(0.0f64..1.5),
    );
    (
        status,
        proptest::collection::vec(window, 0..4),
        proptest::bool::ANY,
    )
        .prop_map(|(status, windows, retry)| {
            let mut h = Vec::new();
            for (w, st, reset, util) in windows {
                h.push((
                    format!("anthropic-ratelimit-unified-{w}-status"),
                    st.to_string(),
                ));
                if let Some(r) = reset {
                    h.push((format!("anthropic-ratelimit-unified-{w}-reset"), r));
                }
                if let Some(u) = util {
                    h.push((
                        format!("anthropic-ratelimit-unified-{w}-utilization"),
                        u.to_string(),
                    ));
                }
            }
            if retry {
                h.push(("x-should-retry".into(), "true".into()));
            }
            (status, h)
        })
}

proptest! {
    #![proptest_config(common::config())]
    /// A verdict's bench lies ahead of the response; `limited_until` is never in the past when
    /// returned and never beyond the 8-day horizon, whatever headers arrive.
    #[test]
    fn limits_are_consistent(
        responses in proptest::collection::vec((header_set(), 0u64..20_000), 1..40),
        family in prop_oneof![Just(None), Just(Some("opus")), Just(Some("sonnet"))],
    ) {
        let mut q = Quota::default();
        let mut t = now();
        for ((status, headers), wait) in responses {
            let pairs: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let verdict = q.observe(status, pairs.as_slice(), t);
            if let Verdict::BackedOff { until } = verdict {
                prop_assert!(until > t);
                prop_assert_eq!(q.limited_until(t, family).map(|u| u >= until), Some(true));
            }
            if let Verdict::Limited { until } = verdict {
                prop_assert!(until > t);
            }
            for probe in [t, t.plus(Duration::from_secs(wait / 2))] {
                if let Some(until) = q.limited_until(probe, family) {
                    prop_assert!(until > probe, "limited_until {until:?} not after {probe:?}");
                    prop_assert!(until <= probe.plus(Duration::from_secs(8 * 86_400)));
                }
            }
            t = t.plus(Duration::from_secs(wait));
        }
    }
}
