//! Reading npz and CSV: good files load, bad ones are refused naming the file and the row.

use fulmen::data::{csv, iris, npz, Class};

fn err_text(e: fulmen::Error) -> String {
    e.to_string()
}

#[test]
fn iris_npz_round_trips_the_bundled_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data/iris.npz");
    iris::write_npz(&path).unwrap();
    let loaded = iris::load(&path).unwrap();
    assert_eq!(loaded, iris::bundled());
    assert_eq!(loaded.len(), 150);
    assert_eq!(loaded[0], ([5.1, 3.5, 1.4, 0.2], Class::new(0).unwrap()));
    let x = npz::read_array(&path, "X").unwrap();
    assert_eq!(x.shape, [150, 4]);
    let y = npz::read_array(&path, "y").unwrap();
    assert_eq!(y.shape, [150]);
}

#[test]
fn the_shipped_iris_npz_is_what_make_iris_writes() {
    let shipped = iris::load(concat!(env!("CARGO_MANIFEST_DIR"), "/data/iris.npz")).unwrap();
    assert_eq!(shipped, iris::bundled());
}

#[test]
fn a_missing_file_names_the_path_and_how_to_create_it() {
    let e = err_text(iris::load("no/such/iris.npz").unwrap_err());
    assert!(
        e.contains("no/such/iris.npz") && e.contains("cargo run --example make_iris"),
        "{e}"
    );
    let e = err_text(csv::read_classification::<4, 3>("no/such.csv", true).unwrap_err());
    assert!(e.contains("no/such.csv does not exist"), "{e}");
}

#[test]
fn npz_of_the_wrong_width_or_labels_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let wide = dir.path().join("wide.npz");
    npz::write_classification(&wide, &[([1.0; 5], Class::<3>::new(0).unwrap()); 3]).unwrap();
    let e = err_text(npz::read_classification::<4, 3>(&wide, "X", "y").unwrap_err());
    assert!(
        e.contains("wide.npz") && e.contains("shape [3, 5]") && e.contains("(rows, 4)"),
        "{e}"
    );

    let labels = dir.path().join("labels.npz");
    let rows = [
        ([1.0; 4], Class::<4>::new(0).unwrap()),
        ([2.0; 4], Class::<4>::new(3).unwrap()),
    ];
    npz::write_classification(&labels, &rows).unwrap();
    let e = err_text(npz::read_classification::<4, 3>(&labels, "X", "y").unwrap_err());
    assert!(
        e.contains("labels.npz: row 1: label 3 is outside the class range 0..3"),
        "{e}"
    );

    let e = err_text(npz::read_classification::<4, 3>(&labels, "features", "y").unwrap_err());
    assert!(e.contains("no array named `features`"), "{e}");

    let junk = dir.path().join("junk.npz");
    std::fs::write(&junk, b"not a zip").unwrap();
    let e = err_text(npz::read_array(&junk, "X").unwrap_err());
    assert!(
        e.contains("junk.npz") && e.contains("not a readable .npz"),
        "{e}"
    );
}

#[test]
fn malformed_csv_rows_are_named_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let good = write("good.csv", "a,b,c,d,label\n1,2,3,4,0\n5,6,7,8,2\n");
    assert_eq!(
        csv::read_classification::<4, 3>(&good, true).unwrap().len(),
        2
    );

    let cases = [
        (
            "text.csv",
            "a,b,c,d,label\n1,2,3,4,0\n1,abc,3,4,1\n",
            "line 3, column 2: `abc` is not a number",
        ),
        (
            "columns.csv",
            "a,b,c,d,label\n1,2,3,0\n",
            "line 2: 4 columns, expected 5",
        ),
        (
            "label.csv",
            "a,b,c,d,label\n1,2,3,4,7\n",
            "line 2: label 7 is outside the class range 0..3",
        ),
        (
            "fraction.csv",
            "a,b,c,d,label\n1,2,3,4,1.5\n",
            "line 2: label 1.5 is outside the class range",
        ),
        (
            "nan.csv",
            "a,b,c,d,label\n1,NaN,3,4,1\n",
            "line 2: feature 1 is NaN",
        ),
        ("empty.csv", "", "holds no data rows"),
    ];
    for (name, text, expected) in cases {
        let p = write(name, text);
        let e = err_text(csv::read_classification::<4, 3>(&p, true).unwrap_err());
        assert!(e.contains(name) && e.contains(expected), "{name}: {e}");
    }
}

/// Writes array `X` (rows × 4, of element type `T`) and int64 labels `y` as `np.savez` does.
fn write_npz<T: npyz::AutoSerialize + Copy>(path: &std::path::Path, x: &[[T; 4]]) {
    use npyz::WriterBuilder;
    let mut npz = npyz::npz::NpzWriter::create(path).unwrap();
    let options = npyz::zip::write::FileOptions::default();
    let mut w = npz
        .array::<T>("X", options)
        .unwrap()
        .default_dtype()
        .shape(&[x.len() as u64, 4])
        .begin_nd()
        .unwrap();
    w.extend(x.iter().flatten().copied()).unwrap();
    w.finish().unwrap();
    let mut w = npz
        .array::<i64>("y", options)
        .unwrap()
        .default_dtype()
        .shape(&[x.len() as u64])
        .begin_nd()
        .unwrap();
    w.extend((0..x.len() as i64).map(|i| i % 3)).unwrap();
    w.finish().unwrap();
}

