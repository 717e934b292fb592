//! Shared by the fuzz crate (`fuzz/src/lib.rs`) and the main crate's
//! `tests/fuzz_regressions.rs` (included there by path): the fixture, the target bodies and
//! the seed generator. Only crates both sides depend on are used here.

pub mod fixture;
pub mod seeds;
pub mod targets;
