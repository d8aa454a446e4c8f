//! The management API's shapes: every request and answer of `/v0/management/*`, as serde
//! types shared by the daemon (`proxy/manage/`), the CLI (`client.rs`), the dashboard's
//! script (which reads the same JSON) and the tests. A field renamed here is renamed for all
//! of them at once; nothing indexes the JSON by hand.
//!
//! Times are RFC 3339 strings in UTC; utilization is a fraction (0.0–1.0).
//!
//! Must not: answer with a token or a secret (only `AddAccount`, a request, carries one; and
//! `NewClientKey`, the one answer that shows a new client key to its maker).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::oauth::login::Answer;
use crate::oauth::TokenResponse;

/// The routes, so the daemon and the client cannot disagree on a path.
pub mod path {
    pub const STATUS: &str = "/v0/management/status";
    pub const ACCOUNTS: &str = "/v0/management/accounts";
    pub const POOLS: &str = "/v0/management/pools";
    pub const EVENTS: &str = "/v0/management/events";
    pub const QUOTA: &str = "/v0/management/quota";
    pub const USAGE: &str = "/v0/management/usage";
    pub const SHUTDOWN: &str = "/v0/management/shutdown";
    pub const SESSION: &str = "/v0/management/session";
    pub const LOGIN_LINK: &str = "/v0/management/login-link";
    pub const LIVE: &str = "/v0/management/live";
    pub const LOGIN_START: &str = "/v0/management/login/start";
    pub const LOGIN_FINISH: &str = "/v0/management/login/finish";
    pub const CLIENTS: &str = "/v0/management/clients";
    pub const ALERTS: &str = "/v0/management/alerts";
    pub const ALERTS_TEST: &str = "/v0/management/alerts/test";

    /// Percent-encodes one path segment (an e-mail, a nickname, a pool name).
    pub fn seg(s: &str) -> String {
        url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
    }

    /// `/v0/management/accounts/{who}` and, with `action`, `…/{who}/{action}`.
    pub fn account(who: &str, action: Option<&str>) -> String {
        match action {
            Some(a) => format!("{ACCOUNTS}/{}/{a}", seg(who)),
            None => format!("{ACCOUNTS}/{}", seg(who)),
        }
    }

    pub fn pool(name: &str) -> String {
        format!("{POOLS}/{}", seg(name))
    }
}

/// Every refusal: a message that says what to do next.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

/// One quota window (5-hour or weekly) of one account.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowView {
    /// `allowed`, `allowed_warning` or `rejected` (Anthropic's words), or `unknown`.
    pub status: String,
    pub utilization: f64,
    pub resets_at: Option<String>,
    /// When the daemon last heard of this window.
    pub seen_at: Option<String>,
}

/// One account as the daemon sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AccountView {
    pub email: String,
    pub nickname: String,
    /// The default account: the head of the default pool.
    pub default: bool,
    /// The token lifecycle state: `fresh`, `expiring`, `refreshing`, `dead` (or `unknown`).
    pub state: String,
    /// What the person should do about it, when anything.
    pub fix: Option<String>,
    pub refused_until: Option<String>,
    pub paused: bool,
    pub plan: Option<String>,
    pub expires_at: Option<String>,
    /// 1-based place in the drain order of the pool asked about (the default pool unless the
    /// request named one); `None` when the account is not in that pool.
    pub position: Option<usize>,
    /// The pools this account belongs to.
    #[serde(default)]
    pub pools: Vec<String>,
    pub five_hour: Option<WindowView>,
    pub seven_day: Option<WindowView>,
    /// Limited until then (by a window, a backoff or a bench).
    pub cooldown_until: Option<String>,
    pub created_at: String,
    pub last_used_at: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Accounts {
    pub accounts: Vec<AccountView>,
}

