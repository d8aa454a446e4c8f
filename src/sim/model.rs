//! The simulated Anthropic, without HTTP: the OAuth authority (codes, PKCE, rotating refresh
//! tokens, revocation), per-account rolling 5-hour and 7-day budgets with the unified
//! rate-limit headers, and scripted faults.
//!
//! Both transports share it: the actix-web server in `server.rs`, and in-process simulations
//! that call it directly. It runs on a `Clock` and a seeded RNG, so the same seed and the same
//! calls give the same answers byte for byte. Must not: sleep (delays are returned for the
//! transport to apply), or do I/O.

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
    /// Streams whose client went away before the last event.
    pub streams_abandoned: u64,
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
    pub stream_events: usize,
    pub input_tokens: u64,
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
        let mut inner = Inner {
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
            rng: StdRng::seed_from_u64(seed),
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

    // ---- OAuth ----------------------------------------------------------------------------

    pub fn authorize(&self, q: &AuthorizeQuery) -> Result<Authorized, ApiError> {
        let bad = |m: &str| ApiError::oauth(400, "invalid_request", m);
        if q.response_type.as_deref() != Some("code") {
            return Err(bad("response_type must be code"));
        }
        let client_id = q
            .client_id
            .clone()
            .ok_or_else(|| bad("client_id is required"))?;
        let redirect_uri = q
            .redirect_uri
            .clone()
            .ok_or_else(|| bad("redirect_uri is required"))?;
        let challenge = q
            .code_challenge
            .clone()
            .ok_or_else(|| bad("code_challenge is required"))?;
        if q.code_challenge_method.as_deref() != Some("S256") {
            return Err(bad("code_challenge_method must be S256"));
        }
        let state = q.state.clone().ok_or_else(|| bad("state is required"))?;
        let now = self.now();
        let mut inner = self.lock();
        if inner.users.is_empty() {
            return Err(bad(
                "the simulator has no users: add one with POST /sim/users",
            ));
        }
        let (email, deny) = if let Some(hint) = &q.login_hint {
            let i = inner
                .user(hint)
                .ok_or_else(|| bad(&format!("no test user {hint}")))?;
            (inner.users[i].spec.email.clone(), false)
        } else if let Some(n) = inner.next_login.pop_front() {
            (n.email, n.deny)
        } else {
            let with_grant = |e: &str| {
                inner
                    .grants
                    .values()
                    .any(|g| g.email.eq_ignore_ascii_case(e))
            };
            let pick = inner
                .users
                .iter()
                .find(|u| !with_grant(&u.spec.email))
                .unwrap_or(&inner.users[0]);
            (pick.spec.email.clone(), false)
        };
        if deny {
            return Ok(Authorized::Denied {
                redirect_uri,
                state,
            });
        }
        let code = inner.random("sim-code-");
        let expires_at = now.plus(inner.code_ttl);
        inner.codes.insert(
            code.clone(),
            PendingCode {
                email: email.clone(),
                client_id,
                redirect_uri: redirect_uri.clone(),
                challenge,
                state: state.clone(),
                expires_at,
            },
        );
        Ok(Authorized::Approved {
            redirect_uri,
            code,
            state,
            email,
        })
    }

    /// `POST /v1/oauth/token` with a JSON body.
    pub fn token(&self, body: &Value) -> TokenOutcome {
        let now = self.now();
        let mut inner = self.lock();
        let s = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
        let bad_request = |m: &str| ApiError::oauth(400, "invalid_request", m);
        let invalid_grant = |m: &str| ApiError::oauth(400, "invalid_grant", m);
        let grant_type = s("grant_type");
        // Who is asking decides which faults apply.
        let email = match grant_type.as_deref() {
            Some("authorization_code") => {
                s("code").and_then(|c| inner.codes.get(&c).map(|p| p.email.clone()))
            }
            Some("refresh_token") => s("refresh_token").and_then(|r| {
                inner
                    .refresh
                    .get(&r)
                    .and_then(|g| inner.grants.get(g).map(|g| g.email.clone()))
                    .or_else(|| inner.retired.get(&r).cloned())
            }),
            _ => None,
        };
        let faults =
            inner.take_faults(email.as_deref().unwrap_or(""), FaultKind::on_token_endpoint);
        let delay = faults
            .iter()
            .filter(|f| f.kind == FaultKind::TokenSlow)
            .filter_map(|f| f.ms)
            .max()
            .map(Duration::from_millis);
        if grant_type.as_deref() == Some("refresh_token") {
            let replay = s("refresh_token").is_some_and(|r| inner.retired.contains_key(&r));
            if replay {
                let seen = s("refresh_token")
                    .and_then(|r| inner.lineage.get(&r).copied())
                    .and_then(|(grant, generation)| {
                        let g = inner.grants.get(&grant)?;
                        Some(Replay {
                            email: g.email.clone(),
                            generation,
                            lineage: Lineage {
                                issued: g.issued,
                                used: g.used,
                            },
                        })
                    });
                inner.replays.extend(seen);
            }
            if let Some(i) = email.as_deref().and_then(|e| inner.user(e)) {
                inner.users[i].counters.refresh_calls += 1;
                if replay {
                    inner.users[i].counters.refresh_replays += 1;
                }
            }
        }
        if faults.iter().any(|f| f.kind == FaultKind::TokenDown) {
            return TokenOutcome {
                delay,
                result: Err(ApiError::oauth(
                    503,
                    "temporarily_unavailable",
                    "the token endpoint is down (simulated)",
                )),
            };
        }
        let result =
            match grant_type.as_deref() {
                Some("authorization_code") => (|| {
                    let code = s("code").ok_or_else(|| bad_request("code is required"))?;
                    let pending = inner.codes.remove(&code).ok_or_else(|| {
                        invalid_grant("unknown or already used authorization code")
                    })?;
                    if now >= pending.expires_at {
                        return Err(invalid_grant("authorization code expired"));
                    }
                    if s("client_id").as_deref() != Some(pending.client_id.as_str()) {
                        return Err(invalid_grant(
                            "client_id does not match the authorization request",
                        ));
                    }
                    if s("redirect_uri").as_deref() != Some(pending.redirect_uri.as_str()) {
                        return Err(invalid_grant(
                            "redirect_uri does not match the authorization request",
                        ));
                    }
                    if s("state").as_deref() != Some(pending.state.as_str()) {
                        return Err(invalid_grant(
                            "state does not match the authorization request",
                        ));
                    }
                    let verifier = s("code_verifier")
                        .ok_or_else(|| bad_request("code_verifier is required"))?;
                    if pkce_challenge(&verifier) != pending.challenge {
                        return Err(invalid_grant("PKCE verification failed"));
                    }
                    let grant = inner.next_id;
                    inner.next_id += 1;
                    inner.grants.insert(
                        grant,
                        Grant {
                            email: pending.email.clone(),
                            refresh_token: String::new(),
                            issued: 0,
                            used: 0,
                        },
                    );
                    if let Some(i) = inner.user(&pending.email) {
                        inner.users[i].counters.logins += 1;
                    }
                    Ok(inner.issue_tokens(&pending.email, grant, now))
                })(),
                Some("refresh_token") => (|| {
                    let rt = s("refresh_token")
                        .ok_or_else(|| bad_request("refresh_token is required"))?;
                    let grant = *inner.refresh.get(&rt).ok_or_else(|| {
                        invalid_grant("refresh token is invalid, rotated or revoked")
                    })?;
                    let email = inner
                        .grants
                        .get(&grant)
                        .map(|g| g.email.clone())
                        .ok_or_else(|| invalid_grant("grant revoked"))?;
                    if let Some(i) = inner.user(&email) {
                        inner.users[i].counters.refresh_ok += 1;
                    }
                    Ok(inner.issue_tokens(&email, grant, now))
                })(),
                Some(other) => Err(ApiError::oauth(
                    400,
                    "unsupported_grant_type",
                    &format!("grant_type {other} is not supported"),
                )),
                None => Err(bad_request("grant_type is required")),
            };
        TokenOutcome { delay, result }
    }

    /// `GET /api/oauth/profile`.
    pub fn profile(&self, bearer: Option<&str>) -> Result<Value, ApiError> {
        let now = self.now();
        let inner = self.lock();
        let i = inner.bearer(bearer, now)?;
        let u = &inner.users[i];
        Ok(json!({
            "account": {
                "uuid": u.uuid,
                "email": u.spec.email,
                "email_address": u.spec.email,
                "display_name": u.spec.email.split('@').next().unwrap_or(""),
                "has_claude_max": u.spec.plan == "max",
                "has_claude_pro": u.spec.plan == "pro",
            },
            "organization": {
                "uuid": u.org_uuid,
                "name": format!("{}'s Organization", u.spec.email),
                "organization_type": match u.spec.plan.as_str() {
                    "team" => "claude_team",
                    "pro" => "claude_pro",
                    _ => "claude_max",
                },
            },
        }))
    }

    /// `GET /api/oauth/usage`: percent utilization and ISO resets.
    pub fn usage(&self, bearer: Option<&str>, beta: Option<&str>) -> Result<Value, ApiError> {
        let now = self.now();
        let mut inner = self.lock();
        let i = inner.bearer(bearer, now)?;
        if !beta.is_some_and(|b| b.contains(OAUTH_BETA)) {
            return Err(ApiError::anthropic(
                401,
                "authentication_error",
                "OAuth authentication is currently not supported.",
            ));
        }
        let u = &mut inner.users[i];
        u.counters.usage_calls += 1;
        u.five.roll(now);
        u.seven.roll(now);
        let window = |w: &Window| {
            json!({
                "utilization": (w.utilization() * 100.0).min(100.0),
                "resets_at": w.started.map(|_| super::iso(w.reset_at(now))),
            })
        };
        Ok(json!({
            "five_hour": window(&u.five),
            "seven_day": window(&u.seven),
            "seven_day_opus": null,
            "seven_day_sonnet": null,
            "seven_day_oauth_apps": null,
            "extra_usage": {"is_enabled": false, "monthly_limit": null, "used_credits": null, "utilization": null},
        }))
    }

    /// Decides the fate of a `POST /v1/messages` (or, with `count_tokens`, of a token count).
    pub fn admit(
        &self,
        bearer: Option<&str>,
        beta: Option<&str>,
        body_len: usize,
        count_tokens: bool,
    ) -> Admission {
        let now = self.now();
        let mut inner = self.lock();
        let i = match inner.bearer(bearer, now) {
            Ok(i) => i,
            Err(error) => return Admission::Reject { delay: None, error },
        };
        if let Some((grant, generation)) = bearer
            .and_then(|b| inner.access.get(b))
            .map(|a| (a.grant, a.generation))
        {
            if let Some(g) = inner.grants.get_mut(&grant) {
                g.used = g.used.max(generation);
            }
        }
        if !beta.is_some_and(|b| b.split(',').any(|x| x.trim() == OAUTH_BETA)) {
            return Admission::Reject {
                delay: None,
                error: ApiError::anthropic(
                    401,
                    "authentication_error",
                    "OAuth authentication is currently not supported.",
                ),
            };
        }
        let input_tokens = (body_len as u64 / 4).max(1);
        if count_tokens {
            inner.users[i].counters.count_tokens += 1;
            inner.next_id += 1;
            return Admission::Serve(Serve {
                id: inner.next_id,
                email: inner.users[i].spec.email.clone(),
                headers: Vec::new(),
                delay: None,
                event_delay: None,
                close_after: None,
                stream_events: 0,
                input_tokens,
            });
        }
        let email = inner.users[i].spec.email.clone();
        let faults = inner.take_faults(&email, |k| !k.on_token_endpoint());
        let ms = |k: FaultKind| {
            faults
                .iter()
                .filter(|f| f.kind == k)
                .filter_map(|f| f.ms)
                .max()
                .map(Duration::from_millis)
        };
        let delay = ms(FaultKind::Latency);
        let event_delay = ms(FaultKind::EventLatency);
        let terminal = faults
            .iter()
            .find(|f| !matches!(f.kind, FaultKind::Latency | FaultKind::EventLatency));
        let fault_error =
            |status: u16, kind: &str, msg: &str| ApiError::anthropic(status, kind, msg);
        let mut close_after = None;
        if let Some(f) = terminal {
            let error = match f.kind {
                FaultKind::Status429 => Some(fault_error(
                    429,
                    "rate_limit_error",
                    "Rate limited (simulated, no headers)",
                )),
                FaultKind::Status429Retry => Some(ApiError {
                    headers: vec![("x-should-retry".into(), "true".into())],
                    ..fault_error(
                        429,
                        "rate_limit_error",
                        "Rate limited, please retry (simulated)",
                    )
                }),
                FaultKind::Status401 => Some(fault_error(
                    401,
                    "authentication_error",
                    "invalid OAuth token (simulated)",
                )),
                FaultKind::Status403 => Some(fault_error(
                    403,
                    "permission_error",
                    "account disabled (simulated)",
                )),
                FaultKind::Status500 => Some(fault_error(
                    500,
                    "api_error",
                    "Internal server error (simulated)",
                )),
                FaultKind::Status529 => Some(fault_error(
                    529,
                    "overloaded_error",
                    "Overloaded (simulated)",
                )),
                FaultKind::CloseBeforeHeaders => {
                    inner.users[i].counters.faults += 1;
                    return Admission::CloseBeforeHeaders { delay };
                }
                FaultKind::CloseMidStream => {
                    close_after = Some(f.after_events.unwrap_or(2));
                    None
                }
                _ => None,
            };
            if let Some(error) = error {
                inner.users[i].counters.faults += 1;
                return Admission::Reject { delay, error };
            }
        }
        let unit = inner.unit;
        let stream_events = inner.stream_events;
        inner.next_id += 1;
        let id = inner.next_id;
        let u = &mut inner.users[i];
        u.five.roll(now);
        u.seven.roll(now);
        if u.five.exhausted() || u.seven.exhausted() {
            u.counters.messages_rejected += 1;
            let which = if u.seven.exhausted() {
                "weekly"
            } else {
                "5-hour"
            };
            let headers = inner.unified_headers(i, now);
            return Admission::Reject {
                delay,
                error: ApiError {
                    headers,
                    ..ApiError::anthropic(
                        429,
                        "rate_limit_error",
                        &format!("This account's {which} usage limit has been reached (simulated)"),
                    )
                },
            };
        }
        let cost = match unit {
            BudgetUnit::Requests => 1,
            BudgetUnit::Tokens => input_tokens + REPLY_TOKENS,
        };
        u.five.consume(cost, now);
        u.seven.consume(cost, now);
        u.counters.messages_ok += 1;
        let headers = inner.unified_headers(i, now);
        Admission::Serve(Serve {
            id,
            email,
            headers,
            delay,
            event_delay,
            close_after,
            stream_events,
            input_tokens,
        })
    }

    // ---- control --------------------------------------------------------------------------

    pub fn add_user(&self, user: User) {
        self.lock().add_user(user);
    }

    /// Sets a user's budgets; `None` keeps one. False when there is no such user.
    /// The account is used somewhere else (claude.ai, another machine): `units` of both windows
    /// are spent without passing through ccs. False for an unknown account.
    pub fn use_outside(&self, email: &str, units: u64) -> bool {
        let now = self.now();
        let mut inner = self.lock();
        let Some(i) = inner.user(email) else {
            return false;
        };
        let u = &mut inner.users[i];
        u.five.roll(now);
        u.seven.roll(now);
        u.five.consume(units, now);
        u.seven.consume(units, now);
        true
    }

    pub fn set_budget(&self, email: &str, five_hour: Option<u64>, seven_day: Option<u64>) -> bool {
        let mut inner = self.lock();
        let Some(i) = inner.user(email) else {
            return false;
        };
        let u = &mut inner.users[i];
        if let Some(b) = five_hour {
            u.five.budget = b;
            u.spec.five_hour = b;
        }
        if let Some(b) = seven_day {
            u.seven.budget = b;
            u.spec.seven_day = b;
        }
        true
    }

    pub fn add_fault(&self, spec: FaultSpec) -> u64 {
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.faults.push(ActiveFault {
            id,
            remaining: spec.count,
            spec,
        });
        id
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// The faults still active, with their ids.
    pub fn faults(&self) -> Vec<(u64, FaultSpec, Option<u32>)> {
        self.lock()
            .faults
            .iter()
            .map(|f| (f.id, f.spec.clone(), f.remaining))
            .collect()
    }

    /// Revokes every grant of `email`: its access tokens stop working (401) and its refresh
    /// tokens get `invalid_grant`. False when there is no such user.
    pub fn revoke(&self, email: &str) -> bool {
        let mut inner = self.lock();
        if inner.user(email).is_none() {
            return false;
        }
        let gone: Vec<u64> = inner
            .grants
            .iter()
            .filter(|(_, g)| g.email.eq_ignore_ascii_case(email))
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some(g) = inner.grants.remove(&id) {
                inner.refresh.remove(&g.refresh_token);
            }
        }
        inner
            .access
            .retain(|_, a| !a.email.eq_ignore_ascii_case(email));
        true
    }

    /// Queues who approves (or denies) the next authorization without a `login_hint`.
    pub fn next_login(&self, email: &str, deny: bool) -> bool {
        let mut inner = self.lock();
        if inner.user(email).is_none() {
            return false;
        }
        inner.next_login.push_back(NextLogin {
            email: email.to_string(),
            deny,
        });
        true
    }

    /// Counters per account, by e-mail.
    pub fn counters(&self) -> Vec<(String, Counters)> {
        self.lock()
            .users
            .iter()
            .map(|u| (u.spec.email.clone(), u.counters.clone()))
            .collect()
    }

    /// Whether this access token has lapsed at `now` (`None`: the authority never issued it or
    /// revoked it).
    pub fn access_token_lapsed(&self, access: &str) -> Option<bool> {
        let now = self.now();
        self.lock().access.get(access).map(|a| now >= a.expires_at)
    }

    /// Whether the account still has a live grant at the authority.
    pub fn grant_alive(&self, email: &str) -> bool {
        self.lock()
            .grants
            .values()
            .any(|g| g.email.eq_ignore_ascii_case(email))
    }

    /// The account's windows at the authority now: (used, budget, reset) for 5 h and 7 d.
    pub fn windows(&self, email: &str) -> Option<[(u64, u64, Timestamp); 2]> {
        let now = self.now();
        let mut inner = self.lock();
        let i = inner.user(email)?;
        let u = &mut inner.users[i];
        u.five.roll(now);
        u.seven.roll(now);
        Some([
            (u.five.used, u.five.budget, u.five.reset_at(now)),
            (u.seven.used, u.seven.budget, u.seven.reset_at(now)),
        ])
    }

    /// Counts a stream the client left before its end.
    pub fn stream_abandoned(&self, email: &str) {
        let mut inner = self.lock();
        if let Some(i) = inner.user(email) {
            inner.users[i].counters.streams_abandoned += 1;
        }
    }

    /// The newest grant of `email`: how many generations it issued, and the newest one used.
    pub fn lineage(&self, email: &str) -> Option<Lineage> {
        let inner = self.lock();
        inner
            .grants
            .iter()
            .filter(|(_, g)| g.email.eq_ignore_ascii_case(email))
            .max_by_key(|(id, _)| **id)
            .map(|(_, g)| Lineage {
                issued: g.issued,
                used: g.used,
            })
    }

    /// Every replayed refresh so far, in order.
    pub fn replays(&self) -> Vec<Replay> {
        self.lock().replays.clone()
    }

    /// The generation of a refresh token this authority issued (current or rotated away).
    pub fn generation_of(&self, refresh_token: &str) -> Option<u64> {
        self.lock().lineage.get(refresh_token).map(|(_, g)| *g)
    }

    /// Whether the authority considers this refresh token current (for simulations).
    pub fn refresh_token_is_current(&self, refresh_token: &str) -> bool {
        self.lock().refresh.contains_key(refresh_token)
    }

    /// The whole state for `GET /sim/state`.
    pub fn state(&self) -> Value {
        let now = self.now();
        let mut inner = self.lock();
        for u in inner.users.iter_mut() {
            u.five.roll(now);
            u.seven.roll(now);
        }
        let users: Vec<Value> = inner
            .users
            .iter()
            .map(|u| {
                let w = |w: &Window| json!({"budget": w.budget, "used": w.used, "resets_at": w.started.map(|_| w.reset_at(now).as_secs())});
                json!({
                    "email": u.spec.email,
                    "plan": u.spec.plan,
                    "five_hour": w(&u.five),
                    "seven_day": w(&u.seven),
                    "counters": u.counters,
                    "live_grants": inner.grants.values().filter(|g| g.email == u.spec.email).count(),
                })
            })
            .collect();
        let faults: Vec<Value> = inner
            .faults
            .iter()
            .map(|f| json!({"id": f.id, "kind": format!("{:?}", f.spec.kind), "account": f.spec.account, "remaining": f.remaining}))
            .collect();
        json!({"now": now.as_secs(), "users": users, "faults": faults})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ccs_actors::ManualClock;
    use std::sync::Arc;

    fn model(users: &[&str]) -> (SimModel, ManualClock) {
        let clock = ManualClock::new(Timestamp::from_secs(1_760_000_000));
        let scenario = Scenario {
            users: users.iter().map(|e| User::new(e)).collect(),
            ..Scenario::default()
        };
        (SimModel::new(&scenario, Arc::new(clock.clone()), 7), clock)
    }

    #[test]
    fn same_seed_same_tokens() {
        let run = || {
            let (m, _) = model(&["a@x"]);
            let verifier = "v".repeat(43);
            let Authorized::Approved { code, state, .. } = m
                .authorize(&AuthorizeQuery {
                    client_id: Some("c".into()),
                    response_type: Some("code".into()),
                    redirect_uri: Some("http://localhost:1/callback".into()),
                    code_challenge: Some(pkce_challenge(&verifier)),
                    code_challenge_method: Some("S256".into()),
                    state: Some("st".into()),
                    ..Default::default()
                })
                .unwrap()
            else {
                panic!("denied")
            };
            m.token(&json!({"grant_type":"authorization_code","code":code,"state":state,"client_id":"c","redirect_uri":"http://localhost:1/callback","code_verifier":verifier}))
                .result
                .unwrap()
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn windows_roll_after_their_length() {
        let mut w = Window::new(2, FIVE_HOURS);
        let t0 = Timestamp::from_secs(100);
        w.consume(2, t0);
        assert!(w.exhausted());
        w.roll(t0.plus(FIVE_HOURS).minus(Duration::from_secs(1)));
        assert!(w.exhausted());
        w.roll(t0.plus(FIVE_HOURS));
        assert!(!w.exhausted());
        assert_eq!(w.used, 0);
    }
}
