//! What a simulated world is (accounts, sessions, faults) and what a run reports, plus the two
//! ways to make worlds: `generate` from a seed and a fault list (`ccs sim run`), and `random`
//! from a seeded generator (the property test and `ccs sim soak` share it). Specs serialise to
//! JSON, the form failing worlds are printed in and kept as regressions.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// One simulated world.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    pub seed: u64,
    /// In pool (drain) order.
    pub accounts: Vec<AccountSpec>,
    pub token_ttl_secs: u64,
    pub sessions: Vec<SessionSpec>,
    pub faults: Vec<FaultAt>,
    pub hours: u64,
    /// The conversations think (and call tools), on a model that treats another account's
    /// thinking blocks this way; `None`: plain requests with no history (worlds kept from
    /// before thinking was simulated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<ThinkingWorld>,
}

/// What the conversations of a thinking world send.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThinkingWorld {
    pub model: String,
    /// What the simulated model does with another organization's blocks.
    pub binding: crate::sim::scenario::ThinkingBinding,
    /// Manual thinking (`enabled`, where the model takes it), else adaptive.
    pub manual: bool,
    /// Tool calls in each of the conversation's tool loops.
    pub tools: u32,
}

/// The thinking a world of this seed runs with: drawn from a generator of its own, so the
/// rest of a world drawn from the same seed is what it was before thinking was simulated.
pub fn thinking_for(seed: u64) -> Option<ThinkingWorld> {
    use crate::sim::scenario::ThinkingBinding;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x7468_696e_6b69_6e67);
    if rng.random_bool(0.25) {
        return None;
    }
    let (model, binding, manual) = match rng.random_range(0..5) {
        0 => (
            "claude-opus-4-6",
            ThinkingBinding::Reject,
            rng.random_bool(0.5),
        ),
        1 => ("claude-sonnet-5-5", ThinkingBinding::Drop, false),
        2 => ("claude-opus-5-5", ThinkingBinding::Accept, false),
        // Claude Code's default model refusing: ccs learns it from the first 400.
        3 => ("claude-opus-5-5", ThinkingBinding::Reject, false),
        // A model ccs has no default for.
        _ => ("fable-9", ThinkingBinding::Reject, false),
    };
    Some(ThinkingWorld {
        model: model.into(),
        binding,
        manual,
        tools: rng.random_range(1..=4),
    })
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountSpec {
    pub five_hour: u64,
    pub seven_day: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSpec {
    pub start_min: u64,
    pub turns: u32,
    pub gap_min: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultAt {
    pub at_min: u64,
    pub fault: Fault,
}

/// What can go wrong, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fault {
    /// The next refresh of the account meets a token endpoint that answers 503.
    RefreshTransient(usize),
    /// The account's grant is revoked at the authority.
    RefreshFatal(usize),
    /// The next refresh of the account waits this many seconds before reaching the authority.
    TokenSlow(usize, u64),
    Status429(usize),
    Status429Retry(usize),
    Status401(usize),
    Status529(usize),
    ResetBeforeHeaders(usize),
    ResetMidStream(usize),
    /// The daemon crashes and restarts: actors rebuilt from the store.
    Crash,
    /// The laptop sleeps: the clock jumps this many minutes at once.
    ClockJump(u64),
    Pause(usize),
    Resume(usize),
    /// The account is used outside ccs (claude.ai, another machine): this many units of both
    /// windows are spent, so the daemon learns of it only from the next 429.
    ExternalUse(usize, u64),
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    pub requests: u64,
    pub served: BTreeMap<String, u64>,
    /// Hops by reason.
    pub hops: BTreeMap<String, u64>,
    /// Successful refreshes at the authority, and calls.
    pub refreshes: u64,
    pub refresh_calls: u64,
    /// Requests that did not end in a served answer, by why.
    pub failed: BTreeMap<String, u64>,
    /// Invariant violations: must be empty.
    pub violations: Vec<String>,
    /// Share of what the authority would really have served (each account's 5-hour window,
    /// capped by what its weekly window had left) that was used when the first request was
    /// refused. `None`: no request was ever refused (see `pool_efficiency_note`).
    pub pool_efficiency: Option<f64>,
    /// Why there is no efficiency figure, when there is none.
    pub pool_efficiency_note: Option<String>,
    pub faults_injected: u64,
    /// The runway forecast against what happened: the minute the pool first ran dry, and what
    /// the forecast made an hour before said (`None`: it never ran dry, or in the first hour).
    pub runway: Option<RunwayCheck>,
}

/// What the forecast an hour before the pool ran dry said.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunwayCheck {
    /// The minute of the run the first request was refused with every account limited.
    pub dry_min: u64,
    /// The minute the forecast said, made at `dry_min - 60` (`None`: it said the pool would
    /// not run dry, or knew nothing yet).
    pub forecast_min: Option<f64>,
}