/// `GET /quota?pool=P&max_age=S`: the pool's accounts (positions in that pool) and the one a
/// new conversation would start on.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Quota {
    pub pool: String,
    pub accounts: Vec<AccountView>,
    pub next_for_new_sessions: Option<String>,
    /// When, at the last hour's pace, the pool runs dry.
    #[serde(default)]
    pub runway: Option<Runway>,
}

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// An account's grant is gone: it needs a new login.
    AccountDead,
    /// A pool's runway dropped under `alerts.runway_below`.
    RunwayLow,
    /// Every account of a pool is limited (or paused, or dead).
    PoolLimited,
    /// An account's window opened before its announced reset.
    CameBack,
    /// An account's refreshes failed several times in a row (not yet dead).
    RefreshFailing,
    /// The daemon started after a run that did not stop cleanly.
    RestartedAfterCrash,
}

impl AlertKind {
    pub const ALL: [AlertKind; 6] = [
        AlertKind::AccountDead,
        AlertKind::RunwayLow,
        AlertKind::PoolLimited,
        AlertKind::CameBack,
        AlertKind::RefreshFailing,
        AlertKind::RestartedAfterCrash,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::AccountDead => "account_dead",
            AlertKind::RunwayLow => "runway_low",
            AlertKind::PoolLimited => "pool_limited",
            AlertKind::CameBack => "came_back",
            AlertKind::RefreshFailing => "refresh_failing",
            AlertKind::RestartedAfterCrash => "restarted_after_crash",
        }
    }

    /// A condition lasts and may clear; the others are moments.
    pub fn lasts(self) -> bool {
        matches!(
            self,
            AlertKind::AccountDead
                | AlertKind::RunwayLow
                | AlertKind::PoolLimited
                | AlertKind::RefreshFailing
        )
    }
}

/// An event as it is told: numbered in order, stamped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Increases by one per alert of this daemon's run: receivers see the order, and a retry
    /// carries the same id.
    pub id: u64,
    pub event: AlertKind,
    pub subject: String,
    /// Slack-compatible: the whole alert in one line.
    pub text: String,
    /// RFC 3339.
    pub at: String,
    /// Sent by `ccs alerts test`.
    pub test: bool,
}

impl Alert {
    /// A few words for the status line.
    pub fn short(&self) -> String {
        let s = &self.subject;
        match self.event {
            AlertKind::AccountDead => format!("{s} needs a login"),
            AlertKind::RunwayLow => format!("pool {s} runs low"),
            AlertKind::PoolLimited => format!("pool {s} all limited"),
            AlertKind::CameBack => format!("{s} back early"),
            AlertKind::RefreshFailing => format!("{s} refresh failing"),
            AlertKind::RestartedAfterCrash => "restarted after a crash".into(),
        }
    }
}

/// `GET /alerts`: what holds now (the dashboard's banner) and the latest told.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Alerts {
    pub active: Vec<Alert>,
    pub recent: Vec<Alert>,
}

/// `POST /alerts/test`: one alert of each kind, and how each channel took them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AlertsTest {
    pub sent: Vec<Alert>,
    pub channels: Vec<AlertChannel>,
}

/// How a channel took `ccs alerts test`'s alerts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertChannel {
    pub channel: String,
    pub ok: bool,
    pub detail: String,
}

/// A pool's runway (`specs/runway.md`): when, at the pace of the last hour, every account of
/// it is limited, and which reset then frees one first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Runway {
    pub pool: String,
    pub state: RunwayState,
    /// When it runs dry (RFC 3339), for `dry_at` and `dry`.
    pub dry_at: Option<String>,
    /// Seconds from now until then.
    pub seconds: Option<u64>,
    /// The pool's pace: requests an hour, over the last hour.
    pub requests_per_hour: Option<f64>,
    /// The first account to have room again once the pool is dry.
    pub freed: Option<RunwayFreed>,
    /// All of it in one line for people (`describe`), times in the daemon's local time.
    #[serde(default)]
    pub text: String,
}

/// What a runway says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunwayState {
    /// Less than five samples' history.
    Unknown,
    /// Nothing spent in the last hour.
    Idle,
    /// The resets keep up: not dry within a week.
    Lasts,
    /// Dry at `dry_at`.
    DryAt,
    /// Every account is limited now.
    Dry,
}

