//! `fieldlab ratelimit serve`: argument parsing and wiring only; the service lives in
//! `fieldlab-topology::ratelimit` (its benchmark, `fieldlab bench ratelimit`, in fieldlab-bench).

use clap::{Args, Subcommand};
use fieldlab_topology::config::{Config, RatelimitBackend};
use fieldlab_topology::ratelimit as rl;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum RatelimitCmd {
    /// Run only the rate-limit service (POST /api/ratelimit/check, config, stats, /metrics).
    ///
    /// Always authenticated, whatever auth.enabled says: a check needs an API key or token of
    /// any role, configuration needs an admin. Make them with `fieldlab users key add NAME
    /// --role viewer` / `fieldlab users add NAME --role admin` in the same --data-dir.
    Serve(ServeArgs),
}

#[derive(Args)]
pub struct ServeArgs {
    /// fieldlab.yaml to load (its `ratelimit`, `server`, `storage.data_dir` and `logging` sections).
    #[arg(long, env = "FIELDLAB_CONFIG")]
    config: Option<PathBuf>,
    /// Users and API keys; with the memory backend also the rules set through the API
    /// (ratelimit/rules.json; the redis and hybrid backends keep them in Redis). Default ./data.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// HTTP port; 0 picks a free one and prints it. Default 8080.
    #[arg(long)]
    http_port: Option<u16>,
    /// Where rate-limit state lives.
    #[arg(long, ignore_case = true, value_parser = crate::word_parser::<RatelimitBackend>())]
    backend: Option<RatelimitBackend>,
    /// Redis URL for the redis and hybrid backends (also REDIS_URL).
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,
}

pub fn run(cmd: RatelimitCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        RatelimitCmd::Serve(a) => serve(a),
    }
}

fn serve(a: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = Config::load(
        a.config.as_deref(),
        |k| std::env::var(k).ok(),
        std::env::vars(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(d) = a.data_dir {
        cfg.storage.data_dir = d;
    }
    if let Some(p) = a.http_port {
        cfg.server.port = p;
    }
    if let Some(b) = a.backend {
        cfg.ratelimit.backend = b;
    }
    if let Some(u) = a.redis_url {
        cfg.ratelimit.redis_url = u;
        // --redis-url alone means Redis; with --backend memory it is a mistake.
        cfg.ratelimit
            .redis_url_selects_backend(true, a.backend.is_some())
            .map_err(|p| {
                let p = p.within("ratelimit");
                anyhow::anyhow!("--redis-url ({}) {}", p.key, p.message)
            })?;
    }
    crate::logging::init_stderr(cfg.logging.level.as_str(), cfg.logging.format);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(rl::serve(cfg, crate::shutdown_signal(), |_| {}))?;
    Ok(ExitCode::SUCCESS)
}
