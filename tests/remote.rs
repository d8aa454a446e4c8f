//! A team shares one daemon: the server in its own CCS_HOME listens on 127.0.0.2 over HTTPS
//! (a self-signed certificate made by `ccs cliproxy cert`), and a laptop's `ccs`, in another
//! CCS_HOME, uses it as a remote with a named client key, the pinned fingerprint and the
//! management secret. Real binaries, real TLS, the simulator as Anthropic.

mod common;

use std::time::Duration;

use common::remote::*;
use common::*;
use serde_json::Value;

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";

fn client_with_keys(server: &Server, key: &str) -> Client {
    Client::new(
        server,
        &format!(
            "    fingerprint: \"{}\"\n    auth_token: {key}\n    management_key: {SECRET}\n",
            server.fingerprint
        ),
    )
}

/// `(email, state, position)` of each account, from `ccs claude --accounts --json`.
fn accounts(home: &std::path::Path) -> Vec<(String, String, Value)> {
    let v = ccs_json(home, &["claude", "--accounts", "--json"]);
    v["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["email"].as_str().unwrap().to_string(),
                a["state"].as_str().unwrap().to_string(),
                a["position"].clone(),
            )
        })
        .collect()
}

#[test]
fn a_team_member_logs_in_works_and_is_attributed_through_the_remote_server() {
    let sim = sim(&scenario(&[(ALICE, 3), (BOB, 100)]), false);
    let server = Server::start(&sim.url());
    let key = server.key("dana");
    let client = client_with_keys(&server, &key);

    // Accounts are logged into the server from the laptop; no token lands on the laptop.
    let out = client.login(&[]);
    assert!(out.contains("Logged in as alice@example.com"), "{out}");
    let out = client.login(&["--add"]);
    assert!(out.contains("Logged in as bob@example.com"), "{out}");
    assert!(
        !client.home.join("auth").exists(),
        "a token file was written on the client"
    );

    // The laptop's view is the server's own.
    let remote = accounts(&client.home);
    assert_eq!(remote, accounts(&server.paths.home));
    let emails: Vec<&str> = remote.iter().map(|a| a.0.as_str()).collect();
    assert_eq!(emails, [ALICE, BOB]);
    let q_remote = ccs_json(&client.home, &["cliproxy", "quota", "--json"]);
    let q_server = ccs_json(&server.paths.home, &["cliproxy", "quota", "--json"]);
    assert_eq!(q_remote["accounts"], q_server["accounts"]);
    assert_eq!(
        q_remote["next_for_new_sessions"],
        q_server["next_for_new_sessions"]
    );
    let status = ccs_json(&client.home, &["cliproxy", "status", "--json"]);
    let local = ccs_json(&server.paths.home, &["cliproxy", "status", "--json"]);
    assert_eq!(status["daemon"], "remote");
    assert_eq!(status["reached_at"], server.url.as_str());
    assert_eq!(local["daemon"], "local");
    assert_eq!(status["pid"], local["pid"]);
    assert!(status["rtt_ms"].as_f64().unwrap() > 0.0, "{status}");
    let text = ccs_ok(&client.home, &["cliproxy", "status"]);
    assert!(
        text.contains(&format!("remote, running at {}", server.url)) && text.contains("round trip"),
        "{text}"
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = server.http();
        // The live feed over TLS, opened before the requests, names the key of each.
        let feed = http
            .get(format!("{}/v0/management/live", server.url))
            .bearer_auth(SECRET)
            .send()
            .await
            .unwrap();
        assert_eq!(feed.status(), 200);

        // One conversation crosses alice's limit on the server and goes on with bob.
        let mut served = vec![];
        for _ in 0..5 {
            let r = http
                .post(format!("{}/v1/messages", server.url))
                .bearer_auth(&key)
                .header("anthropic-version", "2023-06-01")
                .header("x-claude-code-session-id", "team-conv-1")
                .json(
                    &serde_json::json!({"model":"claude-sonnet-4-5","max_tokens":16,
                    "messages":[{"role":"user","content":"hi"}]}),
                )
                .send()
                .await
                .unwrap();
            served.push(served_by(r).await);
        }
        assert_eq!(served[0], ALICE);
        assert_eq!(served.last().unwrap(), BOB, "{served:?}");

        let mut feed = feed;
        let mut text = String::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !text.contains("\"client\":\"dana\"") {
            let chunk = tokio::time::timeout_at(deadline, feed.chunk())
                .await
                .expect("a request of dana's in the live feed within 20 s")
                .unwrap()
                .expect("the feed stays open");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }

        // A wrong key is refused, and so is dana's once revoked from the laptop.
        for bad in ["not-a-key-of-this-team", key.as_str()] {
            if bad == key {
                ccs_ok(&client.home, &["cliproxy", "key", "revoke", "dana"]);
            }
            let r = http
                .post(format!("{}/v1/messages", server.url))
                .bearer_auth(bad)
                .header("anthropic-version", "2023-06-01")
                .json(&serde_json::json!({"model":"m","max_tokens":1,"messages":[]}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 401, "{bad}");
            let body = r.text().await.unwrap();
            assert!(body.contains("client key"), "{body}");
        }
    });

    // Usage, read from the laptop, counts the requests under dana's name.
    let usage = ccs_json(&client.home, &["cliproxy", "usage", "--json"]);
    let dana = usage["usage"]["by_client"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "dana")
        .unwrap_or_else(|| panic!("no usage of dana: {usage}"));
    assert_eq!(dana["tokens"]["requests"], 5, "{usage}");
    let text = ccs_ok(&client.home, &["cliproxy", "usage"]);
    assert!(
        text.contains("BY CLIENT KEY") && text.contains("dana"),
        "{text}"
    );
    client.assert_no_local_daemon();
}

