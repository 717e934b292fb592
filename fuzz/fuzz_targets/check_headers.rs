//! Fuzz target `check_headers`: see `fedauthz_fuzz::targets::check_headers` and docs/fuzzing.md.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fedauthz_fuzz::targets::check_headers(data));
