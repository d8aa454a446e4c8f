//! Logging in and managing accounts with the real `ccs` binary, the test playing the browser
//! (or the person pasting), against the simulator. Each test has its own CCS_HOME, callback
//! port and daemon, and stops the daemon when it ends.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

struct Home {
    /// Declared before the folder: fields drop in order, and the daemon must be stopped
    /// while its home (where its pid file is) still exists.
    _stop: StopOnDrop,
    _dir: tempfile::TempDir,
    paths: ccs::config::Paths,
}

/// A CCS_HOME for `sim` with free daemon and callback ports.
fn home(sim_url: &str) -> Home {
    let (dir, paths, _) = home_with_port(sim_url, free_port());
    let mut yaml = std::fs::read_to_string(paths.config_file()).unwrap();
    yaml.push_str(&format!("  callback_port: {}\n", free_port()));
    std::fs::write(paths.config_file(), yaml).unwrap();
    let stop = StopOnDrop(paths.home.clone());
    Home {
        _dir: dir,
        paths,
        _stop: stop,
    }
}

fn start_login(h: &Home, extra: &[&str]) -> Login {
    let mut args = vec!["claude", "--auth"];
    args.extend_from_slice(extra);
    Login::start(&h.paths.home, &args)
}

fn get(url: &str) -> reqwest::blocking::Response {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(url)
        .send()
        .unwrap()
}

/// The browser: authorize, then follow the redirect to the CLI's callback.
fn browse(url: &str) -> (u16, String) {
    let r = get(url);
    assert_eq!(r.status(), 302);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let page = get(&loc);
    (page.status().as_u16(), page.text().unwrap())
}

fn accounts_json(h: &Home) -> Vec<Value> {
    let (code, out, err) = ccs(&h.paths.home, &["claude", "--accounts", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    serde_json::from_str::<Value>(&out).unwrap()["accounts"]
        .as_array()
        .cloned()
        .unwrap()
}

fn three_users() -> ccs::sim::SimHandle {
    sim(
        &scenario(&[
            ("alice@example.com", 10),
            ("bob@example.com", 10),
            ("carol@example.com", 10),
        ]),
        true,
    )
}

#[test]
fn browser_flow_end_to_end() {
    let sim = three_users();
    let h = home(&sim.url());
    let mut login = start_login(&h, &[]);
    let url = login.url();
    let (status, page) = browse(&url);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Logged in as alice@example.com"), "{page}");
    let (code, out) = login.finish();
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("Logged in as alice@example.com (nickname alice)"),
        "{out}"
    );
    let list = accounts_json(&h);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["email"], "alice@example.com");
    assert_eq!(list[0]["default"], true);
    assert_eq!(list[0]["plan"], "Max");
    let file = h.paths.auth_dir().join("claude-alice@example.com.json");
    assert_eq!(ccs::fsutil::mode(&file).unwrap(), 0o600);
    assert_eq!(ccs::fsutil::mode(&h.paths.auth_dir()).unwrap(), 0o700);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(v["type"], "claude");
    assert!(v["access_token"]
        .as_str()
        .unwrap()
        .starts_with("sk-ant-oat01-"));
}

#[test]
fn headless_flow_with_a_pasted_code() {
    let sim = three_users();
    let h = home(&sim.url());
    let mut login = start_login(&h, &["--headless"]);
    let url = login.url();
    let (pasted, _) = code_from_page(&url);
    login.paste(&pasted);
    let (code, out) = login.finish();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Logged in as alice@example.com"), "{out}");
}

#[test]
fn headless_flow_with_a_pasted_callback_url() {
    let sim = three_users();
    let h = home(&sim.url());
    let mut login = start_login(&h, &["--headless"]);
    let url = login.url();
    let (_, callback) = code_from_page(&url);
    login.paste(&callback);
    let (code, out) = login.finish();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Logged in as alice@example.com"), "{out}");
}

