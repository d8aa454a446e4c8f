//! Where alerts go beyond the daemon's own views: the webhook (one JSON POST per alert, in
//! order, signed with HMAC-SHA256, retried with backoff by one task of its own) and the
//! desktop (a notification program, started and left to run). Neither ever holds a request:
//! alerts are queued, and a full queue drops the oldest news with a warning.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;

use super::Alert;
use crate::config::{Config, Webhook};

/// Alerts waiting for the webhook at most; more are dropped (and logged).
const QUEUE: usize = 256;

/// A webhook delivery is tried this many times, waiting `BACKOFF` doubled between tries.
const TRIES: u32 = 6;
const BACKOFF: Duration = Duration::from_secs(1);

/// One try's bound.
const TRY_WITHIN: Duration = Duration::from_secs(10);

/// The signature header: `sha256=` and the hex HMAC-SHA256, keyed with
/// `alerts.webhook.secret`, of `TIMESTAMP.BODY` (the `X-Ccs-Timestamp` value, a dot, the body).
pub const SIGNATURE: &str = "x-ccs-signature";
pub const TIMESTAMP: &str = "x-ccs-timestamp";

pub use crate::api::AlertChannel as Outcome;

pub struct Channels {
    webhook: Option<(Webhook, mpsc::Sender<Alert>)>,
    /// Taken by `run_webhook`.
    queued: Mutex<Option<mpsc::Receiver<Alert>>>,
    desktop: Option<Desktop>,
    client: reqwest::Client,
}

