//! The daemon: `serve` runs it on an injected listener until a shutdown future (or the
//! management API) says stop; `DaemonHandle` runs one on a thread (tests, the demo).
//! `process.rs` starts, finds and stops the background process (`ccs cliproxy
//! start|stop|status`, `ccs daemon run`) through a pid file and `/healthz`.
//!
//! Must not: listen beyond loopback while a default key or secret is set, or leave a pid file
//! behind on a clean exit.

mod process;
pub mod service;

pub use process::{
    configured_url, healthz, pid_alive, run_foreground, running, start_background, stop_background,
    AlreadyRuns, Running,
};

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpServer};
use anyhow::{bail, Context, Result};
use ccs_actors::account::{Deps, Initial};
use ccs_actors::supervisor::{
    AddAccount, ExpireBindings, RestoreBinding, SetPool, SupervisorHandle, WatchHops,
};
use ccs_actors::SharedClock;

use crate::config::{Backend, Config, Paths};
use crate::oauth::HttpRefresher;
use crate::proxy::upstream::{UpstreamClient, UpstreamTrust};
use crate::proxy::{self, Ctx};
use crate::shared::{Refreshes, Shared, SharedStore};
use crate::store::{account_key, SledStore};
use crate::telemetry::{Observed, Telemetry};
use ccs_actors::ports::{Coordinator, Solo, Store};

/// How often idle session bindings are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(300);

/// Loads every account, pool and binding from the store into a new supervisor.
async fn load(store: &Arc<SledStore>, sup: &SupervisorHandle) -> Result<()> {
    for a in store.accounts()? {
        let id = account_key(&a.email);
        let initial = match (a.dead, store.token(&id)?) {
            (false, Some(t)) if store.in_doubt(&id, &t)? => Initial::InDoubt(t),
            (false, Some(t)) => Initial::Token(t),
            _ => Initial::Dead,
        };
        sup.add(AddAccount {
            id: id.as_str().into(),
            initial,
            quota: store.quota(&id)?,
            paused: a.paused,
            pools: vec![],
        })
        .await?;
    }
    for (name, members) in store.pools()? {
        sup.addr()
            .send(SetPool {
                name,
                members: members.iter().map(|m| m.as_str().into()).collect(),
            })
            .await?;
    }
    for (session, binding) in store.bindings()? {
        sup.addr().send(RestoreBinding { session, binding }).await?;
    }
    adopt_poolless(store, sup).await
}

/// Every account belongs to the default pool unless it was arranged into another: one in no
/// pool at all (a token file dropped into `auth/` after the pools were saved, a damaged pools
/// record) would take no traffic while looking fine. It joins the default pool at the end.
async fn adopt_poolless(store: &Arc<SledStore>, sup: &SupervisorHandle) -> Result<()> {
    let view = sup.view().await?;
    let pooled: std::collections::HashSet<&str> =
        view.pools.values().flatten().map(|a| &**a).collect();
    let orphans: Vec<ccs_actors::routing::AccountId> = view
        .accounts
        .iter()
        .filter(|m| !pooled.contains(&*m.id))
        .map(|m| m.id.clone())
        .collect();
    if orphans.is_empty() {
        return Ok(());
    }
    let mut members = view
        .pools
        .get(ccs_actors::supervisor::DEFAULT_POOL)
        .cloned()
        .unwrap_or_default();
    for id in &orphans {
        tracing::info!(account = %id, "the account was in no pool: it joins the default pool, last");
        members.push(id.clone());
    }
    sup.addr()
        .send(SetPool {
            name: ccs_actors::supervisor::DEFAULT_POOL.to_string(),
            members,
        })
        .await?;
    store.set_pools(&sup.view().await?.pools)?;
    Ok(())
}

