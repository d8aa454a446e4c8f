//! Walks `specs/failover.toml` against the pure failover policy (`src/proxy/failover.rs`).
//!
//! `step`: every attempt the policy can be given (each kind; for an answer, each status of a
//! representative list crossed with each verdict) with and without the forced refresh spent must
//! match exactly one row, and `step` must return that row's `next`. `conclude`: each row is one
//! case; every reason and every ending must appear in some row. The lists of kinds, reasons,
//! verdicts and endings come from successor chains written as exhaustive matches, so a new
//! variant fails to compile here until it is listed, and then fails the walk until the table has
//! its rows.

use std::path::PathBuf;

use ccs::proxy::failover::{conclude, step, Attempt, Ending, Left, Step};
use ccs_actors::quota::Verdict;
use ccs_actors::Timestamp;
use serde::Deserialize;

#[derive(Deserialize)]
struct Table {
    step: Vec<StepRow>,
    end: Vec<EndRow>,
}

#[derive(Deserialize, Debug)]
struct StepRow {
    attempt: String,
    status: Option<String>,
    verdict: Option<String>,
    refreshed: Option<String>,
    next: String,
}

#[derive(Deserialize, Debug)]
struct EndRow {
    why: String,
    left: Vec<String>,
    #[serde(default)]
    kept_403: bool,
    ending: String,
}

fn table() -> Table {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("specs/failover.toml");
    let text = std::fs::read_to_string(&path).expect("specs/failover.toml");
    toml::from_str(&text).expect("the failover table parses")
}

/// Every reason, by a chain each variant must join.
fn reasons() -> Vec<Left> {
    let mut all = vec![Left::RateLimited];
    loop {
        let next = match *all.last().expect("non-empty") {
            Left::RateLimited => Left::Unreachable,
            Left::Unreachable => Left::TimedOut,
            Left::TimedOut => Left::Unauthorized {
                after_refresh: false,
            },
            Left::Unauthorized {
                after_refresh: false,
            } => Left::Unauthorized {
                after_refresh: true,
            },
            Left::Unauthorized {
                after_refresh: true,
            } => Left::NoToken,
            Left::NoToken => Left::Forbidden,
            Left::Forbidden => return all,
        };
        all.push(next);
    }
}

fn reason_name(l: Left) -> &'static str {
    match l {
        Left::RateLimited => "rate_limited",
        Left::Unreachable => "unreachable",
        Left::TimedOut => "timed_out",
        Left::Unauthorized {
            after_refresh: true,
        } => "unauthorized_after_refresh",
        Left::Unauthorized {
            after_refresh: false,
        } => "unauthorized_refresh_failed",
        Left::NoToken => "no_token",
        Left::Forbidden => "forbidden",
    }
}

fn reason(name: &str) -> Left {
    reasons()
        .into_iter()
        .find(|l| reason_name(*l) == name)
        .unwrap_or_else(|| panic!("no reason named {name:?} in the failover table"))
}

fn endings() -> Vec<Ending> {
    let mut all = vec![Ending::RelayForbidden];
    loop {
        let next = match *all.last().expect("non-empty") {
            Ending::RelayForbidden => Ending::AllLimited,
            Ending::AllLimited => Ending::TimedOut,
            Ending::TimedOut => Ending::Failed,
            Ending::Failed => return all,
        };
        all.push(next);
    }
}

fn ending_name(e: Ending) -> &'static str {
    match e {
        Ending::RelayForbidden => "relay_forbidden",
        Ending::AllLimited => "all_limited",
        Ending::TimedOut => "timed_out",
        Ending::Failed => "failed",
    }
}

fn verdicts() -> Vec<Verdict> {
    let until = Timestamp::from_secs(1_000);
    let mut all = vec![Verdict::Ok];
    loop {
        let next = match *all.last().expect("non-empty") {
            Verdict::Ok => Verdict::Limited { until },
            Verdict::Limited { .. } => Verdict::BackedOff { until },
            Verdict::BackedOff { .. } => Verdict::RetryRequest,
            Verdict::RetryRequest => return all,
        };
        all.push(next);
    }
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Ok => "ok",
        Verdict::Limited { .. } => "limited",
        Verdict::BackedOff { .. } => "backed_off",
        Verdict::RetryRequest => "retry_request",
    }
}

/// The statuses an answer is tried with: the three the policy names, and a spread of the rest.
const STATUSES: &[u16] = &[200, 201, 400, 401, 403, 404, 413, 429, 500, 502, 503, 529];