/// A spec from a seed: `accounts` accounts with random budgets, `sessions` sessions spread over
/// `hours`, and the named faults at random times.
pub fn generate(
    seed: u64,
    accounts: usize,
    sessions: usize,
    hours: u64,
    faults: &[&str],
) -> Result<Spec, String> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let accounts = accounts.clamp(1, 64);
    let hours = hours.max(1);
    let minutes = hours * 60;
    let mut spec = Spec {
        seed,
        accounts: (0..accounts)
            .map(|_| AccountSpec {
                five_hour: rng.random_range(10..=60),
                seven_day: rng.random_range(100..=600),
            })
            .collect(),
        token_ttl_secs: rng.random_range(1800..=8 * 3600),
        sessions: (0..sessions)
            .map(|_| SessionSpec {
                start_min: rng.random_range(0..minutes),
                turns: rng.random_range(1..=30),
                gap_min: rng.random_range(1..=10),
            })
            .collect(),
        faults: Vec::new(),
        hours,
        thinking: thinking_for(seed),
    };
    for name in faults {
        let at_min = rng.random_range(0..minutes);
        let i = rng.random_range(0..accounts);
        let fault = match *name {
            "refresh" | "refresh_transient" => Fault::RefreshTransient(i),
            "fatal" | "refresh_fatal" => Fault::RefreshFatal(i),
            "slow" | "token_slow" => Fault::TokenSlow(i, rng.random_range(1..=120)),
            "429" => Fault::Status429(i),
            "429_retry" => Fault::Status429Retry(i),
            "401" => Fault::Status401(i),
            "529" => Fault::Status529(i),
            "reset" | "reset_before_headers" => Fault::ResetBeforeHeaders(i),
            "midstream" | "reset_mid_stream" => Fault::ResetMidStream(i),
            "crash" => Fault::Crash,
            "jump" | "clock_jump" => Fault::ClockJump(rng.random_range(5..=240)),
            "pause" => Fault::Pause(i),
            "external" | "external_use" => Fault::ExternalUse(i, rng.random_range(1..=60)),
            other => return Err(format!("unknown fault {other:?}: use refresh, fatal, slow, 429, 429_retry, 401, 529, reset, midstream, crash, jump, pause or external")),
        };
        spec.faults.push(FaultAt { at_min, fault });
    }
    Ok(spec)
}

/// A random world, the same distribution the property test explores: 1–8 accounts with small
/// budgets (so limits are hit), a 15-minute or longer token life, 1–15 sessions over 1–4 hours,
/// and up to 8 faults of any kind.
pub fn random(rng: &mut impl Rng) -> Spec {
    let n = rng.random_range(1..=8usize);
    let hours = rng.random_range(1..=4u64);
    let minutes = hours * 60;
    let accounts = (0..n)
        .map(|_| AccountSpec {
            five_hour: rng.random_range(1..=30),
            seven_day: rng.random_range(5..=200),
        })
        .collect();
    let token_ttl_secs = if rng.random_bool(0.5) {
        900
    } else {
        rng.random_range(1800..=8 * 3600)
    };
    let sessions = (0..rng.random_range(1..=15))
        .map(|_| SessionSpec {
            start_min: rng.random_range(0..minutes),
            turns: rng.random_range(1..=25),
            gap_min: rng.random_range(1..=10),
        })
        .collect();
    let faults = (0..rng.random_range(0..=8))
        .map(|_| {
            let i = rng.random_range(0..n);
            let fault = match rng.random_range(0..14) {
                0 => Fault::RefreshTransient(i),
                1 => Fault::RefreshFatal(i),
                2 => Fault::TokenSlow(i, rng.random_range(1..900)),
                3 => Fault::Status429(i),
                4 => Fault::Status429Retry(i),
                5 => Fault::Status401(i),
                6 => Fault::Status529(i),
                7 => Fault::ResetBeforeHeaders(i),
                8 => Fault::ResetMidStream(i),
                9 => Fault::Crash,
                10 => Fault::ClockJump(rng.random_range(1..240)),
                11 => Fault::Pause(i),
                12 => Fault::ExternalUse(i, rng.random_range(1..=200)),
                _ => Fault::Resume(i),
            };
            FaultAt {
                at_min: rng.random_range(0..minutes),
                fault,
            }
        })
        .collect();
    let seed = rng.random();
    Spec {
        seed,
        accounts,
        token_ttl_secs,
        sessions,
        faults,
        hours,
        thinking: thinking_for(seed),
    }
}

/// World number `index` of the exploration seeded with `seed`: the same pair always gives the
/// same world, so a failure found by a soak is reproduced by its two numbers alone.
pub fn world(seed: u64, index: u64) -> Spec {
    let mut rng =
        rand::rngs::StdRng::seed_from_u64(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    random(&mut rng)
}
