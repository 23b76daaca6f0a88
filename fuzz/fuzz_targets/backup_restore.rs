//! cargo-fuzz target `backup_restore`: see `fieldlab_store::fuzzing::fuzz_backup_restore`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fieldlab_store::fuzzing::fuzz_backup_restore(data));