/// A quota window, by its name in the API's usage answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowName {
    FiveHour,
    SevenDay,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunwayFreed {
    pub account: String,
    /// RFC 3339.
    pub at: String,
    /// The window whose reset frees it.
    pub window: WindowName,
    /// The share of its 5-hour window it then has (0..1).
    pub frees: f64,
}

impl Runway {
    /// One line for people: "at this pace the pool lasts until 16:40 (in 2h 5m); alice's
    /// 5-hour window resets at 17:05 (frees ~100 % of it)". Times in local time, "in …"
    /// counted from `now_ms` (Unix milliseconds).
    pub fn describe(&self, now_ms: u64) -> String {
        let at = |s: &str| match chrono::DateTime::parse_from_rfc3339(s) {
            Ok(t) => {
                let local = t.with_timezone(&chrono::Local);
                let left = (t.timestamp_millis() - now_ms as i64).max(0);
                let when = if left < 86_400_000 {
                    local.format("%H:%M").to_string()
                } else {
                    local.format("%a %d %b %H:%M").to_string()
                };
                if left >= 60_000 {
                    format!(
                        "{when} (in {})",
                        crate::config::words(std::time::Duration::from_millis(left as u64))
                    )
                } else {
                    when
                }
            }
            Err(_) => s.to_string(),
        };
        let head = match (self.state, &self.dry_at) {
            (RunwayState::Unknown, _) => {
                return "runway not known yet (it needs a few minutes of use)".into()
            }
            (RunwayState::Idle, _) => {
                return "nothing spent in the last hour: the pool does not run dry".into()
            }
            (RunwayState::Lasts, _) => {
                return "at this pace the pool does not run dry (its resets keep up)".into()
            }
            (RunwayState::Dry, _) => "every account of the pool is limited now".to_string(),
            (RunwayState::DryAt, Some(d)) => format!("at this pace the pool lasts until {}", at(d)),
            (RunwayState::DryAt, None) => "at this pace the pool runs dry".to_string(),
        };
        match &self.freed {
            Some(f) if f.window == WindowName::SevenDay => format!(
                "{head}; {}'s weekly window resets at {} (frees ~{:.0} % of a 5-hour window)",
                f.account,
                at(&f.at),
                f.frees * 100.0
            ),
            Some(f) => format!(
                "{head}; {}'s 5-hour window resets at {} (frees ~{:.0} % of it)",
                f.account,
                at(&f.at),
                f.frees * 100.0
            ),
            None => head,
        }
    }

    /// Whether it runs dry within `within` (dry now included).
    pub fn dry_within(&self, within: std::time::Duration) -> bool {
        matches!(self.state, RunwayState::Dry | RunwayState::DryAt)
            && self.seconds.is_some_and(|s| s < within.as_secs())
    }

    /// Short, for the status line, once under an hour: `pool 42m` (`pool work 42m` for a pool
    /// of another name, `pool dry` when dry now).
    pub fn short(&self) -> Option<String> {
        if !self.dry_within(std::time::Duration::from_secs(3600)) {
            return None;
        }
        let name = match self.pool.as_str() {
            "claude" => "pool".to_string(),
            other => format!("pool {other}"),
        };
        Some(match self.state {
            RunwayState::Dry => format!("{name} dry"),
            _ => format!("{name} {}m", self.seconds?.div_ceil(60)),
        })
    }
}

/// The body of `POST /accounts`: a login's outcome.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AddAccount {
    /// The authority's token response, as the login received it.
    pub token_response: TokenResponse,
    /// Used when the token response names no e-mail (then the profile endpoint did).
    pub email: Option<String>,
    pub plan: Option<String>,
    pub account_uuid: Option<String>,
    pub organization_uuid: Option<String>,
    pub organization_name: Option<String>,
}

