//! Properties of the lifecycle machine over random event sequences. The harness plays the
//! actor and the outside world: it tracks the refresh call in flight and the token writes
//! outstanding, and delivers their outcomes only while they are out.
//!
//! Runs on a fixed seed (`PROPTEST_SEED` overrides it, `PROPTEST_CASES` raises the count), so
//! the same commit passes or fails the same way everywhere. Each property has a planted bug
//! (`actors/src/planted.rs`) that makes it fire: see `planted_bugs_make_each_property_fire`.

mod common;

use std::time::Duration;

use ccs_actors::lifecycle::{step, Effect, Event, Failure, Phase, Policy, State};
use ccs_actors::{Secret, Timestamp, Token};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

#[derive(Clone, Debug)]
enum Input {
    Wait(u64),
    Load(i64),
    Tick,
    /// The armed timer fires (delivered only if one is armed and due after a wait).
    LeadReached,
    /// Only delivered while a call is in flight (the harness checks).
    Succeed(i64),
    FailTransient(Option<u64>),
    FailFatal,
    /// The oldest outstanding write completes (or is refused).
    WriteDone(bool),
    /// A 401 to the current token (or, with `false`, to an older one).
    Unauthorized(bool),
    /// A 401 again right after the forced refresh (current token, or an older one).
    Refused(bool),
    /// A request with the current credential was served.
    Served,
    Login(i64),
    Logout,
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        3 => (0u64..7200).prop_map(Input::Wait),
        1 => (-600i64..7200).prop_map(Input::Load),
        2 => Just(Input::Tick),
        2 => Just(Input::LeadReached),
        3 => (-60i64..7200).prop_map(Input::Succeed),
        2 => proptest::option::of(0u64..600).prop_map(Input::FailTransient),
        1 => Just(Input::FailFatal),
        4 => prop_oneof![4 => Just(true), 1 => Just(false)].prop_map(Input::WriteDone),
        2 => any::<bool>().prop_map(Input::Unauthorized),
        1 => any::<bool>().prop_map(Input::Refused),
        1 => Just(Input::Served),
        1 => (-60i64..7200).prop_map(Input::Login),
        1 => Just(Input::Logout),
    ]
}

fn token(now: Timestamp, life: i64, n: usize) -> Token {
    let expires_at = if life >= 0 {
        now.plus(Duration::from_secs(life.unsigned_abs()))
    } else {
        now.minus(Duration::from_secs(life.unsigned_abs()))
    };
    Token {
        access: Secret::new(format!("a{n}")),
        refresh: Secret::new(format!("r{n}")),
        expires_at,
    }
}

/// What the outside world saw of one run; each property reads it.
#[derive(Default, Debug)]
struct World {
    /// A second `StartRefresh` while a call was out, or while a token was unsaved.
    double_refresh: Option<String>,
    /// A refresh started with a refresh token that is not the newest the authority issued.
    replayed: Option<String>,
    /// Dead left on anything but a login's token being written down.
    left_dead: Option<String>,
    /// The machine made current a token that was not durable.
    adopted_unsaved: Option<String>,
    /// A live (not dead) machine with no timer armed and nothing outstanding.
    stuck: Option<String>,
}

/// The authority's view: each refresh token's grant, and the newest refresh token of each.
#[derive(Default)]
struct Authority {
    grant_of: std::collections::HashMap<String, usize>,
    newest: std::collections::HashMap<usize, String>,
}

impl Authority {
    fn issue(&mut self, t: &Token, grant: usize) {
        let r = t.refresh.expose().to_string();
        self.grant_of.insert(r.clone(), grant);
        self.newest.insert(grant, r);
    }
}

