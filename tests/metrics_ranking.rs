//! AUROC, average precision and their curves against scikit-learn, their binned versions and
//! the calibration error against NumPy (`tests/fixtures/ranking.json`, made by `ranking.py`
//! there): binary, multiclass one-vs-rest and multilabel, logits and ties, over uneven
//! batches, to 1e-9.

use fulmen::metrics::{
    Auroc, Average, AveragePrecision, CalibrationError, CalibrationNorm, HostPreds, HostTargets,
    Metric, PrecisionRecallCurve, RocCurve,
};
use fulmen::serde_json::Value;

fn fixtures() -> Value {
    fulmen::serde_json::from_str(include_str!("fixtures/ranking.json")).unwrap()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn close(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() < 1e-9,
        "{what}: {got} vs the reference's {want}"
    );
}

fn close_all(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: {got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        // +∞ is written as 1e308 in JSON.
        let same = (g - w).abs() < 1e-9 || (g.is_infinite() && *w >= 1e300);
        assert!(same, "{what}: {got:?} vs {want:?}");
    }
}

/// Rows `a..b` of a case, as the metrics take them.
fn batch(case: &Value, a: usize, b: usize) -> (HostPreds, HostTargets) {
    let width = case["width"].as_u64().unwrap() as usize;
    let task = case["task"].as_str().unwrap();
    let rows = &case["scores"].as_array().unwrap()[a..b];
    let values: Vec<f64> = match task {
        "binary" => rows.iter().map(|v| v.as_f64().unwrap()).collect(),
        _ => rows.iter().flat_map(f64s).collect(),
    };
    let cols = if task == "binary" { 1 } else { width };
    let targets = &case["target"].as_array().unwrap()[a..b];
    let (tcols, tvalues): (usize, Vec<f64>) = match task {
        "multilabel" => (width, targets.iter().flat_map(f64s).collect()),
        _ => (1, targets.iter().map(|v| v.as_f64().unwrap()).collect()),
    };
    (
        HostPreds::scores(b - a, cols, values).unwrap(),
        HostTargets {
            rows: b - a,
            cols: tcols,
            values: tvalues,
        },
    )
}

fn batches(v: &Value) -> Vec<(usize, usize)> {
    let r = v.as_array().unwrap().iter();
    r.map(|b| {
        (
            b[0].as_u64().unwrap() as usize,
            b[1].as_u64().unwrap() as usize,
        )
    })
    .collect()
}

macro_rules! task {
    ($ty:ident, $case:expr) => {{
        let width = $case["width"].as_u64().unwrap() as usize;
        match $case["task"].as_str().unwrap() {
            "binary" => $ty::binary(),
            "multiclass" => $ty::multiclass(width),
            _ => $ty::multilabel(width),
        }
    }};
}

fn average(name: &str) -> Average {
    match name {
        "micro" => Average::Micro,
        "weighted" => Average::Weighted,
        _ => Average::Macro,
    }
}

#[test]
fn auroc_and_average_precision_match_scikit_learn_exact_and_numpy_binned() {
    let mut checked = 0;
    for case in fixtures()["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        for (key, by_average) in case["expected"].as_object().unwrap() {
            for (avg, want) in by_average.as_object().unwrap() {
                let want = want.as_f64().unwrap();
                let binned = key.starts_with("binned11_");
                let mut auroc = task!(Auroc, case).average(average(avg));
                let mut ap = task!(AveragePrecision, case).average(average(avg));
                if binned {
                    auroc = auroc.thresholds(11);
                    ap = ap.thresholds(11);
                }
                for (a, b) in batches(&case["batches"]) {
                    let (p, t) = batch(case, a, b);
                    auroc.update(&p, &t).unwrap();
                    ap.update(&p, &t).unwrap();
                }
                let got = match key.trim_start_matches("binned11_") {
                    "auroc" => auroc.compute().unwrap(),
                    _ => ap.compute().unwrap(),
                };
                close(got, want, &format!("{name}: {avg} {key}"));
                checked += 1;
            }
        }
    }
    assert!(checked >= 24, "{checked}");
}