#[test]
fn a_server_with_another_certificate_is_refused_and_nothing_starts_locally() {
    let sim = sim(&scenario(&[(ALICE, 10)]), false);
    let server = Server::start(&sim.url());
    let impostor = ccs::tls::self_signed(&[SERVER_HOST.to_string()]).unwrap();
    let client = client_with_keys(&server, "some-key");
    let config = client.home.join("config.yaml");
    let yaml = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&server.fingerprint, &impostor.fingerprint.to_string());
    std::fs::write(&config, yaml).unwrap();

    for args in [
        &["cliproxy", "status"][..],
        &["claude", "--accounts"],
        &["claude", "-p", "hello"],
    ] {
        let (code, out, err) = ccs(&client.home, args);
        assert_ne!(code, 0, "{args:?} went on: {out}");
        assert!(
            err.contains("not the pinned") && err.contains(&impostor.fingerprint.to_string()),
            "{args:?}: {err}"
        );
        assert!(
            err.contains(&server.fingerprint),
            "names what it met: {err}"
        );
    }
    // The wrong protocol is named as such.
    let (code, _, err) = ccs(
        &client.home,
        &["--proxy-protocol", "http", "cliproxy", "status"],
    );
    assert_ne!(code, 0);
    assert!(err.contains("speaks HTTPS"), "{err}");
    // A flag beats config.yaml: the right pin given on the command line is trusted.
    let text = ccs_ok(
        &client.home,
        &[
            "--proxy-fingerprint",
            &server.fingerprint,
            "cliproxy",
            "status",
        ],
    );
    assert!(text.contains("remote, running at"), "{text}");
    // So is the certificate file itself, as a CA.
    let cert = server.cert.display().to_string();
    let text = ccs_ok(
        &client.home,
        &["--proxy-ca-cert", &cert, "cliproxy", "status"],
    );
    assert!(text.contains("remote, running at"), "{text}");
    // The daemon is the server's to start and stop.
    let (code, _, err) = ccs(&client.home, &["cliproxy", "start"]);
    assert_ne!(code, 0);
    assert!(err.contains("only its server can start"), "{err}");
    client.assert_no_local_daemon();
}

