//! cargo-fuzz target `chunk_decode`: see `fieldlab_store::fuzzing::fuzz_chunk_decode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fieldlab_store::fuzzing::fuzz_chunk_decode(data));
