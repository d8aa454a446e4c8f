//! The CLI's side of the management API: a small blocking client with one typed method per
//! route (the shapes are `api.rs`, shared with the daemon). Every command that reads or
//! changes accounts goes through it, because only the daemon opens the store.
//!
//! Must not: be used inside an async runtime (it blocks), or print the secret.

use std::time::Duration;

use anyhow::{anyhow, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::{self, path};

pub struct Client {
    base: String,
    secret: String,
    http: reqwest::blocking::Client,
}

impl Client {
    pub fn new(base: &str, secret: &str) -> Self {
        Client::with_timeout(base, secret, Duration::from_secs(60))
    }

    /// A client whose every call gives up after `timeout` (the status line's few ms).
    pub fn with_timeout(base: &str, secret: &str, timeout: Duration) -> Self {
        Client {
            base: base.trim_end_matches('/').to_string(),
            secret: secret.to_string(),
            http: reqwest::blocking::Client::builder()
                .no_proxy()
                .timeout(timeout)
                .build()
                .unwrap_or_else(|_| reqwest::blocking::Client::new()),
        }
    }

    /// A client for a daemon that serves HTTPS (`tls`: what it trusts, `endpoint::Endpoint`
    /// makes it) or plain HTTP (`None`).
    pub fn build(
        base: &str,
        secret: &str,
        timeout: Duration,
        tls: Option<rustls::ClientConfig>,
    ) -> Result<Self> {
        let mut b = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(timeout);
        if let Some(config) = tls {
            b = b.use_preconfigured_tls(config);
        }
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            secret: secret.to_string(),
            http: b
                .build()
                .map_err(|e| anyhow!("cannot set up a client for {base}: {e}"))?,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn call<T: DeserializeOwned>(&self, rb: reqwest::blocking::RequestBuilder) -> Result<T> {
        let resp = rb.bearer_auth(&self.secret).send().map_err(|e| {
            anyhow!(
                "cannot reach the ccs daemon at {}: {}",
                self.base,
                chain(&e)
            )
        })?;
        let status = resp.status();
        let text = resp.text().unwrap_or_default();
        if status.is_success() {
            return serde_json::from_str(&text).map_err(|e| {
                anyhow!(
                    "the daemon at {} answered in a shape this ccs does not know ({e}); is it \
                     another version? Restart it with `ccs cliproxy restart`",
                    self.base
                )
            });
        }
        let msg = serde_json::from_str::<api::ApiError>(&text)
            .map(|e| e.error)
            .unwrap_or_else(|_| format!("the daemon answered {status}"));
        Err(anyhow!(msg))
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(self.http.get(format!("{}{path}", self.base)))
    }

    pub fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T> {
        self.call(self.http.post(format!("{}{path}", self.base)).json(body))
    }

    fn put<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T> {
        self.call(self.http.put(format!("{}{path}", self.base)).json(body))
    }

    fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(self.http.delete(format!("{}{path}", self.base)))
    }

    pub fn status(&self) -> Result<api::Status> {
        self.get(path::STATUS)
    }

    pub fn accounts(&self) -> Result<Vec<api::AccountView>> {
        Ok(self.get::<api::Accounts>(path::ACCOUNTS)?.accounts)
    }

    pub fn add_account(&self, body: &api::AddAccount) -> Result<api::Added> {
        self.post(path::ACCOUNTS, body)
    }

    pub fn remove_account(&self, who: &str) -> Result<api::Removed> {
        self.delete(&path::account(who, None))
    }

    pub fn set_paused(&self, who: &str, paused: bool) -> Result<api::Paused> {
        let action = if paused { "pause" } else { "resume" };
        self.post(&path::account(who, Some(action)), &serde_json::json!({}))
    }

    pub fn rename(&self, who: &str, nickname: &str) -> Result<api::Renamed> {
        self.post(
            &path::account(who, Some("rename")),
            &api::Rename {
                nickname: nickname.to_string(),
            },
        )
    }

    pub fn set_default(&self, who: &str) -> Result<api::DefaultSet> {
        self.post(&path::account(who, Some("default")), &serde_json::json!({}))
    }

    pub fn refresh(&self, who: &str) -> Result<api::Refreshed> {
        self.post(&path::account(who, Some("refresh")), &serde_json::json!({}))
    }

    pub fn pools(&self) -> Result<api::Pools> {
        self.get(path::POOLS)
    }

    pub fn set_pool(&self, name: &str, accounts: &[String]) -> Result<api::PoolSet> {
        self.put(
            &path::pool(name),
            &api::SetPool {
                accounts: accounts.to_vec(),
            },
        )
    }

    pub fn delete_pool(&self, name: &str) -> Result<api::PoolDeleted> {
        self.delete(&path::pool(name))
    }

    pub fn events(&self) -> Result<Vec<api::Hop>> {
        Ok(self.get::<api::Events>(path::EVENTS)?.events)
    }

    /// The pool's accounts with their positions in it; with `max_age`, accounts whose usage is
    /// older than that many seconds are asked the usage endpoint first.
    pub fn quota(&self, pool: &str, max_age: Option<u64>) -> Result<api::Quota> {
        let mut q = format!("{}?pool={}", path::QUOTA, path::seg(pool));
        if let Some(s) = max_age {
            q.push_str(&format!("&max_age={s}"));
        }
        self.get(&q)
    }

    /// Tokens over the last `span` (`24h` or `7d`).
    pub fn usage(&self, span: &str) -> Result<api::Usage> {
        self.get(&format!("{}?span={}", path::USAGE, path::seg(span)))
    }

    /// The alerts that hold now, and the latest told.
    pub fn alerts(&self) -> Result<api::Alerts> {
        self.get(path::ALERTS)
    }

    /// One alert of each kind to every channel.
    pub fn test_alerts(&self) -> Result<api::AlertsTest> {
        self.post(path::ALERTS_TEST, &serde_json::json!({}))
    }

    /// The account serving conversation `id`.
    pub fn session(&self, id: &str) -> Result<api::SessionView> {
        self.get(&format!("{}?id={}", path::SESSION, path::seg(id)))
    }

    /// A one-time address that opens the dashboard logged in.
    pub fn login_link(&self) -> Result<api::LoginLink> {
        self.post(path::LOGIN_LINK, &serde_json::json!({}))
    }

    /// Starts a browser login of a new account on the daemon; the browser comes back to the
    /// daemon (`None`) or to the CLI's callback listener at `redirect_uri`.
    pub fn start_login(&self, redirect_uri: Option<String>) -> Result<api::LoginStart> {
        self.post(path::LOGIN_START, &api::StartLogin { redirect_uri })
    }

    /// Hands a login's answer to the daemon, which exchanges the code and keeps the tokens.
    pub fn finish_login(&self, answer: &api::FinishLogin) -> Result<api::LoggedIn> {
        self.post(path::LOGIN_FINISH, answer)
    }

    pub fn client_keys(&self) -> Result<Vec<api::ClientKeyInfo>> {
        Ok(self.get::<api::ClientKeys>(path::CLIENTS)?.clients)
    }

    /// Makes a named client key; the answer is the only place the key is ever shown.
    pub fn add_client_key(&self, key: &api::AddClientKey) -> Result<api::NewClientKey> {
        self.post(path::CLIENTS, key)
    }

    pub fn revoke_client_key(&self, name: &str) -> Result<api::ClientRevoked> {
        self.delete(&format!("{}/{}", path::CLIENTS, path::seg(name)))
    }

    pub fn shutdown(&self) -> Result<api::Stopping> {
        self.post(path::SHUTDOWN, &serde_json::json!({}))
    }
}

/// An error with its causes, "a: b: c" (reqwest's own text hides a TLS refusal's reason).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        cur = c.source();
    }
    out
}
