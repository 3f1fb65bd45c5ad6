use fulmen::prelude::*;

#[data_module]
pub struct Flowers {
    batch_size: usize,
    #[skip]
    #[hparam]
    cache: Vec<f32>,
}

#[data_module]
impl Flowers {
    fn train_dataloader(&self) -> DataLoader<([f32; 4], Class<3>)> {
        DataLoader::new(InMemoryDataset::new(vec![([0.0; 4], Class::new(0).unwrap())]), self.batch_size)
    }
}

fn main() {}
