//! Lightning's `LightningCLI`: a program's whole command line from a `#[lightning_module]` and a
//! `#[data_module]`. Subcommands `fit`, `validate`, `test` and `predict`; YAML config files
//! (`--config run.yaml`, several allowed, later ones override earlier ones, flags override
//! files) holding the trainer's flags, the model's hyperparameters and the data module's;
//! `--print-config` writes the resolved config, which `--config` reads back; the config a run
//! used is saved as `config.yaml` beside `hparams.yaml` in its log folder.
//!
//! ```no_run
//! # use fulmen::prelude::*;
//! # #[lightning_module]
//! # pub struct Model { layer: Linear<4, 3>, #[hparam] lr: f64 }
//! # #[lightning_module]
//! # impl Model {
//! #     fn training_step(&mut self, (x, y): ClassBatch<4, 3, E, D>, ctx: &mut StepContext<E, D>) -> Loss<E, D> {
//! #         cross_entropy_with_logits_loss(self.layer.forward(ctx.trace(x)), y.one_hot())
//! #     }
//! #     fn configure_optimizers(&self) -> Optim { Optim::adam(self.lr) }
//! # }
//! # #[data_module]
//! # pub struct Data { batch_size: usize }
//! # #[data_module]
//! # impl Data {
//! #     fn train_dataloader(&self) -> DataLoader<fulmen::data::iris::Sample> {
//! #         DataLoader::new(InMemoryDataset::new(fulmen::data::iris::bundled()), self.batch_size)
//! #     }
//! # }
//! use fulmen::cli::LightningCli;
//!
//! fn main() -> std::process::ExitCode {
//!     LightningCli::<Model, Data>::new()
//!         .model_defaults(|| Model::new(0.01))
//!         .data_defaults(|| Data::new(16))
//!         .trainer_defaults(|t| t.max_epochs(10))
//!         .run()
//! }
//! ```
//!
//! ```sh
//! program fit --config run.yaml --trainer.max_epochs 5 --model.lr 0.02 --seed_everything 42
//! program validate --config run.yaml --ckpt_path last
//! ```
//!
//! A config file is the same tree:
//!
//! ```yaml
//! seed_everything: 42
//! trainer:
//!   max_epochs: 5
//!   accelerator: cpu
//! model:
//!   lr: 0.02
//! data:
//!   batch_size: 32
//! ```
//!
//! An unknown key is an error naming the file and the nearest valid key; a value of the wrong
//! type names the key and where it was given.

mod config;

use std::marker::PhantomData;
use std::process::ExitCode;

use clap::{Arg, ArgAction, ArgMatches, Command, FromArgMatches};
use dfdx::tensor::Cpu;
use serde_yaml::Value;

use crate::checkpoint::CkptPath;
use crate::data::Collate;
use crate::datamodule::DataModule;
use crate::hparams::{FromHParams, HParams, Hyperparameters};
use crate::module::{LightningModule, Predicts};
use crate::trainer::{Trainer, TrainerArgs, TrainerBuilder};
use crate::{Callback, Error, Result, TrainerView};
use config::{Config, Schema};

/// The command line of a program that trains `M` on `DM`. See the [module docs](self).
pub struct LightningCli<M, DM> {
    model_defaults: Option<Box<dyn Fn() -> HParams>>,
    data_defaults: Option<Box<dyn Fn() -> HParams>>,
    trainer_defaults: Box<dyn Fn(TrainerBuilder) -> TrainerBuilder>,
    about: Option<String>,
    types: PhantomData<fn() -> (M, DM)>,
}

/// What the subcommands have in common: a model, a data module and a trainer.
pub trait Runnable: Predicts + LightningModule<f32, Cpu> + FromHParams + Hyperparameters {}
impl<M: Predicts + LightningModule<f32, Cpu> + FromHParams + Hyperparameters> Runnable for M {}

impl<M, DM> Default for LightningCli<M, DM> {
    fn default() -> Self {
        Self {
            model_defaults: None,
            data_defaults: None,
            trainer_defaults: Box::new(|b| b),
            about: None,
            types: PhantomData,
        }
    }
}

