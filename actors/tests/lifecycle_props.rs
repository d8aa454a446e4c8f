//! Properties of the lifecycle machine over random event sequences. The harness plays the
//! actor: it tracks the refresh call in flight and delivers its outcome only while one is out.
//! Case count: proptest's default (256), raised with `PROPTEST_CASES` for long soaks.

use std::time::Duration;

use ccs_actors::lifecycle::{step, Effect, Event, Failure, Phase, Policy, State};
use ccs_actors::{Secret, Timestamp, Token};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Input {
    Wait(u64),
    Load(i64),
    Tick,
    LeadReached,
    /// Only delivered while a call is in flight (the harness checks).
    Succeed(i64),
    FailTransient(Option<u64>),
    FailFatal,
    Unauthorized,
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
        2 => Just(Input::Unauthorized),
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

/// One step of the run, as the properties see it.
struct Trace {
    before: State,
    event: Event,
    after: State,
    effects: Vec<Effect>,
    now: Timestamp,
    delivered_outcome: bool,
}

/// Runs the inputs from an unloaded machine; returns every step taken.
fn run(inputs: &[Input]) -> Result<Vec<Trace>, TestCaseError> {
    let mut now = Timestamp::from_secs(1_700_000_000);
    let mut state = State::unloaded(Policy::default());
    let mut in_flight = false;
    let mut traces = Vec::new();
    for (n, i) in inputs.iter().enumerate() {
        let event = match i {
            Input::Wait(s) => {
                now = now.plus(Duration::from_secs(*s));
                continue;
            }
            Input::Load(l) => Event::Loaded(token(now, *l, n)),
            Input::Tick => Event::Tick,
            Input::LeadReached => Event::LeadReached,
            Input::Succeed(l) if in_flight => Event::RefreshSucceeded(token(now, *l, n)),
            Input::FailTransient(r) if in_flight => Event::RefreshFailed(Failure::Transient {
                retry_after: r.map(Duration::from_secs),
            }),
            Input::FailFatal if in_flight => Event::RefreshFailed(Failure::Fatal),
            Input::Succeed(_) | Input::FailTransient(_) | Input::FailFatal => continue,
            Input::Unauthorized => Event::UpstreamUnauthorized,
            Input::Login(l) => Event::LoggedIn(token(now, *l, n)),
            Input::Logout => Event::LoggedOut,
        };
        let delivered_outcome =
            matches!(event, Event::RefreshSucceeded(_) | Event::RefreshFailed(_));
        if delivered_outcome {
            in_flight = false;
        }
        let (after, effects) = step(&state, event.clone(), now);
        for fx in &effects {
            if *fx == Effect::StartRefresh {
                prop_assert!(
                    !in_flight,
                    "second refresh started while one is in flight: {state:?} + {event:?}"
                );
                in_flight = true;
            }
        }
        traces.push(Trace {
            before: state,
            event,
            after,
            effects,
            now,
            delivered_outcome,
        });
        state = after;
    }
    Ok(traces)
}

proptest! {
    /// At most one refresh call in flight per account (checked inside `run`).
    #[test]
    fn at_most_one_refresh_in_flight(inputs in proptest::collection::vec(input(), 1..120)) {
        run(&inputs)?;
    }

    /// Dead is left only by a new login.
    #[test]
    fn dead_is_left_only_by_a_login(inputs in proptest::collection::vec(input(), 1..120)) {
        for t in run(&inputs)? {
            if t.before.phase == Phase::Dead && t.after.phase != Phase::Dead {
                prop_assert!(matches!(t.event, Event::LoggedIn(_)), "left Dead on {:?}", t.event);
            }
        }
    }

    /// What would be persisted is never Refreshing.
    #[test]
    fn persisted_phase_is_never_refreshing(inputs in proptest::collection::vec(input(), 1..120)) {
        for t in run(&inputs)? {
            prop_assert_ne!(t.after.durable_phase(), Phase::Refreshing);
        }
    }

    /// After RefreshSucceeded with a token valid past the lead, the state is Fresh and a timer
    /// is armed at its refresh point, which lies in the future.
    #[test]
    fn success_past_the_lead_is_fresh_with_a_timer(inputs in proptest::collection::vec(input(), 1..120)) {
        for t in run(&inputs)? {
            let Event::RefreshSucceeded(tok) = &t.event else { continue };
            if !t.delivered_outcome || t.before.stale_in_flight {
                continue;
            }
            if tok.expires_at > t.now.plus(t.before.policy.lead) {
                prop_assert_eq!(t.after.phase, Phase::Fresh);
                prop_assert!(t.effects.contains(&Effect::ArmTimer(t.after.refresh_at)));
                prop_assert!(t.after.refresh_at > t.now);
                prop_assert!(t.effects.contains(&Effect::Persist(tok.clone())));
            }
        }
    }

    /// A new token is persisted before anything publishes it, and every token the refresher
    /// returned for the current grant is persisted (a rotated refresh token is never dropped).
    #[test]
    fn new_tokens_are_persisted_before_they_are_published(inputs in proptest::collection::vec(input(), 1..120)) {
        for t in run(&inputs)? {
            let persisted = t.effects.iter().position(|e| matches!(e, Effect::Persist(_)));
            let published = t.effects.iter().position(|e| matches!(e, Effect::Publish(_)));
            if let (Some(p), Some(q)) = (persisted, published) {
                prop_assert!(p < q, "published before persisting: {:?}", t.effects);
            }
            if let Event::RefreshSucceeded(tok) = &t.event {
                if t.before.phase == Phase::Refreshing && !t.before.stale_in_flight {
                    prop_assert!(t.effects.contains(&Effect::Persist(tok.clone())));
                }
            }
        }
    }
}
