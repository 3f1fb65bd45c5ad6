//! CIFAR-10's binary files, read from small files written in the same format: values, labels
//! and order; truncated files, bad labels and a missing directory refused with the file named;
//! image samples collated into `[N, 3, 32, 32]` batches a convolution reads.

use std::path::Path;

use fulmen::data::{cifar10, ImageBatch};
use fulmen::layers::Conv2D;
use fulmen::prelude::*;

/// `n` records whose label is `(first_label + i) % 10` and whose pixel bytes count up.
fn records(n: usize, first_label: u8) -> Vec<u8> {
    let mut bytes = Vec::new();
    for i in 0..n {
        bytes.push((first_label + i as u8) % 10);
        bytes.extend((0..3072).map(|p| ((p + i) % 256) as u8));
    }
    bytes
}

fn write_dataset(dir: &Path) {
    let bin = dir.join(cifar10::DIR);
    std::fs::create_dir_all(&bin).unwrap();
    for (k, name) in cifar10::TRAIN_FILES.iter().enumerate() {
        std::fs::write(bin.join(name), records(2, 2 * k as u8)).unwrap();
    }
    std::fs::write(bin.join(cifar10::TEST_FILE), records(3, 7)).unwrap();
}

#[test]
fn the_binary_format_reads_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path());
    let train = cifar10::load_train(dir.path()).unwrap();
    assert_eq!(train.len(), 10);
    let labels: Vec<usize> = train.iter().map(|(_, c)| c.index()).collect();
    assert_eq!(labels, (0..10).collect::<Vec<_>>());
    let (image, _) = &train[1];
    assert_eq!((image.height(), image.width()), (32, 32));
    // Record 1: byte p is (p + 1) % 256; red first, then green (from byte 1024), then blue.
    assert_eq!(image.pixels()[0], 1.0 / 255.0);
    assert_eq!(image.pixels()[1024], ((1024 + 1) % 256) as f32 / 255.0);
    let test = cifar10::load_test(dir.path()).unwrap();
    assert_eq!(
        test.iter().map(|(_, c)| c.index()).collect::<Vec<_>>(),
        [7, 8, 9]
    );

    let mut normalized = image.clone();
    cifar10::normalize(&mut normalized);
    let expected = (image.pixels()[0] - cifar10::MEAN[0]) / cifar10::STD[0];
    assert!((normalized.pixels()[0] - expected).abs() < 1e-6);
}

#[test]
fn bad_files_are_refused_naming_the_file_and_record() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path());
    let bin = dir.path().join(cifar10::DIR);
    let mut truncated = records(2, 0);
    truncated.truncate(4000);
    std::fs::write(bin.join("data_batch_3.bin"), truncated).unwrap();
    let err = cifar10::load_train(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("data_batch_3.bin") && err.contains("truncated"),
        "{err}"
    );

    let mut bad_label = records(3, 0);
    bad_label[2 * 3073] = 12;
    std::fs::write(bin.join("data_batch_3.bin"), bad_label).unwrap();
    let err = cifar10::load_train(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("data_batch_3.bin") && err.contains("record 2: label 12"),
        "{err}"
    );

    std::fs::write(bin.join(cifar10::TEST_FILE), b"").unwrap();
    let err = cifar10::load_test(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("test_batch.bin") && err.contains("0 bytes"),
        "{err}"
    );

    let empty = tempfile::tempdir().unwrap();
    let err = cifar10::load_train(empty.path()).unwrap_err().to_string();
    assert!(
        err.contains("data_batch_1.bin") && err.contains(cifar10::URL) && err.contains("tar xzf"),
        "{err}"
    );
}

#[test]
fn images_collate_into_batches_a_convolution_reads() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path());
    let loader = DataLoader::new(
        InMemoryDataset::new(cifar10::load_train(dir.path()).unwrap()),
        4,
    );
    let dev = Cpu::default();
    let samples = loader.epoch(0).next().unwrap();
    let (x, y): ImageBatch<3, 10, f32, Cpu> = Collate::collate(samples, &dev);
    assert_eq!(*x.shape(), (4, Const::<3>, 32, 32));
    assert_eq!(y.indices(), [0, 1, 2, 3]);
    let conv: <Conv2D<3, 8, 3, 2, 1> as fulmen::Spec>::Module<f32, Cpu> = BuildModule::build(&dev);
    assert_eq!(*conv.forward(x).shape(), (4, Const::<8>, 16, 16));
}