impl<M, DM> LightningCli<M, DM>
where
    M: Runnable,
    DM: DataModule + FromHParams + Hyperparameters + crate::stage_data::DataFor<M>,
    DM::Sample: Collate<M::Batch, Cpu>,
    DM::EvalSample: Collate<M::EvalBatch, Cpu>,
    DM::PredictSample: Collate<M::PredictBatch, Cpu>,
{
    /// A command line with no defaults: every hyperparameter must be given.
    pub fn new() -> Self {
        Self::default()
    }

    /// The model's hyperparameters when neither a file nor a flag gives them: those of the
    /// model `defaults` builds (Python's `__init__` defaults). It is built once per run, to
    /// read them.
    pub fn model_defaults(mut self, defaults: impl Fn() -> M + 'static) -> Self {
        self.model_defaults = Some(Box::new(move || defaults().hparams()));
        self
    }

    /// The data module's hyperparameters when neither a file nor a flag gives them.
    pub fn data_defaults(mut self, defaults: impl Fn() -> DM + 'static) -> Self {
        self.data_defaults = Some(Box::new(move || defaults().hparams()));
        self
    }

    /// The trainer as the program sets it up (callbacks, flags); files and flags override it.
    pub fn trainer_defaults(
        mut self,
        defaults: impl Fn(TrainerBuilder) -> TrainerBuilder + 'static,
    ) -> Self {
        self.trainer_defaults = Box::new(defaults);
        self
    }

    /// The program's description in `--help`.
    pub fn about(mut self, about: impl Into<String>) -> Self {
        self.about = Some(about.into());
        self
    }

    /// Parses the process's arguments and runs the subcommand; the exit code says how it
    /// went (2: a bad command line, 1: an error, printed once; 130/143: Ctrl-C, SIGTERM).
    pub fn run(self) -> ExitCode {
        self.run_from(std::env::args_os())
    }

    /// [`run`](Self::run) on `args` (the first is the program's name).
    pub fn run_from<I, T>(self, args: I) -> ExitCode
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        let name = (args.first())
            .and_then(|p| std::path::Path::new(p).file_name())
            .map_or_else(|| "fulmen".into(), |n| n.to_string_lossy().into_owned());
        let matches = match self.command(name).try_get_matches_from(args) {
            Ok(m) => m,
            Err(e) => {
                let _ = e.print();
                return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
            }
        };
        match self.dispatch(&matches) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(e.exit_code())
            }
        }
    }

    fn schema() -> Schema {
        let names = |h: &[(&str, &str)]| h.iter().map(|(n, _)| n.to_string()).collect();
        Schema {
            trainer: trainer_args().map(|a| a.get_id().to_string()).collect(),
            model: names(M::HPARAMS),
            data: names(DM::HPARAMS),
        }
    }

    /// The command: one subcommand per stage, each with every flag.
    fn command(&self, name: String) -> Command {
        let mut cmd = Command::new(name)
            .subcommand_required(true)
            .arg_required_else_help(true);
        if let Some(about) = &self.about {
            cmd = cmd.about(about.clone());
        }
        for (stage, about) in [
            ("fit", "Train the model (resume with --ckpt_path)"),
            ("validate", "Run the validation loop once"),
            ("test", "Run the test loop once"),
            ("predict", "Run predict_step on every predict batch"),
        ] {
            cmd = cmd.subcommand(stage_command(stage, about, M::HPARAMS, DM::HPARAMS));
        }
        cmd
    }

    fn dispatch(&self, matches: &ArgMatches) -> Result<()> {
        let Some((stage, m)) = matches.subcommand() else {
            return Err(Error::msg("no subcommand: fit, validate, test or predict"));
        };
        let schema = Self::schema();
        let mut config = Config::default();
        for (section, defaults) in [
            ("model", &self.model_defaults),
            ("data", &self.data_defaults),
        ] {
            if let Some(defaults) = defaults {
                for (name, value) in defaults().entries() {
                    config.set(&format!("{section}.{name}"), value.clone(), "the defaults");
                }
            }
        }
        for path in m
            .get_many::<std::path::PathBuf>("config")
            .into_iter()
            .flatten()
        {
            config.load_file(path, &schema)?;
        }
        flags_over(&mut config, m);
        if m.get_flag("print_config") {
            print!("{}", config.to_yaml());
            return Ok(());
        }
        if let Some(seed) = config.get("seed_everything") {
            let seed = seed.as_u64().ok_or_else(|| {
                bad_value(&config, "seed_everything", "a whole number, 0 or more")
            })?;
            crate::seed::seed_everything(seed);
        }
        let trainer_args = trainer_section(&config)?;
        let mut model = M::from_hparams(&hparams(&config, "model", M::HPARAMS)?)
            .map_err(|e| in_section(e, &config, "model"))?;
        let mut dm = DM::from_hparams(&hparams(&config, "data", DM::HPARAMS)?)
            .map_err(|e| in_section(e, &config, "data"))?;
        let mut trainer = (self.trainer_defaults)(Trainer::builder())
            .args(&trainer_args)
            .callback(SaveConfig(config.to_yaml()))
            .build()?;
        let ckpt: Option<CkptPath> = config
            .get("ckpt_path")
            .and_then(config::flag_text)
            .map(|p| p.as_str().into());
        match stage {
            "fit" => match ckpt {
                Some(ckpt) => trainer.fit_from(&mut model, &mut dm, ckpt),
                None => trainer.fit(&mut model, &mut dm),
            },
            _ => {
                if let Some(ckpt) = ckpt {
                    let path = trainer.load_weights(&mut model, ckpt)?;
                    println!("weights from {}", path.display());
                }
                let metrics = match stage {
                    "validate" => trainer.validate(&mut model, &mut dm)?,
                    "test" => trainer.test(&mut model, &mut dm)?,
                    _ => {
                        let n = trainer.predict(&mut model, &mut dm)?.len();
                        println!("{n} prediction batches");
                        return Ok(());
                    }
                };
                for (name, value) in metrics {
                    println!("{name}: {value}");
                }
                Ok(())
            }
        }
    }
}