/// Runs the daemon on `listener` until `shutdown` completes or the management API asks it
/// to stop; then lets in-flight responses finish (up to `GRACE`) and flushes the store. Must
/// run inside an actix system. The phases, in order: open the home, start the actors, listen,
/// start the background work, wait for the stop, stop.
pub async fn serve(
    mut config: Config,
    paths: Paths,
    listener: TcpListener,
    clock: SharedClock,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    crate::keys::resolve(&paths, &mut config)
        .with_context(|| format!("cannot read or make {}", paths.keys_file().display()))?;
    let tls = match &config.cliproxy.tls {
        Some(t) => Some(
            crate::tls::server_config(&paths.home.join(&t.cert), &paths.home.join(&t.key))
                .context("cliproxy.tls")?,
        ),
        None => None,
    };
    refuse_unsafe_bind(&config, &paths, &listener, tls.is_some())?;
    let store = Arc::new(SledStore::open(&paths, clock.clone())?);
    let telemetry = Telemetry::new(clock.clone(), store.flush_seconds.clone());
    telemetry.usage.restore(&store);
    telemetry.seed_models();
    let actors = start_actors(&config, &paths, &store, &clock, &telemetry).await?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}", listener.local_addr()?);
    let ctx = web::Data::new(
        Ctx::new(
            config,
            paths,
            store.clone(),
            actors.sup.clone(),
            clock,
            url.clone(),
            telemetry,
        )
        .with_shared(actors.shared.clone()),
    );
    if let Some(ss) = &actors.shared_store {
        ctx.continuity.provenance.tell_peers(ss.thinking_sink());
    }
    proxy::recent::restore(&ctx).await;
    // Start-up's writes are done: from here the actors run on this thread, and nothing here
    // may wait on the store writer.
    crate::store::mark_actors_thread();
    let server = listen(&ctx, listener, tls)?;
    tracing::info!(%url, "daemon ready");
    let background = start_background_work(&ctx, &actors, &url);
    note_the_run(&ctx);
    wait_for_stop(&ctx, shutdown).await;
    stop(&ctx, server, background, actors).await
}

/// What runs the accounts: the supervisor and its actors, the refresh calls' own thread, and
/// in a shared pool the shared store.
struct Actors {
    sup: SupervisorHandle,
    refresh_thread: RefreshThread,
    shared: Option<Arc<Shared>>,
    shared_store: Option<Arc<SharedStore>>,
}

/// Starts the refresher on its own thread, joins the shared pool when there is one, and starts
/// the supervisor with every account, pool and binding the store holds.
async fn start_actors(
    config: &Config,
    paths: &Paths,
    store: &Arc<SledStore>,
    clock: &SharedClock,
    telemetry: &Arc<Telemetry>,
) -> Result<Actors> {
    // Refresh calls on a thread of their own (with their own client, whose connections live
    // there): an answer is read and landed on disk as it arrives, whatever the actors' thread
    // is busy with.
    let refresh_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("ccs-refresh")
        .enable_all()
        .build()
        .context("cannot start the refresh thread")?;
    let refresh_calls = refresh_rt.handle().clone();
    let refresh_thread = RefreshThread(Some(refresh_rt));
    let refresher = Arc::new(Observed {
        inner: HttpRefresher {
            client: crate::oauth::http_client(),
            on: refresh_calls,
            token_url: config.oauth.token_url.clone(),
            client_id: config.oauth.client_id.clone(),
            clock: clock.clone(),
            slow_after: config.oauth.refresh_timeout.0,
            hard_bound: crate::oauth::refresh_hard_bound(config),
            landing: (config.store.backend != Backend::Redis)
                .then(|| crate::store::landing::Landing::at(paths.landing_dir())),
        },
        telemetry: telemetry.clone(),
    });
    let shared = join_shared(config, store, clock).await?;
    let shared_store = shared
        .as_ref()
        .map(|s| SharedStore::start(store.clone(), s.clone(), config.cliproxy.affinity_ttl.0));
    let (actor_store, coordinator): (Arc<dyn Store>, Arc<dyn Coordinator>) =
        match (&shared, &shared_store) {
            (Some(s), Some(ss)) => (ss.clone(), Arc::new(Refreshes(s.clone()))),
            _ => (store.clone(), Arc::new(Solo)),
        };
    let deps = Deps {
        clock: clock.clone(),
        refresher,
        store: actor_store,
        coordinator,
        policy: config.lifecycle_policy(),
    };
    let sup = SupervisorHandle::start(deps, config.routing_policy());
    let watcher = telemetry.clone();
    sup.addr()
        .send(WatchHops(Arc::new(move |e| watcher.hop(e))))
        .await?;
    load(store, &sup).await?;
    Ok(Actors {
        sup,
        refresh_thread,
        shared,
        shared_store,
    })
}

