//! The workspace root package: it owns the examples, integration tests, ui tests and benchmarks.