/// Runs the inputs from an unloaded machine, playing the actor around it.
fn run(inputs: &[Input]) -> World {
    let mut w = World::default();
    let mut now = Timestamp::from_secs(1_700_000_000);
    let mut state = State::unloaded(Policy::default());
    let mut in_flight = false;
    let mut writes: std::collections::VecDeque<Token> = Default::default();
    let mut durable: Vec<Token> = Vec::new();
    // The authority: each refresh token's grant, and the newest refresh token of each grant.
    let mut authority = Authority::default();
    // The grant the call in flight refreshes.
    let mut call_grant = 0usize;
    let mut timer: Option<Timestamp> = None;
    let mut loaded = false;
    for (n, i) in inputs.iter().enumerate() {
        let event = match i {
            Input::Wait(s) => {
                now = now.plus(Duration::from_secs(*s));
                continue;
            }
            // The persisted token arrives once, as the actor's first event.
            Input::Load(l) if !loaded => {
                let t = token(now, *l, n);
                durable.push(t.clone());
                authority.issue(&t, n);
                Event::Loaded(t)
            }
            Input::Load(_) => continue,
            Input::Tick => Event::Tick,
            Input::LeadReached => match timer {
                Some(at) if at <= now => {
                    timer = None;
                    Event::LeadReached
                }
                _ => continue,
            },
            Input::Succeed(l) if in_flight => {
                let t = token(now, *l, n);
                authority.issue(&t, call_grant);
                Event::RefreshSucceeded(t)
            }
            Input::FailTransient(r) if in_flight => Event::RefreshFailed(Failure::Transient {
                retry_after: r.map(Duration::from_secs),
            }),
            Input::FailFatal if in_flight => Event::RefreshFailed(Failure::Fatal),
            Input::Succeed(_) | Input::FailTransient(_) | Input::FailFatal => continue,
            Input::WriteDone(ok) => match writes.pop_front() {
                Some(t) if *ok => {
                    durable.push(t.clone());
                    Event::Persisted(t)
                }
                Some(_) => Event::PersistFailed,
                None => continue,
            },
            Input::Unauthorized(current) => Event::UpstreamUnauthorized {
                generation: if *current {
                    state.generation()
                } else {
                    state.generation().saturating_sub(1)
                },
            },
            Input::Refused(current) => Event::CredentialRefused {
                generation: if *current {
                    state.generation()
                } else {
                    state.generation().saturating_sub(1)
                },
            },
            Input::Served => Event::Served,
            Input::Login(l) => {
                let t = token(now, *l, n);
                authority.issue(&t, n);
                Event::LoggedIn(t)
            }
            Input::Logout => Event::LoggedOut,
        };
        loaded = true;
        if matches!(event, Event::RefreshSucceeded(_) | Event::RefreshFailed(_)) {
            in_flight = false;
        }
        let before = state.clone();
        let (after, effects) = step(&state, event.clone(), now);
        for fx in &effects {
            match fx {
                Effect::StartRefresh(r) => {
                    if in_flight || after.unsaved().is_some() {
                        w.double_refresh
                            .get_or_insert(format!("{before:?} + {event:?}"));
                    }
                    let grant = authority.grant_of.get(r.expose()).copied();
                    let current = grant.and_then(|g| authority.newest.get(&g));
                    if current.map(String::as_str) != Some(r.expose()) {
                        w.replayed.get_or_insert(format!("{before:?} + {event:?}"));
                    }
                    call_grant = grant.unwrap_or(usize::MAX);
                    in_flight = true;
                }
                Effect::Persist(t) => writes.push_back(t.clone()),
                Effect::ArmTimer(at) => timer = Some(*at),
                Effect::PersistDead | Effect::Publish(_) => {}
            }
        }
        if before.phase() == Phase::Dead
            && after.phase() != Phase::Dead
            && !matches!(event, Event::LoggedIn(_))
        {
            w.left_dead.get_or_insert(format!("{before:?} + {event:?}"));
        }
        if let Some(t) = &after.token() {
            if !durable.contains(t) {
                w.adopted_unsaved
                    .get_or_insert(format!("{before:?} + {event:?}"));
            }
        }
        // Liveness: something will happen without outside help.
        let outstanding = in_flight || !writes.is_empty() || after.stale_in_flight();
        if after.phase() != Phase::Dead
            && after.token().is_some()
            && timer.is_none()
            && !outstanding
        {
            w.stuck
                .get_or_insert(format!("{before:?} + {event:?} -> {after:?}"));
        }
        state = after;
    }
    w
}

/// The runner every property uses: a fixed seed unless `PROPTEST_SEED` says otherwise.
fn runner() -> TestRunner {
    TestRunner::new(common::config())
}

type Property = fn(&World) -> Option<&String>;

/// The properties, by name: each returns the first counterexample of a run.
const PROPERTIES: &[(&str, Property)] = &[
    ("single flight", |w| w.double_refresh.as_ref()),
    ("no replay of a rotated refresh token", |w| {
        w.replayed.as_ref()
    }),
    ("dead is left only by a login", |w| w.left_dead.as_ref()),
    ("only durable tokens are used", |w| {
        w.adopted_unsaved.as_ref()
    }),
    ("liveness: a timer or a call is always out", |w| {
        w.stuck.as_ref()
    }),
];

/// Searches for a run that breaks `property`; `Err` names it.
fn search(property: Property) -> Result<(), String> {
    let strategy = proptest::collection::vec(input(), 1..160);
    runner()
        .run(&strategy, |inputs| match property(&run(&inputs)) {
            Some(bad) => Err(TestCaseError::fail(bad.clone())),
            None => Ok(()),
        })
        .map_err(|e| e.to_string())
}

#[test]
fn every_property_holds() {
    let failed: Vec<String> = PROPERTIES
        .iter()
        .filter_map(|(name, p)| search(*p).err().map(|e| format!("{name}: {e}")))
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

/// The teeth of each property: with its planted bug, the same search finds a counterexample.
#[cfg(feature = "planted")]
#[test]
fn planted_bugs_make_each_property_fire() {
    use ccs_actors::planted::{plant, Bug};
    let cases = [
        (Bug::DoubleRefresh, "single flight"),
        (Bug::TickRevivesDead, "dead is left only by a login"),
        (Bug::TokenSavedLate, "only durable tokens are used"),
        (
            Bug::NoRetryTimer,
            "liveness: a timer or a call is always out",
        ),
    ];
    for (bug, name) in cases {
        let property = PROPERTIES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| *p)
            .expect("a property of that name");
        let _planted = plant(bug);
        assert!(
            search(property).is_err(),
            "{name} did not fire with {bug:?} planted"
        );
    }
}
