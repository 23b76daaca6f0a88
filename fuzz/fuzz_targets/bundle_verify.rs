//! cargo-fuzz target `bundle_verify`: see `fieldlab_attest::fuzzing::fuzz_bundle_verify`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fieldlab_attest::fuzzing::fuzz_bundle_verify(data));
