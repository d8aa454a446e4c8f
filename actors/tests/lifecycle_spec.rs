//! Walks `specs/token-lifecycle.toml` against `lifecycle::step`: one `check` helper, many rows.
//! Fails when a (state, event) pair is missing from the table or listed twice.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use ccs_actors::lifecycle::{step, Effect, Event, Failure, Phase, Policy, State};
use ccs_actors::{Secret, Timestamp, Token};
use serde::Deserialize;

const STATES: &[&str] = &[
    "fresh",
    "expiring",
    "refreshing",
    "refreshing_stale",
    "dead",
    "dead_stale",
];
const EVENTS: &[&str] = &[
    "loaded:valid",
    "loaded:inside_lead",
    "loaded:lapsed",
    "tick:not_due",
    "tick:due",
    "lead_reached:not_due",
    "lead_reached:due",
    "refresh_succeeded:valid",
    "refresh_succeeded:lapsed",
    "refresh_failed:transient",
    "refresh_failed:fatal",
    "upstream_unauthorized",
    "logged_in:valid",
    "logged_in:lapsed",
    "logged_out",
];

#[derive(Deserialize)]
struct Table {
    rows: Vec<Row>,
}

#[derive(Deserialize, Debug)]
struct Row {
    state: String,
    event: String,
    next: String,
    effects: Vec<String>,
}

fn now() -> Timestamp {
    Timestamp::from_secs(1_000_000)
}

fn at(offset_secs: i64) -> Timestamp {
    if offset_secs >= 0 {
        now().plus(Duration::from_secs(offset_secs.unsigned_abs()))
    } else {
        now().minus(Duration::from_secs(offset_secs.unsigned_abs()))
    }
}

fn load_table() -> Table {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../specs/token-lifecycle.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    toml::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// A concrete state for a table state name; `due` moves its refresh point or retry time into
/// the past so that a time event finds it due.
fn state(name: &str, due: bool) -> State {
    let policy = Policy::default();
    let base = State::unloaded(policy);
    match name {
        "fresh" if due => State {
            phase: Phase::Fresh,
            expires_at: at(200),
            refresh_at: at(-100),
            ..base
        },
        "fresh" => State {
            phase: Phase::Fresh,
            expires_at: at(3600),
            refresh_at: at(3300),
            ..base
        },
        "expiring" => State {
            phase: Phase::Expiring,
            expires_at: at(100),
            refresh_at: at(-200),
            retry_at: Some(if due { at(-1) } else { at(30) }),
            failures: 1,
            ..base
        },
        "refreshing" => State {
            phase: Phase::Refreshing,
            expires_at: at(100),
            refresh_at: at(-200),
            ..base
        },
        "refreshing_stale" => State {
            phase: Phase::Refreshing,
            expires_at: at(3600),
            refresh_at: at(3300),
            stale_in_flight: true,
            ..base
        },
        "dead" => State::dead(policy),
        "dead_stale" => State {
            stale_in_flight: true,
            ..State::dead(policy)
        },
        other => panic!("unknown state {other:?} in the table"),
    }
}

fn token(class: &str) -> Token {
    let expires_at = match class {
        "valid" => at(7200),
        "inside_lead" => at(120),
        "lapsed" => at(-10),
        other => panic!("unknown token class {other:?}"),
    };
    Token {
        access: Secret::new(format!("sk-ant-oat01-{class}")),
        refresh: Secret::new(format!("sk-ant-ort01-{class}")),
        expires_at,
    }
}

/// The event for a table event name, and whether its class asks for a due state.
fn event(name: &str) -> (Event, bool) {
    let (kind, class) = name.split_once(':').unwrap_or((name, ""));
    match (kind, class) {
        ("loaded", c) => (Event::Loaded(token(c)), false),
        ("tick", c) => (Event::Tick, c == "due"),
        ("lead_reached", c) => (Event::LeadReached, c == "due"),
        ("refresh_succeeded", c) => (Event::RefreshSucceeded(token(c)), false),
        ("refresh_failed", "transient") => (
            Event::RefreshFailed(Failure::Transient { retry_after: None }),
            false,
        ),
        ("refresh_failed", "fatal") => (Event::RefreshFailed(Failure::Fatal), false),
        ("upstream_unauthorized", "") => (Event::UpstreamUnauthorized, false),
        ("logged_in", c) => (Event::LoggedIn(token(c)), false),
        ("logged_out", "") => (Event::LoggedOut, false),
        _ => panic!("unknown event {name:?} in the table"),
    }
}

fn state_name(s: &State) -> &'static str {
    match (s.phase, s.stale_in_flight) {
        (Phase::Fresh, false) => "fresh",
        (Phase::Expiring, false) => "expiring",
        (Phase::Refreshing, false) => "refreshing",
        (Phase::Refreshing, true) => "refreshing_stale",
        (Phase::Dead, false) => "dead",
        (Phase::Dead, true) => "dead_stale",
        (Phase::Fresh | Phase::Expiring, true) => "invalid: stale flag outside refreshing/dead",
    }
}

