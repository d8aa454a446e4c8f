//! The simulator's scenario: its users with their budgets, token lifetimes, and faults to
//! inject from the start. Read from YAML (`ccs sim serve --scenario FILE`); the documented
//! example is `specs/sim-scenario.yaml`, shown by `ccs sim serve --help`.
//!
//! Must not: hold any state of a running simulation (that is `model/`).

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use ccs_actors::Span;

/// The example scenario, checked into the repo and printed by `--help`.
pub const EXAMPLE: &str = include_str!("../../specs/sim-scenario.yaml");

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    /// Lifetime of the access tokens the authority issues.
    pub token_ttl: Span,
    /// Lifetime of an authorization code.
    pub code_ttl: Span,
    /// What budgets count: `requests` or `tokens`.
    pub budget_unit: BudgetUnit,
    /// `content_block_delta` events per streamed reply.
    pub stream_events: usize,
    pub users: Vec<User>,
    pub faults: Vec<FaultSpec>,
    /// How each model treats thinking blocks and thinking settings, over the defaults of
    /// `ModelBehaviour::default_for` (keys are model ids or their prefixes; the longest match
    /// wins).
    pub models: std::collections::BTreeMap<String, ModelOverride>,
    /// The shortest prefix, in tokens, the prompt cache keeps.
    pub cache_min_tokens: u64,
    /// Time to first byte per 1,000 input tokens read uncached, in microseconds (a cache read
    /// costs a tenth): so a turn whose cache went cold is measurably slower.
    pub prefill_us_per_ktok: u64,
    /// The usage endpoint answers one account at most this often; a call sooner is refused
    /// with 429 and a `retry-after` (specs/anthropic.md §3).
    pub usage_min_interval: Span,
}

/// What a model does with a thinking block that another organization's account signed
/// (specs/anthropic.md §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ThinkingBinding {
    /// 400 `Invalid \`signature\` in \`thinking\` block` (the older models).
    Reject,
    /// Dropped before the model sees it, reported in `input_transformations` (Sonnet and
    /// Haiku 5.5).
    Drop,
    /// Works on any account (what the docs leave open for Opus 5.5).
    Accept,
}

/// A scenario's change to one model's behaviour: every field optional.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelOverride {
    pub thinking_binding: Option<ThinkingBinding>,
    /// Whether a thinking block is valid only after the same prefix it was made after.
    pub prefix_check: Option<bool>,
    /// The `thinking.type` values accepted (`enabled`, `adaptive`, `between_tools`,
    /// `disabled`).
    pub thinking_types: Option<Vec<String>>,
    /// Thinking is on when the request does not say (adaptive).
    pub always_thinking: Option<bool>,
    /// Answers carry `redacted_thinking` blocks instead of `thinking` ones.
    pub redacted: Option<bool>,
    /// A tool call's answer carries a second thinking block between its text and the call.
    pub interleaved: Option<bool>,
}

/// How one model treats thinking, resolved from the defaults and the scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelBehaviour {
    pub thinking_binding: ThinkingBinding,
    pub prefix_check: bool,
    pub thinking_types: Vec<String>,
    pub always_thinking: bool,
    pub redacted: bool,
    pub interleaved: bool,
}

/// The model Claude Code 2.1.332 sends by default; an unknown model behaves like it.
pub const DEFAULT_MODEL: &str = "claude-opus-5-5";

impl ModelBehaviour {
    /// Today's models (specs/anthropic.md §9): the 5.5 generation thinks always, checks
    /// prefixes and accepts only adaptive thinking; Sonnet and Haiku 5.5 drop another
    /// organization's blocks, Opus 5.5 takes them; the older models refuse them.
    pub fn default_for(model: &str) -> ModelBehaviour {
        let newest = |binding, types: &[&str], interleaved| ModelBehaviour {
            thinking_binding: binding,
            prefix_check: true,
            thinking_types: types.iter().map(|t| t.to_string()).collect(),
            always_thinking: true,
            redacted: false,
            interleaved,
        };
        let m = model.to_ascii_lowercase();
        if m.starts_with("claude-sonnet-5-5") {
            newest(ThinkingBinding::Drop, &["adaptive", "between_tools"], false)
        } else if m.starts_with("claude-haiku-5-5") {
            newest(ThinkingBinding::Drop, &["adaptive"], false)
        } else if m.starts_with("claude-opus-4")
            || m.starts_with("claude-sonnet-4")
            || m.starts_with("claude-haiku-4")
            || m.starts_with("claude-3")
        {
            ModelBehaviour {
                thinking_binding: ThinkingBinding::Reject,
                prefix_check: false,
                thinking_types: ["enabled", "adaptive", "disabled"]
                    .iter()
                    .map(|t| t.to_string())
                    .collect(),
                always_thinking: false,
                redacted: false,
                interleaved: false,
            }
        } else {
            newest(ThinkingBinding::Accept, &["adaptive"], true)
        }
    }

