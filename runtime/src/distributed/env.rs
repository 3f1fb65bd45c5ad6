//! Where this process sits in a multi-process run, read from the launcher's environment in
//! Lightning's order of priority: torchrun-style variables, then SLURM, then OpenMPI's
//! `mpirun`. A process no launcher started is rank 0 of 1.

use std::collections::HashMap;

use crate::{Error, Result};

/// Who started the processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    /// No launcher: one process.
    None,
    /// `torchrun` or anything that sets `WORLD_SIZE`, `RANK`, `LOCAL_RANK`.
    Torchrun,
    /// `srun` under a SLURM allocation.
    Slurm,
    /// OpenMPI's `mpirun`.
    OpenMpi,
}

/// This process's place in the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterEnv {
    /// Who started the processes.
    pub launcher: Launcher,
    /// Processes in the run.
    pub world_size: usize,
    /// This process, `0..world_size`; rank 0 logs and writes checkpoints.
    pub global_rank: usize,
    /// This process among those of its node (its device ordinal on a GPU node).
    pub local_rank: usize,
    /// This process's node, `0..num_nodes`.
    pub node_rank: usize,
    /// Nodes in the run.
    pub num_nodes: usize,
    /// Processes per node, when the launcher says.
    pub tasks_per_node: Option<usize>,
    /// The host and port of rank 0 (where a GPU run's NCCL id is shared).
    pub master_addr: String,
    /// The port of rank 0 (`MASTER_PORT`; by default 29500, or under SLURM 15000 plus the last four
    /// digits of the job id).
    pub master_port: u16,
    /// The SLURM job, for requeueing.
    pub job_id: Option<String>,
}

impl ClusterEnv {
    /// One process, no launcher.
    pub fn single() -> Self {
        Self {
            launcher: Launcher::None,
            world_size: 1,
            global_rank: 0,
            local_rank: 0,
            node_rank: 0,
            num_nodes: 1,
            tasks_per_node: Some(1),
            master_addr: "127.0.0.1".into(),
            master_port: 29500,
            job_id: None,
        }
    }

    /// Reads the process's environment.
    pub fn detect() -> Result<Self> {
        Self::from_vars(&std::env::vars().collect())
    }

