//! Fuzzing entry points of the payload parser (see `fieldlab_core::fuzzing`).
//!
//! Why it exists: every MQTT message body is untrusted bytes from a device. The cargo-fuzz
//! target `fuzz/fuzz_targets/ingest_payload.rs` calls [`fuzz_ingest_payload`], and so does the
//! stable corpus replay below. Not part of fieldlab's API.

/// `ingest_payload`: any bytes as a message body (JSON in every accepted shape, line protocol,
/// JSON batches). A NUL byte splits an optional topic off the front, so the fuzzer also varies
/// the topic the device id and type are taken from.
pub fn fuzz_ingest_payload(data: &[u8]) {
    let (topic, payload) = match data.iter().position(|b| *b == 0) {
        Some(i) => (
            String::from_utf8_lossy(&data[..i]).into_owned(),
            &data[i + 1..],
        ),
        None => ("devices/sensor/t1/telemetry".to_string(), data),
    };
    let received_ms = 1_767_225_600_000;
    match crate::parse(&topic, payload, received_ms) {
        Ok(readings) => {
            assert!(!readings.is_empty(), "accepted a message with no reading");
            for r in &readings {
                assert!(!r.fields.is_empty(), "accepted a reading without fields");
                for (_, v) in &r.fields {
                    let _ = v.as_f64();
                }
            }
        }
        Err(reason) => assert!(!reason.is_empty(), "a refusal must give a reason"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ingest_payload_corpus_replays() {
        let n = fieldlab_core::fuzzing::replay(
            env!("CARGO_MANIFEST_DIR"),
            "ingest_payload",
            super::fuzz_ingest_payload,
        );
        assert!(n >= 5);
    }
}
