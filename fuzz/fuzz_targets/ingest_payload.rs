//! cargo-fuzz target `ingest_payload`: see `fieldlab_ingest::fuzzing::fuzz_ingest_payload`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fieldlab_ingest::fuzzing::fuzz_ingest_payload(data));
