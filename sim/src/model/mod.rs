//! The simulated Anthropic, without HTTP: the OAuth authority (codes, PKCE, rotating refresh
//! tokens, revocation), per-account rolling 5-hour and 7-day budgets with the unified
//! rate-limit headers, and scripted faults.
//!
//! Both transports share it: the actix-web server in `server.rs`, and in-process simulations
//! that call it directly. It runs on a `Clock` and a seeded RNG, so the same seed and the same
//! calls give the same answers byte for byte. Must not: sleep (delays are returned for the
//! transport to apply), or do I/O.

mod control;
mod messages;
mod oauth;
pub mod thinking;

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ccs_actors::{SharedClock, Timestamp};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::scenario::{BudgetUnit, FaultKind, FaultSpec, Scenario, User};

const FIVE_HOURS: Duration = Duration::from_secs(5 * 3600);
const SEVEN_DAYS: Duration = Duration::from_secs(7 * 86_400);
/// Output tokens charged per reply when budgets count tokens.
pub const REPLY_TOKENS: u64 = 20;
pub const OAUTH_BETA: &str = "oauth-2025-04-20";

/// The models `/v1/models` lists.
pub const MODELS: &[(&str, &str)] = &[
    ("claude-opus-5-5", "Claude Opus 5.5"),
    ("claude-sonnet-5-5", "Claude Sonnet 5.5"),
    ("claude-haiku-5-5", "Claude Haiku 5.5"),
    ("claude-opus-4-1-20250805", "Claude Opus 4.1"),
    ("claude-sonnet-4-5-20250929", "Claude Sonnet 4.5"),
    ("claude-haiku-4-5-20251001", "Claude Haiku 4.5"),
];

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Messages answered 200.
    pub messages_ok: u64,
    /// Messages refused with 429 for an exhausted window.
    pub messages_rejected: u64,
    /// Messages answered by an injected fault.
    pub faults: u64,
    pub count_tokens: u64,
    /// Calls to the token endpoint with `grant_type=refresh_token` for this account.
    pub refresh_calls: u64,
    pub refresh_ok: u64,
    /// Refresh calls with a refresh token this account's grant had already rotated away:
    /// the signature of a rotation race or a lost write.
    pub refresh_replays: u64,
    /// Successful code exchanges.
    pub logins: u64,
    pub usage_calls: u64,
    /// Of those, refused with 429 for coming sooner than `usage_min_interval`.
    pub usage_refused: u64,
    /// Streams whose client went away before the last event.
    pub streams_abandoned: u64,
    /// Tokens the answers of `messages_ok` named in their `usage`.
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Of those answers' input, tokens read from the prompt cache and written to it.
    pub cache_read_tokens: u64,
    pub cache_creation_tokens: u64,
    /// Thinking blocks of another organization (or model, or prefix) the API dropped.
    pub thinking_dropped: u64,
    /// Requests refused with a 400 about their history or thinking settings.
    pub history_refused: u64,
}

#[derive(Clone, Debug)]
struct Window {
    budget: u64,
    used: u64,
    started: Option<Timestamp>,
    length: Duration,
}

impl Window {
    fn new(budget: u64, length: Duration) -> Self {
        Window {
            budget,
            used: 0,
            started: None,
            length,
        }
    }

    fn roll(&mut self, now: Timestamp) {
        if let Some(s) = self.started {
            if now >= s.plus(self.length) {
                self.used = 0;
                self.started = None;
            }
        }
    }

    fn reset_at(&self, now: Timestamp) -> Timestamp {
        self.started.unwrap_or(now).plus(self.length)
    }

    fn exhausted(&self) -> bool {
        self.used >= self.budget
    }

    fn utilization(&self) -> f64 {
        if self.budget == 0 {
            1.0
        } else {
            self.used as f64 / self.budget as f64
        }
    }

    fn status(&self) -> &'static str {
        if self.exhausted() {
            "rejected"
        } else if self.utilization() >= 0.8 {
            "allowed_warning"
        } else {
            "allowed"
        }
    }

    fn consume(&mut self, n: u64, now: Timestamp) {
        if self.started.is_none() {
            self.started = Some(now);
        }
        self.used = self.used.saturating_add(n);
    }
}

struct UserState {
    spec: User,
    uuid: String,
    org_uuid: String,
    five: Window,
    seven: Window,
    counters: Counters,
    /// When the usage endpoint last answered this account (it is rate-limited itself).
    usage_answered_at: Option<Timestamp>,
    /// This organization's prompt cache: prefix digest → (tokens, expiry, lifetime).
    cache: HashMap<[u8; 32], (u64, Timestamp, Duration)>,
}

