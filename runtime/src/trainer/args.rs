use std::path::PathBuf;

/// The trainer's command-line flags, to `#[command(flatten)]` into a program's own clap
/// parser; apply them with [`TrainerBuilder::args`](super::TrainerBuilder::args). Flags not
/// given keep the values set in code.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TrainerArgs {
    /// Maximum number of epochs.
    #[arg(long)]
    pub max_epochs: Option<usize>,
    /// Maximum number of optimizer steps.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// cpu, gpu (cuda) or auto.
    #[arg(long)]
    pub accelerator: Option<String>,
    /// Number of devices.
    #[arg(long)]
    pub devices: Option<usize>,
    /// Where lightning_logs/ is written.
    #[arg(long)]
    pub default_root_dir: Option<PathBuf>,
    /// Print no progress bar.
    #[arg(long)]
    pub no_progress_bar: bool,
}
