//! All of `fieldlab`'s end-to-end tests in one test binary: each module drives the real
//! `fieldlab` executable (and real peers) the way a user would. One binary instead of one per
//! file: the product is linked once, which saves CI minutes and gigabytes of target dir.

mod browser;
mod common;

mod architecture;
mod auth;
mod cap;
mod cli;
mod cluster;
mod crash;
mod data_cli;
mod deploy;
mod disk_full;
mod emulator;
mod hostile_auth;
mod hostile_data;
mod hostile_ingest;
mod opcua_tls;
mod openapi;
mod ratelimit;
mod scaleout;
mod sinks;
mod tls;
mod ui;
mod up;
