//! A trainer that writes nothing: no logger, no checkpoints, no progress bar, no summary.

pub fn trainer() -> fulmen::TrainerBuilder {
    fulmen::Trainer::builder()
        .no_logger()
        .enable_checkpointing(false)
        .enable_progress_bar(false)
        .enable_model_summary(false)
}
