//! The simulated Anthropic: an OAuth authority and a Messages API with quotas and faults, on
//! 127.0.0.1 only. What the tests, the demo and the benchmarks run against, and what users run
//! (`ccs sim serve`) to try pools without spending quota.
//!
//! `model/` decides (no HTTP), `server.rs` speaks HTTP, `control_api.rs` is its `/sim/*`
//! control endpoints (faults, budgets, revocations, counters), `scenario.rs` reads the scenario
//! file. The facts it models are `specs/anthropic.md`'s.
//!
//! Its own crate: it knows nothing of ccs but time (`ccs-actors`' clock, which a simulation
//! shares with what it drives, and `Span`). What drives ccs over it lives with ccs
//! (`src/harness/`).

mod control_api;
pub mod model;
pub mod scenario;
pub mod server;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use ccs_actors::{ManualClock, SharedClock, SystemClock};

pub use model::SimModel;
pub use scenario::Scenario;

/// Every route of the simulator: the simulated Anthropic's and its control API.
fn routes(cfg: &mut actix_web::web::ServiceConfig) {
    server::routes(cfg);
    control_api::routes(cfg);
}

/// A simulator running on its own thread, for tests and the demo. Stops when dropped.
pub struct SimHandle {
    pub addr: SocketAddr,
    pub model: Arc<SimModel>,
    /// The manual clock, when started with one.
    pub clock: Option<ManualClock>,
    /// The HTTPS listener's address and certificate (PEM), when started with `start_tls`.
    tls: Option<(SocketAddr, String)>,
    connections: Arc<AtomicU64>,
    tls_connections: Arc<AtomicU64>,
    server: actix_web::dev::ServerHandle,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl SimHandle {
    /// Starts a simulator on 127.0.0.1 at `port` (0: any free port).
    pub fn start(
        scenario: &Scenario,
        port: u16,
        manual_clock: bool,
        seed: u64,
    ) -> std::io::Result<SimHandle> {
        Self::start_with(scenario, port, manual_clock, seed, None)
    }

    /// Starts a simulator that also listens over HTTPS (`tls_url`, HTTP/2 offered) with
    /// `tls`: the server's configuration and its certificate (PEM, `tls_ca_pem`, for the
    /// client to trust).
    pub fn start_tls(
        scenario: &Scenario,
        manual_clock: bool,
        seed: u64,
        tls: (rustls::ServerConfig, String),
    ) -> std::io::Result<SimHandle> {
        Self::start_with(scenario, 0, manual_clock, seed, Some(tls))
    }

    fn start_with(
        scenario: &Scenario,
        port: u16,
        manual_clock: bool,
        seed: u64,
        with_tls: Option<(rustls::ServerConfig, String)>,
    ) -> std::io::Result<SimHandle> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
        let addr = listener.local_addr()?;
        let tls = match with_tls {
            Some((config, cert_pem)) => {
                let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
                Some((l.local_addr()?, cert_pem, l, config))
            }
            None => None,
        };
        let (clock, shared): (Option<ManualClock>, SharedClock) = if manual_clock {
            use ccs_actors::Clock;
            let c = ManualClock::new(SystemClock.now());
            (Some(c.clone()), Arc::new(c))
        } else {
            (None, Arc::new(SystemClock))
        };
        let model = Arc::new(SimModel::new(scenario, shared, seed));
        let connections = Arc::new(AtomicU64::new(0));
        let tls_connections = Arc::new(AtomicU64::new(0));
        let state = server::SimState {
            model: model.clone(),
            clock: clock.clone(),
            last: Default::default(),
            received: Default::default(),
            connections: connections.clone(),
            tls_connections: tls_connections.clone(),
        };
        let (tls_info, tls_listen) = match tls {
            Some((a, pem, l, config)) => (Some((a, pem)), Some((l, config))),
            None => (None, None),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("ccs-sim".into())
            .spawn(move || {
                actix_web::rt::System::new().block_on(async move {
                    let srv = server::server(listener, tls_listen, state, 2, routes)?;
                    let _ = tx.send(srv.handle());
                    srv.await
                })
            })?;
        let server = rx
            .recv()
            .map_err(|_| std::io::Error::other("the simulator thread did not start"))?;
        Ok(SimHandle {
            addr,
            model,
            clock,
            tls: tls_info,
            connections,
            tls_connections,
            server,
            thread: Some(thread),
        })
    }

    /// The HTTPS address (with `start_tls`).
    pub fn tls_url(&self) -> Option<String> {
        self.tls.as_ref().map(|(a, _)| format!("https://{a}"))
    }

    /// The certificate the HTTPS listener presents, PEM (with `start_tls`).
    pub fn tls_ca_pem(&self) -> Option<&str> {
        self.tls.as_ref().map(|(_, pem)| pem.as_str())
    }

    /// Plain connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Connections accepted over TLS so far (with `start_tls`).
    pub fn tls_connections(&self) -> u64 {
        self.tls_connections.load(Ordering::Relaxed)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server and waits for its thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(t) = self.thread.take() {
            let server = self.server.clone();
            // Drive the stop future on a thread of its own: the caller may be inside a runtime.
            let stopper = std::thread::spawn(move || {
                actix_web::rt::System::new().block_on(server.stop(false));
            });
            let _ = stopper.join();
            let _ = t.join();
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A version-4 UUID from 16 random bytes (version and variant bits set here).
pub fn uuid_from(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// A random seed for a simulator people run (tests pass their own).
pub fn fresh_seed() -> u64 {
    use rand::RngCore;
    rand::rng().next_u64()
}