/// The trainer's flags, each renamed `--trainer.<name>`.
fn trainer_args() -> impl Iterator<Item = Arg> {
    let plain = <TrainerArgs as clap::Args>::augment_args(Command::new("trainer"));
    let args: Vec<Arg> = plain
        .get_arguments()
        .filter(|a| a.get_long().is_some())
        .map(|a| {
            let long = format!("trainer.{}", a.get_id());
            a.clone().long(long).visible_aliases(None::<&str>)
        })
        .collect();
    args.into_iter()
}

/// A subcommand's flags: the config files, the run's own, the trainer's, and one per
/// hyperparameter of the model and of the data module.
fn stage_command(
    stage: &'static str,
    about: &'static str,
    model: &[(&str, &str)],
    data: &[(&str, &str)],
) -> Command {
    let mut cmd = Command::new(stage)
        .about(about)
        .next_help_heading("Run")
        .arg(
            Arg::new("config")
                .long("config")
                .value_name("FILE")
                .action(ArgAction::Append)
                .value_parser(clap::value_parser!(std::path::PathBuf))
                .help("A YAML config (several allowed: later ones override earlier ones; flags override files)"),
        )
        .arg(
            Arg::new("print_config")
                .long("print_config")
                .alias("print-config")
                .action(ArgAction::SetTrue)
                .help("Print the resolved config as YAML (which --config reads back) and exit"),
        )
        .arg(
            Arg::new("seed_everything")
                .long("seed_everything")
                .alias("seed-everything")
                .value_name("SEED")
                .help("Seed every random stream"),
        )
        .arg(
            Arg::new("ckpt_path")
                .long("ckpt_path")
                .alias("ckpt-path")
                .value_name("PATH|last|best")
                .help("fit: resume from this checkpoint; the others: evaluate its weights"),
        )
        .next_help_heading("Trainer")
        .args(trainer_args())
        .next_help_heading("Model and data");
    for (section, schema, whose) in [
        ("model", model, "the model's"),
        ("data", data, "the data module's"),
    ] {
        for (name, ty) in schema {
            let id = format!("{section}.{name}");
            cmd = cmd.arg(
                Arg::new(id.clone())
                    .long(id)
                    .value_name(ty.to_string())
                    .allow_negative_numbers(true)
                    .help(format!("{whose} hyperparameter `{name}`")),
            );
        }
    }
    cmd
}

/// Lays the flags given on the command line over `config`.
fn flags_over(config: &mut Config, m: &ArgMatches) {
    for id in m.ids() {
        let id = id.as_str();
        let given = m.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
        if !given || id == "config" || id == "print_config" {
            continue;
        }
        let raw: Vec<String> = m
            .get_raw(id)
            .into_iter()
            .flatten()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let value = match raw.as_slice() {
            [] => Value::Bool(true),
            [one] => config::scalar(one),
            many => Value::Sequence(many.iter().map(|v| config::scalar(v)).collect()),
        };
        let dotted = match id {
            "seed_everything" | "ckpt_path" => id.to_string(),
            _ if id.contains('.') => id.to_string(),
            _ => format!("trainer.{id}"),
        };
        config.set(&dotted, value, &format!("--{dotted}"));
    }
}

