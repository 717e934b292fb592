//! Fuzz target `verify_token`: see `fedauthz_fuzz::targets::verify_token` and docs/fuzzing.md.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fedauthz_fuzz::targets::verify_token(data));
