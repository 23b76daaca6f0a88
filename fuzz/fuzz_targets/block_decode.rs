//! cargo-fuzz target `block_decode`: see `fieldlab_store::fuzzing::fuzz_block_decode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fieldlab_store::fuzzing::fuzz_block_decode(data));
