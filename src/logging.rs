//! The daemon's log: daily files under `CCS_HOME/cliproxy/logs` (seven kept, no colours), plus
//! stderr when a person runs it in a terminal. A line repeated from one place in the code is
//! written at most `ERRORS_PER_WINDOW` (warnings, errors) or `LINES_PER_WINDOW` (the rest)
//! times per `WINDOW`; what was left out is counted in one summary line per window, so a flood
//! of bad requests cannot fill the disk.
//!
//! Must not: log a token (callers never pass one), or grow with the number of lines left out.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use tracing::callsite::Identifier;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use crate::config::Paths;

/// The window repeats are counted in.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Warnings and errors from one place per window.
pub const ERRORS_PER_WINDOW: u32 = 20;
/// Other lines from one place per window (one per proxied request, say).
pub const LINES_PER_WINDOW: u32 = 200;
/// The target of the summary lines, never limited themselves.
const SUMMARY_TARGET: &str = "ccs::log";

struct Slot {
    window_start: Instant,
    written: u32,
    left_out: u64,
    target: &'static str,
    place: String,
}

/// Lines counted per place `K` (a callsite in the daemon, a number in the tests).
struct Slots<K> {
    map: HashMap<K, Slot>,
}

impl<K> Default for Slots<K> {
    fn default() -> Self {
        Slots {
            map: HashMap::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq> Slots<K> {
    /// Whether a line from `id` at `level` is written at `now`.
    fn admit(
        &mut self,
        id: K,
        level: Level,
        now: Instant,
        describe: impl FnOnce() -> (&'static str, String),
    ) -> bool {
        let slot = self.map.entry(id).or_insert_with(|| {
            let (target, place) = describe();
            Slot {
                window_start: now,
                written: 0,
                left_out: 0,
                target,
                place,
            }
        });
        if now.duration_since(slot.window_start) >= WINDOW {
            slot.window_start = now;
            slot.written = 0;
        }
        let cap = if level <= Level::WARN {
            ERRORS_PER_WINDOW
        } else {
            LINES_PER_WINDOW
        };
        if slot.written < cap {
            slot.written += 1;
            true
        } else {
            slot.left_out += 1;
            false
        }
    }

    /// What was left out since the last call, per place (and forgets it).
    fn drain_left_out(&mut self) -> Vec<(&'static str, String, u64)> {
        self.map
            .values_mut()
            .filter(|s| s.left_out > 0)
            .map(|s| (s.target, s.place.clone(), std::mem::take(&mut s.left_out)))
            .collect()
    }
}

/// Counts lines per place in the code; decides which are written.
#[derive(Clone, Default)]
pub struct Limiter {
    slots: Arc<Mutex<Slots<Identifier>>>,
}

impl Limiter {
    fn slots(&self) -> std::sync::MutexGuard<'_, Slots<Identifier>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes one summary line per place that had lines left out, every `WINDOW`, on a thread
    /// of its own for the life of the process.
    fn report_every_window(&self) {
        let me = self.clone();
        let _ = std::thread::Builder::new()
            .name("ccs-log-summary".into())
            .spawn(move || loop {
                std::thread::sleep(WINDOW);
                let left_out = me.slots().drain_left_out();
                for (target, place, n) in left_out {
                    tracing::warn!(
                        target: SUMMARY_TARGET,
                        left_out = n,
                        from = target,
                        at = %place,
                        "{n} more lines like this were left out in the last {} s",
                        WINDOW.as_secs()
                    );
                }
            });
    }
}

impl<S: Subscriber> Layer<S> for Limiter {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        let m = event.metadata();
        if m.target() == SUMMARY_TARGET {
            return true;
        }
        self.slots()
            .admit(m.callsite(), *m.level(), Instant::now(), || {
                (
                    m.target(),
                    format!("{}:{}", m.file().unwrap_or("?"), m.line().unwrap_or(0)),
                )
            })
    }
}

/// Sets up the daemon's log. `to_stderr`: also on stderr (a person ran `ccs daemon run`); a
/// daemon started in the background writes its file only, so `daemon.out` holds nothing but
/// what comes before logging starts (and a panic).
/// How many warnings and errors `recent_problems` keeps.
const PROBLEMS_KEPT: usize = 50;

static PROBLEMS: Mutex<VecDeque<crate::api::LogRecord>> = Mutex::new(VecDeque::new());

/// The latest warnings and errors this process logged (after the limiter), newest last, for
/// the dashboard's health page.
pub fn recent_problems() -> Vec<crate::api::LogRecord> {
    PROBLEMS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .cloned()
        .collect()
}

/// Renders an event's message and fields as one line.
#[derive(Default)]
struct Line(String);

impl tracing::field::Visit for Line {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

/// Keeps the warnings and errors for `recent_problems`.
struct Problems;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Problems {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let level = *event.metadata().level();
        if level > Level::WARN {
            return;
        }
        let mut line = Line::default();
        event.record(&mut line);
        let mut p = PROBLEMS.lock().unwrap_or_else(|p| p.into_inner());
        if p.len() >= PROBLEMS_KEPT {
            p.pop_front();
        }
        p.push_back(crate::api::LogRecord {
            at: crate::store::mirror::rfc3339(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0),
            ),
            level: level.as_str().to_ascii_lowercase(),
            message: line.0,
        });
    }
}

pub fn init(paths: &Paths, to_stderr: bool) -> Result<tracing_appender::non_blocking::WorkerGuard> {
    use std::io::IsTerminal;
    use tracing_subscriber::prelude::*;
    crate::fsutil::private_dir(&paths.logs_dir())?;
    let appender = tracing_appender::rolling::Builder::new()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix("ccs.log")
        .max_log_files(7)
        .build(paths.logs_dir())
        .context("cannot open the log folder")?;
    let (file, guard) = tracing_appender::non_blocking(appender);
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("CCS_LOG").unwrap_or_else(|_| "info".into());
    let limiter = Limiter::default();
    let stderr = to_stderr.then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(limiter.clone())
        .with(Problems)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(file)
                .with_ansi(false),
        )
        .with(stderr)
        .try_init();
    limiter.report_every_window();
    Ok(guard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_capped_per_place_and_window_and_counted() {
        let mut l = Slots::<u32>::default();
        let now = Instant::now();
        let here = || ("t", "src/x.rs:1".to_string());
        let written = (0..1000)
            .filter(|_| l.admit(1, Level::ERROR, now, here))
            .count();
        assert_eq!(written, ERRORS_PER_WINDOW as usize);
        // Another place has its own count.
        assert!(l.admit(2, Level::ERROR, now, here));
        assert_eq!(
            l.drain_left_out(),
            vec![(
                "t",
                "src/x.rs:1".to_string(),
                1000 - ERRORS_PER_WINDOW as u64
            )]
        );
        assert!(l.drain_left_out().is_empty(), "counted once");
        // The next window writes again.
        assert!(l.admit(1, Level::ERROR, now + WINDOW, here));
    }

    #[test]
    fn ordinary_lines_have_a_larger_allowance() {
        let mut l = Slots::<u32>::default();
        let now = Instant::now();
        let written = (0..1000)
            .filter(|_| l.admit(1, Level::INFO, now, || ("t", String::new())))
            .count();
        assert_eq!(written, LINES_PER_WINDOW as usize);
    }
}
