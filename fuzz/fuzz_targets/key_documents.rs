//! Fuzz target `key_documents`: see `fedauthz_fuzz::targets::key_documents` and docs/fuzzing.md.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fedauthz_fuzz::targets::key_documents(data));
