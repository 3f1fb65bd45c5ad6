//! 16-mixed's dynamic loss scale ([`LossScaler`]): what a step multiplies the loss by, and
//! what checkpoints keep of it.

use serde::{Deserialize, Serialize};

/// PyTorch's `GradScaler`: growth ×2 every 2000 good steps, backoff ×0.5 — but an initial
/// scale of 2^15, not 2^16: the scaled loss is stored in f16 here, whose largest value is
/// 65504, so 2^16 would overflow on the first step every time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossScaler {
    /// The current loss scale: the loss is multiplied by it before the backward pass.
    pub scale: f64,
    /// The scale is multiplied by this after `growth_interval` good steps in a row (`GradScaler`'s
    /// `growth_factor`, default 2).
    pub growth_factor: f64,
    /// The scale is multiplied by this after a step with a non-finite gradient (`GradScaler`'s
    /// `backoff_factor`, default 0.5).
    pub backoff_factor: f64,
    /// Good steps in a row before the scale grows (`GradScaler`'s `growth_interval`, default 2000).
    pub growth_interval: usize,
    growth_tracker: usize,
}

impl Default for LossScaler {
    fn default() -> Self {
        Self {
            scale: 32768.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
            growth_tracker: 0,
        }
    }
}

impl LossScaler {
    /// After an optimizer step: back off when it was skipped for a non-finite gradient, grow
    /// after `growth_interval` good steps in a row.
    pub fn update(&mut self, found_inf: bool) {
        if found_inf {
            self.scale *= self.backoff_factor;
            self.growth_tracker = 0;
        } else {
            self.growth_tracker += 1;
            if self.growth_tracker == self.growth_interval {
                self.scale *= self.growth_factor;
                self.growth_tracker = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scale_backs_off_on_overflow_and_grows_after_its_interval() {
        let mut s = LossScaler {
            growth_interval: 3,
            ..LossScaler::default()
        };
        s.update(true);
        assert_eq!(s.scale, 16384.0);
        s.update(false);
        s.update(false);
        assert_eq!(s.scale, 16384.0);
        s.update(false);
        assert_eq!(s.scale, 32768.0, "three good steps in a row");
        s.update(false);
        s.update(true);
        s.update(false);
        s.update(false);
        assert_eq!(s.scale, 16384.0, "an overflow restarts the count");
    }
}
