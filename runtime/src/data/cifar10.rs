//! CIFAR-10's official binary format (`cifar-10-batches-bin/data_batch_1.bin` … `_5.bin`,
//! `test_batch.bin`): records of one label byte and 3072 pixel bytes (1024 red, 1024 green,
//! 1024 blue, row-major 32×32). Files are checked: a size that is not a whole number of
//! records (truncated) or a label above 9 is refused, naming the file and the record.
//!
//! ```no_run
//! let train = fulmen::data::cifar10::load_train("data")?;
//! assert_eq!(train.len(), 50_000);
//! # Ok::<(), fulmen::Error>(())
//! ```

use std::path::{Path, PathBuf};

use super::{Augmented, Class, DataLoader, Dataset, Image, InMemoryDataset};
use crate::{Error, Result};

/// The directory the official archive extracts to.
pub const DIR: &str = "cifar-10-batches-bin";
/// The five training files in [`DIR`], 10,000 images each.
pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
/// The test file in [`DIR`], 10,000 images.
pub const TEST_FILE: &str = "test_batch.bin";
/// The class names, by label.
pub const CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];
/// Per-channel mean and standard deviation of the training images (pixels in 0..1).
pub const MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
/// Per-channel standard deviation of the training images (pixels in 0..1).
pub const STD: [f32; 3] = [0.2470, 0.2435, 0.2616];
/// Where the archive can be downloaded.
pub const URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";

/// One CIFAR-10 sample: a 3×32×32 image, pixels in 0..1, and its class.
pub type Sample = (Image<3>, Class<10>);

const PIXELS: usize = 3 * 32 * 32;
const RECORD: usize = 1 + PIXELS;

/// The samples of one binary file, pixels scaled to 0..1.
pub fn read(path: impl AsRef<Path>) -> Result<Vec<Sample>> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.is_empty() || bytes.len() % RECORD != 0 {
        return Err(Error::data(
            path,
            format!(
                "{} bytes is not a whole number of {RECORD}-byte records (1 label + 3072 pixels): the file is truncated or not CIFAR-10's binary version",
                bytes.len()
            ),
        ));
    }
    bytes
        .chunks_exact(RECORD)
        .enumerate()
        .map(|(i, record)| {
            let class = Class::new(record[0] as usize).ok_or_else(|| {
                Error::data(
                    path,
                    format!("record {i}: label {} is not a class in 0..9", record[0]),
                )
            })?;
            let pixels = record[1..].iter().map(|&b| f32::from(b) / 255.0).collect();
            Ok((Image::new(pixels, 32, 32)?, class))
        })
        .collect()
}

/// The error for a data directory without CIFAR-10: names what is missing and how to get it.
pub fn missing(data_dir: &Path, file: &Path) -> Error {
    Error::MissingData {
        path: file.to_path_buf(),
        message: format!(
            "CIFAR-10 not found: {} does not exist. Download {URL} and extract it into {} (`tar xzf cifar-10-binary.tar.gz -C {}`), which creates {DIR}/",
            file.display(),
            data_dir.display(),
            data_dir.display()
        ),
    }
}

fn files(data_dir: &Path, names: &[&str]) -> Result<Vec<PathBuf>> {
    names
        .iter()
        .map(|name| {
            let path = data_dir.join(DIR).join(name);
            if path.exists() {
                Ok(path)
            } else {
                Err(missing(data_dir, &path))
            }
        })
        .collect()
}

/// The five training files of `data_dir/cifar-10-batches-bin`, in order.
pub fn load_train(data_dir: impl AsRef<Path>) -> Result<Vec<Sample>> {
    let mut samples = Vec::new();
    for path in files(data_dir.as_ref(), &TRAIN_FILES)? {
        samples.extend(read(path)?);
    }
    Ok(samples)
}

/// The test file of `data_dir/cifar-10-batches-bin`.
pub fn load_test(data_dir: impl AsRef<Path>) -> Result<Vec<Sample>> {
    let mut samples = Vec::new();
    for path in files(data_dir.as_ref(), &[TEST_FILE])? {
        samples.extend(read(path)?);
    }
    Ok(samples)
}

/// Per-channel normalisation with [`MEAN`] and [`STD`] (torchvision's `Normalize`).
pub fn normalize(image: &mut Image<3>) {
    let plane = image.height() * image.width();
    for (c, values) in image.pixels_mut().chunks_mut(plane).enumerate() {
        for v in values {
            *v = (*v - MEAN[c]) / STD[c];
        }
    }
}