/// The trainer's flags from the config's `trainer` section, each checked by the flag's own
/// parser; an error names the key and where it was given.
fn trainer_section(config: &Config) -> Result<TrainerArgs> {
    let known: Vec<Arg> = trainer_args().collect();
    let mut argv = vec!["trainer".to_string()];
    for (key, value) in config.section("trainer") {
        let dotted = format!("trainer.{key}");
        // A list is the flag's own list: `csv,tensorboard` where the flag splits at commas,
        // `[0,1]` (device ordinals) elsewhere.
        let delimited = known
            .iter()
            .find(|a| a.get_id() == key.as_str())
            .is_some_and(|a| a.get_value_delimiter().is_some());
        let flag = match (&value, config::flag_text(&value)) {
            (Value::Null, _) => continue, // unset, as in Lightning's configs
            (Value::Sequence(items), _) if !delimited => {
                let items: Vec<String> = items.iter().filter_map(config::flag_text).collect();
                format!("--{dotted}=[{}]", items.join(","))
            }
            (_, Some(text)) => format!("--{dotted}={text}"),
            (_, None) => return Err(bad_value(config, &dotted, "a value")),
        };
        // Each flag alone first, so that an error names where it was given.
        parse_trainer(&known, ["trainer".to_string(), flag.clone()])
            .map_err(|e| Error::msg(format!("{}: {e}", config.source(&dotted))))?;
        argv.push(flag);
    }
    parse_trainer(&known, argv).map_err(Error::msg)
}

fn parse_trainer(
    known: &[Arg],
    argv: impl IntoIterator<Item = String>,
) -> std::result::Result<TrainerArgs, String> {
    let cmd = Command::new("trainer").args(known.iter().cloned());
    let text = |e: clap::Error| {
        let rendered = e.render().to_string();
        let first = rendered.lines().next().unwrap_or_default();
        first.trim_start_matches("error: ").to_string()
    };
    let matches = cmd.try_get_matches_from(argv).map_err(text)?;
    TrainerArgs::from_arg_matches(&matches).map_err(text)
}

/// The hyperparameters `schema` names, from `section` of the config; a missing one is an
/// error saying how to give it.
fn hparams(config: &Config, section: &str, schema: &[(&str, &str)]) -> Result<HParams> {
    let mut h = HParams::new();
    for (name, ty) in schema {
        let dotted = format!("{section}.{name}");
        let value = config.get(&dotted).ok_or_else(|| {
            Error::msg(format!(
                "`{dotted}` ({ty}) is not set: give `--{dotted}`, or `{name}:` under `{section}:` in a --config file"
            ))
        })?;
        h.insert(name, value);
    }
    Ok(h)
}

/// A hyperparameter's error from `from_hparams`, with its section and where it was given.
fn in_section(e: Error, config: &Config, section: &str) -> Error {
    match e {
        Error::Config { setting, message } => {
            let dotted = format!("{section}.{setting}");
            Error::msg(format!("{}: `{dotted}` {message}", config.source(&dotted)))
        }
        other => other,
    }
}

fn bad_value(config: &Config, dotted: &str, expected: &str) -> Error {
    let shown = config
        .get(dotted)
        .map(|v| {
            serde_yaml::to_string(v)
                .unwrap_or_default()
                .trim()
                .to_string()
        })
        .unwrap_or_default();
    Error::msg(format!(
        "{}: `{dotted}` is {shown}, not {expected}",
        config.source(dotted)
    ))
}

/// Writes the config a run used as `config.yaml` in its log folder (Lightning's
/// `SaveConfigCallback`), on rank 0.
struct SaveConfig(String);

impl Callback for SaveConfig {
    fn setup(&mut self, trainer: &mut TrainerView, _stage: crate::Stage) {
        if trainer.global_rank() != 0 {
            return;
        }
        if let Some(dir) = trainer.log_dir() {
            if let Err(e) = crate::files::write_bytes(&dir.join("config.yaml"), self.0.as_bytes()) {
                trainer.fail(e);
            }
        }
    }
}
