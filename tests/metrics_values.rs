//! The regression metrics against scikit-learn and SciPy, the aggregations and the perplexity
//! against NumPy (`tests/fixtures/regression.json`, made by `regression.py` there), over
//! uneven batches with an empty one, to 1e-9; 10 M values keep their mean, and around 10⁶ their
//! variance and correlation, to 1e-9; the regression metrics as one collection of tensors;
//! bad input is named.

use fulmen::metrics::{
    ExplainedVariance, HostPreds, MaxMetric, MeanAbsoluteError, MeanMetric, MeanSquaredError,
    Metric, MetricCollection, MinMetric, PearsonCorrCoef, Perplexity, R2Score,
    RootMeanSquaredError, RunningMean, SpearmanCorrCoef, SumMetric,
};
use fulmen::prelude::*;
use fulmen::serde_json::Value;

fn fixtures() -> Value {
    fulmen::serde_json::from_str(include_str!("fixtures/regression.json")).unwrap()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn ranges(v: &Value) -> Vec<(usize, usize)> {
    let r = v.as_array().unwrap().iter();
    r.map(|b| {
        (
            b[0].as_u64().unwrap() as usize,
            b[1].as_u64().unwrap() as usize,
        )
    })
    .collect()
}

fn close(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() <= 1e-9 * want.abs().max(1.0),
        "{what}: {got} vs the reference's {want}"
    );
}

#[test]
fn regression_metrics_match_scikit_learn_and_scipy() {
    for case in fixtures()["regression"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (p, t) = (f64s(&case["preds"]), f64s(&case["target"]));
        let batches = ranges(&case["batches"]);
        macro_rules! check {
            ($key:literal, $ty:ty) => {{
                let mut m = <$ty>::default();
                for &(a, b) in &batches {
                    m.update(&p[a..b], &t[a..b]).unwrap();
                }
                let want = case["expected"][$key].as_f64().unwrap();
                close(m.compute().unwrap(), want, &format!("{name}: {}", $key));
            }};
        }
        check!("mse", MeanSquaredError);
        check!("rmse", RootMeanSquaredError);
        check!("mae", MeanAbsoluteError);
        check!("r2", R2Score);
        check!("explained_variance", ExplainedVariance);
        check!("pearson", PearsonCorrCoef);
        check!("spearman", SpearmanCorrCoef);

        // The same as one collection, updated from f32 tensors (targets as values).
        let mut all = MetricCollection::new("val_")
            .with("mse", MeanSquaredError::default())
            .with("rmse", RootMeanSquaredError::default())
            .with("mae", MeanAbsoluteError::default())
            .with("r2", R2Score::default())
            .with("explained_variance", ExplainedVariance::default())
            .with("pearson", PearsonCorrCoef::default())
            .with("spearman", SpearmanCorrCoef::default());
        let dev = Cpu::default();
        let tensor = |v: &[f64]| -> Tensor<(usize,), f32, Cpu> {
            dev.tensor_from_vec(v.iter().map(|&x| x as f32).collect(), (v.len(),))
        };
        for &(a, b) in &batches {
            all.update(tensor(&p[a..b]), tensor(&t[a..b])).unwrap();
        }
        for (key, metric) in all.iter() {
            let key = key.trim_start_matches("val_");
            let want = case["expected"][key].as_f64().unwrap();
            // The values rounded to f32 on the way in.
            let got = metric.compute().unwrap();
            assert!((got - want).abs() < 1e-5, "{name}: {key} {got} vs {want}");
        }
    }
}