impl AddAccount {
    /// A login's outcome (`oauth::login::complete`) as the body that hands it to the daemon.
    pub fn from_login(
        email: &str,
        tokens: TokenResponse,
        profile: Option<&crate::oauth::Profile>,
    ) -> AddAccount {
        let field =
            |f: fn(&crate::oauth::Profile) -> &Option<String>| profile.and_then(|p| f(p).clone());
        AddAccount {
            token_response: tokens,
            email: Some(email.to_string()),
            plan: field(|p| &p.plan),
            account_uuid: field(|p| &p.account_uuid),
            organization_uuid: field(|p| &p.organization_uuid),
            organization_name: field(|p| &p.organization_name),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Added {
    pub created: bool,
    pub account: Option<AccountView>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Removed {
    pub removed: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Paused {
    pub email: String,
    pub paused: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Rename {
    pub nickname: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Renamed {
    pub email: String,
    pub nickname: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DefaultSet {
    pub default: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Refreshed {
    pub email: String,
    pub state: String,
    /// Set when the answer is still awaited (202): what that means for the account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
}

/// Pool name → members (e-mail keys) in drain order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pools {
    pub pools: BTreeMap<String, Vec<String>>,
}

/// The body of `PUT /pools/{name}`: accounts by e-mail or nickname, in drain order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SetPool {
    pub accounts: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PoolSet {
    pub pool: String,
    pub accounts: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PoolDeleted {
    pub deleted: String,
}

/// A conversation moved from one account to another.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hop {
    pub at: String,
    pub session: String,
    pub from: String,
    pub to: String,
    /// `limited`, `dead`, `paused`, `no_token`, `failed` or `removed`.
    pub reason: String,
}

impl From<&ccs_actors::supervisor::HopEvent> for Hop {
    fn from(e: &ccs_actors::supervisor::HopEvent) -> Hop {
        Hop {
            at: crate::store::mirror::rfc3339(e.at.as_millis()),
            session: e.session.clone(),
            from: e.from.to_string(),
            to: e.to.to_string(),
            reason: e.reason.as_str().to_string(),
        }
    }
}

/// The name of the main client key (`cliproxy.auth.api_key`, or the generated one).
pub const DEFAULT_CLIENT: &str = "default";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Events {
    pub events: Vec<Hop>,
}

/// The daemon as a whole.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub state: String,
    pub url: String,
    pub version: String,
    pub pid: u32,
    pub uptime_secs: u64,
    pub accounts: usize,
    /// Lifecycle state → how many accounts are in it.
    pub by_state: BTreeMap<String, usize>,
    pub paused: usize,
    pub requests_last_hour: u64,
    pub hops_last_hour: usize,
    pub sessions: usize,
    /// What the store noticed at start (files passed over, a damaged file moved aside).
    pub store_notes: Vec<String>,
    /// When the certificate the daemon serves (TLS) stops being valid (RFC 3339).
    #[serde(default)]
    pub certificate_expires: Option<String>,
    /// Bytes the store takes on disk.
    pub store_bytes: u64,
    /// The latest token refreshes, newest last.
    #[serde(default)]
    pub refreshes: Vec<RefreshRecord>,
    /// The latest warnings and errors the daemon logged, newest last.
    #[serde(default)]
    pub errors: Vec<LogRecord>,
    /// Where the pool's state lives, and in a shared pool who else serves it.
    #[serde(default)]
    pub store: StoreStatus,
    /// What a move does to thinking blocks (specs/continuity.md).
    #[serde(default)]
    pub continuity: ContinuityStatus,
    /// Each pool's runway.
    #[serde(default)]
    pub runway: Vec<Runway>,
    /// The alerts that hold now, newest first.
    #[serde(default)]
    pub alerts: Vec<Alert>,
}

/// Fitting on or off, and the models learned at run time to refuse another account's thinking
/// blocks (their moves are fitted up front).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ContinuityStatus {
    pub fit: bool,
    pub learned_reject: Vec<String>,
    /// Requests fitted so far (this run), and of those after a 400.
    pub fitted: u64,
    pub fitted_after_400: u64,
}

/// A daemon seen alive through its `peer:` key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub id: String,
    pub url: String,
    pub version: String,
    /// This daemon itself.
    pub me: bool,
}

/// A refresh lease as Redis holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseHolder {
    pub account: String,
    pub daemon: String,
    pub fence: u64,
    pub expires_in_ms: u64,
}

/// `store.backend` as the daemon runs it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreStatus {
    /// `sled` (this daemon alone) or `redis` (a shared pool).
    pub backend: String,
    /// The Redis URL, its password hidden.
    pub redis_url: Option<String>,
    /// Whether Redis answered the daemon's last command.
    pub reachable: Option<bool>,
    /// This daemon's name among its peers.
    pub daemon: Option<String>,
    /// The daemons alive now, this one included.
    pub peers: Vec<Peer>,
    /// Who holds each refresh lease now.
    pub leases: Vec<LeaseHolder>,
}

/// One refresh call's outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefreshRecord {
    pub at: String,
    pub account: String,
    /// `ok`, `fatal` (the grant is gone), `transient` or `unknown` (sent, answer lost).
    pub outcome: String,
    pub millis: u64,
}

/// One warning or error line of the daemon's log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    pub at: String,
    pub level: String,
    pub message: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stopping {
    pub stopping: bool,
}

/// Tokens counted from the `usage` of answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    pub requests: u64,
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_creation: u64,
}

impl Tokens {
    pub fn add(&mut self, o: &Tokens) {
        self.requests += o.requests;
        self.input += o.input;
        self.output += o.output;
        self.cache_read += o.cache_read;
        self.cache_creation += o.cache_creation;
    }