    fn with(mut self, o: &ModelOverride) -> ModelBehaviour {
        if let Some(b) = o.thinking_binding {
            self.thinking_binding = b;
        }
        if let Some(p) = o.prefix_check {
            self.prefix_check = p;
        }
        if let Some(t) = &o.thinking_types {
            self.thinking_types = t.clone();
        }
        if let Some(a) = o.always_thinking {
            self.always_thinking = a;
        }
        if let Some(r) = o.redacted {
            self.redacted = r;
        }
        if let Some(i) = o.interleaved {
            self.interleaved = i;
        }
        self
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BudgetUnit {
    #[default]
    Requests,
    Tokens,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub email: String,
    /// `pro`, `max` or `team` (the profile endpoint reports it).
    #[serde(default = "default_plan")]
    pub plan: String,
    /// Budget of the rolling 5-hour window.
    #[serde(default = "default_5h")]
    pub five_hour: u64,
    /// Budget of the rolling 7-day window.
    #[serde(default = "default_7d")]
    pub seven_day: u64,
}

fn default_plan() -> String {
    "max".into()
}
fn default_5h() -> u64 {
    1_000
}
fn default_7d() -> u64 {
    10_000
}

impl User {
    pub fn new(email: &str) -> Self {
        User {
            email: email.to_string(),
            plan: default_plan(),
            five_hour: default_5h(),
            seven_day: default_7d(),
        }
    }
}

/// One scripted fault.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    pub kind: FaultKind,
    /// Only requests of this account (by e-mail); every account when absent.
    #[serde(default)]
    pub account: Option<String>,
    /// Applies to the next N matching requests; until cleared when absent.
    #[serde(default)]
    pub count: Option<u32>,
    /// For `latency`, `event_latency` and `token_slow`: the delay in milliseconds.
    #[serde(default)]
    pub ms: Option<u64>,
    /// For `close_mid_stream` and `close_mid_event`: whole events sent before the cut.
    #[serde(default)]
    pub after_events: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// 429 with no rate-limit headers at all.
    #[serde(rename = "status_429")]
    Status429,
    /// 429 with `x-should-retry: true` and no unified headers.
    #[serde(rename = "status_429_retry")]
    Status429Retry,
    #[serde(rename = "status_401")]
    Status401,
    #[serde(rename = "status_403")]
    Status403,
    #[serde(rename = "status_500")]
    Status500,
    #[serde(rename = "status_529")]
    Status529,
    /// The connection closes before any response header.
    CloseBeforeHeaders,
    /// The SSE stream is cut after `after_events` events.
    CloseMidStream,
    /// Like `close_mid_stream`, but the cut lands inside the next event: half of it is sent.
    CloseMidEvent,
    /// Adds `ms` before the response.
    Latency,
    /// Adds `ms` before every SSE event.
    EventLatency,
    /// The token endpoint answers 503.
    TokenDown,
    /// The token endpoint waits `ms` before answering.
    TokenSlow,
}

impl FaultKind {
    /// Whether this fault concerns the token endpoint rather than the Messages API.
    pub fn on_token_endpoint(self) -> bool {
        matches!(self, FaultKind::TokenDown | FaultKind::TokenSlow)
    }
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            token_ttl: Span(Duration::from_secs(8 * 3600)),
            code_ttl: Span(Duration::from_secs(600)),
            budget_unit: BudgetUnit::Requests,
            stream_events: 8,
            users: Vec::new(),
            faults: Vec::new(),
            models: Default::default(),
            cache_min_tokens: 1024,
            prefill_us_per_ktok: 2_000,
            usage_min_interval: Span(Duration::from_secs(30)),
        }
    }
}

