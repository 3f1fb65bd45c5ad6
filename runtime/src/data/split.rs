use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::{Error, Result};

/// Splits `items` into (train, test) keeping each class's share in both parts, like
/// scikit-learn's `train_test_split(..., test_size, stratify=labels, random_state=seed)`:
/// the test part holds `ceil(test_size * n)` items, allocated to classes in proportion to
/// their counts (largest remainders first), each class shuffled with `seed`.
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
    let classes = labels.iter().copied().max().map_or(0, |m| m + 1);
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        members[l].push(i);
    }
    // Proportional allocation, remainders to the classes with the largest fractional parts.
    let exact: Vec<f64> = members
        .iter()
        .map(|m| n_test as f64 * m.len() as f64 / n as f64)
        .collect();
    let mut take: Vec<usize> = exact.iter().map(|e| e.floor() as usize).collect();
    let mut by_remainder: Vec<usize> = (0..classes).collect();
    by_remainder.sort_by(|&a, &b| {
        (exact[b] - exact[b].floor())
            .total_cmp(&(exact[a] - exact[a].floor()))
            .then(a.cmp(&b))
    });
    let mut left = n_test - take.iter().sum::<usize>();
    for &c in by_remainder.iter().cycle().take(classes * 2) {
        if left == 0 {
            break;
        }
        if take[c] < members[c].len() {
            take[c] += 1;
            left -= 1;
        }
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut is_test = vec![false; n];
    for (c, m) in members.iter_mut().enumerate() {
        m.shuffle(&mut rng);
        for &i in &m[..take[c]] {
            is_test[i] = true;
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    Ok(partition(items, &order, |i| is_test[i]))
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

fn partition<T>(items: Vec<T>, order: &[usize], is_test: impl Fn(usize) -> bool) -> (Vec<T>, Vec<T>) {
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