/// The HTTP server on `listener`, running.
struct Listening {
    handle: actix_web::dev::ServerHandle,
    running: actix_web::rt::task::JoinHandle<std::io::Result<()>>,
}

/// Starts the HTTP server (two workers, each with its own upstream client) on `listener`.
fn listen(
    ctx: &web::Data<Ctx>,
    listener: TcpListener,
    tls: Option<rustls::ServerConfig>,
) -> Result<Listening> {
    let app_ctx = ctx.clone();
    let grace = ctx.config.cliproxy.stop_grace.0;
    // The CA read and a client built here once, so a bad `upstream.ca_cert` is refused at
    // start; each worker builds its own client from the same trust.
    let trust = UpstreamTrust::load(&ctx.config.upstream, &ctx.paths.home)?;
    let first = UpstreamClient::new(&trust)?;
    let server = HttpServer::new(move || {
        let up = &app_ctx.config.upstream;
        let client = UpstreamClient::new(&trust).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "this worker shares the upstream client built at start");
            first.clone()
        });
        if up.warm {
            let (c, base) = (client.clone(), up.api_base.clone());
            actix_web::rt::spawn(async move { c.warm(&base).await });
        }
        App::new()
            .app_data(app_ctx.clone())
            .app_data(client)
            .wrap(actix_web::middleware::from_fn(proxy::check_host))
            .configure(crate::dashboard::routes)
            .configure(proxy::routes)
    })
    .workers(2)
    // Events go out as they come: no waiting for the peer's delayed ACK (Nagle).
    .tcp_nodelay(true)
    .disable_signals()
    // Streams end themselves just before the grace runs out (with an SSE error event), so the
    // forced close after it meets no answer still running.
    .shutdown_timeout(grace.as_secs_f64().ceil() as u64 + 1);
    let server = match tls {
        Some(tls) => server.listen_rustls_0_23(listener, tls)?,
        None => server.listen(listener)?,
    }
    .run();
    let handle = server.handle();
    Ok(Listening {
        handle,
        running: actix_web::rt::spawn(server),
    })
}

/// The daemon's background work, ended together at the stop: in a shared pool the join (when
/// Redis was away at the start), the peers' news and the heartbeat; the sweeper, the comeback
/// and alert watches, the webhook and the runway sampler.
fn start_background_work(
    ctx: &web::Data<Ctx>,
    actors: &Actors,
    url: &str,
) -> Vec<actix_web::rt::task::JoinHandle<()>> {
    let (sup, store) = (&actors.sup, &ctx.store);
    if let Some(s) = actors.shared.as_ref().filter(|s| !s.joined()) {
        actix_web::rt::spawn(join_later(s.clone(), store.clone(), sup.clone()));
    }
    let mut background = Vec::new();
    if let Some(s) = actors.shared.clone() {
        background.push(actix_web::rt::spawn(crate::shared::listen(
            s.clone(),
            sup.clone(),
            store.clone(),
        )));
        let (url, telemetry) = (url.to_string(), ctx.telemetry.clone());
        background.push(actix_web::rt::spawn(async move {
            // Every heartbeat: alive, and this daemon's usage of this hour and the last (all
            // of the book's hours at the first beat) for the pool's figures.
            let mut since = 0;
            loop {
                let _ = s.heartbeat(&url).await;
                let now = telemetry.now_ms();
                telemetry.usage.roll_up(now);
                let hours = telemetry.usage.encoded_hours(since);
                if s.push_usage(hours).await.is_ok() {
                    since = now.saturating_sub(crate::telemetry::usage::HOUR_MS);
                }
                actix_web::rt::time::sleep(crate::shared::HEARTBEAT).await;
            }
        }));
    }
    let sweeper_ctx = ctx.clone();
    background.push(actix_web::rt::spawn(async move {
        loop {
            actix_web::rt::time::sleep(SWEEP_EVERY).await;
            let _ = sweeper_ctx.sup.addr().send(ExpireBindings).await;
            forget_thinking(&sweeper_ctx).await;
            proxy::recent::save(&sweeper_ctx).await;
            save_usage(&sweeper_ctx).await;
        }
    }));
    background.push(actix_web::rt::spawn(proxy::comeback::run(ctx.clone())));
    background.push(actix_web::rt::spawn(proxy::watch::run(ctx.clone())));
    let webhook_ctx = ctx.clone();
    background.push(actix_web::rt::spawn(async move {
        webhook_ctx.alerts.run_webhook().await
    }));
    background.push(actix_web::rt::spawn(proxy::runway::run(ctx.clone())));
    background
}

