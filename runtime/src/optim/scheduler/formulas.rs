//! The schedules' formulas: the rate (and momentum) at a step, as PyTorch computes them.

use super::*;

impl Schedule {
    pub(super) fn name(&self) -> &'static str {
        match self {
            Schedule::Step(_) => "StepLR",
            Schedule::MultiStep(_) => "MultiStepLR",
            Schedule::Exponential(_) => "ExponentialLR",
            Schedule::CosineAnnealing(_) => "CosineAnnealingLR",
            Schedule::Linear(_) => "LinearLR",
            Schedule::OneCycle(_) => "OneCycleLR",
            Schedule::Plateau(_) => "ReduceLROnPlateau",
            Schedule::Sequential { .. } => "SequentialLR",
        }
    }

    pub(super) fn validate(&self) -> Result<()> {
        let bad =
            |field: &str, why: String| Err(Error::config(format!("{}.{field}", self.name()), why));
        match self {
            Schedule::Step(s) if s.step_size == 0 => bad("step_size", "must be at least 1".into()),
            Schedule::CosineAnnealing(s) if s.t_max == 0 => {
                bad("t_max", "must be at least 1".into())
            }
            Schedule::Linear(s) if !(s.start_factor > 0.0 && s.start_factor <= 1.0) => bad(
                "start_factor",
                format!("{} is not in (0, 1]", s.start_factor),
            ),
            Schedule::Linear(s) if !(0.0..=1.0).contains(&s.end_factor) => {
                bad("end_factor", format!("{} is not in [0, 1]", s.end_factor))
            }
            Schedule::OneCycle(s) if s.total_steps == 0 => {
                bad("total_steps", "must be at least 1".into())
            }
            Schedule::OneCycle(s) if !(0.0..=1.0).contains(&s.pct_start) => {
                bad("pct_start", format!("{} is not in [0, 1]", s.pct_start))
            }
            Schedule::Plateau(p) if p.factor >= 1.0 || p.factor < 0.0 => {
                bad("factor", format!("{} is not in [0, 1)", p.factor))
            }
            Schedule::Sequential {
                schedules,
                milestones,
            } => {
                if schedules.len() != milestones.len() + 1 {
                    return bad(
                        "milestones",
                        format!(
                            "{} schedules need {} milestones, not {}",
                            schedules.len(),
                            schedules.len().saturating_sub(1),
                            milestones.len()
                        ),
                    );
                }
                if schedules
                    .iter()
                    .any(|s| matches!(s, Schedule::Plateau(_) | Schedule::Sequential { .. }))
                {
                    return bad(
                        "schedules",
                        "cannot hold ReduceLROnPlateau or another SequentialLR".into(),
                    );
                }
                schedules.iter().try_for_each(Schedule::validate)
            }
            _ => Ok(()),
        }
    }

    /// The rate at index `t` for a base rate `base` (closed forms; not for the plateau).
    pub(super) fn lr(&self, base: f64, t: usize) -> Result<f64> {
        let tf = t as f64;
        Ok(match self {
            Schedule::Step(s) => base * s.gamma.powi((t / s.step_size) as i32),
            Schedule::MultiStep(s) => {
                base * s
                    .gamma
                    .powi(s.milestones.iter().filter(|&&m| m <= t).count() as i32)
            }
            Schedule::Exponential(s) => base * s.gamma.powi(t as i32),
            Schedule::CosineAnnealing(s) => {
                let cos = (std::f64::consts::PI * tf / s.t_max as f64).cos();
                s.eta_min + (base - s.eta_min) * (1.0 + cos) / 2.0
            }
            Schedule::Linear(s) => {
                let done = t.min(s.total_iters) as f64 / s.total_iters.max(1) as f64;
                base * (s.start_factor + (s.end_factor - s.start_factor) * done)
            }
            Schedule::OneCycle(s) => one_cycle(s, t)?.0,
            Schedule::Plateau(_) => base,
            Schedule::Sequential {
                schedules,
                milestones,
            } => {
                let i = milestones.iter().filter(|&&m| m <= t).count();
                let start = if i == 0 { 0 } else { milestones[i - 1] };
                schedules[i].lr(base, t - start)?
            }
        })
    }
}

/// `OneCycleLR`'s rate and momentum at step `t`.
pub(super) fn one_cycle(s: &OneCycleLR, t: usize) -> Result<(f64, f64)> {
    if t >= s.total_steps {
        return Err(Error::config(
            "OneCycleLR.total_steps",
            format!(
                "the scheduler was stepped {} times but total_steps is {}: raise total_steps to the number of optimizer steps of the run",
                t + 1,
                s.total_steps
            ),
        ));
    }
    let initial = s.max_lr / s.div_factor;
    let min = initial / s.final_div_factor;
    let total = s.total_steps as f64;
    let up_end = s.pct_start * total - 1.0;
    // (end step, start lr, end lr, start momentum, end momentum)
    let phases: Vec<(f64, f64, f64, f64, f64)> = if s.three_phase {
        vec![
            (up_end, initial, s.max_lr, s.max_momentum, s.base_momentum),
            (
                2.0 * s.pct_start * total - 2.0,
                s.max_lr,
                initial,
                s.base_momentum,
                s.max_momentum,
            ),
            (total - 1.0, initial, min, s.max_momentum, s.max_momentum),
        ]
    } else {
        vec![
            (up_end, initial, s.max_lr, s.max_momentum, s.base_momentum),
            (total - 1.0, s.max_lr, min, s.base_momentum, s.max_momentum),
        ]
    };
    let anneal = |start: f64, end: f64, pct: f64| match s.anneal_strategy {
        Anneal::Cos => end + (start - end) / 2.0 * ((std::f64::consts::PI * pct).cos() + 1.0),
        Anneal::Linear => (end - start) * pct + start,
    };
    let step = t as f64;
    let mut start_step = 0.0;
    for (i, &(end_step, lr0, lr1, m0, m1)) in phases.iter().enumerate() {
        if step <= end_step || i == phases.len() - 1 {
            let pct = (step - start_step) / (end_step - start_step);
            return Ok((anneal(lr0, lr1, pct), anneal(m0, m1, pct)));
        }
        start_step = end_step;
    }
    Ok((initial, s.max_momentum))
}