#[test]
fn without_the_management_secret_the_client_key_still_works_and_management_says_what_it_needs() {
    let sim = sim(&scenario(&[(ALICE, 10)]), false);
    let server = Server::start(&sim.url());
    let key = server.key("erin");
    let client = Client::new(
        &server,
        &format!(
            "    fingerprint: \"{}\"\n    auth_token: {key}\n",
            server.fingerprint
        ),
    );
    let (code, _, err) = ccs(&client.home, &["claude", "--accounts"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("management secret") && err.contains("--proxy-management-key"),
        "{err}"
    );
    // Status still answers what the client key alone can know.
    let text = ccs_ok(&client.home, &["cliproxy", "status"]);
    assert!(
        text.contains("remote at") && text.contains("round trip"),
        "{text}"
    );
    // The management secret by flag: the commands that need it work.
    let out = ccs_ok(
        &client.home,
        &[
            "--proxy-management-key",
            SECRET,
            "claude",
            "--accounts",
            "--json",
        ],
    );
    assert!(out.contains("\"accounts\""), "{out}");
    client.assert_no_local_daemon();
}

/// What `ccs config --print` prints for a remote: the server's address, not its bind.
#[test]
fn the_dashboard_link_of_a_remote_is_the_servers_address() {
    let sim = sim(&scenario(&[(ALICE, 10)]), false);
    let server = Server::start(&sim.url());
    let client = client_with_keys(&server, "k");
    let v = ccs_json(&client.home, &["config", "--json"]);
    let link = v["login_link"].as_str().unwrap();
    assert!(
        link.starts_with(&format!("{}/dashboard#link=", server.url)),
        "{v}"
    );
    // The link works once, over TLS, from the laptop.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let token = link.split("#link=").nth(1).unwrap();
        let r = server
            .http()
            .post(format!("{}/dashboard/login", server.url))
            .header("origin", server.url.as_str())
            .json(&serde_json::json!({ "link": token }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    });
}

/// Over TLS the daemon speaks HTTP/2, where the host comes as `:authority`, not `Host`: a page
/// that rebinds its own name to the server is refused all the same, and the dashboard's
/// same-origin rule holds (the link above logs in over HTTP/2).
#[test]
fn over_http2_a_rebound_name_is_refused_like_over_http1() {
    let sim = sim(&scenario(&[]), false);
    let server = Server::start(&sim.url());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let addr: std::net::SocketAddr = format!("127.0.0.2:{}", server.port).parse().unwrap();
        // The page's name resolves to the server; its certificate does not name it, which a
        // rebinding page could not fix either, so the test accepts any certificate.
        let page = reqwest::Client::builder()
            .no_proxy()
            .resolve("rebound.example", addr)
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap();
        let r = page
            .get(format!("https://rebound.example:{}/healthz", server.port))
            .send()
            .await
            .unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.status(), 403, "{}", r.text().await.unwrap());
        let r = server
            .http()
            .get(format!("{}/healthz", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.status(), 200);
        // :authority names the server, Host another: malformed (RFC 9113 §8.3.1), refused
        // whichever of the two would have passed.
        let r = server
            .http()
            .get(format!("{}/healthz", server.url))
            .header("host", "rebound.example")
            .send()
            .await
            .unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.status(), 400, "{}", r.text().await.unwrap());
    });
}

#[cfg(feature = "external-clients")]
#[test]
fn the_python_sdk_works_through_the_remote_with_a_named_key_and_the_servers_certificate() {
    let sim = sim(&scenario(&[(ALICE, 50)]), false);
    let server = Server::start(&sim.url());
    let key = server.key("sdk-user");
    let client = client_with_keys(&server, &key);
    client.login(&[]);
    let cert = server.cert.display().to_string();
    let out = run_python(
        "sdk_check.py",
        &[
            "smoke",
            &server.url,
            "--auth-token",
            &key,
            "--ca-cert",
            &cert,
        ],
    );
    assert!(
        out["create"]
            .as_str()
            .unwrap()
            .starts_with("Served by alice@example.com."),
        "{out}"
    );
    assert!(out["stream"]
        .as_str()
        .unwrap()
        .starts_with("Served by alice@example.com."));
    let usage = ccs_json(&client.home, &["cliproxy", "usage", "--json"]);
    let rows = usage["usage"]["by_client"].as_array().unwrap();
    assert!(rows.iter().any(|r| r["name"] == "sdk-user"), "{usage}");
}

#[test]
fn a_renewed_certificate_is_served_after_a_restart_and_the_old_pin_then_refused() {
    let sim = sim(&scenario(&[(ALICE, 10)]), false);
    let server = Server::start(&sim.url());
    let home = &server.paths.home;
    let (code, _, err) = ccs(home, &["cliproxy", "cert", "--self-signed", SERVER_HOST]);
    assert_ne!(
        code, 0,
        "an existing certificate is not replaced without --force"
    );
    assert!(err.contains("--force"), "{err}");
    let renewed = ccs_json(
        home,
        &[
            "cliproxy",
            "cert",
            "--self-signed",
            SERVER_HOST,
            "--force",
            "--json",
        ],
    );
    let new_pin = renewed["fingerprint"].as_str().unwrap();
    assert_ne!(new_pin, server.fingerprint);
    // The running daemon still serves the old certificate: restart finds it all the same.
    let out = ccs_ok(home, &["cliproxy", "restart"]);
    assert!(out.contains("runs again"), "{out}");
    let shown = ccs_ok(home, &["cliproxy", "cert"]);
    assert!(shown.contains(new_pin), "{shown}");
    let old = client_with_keys(&server, "k");
    let (code, _, err) = ccs(&old.home, &["cliproxy", "status"]);
    assert_ne!(code, 0);
    assert!(err.contains("not the pinned"), "{err}");
    let text = ccs_ok(
        &old.home,
        &["--proxy-fingerprint", new_pin, "cliproxy", "status"],
    );
    assert!(text.contains("remote, running at"), "{text}");
}