/// Says when the run before did not stop cleanly (its marker is still here), and leaves this
/// run's marker for the next one.
fn note_the_run(ctx: &web::Data<Ctx>) {
    let marker = ctx.paths.running_file();
    if marker.exists() {
        ctx.alerts.moment(
            crate::alerts::Event::new(
                crate::alerts::Kind::RestartedAfterCrash,
                "daemon",
                "ccs: the daemon started again after a run that did not stop cleanly (killed, \
                 crashed or the machine went down); `ccs cliproxy status` shows what it found",
            ),
            ctx.clock.now(),
        );
    }
    if let Err(e) = crate::fsutil::write_private(&marker, std::process::id().to_string().as_bytes())
    {
        tracing::warn!(error = %e, "cannot write the daemon's running marker");
    }
}

/// Until `shutdown` completes, the management API asks for a stop, or the home disappears.
async fn wait_for_stop(ctx: &web::Data<Ctx>, shutdown: impl Future<Output = ()>) {
    let mut asked = ctx.stopping.shutdown.subscribe();
    let home = ctx.paths.home.clone();
    tokio::select! {
        _ = shutdown => {},
        _ = asked.changed() => {},
        _ = home_gone(&home) => {
            tracing::warn!(home = %home.display(), "the CCS_HOME folder is gone: stopping");
        },
    }
}

/// The stop: answers still streaming finish (within the grace), the background work ends,
/// every refresh out comes back and every figure is written, the store is flushed, the shared
/// store drained and left, the marker removed.
async fn stop(
    ctx: &web::Data<Ctx>,
    server: Listening,
    background: Vec<actix_web::rt::task::JoinHandle<()>>,
    actors: Actors,
) -> Result<()> {
    tracing::info!("stopping: letting in-flight responses finish");
    let grace = ctx.config.cliproxy.stop_grace.0;
    let _ = ctx.stopping.draining.send(Some(Instant::now() + grace));
    server.handle.stop(true).await;
    let _ = server.running.await;
    for task in &background {
        task.abort();
    }
    proxy::recent::save(ctx).await;
    save_usage(ctx).await;
    // A refresh answered but not written is a grant lost: let every call out come back and its
    // token reach the store before the process goes (bounded: a hung endpoint cannot hold the
    // stop forever; the refresh intent then makes the next start check the account at once).
    let bound = ctx.config.oauth.refresh_timeout.0.min(SETTLE_BOUND);
    if tokio::time::timeout(bound, actors.sup.settle())
        .await
        .is_err()
    {
        tracing::error!(
            "stopping with a refresh still unanswered after {} s; the next start checks its account at once",
            bound.as_secs()
        );
    }
    // What was batched (utilization, last use) is written now: a clean stop loses no figure.
    if tokio::time::timeout(SETTLE_BOUND, actors.sup.save_quotas())
        .await
        .is_err()
    {
        tracing::warn!("stopping before every account's quota was written down");
    }
    let (saver, flushed) = (ctx.clone(), ctx.store.clone());
    tokio::task::spawn_blocking(move || {
        saver.figures.save_last_used();
        flushed.flush()
    })
    .await
    .context("the final flush's worker stopped")??;
    // A call still out is abandoned here, as the process would at its exit; its intent makes
    // the next start check the account.
    drop(actors.refresh_thread);
    // What was kept during an outage goes to Redis before the process does, if it answers.
    if let Some(ss) = &actors.shared_store {
        match ss.drain(SETTLE_BOUND).await {
            0 => {}
            n => tracing::warn!(
                unsent = n,
                "stopping with writes for the shared store unsent (it does not answer): the \
                 peers learn those bindings and limits from their own requests"
            ),
        }
    }
    if let Some(shared) = &ctx.shared {
        shared.leave().await;
    }
    let _ = std::fs::remove_file(ctx.paths.running_file());
    tracing::info!("daemon stopped");
    Ok(())
}