/// The CIFAR-10 data module: the five training files split into train and validation
/// (stratified, seeded), the test file for testing, per-channel normalisation, and — when
/// `augment` is on — torchvision's random crop (padding 4) and horizontal flip on training
/// images, drawn per (seed, epoch, index).
///
/// ```no_run
/// use fulmen::data::cifar10::Cifar10;
/// let dm = Cifar10::new("data", 128).val_size(5000).seed(42).augment(true).num_workers(2);
/// ```
#[crate::data_module(no_new)]
pub struct Cifar10 {
    data_dir: PathBuf,
    batch_size: usize,
    val_size: usize,
    seed: u64,
    augment: bool,
    #[skip]
    num_workers: usize,
    #[skip]
    splits: Splits,
}

/// The loaded samples of each stage.
#[derive(Debug, Clone, Default)]
struct Splits {
    train: Option<InMemoryDataset<Sample>>,
    val: Option<InMemoryDataset<Sample>>,
    test: Option<InMemoryDataset<Sample>>,
}

impl Cifar10 {
    /// CIFAR-10 from `data_dir/cifar-10-batches-bin`, in batches of `batch_size`: 5000
    /// validation images, seed 0, augmentation on, no loader workers.
    pub fn new(data_dir: impl Into<PathBuf>, batch_size: usize) -> Self {
        Self {
            data_dir: data_dir.into(),
            batch_size,
            val_size: 5000,
            seed: 0,
            augment: true,
            num_workers: 0,
            splits: Splits::default(),
        }
    }
    /// The number of training images held out for validation (default 5000).
    pub fn val_size(mut self, n: usize) -> Self {
        self.val_size = n;
        self
    }
    /// The seed of the validation split, the shuffle and the augmentation (default 0).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// Whether training images are randomly cropped and flipped (default on).
    pub fn augment(mut self, on: bool) -> Self {
        self.augment = on;
        self
    }
    /// The loaders' worker threads (default 0: batches are made on the training thread).
    pub fn num_workers(mut self, n: usize) -> Self {
        self.num_workers = n;
        self
    }

    fn normalized(samples: Vec<Sample>) -> InMemoryDataset<Sample> {
        InMemoryDataset::new(
            samples
                .into_iter()
                .map(|(mut image, class)| {
                    normalize(&mut image);
                    (image, class)
                })
                .collect(),
        )
    }

    fn loader(&self, data: impl Dataset<Item = Sample> + 'static) -> DataLoader<Sample> {
        DataLoader::new(data, self.batch_size).num_workers(self.num_workers)
    }
}

#[crate::data_module]
impl Cifar10 {
    fn prepare_data(&mut self) -> Result<()> {
        files(&self.data_dir, &TRAIN_FILES)?;
        files(&self.data_dir, &[TEST_FILE]).map(|_| ())
    }

    fn setup(&mut self, stage: crate::Stage) -> Result<()> {
        match stage {
            crate::Stage::Fit | crate::Stage::Validate => {
                let samples = load_train(&self.data_dir)?;
                let labels: Vec<usize> = samples.iter().map(|(_, c)| c.index()).collect();
                if self.val_size >= samples.len() {
                    return Err(Error::config(
                        "val_size",
                        format!(
                            "{} of {} training images leaves none to train on",
                            self.val_size,
                            samples.len()
                        ),
                    ));
                }
                let fraction = self.val_size as f64 / samples.len() as f64;
                let (train, val) = super::stratified_split(samples, &labels, fraction, self.seed)?;
                self.splits.train = Some(InMemoryDataset::new(train));
                self.splits.val = Some(Self::normalized(val));
            }
            crate::Stage::Test | crate::Stage::Predict => {
                self.splits.test = Some(Self::normalized(load_test(&self.data_dir)?));
            }
        }
        Ok(())
    }

    fn train_dataloader(&self) -> Option<DataLoader<Sample>> {
        let train = self.splits.train.clone()?;
        let mut augmented = Augmented::new(train, self.seed).normalize(MEAN, STD);
        if self.augment {
            augmented = augmented.crop_padding(4).horizontal_flip(true);
        }
        Some(self.loader(augmented).shuffle(true).seed(self.seed))
    }

    fn val_dataloader(&self) -> Option<DataLoader<Sample>> {
        Some(self.loader(self.splits.val.clone()?))
    }

    fn test_dataloader(&self) -> Option<DataLoader<Sample>> {
        Some(self.loader(self.splits.test.clone()?))
    }
}
