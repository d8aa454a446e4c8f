//! Logging an account in: PKCE S256 and state (from the oauth2 crate), the authorize URL, a
//! callback listener on 127.0.0.1, the headless paste of `CODE#STATE` or the callback URL, and
//! the JSON code exchange.
//!
//! Must not: accept a callback whose state differs from the one it sent, listen beyond
//! loopback, or print a token.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use oauth2::{CsrfToken, PkceCodeChallenge};
use serde_json::{json, Value};

use crate::config::Config;
use crate::oauth::TokenResponse;

/// How long a login waits for the browser or the paste.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(300);

/// One login attempt's secrets and URLs.
pub struct Attempt {
    pub url: String,
    pub redirect_uri: String,
    pub state: String,
    verifier: String,
}

impl Attempt {
    /// A login whose browser comes back to the CLI's callback listener.
    pub fn new(config: &Config) -> Result<Attempt> {
        let redirect_uri = format!("http://localhost:{}/callback", config.oauth.callback_port);
        Attempt::with_redirect(config, redirect_uri)
    }

    /// A login whose browser comes back to `redirect_uri` (the daemon's own `/callback`,
    /// for a login started from the dashboard).
    pub fn with_redirect(config: &Config, redirect_uri: String) -> Result<Attempt> {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let state = CsrfToken::new_random().secret().clone();
        let mut url = url::Url::parse(&config.oauth.authorize_url).with_context(|| {
            format!(
                "oauth.authorize_url {:?} is not a URL",
                config.oauth.authorize_url
            )
        })?;
        url.query_pairs_mut()
            .append_pair("code", "true")
            .append_pair("client_id", &config.oauth.client_id)
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", &redirect_uri)
            .append_pair("scope", &config.oauth.scope)
            .append_pair("code_challenge", challenge.as_str())
            .append_pair("code_challenge_method", "S256")
            .append_pair("state", &state);
        Ok(Attempt {
            url: url.to_string(),
            redirect_uri,
            state,
            verifier: verifier.secret().clone(),
        })
    }
}

/// What came back from the browser or the paste.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Code {
        code: String,
        state: String,
    },
    Denied {
        error: String,
        description: Option<String>,
        state: String,
    },
}

impl Answer {
    /// Whether the answer belongs to the login whose state is `state` (in constant time). Any
    /// other answer, a page's forged callback say, is ignored rather than allowed to end it.
    pub fn belongs_to(&self, state: &str) -> bool {
        crate::keys::constant_time_eq(self.state().as_bytes(), state.as_bytes())
    }

    pub fn state(&self) -> &str {
        match self {
            Answer::Code { state, .. } | Answer::Denied { state, .. } => state,
        }
    }
}

fn query_answer(query: &str) -> Option<Answer> {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    if let Some(error) = get("error") {
        return Some(Answer::Denied {
            error,
            description: get("error_description"),
            state: get("state").unwrap_or_default(),
        });
    }
    Some(Answer::Code {
        code: get("code")?,
        state: get("state").unwrap_or_default(),
    })
}

/// Reads a pasted line: `CODE#STATE`, or the whole callback URL.
pub fn parse_paste(line: &str) -> Option<Answer> {
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    if line.starts_with("http://") || line.starts_with("https://") {
        let u = url::Url::parse(line).ok()?;
        return query_answer(u.query()?);
    }
    let (code, state) = line.split_once('#').unwrap_or((line, ""));
    Some(Answer::Code {
        code: code.to_string(),
        state: state.to_string(),
    })
}

/// `text` made safe to put inside HTML.
fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A page for the browser; `message` may carry text from the callback and is escaped.
fn page(ok: bool, message: &str) -> String {
    let message = html_escape(message);
    let title = if ok {
        "ccs: logged in"
    } else {
        "ccs: login failed"
    };
    let body = format!(
        "<!doctype html><meta charset=utf-8><title>{title}</title>\
         <body style=\"font-family:sans-serif;margin:3em\"><h1>{title}</h1><p>{message}</p>\
         <p>You can close this tab and return to the terminal.</p></body>"
    );
    format!(
        "HTTP/1.1 {}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        if ok { "200 OK" } else { "400 Bad Request" },
        body.len()
    )
}

/// A callback the listener received: the answer, and the connection to send the page on.
pub struct Callback {
    pub answer: Answer,
    stream: TcpStream,
}

impl Callback {
    pub fn respond(mut self, ok: bool, message: &str) {
        let _ = self.stream.write_all(page(ok, message).as_bytes());
        let _ = self.stream.flush();
    }
}

