//! `fieldlab bench emulator` without building the rest of fieldlab:
//! `cargo run --release -p fieldlab-emulator --example bench [-- SIZES RATE_DEVICES RATE_INTERVAL_MS DURATION_S RUNS]`.

use std::process::{Command, ExitCode};

fn main() -> anyhow::Result<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--rss-child") {
        return fieldlab_emulator::bench::rss_child(args[1].parse()?);
    }
    let get = |i: usize, d: &str| args.get(i).cloned().unwrap_or_else(|| d.to_string());
    let a = fieldlab_emulator::bench::BenchEmulatorArgs {
        sizes: get(0, "100000,1000000")
            .split(',')
            .filter_map(|s| s.parse().ok())
            .collect(),
        rate_devices: get(1, "1000").parse()?,
        rate_interval: get(2, "5").parse()?,
        duration: get(3, "5").parse()?,
        runs: get(4, "3").parse()?,
        no_memory: false,
    };
    let exe = std::env::current_exe()?;
    fieldlab_emulator::bench::run(a, move |n| {
        let mut c = Command::new(&exe);
        c.args(["--rss-child", &n.to_string()]);
        c
    })
}
