//! `ccs cliproxy usage [--span 24h|7d] [--json]`: the dashboard's Usage page in a terminal.

use anyhow::Result;

use super::accounts::until;
use crate::api::{self, Tokens};
use crate::config::Paths;

fn n(x: u64) -> String {
    let s = x.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn table(title: &str, rows: &[api::UsageRow]) {
    outln!(
        "\n{title:<34} {:>9} {:>12} {:>12} {:>12} {:>12}",
        "REQUESTS",
        "INPUT",
        "OUTPUT",
        "CACHE READ",
        "CACHE WRITE"
    );
    for r in rows {
        let t: &Tokens = &r.tokens;
        outln!(
            "{:<34} {:>9} {:>12} {:>12} {:>12} {:>12}",
            r.name,
            n(t.requests),
            n(t.input),
            n(t.output),
            n(t.cache_read),
            n(t.cache_creation)
        );
    }
    if rows.is_empty() {
        outln!("(nothing yet)");
    }
}

pub fn usage(span: &str, json_out: bool) -> Result<()> {
    let paths = Paths::from_env()?;
    let config = crate::keys::load(&paths)?;
    let c = super::cliproxy::ensure_running(&paths, &config)?;
    let u = c.usage(span)?;
    if json_out {
        let accounts = c.accounts()?;
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"usage": u, "accounts": accounts}))?
        );
        return Ok(());
    }
    let t = &u.total;
    outln!(
        "last {}: {} request{}, {} input, {} output, {} cache-read, {} cache-write tokens",
        u.span,
        n(t.requests),
        if t.requests == 1 { "" } else { "s" },
        n(t.input),
        n(t.output),
        n(t.cache_read),
        n(t.cache_creation)
    );
    table("BY ACCOUNT", &u.by_account);
    table("BY MODEL", &u.by_model);
    table("BY CLIENT KEY", &u.by_client);
    outln!(
        "\n{:<34} {:>8} {:<14} {:>8} {:<14}",
        "WINDOWS",
        "5-HOUR",
        "RESETS",
        "WEEKLY",
        "RESETS"
    );
    for a in c.accounts()? {
        let pct = |w: &Option<api::WindowView>| {
            w.as_ref()
                .map(|w| format!("{:.0}%", w.utilization * 100.0))
                .unwrap_or_else(|| "?".into())
        };
        let reset = |w: &Option<api::WindowView>| {
            w.as_ref()
                .and_then(|w| w.resets_at.as_deref())
                .map(|r| until(Some(r)))
                .unwrap_or_default()
        };
        outln!(
            "{:<34} {:>8} {:<14} {:>8} {:<14}",
            a.email,
            pct(&a.five_hour),
            reset(&a.five_hour),
            pct(&a.seven_day),
            reset(&a.seven_day)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_are_grouped() {
        assert_eq!(super::n(0), "0");
        assert_eq!(super::n(999), "999");
        assert_eq!(super::n(1000), "1,000");
        assert_eq!(super::n(1234567), "1,234,567");
    }
}
