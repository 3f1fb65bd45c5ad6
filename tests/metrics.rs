//! The classification metrics against scikit-learn (`tests/fixtures/classification.json`,
//! made by `classification.py` there): every metric and average over uneven batches (an empty
//! one included), on random and adversarial inputs, to 1e-9; updates that do not fit the task
//! are named errors that add nothing; states add up exactly however the data is split.

use fulmen::metrics::{
    Accuracy, Average, ConfusionMatrix, F1Score, FBetaScore, HostPreds, HostTargets, Metric,
    Precision, Recall, Specificity, State,
};
use fulmen::serde_json::Value;

fn cases() -> Vec<Value> {
    let all: Value =
        fulmen::serde_json::from_str(include_str!("fixtures/classification.json")).unwrap();
    all["cases"].as_array().unwrap().clone()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// Rows `a..b` of a case's scores and targets.
fn batch(case: &Value, a: usize, b: usize) -> (HostPreds, HostTargets) {
    let width = case["width"].as_u64().unwrap() as usize;
    let rows = &case["scores"].as_array().unwrap()[a..b];
    let targets = &case["target"].as_array().unwrap()[a..b];
    let (cols, values): (usize, Vec<f64>) = match case["task"].as_str().unwrap() {
        "binary" => (1, rows.iter().map(|v| v.as_f64().unwrap()).collect()),
        _ => (width, rows.iter().flat_map(f64s).collect()),
    };
    let preds = HostPreds::scores(b - a, cols, values).unwrap();
    let (tcols, tvalues): (usize, Vec<f64>) = match case["task"].as_str().unwrap() {
        "multilabel" => (width, targets.iter().flat_map(f64s).collect()),
        _ => (1, targets.iter().map(|v| v.as_f64().unwrap()).collect()),
    };
    let target = HostTargets {
        rows: b - a,
        cols: tcols,
        values: tvalues,
    };
    (preds, target)
}

/// Each metric of the fixtures, set up for `case` with `average`.
macro_rules! for_each_metric {
    ($case:expr, $average:expr, |$name:ident, $metric:ident| $body:block) => {{
        let case = $case;
        let width = case["width"].as_u64().unwrap() as usize;
        let top_k = case["top_k"].as_u64().unwrap() as usize;
        let threshold = case["threshold"].as_f64().unwrap();
        let ignore = case["ignore_index"].as_i64();
        macro_rules! set_up {
            ($ty:ident) => {{
                let m = match case["task"].as_str().unwrap() {
                    "binary" => $ty::binary(),
                    "multiclass" => $ty::multiclass(width).top_k(top_k),
                    _ => $ty::multilabel(width),
                };
                let m = m.average($average).threshold(threshold);
                match ignore {
                    Some(i) => m.ignore_index(i),
                    None => m,
                }
            }};
        }
        {
            let $name = "accuracy";
            let mut $metric = set_up!(Accuracy);
            $body
        }
        {
            let $name = "precision";
            let mut $metric = set_up!(Precision);
            $body
        }
        {
            let $name = "recall";
            let mut $metric = set_up!(Recall);
            $body
        }
        {
            let $name = "f1";
            let mut $metric = set_up!(F1Score);
            $body
        }
        {
            let $name = "fbeta2";
            let mut $metric = set_up!(FBetaScore).beta(2.0).unwrap();
            $body
        }
        {
            let $name = "specificity";
            let mut $metric = set_up!(Specificity);
            $body
        }
    }};
}

fn average(name: &str) -> Average {
    match name {
        "micro" => Average::Micro,
        "macro" => Average::Macro,
        _ => Average::Weighted,
    }
}

#[test]
fn every_counting_metric_matches_scikit_learn_over_uneven_batches() {
    let mut checked = 0;
    for case in cases() {
        let name = case["name"].as_str().unwrap().to_string();
        let batches: Vec<(usize, usize)> = case["batches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b[0].as_u64().unwrap() as usize,
                    b[1].as_u64().unwrap() as usize,
                )
            })
            .collect();
        for (avg, expected) in case["expected"].as_object().unwrap() {
            for_each_metric!(&case, average(avg), |metric_name, metric| {
                for &(a, b) in &batches {
                    let (p, t) = batch(&case, a, b);
                    metric.update(&p, &t).unwrap();
                }
                let got = metric.compute().unwrap();
                let want = expected[metric_name].as_f64().unwrap();
                assert!(
                    (got - want).abs() < 1e-9,
                    "{name}, {avg} {metric_name}: {got} vs scikit-learn's {want}"
                );
                checked += 1;
            });
        }
    }
    assert!(checked > 150, "{checked} values checked");
}

