//! [`Layout`]: where a unit's parameters lie in its flat buffer, and which part each rank
//! holds.

use std::ops::Range;

/// A unit's trainable tensors laid end to end in walk order, padded with zeros to a multiple
/// of the world size and cut into one equal shard per rank. A tensor may straddle two ranks;
/// the padding is at the end of the last rank's shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Per tensor, its number of values.
    pub sizes: Vec<usize>,
    /// Values in every rank's shard.
    pub shard: usize,
    /// Ranks.
    pub world: usize,
}

impl Layout {
    /// The layout of tensors of `sizes` values over `world` ranks.
    pub fn new(sizes: Vec<usize>, world: usize) -> Self {
        let world = world.max(1);
        let total: usize = sizes.iter().sum();
        Self {
            shard: total.div_ceil(world),
            sizes,
            world,
        }
    }

    /// The values the tensors hold, without the padding.
    pub fn total(&self) -> usize {
        self.sizes.iter().sum()
    }

    /// The flat buffer's length: every rank's shard.
    pub fn padded(&self) -> usize {
        self.shard * self.world
    }

    /// The part of the flat buffer rank `rank` holds.
    pub fn range(&self, rank: usize) -> Range<usize> {
        rank * self.shard..(rank + 1) * self.shard
    }

    /// Each tensor's part of the flat buffer.
    pub fn tensors(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        self.sizes.iter().scan(0, |at, &n| {
            let r = *at..*at + n;
            *at += n;
            Some(r)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Layout;

    #[test]
    fn shards_are_equal_tensors_straddle_ranks_and_the_padding_is_at_the_end() {
        let l = Layout::new(vec![5, 3, 2], 3);
        assert_eq!((l.total(), l.shard, l.padded()), (10, 4, 12));
        assert_eq!(
            (0..3).map(|r| l.range(r)).collect::<Vec<_>>(),
            [0..4, 4..8, 8..12]
        );
        // The first tensor straddles ranks 0 and 1; the second lies in rank 1's shard.
        assert_eq!(l.tensors().collect::<Vec<_>>(), [0..5, 5..8, 8..10]);
        let one = Layout::new(vec![7], 1);
        assert_eq!((one.shard, one.padded()), (7, 7));
        let more_ranks_than_values = Layout::new(vec![2], 4);
        assert_eq!(
            (
                more_ranks_than_values.shard,
                more_ranks_than_values.padded()
            ),
            (1, 4)
        );
    }
}
