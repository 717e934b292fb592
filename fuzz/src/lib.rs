//! fedauthz's fuzz targets (`cargo fuzz`, see docs/fuzzing.md). The target bodies live in
//! [`harness`], which `tests/fuzz_regressions.rs` in the main crate also compiles, so a crash
//! input found here replays through exactly the same code as a regular `#[test]`.

pub mod harness;

pub use harness::{fixture, seeds, targets};
