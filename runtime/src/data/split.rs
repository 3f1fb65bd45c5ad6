use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::{Error, Result};

/// NumPy's legacy `RandomState`: MT19937 seeded as `np.random.RandomState(seed)`, with the
/// bounded draws and shuffles scikit-learn's splitters consume.
struct NumpyRandomState(rand_mt::Mt);

impl NumpyRandomState {
    fn new(seed: u64) -> Result<Self> {
        let seed = u32::try_from(seed).map_err(|_| {
            Error::config(
                "random_state",
                format!("{seed} is not between 0 and 2**32 - 1 (NumPy's seed range)"),
            )
        })?;
        Ok(Self(rand_mt::Mt::new(seed)))
    }

    /// `random_interval`: uniform in `0..=max` by masked rejection.
    fn interval(&mut self, max: usize) -> usize {
        if max == 0 {
            return 0;
        }
        let mut mask = max as u64;
        for shift in [1, 2, 4, 8, 16, 32] {
            mask |= mask >> shift;
        }
        loop {
            let value = if max as u64 <= 0xffff_ffff {
                u64::from(self.0.next_u32()) & mask
            } else {
                self.0.next_u64() & mask
            };
            if value <= max as u64 {
                return value as usize;
            }
        }
    }

    /// `RandomState.shuffle` of a 1-d array (Fisher-Yates from the end).
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.interval(i);
            items.swap(i, j);
        }
    }

    /// `RandomState.permutation(n)`.
    fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        self.shuffle(&mut p);
        p
    }
}

/// scikit-learn's `_approximate_mode`: per-class draws proportional to `counts`, remainders
/// given to the largest fractional parts, ties broken with `rng` as scikit-learn does.
fn approximate_mode(counts: &[usize], draws: usize, rng: &mut NumpyRandomState) -> Vec<usize> {
    let total: usize = counts.iter().sum();
    let continuous: Vec<f64> = counts
        .iter()
        .map(|&c| c as f64 / total as f64 * draws as f64)
        .collect();
    let mut floored: Vec<usize> = continuous.iter().map(|c| c.floor() as usize).collect();
    let mut need = draws.saturating_sub(floored.iter().sum());
    if need > 0 {
        let remainder: Vec<f64> = continuous
            .iter()
            .zip(&floored)
            .map(|(c, &f)| c - f as f64)
            .collect();
        let mut values = remainder.clone();
        values.sort_by(|a, b| b.total_cmp(a));
        values.dedup();
        for value in values {
            let inds: Vec<usize> = (0..remainder.len())
                .filter(|&i| remainder[i] == value)
                .collect();
            let add_now = inds.len().min(need);
            // rng.choice(inds, size=add_now, replace=False) = inds[permutation(len)[:add_now]]
            for &k in &rng.permutation(inds.len())[..add_now] {
                floored[inds[k]] += 1;
            }
            need -= add_now;
            if need == 0 {
                break;
            }
        }
    }
    floored
}

/// Splits `items` into (train, test) keeping each class's share in both parts: exactly
/// scikit-learn's `train_test_split(items, test_size=test_size, stratify=labels,
/// random_state=seed)` (its `StratifiedShuffleSplit` on NumPy's MT19937), so the tutorial's
/// split of Iris is the same split here, in the same order.
///
/// ```
/// use fulmen::data::stratified_split;
/// let labels: Vec<usize> = (0..150).map(|i| i / 50).collect();
/// let (train, test) = stratified_split((0..150).collect::<Vec<_>>(), &labels, 0.2, 42).unwrap();
/// assert_eq!((train.len(), test.len()), (120, 30));
/// assert_eq!(test.iter().filter(|&&i| labels[i] == 0).count(), 10);
/// ```
pub fn stratified_split<T>(
    items: Vec<T>,
    labels: &[usize],
    test_size: f64,
    seed: u64,
) -> Result<(Vec<T>, Vec<T>)> {
    let n = items.len();
    if labels.len() != n {
        return Err(Error::config(
            "stratify",
            format!("{} labels for {n} items", labels.len()),
        ));
    }
    let n_test = test_count(n, test_size)?;
    let n_train = n - n_test;
    // np.unique(y, return_inverse=True): classes are the distinct labels, sorted.
    let mut classes: Vec<usize> = labels.to_vec();
    classes.sort_unstable();
    classes.dedup();
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); classes.len()];
    for (i, l) in labels.iter().enumerate() {
        if let Ok(c) = classes.binary_search(l) {
            members[c].push(i);
        }
    }
    if let Some(c) = members.iter().position(|m| m.len() < 2) {
        return Err(Error::config(
            "stratify",
            format!(
                "class {} has a single member; each class needs at least 2 to be split",
                classes[c]
            ),
        ));
    }
    if classes.len() > n_test || classes.len() > n_train {
        return Err(Error::config(
            "test_size",
            format!(
                "a stratified split of {n} items into {n_train} + {n_test} cannot hold all {} classes on both sides",
                classes.len()
            ),
        ));
    }
    let counts: Vec<usize> = members.iter().map(Vec::len).collect();
    let mut rng = NumpyRandomState::new(seed)?;
    let n_i = approximate_mode(&counts, n_train, &mut rng);
    let remaining: Vec<usize> = counts.iter().zip(&n_i).map(|(c, t)| c - t).collect();
    let t_i = approximate_mode(&remaining, n_test, &mut rng);
    let (mut train, mut test) = (Vec::with_capacity(n_train), Vec::with_capacity(n_test));
    for (c, m) in members.iter().enumerate() {
        let perm = rng.permutation(m.len());
        let picked: Vec<usize> = perm.iter().map(|&p| m[p]).collect();
        train.extend_from_slice(&picked[..n_i[c]]);
        test.extend_from_slice(&picked[n_i[c]..n_i[c] + t_i[c]]);
    }
    rng.shuffle(&mut train);
    rng.shuffle(&mut test);
    let mut slots: Vec<Option<T>> = items.into_iter().map(Some).collect();
    let mut take =
        |idx: &[usize]| -> Vec<T> { idx.iter().filter_map(|&i| slots[i].take()).collect() };
    let train_items = take(&train);
    let test_items = take(&test);
    Ok((train_items, test_items))
}

/// Splits `items` at random into (train, test) with `ceil(test_size * n)` test items.
pub fn random_split<T>(items: Vec<T>, test_size: f64, seed: u64) -> Result<(Vec<T>, Vec<T>)> {
    let n = items.len();
    let n_test = test_count(n, test_size)?;
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    let test: std::collections::HashSet<usize> = order[..n_test].iter().copied().collect();
    Ok(partition(items, &order, |i| test.contains(&i)))
}

fn test_count(n: usize, test_size: f64) -> Result<usize> {
    if !(test_size > 0.0 && test_size < 1.0) {
        return Err(Error::config(
            "test_size",
            format!("{test_size} is not a fraction strictly between 0 and 1"),
        ));
    }
    let n_test = (test_size * n as f64).ceil() as usize;
    if n_test == 0 || n_test >= n {
        return Err(Error::config(
            "test_size",
            format!("{test_size} of {n} items leaves one side of the split empty"),
        ));
    }
    Ok(n_test)
}

fn partition<T>(
    items: Vec<T>,
    order: &[usize],
    is_test: impl Fn(usize) -> bool,
) -> (Vec<T>, Vec<T>) {
    let mut slots: Vec<Option<T>> = items.into_iter().map(Some).collect();
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for &i in order {
        if let Some(item) = slots[i].take() {
            if is_test(i) {
                test.push(item);
            } else {
                train.push(item);
            }
        }
    }
    (train, test)
}
