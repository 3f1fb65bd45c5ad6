//! Counts, means and co-moments of `k` variables as one state part
//! ([`Merge::Moments`](super::state::Merge::Moments)): `[n, mean₁ … mean_k, C₁₁, C₁₂ … C_kk]`, the co-moments
//! `C_ij = Σ (x_i − mean_i)(x_j − mean_j)` by rows of the upper triangle. A batch's are
//! computed in two passes and merged by Chan's formulas, so that variances and correlations of
//! values far from zero (targets around 10⁶) keep their digits, which raw sums of squares lose
//! to cancellation.

/// The length of the moments of `k` variables.
pub(crate) fn len(k: usize) -> usize {
    1 + k + k * (k + 1) / 2
}

/// How many variables moments of length `len` hold.
fn vars(len: usize) -> usize {
    (0..).find(|&k| self::len(k) >= len).unwrap_or(0)
}

/// Where `C_ij` (`i ≤ j`) of `k` variables lies.
fn at(k: usize, i: usize, j: usize) -> usize {
    // Rows 0..i hold k + (k-1) + … + (k-i+1) entries; row i starts at column i.
    1 + k + (i * k + j) - i * (i + 1) / 2
}

/// The moments of the columns (of one length) of a batch.
pub(crate) fn of(columns: &[Vec<f64>]) -> Vec<f64> {
    let k = columns.len();
    let mut m = vec![0.0; len(k)];
    let n = columns.first().map_or(0, Vec::len);
    if n == 0 {
        return m;
    }
    m[0] = n as f64;
    for (i, c) in columns.iter().enumerate() {
        m[1 + i] = c.iter().sum::<f64>() / n as f64;
    }
    for i in 0..k {
        for j in i..k {
            let (mi, mj) = (m[1 + i], m[1 + j]);
            m[at(k, i, j)] = (columns[i].iter().zip(&columns[j]))
                .map(|(a, b)| (a - mi) * (b - mj))
                .sum();
        }
    }
    m
}

/// `b` merged into `a` (both of the same variables): Chan, Golub and LeVeque's update.
pub(crate) fn merge(a: &mut [f64], b: &[f64]) {
    let (na, nb) = (a[0], b[0]);
    if nb == 0.0 {
        return;
    }
    if na == 0.0 {
        a.copy_from_slice(b);
        return;
    }
    let k = vars(a.len());
    let n = na + nb;
    let delta: Vec<f64> = (0..k).map(|i| b[1 + i] - a[1 + i]).collect();
    for i in 0..k {
        for j in i..k {
            let c = at(k, i, j);
            a[c] += b[c] + delta[i] * delta[j] * na * nb / n;
        }
    }
    for i in 0..k {
        a[1 + i] += delta[i] * nb / n;
    }
    a[0] = n;
}

/// Reads moments of `k` variables.
pub(crate) struct Moments<'a>(pub &'a [f64]);

impl Moments<'_> {
    /// How many rows.
    pub fn n(&self) -> f64 {
        self.0.first().copied().unwrap_or(0.0)
    }
    /// `C_ij`: Σ (x_i − mean_i)(x_j − mean_j).
    pub fn c(&self, i: usize, j: usize) -> f64 {
        let k = vars(self.0.len());
        let (i, j) = (i.min(j), i.max(j));
        self.0.get(at(k, i, j)).copied().unwrap_or(f64::NAN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upper_triangle_is_laid_out_row_by_row() {
        let k = 3;
        let order: Vec<usize> = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]
            .iter()
            .map(|&(i, j)| at(k, i, j))
            .collect();
        assert_eq!(order, [4, 5, 6, 7, 8, 9]);
        assert_eq!((len(3), vars(10)), (10, 3));
    }

    #[test]
    fn merged_batches_are_the_moments_of_them_all() {
        let x: Vec<f64> = (0..50).map(|i| 1e6 + (i as f64 * 0.37).sin()).collect();
        let y: Vec<f64> = (0..50).map(|i| -3e5 + (i as f64 * 0.11).cos()).collect();
        let whole = of(&[x.clone(), y.clone()]);
        let mut parts = of(&[x[..17].to_vec(), y[..17].to_vec()]);
        merge(&mut parts, &of(&[x[17..].to_vec(), y[17..].to_vec()]));
        merge(&mut parts, &of(&[vec![], vec![]]));
        // Values around 10⁶ hold their deviations to about 10⁻¹⁰ each.
        for (a, b) in parts.iter().zip(&whole) {
            assert!(
                (a - b).abs() <= 1e-7 * b.abs().max(1.0),
                "{parts:?} vs {whole:?}"
            );
        }
    }
}
