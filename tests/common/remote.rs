//! A team's shared daemon on one machine: a server home whose daemon listens on a second
//! loopback address (127.0.0.2) over HTTPS with a self-signed certificate made by
//! `ccs cliproxy cert`, and client homes whose `ccs` uses it as a remote.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::*;

/// The address the server listens on: loopback, but not the client's 127.0.0.1.
pub const SERVER_HOST: &str = "127.0.0.2";

pub struct Server {
    /// Declared first: fields drop in order, and the daemon must stop while its home exists.
    pub _stop: StopOnDrop,
    pub _dir: tempfile::TempDir,
    pub paths: ccs::config::Paths,
    pub port: u16,
    /// `https://127.0.0.2:PORT`.
    pub url: String,
    pub fingerprint: String,
    /// The self-signed certificate, PEM, as a client that is handed the file would use it.
    pub cert: PathBuf,
}

/// A port free on `host`.
pub fn free_port_on(host: &str) -> u16 {
    std::net::TcpListener::bind((host, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `ccs` as `ccs(home, args)` does, and panics with what it said unless it succeeds.
pub fn ccs_ok(home: &Path, args: &[&str]) -> String {
    let (code, out, err) = ccs(home, args);
    assert_eq!(code, 0, "ccs {args:?} failed:\n{out}{err}");
    out
}

/// `ccs … --json`, parsed.
pub fn ccs_json(home: &Path, args: &[&str]) -> Value {
    let out = ccs_ok(home, args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("ccs {args:?}: not JSON ({e}): {out}"))
}

impl Server {
    /// The server's home for `sim`, its certificate made, its daemon started over HTTPS.
    pub fn start(sim_url: &str) -> Server {
        let port = free_port_on(SERVER_HOST);
        let (dir, paths, _) = home_with_port(sim_url, port);
        let made = ccs_json(
            &paths.home,
            &["cliproxy", "cert", "--self-signed", SERVER_HOST, "--json"],
        );
        let yaml = std::fs::read_to_string(paths.config_file()).unwrap().replacen(
            "cliproxy:\n",
            &format!(
                "cliproxy:\n  host: {SERVER_HOST}\n  tls:\n    cert: tls/cert.pem\n    key: tls/key.pem\n"
            ),
            1,
        );
        std::fs::write(paths.config_file(), yaml).unwrap();
        let stop = StopOnDrop(paths.home.clone());
        ccs_ok(&paths.home, &["cliproxy", "start"]);
        Server {
            _stop: stop,
            _dir: dir,
            port,
            url: format!("https://{SERVER_HOST}:{port}"),
            fingerprint: made["fingerprint"].as_str().unwrap().to_string(),
            cert: PathBuf::from(made["cert"].as_str().unwrap()),
            paths,
        }
    }

    /// A named client key made on the server (`ccs cliproxy key add NAME`).
    pub fn key(&self, name: &str) -> String {
        let made = ccs_json(
            &self.paths.home,
            &["cliproxy", "key", "add", name, "--json"],
        );
        made["key"].as_str().unwrap().to_string()
    }

    /// An async HTTP client that trusts the server's certificate, as a program handed the
    /// file would.
    pub fn http(&self) -> reqwest::Client {
        let pem = std::fs::read(&self.cert).unwrap();
        reqwest::Client::builder()
            .no_proxy()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .unwrap()
    }
}

/// A laptop's home that uses the server through `cliproxy_server.remote` in its config.yaml.
/// Its own daemon port is set (to a free one) so a daemon wrongly started here would show.
pub struct Client {
    pub _dir: tempfile::TempDir,
    pub home: PathBuf,
    pub local_port: u16,
}

impl Client {
    pub fn new(server: &Server, remote_yaml: &str) -> Client {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("ccs");
        std::fs::create_dir_all(&home).unwrap();
        let local_port = free_port();
        std::fs::write(
            home.join("config.yaml"),
            format!(
                "cliproxy:\n  port: {local_port}\noauth:\n  callback_port: {}\n\
                 cliproxy_server:\n  remote:\n    enabled: true\n    host: {SERVER_HOST}\n    \
                 port: {}\n{remote_yaml}",
                free_port(),
                server.port
            ),
        )
        .unwrap();
        Client {
            _dir: dir,
            home,
            local_port,
        }
    }

    /// Logs the next simulator user into the server from this client, headless: the person
    /// opens the address on any device and pastes the code; the server exchanges it. Returns
    /// what the CLI printed.
    pub fn login(&self, extra: &[&str]) -> String {
        let mut args = vec!["claude", "--auth", "--headless"];
        args.extend_from_slice(extra);
        let mut login = Login::start(&self.home, &args);
        let url = login.url();
        let (pasted, _) = code_from_page(&url);
        login.paste(&pasted);
        let (code, out) = login.finish();
        assert_eq!(code, 0, "{out}");
        out
    }

    /// Nothing of a local daemon: no pid file, nothing on its port.
    pub fn assert_no_local_daemon(&self) {
        assert!(
            !self.home.join("cliproxy/daemon.pid").exists(),
            "a local daemon was started"
        );
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", self.local_port)).is_err(),
            "something listens on the client's own daemon port"
        );
    }
}