    pub fn total(&self) -> u64 {
        self.input + self.output + self.cache_read + self.cache_creation
    }
}

/// Use of one account (or one model) over a span.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UsageRow {
    pub name: String,
    pub tokens: Tokens,
}

/// One hour's tokens, for a chart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UsageHour {
    /// The hour's start.
    pub at: String,
    pub tokens: Tokens,
}

/// `GET /usage?span=24h|7d`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// `24h` or `7d`.
    pub span: String,
    pub total: Tokens,
    pub by_account: Vec<UsageRow>,
    pub by_model: Vec<UsageRow>,
    /// By the name of the client key the requests came with.
    #[serde(default)]
    pub by_client: Vec<UsageRow>,
    /// Every hour of the span, oldest first (hours without traffic are zero).
    pub hours: Vec<UsageHour>,
}

/// One finished request, as the live feed sends it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub at: String,
    /// The name of the client key it came with.
    pub client: Option<String>,
    pub session: Option<String>,
    pub account: Option<String>,
    pub model: Option<String>,
    pub status: u16,
    pub latency_ms: u64,
    /// Time to the first byte of the answer.
    pub ttfb_ms: Option<u64>,
    pub hops: usize,
    pub end: String,
    pub tokens: Option<Tokens>,
    /// Thinking blocks removed from its history on a move (specs/continuity.md), and whether
    /// it went without thinking for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fitted: Option<Fit>,
    /// Thinking blocks of its history the API dropped instead of reading, as the answer's
    /// `input_transformations` listed them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub thinking_dropped: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// What fitting did to one request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fit {
    pub blocks_removed: usize,
    pub thinking_lowered: bool,
    pub after_400: bool,
}

/// What the live feed (`/dashboard/api/live`, SSE) carries: one event per request or hop.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LiveEvent {
    Request(RequestRecord),
    Hop(Hop),
    /// An account was added, logged in again, or logged out.
    Changed(Changed),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Changed {
    pub at: String,
    pub account: String,
    /// `added`, `logged in again` or `logged out`.
    pub what: String,
}