struct PendingCode {
    email: String,
    client_id: String,
    redirect_uri: String,
    challenge: String,
    state: String,
    expires_at: Timestamp,
}

struct Grant {
    email: String,
    /// The only refresh token of this grant that works.
    refresh_token: String,
    /// How many token pairs this grant has issued (1 at login, +1 per refresh).
    issued: u64,
    /// The newest generation whose access token a Messages call used.
    used: u64,
}

/// A refresh with a rotated-away refresh token: the client held generation `generation` of a
/// grant that had issued `lineage.issued`. If a newer generation than the one it held was ever
/// used upstream (`lineage.used > generation`), the client had written that newer token down
/// and lost it; otherwise the newer token never reached it durably.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replay {
    pub email: String,
    pub generation: u64,
    pub lineage: Lineage,
}

/// Where a grant's tokens stand: for crash tests, to tell a token the client never wrote down
/// from one it wrote, used, and lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lineage {
    /// Generations issued so far; the newest is the only live refresh token.
    pub issued: u64,
    /// The newest generation ever used for a Messages call.
    pub used: u64,
}

struct AccessToken {
    email: String,
    expires_at: Timestamp,
    grant: u64,
    generation: u64,
}

struct ActiveFault {
    id: u64,
    spec: FaultSpec,
    remaining: Option<u32>,
}

struct NextLogin {
    email: String,
    deny: bool,
}

struct Inner {
    /// The scenario's model table and cache settings.
    scenario: Scenario,
    /// The key of this simulator's thinking signatures (from the seed).
    signing_key: [u8; 32],
    token_ttl: Duration,
    code_ttl: Duration,
    unit: BudgetUnit,
    stream_events: usize,
    users: Vec<UserState>,
    codes: HashMap<String, PendingCode>,
    access: HashMap<String, AccessToken>,
    refresh: HashMap<String, u64>,
    /// Rotated-away refresh tokens and whose they were, to attribute replays.
    retired: HashMap<String, String>,
    /// Every refresh token ever issued: its grant and generation.
    lineage: HashMap<String, (u64, u64)>,
    /// Every refresh that came with a rotated-away refresh token, in order.
    replays: Vec<Replay>,
    grants: HashMap<u64, Grant>,
    faults: Vec<ActiveFault>,
    next_login: VecDeque<NextLogin>,
    next_id: u64,
    rng: StdRng,
}

/// Query parameters of `GET /oauth/authorize`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct AuthorizeQuery {
    pub client_id: Option<String>,
    pub response_type: Option<String>,
    pub redirect_uri: Option<String>,
    pub scope: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub state: Option<String>,
    /// Which test user approves; see `Scenario::users`.
    pub login_hint: Option<String>,
    pub code: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authorized {
    /// Approved: send the browser to `redirect_uri?code=…&state=…`.
    Approved {
        redirect_uri: String,
        code: String,
        state: String,
        email: String,
    },
    /// The user said no: `redirect_uri?error=access_denied&state=…`.
    Denied { redirect_uri: String, state: String },
}

/// An error answer of an API endpoint: status and JSON body.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub body: Value,
    pub headers: Vec<(String, String)>,
}

impl ApiError {
    /// Anthropic's error shape: `{"type":"error","error":{"type":…,"message":…}}`.
    pub fn anthropic(status: u16, kind: &str, message: &str) -> Self {
        ApiError {
            status,
            body: json!({"type": "error", "error": {"type": kind, "message": message}}),
            headers: Vec::new(),
        }
    }

    /// The OAuth error shape: `{"error":…,"error_description":…}`.
    pub fn oauth(status: u16, error: &str, description: &str) -> Self {
        ApiError {
            status,
            body: json!({"error": error, "error_description": description}),
            headers: Vec::new(),
        }
    }
}

/// What the token endpoint answers, and how long to wait before answering.
pub struct TokenOutcome {
    pub delay: Option<Duration>,
    pub result: Result<Value, ApiError>,
}

