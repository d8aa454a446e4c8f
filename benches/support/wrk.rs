//! An external load generator: `wrk` (Debian's package, installed by the benchmark when it is
//! missing and the user may install), one thread, in C. The in-process generator (`drive.rs`,
//! on reqwest) shares the two cores with the daemon and costs more per request than the hop
//! it measures; `wrk` costs far less, so its rows show what the floor and ccs carry when the
//! generator is not the limit. Each request names one of 1,000 sessions, as `run` does.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::drive::Target;
use super::nginx::apt_tool;

/// What one `wrk` run measured.
pub struct Wrk {
    pub rps: f64,
    pub p50: Duration,
    pub p99: Duration,
}

pub fn ensure_wrk() -> Result<PathBuf, String> {
    apt_tool("/usr/bin/wrk", "wrk", "the wrk rows")
}

/// The Lua script that makes each request: a POST of `body` with the target's credential and
/// a session id from 1,000 (`wrk.format` takes the headers whole, so they are copied first).
fn script(t: &Target, body: &str) -> String {
    let lua_str = |s: &str| format!("{s:?}");
    let beta = if t.beta {
        "wrk.headers[\"anthropic-beta\"] = \"oauth-2025-04-20\"\n"
    } else {
        ""
    };
    format!(
        "wrk.method = \"POST\"\nwrk.body = {body}\n\
         wrk.headers[\"content-type\"] = \"application/json\"\n\
         wrk.headers[\"authorization\"] = {auth}\n{beta}\
         local n = 0\n\
         request = function()\n  n = n + 1\n  local h = {{}}\n  \
         for k, v in pairs(wrk.headers) do h[k] = v end\n  \
         h[\"x-claude-code-session-id\"] = \"s-\" .. (n % 1000)\n  \
         return wrk.format(nil, \"/v1/messages\", h)\nend\n",
        body = lua_str(body),
        auth = lua_str(&format!("Bearer {}", t.token)),
    )
}

/// Parses `12.34us`, `1.20ms`, `2.00s`.
fn duration(s: &str) -> Option<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
    let v: f64 = num.parse().ok()?;
    let secs = match unit {
        "us" => v / 1e6,
        "ms" => v / 1e3,
        "s" => v,
        "m" => v * 60.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

fn parse(out: &str) -> Option<Wrk> {
    let mut rps = None;
    let (mut p50, mut p99) = (None, None);
    for line in out.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("Requests/sec:"), Some(v)) => rps = v.parse().ok(),
            (Some("50%"), Some(v)) => p50 = duration(v),
            (Some("99%"), Some(v)) => p99 = duration(v),
            _ => {}
        }
    }
    Some(Wrk {
        rps: rps?,
        p50: p50?,
        p99: p99?,
    })
}

/// `wrk` against `t` for `secs` over `connections` on one thread. Fails when any request did
/// not succeed (wrk's "Non-2xx" line) or the output cannot be read.
pub fn wrk(
    dir: &Path,
    t: &Target,
    body: &str,
    connections: usize,
    secs: u64,
) -> Result<Wrk, String> {
    let bin = ensure_wrk()?;
    let file = dir.join(format!("wrk-{connections}.lua"));
    std::fs::write(&file, script(t, body)).map_err(|e| e.to_string())?;
    let out = Command::new(bin)
        .args(["-t1", &format!("-c{connections}"), &format!("-d{secs}s")])
        .arg("--latency")
        .arg("-s")
        .arg(&file)
        .arg(&t.url)
        .output()
        .map_err(|e| format!("cannot run wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        return Err(format!(
            "wrk saw failed requests against {}:\n{text}",
            t.url
        ));
    }
    parse(&text).ok_or_else(|| format!("cannot read wrk's output:\n{text}"))
}