#[test]
fn forged_callbacks_and_pastes_are_ignored_and_the_login_goes_on() {
    let sim = three_users();
    let h = home(&sim.url());
    let mut login = start_login(&h, &["--headless"]);
    let url = login.url();
    let (pasted, callback) = code_from_page(&url);
    // A paste from another attempt: said so, and the login keeps waiting.
    let code_only = pasted.split('#').next().unwrap();
    login.paste(&format!("{code_only}#forged-state"));
    login.wait_for("belongs to another login attempt");
    // A page's forged callback, with a script in `error`: escaped, ignored, login goes on.
    let port = url::Url::parse(&callback).unwrap().port().unwrap();
    let forged = get(&format!(
        "http://127.0.0.1:{port}/callback?error=%3Cscript%3Ealert(1)%3C%2Fscript%3E&state=guess"
    ));
    assert_eq!(forged.status(), 400);
    let page = forged.text().unwrap();
    assert!(
        page.contains("does not belong to the login in progress"),
        "{page}"
    );
    assert!(!page.contains("<script>"), "{page}");
    assert!(accounts_json(&h).is_empty(), "nothing stored meanwhile");
    // The real answer still completes the login.
    login.paste(&pasted);
    let (code, out) = login.finish();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Logged in as alice@example.com"), "{out}");
}

#[test]
fn a_refusal_page_escapes_the_error_it_carries() {
    let sim = three_users();
    let h = home(&sim.url());
    let mut login = start_login(&h, &["--headless"]);
    let url = login.url();
    let state = url::Url::parse(&url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let (_, callback) = code_from_page(&url);
    let port = url::Url::parse(&callback).unwrap().port().unwrap();
    let denied = get(&format!(
        "http://127.0.0.1:{port}/callback?error=%3Cscript%3Ex%3C%2Fscript%3E&state={state}"
    ));
    assert_eq!(denied.status(), 400);
    let page = denied.text().unwrap();
    assert!(page.contains("&lt;script&gt;x&lt;/script&gt;"), "{page}");
    assert!(!page.contains("<script>"), "{page}");
    let (code, out) = login.finish();
    assert_ne!(code, 0);
    assert!(out.contains("nothing was stored"), "{out}");
}

#[test]
fn a_code_bound_to_another_pkce_challenge_is_refused() {
    let sim = three_users();
    let h = home(&sim.url());
    let mut login = start_login(&h, &["--headless"]);
    let url = login.url();
    // Same state and redirect, but a code issued for a challenge the CLI's verifier won't match.
    let mut u = url::Url::parse(&url).unwrap();
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .map(|(k, v)| {
            if k == "code_challenge" {
                (k.into_owned(), "A".repeat(43))
            } else {
                (k.into_owned(), v.into_owned())
            }
        })
        .collect();
    u.query_pairs_mut().clear().extend_pairs(&pairs);
    let (pasted, _) = code_from_page(u.as_str());
    login.paste(&pasted);
    let (code, out) = login.finish();
    assert_ne!(code, 0);
    assert!(out.contains("PKCE"), "{out}");
    assert!(accounts_json(&h).is_empty());
}

#[test]
fn an_expired_code_is_refused() {
    let sim = three_users();
    let h = home(&sim.url());
    let mut login = start_login(&h, &["--headless"]);
    let url = login.url();
    let (pasted, _) = code_from_page(&url);
    sim.clock
        .as_ref()
        .unwrap()
        .advance(Duration::from_secs(601));
    login.paste(&pasted);
    let (code, out) = login.finish();
    assert_ne!(code, 0);
    assert!(out.contains("expired"), "{out}");
    assert!(accounts_json(&h).is_empty());
}

#[test]
fn access_denied_is_a_clear_message() {
    let sim = three_users();
    let h = home(&sim.url());
    sim.model.next_login("alice@example.com", true);
    let mut login = start_login(&h, &[]);
    let url = login.url();
    let (status, page) = browse(&url);
    assert_eq!(status, 400);
    assert!(page.contains("access_denied"), "{page}");
    let (code, out) = login.finish();
    assert_ne!(code, 0);
    assert!(
        out.contains("refused (access_denied") && out.contains("nothing was stored"),
        "{out}"
    );
}

#[test]
fn a_busy_callback_port_suggests_headless() {
    let sim = three_users();
    let h = home(&sim.url());
    let yaml = std::fs::read_to_string(h.paths.config_file()).unwrap();
    let port: u16 = yaml
        .lines()
        .find_map(|l| l.trim().strip_prefix("callback_port: "))
        .unwrap()
        .parse()
        .unwrap();
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let (code, out, err) = ccs(&h.paths.home, &["claude", "--auth"]);
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains(&format!("port {port} is busy")) && err.contains("--headless"),
        "{err}"
    );
}