/// A notification program and how it is called.
#[derive(Clone, Debug)]
enum Desktop {
    /// `PROGRAM TITLE BODY` (notify-send, or the configured program).
    Args(PathBuf),
    /// macOS: `osascript -e 'display notification …'`.
    Osascript(PathBuf),
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn desktop_of(config: &Config) -> Option<Desktop> {
    match config.alerts.desktop.as_str() {
        "off" => None,
        // Only for a daemon on this machine: a server's daemon has nobody at its desktop.
        "auto" if !config.cliproxy.host.is_loopback() => None,
        "auto" if cfg!(target_os = "macos") => on_path("osascript").map(Desktop::Osascript),
        "auto" => on_path("notify-send").map(Desktop::Args),
        program => Some(Desktop::Args(PathBuf::from(program))),
    }
}

/// Why one try to deliver an alert failed (the receiver's address left out: its path may be a
/// token).
#[derive(Debug, thiserror::Error)]
enum Undelivered {
    #[error("{0}")]
    Unreachable(reqwest::Error),
    #[error("answered {0}")]
    Refused(reqwest::StatusCode),
    #[error("the alert cannot be encoded: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The body a receiver gets.
#[derive(Serialize)]
struct Payload<'a> {
    #[serde(flatten)]
    alert: &'a Alert,
    source: &'static str,
}

/// The hex HMAC-SHA256 of `timestamp.body` under `secret`.
pub fn signature(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

impl Channels {
    /// Channels over `client` (the daemon's outbound client: no second TLS set-up).
    pub fn new(config: &Config, client: reqwest::Client) -> Channels {
        let (webhook, queued) = match &config.alerts.webhook {
            Some(w) => {
                let (tx, rx) = mpsc::channel(QUEUE);
                (Some((w.clone(), tx)), Some(rx))
            }
            None => (None, None),
        };
        Channels {
            webhook,
            queued: Mutex::new(queued),
            desktop: desktop_of(config),
            client,
        }
    }

    /// Hands `alert` to every channel; returns at once.
    pub fn queue(&self, alert: Alert) {
        if let Some(d) = &self.desktop {
            notify(d, &alert);
        }
        if let Some((_, tx)) = &self.webhook {
            if tx.try_send(alert).is_err() {
                tracing::warn!("the alert webhook is {QUEUE} alerts behind: this one is dropped");
            }
        }
    }

    /// Delivers the queued alerts to the webhook, in order, for as long as the daemon runs.
    pub async fn run_webhook(&self) {
        let Some((hook, _)) = &self.webhook else {
            return;
        };
        let Some(mut rx) = self.queued.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        while let Some(alert) = rx.recv().await {
            let mut wait = BACKOFF;
            for attempt in 1..=TRIES {
                match self.post(hook, &alert).await {
                    Ok(()) => break,
                    Err(e) if attempt == TRIES => tracing::warn!(
                        id = alert.id,
                        error = %e,
                        "the alert webhook refused {TRIES} times: this alert is given up"
                    ),
                    Err(e) => {
                        tracing::info!(id = alert.id, attempt, error = %e, "alert webhook: trying again in {} s", wait.as_secs());
                        tokio::time::sleep(wait).await;
                        wait *= 2;
                    }
                }
            }
        }
    }

    /// One try.
    async fn post(&self, hook: &Webhook, alert: &Alert) -> Result<(), Undelivered> {
        let body = serde_json::to_vec(&Payload {
            alert,
            source: "ccs",
        })?;
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let sent = self
            .client
            .post(&hook.url)
            .timeout(TRY_WITHIN)
            .header("content-type", "application/json")
            .header("x-ccs-event", alert.event.as_str())
            .header("x-ccs-delivery", alert.id.to_string())
            .header(TIMESTAMP, ts.to_string())
            .header(
                SIGNATURE,
                format!("sha256={}", signature(&hook.secret, ts, &body)),
            )
            .body(body)
            .send()
            .await
            .map_err(|e| Undelivered::Unreachable(e.without_url()))?;
        match sent.status() {
            s if s.is_success() => Ok(()),
            s => Err(Undelivered::Refused(s)),
        }
    }

    /// `ccs alerts test`: each alert to each channel once, now, and how each went.
    pub async fn send_now(&self, alerts: &[Alert]) -> Vec<Outcome> {
        let mut out = Vec::new();
        match &self.webhook {
            Some((hook, _)) => {
                let mut failed = Vec::new();
                for a in alerts {
                    if let Err(e) = self.post(hook, a).await {
                        failed.push(format!("{}: {e}", a.event.as_str()));
                    }
                }
                out.push(Outcome {
                    channel: "webhook".into(),
                    ok: failed.is_empty(),
                    detail: if failed.is_empty() {
                        format!(
                            "{} alerts delivered to {}",
                            alerts.len(),
                            hide_path(&hook.url)
                        )
                    } else {
                        format!("to {}: {}", hide_path(&hook.url), failed.join("; "))
                    },
                });
            }
            None => out.push(Outcome {
                channel: "webhook".into(),
                ok: true,
                detail: "none configured (alerts.webhook)".into(),
            }),
        }
        match &self.desktop {
            Some(d) => {
                let ok = alerts.iter().all(|a| notify(d, a));
                out.push(Outcome {
                    channel: "desktop".into(),
                    ok,
                    detail: match (d, ok) {
                        (Desktop::Args(p) | Desktop::Osascript(p), true) => {
                            format!("{} notifications through {}", alerts.len(), p.display())
                        }
                        (Desktop::Args(p) | Desktop::Osascript(p), false) => {
                            format!("{} could not be started", p.display())
                        }
                    },
                });
            }
            None => out.push(Outcome {
                channel: "desktop".into(),
                ok: true,
                detail:
                    "none here (alerts.desktop off, no notify-send, or a daemon off this machine)"
                        .into(),
            }),
        }
        out.push(Outcome {
            channel: "dashboard".into(),
            ok: true,
            detail: "on the banner for two minutes".into(),
        });
        out.push(Outcome {
            channel: "status line".into(),
            ok: true,
            detail: "on Claude Code's status line for two minutes".into(),
        });
        out
    }
}

/// The webhook's address without its path and query, which may carry a token (Slack's do).
fn hide_path(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!("{}://{}/…", u.scheme(), u.host_str().unwrap_or("?")),
        Err(_) => "the webhook".into(),
    }
}

/// Starts the notification; whether it could be started. The child is reaped off the
/// caller's thread.
fn notify(d: &Desktop, alert: &Alert) -> bool {
    let title = format!("ccs: {}", alert.event.as_str().replace('_', " "));
    let mut cmd = match d {
        Desktop::Args(p) => {
            let mut c = std::process::Command::new(p);
            c.arg(&title).arg(&alert.text);
            c
        }
        Desktop::Osascript(p) => {
            let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
            let mut c = std::process::Command::new(p);
            c.arg("-e").arg(format!(
                "display notification \"{}\" with title \"{}\"",
                quote(&alert.text),
                quote(&title)
            ));
            c
        }
    };
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    match cmd.spawn() {
        Ok(mut child) => {
            std::thread::spawn(move || child.wait());
            true
        }
        Err(e) => {
            tracing::debug!(error = %e, "desktop notification not started");
            false
        }
    }
}
