//! cargo-fuzz target `mqtt_gate`: see `fieldlab_broker::gate::fuzzing::fuzz_mqtt_gate`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fieldlab_broker::gate::fuzzing::fuzz_mqtt_gate(data));