fn login_browser(h: &Home, extra: &[&str]) -> String {
    let mut login = start_login(h, extra);
    let url = login.url();
    browse(&url);
    let (code, out) = login.finish();
    assert_eq!(code, 0, "{out}");
    out
}

#[test]
fn add_use_nickname_and_logout() {
    let sim = three_users();
    let h = home(&sim.url());
    login_browser(&h, &[]);
    login_browser(&h, &["--add"]);
    login_browser(&h, &["--add"]);
    let list = accounts_json(&h);
    let emails: Vec<&str> = list.iter().map(|a| a["email"].as_str().unwrap()).collect();
    assert_eq!(
        emails,
        ["alice@example.com", "bob@example.com", "carol@example.com"]
    );
    assert_eq!(list.iter().filter(|a| a["default"] == true).count(), 1);
    assert_eq!(list[0]["default"], true, "default unchanged by --add");
    assert_eq!(
        list.iter()
            .map(|a| a["position"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );

    // The same account again: one account, new token.
    let before =
        std::fs::read_to_string(h.paths.auth_dir().join("claude-alice@example.com.json")).unwrap();
    sim.model.next_login("alice@example.com", false);
    let out = login_browser(&h, &["--add"]);
    assert!(out.contains("credentials refreshed"), "{out}");
    assert_eq!(accounts_json(&h).len(), 3);
    let after =
        std::fs::read_to_string(h.paths.auth_dir().join("claude-alice@example.com.json")).unwrap();
    assert_ne!(before, after);

    let (code, out, _) = ccs(&h.paths.home, &["claude", "--use", "bob"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        accounts_json(&h)
            .iter()
            .find(|a| a["default"] == true)
            .unwrap()["email"],
        "bob@example.com"
    );

    let (code, _, err) = ccs(&h.paths.home, &["claude", "--nickname", "carol"]);
    assert_ne!(code, 0, "collision refused");
    assert!(err.contains("taken"), "{err}");
    let (code, out, err) = ccs(
        &h.paths.home,
        &[
            "claude",
            "--nickname",
            "work",
            "--account",
            "carol@example.com",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = ccs(&h.paths.home, &["claude", "--use", "nobody"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("known accounts") && err.contains("work (carol@example.com)"),
        "{err}"
    );

    let (code, out, _) = ccs(&h.paths.home, &["claude", "--logout"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("bob@example.com"),
        "the default is logged out: {out}"
    );
    assert!(!h
        .paths
        .auth_dir()
        .join("claude-bob@example.com.json")
        .exists());
    assert_eq!(accounts_json(&h).len(), 2);

    let (code, out, _) = ccs(&h.paths.home, &["claude", "--accounts"]);
    assert_eq!(code, 0);
    assert!(out.contains("NICKNAME") && out.contains("work"), "{out}");

    let (code, _, _) = ccs(&h.paths.home, &["claude", "--logout", "--all"]);
    assert_eq!(code, 0, "no terminal: no question");
    assert!(accounts_json(&h).is_empty());
    assert!(
        std::fs::read_dir(h.paths.auth_dir())
            .unwrap()
            .next()
            .is_none(),
        "every token file removed"
    );
}

#[test]
fn a_token_file_of_the_replaced_tool_is_imported_and_usable() {
    let sim = three_users();
    let h = home(&sim.url());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tokens = rt.block_on(login(&sim.url(), "carol@example.com"));
    ccs::fsutil::private_dir(&h.paths.auth_dir()).unwrap();
    std::fs::write(
        h.paths.auth_dir().join("claude-carol@example.com.json"),
        serde_json::to_vec(&json!({
            "type": "claude",
            "access_token": tokens["access_token"],
            "refresh_token": tokens["refresh_token"],
            "email": "carol@example.com",
            "expired": "2099-01-01T00:00:00+08:00",
            "last_refresh": "2025-01-01T00:00:00Z",
            "disabled": false
        }))
        .unwrap(),
    )
    .unwrap();
    let list = accounts_json(&h);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["email"], "carol@example.com");
    assert_eq!(list[0]["nickname"], "carol");
    let daemon = configured_url(&h.paths);
    let who = rt.block_on(async { served_by(ask(&daemon, None, false).await).await });
    assert_eq!(who, "carol@example.com");
}

#[test]
fn an_account_imported_after_the_pools_were_saved_joins_the_default_pool() {
    let sim = three_users();
    let h = home(&sim.url());
    let rt = tokio::runtime::Runtime::new().unwrap();
    login_browser(&h, &[]);
    let (code, out, err) = ccs(&h.paths.home, &["cliproxy", "stop"]);
    assert_eq!(code, 0, "{out}{err}");
    // A token file of the replaced tool dropped in while a pools record exists.
    let tokens = rt.block_on(login(&sim.url(), "carol@example.com"));
    std::fs::write(
        h.paths.auth_dir().join("claude-carol@example.com.json"),
        serde_json::to_vec(&json!({
            "type": "claude",
            "access_token": tokens["access_token"],
            "refresh_token": tokens["refresh_token"],
            "email": "carol@example.com",
            "expired": "2099-01-01T00:00:00Z",
        }))
        .unwrap(),
    )
    .unwrap();
    let list = accounts_json(&h);
    let carol = list
        .iter()
        .find(|a| a["email"] == "carol@example.com")
        .expect("imported");
    assert_eq!(carol["position"], 2, "in the default pool, last: {carol}");
    // With the first account paused, the imported one serves.
    let (code, out, err) = ccs(&h.paths.home, &["pool", "pause", "alice@example.com"]);
    assert_eq!(code, 0, "{out}{err}");
    let daemon = configured_url(&h.paths);
    let who = rt.block_on(async { served_by(ask(&daemon, None, false).await).await });
    assert_eq!(who, "carol@example.com");
    let log = daemon_log(&h.paths);
    assert!(log.contains("was in no pool"), "said in the log:\n{log}");
}

#[test]
fn an_address_carrying_terminal_controls_is_printed_harmless_everywhere() {
    // The profile endpoint names an address with a clipboard write (OSC 52), a bell and a
    // screen clear in it: every command prints it with those written out, never obeyed.
    let evil = "mal\u{1b}]52;c;aGk=\u{7}\u{1b}[2Jlory@example.com";
    let sim = sim(&scenario(&[(evil, 10)]), true);
    let h = home(&sim.url());
    let mut login = start_login(&h, &[]);
    let (status, page) = browse(&login.url());
    assert_eq!(status, 200, "{page}");
    let (code, out) = login.finish();
    assert_eq!(code, 0, "{out}");
    let mut seen = out;
    for args in [
        &["claude", "--accounts"][..],
        &["cliproxy", "status"],
        &["cliproxy", "quota"],
        &["pool", "show"],
        &["cliproxy", "usage"],
    ] {
        let (code, out, err) = ccs(&h.paths.home, args);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        seen.push_str(&out);
        seen.push_str(&err);
    }
    assert!(
        !seen.contains('\u{1b}') && !seen.contains('\u{7}'),
        "a control character reached the terminal: {seen:?}"
    );
    assert!(
        seen.contains("mal\\u{1b}]52;c;aGk=\\u{7}\\u{1b}[2Jlory@example.com"),
        "{seen}"
    );
    // Scripts get the address itself, in JSON.
    let (code, out, _) = ccs(&h.paths.home, &["claude", "--accounts", "--json"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["accounts"][0]["email"], evil);
}
