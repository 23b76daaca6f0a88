//! fieldlab-core: the vocabulary every other fieldlab crate speaks.
//!
//! Why this crate exists: the emulator, ingest, store, detectors and the HTTP server all talk
//! about the same things — a [`Reading`] from a device, the [`SeriesKey`] a value is stored
//! under, the [`DeviceDirectory`] of known devices; and the [`config`] machinery with which each
//! crate loads its own section of what the user wrote. Keeping these in one dependency-light
//! crate lets every capability crate depend on it without depending on each other.
//!
//! Architecture invariant: this crate does no network I/O and starts no tasks. The only file it
//! reads is the configuration file, on request. (`process` sets process flags, no I/O;
//! `reconnect` waits between a caller's polls, its I/O is the caller's.)

pub mod backoff;
pub mod batch;
pub mod cluster;
pub mod config;
pub mod directory;
#[doc(hidden)]
pub mod fuzzing;
pub mod principal;
pub mod process;
pub mod readiness;
pub mod reading;
pub mod reconnect;
pub mod redact;
pub mod time;

pub use batch::{Batch, Row, SeriesCache};
pub use config::ConfigError;
pub use directory::{DeviceDirectory, DeviceEntry};
pub use principal::{AuthMethod, Principal, Role};
pub use readiness::Readiness;
pub use reading::{FieldValue, Names, Point, Reading, SeriesKey, Tags};
