//! What a metric keeps ([`State`]): named parts of numbers, each with the way it adds up over
//! batches and over ranks ([`Merge`]): counts and sums add, scores concatenate, extremes keep
//! the extreme. Every number is an `f64`: counts stay exact up to 2⁵³, sums of 10 M values
//! keep their digits. One [`State::sync`] per compute gathers every rank's.

use serde::{Deserialize, Serialize};

use super::moments;
use crate::distributed::Collective;
use crate::{Error, Result};

/// How a part of a state adds up (torchmetrics' `dist_reduce_fx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Merge {
    /// Elementwise sums: counts, sums of values.
    Sum,
    /// One after the other: every score seen (exact curves).
    Cat,
    /// Elementwise largest.
    Max,
    /// Elementwise smallest.
    Min,
    /// Counts, means and co-moments of some variables (see `moments.rs`), merged by Chan's
    /// formulas: variances and correlations without the cancellation of raw sums of squares.
    Moments,
}

impl Merge {
    /// The value a fresh part holds (or, for [`Merge::Cat`], nothing).
    fn empty(self) -> f64 {
        match self {
            Merge::Sum | Merge::Cat | Merge::Moments => 0.0,
            Merge::Max => f64::NEG_INFINITY,
            Merge::Min => f64::INFINITY,
        }
    }
}

/// One named part of a state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Part {
    /// Its name (what a checkpoint calls it).
    pub name: String,
    /// How it adds up.
    pub merge: Merge,
    /// Its numbers.
    #[serde(with = "crate::checkpoint::float::many")]
    pub values: Vec<f64>,
}

/// A metric's state: its parts, in a fixed order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    parts: Vec<Part>,
}

impl State {
    /// Fresh parts: `(name, merge, length)` each (the length of a [`Merge::Cat`] part is 0).
    pub fn new(parts: &[(&str, Merge, usize)]) -> Self {
        let parts = parts
            .iter()
            .map(|&(name, merge, len)| Part {
                name: name.to_string(),
                merge,
                values: match merge {
                    Merge::Cat => Vec::new(),
                    m => vec![m.empty(); len],
                },
            })
            .collect();
        Self { parts }
    }

    /// The parts, in order.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// Part `i`'s numbers.
    pub fn get(&self, i: usize) -> &[f64] {
        self.parts.get(i).map_or(&[], |p| &p.values)
    }

    /// Part `i`'s numbers, to write (`i` is one of the metric's own parts).
    pub fn get_mut(&mut self, i: usize) -> &mut Vec<f64> {
        &mut self.parts[i].values
    }

    /// Fresh parts of the same names and lengths (what one batch's state starts from), without
    /// copying the numbers.
    pub fn emptied(&self) -> Self {
        let parts: Vec<_> = (self.parts.iter())
            .map(|p| (p.name.as_str(), p.merge, p.values.len()))
            .collect();
        Self::new(&parts)
    }

    /// Back to fresh parts of the same lengths.
    pub fn reset(&mut self) {
        *self = self.emptied();
    }

    /// Adds `other` (the same parts, as another batch or rank made them) into this one.
    pub fn merge(&mut self, other: &State) -> Result<()> {
        self.check_like(other)?;
        for (p, q) in self.parts.iter_mut().zip(&other.parts) {
            match p.merge {
                Merge::Cat => p.values.extend_from_slice(&q.values),
                Merge::Sum => p
                    .values
                    .iter_mut()
                    .zip(&q.values)
                    .for_each(|(a, b)| *a += b),
                Merge::Max => {
                    (p.values.iter_mut().zip(&q.values)).for_each(|(a, b)| *a = a.max(*b))
                }
                Merge::Min => {
                    (p.values.iter_mut().zip(&q.values)).for_each(|(a, b)| *a = a.min(*b))
                }
                Merge::Moments => moments::merge(&mut p.values, &q.values),
            }
        }
        Ok(())
    }

    /// Takes `saved` (from a checkpoint) as this state, if it has the same parts.
    pub fn load(&mut self, saved: State) -> Result<()> {
        self.check_like(&saved)?;
        *self = saved;
        Ok(())
    }