/// The refresh calls' runtime, shut down without waiting when the daemon ends (or fails to
/// start): a runtime cannot be dropped the ordinary way inside another.
struct RefreshThread(Option<tokio::runtime::Runtime>);

impl Drop for RefreshThread {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// With `store.backend: redis`: connects, warns when Redis does not persist, and joins the
/// shared pool (its accounts, and the newest token of each) before any actor starts. Redis
/// unreachable: the daemon starts on its own copy of the pool and joins once Redis answers
/// (`join_later`); until then nobody here refreshes.
async fn join_shared(
    config: &Config,
    store: &Arc<SledStore>,
    clock: &SharedClock,
) -> Result<Option<Arc<Shared>>> {
    if config.store.backend != Backend::Redis {
        return Ok(None);
    }
    let shared = Shared::open(&config.store.redis, clock.clone())?;
    if shared.try_connect().await {
        joined(store, &shared).await?;
    } else {
        tracing::warn!(
            redis = shared.url(),
            "cannot reach Redis: serving this daemon's own copy of the pool, with the tokens it \
             holds; no refresh until Redis answers and this daemon joins the pool"
        );
    }
    Ok(Some(shared))
}

async fn joined(store: &Arc<SledStore>, shared: &Shared) -> Result<()> {
    if let Some(warning) = shared.durability_warning().await {
        tracing::warn!("{warning}");
    }
    crate::shared::join(store, shared).await?;
    shared.set_joined();
    tracing::info!(redis = shared.url(), daemon = %shared.daemon, "joined the shared pool");
    Ok(())
}

/// A daemon that started while Redis was away: tries every second; once Redis answers, joins
/// the pool (newest token of each account wins, as at a start) and hands the running actors
/// what changed: accounts they lack, newer tokens, the pools.
async fn join_later(shared: Arc<Shared>, store: Arc<SledStore>, sup: SupervisorHandle) {
    loop {
        actix_web::rt::time::sleep(Duration::from_secs(1)).await;
        if !shared.try_connect().await {
            continue;
        }
        match joined(&store, &shared).await {
            Ok(()) => break,
            Err(e) => tracing::warn!(error = %e, "could not join the shared pool yet"),
        }
    }
    if let Err(e) = crate::shared::catch_up(&shared, &store, &sup).await {
        tracing::warn!(error = %e, "could not hand the running accounts what the pool holds");
    }
}

/// Refuses to listen beyond loopback with a weak or public key, or over plain HTTP unless
/// `cliproxy.allow_plain_http` accepts the risk (then a warning names it).
fn refuse_unsafe_bind(
    config: &Config,
    paths: &Paths,
    listener: &TcpListener,
    tls: bool,
) -> Result<()> {
    let bound = listener.local_addr()?.ip();
    if bound.is_loopback() {
        return Ok(());
    }
    if let Some(problem) = config.public_key_problem() {
        bail!(
            "refusing to listen on {bound}: {problem} (in {})",
            paths.config_file().display()
        );
    }
    if tls {
        return Ok(());
    }
    if !config.cliproxy.allow_plain_http {
        bail!(
            "refusing to listen on {bound} over plain HTTP: every request would carry its client \
             key, and the management secret, across the network in clear text. Serve HTTPS: \
             `ccs cliproxy cert --self-signed HOST` makes a certificate and prints the \
             cliproxy.tls lines for {}; on a network you trust, accept the risk with \
             `cliproxy.allow_plain_http: true` instead",
            paths.config_file().display()
        );
    }
    tracing::warn!(
        %bound,
        "serving plain HTTP beyond loopback (cliproxy.allow_plain_http): client keys and the \
         management secret cross the network in clear text"
    );
    Ok(())
}

/// Forgets the thinking provenance of conversations idle longer than a binding lives.
async fn forget_thinking(ctx: &web::Data<Ctx>) {
    let ttl = ctx.config.cliproxy.affinity_ttl.0.as_millis() as u64;
    let gone = ctx
        .continuity
        .provenance
        .retain_touched_since(ctx.clock.now().as_millis().saturating_sub(ttl));
    if gone.is_empty() {
        return;
    }
    let store = ctx.store.clone();
    let _ = actix_web::rt::task::spawn_blocking(move || {
        for s in gone {
            let _ = store.remove_thinking(&s);
        }
    })
    .await;
}

/// Writes the usage book to the store, off the async workers.
async fn save_usage(ctx: &web::Data<Ctx>) {
    let (t, store) = (ctx.telemetry.clone(), ctx.store.clone());
    let now = t.now_ms();
    let _ = actix_web::rt::task::spawn_blocking(move || t.usage.save(&store, now)).await;
}

/// Longest a stopping daemon waits for refreshes in flight.
const SETTLE_BOUND: Duration = Duration::from_secs(60);

/// How often the daemon checks that its home folder still exists.
const HOME_CHECK_EVERY: Duration = Duration::from_secs(2);

/// Completes once `home` no longer exists: a daemon whose CCS_HOME was deleted (a test's
/// temporary folder, a user's `rm -rf`) has nothing left to serve and must not linger.
async fn home_gone(home: &std::path::Path) {
    while home.is_dir() {
        actix_web::rt::time::sleep(HOME_CHECK_EVERY).await;
    }
}

/// A daemon running on its own thread, for tests. Stops when dropped.
pub struct DaemonHandle {
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl DaemonHandle {
    /// Starts a daemon for `paths` on 127.0.0.1, port 0, on `clock` (tests share a manual
    /// clock with the simulator).
    pub fn start(paths: Paths, config: Config, clock: SharedClock) -> Result<DaemonHandle> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let url = format!("http://{}", listener.local_addr()?);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("ccs-daemon".into())
            .spawn(move || {
                actix_web::rt::System::new().block_on(async move {
                    let _ = ready_tx.send(());
                    serve(config, paths, listener, clock, async {
                        let _ = rx.await;
                    })
                    .await
                })
            })?;
        let _ = ready_rx.recv();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if healthz(&url).is_some() {
                return Ok(DaemonHandle {
                    url,
                    stop: Some(tx),
                    thread: Some(thread),
                });
            }
            if thread.is_finished() {
                let ended = thread
                    .join()
                    .map_err(|_| anyhow::anyhow!("the daemon thread panicked"))?;
                return Err(ended
                    .err()
                    .unwrap_or_else(|| anyhow::anyhow!("the daemon exited while starting")));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        bail!("the daemon did not answer /healthz within 20 s")
    }

    /// Stops the daemon gracefully and returns how its run ended.
    pub fn stop(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow::anyhow!("the daemon thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for DaemonHandle {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strong() -> Config {
        let mut c = Config::default();
        // Random-looking: a repeated character is too guessable (config::entropy_bits).
        c.cliproxy.auth.api_key = Some("k7Qx2mZp9rT4vW8yB3nC6dF1gH5jL0sA".into());
        c.cliproxy.auth.management_secret = Some("s9Lm3Kp7Xq1Zr5Tv8Wy2Bn4Cd6Fg0Hj".into());
        c
    }

    #[test]
    fn beyond_loopback_tls_is_enough_and_plain_http_needs_the_risk_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::at(dir.path());
        // Bound for an instant and never accepted on: only its address is looked at.
        let public = TcpListener::bind(("0.0.0.0", 0)).unwrap();
        let loopback = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let c = strong();
        assert!(refuse_unsafe_bind(&c, &paths, &loopback, false).is_ok());
        assert!(refuse_unsafe_bind(&c, &paths, &public, true).is_ok());
        let err = refuse_unsafe_bind(&c, &paths, &public, false).unwrap_err();
        assert!(
            err.to_string().contains("ccs cliproxy cert --self-signed"),
            "{err}"
        );
        let mut risky = strong();
        risky.cliproxy.allow_plain_http = true;
        assert!(refuse_unsafe_bind(&risky, &paths, &public, false).is_ok());
        let mut weak = strong();
        weak.cliproxy.auth.api_key = Some("short".into());
        let err = refuse_unsafe_bind(&weak, &paths, &public, true).unwrap_err();
        assert!(
            err.to_string().contains("at least"),
            "TLS does not excuse a weak key: {err}"
        );
    }
}
