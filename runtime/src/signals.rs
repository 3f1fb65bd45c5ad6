//! The process's signals: SIGINT (Ctrl-C), SIGTERM and SLURM's requeue signal, caught as
//! flags while a stage runs (`trainer/connectors/signal.rs` acts on them). The handlers are
//! installed once per process; outside a stage they do what the signal would do without
//! fulmen.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM};

use crate::{Error, Result};

/// The process's signal flags. The handlers are installed once per process (signal-hook
/// cannot uninstall one: a removed handler leaves its signal ignored); outside a stage they
/// act as the signal's default would (Ctrl-C after `fit` still ends the program).
struct Flags {
    /// No stage runs: a signal does what it would without fulmen.
    idle: Arc<AtomicBool>,
    /// The stages running now (tests run several at once).
    running: std::sync::Mutex<usize>,
    /// SIGINT or SIGTERM arrived during this stage: a second one exits at once.
    either: Arc<AtomicBool>,
    int: Arc<AtomicBool>,
    term: Arc<AtomicBool>,
    requeue: Arc<AtomicBool>,
    /// A rank of a larger run said it waits for the next training step to stop.
    noticed: AtomicBool,
    /// The requeue signals whose handlers are installed.
    requeue_installed: std::sync::Mutex<Vec<i32>>,
}

fn flags() -> Result<&'static Flags> {
    static FLAGS: std::sync::OnceLock<std::result::Result<Flags, String>> =
        std::sync::OnceLock::new();
    FLAGS
        .get_or_init(install)
        .as_ref()
        .map_err(|e| Error::msg(format!("installing a signal handler: {e}")))
}

/// The handlers of SIGINT and SIGTERM, in the order they run: the default action when no
/// stage runs; exit when the stage already got one; the flags. A SIGINT ignored when the
/// process started (a background job's) stays ignored.
fn install() -> std::result::Result<Flags, String> {
    let flag = |v| Arc::new(AtomicBool::new(v));
    let flags = Flags {
        idle: flag(true),
        running: std::sync::Mutex::new(0),
        either: flag(false),
        int: flag(false),
        term: flag(false),
        requeue: flag(false),
        noticed: AtomicBool::new(false),
        requeue_installed: std::sync::Mutex::new(Vec::new()),
    };
    for (sig, own) in [(SIGINT, &flags.int), (SIGTERM, &flags.term)] {
        if ignored(sig) {
            continue;
        }
        let e = |e: std::io::Error| e.to_string();
        signal_hook::flag::register_conditional_default(sig, flags.idle.clone()).map_err(e)?;
        signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, flags.either.clone())
            .map_err(e)?;
        signal_hook::flag::register(sig, flags.either.clone()).map_err(e)?;
        signal_hook::flag::register(sig, own.clone()).map_err(e)?;
    }
    Ok(flags)
}

/// Whether `sig` is ignored (`SIG_IGN`) in this process now.
fn ignored(sig: i32) -> bool {
    // SAFETY: a null new action only reads the current one into `old`.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

/// SIGINT, SIGTERM and (fitting under SLURM) the requeue signal, caught while a stage runs.
pub(crate) struct Signals {
    flags: &'static Flags,
}

impl Signals {
    /// Starts catching for a stage; `requeue_signal` too, when given.
    pub fn catch(requeue_signal: Option<i32>) -> Result<Self> {
        let flags = flags()?;
        if let Some(sig) = requeue_signal {
            let mut installed = lock(&flags.requeue_installed);
            if !installed.contains(&sig) {
                let e = |e: std::io::Error| Error::msg(format!("installing a signal handler: {e}"));
                signal_hook::flag::register_conditional_default(sig, flags.idle.clone())
                    .map_err(e)?;
                signal_hook::flag::register(sig, flags.requeue.clone()).map_err(e)?;
                installed.push(sig);
            }
        }
        let mut running = lock(&flags.running);
        if *running == 0 {
            for f in [&flags.either, &flags.int, &flags.term, &flags.requeue] {
                f.store(false, Ordering::SeqCst);
            }
            flags.noticed.store(false, Ordering::SeqCst);
            flags.idle.store(false, Ordering::SeqCst);
        }
        *running += 1;
        Ok(Self { flags })
    }

    /// Whether the requeue signal arrived.
    pub fn requeue(&self) -> bool {
        self.flags.requeue.load(Ordering::SeqCst)
    }

    /// Whether a waiting rank should say so now (the first time this stage).
    pub fn notice(&self) -> bool {
        !self.flags.noticed.swap(true, Ordering::SeqCst)
    }

    /// The stop signal that arrived, if one did (SIGTERM before SIGINT).
    pub fn stop(&self) -> Option<i32> {
        if self.flags.term.load(Ordering::SeqCst) {
            Some(SIGTERM)
        } else if self.flags.int.load(Ordering::SeqCst) {
            Some(SIGINT)
        } else {
            None
        }
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        let mut running = lock(&self.flags.running);
        *running = running.saturating_sub(1);
        if *running == 0 {
            self.flags.idle.store(true, Ordering::SeqCst);
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `SIGINT`, `SIGTERM`: the names [`Error::Interrupted`] reports.
pub(crate) fn signal_name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        _ => "a stop signal",
    }
}
