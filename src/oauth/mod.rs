//! Talking to the OAuth authority: the token response, the refresh client the account actors
//! use, and the profile and usage endpoints (specs/anthropic.md §1, §3).
//!
//! The token endpoint takes JSON, not form encoding, so token calls are made here with reqwest
//! rather than through the oauth2 crate's form client. Must not: log a token, or call a failure
//! fatal unless the authority said the grant is gone.

pub mod login;

use std::time::Duration;

use ccs_actors::lifecycle::Failure;
use ccs_actors::ports::{BoxFuture, Refresher};
use ccs_actors::{Secret, SharedClock, Timestamp, Token};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The beta flag OAuth tokens need on the Messages API (and on the usage endpoint).
pub const OAUTH_BETA: &str = "oauth-2025-04-20";

/// The authority's answer to a code exchange or a refresh.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    /// Absent means: keep the refresh token you have.
    pub refresh_token: Option<String>,
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub account: Option<TokenAccount>,
    #[serde(default)]
    pub organization: Option<TokenOrganization>,
    /// The scopes granted, space-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TokenAccount {
    pub uuid: Option<String>,
    pub email_address: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TokenOrganization {
    pub uuid: Option<String>,
    pub name: Option<String>,
}

impl TokenResponse {
    /// The token, with `previous_refresh` kept when the response carries none, and an expiry
    /// of one hour when it names none.
    pub fn token(&self, now: Timestamp, previous_refresh: Option<&Secret>) -> Option<Token> {
        let refresh = match (&self.refresh_token, previous_refresh) {
            (Some(r), _) if !r.is_empty() => Secret::new(r.clone()),
            (_, Some(prev)) => prev.clone(),
            _ => return None,
        };
        Some(Token {
            access: Secret::new(self.access_token.clone()),
            refresh,
            expires_at: now.plus(Duration::from_secs(self.expires_in.unwrap_or(3600))),
        })
    }

    pub fn email(&self) -> Option<&str> {
        self.account.as_ref()?.email_address.as_deref()
    }
}

/// An answer's `retry-after`, in seconds.
fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    resp.headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// Builds the HTTP client every outbound call uses: rustls, pooled connections, no redirects.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// Classifies a failed refresh: the grant is gone only on `invalid_grant` or 401.
pub fn classify(status: u16, body: &str, retry_after: Option<Duration>) -> Failure {
    let invalid_grant = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("error")
                .and_then(|e| e.as_str())
                .map(|e| e == "invalid_grant")
        })
        .unwrap_or(false);
    if status == 401 || (status == 400 && invalid_grant) {
        Failure::Fatal
    } else {
        Failure::Transient { retry_after }
    }
}

/// Whether a failed refresh call may have reached the authority: a connection that never
/// opened is transient; anything after the request went out (a timeout, a reset, a cut body)
/// leaves the outcome unknown.
fn sent_or_not(account: &str, e: &reqwest::Error) -> Failure {
    if e.is_connect() {
        tracing::warn!(account, error = %e, "token endpoint unreachable; will retry");
        Failure::Transient { retry_after: None }
    } else {
        tracing::error!(account, error = %e, "a refresh was sent but its answer never arrived: if the authority rotated the grant, the next attempt finds it gone and the account needs a new login");
        Failure::Unknown
    }
}

/// The refresher the daemon's account actors use.
pub struct HttpRefresher {
    pub client: reqwest::Client,
    pub token_url: String,
    pub client_id: String,
    pub clock: SharedClock,
    /// After this long without an answer (`oauth.refresh_timeout`) the wait is logged as slow;
    /// the call goes on: its answer carries the grant's only live refresh token.
    pub slow_after: Duration,
    /// The call is given up only after this (far longer; in a shared pool, within the lease),
    /// and its outcome is then unknown.
    pub hard_bound: Duration,
    /// Where an answer is written and synced the moment it is read (a daemon of its own:
    /// `store/landing.rs`).
    pub landing: Option<crate::store::landing::Landing>,
    /// Where the calls run: a runtime of their own, so an answer is read (and landed) the
    /// moment it arrives, not when the actors' busy thread gets to it.
    pub on: tokio::runtime::Handle,
}

