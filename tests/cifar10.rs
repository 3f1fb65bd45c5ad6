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
    write_files(dir, 2);
}

/// Five training files of `per_file` records (labels continuing from file to file) and a
/// test file of 3.
fn write_files(dir: &Path, per_file: usize) {
    let bin = dir.join(cifar10::DIR);
    std::fs::create_dir_all(&bin).unwrap();
    for (k, name) in cifar10::TRAIN_FILES.iter().enumerate() {
        std::fs::write(bin.join(name), records(per_file, (per_file * k % 10) as u8)).unwrap();
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

#[test]
fn augmentation_is_a_seeded_crop_and_flip_per_epoch() {
    use fulmen::data::{Augmented, Class, Dataset, Image};
    // One 1-channel 4×6 image whose pixel value is its column + 1 (0 marks padding).
    let pixels: Vec<f32> = (0..24).map(|i| (i % 6 + 1) as f32).collect();
    let image = Image::<1>::new(pixels.clone(), 4, 6).unwrap();
    let data = InMemoryDataset::new(vec![(image, Class::<2>::new(0).unwrap()); 8]);

    let plain = Augmented::new(data.clone(), 0).normalize([1.0], [2.0]);
    let (out, _) = plain.get_in_epoch(3, 5);
    let expected: Vec<f32> = pixels.iter().map(|v| (v - 1.0) / 2.0).collect();
    assert_eq!(
        out.pixels(),
        expected,
        "no crop or flip asked: normalisation only"
    );

    let aug = Augmented::new(data, 7)
        .crop_padding(2)
        .horizontal_flip(true);
    let rows = |epoch: usize, index: usize| aug.get_in_epoch(index, epoch).0.pixels().to_vec();
    assert_eq!(
        rows(1, 3),
        rows(1, 3),
        "the same (seed, epoch, index), the same image"
    );
    let views: Vec<Vec<f32>> = (0..8).map(|e| rows(e, 0)).collect();
    assert!(views.iter().any(|v| *v != views[0]), "epochs differ");
    for view in &views {
        // Every row is the image's columns shifted (and maybe mirrored), zeros where padded.
        for row in view.chunks(6) {
            let inside: Vec<f32> = row.iter().copied().filter(|&v| v != 0.0).collect();
            let steps: Vec<f32> = inside.windows(2).map(|w| w[1] - w[0]).collect();
            assert!(
                steps.iter().all(|&d| d == 1.0) || steps.iter().all(|&d| d == -1.0),
                "{row:?}"
            );
        }
    }

    // Loader workers see what inline loading sees.
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path());
    let train = InMemoryDataset::new(cifar10::load_train(dir.path()).unwrap());
    let make = |workers: usize| {
        let aug = Augmented::new(train.clone(), 1)
            .crop_padding(4)
            .horizontal_flip(true);
        DataLoader::new(aug, 3)
            .shuffle(true)
            .seed(9)
            .num_workers(workers)
    };
    for epoch in 0..2 {
        let inline: Vec<_> = make(0).epoch(epoch).collect();
        let threaded: Vec<_> = make(2).epoch(epoch).collect();
        assert_eq!(inline, threaded);
    }
}

#[lightning_module]
struct TinyCifar {
    conv: Conv2D<3, 4, 3, 2, 1>,
    head: (AvgPoolGlobal, Linear<4, 10>),
}

#[lightning_module]
impl TinyCifar {
    fn training_step(
        &mut self,
        (x, y): ImageBatch<3, 10, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        let logits = self.head.forward(self.conv.forward(ctx.trace(x)).relu());
        let loss = cross_entropy_with_logits_loss(logits, y.one_hot());
        ctx.log("train_loss", &loss);
        loss
    }
    fn validation_step(&mut self, (x, y): ImageBatch<3, 10, E, D>, ctx: &mut StepContext<E, D>) {
        let logits = self.head.forward(self.conv.forward(x).relu());
        ctx.log("val_acc", accuracy(&logits, &y));
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.05).momentum(0.9)
    }
}

#[test]
fn the_data_module_feeds_a_conv_net_through_the_trainer() {
    // 20 training images, each class twice: 10 for validation (one per class), 10 to train.
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), 4);
    let mut dm = cifar10::Cifar10::new(dir.path(), 4).val_size(10).seed(3);
    let mut trainer = Trainer::builder()
        .max_epochs(2)
        .no_logger()
        .enable_checkpointing(false)
        .enable_progress_bar(false)
        .enable_model_summary(false)
        .build()
        .unwrap();
    let mut model = TinyCifar::new();
    trainer.fit(&mut model, &mut dm).unwrap();
    assert_eq!(
        trainer.global_step(),
        6,
        "10 training images in batches of 4, 2 epochs"
    );
    assert!(trainer.callback_metrics().contains_key("val_acc"));
    assert_eq!(dm.hparams().get::<usize>("val_size").unwrap(), 10);
    let test = trainer.test(&mut model, &mut dm);
    assert!(test.is_err(), "TinyCifar has no test_step: {test:?}");

    let empty = tempfile::tempdir().unwrap();
    let err = trainer
        .fit(
            &mut TinyCifar::new(),
            &mut cifar10::Cifar10::new(empty.path(), 4),
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("CIFAR-10 not found") && err.contains("data_batch_1.bin"),
        "{err}"
    );
}
