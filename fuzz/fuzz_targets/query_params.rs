//! cargo-fuzz target `query_params`: see `fieldlab_store::fuzzing::fuzz_query_params`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fieldlab_store::fuzzing::fuzz_query_params(data));