/// The browser flow against a remote: the authority sends the browser to the laptop's own
/// callback listener, the laptop hands the code to the server, the page says who logged in.
#[test]
fn a_browser_login_from_the_laptop_lands_on_the_server() {
    let sim = sim(&scenario(&[(ALICE, 10)]), false);
    let server = Server::start(&sim.url());
    let client = client_with_keys(&server, "k");
    let mut login = Login::start(&client.home, &["claude", "--auth"]);
    let url = login.url();
    let no_redirects = reqwest::blocking::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirects.get(&url).send().unwrap();
    assert_eq!(r.status(), 302);
    let callback = r.headers()["location"].to_str().unwrap().to_string();
    let config = std::fs::read_to_string(client.home.join("config.yaml")).unwrap();
    let port = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("callback_port: "))
        .unwrap();
    assert!(
        callback.starts_with(&format!("http://localhost:{port}/callback?")),
        "the browser comes back to the laptop: {callback}"
    );
    let page = no_redirects
        .get(callback.replace("localhost", "127.0.0.1"))
        .send()
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page
        .text()
        .unwrap()
        .contains("Logged in as alice@example.com"));
    let (code, out) = login.finish();
    assert_eq!(code, 0, "{out}");
    let on_server = ccs_json(&server.paths.home, &["claude", "--accounts", "--json"]);
    assert_eq!(on_server["accounts"][0]["email"], ALICE);
    client.assert_no_local_daemon();
}

/// Issue 32 item 7: over TLS the dashboard's cookie is `__Host-` and `Secure`, so a plain-HTTP
/// service on the same host name never receives it and cannot plant one: a session id under
/// the plain name is not a login there.
#[test]
fn over_tls_the_dashboard_cookie_is_secure_and_host_only() {
    let sim = sim(&scenario(&[("a@example.com", 10)]), false);
    let server = Server::start(&sim.url());
    let b = server.http();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let r = b
            .post(format!("{}/dashboard/login", server.url))
            .header("origin", &server.url)
            .json(&serde_json::json!({"secret": SECRET}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let cookie = r
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .unwrap()
            .to_string();
        assert!(cookie.starts_with("__Host-ccs_session="), "{cookie}");
        assert!(
            cookie.contains("; Secure") && cookie.contains("Path=/"),
            "{cookie}"
        );
        assert!(!cookie.contains("Domain"), "{cookie}");
        let id = cookie
            .split(';')
            .next()
            .and_then(|kv| kv.split_once('='))
            .map(|(_, v)| v.to_string())
            .unwrap();
        let with = |c: String| {
            let b = b.clone();
            let url = server.url.clone();
            async move {
                b.get(format!("{url}/dashboard/session"))
                    .header("cookie", c)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        };
        assert_eq!(with(format!("__Host-ccs_session={id}")).await, 200);
        assert_eq!(
            with(format!("ccs_session={id}")).await,
            401,
            "the plain name is no login"
        );
    });
}

/// Issue 32 item 11: a self-signed certificate lives a year, not until 4096, and in its last
/// month `ccs cliproxy status` and `ccs doctor` say to renew it.
#[test]
fn a_certificate_near_its_end_is_warned_of() {
    let sim = sim(&scenario(&[]), false);
    let server = Server::start(&sim.url());
    let status = ccs_ok(&server.paths.home, &["cliproxy", "status"]);
    let line = status
        .lines()
        .find(|l| l.starts_with("certificate"))
        .unwrap_or_else(|| panic!("{status}"));
    let next_year = (chrono::Utc::now() + chrono::Days::new(365))
        .format("%Y-")
        .to_string();
    assert!(
        line.contains("valid until") && line.contains(&next_year),
        "{line}"
    );
    // Ten days left.
    ccs_ok(&server.paths.home, &["cliproxy", "stop"]);
    let mut params = rcgen::CertificateParams::new(vec![SERVER_HOST.to_string()]).unwrap();
    let soon = chrono::Utc::now().date_naive() + chrono::Days::new(10);
    {
        use chrono::Datelike;
        params.not_after = rcgen::date_time_ymd(soon.year(), soon.month() as u8, soon.day() as u8);
    }
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let tls = server.paths.home.join("tls");
    std::fs::write(tls.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(tls.join("key.pem"), key.serialize_pem()).unwrap();
    ccs_ok(&server.paths.home, &["cliproxy", "start"]);
    let status = ccs_ok(&server.paths.home, &["cliproxy", "status"]);
    assert!(
        status.contains("renew it with `ccs cliproxy cert --self-signed"),
        "{status}"
    );
    let (_, out, _) = ccs(&server.paths.home, &["doctor", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let cert = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "certificate")
        .unwrap_or_else(|| panic!("{v:#}"));
    assert_eq!(cert["level"], "warn", "{cert}");
}
