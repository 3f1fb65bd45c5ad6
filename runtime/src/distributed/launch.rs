//! Lightning's default launcher for GPUs on one machine: `--devices N --strategy ddp` started
//! as one plain process runs the program N times. This process becomes rank 0; it starts
//! ranks 1..N as copies of itself (same program, same arguments) with torchrun's variables
//! set, so that each finds its place with [`ClusterEnv::detect`](super::ClusterEnv::detect)
//! and its GPU by local rank. The master port is one this process holds open for the
//! rendezvous, so that two runs on one machine cannot collide.
//!
//! The workers end with the program: rank 0 waits for them when it exits (and kills them if
//! they outlive the collective timeout), and on Linux the kernel sends them SIGTERM if rank 0
//! dies. A later trainer in the same program joins the same ranks ([`ranks`]).

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::ClusterEnv;
use crate::{Error, Result};

/// The worker processes this process started, and the rendezvous port it holds.
#[derive(Debug)]
pub struct Workers {
    children: Vec<(usize, Child)>,
    /// Where the other ranks find rank 0 (taken by the rendezvous).
    pub listener: Option<TcpListener>,
    /// How long the workers may outlive rank 0's trainer.
    grace: Duration,
}

/// torchrun's variables for rank `rank` of `world` processes on this machine.
pub fn rank_vars(rank: usize, world: usize, port: u16) -> HashMap<String, String> {
    [
        ("WORLD_SIZE", world.to_string()),
        ("RANK", rank.to_string()),
        ("LOCAL_RANK", rank.to_string()),
        ("LOCAL_WORLD_SIZE", world.to_string()),
        ("NODE_RANK", "0".to_string()),
        ("MASTER_ADDR", "127.0.0.1".to_string()),
        ("MASTER_PORT", port.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Starts ranks `1..world` as `program args` with their variables, and returns this
/// process's place (rank 0) with them.
pub fn spawn(
    world: usize,
    program: PathBuf,
    args: Vec<OsString>,
    grace: Duration,
) -> Result<(ClusterEnv, Workers)> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::msg(format!("launching {world} ranks: no free local port: {e}")))?;
    let port = listener
        .local_addr()
        .map_err(|e| Error::msg(format!("launching {world} ranks: {e}")))?
        .port();
    let mut workers = Workers {
        children: Vec::new(),
        listener: Some(listener),
        grace,
    };
    for rank in 1..world {
        let mut cmd = Command::new(&program);
        cmd.args(&args).envs(rank_vars(rank, world, port));
        die_with_parent(&mut cmd);
        let child = cmd.spawn().map_err(|e| {
            Error::msg(format!(
                "launching rank {rank} of {world} as `{}`: {e}",
                program.display()
            ))
        })?;
        workers.children.push((rank, child));
    }
    let env = ClusterEnv::from_vars(&rank_vars(0, world, port))?;
    Ok((env, workers))
}

/// The ranks this process launched, for the rest of the process: they run the whole program,
/// so a later trainer in it joins them again as rank 0 instead of launching more (as
/// Lightning's launcher, which leaves its variables set). Waited for when the process exits.
static LAUNCHED: Mutex<Option<(ClusterEnv, Workers)>> = Mutex::new(None);

/// This process's place among the `world` ranks it launched, launching them on the first
/// call; with the rendezvous port, on that first call.
pub fn ranks(world: usize, grace: Duration) -> Result<(ClusterEnv, Option<TcpListener>)> {
    let mut launched = LAUNCHED
        .lock()
        .map_err(|_| Error::msg("launching ranks: a launch panicked"))?;
    if let Some((env, _)) = &*launched {
        if env.world_size != world {
            return Err(Error::config(
                "devices",
                format!(
                    "{world} devices, but an earlier trainer of this program launched {} ranks, which run it to its end; every trainer of a program must use the same devices",
                    env.world_size
                ),
            ));
        }
        return Ok((env.clone(), None));
    }
    let (program, args) = this_program()?;
    let (env, mut workers) = spawn(world, program, args, grace)?;
    let listener = workers.listener.take();
    *launched = Some((env.clone(), workers));
    // SAFETY: `finish_launched` is a plain function that takes a lock and waits for child
    // processes; atexit runs it once, after main returns.
    unsafe { libc::atexit(finish_launched) };
    Ok((env, listener))
}

extern "C" fn finish_launched() {
    if let Ok(mut launched) = LAUNCHED.lock() {
        if let Some((_, mut workers)) = launched.take() {
            for failure in workers.finish() {
                eprintln!("error: {failure}");
            }
        }
    }
}

/// This program and its arguments, as the workers are started.
fn this_program() -> Result<(PathBuf, Vec<OsString>)> {
    let exe = std::env::current_exe().map_err(|e| {
        Error::msg(format!(
            "launching ranks: cannot find this program's path: {e}"
        ))
    })?;
    Ok((exe, std::env::args_os().skip(1).collect()))
}

#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches only the child's own state.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_cmd: &mut Command) {}

impl Workers {
    /// Waits for every worker (up to the grace time, then kills what is left); the ranks that
    /// failed, with how.
    pub fn finish(&mut self) -> Vec<String> {
        let deadline = Instant::now() + self.grace;
        let mut failed = Vec::new();
        for (rank, child) in &mut self.children {
            let status = loop {
                match child.try_wait() {
                    Ok(Some(status)) => break Some(status),
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break None;
                    }
                }
            };
            match status {
                Some(s) if s.success() => {}
                Some(s) => failed.push(format!("rank {rank} {s}")),
                None => failed.push(format!(
                    "rank {rank} was still running {:.0} s after rank 0 finished and was killed",
                    self.grace.as_secs_f64()
                )),
            }
        }
        self.children.clear();
        failed
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for failure in self.finish() {
            eprintln!("error: {failure}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_get_torchruns_variables_and_are_waited_for() {
        let dir = std::env::temp_dir().join(format!("fulmen-launch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = "echo \"$WORLD_SIZE $RANK $LOCAL_RANK $LOCAL_WORLD_SIZE $MASTER_ADDR $MASTER_PORT $1\" > \"$0/rank$RANK\"";
        let (env, mut workers) = spawn(
            3,
            "/bin/sh".into(),
            vec!["-c".into(), script.into(), dir.clone().into(), "arg".into()],
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!((env.world_size, env.global_rank, env.local_rank), (3, 0, 0));
        assert_eq!(env.master_addr, "127.0.0.1");
        let port = workers
            .listener
            .as_ref()
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert_eq!(env.master_port, port);
        assert!(workers.finish().is_empty());
        for rank in 1..3 {
            let line = std::fs::read_to_string(dir.join(format!("rank{rank}"))).unwrap();
            assert_eq!(
                line.trim(),
                format!("3 {rank} {rank} 3 127.0.0.1 {port} arg")
            );
        }
        assert!(!dir.join("rank0").exists(), "rank 0 is this process");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn failed_and_stuck_workers_are_reported() {
        let (_, mut workers) = spawn(
            2,
            "/bin/sh".into(),
            vec!["-c".into(), "exit 3".into()],
            Duration::from_secs(10),
        )
        .unwrap();
        let failed = workers.finish();
        assert_eq!(failed.len(), 1);
        assert!(failed[0].starts_with("rank 1 exit status: 3"), "{failed:?}");

        let start = Instant::now();
        let (_, mut workers) = spawn(
            2,
            "/bin/sh".into(),
            vec!["-c".into(), "sleep 30".into()],
            Duration::from_millis(300),
        )
        .unwrap();
        let failed = workers.finish();
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(failed[0].contains("was killed"), "{failed:?}");
    }
}