#[test]
fn curves_match_scikit_learn() {
    for case in fixtures()["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let Some(rocs) = case.get("roc") else {
            continue;
        };
        let (mut roc, mut pr) = (task!(RocCurve, case), task!(PrecisionRecallCurve, case));
        for (a, b) in batches(&case["batches"]) {
            let (p, t) = batch(case, a, b);
            roc.update(&p, &t).unwrap();
            pr.update(&p, &t).unwrap();
        }
        for (got, want) in roc.curves().iter().zip(rocs.as_array().unwrap()) {
            close_all(&got.x, &f64s(&want[0]), &format!("{name}: fpr"));
            close_all(&got.y, &f64s(&want[1]), &format!("{name}: tpr"));
            close_all(
                &got.thresholds,
                &f64s(&want[2]),
                &format!("{name}: roc thresholds"),
            );
        }
        if let Some(prs) = case.get("pr") {
            for (got, want) in pr.curves().iter().zip(prs.as_array().unwrap()) {
                close_all(&got.x, &f64s(&want[0]), &format!("{name}: precision"));
                close_all(&got.y, &f64s(&want[1]), &format!("{name}: recall"));
                close_all(
                    &got.thresholds,
                    &f64s(&want[2]),
                    &format!("{name}: pr thresholds"),
                );
            }
        }
        let err = roc.compute().unwrap_err().to_string();
        assert!(err.contains("a curve, not a number"), "{err}");
    }
}

#[test]
fn the_calibration_error_matches_numpy() {
    let all = fixtures();
    for (task, c) in all["calibration"].as_object().unwrap() {
        for (norm_name, norm) in [
            ("l1", CalibrationNorm::L1),
            ("l2", CalibrationNorm::L2),
            ("max", CalibrationNorm::Max),
        ] {
            let target: Vec<i64> = (c["target"].as_array().unwrap().iter())
                .map(|v| v.as_i64().unwrap())
                .collect();
            let (mut m, rows): (CalibrationError, Vec<Vec<f64>>) = match task.as_str() {
                "binary" => (
                    CalibrationError::binary(15),
                    f64s(&c["scores"]).into_iter().map(|v| vec![v]).collect(),
                ),
                _ => (
                    CalibrationError::multiclass(5, 15),
                    c["scores"].as_array().unwrap().iter().map(f64s).collect(),
                ),
            };
            m = m.norm(norm);
            for (a, b) in batches(&c["batches"]) {
                let p = HostPreds::scores(b - a, rows[0].len(), rows[a..b].concat()).unwrap();
                m.update(&p, &target[a..b]).unwrap();
            }
            let want = c["expected"][norm_name].as_f64().unwrap();
            close(m.compute().unwrap(), want, &format!("{task} {norm_name}"));
        }
    }
}

#[test]
fn binned_states_stay_bounded_and_edge_cases_are_named() {
    let mut exact = Auroc::binary();
    let mut binned = Auroc::binary().thresholds(101);
    let scores: Vec<f64> = (0..10_000)
        .map(|i| ((i * 7919) % 10_000) as f64 / 10_000.0)
        .collect();
    let target: Vec<usize> = (0..10_000)
        .map(|i| usize::from((i * 7919) % 10_000 > 3_000 + i % 5_000))
        .collect();
    for chunk in 0..10 {
        let r = chunk * 1000..(chunk + 1) * 1000;
        exact
            .update(&scores[r.clone()], &target[r.clone()])
            .unwrap();
        binned.update(&scores[r.clone()], &target[r]).unwrap();
    }
    let parts: usize = binned
        .tracked()
        .total()
        .parts()
        .iter()
        .map(|p| p.values.len())
        .sum();
    assert_eq!(
        parts,
        2 * 101 + 2,
        "counts per threshold, whatever the samples"
    );
    let (e, b) = (exact.compute().unwrap(), binned.compute().unwrap());
    assert!(
        (e - b).abs() < 0.01,
        "101 thresholds come close: {e} vs {b}"
    );
    // One kind of target: no AUROC.
    let mut one = Auroc::binary();
    one.update(&[0.2, 0.7][..], &[1usize, 1][..]).unwrap();
    assert!(one.compute().unwrap().is_nan());
    let err = Auroc::multiclass(3)
        .average(Average::Micro)
        .compute()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Auroc.average") && err.contains("Micro"),
        "{err}"
    );
    // No classes: an error, not a panic.
    let none = HostPreds::scores(1, 0, Vec::<f64>::new()).unwrap();
    let err = Auroc::multiclass(0)
        .update(&none, &[0usize][..])
        .unwrap_err()
        .to_string();
    assert!(err.contains("at least one class"), "{err}");
    let err = CalibrationError::multiclass(0, 10)
        .update(&none, &[0usize][..])
        .unwrap_err()
        .to_string();
    assert!(err.contains("at least one class"), "{err}");
    let err = fulmen::metrics::ConfusionMatrix::multiclass(0)
        .matrix()
        .unwrap_err()
        .to_string();
    assert!(err.contains("no classes"), "{err}");
    let err = Auroc::binary()
        .update(&[0.5][..], &[2usize][..])
        .unwrap_err()
        .to_string();
    assert!(err.contains("target 2 in row 0 is not 0 or 1"), "{err}");
}

