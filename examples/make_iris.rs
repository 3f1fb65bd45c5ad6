//! The tutorial's "download script": writes `data/iris.npz` (`X`: 150×4 float32, `y`: 150
//! int64), the layout `np.savez("data/iris.npz", X=X, y=y)` gives, from the Iris copy bundled
//! with fulmen (the machine may have no network).

fn main() -> std::process::ExitCode {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "data/iris.npz".to_string());
    match fulmen::data::iris::write_npz(&path) {
        Ok(()) => {
            println!("wrote {path}: X (150, 4) float32, y (150,) int64, 50 samples per class");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