#[test]
fn float16_and_float64_features_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let half = dir.path().join("half.npz");
    let h = half::f16::from_f32;
    write_npz(&half, &[[h(5.1), h(3.5), h(1.4), h(0.2)], [h(-1.0); 4]]);
    let loaded = npz::read_classification::<4, 3>(&half, "X", "y").unwrap();
    let expected = [5.1f32, 3.5, 1.4, 0.2].map(|v| half::f16::from_f32(v).to_f32());
    assert_eq!(loaded[0].0, expected);
    assert_eq!(loaded[1], ([-1.0; 4], Class::new(1).unwrap()));

    let double = dir.path().join("double.npz");
    write_npz(&double, &[[5.1f64, 3.5, 1.4, 0.2]]);
    let loaded = npz::read_classification::<4, 3>(&double, "X", "y").unwrap();
    assert_eq!(loaded[0].0, [5.1, 3.5, 1.4, 0.2]);
}

#[test]
fn values_beyond_float32s_range_are_refused_at_load_naming_file_row_and_feature() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.npz");
    write_npz(&path, &[[1.0f64; 4], [1.0, 1.0, -1e39, 1.0]]);
    let e = err_text(npz::read_classification::<4, 3>(&path, "X", "y").unwrap_err());
    assert!(
        e.contains("huge.npz: row 1: feature 2 is -1e39, beyond float32's range"),
        "{e}"
    );
    let csv_path = dir.path().join("huge.csv");
    std::fs::write(&csv_path, "a,b,c,d,label\n1,2,3,4,0\n1,2e39,3,4,1\n").unwrap();
    let e = err_text(csv::read_classification::<4, 3>(&csv_path, true).unwrap_err());
    assert!(
        e.contains("huge.csv: line 3: feature 1 is 2e39, beyond float32's range"),
        "{e}"
    );
}

#[test]
fn a_directory_given_as_the_data_file_is_named_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let e = err_text(iris::load(dir.path()).unwrap_err());
    assert!(e.contains("is a directory"), "{e}");
    let e = err_text(csv::read_classification::<4, 3>(dir.path(), true).unwrap_err());
    assert!(e.contains("is a directory"), "{e}");
}

#[test]
fn make_iris_writes_the_same_bytes_every_time_the_shipped_file_has() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.npz"), dir.path().join("b.npz"));
    iris::write_npz(&a).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2100)); // past zip's 2 s resolution
    iris::write_npz(&b).unwrap();
    let a = std::fs::read(a).unwrap();
    assert_eq!(a, std::fs::read(b).unwrap());
    let shipped = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/data/iris.npz")).unwrap();
    assert!(
        a == shipped,
        "data/iris.npz differs from what make_iris writes: run `cargo run --example make_iris` and commit it"
    );
}

#[test]
fn csv_reads_from_any_reader_plain_or_gzip_compressed() {
    use std::io::Write;
    let text = "f1,f2,f3,f4,label\n5.1,3.5,1.4,0.2,0\n6.2,2.9,4.3,1.3,1\n";
    let plain = csv::read_classification_from::<4, 3>(text.as_bytes(), "memory", true).unwrap();
    assert_eq!(plain[1], ([6.2, 2.9, 4.3, 1.3], Class::new(1).unwrap()));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(text.as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    let unpacked = csv::read_classification_from::<4, 3>(&gz[..], "memory.gz", true).unwrap();
    assert_eq!(unpacked, plain);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("iris.csv.gz");
    std::fs::write(&path, &gz).unwrap();
    assert_eq!(
        csv::read_classification::<4, 3>(&path, true).unwrap(),
        plain
    );
    let e = err_text(
        csv::read_classification_from::<4, 3>("1,2,x,4,0\n".as_bytes(), "stdin", false)
            .unwrap_err(),
    );
    assert!(
        e.contains("stdin: line 1, column 3: `x` is not a number"),
        "{e}"
    );
}

/// A reader that hands out one byte per call, as a pipe may.
struct Trickle<'a>(&'a [u8]);

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match (self.0.split_first(), buf.first_mut()) {
            (Some((&b, rest)), Some(slot)) => {
                *slot = b;
                self.0 = rest;
                Ok(1)
            }
            _ => Ok(0),
        }
    }
}

#[test]
fn gzip_is_known_from_a_reader_that_gives_one_byte_at_a_time() {
    use std::io::Write;
    let text = "1,2,3,4,0\n";
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(text.as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    let rows = csv::read_classification_from::<4, 3>(Trickle(&gz), "pipe", false).unwrap();
    assert_eq!(rows, [([1.0, 2.0, 3.0, 4.0], Class::new(0).unwrap())]);
    let plain = csv::read_classification_from::<4, 3>(Trickle(text.as_bytes()), "pipe", false);
    assert_eq!(plain.unwrap(), rows);
}