    /// Every rank's state added up, on every rank (this rank's is left as it is): one sum
    /// over every summed part, one max over every extreme, a gather per concatenated part and
    /// per moments part (merged in rank order).
    pub fn sync(&self, c: &dyn Collective) -> Result<State> {
        let mut all = self.clone();
        if c.world_size() == 1 {
            return Ok(all);
        }
        let sums = of_kind(&all, Merge::Sum);
        let extremes = [of_kind(&all, Merge::Max), of_kind(&all, Merge::Min)].concat();
        let cats = of_kind(&all, Merge::Cat);
        let mut flat: Vec<f64> = sums
            .iter()
            .flat_map(|&i| all.parts[i].values.clone())
            .collect();
        if !flat.is_empty() {
            c.all_reduce_sum_f64(&mut flat)?;
        }
        scatter(&mut all, &sums, &flat);
        // Max as max, min as max of the negation.
        let sign = |p: &Part| if p.merge == Merge::Min { -1.0 } else { 1.0 };
        let mut flat: Vec<f64> = (extremes.iter())
            .flat_map(|&i| {
                let p = &all.parts[i];
                p.values
                    .iter()
                    .map(move |v| v * sign(p))
                    .collect::<Vec<_>>()
            })
            .collect();
        if !flat.is_empty() {
            c.all_reduce_max_f64(&mut flat)?;
        }
        for &i in &extremes {
            let s = sign(&all.parts[i]);
            let n = all.parts[i].values.len();
            let (now, rest) = flat.split_at(n);
            all.parts[i].values = now.iter().map(|v| v * s).collect();
            flat = rest.to_vec();
        }
        for &i in &cats {
            all.parts[i].values = gather(c, &all.parts[i].values)?;
        }
        for i in of_kind(&all, Merge::Moments) {
            let mine = std::mem::take(&mut all.parts[i].values);
            let mut every = vec![0.0; mine.len() * c.world_size()];
            c.all_gather_f64(&mine, &mut every)?;
            let mut merged = vec![0.0; mine.len()];
            for rank in every.chunks(mine.len().max(1)) {
                moments::merge(&mut merged, rank);
            }
            all.parts[i].values = merged;
        }
        Ok(all)
    }

    /// An error unless `other` has the same parts (names, merges, and lengths but for
    /// concatenated ones).
    fn check_like(&self, other: &State) -> Result<()> {
        let same = self.parts.len() == other.parts.len()
            && self.parts.iter().zip(&other.parts).all(|(p, q)| {
                p.name == q.name
                    && p.merge == q.merge
                    && (p.merge == Merge::Cat || p.values.len() == q.values.len())
            });
        if same {
            return Ok(());
        }
        let names = |s: &State| {
            (s.parts.iter())
                .map(|p| format!("{} ({:?}, {})", p.name, p.merge, p.values.len()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        Err(Error::msg(format!(
            "a metric's state does not fit: it has [{}], the other [{}] (a metric of another kind or number of classes)",
            names(self),
            names(other)
        )))
    }
}

/// The parts of `state` that merge as `m`.
fn of_kind(state: &State, m: Merge) -> Vec<usize> {
    (state.parts.iter().enumerate())
        .filter(|(_, p)| p.merge == m)
        .map(|(i, _)| i)
        .collect()
}

/// The consecutive runs of `flat` back into the parts `at`.
fn scatter(state: &mut State, at: &[usize], flat: &[f64]) {
    let mut values = flat.iter();
    for &i in at {
        for (v, &x) in state.parts[i].values.iter_mut().zip(values.by_ref()) {
            *v = x;
        }
    }
}

/// Every rank's `mine` one after the other, rank 0's first (lengths may differ).
fn gather(c: &dyn Collective, mine: &[f64]) -> Result<Vec<f64>> {
    let world = c.world_size();
    let mut lengths = vec![0.0; world];
    c.all_gather_f64(&[mine.len() as f64], &mut lengths)?;
    let longest = lengths.iter().fold(0.0f64, |a, &b| a.max(b)) as usize;
    let mut padded = mine.to_vec();
    padded.resize(longest, 0.0);
    let mut all = vec![0.0; longest * world];
    c.all_gather_f64(&padded, &mut all)?;
    let mut out = Vec::new();
    for (r, chunk) in all.chunks(longest.max(1)).enumerate().take(world) {
        out.extend_from_slice(&chunk[..lengths[r] as usize]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_merge_by_their_kind_and_reset_fresh() {
        let parts = [
            ("n", Merge::Sum, 2),
            ("s", Merge::Cat, 0),
            ("hi", Merge::Max, 1),
            ("lo", Merge::Min, 1),
        ];
        let mut a = State::new(&parts);
        let mut b = State::new(&parts);
        *a.get_mut(0) = vec![1.0, 2.0];
        *a.get_mut(1) = vec![0.5];
        *a.get_mut(2) = vec![3.0];
        *a.get_mut(3) = vec![3.0];
        *b.get_mut(0) = vec![10.0, 20.0];
        *b.get_mut(1) = vec![0.25, 0.75];
        *b.get_mut(2) = vec![-1.0];
        *b.get_mut(3) = vec![-1.0];
        a.merge(&b).unwrap();
        assert_eq!(a.get(0), [11.0, 22.0]);
        assert_eq!(a.get(1), [0.5, 0.25, 0.75]);
        assert_eq!((a.get(2), a.get(3)), (&[3.0][..], &[-1.0][..]));
        a.reset();
        assert_eq!(a, State::new(&parts));
        let other = State::new(&[("n", Merge::Sum, 3)]);
        let err = a.merge(&other).unwrap_err().to_string();
        assert!(err.contains("does not fit"), "{err}");
    }

    #[test]
    fn one_rank_syncs_to_itself() {
        let mut a = State::new(&[("n", Merge::Sum, 1), ("s", Merge::Cat, 0)]);
        *a.get_mut(0) = vec![4.0];
        *a.get_mut(1) = vec![1.0, 2.0];
        assert_eq!(a.sync(&crate::distributed::Single).unwrap(), a);
    }
}
