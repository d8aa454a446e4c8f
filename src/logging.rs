//! The daemon's log: daily files under `CCS_HOME/cliproxy/logs` (seven kept, no colours), plus
//! stderr when a person runs it in a terminal. A line repeated from one place in the code is
//! written at most `ERRORS_PER_WINDOW` (warnings, errors) or `LINES_PER_WINDOW` (the rest)
//! times per `WINDOW`; what was left out is counted in one summary line per window, so a flood
//! of bad requests cannot fill the disk. Lines that name a client key (`client = …`, the
//! request lines) are counted per key as well as per place, so one key's flood cannot hide
//! the other keys' lines; and no line is longer than `LINE_BYTES_MAX` (the rest is cut, and
//! the cut said), whatever a request carried.
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
/// The longest line written; a longer one is cut there, with how much was cut.
pub const LINE_BYTES_MAX: usize = 4096;
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

/// Where a line comes from: its place in the code, and the client key it names, if any.
type Place = (Identifier, Option<String>);

/// Counts lines per place in the code (and client key); decides which are written.
#[derive(Clone, Default)]
pub struct Limiter {
    slots: Arc<Mutex<Slots<Place>>>,
}

/// Reads an event's `client` field.
struct ClientField(Option<String>);

impl tracing::field::Visit for ClientField {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "client" {
            self.0 = Some(value.chars().take(64).collect());
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "client" {
            self.0 = Some(format!("{value:?}").chars().take(64).collect());
        }
    }
}

impl Limiter {
    fn slots(&self) -> std::sync::MutexGuard<'_, Slots<Place>> {
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
        let client = match m.fields().field("client") {
            Some(_) => {
                let mut c = ClientField(None);
                event.record(&mut c);
                c.0
            }
            None => None,
        };
        self.slots()
            .admit((m.callsite(), client), *m.level(), Instant::now(), || {
                (
                    m.target(),
                    format!("{}:{}", m.file().unwrap_or("?"), m.line().unwrap_or(0)),
                )
            })
    }
}

/// A writer whose lines are at most `LINE_BYTES_MAX` bytes (the log layer writes one event
/// per call).
#[derive(Clone)]
pub struct Capped<M>(pub M);

impl<'a, M: tracing_subscriber::fmt::MakeWriter<'a>> tracing_subscriber::fmt::MakeWriter<'a>
    for Capped<M>
{
    type Writer = CappedWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        CappedWriter(self.0.make_writer())
    }
}

pub struct CappedWriter<W>(W);

impl<W: std::io::Write> std::io::Write for CappedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_all(&cap_line(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// `line` cut to `LINE_BYTES_MAX` bytes (on a character boundary), saying how much was cut.
fn cap_line(line: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if line.len() <= LINE_BYTES_MAX {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut end = LINE_BYTES_MAX;
    // Not inside a UTF-8 sequence: continuation bytes are 0b10xxxxxx.
    while end > 0 && line[end] & 0xC0 == 0x80 {
        end -= 1;
    }
    let mut out = line[..end].to_vec();
    out.extend_from_slice(format!(" … [{} bytes cut]\n", line.len() - end).as_bytes());
    std::borrow::Cow::Owned(out)
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
            message: String::from_utf8_lossy(&cap_line(line.0.as_bytes())).into_owned(),
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
            .with_writer(Capped(std::io::stderr))
            .with_ansi(std::io::stderr().is_terminal())
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(limiter.clone())
        .with(Problems)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(Capped(file))
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
    fn a_long_line_is_cut_on_a_character_and_says_so() {
        assert_eq!(&*cap_line(b"short\n"), b"short\n");
        let long = format!("{}é{}", "a".repeat(LINE_BYTES_MAX - 1), "b".repeat(5 << 20));
        let cut = cap_line(long.as_bytes());
        assert!(cut.len() < LINE_BYTES_MAX + 64, "{}", cut.len());
        let text = std::str::from_utf8(&cut).expect("still UTF-8");
        assert!(
            text.ends_with(&format!(
                " … [{} bytes cut]\n",
                long.len() - (LINE_BYTES_MAX - 1)
            )),
            "{}",
            &text[text.len() - 40..]
        );
    }

    #[test]
    fn the_limiter_reads_the_client_of_a_request_line() {
        use tracing_subscriber::prelude::*;
        // Counts what the limiter lets through, by client.
        #[derive(Clone, Default)]
        struct Seen(Arc<Mutex<HashMap<String, usize>>>);
        impl<S: Subscriber> Layer<S> for Seen {
            fn on_event(&self, e: &Event<'_>, _: Context<'_, S>) {
                let mut c = ClientField(None);
                e.record(&mut c);
                *self
                    .0
                    .lock()
                    .unwrap()
                    .entry(c.0.unwrap_or_default())
                    .or_default() += 1;
            }
        }
        let seen = Seen::default();
        let subscriber = tracing_subscriber::registry()
            .with(Limiter::default())
            .with(seen.clone());
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..1000 {
                let client = if i == 999 { "alice" } else { "mallory" };
                tracing::info!(client, status = 200, "request");
            }
        });
        let seen = seen.0.lock().unwrap();
        assert_eq!(seen.get("mallory"), Some(&(LINES_PER_WINDOW as usize)));
        assert_eq!(seen.get("alice"), Some(&1), "{seen:?}");
    }

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