/// A large batch (read across threads) of f32 logits, as a tensor (read in place, its softmax
/// in f32 lanes), gives the values of the same scores in f64, and the binned AUROC is the
/// area under the counts at each threshold, counted here one score at a time.
#[test]
fn large_f32_batches_give_the_f64_values_and_the_counts_by_definition() {
    use fulmen::metrics::{Accuracy, F1Score, Perplexity};
    use fulmen::prelude::*;
    const C: usize = 40;
    let rows = 2048;
    let logits: Vec<f32> = (0..rows * C)
        .map(|i| (i as f32 * 0.7133).sin() * 4.0 + if i % C == (i / C) % C { 2.0 } else { 0.0 })
        .collect();
    let target: Vec<usize> = (0..rows).map(|r| (r + r / 5) % C).collect();
    let t: Tensor<(usize, Const<C>), f32, Cpu> =
        Cpu::default().tensor_from_vec(logits.clone(), (rows, Const));
    let wide: Vec<f64> = logits.iter().map(|&v| f64::from(v)).collect();
    let f64s = HostPreds::scores(rows, C, wide.clone()).unwrap();

    let both = |make: &dyn Fn() -> Box<dyn fulmen::metrics::HostUpdate>| {
        let (mut a, mut b) = (make(), make());
        let narrow = fulmen::metrics::Preds::host(&t).unwrap();
        let target = fulmen::metrics::Targets::host(&target[..]);
        a.update_host(&narrow, &target).unwrap();
        b.update_host(&f64s, &target).unwrap();
        let (a, b) = (a.compute().unwrap(), b.compute().unwrap());
        assert!((a - b).abs() < 1e-6, "{} f32 {a} vs f64 {b}", make().name());
        b
    };
    both(&|| Box::new(Accuracy::multiclass(C)));
    both(&|| Box::new(F1Score::multiclass(C)));
    both(&|| Box::new(Auroc::multiclass(C)));
    both(&|| Box::new(AveragePrecision::multiclass(C).thresholds(50)));
    both(&|| Box::new(CalibrationError::multiclass(C, 15)));
    both(&|| Box::new(Perplexity::default()));
    let binned = both(&|| Box::new(Auroc::multiclass(C).thresholds(100)));

    // By definition: class c's ROC points at thresholds k / 99, from the highest.
    let mut areas = Vec::new();
    for c in 0..C {
        let probs: Vec<(f64, bool)> = (0..rows)
            .map(|r| {
                let row = &wide[r * C..(r + 1) * C];
                let max = row.iter().copied().fold(f64::MIN, f64::max);
                let sum: f64 = row.iter().map(|v| (v - max).exp()).sum();
                ((row[c] - max).exp() / sum, target[r] == c)
            })
            .collect();
        let pos = probs.iter().filter(|p| p.1).count() as f64;
        let neg = rows as f64 - pos;
        let (mut x, mut y) = (vec![0.0], vec![0.0]);
        for k in (0..100).rev() {
            let th = k as f64 / 99.0;
            let at = |positive: bool| {
                (probs.iter())
                    .filter(|p| p.1 == positive && p.0 >= th)
                    .count() as f64
            };
            x.push(at(false) / neg);
            y.push(at(true) / pos);
        }
        let area: f64 = (1..x.len())
            .map(|i| (x[i] - x[i - 1]) * (y[i] + y[i - 1]) / 2.0)
            .sum();
        areas.push(area);
    }
    let want = areas.iter().sum::<f64>() / C as f64;
    assert!((binned - want).abs() < 1e-9, "{binned} vs {want}");
}