impl Scenario {
    /// How `model` behaves in this scenario: its defaults, changed by the longest key of
    /// `models` that is a prefix of its id.
    pub fn behaviour(&self, model: &str) -> ModelBehaviour {
        let base = ModelBehaviour::default_for(model);
        let m = model.to_ascii_lowercase();
        match self
            .models
            .iter()
            .filter(|(k, _)| m.starts_with(&k.to_ascii_lowercase()))
            .max_by_key(|(k, _)| k.len())
        {
            Some((_, o)) => base.with(o),
            None => base,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{path}: cannot read: {source}")]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: line {line}: {message}\n  see `ccs sim serve --help` for the format")]
    Malformed {
        path: String,
        line: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl Scenario {
    /// `emails` with budgets no test or simulated run exhausts, tokens living `token_ttl`: a
    /// move between accounts is only ever one the run causes.
    pub fn roomy<S: AsRef<str>>(emails: &[S], token_ttl: Duration) -> Scenario {
        Scenario {
            token_ttl: Span(token_ttl),
            users: emails
                .iter()
                .map(|e| User {
                    five_hour: 1_000_000_000,
                    seven_day: 1_000_000_000,
                    ..User::new(e.as_ref())
                })
                .collect(),
            ..Scenario::default()
        }
    }

    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Unreadable {
            path: path.display().to_string(),
            source,
        })?;
        Scenario::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, path: &str) -> Result<Scenario, ScenarioError> {
        let s: Scenario = serde_yaml_ng::from_str(text).map_err(|e| ScenarioError::Malformed {
            path: path.to_string(),
            line: e.location().map(|l| l.line()).unwrap_or(1),
            // The line is its own field: the message goes without serde's " at line …".
            message: e
                .to_string()
                .split(" at line ")
                .next()
                .unwrap_or("")
                .to_string(),
        })?;
        let invalid = |message: String| ScenarioError::Invalid {
            path: path.to_string(),
            message,
        };
        for (i, u) in s.users.iter().enumerate() {
            if !u.email.contains('@') {
                return Err(invalid(format!(
                    "users[{i}].email {:?} is not an e-mail address",
                    u.email
                )));
            }
            if s.users[..i]
                .iter()
                .any(|o| o.email.eq_ignore_ascii_case(&u.email))
            {
                return Err(invalid(format!("users[{i}]: {} is listed twice", u.email)));
            }
        }
        for (i, f) in s.faults.iter().enumerate() {
            let needs_ms = matches!(
                f.kind,
                FaultKind::Latency | FaultKind::EventLatency | FaultKind::TokenSlow
            );
            if needs_ms && f.ms.is_none() {
                return Err(invalid(format!("faults[{i}] ({:?}) needs `ms`", f.kind)));
            }
            if let Some(a) = &f.account {
                if !s.users.iter().any(|u| u.email.eq_ignore_ascii_case(a)) {
                    return Err(invalid(format!(
                        "faults[{i}].account {a} is not one of the users"
                    )));
                }
            }
        }
        if s.token_ttl.0 < Duration::from_secs(1) {
            return Err(invalid("token_ttl must be at least 1s".into()));
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_scenario_parses() {
        let s = Scenario::parse(EXAMPLE, "specs/sim-scenario.yaml").unwrap();
        assert_eq!(s.users.len(), 3);
        assert!(!s.faults.is_empty());
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        let e =
            Scenario::parse("users:\n  - email: a@x\n    five_hours: 3\n", "s.yaml").unwrap_err();
        assert!(e.to_string().contains("s.yaml: line 3"), "{e}");
        let e = Scenario::parse("users:\n  - email: nobody\n", "s.yaml").unwrap_err();
        assert!(e.to_string().contains("not an e-mail"), "{e}");
        let e = Scenario::parse("faults:\n  - kind: latency\n", "s.yaml").unwrap_err();
        assert!(e.to_string().contains("needs `ms`"), "{e}");
    }
}
