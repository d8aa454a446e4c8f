//! The routing rules of `specs/routing.md`, one test (or property) per rule, named after it.

mod common;

use std::time::Duration;

use ccs_actors::routing::{route, session_key, AccountId, Affinity, Candidate, Decision, Policy};
use ccs_actors::Timestamp;
use proptest::prelude::*;

fn id(s: &str) -> AccountId {
    AccountId::from(s)
}

fn ok(name: &str, util: f64) -> Candidate {
    Candidate {
        id: id(name),
        routable: true,
        limited_until: None,
        utilization_5h: util,
    }
}

fn limited(name: &str, until_secs: u64) -> Candidate {
    Candidate {
        limited_until: Some(Timestamp::from_secs(until_secs)),
        ..ok(name, 1.0)
    }
}

fn dead(name: &str) -> Candidate {
    Candidate {
        routable: false,
        ..ok(name, 0.0)
    }
}

fn policy() -> Policy {
    Policy::default()
}

#[test]
fn r1_header_wins_and_the_body_is_not_read() {
    // Not JSON at all: the header alone decides.
    assert_eq!(
        session_key(Some("hdr-123"), b"\xff not json"),
        Some("hdr-123".to_string())
    );
}

#[test]
fn r1_metadata_user_id_json_session_id() {
    let body = br#"{"model":"claude-sonnet-4-5","metadata":{"user_id":"{\"device_id\":\"ab\",\"account_uuid\":\"\",\"session_id\":\"5f0c-sess\"}"},"messages":[]}"#;
    assert_eq!(session_key(None, body), Some("5f0c-sess".to_string()));
    assert_eq!(session_key(Some("  "), body), Some("5f0c-sess".to_string()));
}

#[test]
fn r1_legacy_user_id_suffix() {
    let body = br#"{"metadata":{"user_id":"user_abc123_account_9f2e_session_77aa-bb"}}"#;
    assert_eq!(session_key(None, body), Some("77aa-bb".to_string()));
}

