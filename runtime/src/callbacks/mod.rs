//! Built-in callbacks, one per file (more arrive with the engineering issue).
