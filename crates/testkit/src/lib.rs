//! fieldlab-testkit: the real peers fieldlab's tests and benchmarks run against.
//!
//! Why it exists: tests and benchmarks compare fieldlab with, and test it against, the real
//! programs users run beside it (InfluxDB 1.x, PostgreSQL, Redis, Mosquitto, NATS, wrk), and
//! make the certificates TLS tests need (`pki`). Starting
//! them on free ports in temporary directories, waiting until they answer and stopping them
//! afterwards is written once, here, and kept out of the product crates (`publish = false`;
//! product crates take it only as a dev-dependency, `fieldlab-bench` as a dependency).

mod peers;
pub mod pki;
pub mod process;
pub mod servers;

pub use peers::{Mosquitto, TempNats, TempRedis};
pub use process::{client_json, peer_command};
pub use servers::{dir_bytes, free_port, InfluxServer, PostgresServer};
