//! cargo-fuzz target `config_yaml`: see `fieldlab_core::fuzzing::fuzz_config_yaml`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fieldlab_core::fuzzing::fuzz_config_yaml(data));