/// What one Messages request gets.
#[derive(Clone, Debug, PartialEq)]
pub enum Admission {
    Serve(Serve),
    Reject {
        delay: Option<Duration>,
        error: ApiError,
    },
    /// Close the connection without answering.
    CloseBeforeHeaders {
        delay: Option<Duration>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Serve {
    /// Unique per answer (message and request ids derive from it).
    pub id: u64,
    pub email: String,
    /// The unified rate-limit headers for this response.
    pub headers: Vec<(String, String)>,
    pub delay: Option<Duration>,
    pub event_delay: Option<Duration>,
    /// Cut the stream after this many events.
    pub close_after: Option<usize>,
    /// The cut lands inside the next event (half of it is sent first).
    pub cut_inside: bool,
    pub stream_events: usize,
    pub input_tokens: u64,
    /// The model that answers (the request's, else the default).
    pub model: String,
    /// The answer's content blocks, in order.
    pub content: Vec<thinking::Block>,
    /// `end_turn`, or `tool_use` when the answer calls a tool.
    pub stop_reason: &'static str,
    pub usage: SimUsage,
    /// `input_transformations`, when the request named the binding-controls beta.
    pub transformations: Option<Value>,
}

/// The `usage` of an answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SimUsage {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_creation_5m: u64,
    pub cache_creation_1h: u64,
    /// The request had a cache breakpoint: the cache fields are reported.
    pub cached: bool,
}

impl SimUsage {
    pub fn to_json(&self) -> Value {
        let mut u = json!({"input_tokens": self.input, "output_tokens": self.output});
        if self.cached {
            u["cache_creation_input_tokens"] =
                json!(self.cache_creation_5m + self.cache_creation_1h);
            u["cache_read_input_tokens"] = json!(self.cache_read);
            u["cache_creation"] = json!({
                "ephemeral_5m_input_tokens": self.cache_creation_5m,
                "ephemeral_1h_input_tokens": self.cache_creation_1h,
            });
        }
        u
    }
}

impl Serve {
    /// The reply text: it names the account that served it, so tests can see routing.
    pub fn text(&self) -> String {
        let mut t = format!("Served by {}.", self.email);
        for _ in 1..self.stream_events.max(1) {
            t.push_str(" ok");
        }
        t
    }

    /// The reply text cut into `stream_events` deltas.
    pub fn deltas(&self) -> Vec<String> {
        let mut d = vec![format!("Served by {}.", self.email)];
        for _ in 1..self.stream_events.max(1) {
            d.push(" ok".to_string());
        }
        d
    }
}

pub struct SimModel {
    clock: SharedClock,
    inner: Mutex<Inner>,
}

fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

impl Inner {
    fn random(&mut self, prefix: &str) -> String {
        let mut b = [0u8; 24];
        self.rng.fill_bytes(&mut b);
        format!("{prefix}{}", URL_SAFE_NO_PAD.encode(b))
    }

    fn user(&self, email: &str) -> Option<usize> {
        self.users
            .iter()
            .position(|u| u.spec.email.eq_ignore_ascii_case(email))
    }

    fn add_user(&mut self, spec: User) -> usize {
        if let Some(i) = self.user(&spec.email) {
            let u = &mut self.users[i];
            u.five.budget = spec.five_hour;
            u.seven.budget = spec.seven_day;
            u.spec = spec;
            return i;
        }
        let uuid = self.uuid();
        let org_uuid = self.uuid();
        self.users.push(UserState {
            five: Window::new(spec.five_hour, FIVE_HOURS),
            seven: Window::new(spec.seven_day, SEVEN_DAYS),
            spec,
            uuid,
            org_uuid,
            counters: Counters::default(),
            usage_answered_at: None,
            cache: HashMap::new(),
        });
        self.users.len() - 1
    }

    fn uuid(&mut self) -> String {
        let mut b = [0u8; 16];
        self.rng.fill_bytes(&mut b);
        super::uuid_from(b)
    }

    /// Takes the faults that match `account` and `pred`, decrementing their counts.
    fn take_faults(&mut self, account: &str, pred: impl Fn(FaultKind) -> bool) -> Vec<FaultSpec> {
        let mut hit = Vec::new();
        let mut first_terminal = true;
        for f in self.faults.iter_mut() {
            let matches_account = f
                .spec
                .account
                .as_deref()
                .is_none_or(|a| a.eq_ignore_ascii_case(account));
            if !matches_account || !pred(f.spec.kind) {
                continue;
            }
            let terminal = !matches!(
                f.spec.kind,
                FaultKind::Latency | FaultKind::EventLatency | FaultKind::TokenSlow
            );
            // Only one fault decides the answer; modifiers all apply.
            if terminal && !first_terminal {
                continue;
            }
            if terminal {
                first_terminal = false;
            }
            if let Some(n) = f.remaining.as_mut() {
                *n = n.saturating_sub(1);
            }
            hit.push(f.spec.clone());
        }
        self.faults.retain(|f| f.remaining != Some(0));
        hit
    }

