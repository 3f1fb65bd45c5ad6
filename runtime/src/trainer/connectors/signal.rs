//! Signals and what every rank agrees on during training (Lightning's `signal_connector.py`
//! and the strategies' `reduce_boolean_decision`): a stop asked for on any rank, SLURM's
//! requeue signal, and SIGINT (Ctrl-C) or SIGTERM, which stop the run as Lightning's
//! `KeyboardInterrupt` does: after the step in flight, with `on_exception` run and every logger
//! flushed and closed ([`Error::Interrupted`]). A second SIGINT or SIGTERM exits at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM};

use crate::checkpoint::Ckpt;
use crate::datamodule::DataModule;
use crate::distributed::requeue;
use crate::module::LightningModule;
use crate::trainer::loops::Run;
use crate::{Error, Result, TrainDevice};

impl<E: Ckpt, D: TrainDevice<E>, M: LightningModule<E, D>, DM: DataModule> Run<'_, E, D, M, DM> {
    /// What every rank must agree on after a step, in one collective: a stop asked for on any
    /// rank (a callback's `should_stop`) stops every rank (a rank going on alone would wait
    /// forever); and SLURM's requeue signal or SIGTERM: the first saves an HPC checkpoint and
    /// requeues the job, the second stops (see [`crate::distributed::requeue`]).
    pub(in crate::trainer) fn agree_after_step(&mut self) -> Result<()> {
        let (mut requeue, mut stop) = (self.signals.requeue(), self.signals.stop());
        if self.dist.env.world_size > 1 {
            let mut flags = [
                f64::from(u8::from(requeue)),
                stop.map_or(0.0, f64::from),
                f64::from(u8::from(self.view.should_stop)),
            ];
            self.dist.collective.all_reduce_max_f64(&mut flags)?;
            requeue = flags[0] > 0.0;
            stop = (flags[1] > 0.0).then_some(flags[1] as i32);
            self.view.should_stop = flags[2] > 0.0;
        }
        if requeue {
            return Err(self.requeue()?);
        }
        match stop {
            Some(signal) => Err(self.interrupted(signal)),
            None => Ok(()),
        }
    }

    /// Between evaluation or prediction batches: a one-process run stops at a stop signal.
    /// Ranks of a larger run take it at their next training step, all together (one going on
    /// alone would wait for the others forever); they say so, once.
    pub(in crate::trainer) fn check_signals(&self) -> Result<()> {
        match self.signals.stop() {
            Some(signal) if self.dist.env.world_size == 1 => Err(self.interrupted(signal)),
            Some(signal) => {
                if self.signals.notice() && self.dist.env.is_global_zero() {
                    let name = signal_name(signal);
                    eprintln!("{name}: the ranks stop together at their next training step (an evaluation or prediction runs to its end first); another {name} exits at once");
                }
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn interrupted(&self, signal: i32) -> Error {
        Error::Interrupted {
            signal: signal_name(signal),
            epoch: self.view.current_epoch,
            step: self.view.global_step,
        }
    }

    /// Saves an HPC checkpoint and requeues the job; the error that ends the run.
    fn requeue(&mut self) -> Result<Error> {
        let path = requeue::next_hpc_checkpoint(&self.view.default_root_dir);
        let job = self.dist.env.job_id.clone().unwrap_or_default();
        // Under sharding every rank takes part: in gathering the optimizer state (and the
        // weights, under FULL_SHARD), or in writing a sharded checkpoint's files.
        let global_zero = self.dist.env.is_global_zero();
        let o = &self.optimization;
        if self.sharded_checkpoints() {
            self.write_sharded(&path, false)?;
        } else if o.shards.is_some() || o.full_shard.is_some() || global_zero {
            let ckpt = self.checkpoint(false)?;
            if global_zero {
                ckpt.write(&path)?;
            }
        }
        if global_zero {
            requeue::requeue(&job)?;
        }
        self.dist.collective.barrier()?;
        Ok(Error::Requeued {
            checkpoint: path,
            job,
            epoch: self.view.current_epoch,
            step: self.view.global_step,
        })
    }

    /// A stop asked for on any rank at the epoch's end (early stopping) stops every rank.
    pub(in crate::trainer) fn sync_stop(&mut self) -> Result<()> {
        if self.dist.env.world_size > 1 {
            let mut any = [f64::from(u8::from(self.view.should_stop))];
            self.dist.collective.all_reduce_max_f64(&mut any)?;
            self.view.should_stop = any[0] > 0.0;
        }
        Ok(())
    }
}

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
fn signal_name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        _ => "a stop signal",
    }
}