/// How long a sent refresh is waited for before it is given up: in a shared pool just inside
/// the lease (a peer may refresh once it ends), else ten minutes or five times
/// `oauth.refresh_timeout`, whichever is longer.
pub fn refresh_hard_bound(config: &crate::config::Config) -> Duration {
    let wait = config.oauth.refresh_timeout.0;
    match config.store.backend {
        crate::config::Backend::Redis => config
            .store
            .redis
            .lease
            .0
            .saturating_sub(Duration::from_secs(1))
            .max(wait),
        _ => (wait * 5).max(Duration::from_secs(600)),
    }
}

impl Refresher for HttpRefresher {
    fn refresh(&self, account: &str, refresh_token: &Secret) -> BoxFuture<Result<Token, Failure>> {
        let req = self
            .client
            .post(&self.token_url)
            .timeout(self.hard_bound)
            .json(&json!({
                "grant_type": "refresh_token",
                "refresh_token": refresh_token.expose(),
                "client_id": self.client_id,
            }));
        let clock = self.clock.clone();
        let previous = refresh_token.clone();
        let account = account.to_string();
        let (slow_after, hard_bound) = (self.slow_after, self.hard_bound);
        let landing = self.landing.clone();
        let call = async move {
            let sent = req.send();
            tokio::pin!(sent);
            let resp = tokio::select! {
                r = &mut sent => r,
                _ = tokio::time::sleep(slow_after) => {
                    tracing::warn!(
                        account,
                        waited_s = slow_after.as_secs(),
                        "the token endpoint has not answered this refresh yet: still waiting for \
                         its answer (up to {} s); the account serves on its current token meanwhile",
                        hard_bound.as_secs()
                    );
                    sent.await
                }
            };
            let resp = match resp {
                Ok(r) => r,
                Err(e) => return Err(sent_or_not(&account, &e)),
            };
            let status = resp.status().as_u16();
            let retry_after = retry_after(&resp);
            let body = match resp.text().await {
                Ok(b) => b,
                // The authority answered, and the answer was lost on the way in.
                Err(e) => return Err(sent_or_not(&account, &e)),
            };
            if !(200..300).contains(&status) {
                let failure = classify(status, &body, retry_after);
                tracing::warn!(account, status, ?failure, "refresh refused");
                return Err(failure);
            }
            let answered = std::time::Instant::now();
            let parsed: TokenResponse = serde_json::from_str(&body)
                .map_err(|_| Failure::Transient { retry_after: None })?;
            let now = ccs_actors::Clock::now(&*clock);
            let token = parsed
                .token(now, Some(&previous))
                .ok_or(Failure::Transient { retry_after: None })?;
            if let Some(landing) = &landing {
                // On this thread, before the token goes anywhere: from the authority's answer
                // to durable is what the disk costs, whatever else the machine is doing.
                match landing.land(&account, &previous, &token, now.as_millis()) {
                    Ok(written) => tracing::info!(
                        target: "ccs::refresh",
                        account,
                        answer_to_written_us = written.duration_since(answered).as_micros() as u64,
                        answer_to_durable_us = answered.elapsed().as_micros() as u64,
                        "refresh answer durable"
                    ),
                    Err(e) => tracing::warn!(
                        account,
                        error = %e,
                        "could not land the refresh answer; it goes to the store as usual"
                    ),
                }
            }
            Ok(token)
        };
        let running = self.on.spawn(call);
        Box::pin(async move {
            // The runtime went away (the daemon is stopping): the outcome is unknown.
            running.await.unwrap_or(Err(Failure::Unknown))
        })
    }
}

/// What the profile endpoint tells us about an account.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    pub email: Option<String>,
    pub account_uuid: Option<String>,
    pub organization_uuid: Option<String>,
    pub organization_name: Option<String>,
    /// Pro / Max / Team.
    pub plan: Option<String>,
}