#[test]
fn r1_no_key_means_no_affinity() {
    assert_eq!(session_key(None, br#"{"messages":[]}"#), None);
    assert_eq!(session_key(None, b"garbage"), None);
    let pool = [ok("a", 0.1), ok("b", 0.1)];
    assert_eq!(
        route(&pool, None, Some(&id("b")), &[], &policy()),
        Decision::Unbound(id("a"))
    );
}

#[test]
fn r2_bound_session_stays_even_past_the_threshold() {
    let pool = [ok("a", 0.1), ok("b", 0.99)];
    assert_eq!(
        route(&pool, Some("s"), Some(&id("b")), &[], &policy()),
        Decision::Kept(id("b"))
    );
}

#[test]
fn r3_new_session_goes_to_the_first_usable_account() {
    let pool = [
        dead("a"),
        limited("b", 2_000_000_000),
        ok("c", 0.5),
        ok("d", 0.0),
    ];
    assert_eq!(
        route(&pool, Some("s"), None, &[], &policy()),
        Decision::Bound(id("c"))
    );
}

#[test]
fn r3_new_session_skips_accounts_past_the_soft_threshold() {
    let pool = [ok("a", 0.97), ok("b", 0.2)];
    assert_eq!(
        route(&pool, Some("s"), None, &[], &policy()),
        Decision::Bound(id("b"))
    );
}

#[test]
fn r3_threshold_is_soft_when_everyone_is_past_it() {
    let pool = [ok("a", 0.97), ok("b", 0.99)];
    assert_eq!(
        route(&pool, Some("s"), None, &[], &policy()),
        Decision::Bound(id("a"))
    );
}

#[test]
fn r4_session_moves_when_its_account_is_limited() {
    let pool = [limited("a", 2_000_000_000), ok("b", 0.3)];
    assert_eq!(
        route(&pool, Some("s"), Some(&id("a")), &[], &policy()),
        Decision::Moved {
            from: id("a"),
            to: id("b")
        }
    );
}

#[test]
fn r5_all_limited_reports_the_earliest_reset() {
    let pool = [limited("a", 2_000), limited("b", 1_500), dead("c")];
    assert_eq!(
        route(&pool, Some("s"), Some(&id("a")), &[], &policy()),
        Decision::AllLimited {
            earliest_reset: Some(Timestamp::from_secs(1_500))
        }
    );
    assert_eq!(
        route(&[dead("a")], None, None, &[], &policy()),
        Decision::AllLimited {
            earliest_reset: None
        }
    );
}

#[test]
fn r6_idle_bindings_expire_after_the_ttl() {
    let ttl = Duration::from_secs(3600);
    let t0 = Timestamp::from_secs(1000);
    let mut a = Affinity::default();
    a.bind("s", id("x"), t0);
    assert!(a
        .get("s", t0.plus(Duration::from_secs(3599)), ttl)
        .is_some());
    assert!(a.get("s", t0.plus(ttl), ttl).is_none());
    assert_eq!(a.expire(t0.plus(ttl), ttl), vec!["s".to_string()]);
    assert!(a.is_empty());
}

#[test]
fn r7_excluded_accounts_are_skipped_for_that_request() {
    let pool = [ok("a", 0.1), ok("b", 0.1)];
    assert_eq!(
        route(&pool, Some("s"), Some(&id("a")), &[id("a")], &policy()),
        Decision::Moved {
            from: id("a"),
            to: id("b")
        }
    );
    assert_eq!(
        route(&pool, Some("s"), None, &[id("a"), id("b")], &policy()),
        Decision::AllLimited {
            earliest_reset: None
        }
    );
}

fn candidate() -> impl Strategy<Value = (bool, Option<u64>, f64)> {
    (
        proptest::bool::weighted(0.8),
        proptest::option::weighted(0.3, 1_000u64..100_000),
        0.0f64..1.2,
    )
}

fn pool_strategy() -> impl Strategy<Value = Vec<Candidate>> {
    proptest::collection::vec(candidate(), 1..12).prop_map(|cs| {
        cs.into_iter()
            .enumerate()
            .map(|(i, (routable, lim, util))| Candidate {
                id: id(&format!("acct{i}")),
                routable,
                limited_until: lim.map(Timestamp::from_secs),
                utilization_5h: util,
            })
            .collect()
    })
}

fn usable(c: &Candidate, exclude: &[AccountId]) -> bool {
    c.routable && c.limited_until.is_none() && !exclude.contains(&c.id)
}

proptest! {
    #![proptest_config(common::config())]
    /// R2–R5, R7: never picks a dead, limited or excluded account.
    #[test]
    fn r3_never_picks_an_unusable_account(
        pool in pool_strategy(),
        bound in proptest::option::of(0usize..12),
        excl in proptest::collection::vec(0usize..12, 0..3),
        has_session in proptest::bool::ANY,
    ) {
        let bound = bound.map(|i| id(&format!("acct{i}")));
        let exclude: Vec<AccountId> = excl.iter().map(|i| id(&format!("acct{i}"))).collect();
        let session = has_session.then_some("s");
        let d = route(&pool, session, bound.as_ref(), &exclude, &policy());
        if let Some(a) = d.account() {
            let c = pool.iter().find(|c| &c.id == a).expect("picked from the pool");
            prop_assert!(usable(c, &exclude), "picked unusable {c:?}");
        }
    }

    /// R2: a bound session keeps its account while it stays usable.
    #[test]
    fn r2_bound_session_keeps_a_usable_account(pool in pool_strategy(), which in 0usize..12) {
        let which = which % pool.len();
        let b = pool[which].id.clone();
        let d = route(&pool, Some("s"), Some(&b), &[], &policy());
        if usable(&pool[which], &[]) {
            prop_assert_eq!(d, Decision::Kept(b));
        } else {
            prop_assert_ne!(d, Decision::Kept(b));
        }
    }

    /// R3: new sessions skip accounts past the soft threshold while another is below it, and
    /// otherwise take the first usable account in drain order.
    #[test]
    fn r3_fill_first_with_soft_threshold(pool in pool_strategy()) {
        let p = policy();
        let d = route(&pool, Some("s"), None, &[], &p);
        let first_below = pool.iter().find(|c| usable(c, &[]) && c.utilization_5h < p.soft_threshold);
        let first_any = pool.iter().find(|c| usable(c, &[]));
        match (first_below, first_any) {
            (Some(c), _) => prop_assert_eq!(d, Decision::Bound(c.id.clone())),
            (None, Some(c)) => prop_assert_eq!(d, Decision::Bound(c.id.clone())),
            (None, None) => {
                let all_limited = matches!(d, Decision::AllLimited { .. });
                prop_assert!(all_limited);
            }
        }
    }

    /// R5: AllLimited only when no account can take the request, and its earliest_reset is the
    /// minimum over the routable limited accounts.
    #[test]
    fn r5_all_limited_only_when_nobody_can_serve(pool in pool_strategy()) {
        let d = route(&pool, Some("s"), None, &[], &policy());
        let any_usable = pool.iter().any(|c| usable(c, &[]));
        match d {
            Decision::AllLimited { earliest_reset } => {
                prop_assert!(!any_usable);
                let min = pool.iter().filter(|c| c.routable).filter_map(|c| c.limited_until).min();
                prop_assert_eq!(earliest_reset, min);
            }
            _ => prop_assert!(any_usable),
        }
    }
}

/// The rules of `specs/routing.md` by number: `**Rn. Title.**`.
fn spec_rules() -> std::collections::BTreeMap<u32, String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let spec = std::fs::read_to_string(root.join("specs/routing.md")).unwrap();
    spec.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("**R")?;
            let (n, title) = rest.split_once(". ")?;
            Some((n.parse().ok()?, title.split_once('.')?.0.to_string()))
        })
        .collect()
}

