//! Logging as the operations handbooks configure it: `level`, `format` (text | json), and optionally a `file`
//! rotated by size (`max_size`, `max_files`), besides stderr.
//!
//! Rotation uses the file-rotate crate (`fieldlab.log` is current; `fieldlab.log.1` the newest
//! rotated, up to `.N`), written through tracing-appender's non-blocking writer so a slow
//! disk never stalls request handling. The writer is not lossy: when its buffer is full the
//! logging thread waits rather than dropping lines. Request ids reach every line through the
//! server's `request` span.

use fieldlab_topology::config::{LogFormat, LoggingConfig};
use file_rotate::compression::Compression;
use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate};
use std::path::Path;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// Keeps the file writer's thread alive; drop it last (it flushes).
pub struct LogGuard(#[allow(dead_code)] Option<tracing_appender::non_blocking::WorkerGuard>);

/// A size-rotated log file: rotate once a write took it past `max_bytes`; keep `max_files`.
pub fn rotating_file(
    path: &Path,
    max_bytes: u64,
    max_files: usize,
) -> anyhow::Result<FileRotate<AppendCount>> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("logging.file: cannot create {}: {e}", dir.display()))?;
    }
    Ok(FileRotate::new(
        path,
        AppendCount::new(max_files),
        ContentLimit::BytesSurpassed(max_bytes as usize),
        Compression::None,
        None,
    ))
}

fn layer<W>(format: LogFormat, ansi: bool, w: W) -> Box<dyn Layer<Registry> + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let l = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(w);
    match format {
        LogFormat::Json => l.json().boxed(),
        LogFormat::Text => l.boxed(),
    }
}

/// Install the global subscriber. `RUST_LOG` wins over `level` when set.
pub fn init(cfg: &LoggingConfig) -> anyhow::Result<LogGuard> {
    use std::io::IsTerminal;
    let level = cfg.level.as_str();
    // rumqttd logs every client that disconnects abruptly at ERROR level (including fieldlab's
    // own start-up probe); keep it at warn unless the user asks for debug output.
    let quiet_deps = if matches!(level, "debug" | "trace") {
        ""
    } else {
        ",rumqttd=warn,rumqttd::server::broker=off,rumqttd::router::routing=off,rumqttc=warn"
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level}{quiet_deps}")));
    let mut layers = vec![layer(
        cfg.format,
        std::io::stderr().is_terminal(),
        std::io::stderr,
    )];
    let mut guard = None;
    if let Some(path) = &cfg.file {
        let file = rotating_file(path, cfg.max_size.get(), cfg.max_files)?;
        let (w, g) = tracing_appender::non_blocking::NonBlockingBuilder::default()
            .lossy(false)
            .thread_name("fieldlab-log")
            .finish(file);
        layers.push(layer(cfg.format, false, w));
        guard = Some(g);
    }
    let _ = Registry::default().with(layers).with(filter).try_init();
    Ok(LogGuard(guard))
}

/// Level and format only, to stderr (benchmarks, one-shot commands).
pub fn init_stderr(level: &str, format: LogFormat) {
    let cfg = LoggingConfig {
        level: fieldlab_topology::config::LogLevel::parse_word(level)
            .unwrap_or(fieldlab_topology::config::LogLevel::Warn),
        format,
        ..LoggingConfig::default()
    };
    let _ = init(&cfg);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn rotates_by_size_and_keeps_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/fieldlab.log");
        let mut f = rotating_file(&path, 1024, 3).unwrap();
        let line = format!("{}\n", "x".repeat(99));
        for _ in 0..100 {
            f.write_all(line.as_bytes()).unwrap();
        }
        f.flush().unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.path().join("logs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "fieldlab.log",
                "fieldlab.log.1",
                "fieldlab.log.2",
                "fieldlab.log.3"
            ]
        );
        for n in &names {
            let len = std::fs::metadata(dir.path().join("logs").join(n))
                .unwrap()
                .len();
            // Cut after the write that passed 1 KiB: at most one line over.
            assert!(len <= 1024 + 100, "{n}: {len}");
        }
        let rotated = std::fs::metadata(dir.path().join("logs/fieldlab.log.3"))
            .unwrap()
            .len();
        assert!(rotated > 1024, "rotated files are full: {rotated}");
    }
}
