//! Fuzz target `config`: see `fedauthz_fuzz::targets::config` and docs/fuzzing.md.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fedauthz_fuzz::targets::config(data));
