//! The processes of a run as user code sees them ([`Ranks`]): which one this is, and the
//! collectives a prediction writer or a tuning callback needs to agree with the others.

use super::Collective;
use crate::{Error, Result};

/// The processes of the run, as a prediction writer or a callback's trial sees them: who it
/// is, the rows of all, rank 0's values.
pub struct Ranks<'a> {
    pub(crate) collective: &'a dyn Collective,
}

impl Ranks<'_> {
    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.collective.rank()
    }
    /// How many processes the run has.
    pub fn world_size(&self) -> usize {
        self.collective.world_size()
    }
    /// `values` as rank 0 has them (of any length), on every rank: what every rank takes of
    /// a result each computed on its own (as Lightning broadcasts its tuners' results).
    pub fn from_rank_zero(&self, values: &[f64]) -> Result<Vec<f64>> {
        let mut bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.collective.broadcast(0, &mut bytes)?;
        let floats = bytes.chunks_exact(8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            f64::from_le_bytes(a)
        });
        Ok(floats.collect())
    }
    /// Every rank's `(dataset index, row)`s, on every rank, in dataset order, each index once
    /// (the distributed sampler pads a rank's share with samples another rank has too).
    pub fn gather_rows(&self, rows: &[(usize, Vec<f64>)]) -> Result<Vec<(usize, Vec<f64>)>> {
        // One stream of numbers per rank: [count, (index, width, values...)...], padded to the
        // longest.
        let mut mine = vec![rows.len() as f64];
        for (index, row) in rows {
            mine.extend([*index as f64, row.len() as f64]);
            mine.extend(row);
        }
        let world = self.world_size();
        let mut lengths = vec![0.0; world];
        self.collective
            .all_gather_f64(&[mine.len() as f64], &mut lengths)?;
        let longest = lengths.iter().fold(0.0f64, |a, &b| a.max(b)) as usize;
        mine.resize(longest, 0.0);
        let mut all = vec![0.0; longest * world];
        self.collective.all_gather_f64(&mine, &mut all)?;
        let mut gathered: Vec<(usize, Vec<f64>)> = Vec::new();
        for stream in all.chunks(longest.max(1)) {
            let mut at = 1;
            let count = stream.first().copied().unwrap_or(0.0) as usize;
            for _ in 0..count {
                let (index, width) = match stream.get(at..at + 2) {
                    Some(&[i, w]) => (i as usize, w as usize),
                    _ => return Err(Error::msg("a rank sent a malformed prediction row")),
                };
                let row = stream
                    .get(at + 2..at + 2 + width)
                    .ok_or_else(|| Error::msg("a rank sent a malformed prediction row"))?;
                gathered.push((index, row.to_vec()));
                at += 2 + width;
            }
        }
        gathered.sort_by_key(|(index, _)| *index);
        gathered.dedup_by_key(|(index, _)| *index);
        Ok(gathered)
    }
}
