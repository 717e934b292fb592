//! Fuzz target `jwe_decrypt`: see `fedauthz_fuzz::targets::jwe_decrypt` and docs/fuzzing.md.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fedauthz_fuzz::targets::jwe_decrypt(data));
