//! The generated code of the tutorial's module and data module, pinned: a change to what the
//! macros emit shows up as a reviewed snapshot diff.

use quote::quote;

fn pretty(tokens: proc_macro2::TokenStream) -> String {
    match syn::parse2::<syn::File>(tokens.clone()) {
        Ok(file) => prettyplease::unparse(&file),
        Err(_) => tokens.to_string(),
    }
}

#[test]
fn iris_module_struct() {
    let out = crate::expand::module(
        quote!(),
        quote! {
            pub struct IrisClassifier {
                layer_1: Linear<4, 16>,
                layer_2: Linear<16, 3>,
                #[hparam]
                lr: f64,
                #[metric(F1Score::multiclass(3))]
                val_f1: F1Score,
                #[metric]
                val_acc: Accuracy,
            }
        },
        crate::ast::Kind::Lightning,
    );
    insta::assert_snapshot!(pretty(out));
}

#[test]
fn iris_module_impl() {
    let out = crate::expand::module(
        quote!(),
        quote! {
            impl IrisClassifier {
                fn forward<T: Tape<E, D>>(&self, x: Tensor<(usize, Const<4>), E, D, T>) -> Tensor<(usize, Const<3>), E, D, T> {
                    self.layer_2.forward(self.layer_1.forward(x).relu())
                }
                fn training_step(&mut self, (x, y): ClassBatch<4, 3, E, D>, ctx: &mut StepContext<E, D>) -> Loss<E, D> {
                    let loss = cross_entropy_with_logits_loss(self.forward(ctx.trace(x)), y.one_hot());
                    ctx.log("train_loss", &loss);
                    loss
                }
                fn validation_step(&self, (x, y): ClassBatch<4, 3, E, D>, ctx: &mut StepContext<E, D>) {
                    ctx.log("val_acc", accuracy(&self.forward(x), &y));
                }
                fn configure_optimizers(&self) -> Optim {
                    Optim::adam(self.lr)
                }
            }
        },
        crate::ast::Kind::Lightning,
    );
    insta::assert_snapshot!(pretty(out));
}

#[test]
fn manual_optimization_impl() {
    let out = crate::expand::module(
        quote!(manual_optimization),
        quote! {
            impl Gan {
                fn training_step(&mut self, (real, _): RegressionBatch<4, 1, E, D>, ctx: &mut StepContext<E, D>) -> fulmen::Result<()> {
                    let [opt_g, opt_d] = ctx.optimizers()?;
                    Ok(())
                }
                fn configure_optimizers(&self) -> [Optim; 2] {
                    [Optim::adam(2e-4).params(["generator"]), Optim::adam(2e-4).params(["discriminator"])]
                }
            }
        },
        crate::ast::Kind::Lightning,
    );
    insta::assert_snapshot!(pretty(out));
}

#[test]
fn block_with_many_layers_nests_field_tuples() {
    let out = crate::expand::module(
        quote!(),
        quote! {
            pub struct Deep<const W: usize> {
                a: Linear<W, W>, b: Linear<W, W>, c: Linear<W, W>, d: Linear<W, W>,
                e: Linear<W, W>, f: Linear<W, W>, g: Linear<W, W>, h: ReLU,
            }
        },
        crate::ast::Kind::Plain,
    );
    insta::assert_snapshot!(pretty(out));
}

#[test]
fn iris_data_module() {
    let strukt = crate::expand::data_module(
        quote!(),
        quote! {
            pub struct IrisDataModule {
                data_dir: PathBuf,
                batch_size: usize,
                #[skip]
                num_workers: usize,
                val_size: f64,
                #[skip]
                train_ds: Option<InMemoryDataset<iris::Sample>>,
            }
        },
    );
    let imp = crate::expand::data_module(
        quote!(),
        quote! {
            impl IrisDataModule {
                fn prepare_data(&mut self) -> fulmen::Result<()> { Ok(()) }
                fn setup(&mut self, _stage: Stage) -> fulmen::Result<()> { Ok(()) }
                fn train_dataloader(&self) -> Option<DataLoader<iris::Sample>> {
                    Some(DataLoader::new(self.train_ds.clone()?, self.batch_size))
                }
            }
        },
    );
    insta::assert_snapshot!(pretty(quote!(#strukt #imp)));
}

#[test]
fn batch_transfer_hooks() {
    let module = crate::expand::module(
        quote!(),
        quote! {
            impl Net {
                fn training_step(&mut self, batch: Rows<E, D>, ctx: &mut StepContext<E, D>) -> Loss<E, D> {
                    self.layer.forward(ctx.trace(batch.x)).square().mean()
                }
                fn configure_optimizers(&self) -> Optim {
                    Optim::sgd(0.1)
                }
                fn on_before_batch_transfer(&mut self, batch: Rows<f32, Cpu>, _dataloader_idx: usize) -> Rows<f32, Cpu> {
                    batch
                }
                fn transfer_batch_to_device(&mut self, batch: Rows<f32, Cpu>, device: &D, _dataloader_idx: usize) -> Rows<E, D> {
                    batch.to(device)
                }
            }
        },
        crate::ast::Kind::Lightning,
    );
    let data = crate::expand::data_module(
        quote!(),
        quote! {
            impl Data {
                fn train_dataloader(&self) -> DataLoader<Item> {
                    self.loader.clone()
                }
                fn on_after_batch_transfer(&mut self, batch: Rows<E, D>, _dataloader_idx: usize) -> Rows<E, D> {
                    batch
                }
            }
        },
    );
    insta::assert_snapshot!(pretty(quote!(#module #data)));
}

#[test]
fn module_serving_its_loaders() {
    let out = crate::expand::module(
        quote!(),
        quote! {
            impl Net {
                fn training_step(&mut self, (x, y): ClassBatch<4, 3, E, D>, ctx: &mut StepContext<E, D>) -> Loss<E, D> {
                    cross_entropy_with_logits_loss(self.layer.forward(ctx.trace(x)), y.one_hot())
                }
                fn configure_optimizers(&self) -> Optim {
                    Optim::sgd(0.1)
                }
                fn prepare_data(&mut self, _trainer: &mut TrainerView) {}
                fn train_dataloader(&self) -> DataLoader<iris::Sample> {
                    DataLoader::new(InMemoryDataset::new(self.train.clone()), 16)
                }
                fn val_dataloader(&self) -> fulmen::Result<Vec<DataLoader<iris::Sample>>> {
                    Ok(vec![DataLoader::new(InMemoryDataset::new(self.val.clone()), 16)])
                }
            }
        },
        crate::ast::Kind::Lightning,
    );
    insta::assert_snapshot!(pretty(out));
}