/// `GET /session?id=S`: the account serving a conversation, for Claude Code's status line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionView {
    pub account: Option<String>,
    pub nickname: Option<String>,
    pub five_hour: Option<f64>,
    pub seven_day: Option<f64>,
    /// The account it moved from, when it moved within the last few turns.
    pub moved_from: Option<String>,
    /// What the move cost: the input tokens the first answer on the new account read uncached
    /// (plain input and cache writes), once that answer is in.
    #[serde(default)]
    pub reread_tokens: Option<u64>,
    /// The shortest runway of the pools its account is in (the default pool's for a new
    /// conversation).
    #[serde(default)]
    pub runway: Option<Runway>,
    /// The newest alert that holds, in a few words.
    #[serde(default)]
    pub alert: Option<String>,
}

/// `POST /login-link`: a one-time address that opens the dashboard logged in. The token is
/// in the fragment, so it never reaches a server log or a `Referer`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoginLink {
    pub url: String,
}

/// `POST /login/start`: where to send the browser to log a new account in. Without a
/// `redirect_uri` it comes back to the daemon's own `/callback` (the dashboard); a CLI that
/// logs an account into a remote daemon names its local callback listener
/// (`http://localhost:PORT/callback`) and hands the answer on with `POST /login/finish`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StartLogin {
    #[serde(default)]
    pub redirect_uri: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoginStart {
    pub url: String,
    /// The login's state: an answer whose state differs belongs to another login.
    #[serde(default)]
    pub state: String,
}

/// `POST /login/finish`: the authority's answer (a code, or its refusal) to a login begun with
/// `/login/start`; the daemon exchanges the code itself, so the tokens never leave it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FinishLogin {
    pub state: String,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub error_description: Option<String>,
}

/// An answer as a CLI hands it to a remote daemon's `/login/finish`.
impl From<&Answer> for FinishLogin {
    fn from(a: &Answer) -> Self {
        match a {
            Answer::Code { code, state } => FinishLogin {
                state: state.clone(),
                code: Some(code.clone()),
                error: None,
                error_description: None,
            },
            Answer::Denied {
                error,
                description,
                state,
            } => FinishLogin {
                state: state.clone(),
                code: None,
                error: Some(error.clone()),
                error_description: description.clone(),
            },
        }
    }
}

/// The authority's answer as a browser brings it (`/callback`'s query) or a CLI hands it on:
/// a code, unless an error is named.
impl From<FinishLogin> for Answer {
    fn from(f: FinishLogin) -> Self {
        match (f.code, f.error) {
            (Some(code), None) => Answer::Code {
                code,
                state: f.state,
            },
            (_, error) => Answer::Denied {
                error: error.unwrap_or_else(|| "no code".into()),
                description: f.error_description,
                state: f.state,
            },
        }
    }
}

/// What `/login/finish` did: the account's e-mail and how it joined.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoggedIn {
    pub email: String,
    #[serde(flatten)]
    pub added: Added,
}

/// A client key as `GET /clients` lists it: never the key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClientKeyInfo {
    pub name: String,
    /// Set in config.yaml (changed only there), else made with `ccs cliproxy key add`.
    pub from_config: bool,
    pub created_at: Option<String>,
    /// The first 8 hex digits of the key's SHA-256, to tell keys apart.
    pub key_sha256_prefix: String,
    /// The pools it may draw from (empty: any).
    #[serde(default)]
    pub pools: Vec<String>,
    /// The key's own limits (none: only the accounts' quota limits it).
    pub requests_per_minute: Option<u32>,
    pub concurrent: Option<u32>,
    /// Its requests in flight now.
    pub in_flight: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClientKeys {
    pub clients: Vec<ClientKeyInfo>,
}

/// The body of `POST /clients`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AddClientKey {
    pub name: String,
    /// The pools it may draw from (empty: any).
    #[serde(default)]
    pub pools: Vec<String>,
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    #[serde(default)]
    pub concurrent: Option<u32>,
}

/// A new client key: the only answer that ever carries one.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewClientKey {
    pub name: String,
    pub key: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClientRevoked {
    pub revoked: String,
}
