//! "Did you mean": the closest known name within a small edit distance.

/// Levenshtein distance between two short identifiers.
pub(crate) fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The known name closest to `name`, if it is close enough to be a typo.
pub(crate) fn closest<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (name.len() / 4).clamp(1, 3);
    known
        .into_iter()
        .map(|k| (distance(name, k), k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_typos_not_strangers() {
        let known = [
            "on_train_epoch_end",
            "on_train_epoch_start",
            "training_step",
        ];
        assert_eq!(
            super::closest("on_train_epoch_ned", known),
            Some("on_train_epoch_end")
        );
        assert_eq!(super::closest("traning_step", known), Some("training_step"));
        assert_eq!(super::closest("forward", known), None);
    }
}
