//! Tests of one file that draw from fulmen's global seed stream (`seed_everything`, model
//! initialization, shuffling) take turns, so that none draws while another runs.

/// Holds the turn until dropped.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static RUNS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    RUNS.lock().unwrap_or_else(|e| e.into_inner())
}