    /// Reads `vars` as the environment (what [`detect`](Self::detect) does with the real one).
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self> {
        let get = |k: &str| vars.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let num = |k: &str| -> Result<Option<usize>> {
            get(k)
                .map(|v| {
                    v.parse::<usize>().map_err(|_| {
                        Error::config(k, format!("`{v}` is not a non-negative integer"))
                    })
                })
                .transpose()
        };
        let port = |k: &str| -> Result<Option<u16>> {
            get(k)
                .map(|v| {
                    v.parse::<u16>()
                        .map_err(|_| Error::config(k, format!("`{v}` is not a port")))
                })
                .transpose()
        };
        let mut env = Self::single();
        if let (Some(world), Some(rank)) = (num("WORLD_SIZE")?, num("RANK")?) {
            env.launcher = Launcher::Torchrun;
            env.world_size = world;
            env.global_rank = rank;
            env.local_rank = num("LOCAL_RANK")?.unwrap_or(0);
            env.node_rank = num("GROUP_RANK")?.or(num("NODE_RANK")?).unwrap_or(0);
            env.tasks_per_node = num("LOCAL_WORLD_SIZE")?;
            env.num_nodes = nodes(world, env.tasks_per_node);
            env.master_addr = get("MASTER_ADDR").unwrap_or("127.0.0.1").to_string();
            env.master_port = port("MASTER_PORT")?.unwrap_or(29500);
        } else if let (Some(world), Some(rank)) = (num("SLURM_NTASKS")?, num("SLURM_PROCID")?) {
            env.launcher = Launcher::Slurm;
            env.world_size = world;
            env.global_rank = rank;
            env.local_rank = num("SLURM_LOCALID")?.unwrap_or(0);
            env.node_rank = num("SLURM_NODEID")?.unwrap_or(0);
            env.num_nodes = num("SLURM_NNODES")?.unwrap_or(1);
            env.tasks_per_node = get("SLURM_NTASKS_PER_NODE").and_then(tasks_per_node);
            env.job_id = get("SLURM_ARRAY_JOB_ID")
                .zip(get("SLURM_ARRAY_TASK_ID"))
                .map(|(job, task)| format!("{job}_{task}"))
                .or_else(|| get("SLURM_JOB_ID").map(str::to_string));
            let nodes = get("SLURM_NODELIST").or(get("SLURM_JOB_NODELIST"));
            if let Some(list) = nodes {
                let hosts = expand_nodelist(list)?;
                if let Some(first) = hosts.first() {
                    env.master_addr = first.clone();
                }
            }
            if let Some(addr) = get("MASTER_ADDR") {
                env.master_addr = addr.to_string();
            }
            // Lightning's default: 15000 plus the job id's last four digits, so that jobs
            // sharing a node do not collide.
            let job_port = env.job_id.as_deref().map(|id| {
                let digits: String = id.chars().filter(char::is_ascii_digit).collect();
                let tail = digits.len().saturating_sub(4);
                15000 + digits[tail..].parse::<u16>().unwrap_or(0)
            });
            env.master_port = port("MASTER_PORT")?.or(job_port).unwrap_or(29500);
        } else if let (Some(world), Some(rank)) =
            (num("OMPI_COMM_WORLD_SIZE")?, num("OMPI_COMM_WORLD_RANK")?)
        {
            env.launcher = Launcher::OpenMpi;
            env.world_size = world;
            env.global_rank = rank;
            env.local_rank = num("OMPI_COMM_WORLD_LOCAL_RANK")?.unwrap_or(0);
            env.tasks_per_node = num("OMPI_COMM_WORLD_LOCAL_SIZE")?;
            env.node_rank = num("OMPI_COMM_WORLD_NODE_RANK")?.unwrap_or(0);
            env.num_nodes = nodes(world, env.tasks_per_node);
            env.master_addr = get("MASTER_ADDR").unwrap_or("127.0.0.1").to_string();
            env.master_port = port("MASTER_PORT")?.unwrap_or(29500);
        }
        if env.world_size == 0 || env.global_rank >= env.world_size {
            return Err(Error::config(
                "distributed environment",
                format!(
                    "rank {} of a world of {} ({:?} launcher)",
                    env.global_rank, env.world_size, env.launcher
                ),
            ));
        }
        Ok(env)
    }

    /// Whether this is rank 0, the process that logs and writes checkpoints.
    pub fn is_global_zero(&self) -> bool {
        self.global_rank == 0
    }
}

/// Nodes of a run of `world` processes, `per_node` on each (one when unknown).
fn nodes(world: usize, per_node: Option<usize>) -> usize {
    per_node.filter(|&t| t > 0).map_or(1, |t| world.div_ceil(t))
}

/// The first count of `SLURM_NTASKS_PER_NODE` (`2`, or `2(x3),1` on uneven allocations).
fn tasks_per_node(v: &str) -> Option<usize> {
    v.split([',', '(']).next()?.trim().parse().ok()
}