/// Every `Rn` a comment of the code names, with where.
fn labels_in(dir: &std::path::Path, out: &mut Vec<(String, u32, String)>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            labels_in(&p, out);
            continue;
        }
        if p.extension().is_none_or(|x| x != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        for (i, line) in text.lines().enumerate() {
            let Some((_, comment)) = line.split_once("//") else {
                continue;
            };
            let b = comment.as_bytes();
            for (j, _) in comment.match_indices('R') {
                let before_ok = j == 0 || !b[j - 1].is_ascii_alphanumeric();
                let digits: String = comment[j + 1..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                let after = comment[j + 1 + digits.len()..].chars().next();
                if before_ok
                    && !digits.is_empty()
                    && after.is_none_or(|c| !c.is_ascii_alphanumeric())
                {
                    out.push((
                        format!("{}:{}", p.display(), i + 1),
                        digits.parse().unwrap(),
                        line.trim().to_string(),
                    ));
                }
            }
        }
    }
}

#[test]
fn every_rule_label_in_the_code_names_a_rule_of_the_spec() {
    let rules = spec_rules();
    assert_eq!(
        rules.keys().copied().collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut labels = Vec::new();
    for dir in ["actors/src", "src"] {
        labels_in(&root.join(dir), &mut labels);
    }
    let routing = labels
        .iter()
        .filter(|(at, ..)| at.contains("routing.rs"))
        .count();
    assert!(
        routing >= 5,
        "the routing policy names its rules: {labels:?}"
    );
    for (at, n, line) in &labels {
        // Test data (an SSE block named R1) and HTTP versions are not rules.
        if line.contains("\\\"R") {
            continue;
        }
        assert!(
            rules.contains_key(n),
            "{at}: R{n} is no rule of specs/routing.md: {line}"
        );
    }
}

#[test]
fn each_decision_is_labelled_with_the_rule_that_makes_it() {
    // What each decision is, in the words of the spec's rule titles.
    let meaning = [
        ("Kept", "Affinity holds"),
        ("Bound", "Fill-first for new sessions"),
        ("Moved", "Moving"),
        ("Unbound", "Session key"),
        ("AllLimited", "All limited"),
    ];
    let rules = spec_rules();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let code = std::fs::read_to_string(root.join("src/routing.rs")).unwrap();
    let lines: Vec<&str> = code.lines().map(str::trim).collect();
    for (variant, title) in meaning {
        // The doc comment right above the variant starts with its rule.
        let at = lines
            .iter()
            .position(|l| {
                l.starts_with(&format!("{variant}(")) || l.starts_with(&format!("{variant} {{"))
            })
            .unwrap_or_else(|| panic!("Decision::{variant} not found"));
        let doc = (0..at)
            .rev()
            .map(|i| lines[i])
            .take_while(|l| l.starts_with("///"))
            .last()
            .unwrap_or_else(|| panic!("Decision::{variant} has no doc comment"));
        let n: u32 = doc
            .trim_start_matches("/// R")
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap_or_else(|_| panic!("Decision::{variant}'s doc names no rule: {doc}"));
        assert_eq!(
            rules.get(&n).map(String::as_str),
            Some(title),
            "Decision::{variant} is labelled R{n}"
        );
    }
}
