//! Fuzz target `check_request`: see `fedauthz_fuzz::targets::check_request` and docs/fuzzing.md.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fedauthz_fuzz::targets::check_request(data));
