//! Lightning's `strategy` names and what fulmen runs for each.

use crate::{Error, Result};

/// How the ranks of a run share the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// `"auto"`: DDP when a launcher started several processes, else one device.
    Auto,
    /// `"single_device"`: one process, one device.
    SingleDevice,
    /// `"ddp"` (and FSDP's `NO_SHARD`): every rank holds the whole model and optimizer; each
    /// step's gradients are summed across ranks in buckets and averaged, so every rank takes
    /// the same step and keeps bitwise-identical weights.
    Ddp,
    /// FSDP's `SHARD_GRAD_OP` (ZeRO-2; DeepSpeed stages 1 and 2): each parameter tensor
    /// belongs to one rank, which alone keeps its optimizer state and its summed gradient,
    /// steps it, and sends the new values to the others.
    ShardGradOp,
    /// FSDP's `FULL_SHARD` (its default; ZeRO-3, DeepSpeed stage 3): each rank holds 1/N of
    /// every parameter, gradient and optimizer state, and a unit's parameters are gathered
    /// whole only while it runs ([`Unit`](crate::layers::Unit)).
    FullShard,
}

impl std::str::FromStr for Strategy {
    type Err = Error;

    /// `auto`, `single_device`, `ddp` (also `ddp_find_unused_parameters_true|false`),
    /// `fsdp[:SHARDING]` with sharding `FULL_SHARD` (FSDP's default), `SHARD_GRAD_OP` or
    /// `NO_SHARD`, and `deepspeed` / `deepspeed_stage_1|2|3`.
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        let (name, sharding) = match lower.split_once(':') {
            Some((n, sh)) => (n, Some(sh)),
            None => (lower.as_str(), None),
        };
        match (name, sharding) {
            ("auto", None) => Ok(Strategy::Auto),
            ("single_device", None) => Ok(Strategy::SingleDevice),
            (
                "ddp" | "ddp_find_unused_parameters_true" | "ddp_find_unused_parameters_false",
                None,
            ) => Ok(Strategy::Ddp),
            ("fsdp", Some("no_shard")) => Ok(Strategy::Ddp),
            ("fsdp", Some("shard_grad_op")) => Ok(Strategy::ShardGradOp),
            ("fsdp", None | Some("full_shard")) => Ok(Strategy::FullShard),
            ("fsdp", Some("hybrid_shard")) => Err(Error::config(
                "strategy",
                format!("`{s}`: HYBRID_SHARD (sharded within a node, replicated across nodes) is not built; use \"fsdp\" (FULL_SHARD across every rank)"),
            )),
            ("deepspeed" | "deepspeed_stage_1" | "deepspeed_stage_2", None) => {
                Ok(Strategy::ShardGradOp)
            }
            ("deepspeed_stage_3", None) => Ok(Strategy::FullShard),
            (n, None) if n.starts_with("deepspeed") || n.starts_with("fsdp") => Err(Error::config(
                "strategy",
                format!("`{s}`: DeepSpeed's offloading to the CPU or NVMe is not built; use \"deepspeed_stage_3\" or \"fsdp\""),
            )),
            ("fsdp", Some(other)) => Err(Error::config(
                "strategy",
                format!("`{other}` is not an FSDP sharding; use FULL_SHARD, SHARD_GRAD_OP or NO_SHARD"),
            )),
            _ => Err(Error::config(
                "strategy",
                format!("`{s}` is not a strategy; use \"auto\", \"single_device\", \"ddp\", \"fsdp\" (FULL_SHARD), \"fsdp:SHARD_GRAD_OP\", \"fsdp:NO_SHARD\", \"deepspeed_stage_2\" or \"deepspeed_stage_3\""),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lightnings_names_map_or_are_refused_with_what_to_use() {
        let p = |s: &str| s.parse::<Strategy>();
        assert_eq!(p("ddp").unwrap(), Strategy::Ddp);
        assert_eq!(p("DDP_find_unused_parameters_true").unwrap(), Strategy::Ddp);
        assert_eq!(p("fsdp:NO_SHARD").unwrap(), Strategy::Ddp);
        assert_eq!(p("fsdp:SHARD_GRAD_OP").unwrap(), Strategy::ShardGradOp);
        assert_eq!(p("deepspeed_stage_2").unwrap(), Strategy::ShardGradOp);
        for full in ["fsdp", "FSDP:FULL_SHARD", "deepspeed_stage_3"] {
            assert_eq!(p(full).unwrap(), Strategy::FullShard);
        }
        let hybrid = p("fsdp:HYBRID_SHARD").unwrap_err().to_string();
        assert!(
            hybrid.contains("HYBRID_SHARD") && hybrid.contains("\"fsdp\""),
            "{hybrid}"
        );
        assert!(p("deepspeed_stage_2_offload")
            .unwrap_err()
            .to_string()
            .contains("offloading"));
        assert!(p("dp").unwrap_err().to_string().contains("not a strategy"));
    }
}
