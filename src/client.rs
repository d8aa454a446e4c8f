//! The CLI's side of the management API: a small blocking client. Every command that reads
//! or changes accounts goes through it, because only the daemon opens the store.
//!
//! Must not: be used inside an async runtime (it blocks), or print the secret.

use std::time::Duration;

use anyhow::{anyhow, Result};
use serde_json::Value;

pub struct Client {
    base: String,
    secret: String,
    http: reqwest::blocking::Client,
}

impl Client {
    pub fn new(base: &str, secret: &str) -> Self {
        Client {
            base: base.trim_end_matches('/').to_string(),
            secret: secret.to_string(),
            http: reqwest::blocking::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap_or_else(|_| reqwest::blocking::Client::new()),
        }
    }

    fn call(&self, rb: reqwest::blocking::RequestBuilder) -> Result<Value> {
        let resp = rb
            .bearer_auth(&self.secret)
            .send()
            .map_err(|e| anyhow!("cannot reach the ccs daemon at {}: {e}", self.base))?;
        let status = resp.status();
        let body: Value = resp.json().unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let msg = body["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("the daemon answered {status}"));
        Err(anyhow!(msg))
    }

    pub fn get(&self, path: &str) -> Result<Value> {
        self.call(self.http.get(format!("{}{path}", self.base)))
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.call(self.http.post(format!("{}{path}", self.base)).json(body))
    }

    pub fn put(&self, path: &str, body: &Value) -> Result<Value> {
        self.call(self.http.put(format!("{}{path}", self.base)).json(body))
    }

    pub fn delete(&self, path: &str) -> Result<Value> {
        self.call(self.http.delete(format!("{}{path}", self.base)))
    }
}