    fn issue_tokens(&mut self, email: &str, grant: u64, now: Timestamp) -> Value {
        let access = self.random("sk-ant-oat01-");
        let refresh = self.random("sk-ant-ort01-");
        let expires_at = now.plus(self.token_ttl);
        let mut generation = 0;
        if let Some(g) = self.grants.get_mut(&grant) {
            if self.refresh.remove(&g.refresh_token).is_some() {
                self.retired
                    .insert(g.refresh_token.clone(), g.email.clone());
            }
            g.refresh_token = refresh.clone();
            g.issued += 1;
            generation = g.issued;
        }
        self.lineage.insert(refresh.clone(), (grant, generation));
        self.access.insert(
            access.clone(),
            AccessToken {
                email: email.to_string(),
                expires_at,
                grant,
                generation,
            },
        );
        self.refresh.insert(refresh.clone(), grant);
        let (uuid, org, org_name) = match self.user(email) {
            Some(i) => (
                self.users[i].uuid.clone(),
                self.users[i].org_uuid.clone(),
                format!("{email}'s Organization"),
            ),
            None => (String::new(), String::new(), String::new()),
        };
        json!({
            "token_type": "Bearer",
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": self.token_ttl.as_secs(),
            "scope": "user:profile user:inference user:sessions:claude_code user:mcp_servers user:file_upload",
            "account": {"uuid": uuid, "email_address": email},
            "organization": {"uuid": org, "name": org_name},
        })
    }

    /// The account behind a bearer token, or the 401 to answer.
    fn bearer(&self, token: Option<&str>, now: Timestamp) -> Result<usize, ApiError> {
        let token = token.ok_or_else(|| {
            ApiError::anthropic(
                401,
                "authentication_error",
                "missing Authorization: Bearer token",
            )
        })?;
        let at = self.access.get(token).ok_or_else(|| {
            ApiError::anthropic(
                401,
                "authentication_error",
                "invalid or revoked OAuth token",
            )
        })?;
        if now >= at.expires_at {
            return Err(ApiError::anthropic(
                401,
                "authentication_error",
                "OAuth token has expired. Please obtain a new token or refresh your existing token.",
            ));
        }
        self.user(&at.email).ok_or_else(|| {
            ApiError::anthropic(401, "authentication_error", "the account no longer exists")
        })
    }

    fn unified_headers(&self, i: usize, now: Timestamp) -> Vec<(String, String)> {
        let u = &self.users[i];
        let mut h = Vec::with_capacity(10);
        let p = "anthropic-ratelimit-unified-";
        for (key, w) in [("5h", &u.five), ("7d", &u.seven)] {
            h.push((format!("{p}{key}-status"), w.status().to_string()));
            h.push((
                format!("{p}{key}-utilization"),
                format!("{:.4}", w.utilization()),
            ));
            h.push((
                format!("{p}{key}-reset"),
                w.reset_at(now).as_secs().to_string(),
            ));
        }
        let (claim, w) = match (u.five.exhausted(), u.seven.exhausted()) {
            (true, true) if u.seven.reset_at(now) > u.five.reset_at(now) => ("seven_day", &u.seven),
            (true, _) => ("five_hour", &u.five),
            (false, true) => ("seven_day", &u.seven),
            (false, false) if u.seven.utilization() > u.five.utilization() => {
                ("seven_day", &u.seven)
            }
            (false, false) => ("five_hour", &u.five),
        };
        let overall = if u.five.exhausted() || u.seven.exhausted() {
            "rejected"
        } else if u.five.status() == "allowed_warning" || u.seven.status() == "allowed_warning" {
            "allowed_warning"
        } else {
            "allowed"
        };
        h.push((format!("{p}status"), overall.to_string()));
        h.push((format!("{p}reset"), w.reset_at(now).as_secs().to_string()));
        h.push((format!("{p}representative-claim"), claim.to_string()));
        h
    }
}

impl SimModel {
    pub fn new(scenario: &Scenario, clock: SharedClock, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut signing_key = [0u8; 32];
        rng.fill_bytes(&mut signing_key);
        let mut inner = Inner {
            scenario: scenario.clone(),
            signing_key,
            token_ttl: scenario.token_ttl.0,
            code_ttl: scenario.code_ttl.0,
            unit: scenario.budget_unit,
            stream_events: scenario.stream_events.max(1),
            users: Vec::new(),
            codes: HashMap::new(),
            access: HashMap::new(),
            refresh: HashMap::new(),
            retired: HashMap::new(),
            lineage: HashMap::new(),
            replays: Vec::new(),
            grants: HashMap::new(),
            faults: Vec::new(),
            next_login: VecDeque::new(),
            next_id: 1,
            rng,
        };
        for u in &scenario.users {
            inner.add_user(u.clone());
        }
        let model = SimModel {
            clock,
            inner: Mutex::new(inner),
        };
        for f in &scenario.faults {
            model.add_fault(f.clone());
        }
        model
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }
}

#[cfg(test)]
mod tests;