/// `GET url` with the account's token and the OAuth beta flag; the JSON body on a 2xx.
/// Why a profile or usage call gave no body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchError {
    /// 429: asked too often (`retry_after` when the endpoint said so).
    Refused { retry_after: Option<Duration> },
    /// Anything else: unreachable, another status, a body that does not parse.
    Failed(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Refused {
                retry_after: Some(d),
            } => write!(f, "asked too often (429), retry after {} s", d.as_secs()),
            FetchError::Refused { retry_after: None } => write!(f, "asked too often (429)"),
            FetchError::Failed(why) => f.write_str(why),
        }
    }
}

async fn oauth_get<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    what: &str,
    url: &str,
    access: &Secret,
) -> Result<T, FetchError> {
    let resp = client
        .get(url)
        .bearer_auth(access.expose())
        .header("anthropic-beta", OAUTH_BETA)
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .map_err(|e| FetchError::Failed(format!("{what} endpoint unreachable: {e}")))?;
    if resp.status().as_u16() == 429 {
        let retry_after = retry_after(&resp);
        return Err(FetchError::Refused { retry_after });
    }
    if !resp.status().is_success() {
        return Err(FetchError::Failed(format!(
            "{what} endpoint answered {}",
            resp.status()
        )));
    }
    resp.json()
        .await
        .map_err(|e| FetchError::Failed(format!("{what}: {e}")))
}

/// Reads the profile endpoint's body.
pub fn parse_profile(v: &serde_json::Value) -> Profile {
    let s = |p: &str| v.pointer(p).and_then(|x| x.as_str()).map(str::to_string);
    let plan = match v
        .pointer("/organization/organization_type")
        .and_then(|x| x.as_str())
    {
        Some(t) if t.contains("max") => Some("Max".to_string()),
        Some(t) if t.contains("pro") => Some("Pro".to_string()),
        Some(t) if t.contains("team") => Some("Team".to_string()),
        Some(t) if t.contains("enterprise") => Some("Enterprise".to_string()),
        _ if v
            .pointer("/account/has_claude_max")
            .and_then(|x| x.as_bool())
            == Some(true) =>
        {
            Some("Max".into())
        }
        _ if v
            .pointer("/account/has_claude_pro")
            .and_then(|x| x.as_bool())
            == Some(true) =>
        {
            Some("Pro".into())
        }
        _ => None,
    };
    Profile {
        email: s("/account/email").or_else(|| s("/account/email_address")),
        account_uuid: s("/account/uuid"),
        organization_uuid: s("/organization/uuid"),
        organization_name: s("/organization/name"),
        plan,
    }
}

pub async fn fetch_usage(
    client: &reqwest::Client,
    url: &str,
    access: &Secret,
) -> Result<ccs_actors::quota::UsageBody, FetchError> {
    oauth_get(client, "usage", url, access).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_invalid_grant_and_401_are_fatal() {
        assert_eq!(
            classify(400, r#"{"error":"invalid_grant"}"#, None),
            Failure::Fatal
        );
        assert_eq!(classify(401, "", None), Failure::Fatal);
        assert_eq!(
            classify(400, r#"{"error":"invalid_request"}"#, None),
            Failure::Transient { retry_after: None }
        );
        let ra = Some(Duration::from_secs(7));
        assert_eq!(
            classify(429, "", ra),
            Failure::Transient { retry_after: ra }
        );
        assert_eq!(
            classify(503, "<html>", None),
            Failure::Transient { retry_after: None }
        );
    }

    #[test]
    fn a_response_without_refresh_token_keeps_the_old_one() {
        let r: TokenResponse =
            serde_json::from_str(r#"{"access_token":"a2","expires_in":60}"#).unwrap();
        let t = r
            .token(Timestamp::from_secs(100), Some(&Secret::new("r1")))
            .unwrap();
        assert_eq!(t.refresh.expose(), "r1");
        assert_eq!(t.expires_at, Timestamp::from_secs(160));
        assert!(r.token(Timestamp::from_secs(100), None).is_none());
    }
}