fn effect_name(fx: &Effect, next: &State, event: &Event) -> String {
    match fx {
        Effect::StartRefresh => "start_refresh".into(),
        Effect::Persist(t) => {
            let carried = match event {
                Event::LoggedIn(e) | Event::RefreshSucceeded(e) => e == t,
                _ => false,
            };
            if carried {
                "persist".into()
            } else {
                "persist:not-the-event's-token".into()
            }
        }
        Effect::PersistDead => "persist_dead".into(),
        Effect::ArmTimer(t) if Some(*t) == next.retry_at => "arm_timer:retry_at".into(),
        Effect::ArmTimer(t) if *t == next.refresh_at => "arm_timer:refresh_at".into(),
        Effect::ArmTimer(t) => format!("arm_timer:{t:?}"),
        Effect::Publish(h) if *h == next.health() => "publish".into(),
        Effect::Publish(h) => format!("publish:stale {h:?}"),
    }
}

fn check(row: &Row) -> Result<(), String> {
    let (ev, due) = event(&row.event);
    let before = state(&row.state, due);
    let (after, effects) = step(&before, ev.clone(), now());
    let got_next = state_name(&after);
    let got_fx: Vec<String> = effects
        .iter()
        .map(|f| effect_name(f, &after, &ev))
        .collect();
    if got_next != row.next || got_fx != row.effects {
        return Err(format!(
            "{} + {}: table says {} {:?}, step gives {} {:?}",
            row.state, row.event, row.next, row.effects, got_next, got_fx
        ));
    }
    Ok(())
}

#[test]
fn every_row_of_the_table_matches_step() {
    let table = load_table();
    let failures: Vec<String> = table.rows.iter().filter_map(|r| check(r).err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} rows disagree:\n{}",
        failures.len(),
        table.rows.len(),
        failures.join("\n")
    );
}

#[test]
fn the_table_lists_every_pair_exactly_once() {
    let table = load_table();
    let mut seen = BTreeSet::new();
    for r in &table.rows {
        assert!(STATES.contains(&r.state.as_str()), "unknown state {r:?}");
        assert!(EVENTS.contains(&r.event.as_str()), "unknown event {r:?}");
        assert!(
            seen.insert((r.state.clone(), r.event.clone())),
            "listed twice: {} + {}",
            r.state,
            r.event
        );
    }
    let missing: Vec<String> = STATES
        .iter()
        .flat_map(|s| EVENTS.iter().map(move |e| (s.to_string(), e.to_string())))
        .filter(|pair| !seen.contains(pair))
        .map(|(s, e)| format!("{s} + {e}"))
        .collect();
    assert!(missing.is_empty(), "missing from the table: {missing:?}");
}
