//! Fuzz target `api_key`: see `fedauthz_fuzz::targets::api_key` and docs/fuzzing.md.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fedauthz_fuzz::targets::api_key(data));