#[test]
fn aggregations_and_perplexity_match_numpy() {
    let all = fixtures();
    let a = &all["aggregation"];
    let (v, w) = (f64s(&a["values"]), f64s(&a["weights"]));
    let (mut mean, mut weighted, mut sum) = (
        MeanMetric::default(),
        MeanMetric::default(),
        SumMetric::default(),
    );
    let (mut min, mut max, mut running) = (
        MinMetric::default(),
        MaxMetric::default(),
        RunningMean::new(5),
    );
    for (lo, hi) in ranges(&a["batches"]) {
        let part = &v[lo..hi];
        mean.update(part).unwrap();
        sum.update(part).unwrap();
        min.update(part).unwrap();
        max.update(part).unwrap();
        for (x, wt) in part.iter().zip(&w[lo..hi]) {
            weighted.update_weighted(*x, *wt).unwrap();
            running.update(*x).unwrap();
        }
    }
    close(mean.compute().unwrap(), a["mean"].as_f64().unwrap(), "mean");
    close(
        weighted.compute().unwrap(),
        a["weighted_mean"].as_f64().unwrap(),
        "weighted mean",
    );
    close(sum.compute().unwrap(), a["sum"].as_f64().unwrap(), "sum");
    close(min.compute().unwrap(), a["min"].as_f64().unwrap(), "min");
    close(max.compute().unwrap(), a["max"].as_f64().unwrap(), "max");
    close(
        running.compute().unwrap(),
        a["running_mean_5"].as_f64().unwrap(),
        "running mean",
    );
    assert_eq!(
        running.tracked().total().get(0).len(),
        5,
        "the window alone is kept"
    );

    let p = &all["perplexity"];
    let logits: Vec<Vec<f64>> = p["logits"].as_array().unwrap().iter().map(f64s).collect();
    let target: Vec<i64> = p["target"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let mut ppl = Perplexity::default().ignore_index(p["ignore_index"].as_i64().unwrap());
    for (lo, hi) in ranges(&p["batches"]) {
        let preds = HostPreds::scores(hi - lo, 7, logits[lo..hi].concat()).unwrap();
        ppl.update(&preds, &target[lo..hi]).unwrap();
    }
    close(
        ppl.compute().unwrap(),
        p["perplexity"].as_f64().unwrap(),
        "perplexity",
    );
}

#[test]
fn ten_million_values_keep_their_mean_and_errors() {
    // 10 M values in batches of 100 k, of mean 1/3 + 0.5e-7·(i mod 7): the mean stays within
    // 1e-6 of the exact one (sums in f64).
    let batch: Vec<f64> = (0..100_000)
        .map(|i| 1.0 / 3.0 + 0.5e-7 * (i % 7) as f64)
        .collect();
    let exact = 1.0 / 3.0 + 0.5e-7 * (0..100_000).map(|i| (i % 7) as f64).sum::<f64>() / 1e5;
    let (mut mean, mut mse) = (MeanMetric::default(), MeanSquaredError::default());
    let zeros = vec![0.0; batch.len()];
    for _ in 0..100 {
        mean.update(&batch[..]).unwrap();
        mse.update(&batch[..], &zeros[..]).unwrap();
    }
    assert!((mean.compute().unwrap() - exact).abs() < 1e-12);
    let exact_mse = batch.iter().map(|v| v * v).sum::<f64>() / 1e5;
    assert!((mse.compute().unwrap() - exact_mse).abs() < 1e-12);
}

#[test]
fn ten_million_values_far_from_zero_keep_their_variance() {
    // Targets around 10⁶ (batch b drifts by 10⁻³ b), predictions near them: raw sums of
    // squares (10¹⁹ over 10 M values) would lose the variance's digits; the co-moments keep
    // R², explained variance and Pearson's within 1e-6 of two passes over every value.
    let value = |b: usize, i: usize| {
        let noise = ((b * 100_000 + i) as f64 * 0.618).sin();
        let t = 1e6 + 1e-3 * b as f64 + noise;
        (t + 0.3 * ((i as f64) * 1.7).cos(), t)
    };
    let (batches, n) = (100, 100_000);
    let all = || (0..batches).flat_map(|b| (0..n).map(move |i| value(b, i)));
    let count = (batches * n) as f64;
    let (mp, mt) = all().fold((0.0, 0.0), |(a, b), (p, t)| (a + p, b + t));
    let (mp, mt) = (mp / count, mt / count);
    let me = all().map(|(p, t)| t - p).sum::<f64>() / count;
    let (mut cpp, mut ctt, mut cpt, mut cee, mut sse) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (p, t) in all() {
        let e = t - p - me;
        cpp += (p - mp) * (p - mp);
        ctt += (t - mt) * (t - mt);
        cpt += (p - mp) * (t - mt);
        cee += e * e;
        sse += (t - p) * (t - p);
    }
    let (mut r2, mut ev, mut pearson) = (
        R2Score::default(),
        ExplainedVariance::default(),
        PearsonCorrCoef::default(),
    );
    for b in 0..batches {
        let (p, t): (Vec<f64>, Vec<f64>) = (0..n).map(|i| value(b, i)).unzip();
        r2.update(&p[..], &t[..]).unwrap();
        ev.update(&p[..], &t[..]).unwrap();
        pearson.update(&p[..], &t[..]).unwrap();
    }
    close(r2.compute().unwrap(), 1.0 - sse / ctt, "r2");
    close(ev.compute().unwrap(), 1.0 - cee / ctt, "explained variance");
    close(
        pearson.compute().unwrap(),
        cpt / (cpp * ctt).sqrt(),
        "pearson",
    );
}

#[test]
fn bad_values_are_named_and_add_nothing() {
    let mut mse = MeanSquaredError::default();
    mse.update(&[1.0][..], &[2.0][..]).unwrap();
    let err = mse
        .update(&[1.0, 2.0][..], &[1.0][..])
        .unwrap_err()
        .to_string();
    assert!(err.contains("2 predictions for 1 targets"), "{err}");
    let err = mse
        .update(&[1.0, f64::NAN][..], &[1.0, 2.0][..])
        .unwrap_err()
        .to_string();
    assert!(err.contains("prediction 1 is NaN"), "{err}");
    assert_eq!(mse.compute().unwrap(), 1.0, "nothing added");
    let err = MeanMetric::default()
        .update(&[f64::INFINITY][..])
        .unwrap_err()
        .to_string();
    assert!(err.contains("value 0 is inf"), "{err}");
    let mut ppl = Perplexity::default();
    let two = HostPreds::scores(1, 2, vec![0.0, 0.0]).unwrap();
    let err = ppl.update(&two, &[5usize][..]).unwrap_err().to_string();
    assert!(err.contains("target 5 of token 0 is not in 0..2"), "{err}");
    assert!(
        R2Score::default().compute().unwrap().is_nan(),
        "nothing seen"
    );
}
