//! Walks `specs/token-lifecycle.toml` against `lifecycle::step`: one `check` helper, many rows.
//! Inside the crate, because it builds the table's states field by field (the fields are the
//! machine's own).
//!
//! The lists of states and events are derived from the machine's own enums (`Phase` and the
//! derived `EventKind`), through exhaustive matches: a new phase or event fails to compile here
//! until it is given its table states or classes, and then fails the test until the table has a
//! row for every pair. The shell state the machine now owns (the token, its generation, a token
//! still being written) is part of the states and is checked on every row.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use super::{step, Effect, Event, EventKind, Failure, Origin, Phase, Policy, State, PERSIST_RETRY};
use crate::{Secret, Timestamp, Token};
use serde::Deserialize;
use strum::IntoEnumIterator;

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
    /// The step makes a new token current (generation + 1). Default: the token is kept.
    #[serde(default)]
    adopts: bool,
}

/// The table states of each phase: the phase plus what is outstanding (a stale call, a token
/// being written). Exhaustive over `Phase`.
fn states_of(phase: Phase) -> &'static [&'static str] {
    match phase {
        Phase::Fresh => &["fresh", "fresh_refused"],
        Phase::Expiring => &["expiring", "expiring_refused"],
        Phase::Refreshing => &[
            "refreshing",
            "refreshing_unsaved",
            "refreshing_login",
            "refreshing_stale",
            "refreshing_stale_login",
        ],
        Phase::Dead => &["dead", "dead_stale"],
    }
}

/// The classes of each event kind (the token or the time it comes with). Exhaustive over
/// `EventKind`.
fn classes_of(kind: EventKind) -> &'static [&'static str] {
    match kind {
        EventKind::Loaded => &["valid", "inside_lead", "lapsed"],
        EventKind::LoadedDead => &[""],
        EventKind::LoadedInDoubt => &["valid", "lapsed"],
        EventKind::Tick | EventKind::LeadReached => &["not_due", "due"],
        EventKind::RefreshSucceeded => &["valid", "lapsed"],
        EventKind::RefreshFailed => &["transient", "unknown", "fatal"],
        EventKind::Persisted => &["unsaved_valid", "unsaved_lapsed", "other"],
        EventKind::PersistFailed => &[""],
        EventKind::UpstreamUnauthorized => &["current", "stale"],
        EventKind::CredentialRefused => &["current", "stale"],
        EventKind::Served => &[""],
        EventKind::Demand => &["after_gap", "within_gap"],
        EventKind::LoggedIn => &["valid", "lapsed"],
        EventKind::LoggedOut => &[""],
        EventKind::RefreshOwnedElsewhere => &[""],
        EventKind::TokenFromPeer | EventKind::PeerNews => &["valid", "lapsed"],
    }
}

fn all_states() -> Vec<&'static str> {
    Phase::iter()
        .flat_map(|p| states_of(p).iter().copied())
        .collect()
}