/// Binds the callback listener on 127.0.0.1; a busy port is an error that suggests
/// `--headless`.
pub fn listen(port: u16) -> Result<TcpListener> {
    TcpListener::bind(("127.0.0.1", port)).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow!(
                "port {port} is busy (is another login running?): use `ccs claude --auth --headless` \
                 to paste the code instead, or set oauth.callback_port in config.yaml"
            )
        } else {
            anyhow!("cannot listen on 127.0.0.1:{port} for the login callback: {e}")
        }
    })
}

/// Serves the listener on a thread; every `/callback` hit goes to `tx`.
pub fn serve_callbacks(listener: TcpListener, tx: mpsc::Sender<Source>) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let mut reader = BufReader::new(match stream.try_clone() {
                Ok(s) => s,
                Err(_) => continue,
            });
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            // Drain the headers so the browser is not reset mid-request.
            let mut h = String::new();
            while reader.read_line(&mut h).map(|n| n > 2).unwrap_or(false) {
                h.clear();
            }
            let target = line.split_whitespace().nth(1).unwrap_or("/");
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            if path != "/callback" {
                let _ = stream.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                continue;
            }
            match query_answer(query) {
                Some(answer) => {
                    if tx
                        .send(Source::Browser(Callback { answer, stream }))
                        .is_err()
                    {
                        return;
                    }
                }
                None => {
                    let _ =
                        stream.write_all(page(false, "The callback carried no code.").as_bytes());
                }
            }
        }
    });
}

/// Where an answer came from.
pub enum Source {
    Browser(Callback),
    Paste(Answer),
    /// Standard input ended: nothing more can be pasted.
    StdinClosed,
}

