//! fieldlab-emulator: devices that behave like devices.
//!
//! Why it exists: test engineers need realistic fleets against their MQTT backend, and students
//! need data whose physics make sense before they can learn what bad data looks like. A device
//! is a [`model`] (its fields and how they evolve, physically consistent; [`builtin`] holds most
//! of the catalog, [`custom`] the types written in YAML from [`generator`]s), driven by a seeded
//! random generator (the same seed gives the same values) and a [`scenario`] timeline whose
//! phases really change the values, with [`fault`]s injected on request; [`fleet`] decides what
//! is due when, and [`runner`] publishes it over MQTT.
//!
//! Architecture invariant: models, generators and scenarios are pure (no I/O, no clock reads:
//! time is passed in), so they are unit-testable and reproducible; only `runner` touches the
//! network.

pub mod builtin;
mod config;
pub mod custom;
pub mod fault;
pub mod fleet;
pub mod generator;
pub mod load;
pub mod model;
pub mod runner;
pub mod scenario;
/// MQTT over TLS: shared with ingest, see `fieldlab-mqtt-tls`.
pub use config::{
    ConnectionMode, DeviceSettings, DeviceSpec, DevicesConfig, MqttProtocol, ScenarioSpec,
};
pub use fieldlab_mqtt_tls as tls;

pub use model::{catalog, DeviceModel, FieldInfo, TypeInfo};
pub use runner::{
    demo_fleet, start, start_with, validate_devices, validate_fleet, Clock, ControlError, Emulator,
    EmulatorMetrics, EmulatorSettings,
};
pub use scenario::Timeline;