/// Expands SLURM's compressed host list: `gpu[01-04,07],login1` is gpu01, gpu02, gpu03, gpu04,
/// gpu07, login1 (zero padding kept, as `scontrol show hostnames` prints them).
pub fn expand_nodelist(list: &str) -> Result<Vec<String>> {
    let bad = |why: &str| Error::config("SLURM_NODELIST", format!("`{list}`: {why}"));
    let mut hosts = Vec::new();
    let mut rest = list.trim();
    while !rest.is_empty() {
        // One host expression: up to a comma outside brackets.
        let mut depth = 0usize;
        let end = rest
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '[' => depth += 1,
                    ']' => depth = depth.saturating_sub(1),
                    _ => {}
                }
                c == ',' && depth == 0
            })
            .map_or(rest.len(), |(i, _)| i);
        let item = &rest[..end];
        rest = rest[end..].trim_start_matches(',');
        let Some(open) = item.find('[') else {
            hosts.push(item.to_string());
            continue;
        };
        let close = item.rfind(']').ok_or_else(|| bad("a `[` without `]`"))?;
        let (prefix, suffix) = (&item[..open], &item[close + 1..]);
        for range in item[open + 1..close].split(',') {
            let (lo, hi) = range.split_once('-').unwrap_or((range, range));
            let width = lo.len();
            let (a, b): (u64, u64) = (
                lo.parse()
                    .map_err(|_| bad("a range bound is not a number"))?,
                hi.parse()
                    .map_err(|_| bad("a range bound is not a number"))?,
            );
            if b < a {
                return Err(bad("a range runs backwards"));
            }
            for n in a..=b {
                hosts.push(format!("{prefix}{n:0width$}{suffix}"));
            }
        }
    }
    Ok(hosts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<ClusterEnv> {
        ClusterEnv::from_vars(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn nodelists_expand_like_scontrol() {
        assert_eq!(
            expand_nodelist("gpu[01-04,07]").unwrap(),
            ["gpu01", "gpu02", "gpu03", "gpu04", "gpu07"]
        );
        assert_eq!(
            expand_nodelist("a1,b[8-10],c").unwrap(),
            ["a1", "b8", "b9", "b10", "c"]
        );
        assert!(expand_nodelist("gpu[3-1]").is_err());
        assert!(expand_nodelist("gpu[1-2").is_err());
    }

    #[test]
    fn launchers_are_read_in_lightnings_order() {
        let none = env(&[]).unwrap();
        assert_eq!((none.launcher, none.world_size), (Launcher::None, 1));

        let slurm = env(&[
            ("SLURM_NTASKS", "4"),
            ("SLURM_PROCID", "3"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_NODEID", "1"),
            ("SLURM_NNODES", "2"),
            ("SLURM_NTASKS_PER_NODE", "2(x2)"),
            ("SLURM_JOB_ID", "4321"),
            ("SLURM_NODELIST", "gpu[01-02]"),
        ])
        .unwrap();
        assert_eq!(slurm.launcher, Launcher::Slurm);
        assert_eq!(
            (slurm.global_rank, slurm.local_rank, slurm.node_rank),
            (3, 1, 1)
        );
        assert_eq!((slurm.num_nodes, slurm.tasks_per_node), (2, Some(2)));
        assert_eq!(slurm.master_addr, "gpu01");
        assert_eq!(slurm.job_id.as_deref(), Some("4321"));
        assert_eq!(slurm.master_port, 19321);

        // torchrun's variables win over SLURM's.
        let both = env(&[
            ("WORLD_SIZE", "2"),
            ("RANK", "1"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "10.0.0.1"),
            ("MASTER_PORT", "1234"),
            ("SLURM_NTASKS", "4"),
            ("SLURM_PROCID", "0"),
        ])
        .unwrap();
        assert_eq!(both.launcher, Launcher::Torchrun);
        assert_eq!((both.world_size, both.global_rank), (2, 1));
        assert_eq!(
            (both.master_addr.as_str(), both.master_port),
            ("10.0.0.1", 1234)
        );

        let mpi = env(&[
            ("OMPI_COMM_WORLD_SIZE", "2"),
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "2"),
        ])
        .unwrap();
        assert_eq!(mpi.launcher, Launcher::OpenMpi);
        assert_eq!((mpi.world_size, mpi.local_rank, mpi.num_nodes), (2, 1, 1));
    }

    #[test]
    fn impossible_environments_are_named() {
        let e = env(&[("WORLD_SIZE", "2"), ("RANK", "2")]).unwrap_err();
        assert!(e.to_string().contains("rank 2 of a world of 2"), "{e}");
        let e = env(&[("SLURM_NTASKS", "two"), ("SLURM_PROCID", "0")]).unwrap_err();
        assert!(e.to_string().contains("SLURM_NTASKS"), "{e}");
    }
}
