//! cargo-fuzz target `wal_replay`: see `fieldlab_store::fuzzing::fuzz_wal_replay`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fieldlab_store::fuzzing::fuzz_wal_replay(data));
