//! Fuzz target `verify_signed`: see `fedauthz_fuzz::targets::verify_signed` and docs/fuzzing.md.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fedauthz_fuzz::targets::verify_signed(data));
