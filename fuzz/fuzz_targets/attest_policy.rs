//! cargo-fuzz target `attest_policy`: see `fieldlab_attest::fuzzing::fuzz_attest_policy`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fieldlab_attest::fuzzing::fuzz_attest_policy(data));
