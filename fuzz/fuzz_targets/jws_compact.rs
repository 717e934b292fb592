//! Fuzz target `jws_compact`: see `fedauthz_fuzz::targets::jws_compact` and docs/fuzzing.md.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fedauthz_fuzz::targets::jws_compact(data));