#[test]
fn the_confusion_matrix_matches_scikit_learn() {
    for case in cases() {
        let name = case["name"].as_str().unwrap();
        let width = case["width"].as_u64().unwrap() as usize;
        let mut cm = match case["task"].as_str().unwrap() {
            "binary" => ConfusionMatrix::binary(),
            "multiclass" => ConfusionMatrix::multiclass(width),
            _ => ConfusionMatrix::multilabel(width),
        }
        .threshold(case["threshold"].as_f64().unwrap());
        if let Some(i) = case["ignore_index"].as_i64() {
            cm = cm.ignore_index(i);
        }
        for b in case["batches"].as_array().unwrap() {
            let (a, b) = (
                b[0].as_u64().unwrap() as usize,
                b[1].as_u64().unwrap() as usize,
            );
            let (p, t) = batch(&case, a, b);
            cm.update(&p, &t).unwrap();
        }
        let want: Vec<Vec<f64>> = match case["task"].as_str().unwrap() {
            "multilabel" => {
                let got = cm.per_label();
                let want: Vec<Vec<Vec<f64>>> = case["confusion"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m.as_array().unwrap().iter().map(f64s).collect())
                    .collect();
                assert_eq!(got, want, "{name}");
                continue;
            }
            _ => case["confusion"]
                .as_array()
                .unwrap()
                .iter()
                .map(f64s)
                .collect(),
        };
        assert_eq!(cm.matrix().unwrap(), want, "{name}");
    }
}

#[test]
fn an_update_that_does_not_fit_is_named_and_adds_nothing() {
    let mut acc = Accuracy::multiclass(3);
    acc.update(&[0usize, 1][..], &[0usize, 1][..]).unwrap();
    let before = acc.tracked().total().clone();
    let err = acc
        .update(&[0usize, 1][..], &[0usize, 3][..])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("target 3 in row 1") && err.contains("0..3"),
        "{err}"
    );
    let err = acc
        .update(&[0usize][..], &[0usize, 1][..])
        .unwrap_err()
        .to_string();
    assert!(err.contains("1 predictions for 2 targets"), "{err}");
    let nan = HostPreds::scores(1, 3, vec![0.1, f64::NAN, 0.3]).unwrap();
    let err = acc.update(&nan, &[0usize][..]).unwrap_err().to_string();
    assert!(err.contains("row 0, column 1 is NaN"), "{err}");
    let err = Accuracy::multiclass(3)
        .top_k(4)
        .update(&nan, &[0usize][..])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Accuracy.top_k") && err.contains("1..=3"),
        "{err}"
    );
    assert_eq!(acc.tracked().total(), &before, "nothing was added");
    assert_eq!(acc.compute().unwrap(), 1.0);
    let err = FBetaScore::binary().beta(0.0).unwrap_err().to_string();
    assert!(err.contains("FBetaScore.beta"), "{err}");
    // Targets built by hand that hold fewer values than they say.
    let short = HostTargets {
        rows: 4,
        cols: 1,
        values: vec![0.0; 3],
    };
    let four = [0usize, 1, 2, 0];
    let err = acc.update(&four[..], &short).unwrap_err().to_string();
    assert!(err.contains("4 rows × 1 columns hold 3 values"), "{err}");
    let mut auroc = fulmen::metrics::Auroc::multiclass(3).thresholds(10);
    let scores = HostPreds::scores(4, 3, vec![0.5f32; 12]).unwrap();
    let err = auroc.update(&scores, &short).unwrap_err().to_string();
    assert!(err.contains("hold 3 values"), "{err}");
}

#[test]
fn states_add_up_exactly_however_the_samples_are_split() {
    // 10 M samples in batches of 100 k: the counts stay exact (f64 holds them to 2^53).
    let mut acc = Accuracy::multiclass(4).average(Average::Macro);
    let target: Vec<usize> = (0..100_000).map(|i| (i * 7 + i / 3) % 4).collect();
    let preds: Vec<usize> = (0..100_000).map(|i| (i * 5 + i / 7) % 4).collect();
    let mut one = acc.clone();
    one.update(&preds, &target).unwrap();
    for _ in 0..100 {
        acc.update(&preds, &target).unwrap();
    }
    assert!((acc.compute().unwrap() - one.compute().unwrap()).abs() < 1e-12);
    let counts: f64 = acc.tracked().total().get(0).iter().sum();
    assert_eq!(
        counts,
        100.0 * one.tracked().total().get(0).iter().sum::<f64>()
    );
    // Two halves merged are the whole.
    let (mut a, mut b, mut whole) = (
        Recall::multiclass(4),
        Recall::multiclass(4),
        Recall::multiclass(4),
    );
    a.update(&preds[..30_000], &target[..30_000]).unwrap();
    b.update(&preds[30_000..], &target[30_000..]).unwrap();
    whole.update(&preds, &target).unwrap();
    let mut merged: State = a.tracked().total().clone();
    merged.merge(b.tracked().total()).unwrap();
    assert_eq!(&merged, whole.tracked().total());
    assert_eq!(b.value_of(&merged).unwrap(), whole.compute().unwrap());
    // A reset forgets everything; the batch value is the last update's.
    a.reset();
    assert_eq!(a.compute().unwrap(), 0.0);
    assert!(a.batch_value().unwrap().is_nan());
    a.update(&[1usize][..], &[1usize][..]).unwrap();
    a.update(&[0usize][..], &[1usize][..]).unwrap();
    assert_eq!(
        (a.batch_value().unwrap(), a.compute().unwrap()),
        (0.0, 0.25)
    );
}
