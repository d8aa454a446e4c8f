//! `ccs alerts`: the alerts that hold now and the latest told; `ccs alerts test` sends one of
//! each kind to every channel and says how each took them.

use anyhow::{bail, Result};

use super::cliproxy::client;

/// `ccs alerts [--json]`.
pub fn list(json_out: bool) -> Result<()> {
    let a = client()?.alerts()?;
    if json_out {
        outln!("{}", serde_json::to_string_pretty(&a)?);
        return Ok(());
    }
    if a.active.is_empty() {
        outln!("nothing needs attention now");
    }
    for x in &a.active {
        outln!("now     {}", x.text);
    }
    if !a.recent.is_empty() {
        outln!("\nlatest told:");
    }
    for x in a.recent.iter().rev().take(20) {
        let test = if x.test { " (test)" } else { "" };
        outln!(
            "{:>4}  {}  {}{test}  {}",
            x.id,
            x.at,
            x.event.as_str(),
            x.subject
        );
    }
    Ok(())
}

/// `ccs alerts test [--json]`: fails when a configured channel could not take them.
pub fn test(json_out: bool) -> Result<()> {
    let t = client()?.test_alerts()?;
    if json_out {
        outln!("{}", serde_json::to_string_pretty(&t)?);
    } else {
        outln!(
            "sent {} test alerts: {}",
            t.sent.len(),
            t.sent
                .iter()
                .map(|a| a.event.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        for c in &t.channels {
            let mark = if c.ok { "ok    " } else { "FAILED" };
            outln!("{mark} {:<12} {}", c.channel, c.detail);
        }
    }
    let failed: Vec<&str> = t
        .channels
        .iter()
        .filter(|c| !c.ok)
        .map(|c| c.channel.as_str())
        .collect();
    if !failed.is_empty() {
        bail!(
            "{} did not take the test alerts: check alerts: in config.yaml, and the daemon's log",
            failed.join(" and ")
        );
    }
    Ok(())
}