/// Every attempt the policy can be given, by a chain over its kinds.
fn attempts() -> Vec<Attempt> {
    let mut all = Vec::new();
    let mut kind = Attempt::Unreachable;
    loop {
        match kind {
            Attempt::Answered { .. } => {
                for &status in STATUSES {
                    for verdict in verdicts() {
                        all.push(Attempt::Answered { status, verdict });
                    }
                }
            }
            other => all.push(other),
        }
        kind = match kind {
            Attempt::Unreachable => Attempt::TimedOut,
            Attempt::TimedOut => Attempt::RefreshFailed,
            Attempt::RefreshFailed => Attempt::Answered {
                status: 0,
                verdict: Verdict::Ok,
            },
            Attempt::Answered { .. } => return all,
        };
    }
}

/// The table's words for an attempt: kind, status class, verdict.
fn describe(a: Attempt) -> (&'static str, Option<String>, Option<&'static str>) {
    match a {
        Attempt::Unreachable => ("unreachable", None, None),
        Attempt::TimedOut => ("timed_out", None, None),
        Attempt::RefreshFailed => ("refresh_failed", None, None),
        Attempt::Answered { status, verdict } => {
            let class = match status {
                401 | 403 | 429 => status.to_string(),
                _ => "other".to_string(),
            };
            ("answered", Some(class), Some(verdict_name(verdict)))
        }
    }
}

fn matches(row: &StepRow, a: Attempt, refreshed: bool) -> bool {
    let (kind, class, verdict) = describe(a);
    let refreshed = if refreshed { "yes" } else { "no" };
    row.attempt == kind
        && row
            .status
            .as_deref()
            .is_none_or(|s| Some(s) == class.as_deref())
        && row.verdict.as_deref().is_none_or(|v| Some(v) == verdict)
        && row.refreshed.as_deref().is_none_or(|r| r == refreshed)
}

fn step_name(s: Step) -> String {
    match s {
        Step::Relay => "relay".into(),
        Step::Refresh => "refresh".into(),
        Step::Leave(why) => format!("leave:{}", reason_name(why)),
    }
}

/// Every disagreement between the table and the policy, as lines to print.
fn walk() -> Vec<String> {
    let t = table();
    let mut wrong = Vec::new();
    for a in attempts() {
        for refreshed in [false, true] {
            let rows: Vec<&StepRow> = t.step.iter().filter(|r| matches(r, a, refreshed)).collect();
            let got = step_name(step(a, refreshed));
            match rows.as_slice() {
                [row] if row.next == got => {}
                [row] => wrong.push(format!(
                    "{a:?} refreshed={refreshed}: the table says {}, step says {got}",
                    row.next
                )),
                [] => wrong.push(format!("{a:?} refreshed={refreshed}: no row")),
                many => wrong.push(format!(
                    "{a:?} refreshed={refreshed}: {} rows match: {many:?}",
                    many.len()
                )),
            }
        }
    }
    for row in &t.end {
        let left: Vec<Left> = row.left.iter().map(|n| reason(n)).collect();
        let got = ending_name(conclude(&left, row.kept_403));
        if got != row.ending {
            wrong.push(format!(
                "end {:?} kept_403={} ({}): the table says {}, conclude says {got}",
                row.left, row.kept_403, row.why, row.ending
            ));
        }
    }
    wrong
}

#[test]
fn the_policy_is_the_table() {
    let wrong = walk();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn every_reason_and_every_ending_has_a_row() {
    let t = table();
    for l in reasons() {
        let name = reason_name(l);
        assert!(
            t.end.iter().any(|r| r.left.iter().any(|n| n == name)),
            "no end row leaves an account for {name}"
        );
    }
    for e in endings() {
        let name = ending_name(e);
        assert!(
            t.end.iter().any(|r| r.ending == name),
            "no end row ends in {name}"
        );
    }
    // Every `leave:` of the step rows is a reason the end rows know.
    for row in &t.step {
        if let Some(name) = row.next.strip_prefix("leave:") {
            reason(name);
        }
    }
}

/// The walk is a check that can fail: each bug planted in the policy makes rows disagree.
#[cfg(feature = "planted")]
#[test]
fn a_planted_policy_bug_breaks_the_table() {
    use ccs_actors::planted::{plant, Bug};
    for bug in [Bug::RelayRejectedWindow, Bug::UnauthorizedIsQuota] {
        let _planted = plant(bug);
        assert!(!walk().is_empty(), "{bug:?} planted, yet every row agrees");
    }
}
