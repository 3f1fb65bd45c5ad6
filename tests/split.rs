//! `stratified_split` reproduces scikit-learn's `train_test_split(..., stratify=y)`.
//!
//! The expected indices were computed once with scikit-learn 1.9.1 on NumPy 2.4.6:
//! `train_test_split(np.arange(150), test_size=0.2, random_state=42, stratify=load_iris().target)`
//! and, for an unbalanced case whose allocation needs tie-breaking,
//! `train_test_split(np.arange(25), test_size=0.3, random_state=7, stratify=[0]*7+[1]*5+[2]*9+[3]*4)`.

use fulmen::data::{random_split, stratified_split};

#[test]
fn iris_split_matches_scikit_learn() {
    let labels: Vec<usize> = fulmen::data::iris::bundled()
        .iter()
        .map(|(_, y)| y.index())
        .collect();
    let (train, test) = stratified_split((0..150).collect(), &labels, 0.2, 42).unwrap();
    let expected_test = [
        38, 127, 57, 93, 42, 56, 22, 20, 147, 84, 107, 141, 104, 51, 7, 49, 14, 69, 63, 138, 10,
        140, 58, 134, 132, 77, 75, 18, 116, 28,
    ];
    assert_eq!(test, expected_test);
    assert_eq!(&train[..10], &[8, 106, 76, 9, 89, 146, 94, 133, 135, 117]);
    assert_eq!(&train[110..], &[27, 128, 62, 61, 11, 37, 2, 33, 52, 3]);
    for class in 0..3 {
        assert_eq!(test.iter().filter(|&&i| labels[i] == class).count(), 10);
    }
}

#[test]
fn unbalanced_split_matches_scikit_learn() {
    let labels: Vec<usize> = [vec![0; 7], vec![1; 5], vec![2; 9], vec![3; 4]].concat();
    let (train, test) = stratified_split((0..25).collect(), &labels, 0.3, 7).unwrap();
    assert_eq!(test, [8, 18, 4, 19, 20, 1, 24, 7]);
    assert_eq!(
        train,
        [11, 6, 17, 15, 3, 5, 23, 0, 14, 2, 22, 9, 16, 13, 10, 21, 12]
    );
}

#[test]
fn bad_split_settings_are_refused() {
    let labels = vec![0, 0, 1, 1];
    for bad in [0.0, 1.0, -0.5, f64::NAN] {
        let err = stratified_split(vec![1, 2, 3, 4], &labels, bad, 0).unwrap_err();
        assert!(err.to_string().contains("test_size"), "{err}");
    }
    let err = stratified_split(vec![1, 2, 3], &[0, 0, 1], 0.5, 0).unwrap_err();
    assert!(
        err.to_string().contains("class 1 has a single member"),
        "{err}"
    );
    let err = stratified_split(vec![1, 2], &[0], 0.5, 0).unwrap_err();
    assert!(err.to_string().contains("1 labels for 2 items"), "{err}");
    let err = stratified_split(vec![1, 2, 3, 4], &labels, 0.5, 1 << 40).unwrap_err();
    assert!(err.to_string().contains("random_state"), "{err}");
}

#[test]
fn random_split_partitions_every_item_once() {
    let (train, test) = random_split((0..100).collect::<Vec<u32>>(), 0.25, 3).unwrap();
    assert_eq!((train.len(), test.len()), (75, 25));
    let mut all: Vec<u32> = train.into_iter().chain(test).collect();
    all.sort();
    assert_eq!(all, (0..100).collect::<Vec<_>>());
}