/// Reads pasted answers from stdin on a thread.
pub fn read_pastes(tx: mpsc::Sender<Source>) {
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut line = String::new();
        loop {
            line.clear();
            match stdin.lock().read_line(&mut line) {
                Ok(0) | Err(_) => {
                    let _ = tx.send(Source::StdinClosed);
                    return;
                }
                Ok(_) => {
                    if let Some(a) = parse_paste(&line) {
                        if tx.send(Source::Paste(a)).is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
}

/// Waits for the first answer, drawing a spinner on a terminal; `None` on timeout.
pub fn wait(rx: &mpsc::Receiver<Source>, timeout: Duration, spinner: bool) -> Option<Source> {
    let frames = ['|', '/', '-', '\\'];
    let started = Instant::now();
    let mut i = 0;
    loop {
        let left = timeout.checked_sub(started.elapsed())?;
        match rx.recv_timeout(left.min(Duration::from_millis(150))) {
            Ok(s) => {
                if spinner {
                    eprint!("\r\x1b[2K");
                }
                return Some(s);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if spinner {
                    let secs = timeout.saturating_sub(started.elapsed()).as_secs();
                    eprint!(
                        "\r{} waiting for the browser ({}:{:02} left)",
                        frames[i % 4],
                        secs / 60,
                        secs % 60
                    );
                    i += 1;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return None,
        }
    }
}

/// Checks an answer against the attempt; the error says what happened and that nothing was
/// stored.
pub fn check(attempt: &Attempt, answer: &Answer) -> Result<String> {
    match answer {
        Answer::Denied {
            error, description, ..
        } => bail!(
            "the login was refused ({error}{}); nothing was stored. Run `ccs claude --auth` to try again",
            description.as_deref().map(|d| format!(": {d}")).unwrap_or_default()
        ),
        Answer::Code { code, state } => {
            if !crate::keys::constant_time_eq(state.as_bytes(), attempt.state.as_bytes()) {
                bail!(
                    "the answer's state does not match this login attempt (a stale or forged callback); \
                     nothing was stored. Run `ccs claude --auth` again"
                );
            }
            Ok(code.clone())
        }
    }
}

fn profile_blocking(config: &Config, access: &str) -> Option<crate::oauth::Profile> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .ok()?;
    let v: Value = client
        .get(&config.oauth.profile_url)
        .bearer_auth(access)
        .header("anthropic-beta", crate::oauth::OAUTH_BETA)
        .send()
        .ok()?
        .error_for_status()
        .ok()?
        .json()
        .ok()?;
    Some(crate::oauth::parse_profile(&v))
}

/// Checks the answer, exchanges its code for tokens and learns the account's e-mail and
/// profile (token response first, then the profile endpoint). Blocking.
pub fn complete(
    config: &Config,
    attempt: &Attempt,
    answer: &Answer,
) -> Result<(String, TokenResponse, Option<crate::oauth::Profile>)> {
    let code = check(attempt, answer)?;
    let tokens = exchange(config, attempt, &code)?;
    let profile = profile_blocking(config, &tokens.access_token);
    let email = tokens
        .email()
        .map(str::to_string)
        .or_else(|| profile.as_ref().and_then(|p| p.email.clone()))
        .context("neither the token response nor the profile endpoint named the account's e-mail; nothing was stored")?;
    Ok((email, tokens, profile))
}

/// Exchanges the code for tokens (JSON body, as the authority expects): the answer read once,
/// here, into its type.
pub fn exchange(config: &Config, attempt: &Attempt, code: &str) -> Result<TokenResponse> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("HTTP client")?;
    let resp = client
        .post(&config.oauth.token_url)
        .json(&json!({
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": attempt.redirect_uri,
            "client_id": config.oauth.client_id,
            "code_verifier": attempt.verifier,
            "state": attempt.state,
        }))
        .send()
        .with_context(|| format!("cannot reach the token endpoint {}", config.oauth.token_url))?;
    let status = resp.status();
    let mut text = String::new();
    resp.take(1 << 20).read_to_string(&mut text).ok();
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if !status.is_success() {
        let why = body["error_description"]
            .as_str()
            .or(body["error"].as_str())
            .unwrap_or("no reason given");
        bail!("the authority refused the code ({status}: {why}); nothing was stored. Run `ccs claude --auth` again");
    }
    match serde_json::from_value::<TokenResponse>(body) {
        Ok(t) if !t.access_token.is_empty() => Ok(t),
        _ => bail!("the token endpoint answered without an access token; nothing was stored"),
    }
}

/// Tries to open `url` in a browser; false when no opener worked.
pub fn open_browser(url: &str) -> bool {
    if std::env::var_os("DISPLAY").is_none()
        && std::env::var_os("WAYLAND_DISPLAY").is_none()
        && !cfg!(target_os = "macos")
    {
        return false;
    }
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pastes_are_code_hash_state_or_a_callback_url() {
        assert_eq!(
            parse_paste("abc#xyz\n"),
            Some(Answer::Code {
                code: "abc".into(),
                state: "xyz".into()
            })
        );
        assert_eq!(
            parse_paste("http://localhost:54545/callback?code=c%2B1&state=s"),
            Some(Answer::Code {
                code: "c+1".into(),
                state: "s".into()
            })
        );
        assert_eq!(
            parse_paste("http://localhost:54545/callback?error=access_denied&state=s"),
            Some(Answer::Denied {
                error: "access_denied".into(),
                description: None,
                state: "s".into()
            })
        );
        assert_eq!(parse_paste("   "), None);
    }

    #[test]
    fn the_page_escapes_what_the_callback_carried() {
        let p = page(
            false,
            "the login was refused (<script>alert(1)</script>&\"')",
        );
        assert!(!p.contains("<script>"), "{p}");
        assert!(
            p.contains("&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;&#39;"),
            "{p}"
        );
    }

    #[test]
    fn only_answers_with_the_attempts_state_belong_to_it() {
        let a = Attempt::new(&Config::default()).unwrap();
        let forged = Answer::Denied {
            error: "access_denied".into(),
            description: None,
            state: "guess".into(),
        };
        assert!(!forged.belongs_to(&a.state));
        let mine = Answer::Code {
            code: "c".into(),
            state: a.state.clone(),
        };
        assert!(mine.belongs_to(&a.state));
    }

    #[test]
    fn the_authorize_url_carries_pkce_and_state() {
        let c = Config::default();
        let a = Attempt::new(&c).unwrap();
        let u = url::Url::parse(&a.url).unwrap();
        let q: std::collections::HashMap<_, _> = u.query_pairs().into_owned().collect();
        assert_eq!(q["code"], "true");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["state"], a.state);
        assert_eq!(q["redirect_uri"], "http://localhost:54545/callback");
        assert!(a.verifier.len() >= 43);
        assert_ne!(q["code_challenge"], a.verifier);
        assert!(check(
            &a,
            &Answer::Code {
                code: "c".into(),
                state: "other".into()
            }
        )
        .is_err());
        assert_eq!(
            check(
                &a,
                &Answer::Code {
                    code: "c".into(),
                    state: a.state.clone()
                }
            )
            .unwrap(),
            "c"
        );
    }
}