fn all_events() -> Vec<String> {
    EventKind::iter()
        .flat_map(|k| {
            let name: &'static str = k.into();
            classes_of(k).iter().map(move |c| {
                if c.is_empty() {
                    name.to_string()
                } else {
                    format!("{name}:{c}")
                }
            })
        })
        .collect()
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

fn token(name: &str, expires_at: Timestamp) -> Token {
    Token {
        access: Secret::new(format!("sk-ant-oat01-{name}")),
        refresh: Secret::new(format!("sk-ant-ort01-{name}")),
        expires_at,
    }
}

fn class_token(class: &str) -> Token {
    let expires_at = match class {
        "valid" | "unsaved_valid" | "other" => at(7200),
        "inside_lead" => at(120),
        "lapsed" | "unsaved_lapsed" => at(-10),
        other => panic!("unknown token class {other:?}"),
    };
    token(class, expires_at)
}

/// The current token of every non-dead state: generation 3.
const GENERATION: u64 = 3;

/// A concrete state for a table state name. `due` moves its refresh point or retry time into
/// the past; `unsaved` is the token being written in the states that have one.
fn state(name: &str, due: bool, unsaved: Token) -> State {
    let policy = Policy::default();
    let base = State {
        generation: GENERATION,
        ..State::unloaded(policy)
    };
    let current = |exp| Some(token("current", exp));
    match name {
        "fresh" if due => State {
            phase: Phase::Fresh,
            token: current(at(200)),
            expires_at: at(200),
            refresh_at: at(-100),
            ..base
        },
        "fresh" => State {
            phase: Phase::Fresh,
            token: current(at(3600)),
            expires_at: at(3600),
            refresh_at: at(3300),
            ..base
        },
        "expiring" => State {
            phase: Phase::Expiring,
            token: current(at(100)),
            expires_at: at(100),
            refresh_at: at(-200),
            retry_at: Some(if due { at(-1) } else { at(30) }),
            failures: 1,
            ..base
        },
        "fresh_refused" | "expiring_refused" => State {
            strikes: 1,
            refused_until: Some(at(30)),
            ..state(name.trim_end_matches("_refused"), due, unsaved)
        },
        "refreshing" => State {
            phase: Phase::Refreshing,
            token: current(at(100)),
            expires_at: at(100),
            refresh_at: at(-200),
            ..base
        },
        "refreshing_unsaved" | "refreshing_login" => State {
            unsaved: Some((
                unsaved,
                if name == "refreshing_login" {
                    Origin::Login
                } else {
                    Origin::Refresh
                },
            )),
            ..state("refreshing", due, class_token("valid"))
        },
        "refreshing_stale" => State {
            phase: Phase::Refreshing,
            token: current(at(3600)),
            expires_at: at(3600),
            refresh_at: at(3300),
            stale_in_flight: true,
            ..base
        },
        "refreshing_stale_login" => State {
            unsaved: Some((unsaved, Origin::Login)),
            ..state("refreshing_stale", due, class_token("valid"))
        },
        "dead" => State {
            generation: GENERATION,
            ..State::dead(policy)
        },
        "dead_stale" => State {
            stale_in_flight: true,
            ..state("dead", due, unsaved)
        },
        other => panic!("unknown state {other:?} in the table"),
    }
}

/// The generation a 401 is about: the current token's, or an older one's.
fn generation_class(class: &str) -> u64 {
    if class == "current" {
        GENERATION
    } else {
        GENERATION - 1
    }
}

/// The event for a table event name, whether its class asks for a due state, and the token a
/// state being written holds.
fn event(name: &str) -> (Event, bool, Token) {
    let (kind, class) = name.split_once(':').unwrap_or((name, ""));
    let default_unsaved = class_token("valid");
    match (kind, class) {
        ("loaded", c) => (Event::Loaded(class_token(c)), false, default_unsaved),
        ("loaded_dead", "") => (Event::LoadedDead, false, default_unsaved),
        ("loaded_in_doubt", c) => (Event::LoadedInDoubt(class_token(c)), false, default_unsaved),
        ("tick", c) => (Event::Tick, c == "due", default_unsaved),
        ("lead_reached", c) => (Event::LeadReached, c == "due", default_unsaved),
        ("refresh_succeeded", c) => (
            Event::RefreshSucceeded(class_token(c)),
            false,
            default_unsaved,
        ),
        ("refresh_failed", "transient") => (
            Event::RefreshFailed(Failure::Transient { retry_after: None }),
            false,
            default_unsaved,
        ),
        ("refresh_failed", "unknown") => (
            Event::RefreshFailed(Failure::Unknown),
            false,
            default_unsaved,
        ),
        ("refresh_failed", "fatal") => {
            (Event::RefreshFailed(Failure::Fatal), false, default_unsaved)
        }
        ("persisted", "other") => (
            Event::Persisted(token("not-the-unsaved-one", at(7200))),
            false,
            default_unsaved,
        ),
        ("persisted", c) => (Event::Persisted(class_token(c)), false, class_token(c)),
        ("persist_failed", "") => (Event::PersistFailed, false, default_unsaved),
        ("upstream_unauthorized", c) => (
            Event::UpstreamUnauthorized {
                generation: generation_class(c),
            },
            false,
            default_unsaved,
        ),
        ("credential_refused", c) => (
            Event::CredentialRefused {
                generation: generation_class(c),
            },
            false,
            default_unsaved,
        ),
        ("served", "") => (Event::Served, false, default_unsaved),
        ("demand", _) => (Event::Demand, false, default_unsaved),
        ("logged_in", c) => (Event::LoggedIn(class_token(c)), false, default_unsaved),
        ("logged_out", "") => (Event::LoggedOut, false, default_unsaved),
        ("refresh_owned_elsewhere", "") => (
            Event::RefreshOwnedElsewhere { until: at(120) },
            false,
            default_unsaved,
        ),
        ("token_from_peer", c) => (Event::TokenFromPeer(class_token(c)), false, default_unsaved),
        ("peer_news", c) => (Event::PeerNews(class_token(c)), false, default_unsaved),
        _ => panic!("unknown event {name:?} in the table"),
    }
}

fn state_name(s: &State) -> String {
    let origin = s.unsaved.as_ref().map(|(_, o)| *o);
    let refused = s.strikes > 0 && s.refused_until.is_some();
    match (s.phase, s.stale_in_flight, origin) {
        (Phase::Fresh, false, None) if refused => "fresh_refused",
        (Phase::Expiring, false, None) if refused => "expiring_refused",
        (Phase::Fresh, false, None) => "fresh",
        (Phase::Expiring, false, None) => "expiring",
        (Phase::Refreshing, false, None) => "refreshing",
        (Phase::Refreshing, false, Some(Origin::Refresh)) => "refreshing_unsaved",
        (Phase::Refreshing, false, Some(Origin::Login)) => "refreshing_login",
        (Phase::Refreshing, true, None) => "refreshing_stale",
        (Phase::Refreshing, true, Some(Origin::Login)) => "refreshing_stale_login",
        (Phase::Dead, false, None) => "dead",
        (Phase::Dead, true, None) => "dead_stale",
        _ => {
            return format!(
                "invalid: {:?} stale={} unsaved={origin:?}",
                s.phase, s.stale_in_flight
            )
        }
    }
    .to_string()
}

fn effect_name(fx: &Effect, before: &State, next: &State, event: &Event) -> String {
    match fx {
        Effect::StartRefresh(r) => match &next.token {
            Some(t) if t.refresh == *r => "start_refresh".into(),
            _ => "start_refresh:not-the-current-refresh-token".into(),
        },
        Effect::Persist(t) => {
            let carried = match event {
                Event::LoggedIn(e)
                | Event::RefreshSucceeded(e)
                | Event::TokenFromPeer(e)
                | Event::PeerNews(e) => e == t,
                _ => before.unsaved.as_ref().is_some_and(|(u, _)| u == t),
            };
            if carried {
                "persist".into()
            } else {
                "persist:not-the-event's-or-unsaved-token".into()
            }
        }
        Effect::PersistDead => "persist_dead".into(),
        Effect::ArmTimer(t) if Some(*t) == next.retry_at => "arm_timer:retry_at".into(),
        Effect::ArmTimer(t) if *t == next.refresh_at && next.phase == Phase::Fresh => {
            "arm_timer:refresh_at".into()
        }
        Effect::ArmTimer(t) if *t == now().plus(PERSIST_RETRY) => "arm_timer:persist_retry".into(),
        Effect::ArmTimer(t) => format!("arm_timer:{t:?}"),
        Effect::Publish(h) if *h == next.health() => "publish".into(),
        Effect::Publish(h) => format!("publish:stale {h:?}"),
    }
}

/// Whether the step made a new token current, and did so correctly: generation + 1 and the
/// token the event or the write carried. A token changing any other way is an error.
fn adoption(before: &State, after: &State, event: &Event) -> Result<bool, String> {
    if after.token == before.token && after.generation == before.generation {
        return Ok(false);
    }
    let expected = match event {
        Event::Loaded(t) | Event::LoadedInDoubt(t) | Event::Persisted(t) => Some(t),
        _ => None,
    };
    if after.generation == before.generation + 1
        && after.token.as_ref() == expected
        && after.expires_at == expected.map(|t| t.expires_at).unwrap_or_default()
    {
        Ok(true)
    } else {
        Err(format!(
            "the token changed wrongly: generation {} -> {}, token {:?}",
            before.generation, after.generation, after.token
        ))
    }
}

/// The state a row starts from: a demand finds the last refresh failure 10 s back (past the
/// 5 s demand gap) or 1 s back (within it).
fn before_state(row_state: &str, row_event: &str, due: bool, unsaved: Token) -> State {
    let mut s = state(row_state, due, unsaved);
    if s.phase == Phase::Expiring {
        s.failed_at = match row_event {
            "demand:after_gap" => Some(at(-10)),
            _ => Some(at(-1)),
        };
    }
    s
}

fn check(row: &Row) -> Result<(), String> {
    let (ev, due, unsaved) = event(&row.event);
    let before = before_state(&row.state, &row.event, due, unsaved);
    let (after, effects) = step(&before, ev.clone(), now());
    let got_next = state_name(&after);
    let got_fx: Vec<String> = effects
        .iter()
        .map(|f| effect_name(f, &before, &after, &ev))
        .collect();
    let adopts = adoption(&before, &after, &ev)
        .map_err(|e| format!("{} + {}: {e}", row.state, row.event))?;
    if got_next != row.next || got_fx != row.effects || adopts != row.adopts {
        return Err(format!(
            "{} + {}: table says {} {:?} adopts={}, step gives {} {:?} adopts={}",
            row.state, row.event, row.next, row.effects, row.adopts, got_next, got_fx, adopts
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
    let (states, events) = (all_states(), all_events());
    let table = load_table();
    let mut seen = BTreeSet::new();
    for r in &table.rows {
        assert!(states.contains(&r.state.as_str()), "unknown state {r:?}");
        assert!(events.contains(&r.event), "unknown event {r:?}");
        assert!(
            seen.insert((r.state.clone(), r.event.clone())),
            "listed twice: {} + {}",
            r.state,
            r.event
        );
    }
    let missing: Vec<String> = states
        .iter()
        .flat_map(|s| events.iter().map(move |e| (s.to_string(), e.clone())))
        .filter(|pair| !seen.contains(pair))
        .map(|(s, e)| format!("{s} + {e}"))
        .collect();
    assert!(missing.is_empty(), "missing from the table: {missing:?}");
}

#[test]
fn every_event_kind_and_phase_has_table_states_and_classes() {
    // The derived lists are not empty for any variant: a kind with no class would hide from the
    // table.
    for k in EventKind::iter() {
        assert!(!classes_of(k).is_empty(), "{k:?} has no classes");
    }
    for p in Phase::iter() {
        assert!(!states_of(p).is_empty(), "{p:?} has no states");
    }
    assert_eq!(
        EventKind::iter().count(),
        18,
        "a new event kind: give it rows"
    );
}
