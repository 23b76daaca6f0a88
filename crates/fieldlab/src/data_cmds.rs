//! `fieldlab query`, `export`, `backup`, `restore`: the store's data on the command line.
//!
//! `query` and `export` open the data dir **read-only** (no lock, nothing changed), so they
//! work whether or not `fieldlab up` is running on it, and need no network; they see what was
//! acknowledged when they start. `backup` needs a consistent cut of a store that may be
//! taking writes: with `--url` it asks the running instance (`GET /api/v1/backup`); without,
//! it opens the data dir itself, which fails with a clear message if an instance holds it.

use anyhow::{bail, Context};
use clap::Args;
use fieldlab_core::time::{format_ms, now_ms};
use fieldlab_export::Format;
use fieldlab_store::{QuerySpec, SeriesResult, Store, StoreOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Which series and which time range; shared by `query` and `export`.
#[derive(Args, Clone)]
pub struct Selection {
    /// Data directory of `fieldlab up`.
    #[arg(long, env = "DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Device ids (comma-separated).
    #[arg(long)]
    device_id: Option<String>,
    /// Device types (comma-separated), e.g. PvInverter.
    #[arg(long)]
    device_type: Option<String>,
    /// Fields (comma-separated), e.g. temperature,humidity.
    #[arg(long)]
    field: Option<String>,
    /// Site tag (comma-separated).
    #[arg(long)]
    site: Option<String>,
    /// Any tag, NAME=VALUE or NAME=VALUE1,VALUE2 (any of them); repeatable.
    #[arg(long, value_name = "NAME=VALUE")]
    tag: Vec<String>,
    /// Start: RFC 3339, epoch ms, or relative like -1h. Default: the beginning.
    #[arg(long)]
    from: Option<String>,
    /// End (inclusive), same forms. Default: the end.
    #[arg(long)]
    to: Option<String>,
    /// Bucket width, e.g. 60s; one row per bucket.
    #[arg(long)]
    step: Option<String>,
    /// Aggregations per bucket (comma-separated): mean, min, max, sum, count, first, last, stddev.
    #[arg(long)]
    agg: Option<String>,
}

impl Selection {
    fn params(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut p = Vec::new();
        let mut put = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                p.push((k.to_string(), v.clone()));
            }
        };
        put("device_id", &self.device_id);
        put("device_type", &self.device_type);
        put("field", &self.field);
        put("site", &self.site);
        put("from", &self.from);
        put("to", &self.to);
        put("step", &self.step);
        put("agg", &self.agg);
        for t in &self.tag {
            let (k, v) = t
                .split_once('=')
                .with_context(|| format!("--tag {t}: use NAME=VALUE, e.g. --tag line=3"))?;
            p.push((format!("tag.{k}"), v.to_string()));
        }
        Ok(p)
    }

    fn spec(&self, extra: &[(String, String)]) -> anyhow::Result<QuerySpec> {
        let mut p = self.params()?;
        p.extend_from_slice(extra);
        QuerySpec::from_params(
            p.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            now_ms(),
            &[],
        )
        .map_err(|e| {
            let flag = e.param.replace('_', "-");
            anyhow::anyhow!("--{flag}: {}", e.message)
        })
    }

    fn open(&self) -> anyhow::Result<Store> {
        let (s, _) = Store::open_read_only(&self.data_dir)
            .with_context(|| format!("cannot read the store in {}", self.data_dir.display()))?;
        Ok(s)
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Output {
    Table,
    Csv,
    Json,
}

#[derive(Args)]
pub struct QueryArgs {
    #[command(flatten)]
    sel: Selection,
    /// At most N rows per series.
    #[arg(long)]
    limit: Option<usize>,
    /// Newest first.
    #[arg(long)]
    desc: bool,
    #[arg(long, value_enum, default_value = "table")]
    format: Output,
}

pub fn query(a: QueryArgs) -> anyhow::Result<()> {
    let mut extra = Vec::new();
    if let Some(l) = a.limit {
        extra.push(("limit".to_string(), l.to_string()));
    }
    if a.desc {
        extra.push(("order".to_string(), "desc".to_string()));
    }
    let q = a.sel.spec(&extra)?;
    if q.selector.is_empty() {
        bail!("select series with at least one of --device-id, --device-type, --field, --site, --tag (fieldlab export takes everything)");
    }
    let store = a.sel.open()?;
    let res = store.query(&q)?;
    if res.is_empty() {
        bail!("no stored series matches these filters");
    }
    let cols = q.columns();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match a.format {
        Output::Json => {
            let v = fieldlab_server::data::query_json(&q, a.sel.step.as_deref(), &res);
            serde_json::to_writer_pretty(&mut out, &v)?;
            writeln!(out)?;
        }
        Output::Csv => {
            let mut w = csv::Writer::from_writer(out);
            let mut header = vec!["ts", "device_id", "field"];
            header.extend(&cols);
            w.write_record(&header)?;
            for r in &res {
                for (t, vals) in &r.rows {
                    let mut rec = vec![
                        format_ms(*t),
                        r.info.device_id.clone(),
                        r.info.field.clone(),
                    ];
                    rec.extend(vals.iter().map(fieldlab_export::text));
                    w.write_record(&rec)?;
                }
            }
            w.flush()?;
        }
        Output::Table => table(&mut out, &res, &cols)?,
    }
    Ok(())
}

/// Aligned columns, one row per point (or bucket), series after series.
fn table(out: &mut impl Write, res: &[SeriesResult], cols: &[&str]) -> anyhow::Result<()> {
    let mut header: Vec<String> = vec!["ts".into(), "device_id".into(), "field".into()];
    header.extend(cols.iter().map(|c| c.to_string()));
    let mut rows: Vec<Vec<String>> = Vec::new();
    for r in res {
        for (t, vals) in &r.rows {
            let mut row = vec![
                format_ms(*t),
                r.info.device_id.clone(),
                r.info.field.clone(),
            ];
            row.extend(vals.iter().map(fieldlab_export::text));
            rows.push(row);
        }
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        writeln!(out, "{}", line.join("  ").trim_end())?;
    }
    let cut = res.iter().filter(|r| r.truncated).count();
    if cut > 0 {
        writeln!(out, "({cut} series cut at --limit)")?;
    }
    Ok(())
}

#[derive(Args)]
pub struct ExportArgs {
    #[command(flatten)]
    sel: Selection,
    /// csv, jsonl or parquet.
    #[arg(long, default_value = "csv")]
    format: String,
    /// File to write; default standard output (not for parquet on a terminal).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn export(a: ExportArgs) -> anyhow::Result<()> {
    let format: Format = a
        .format
        .parse()
        .map_err(|e| anyhow::anyhow!("--format: {e}"))?;
    let q = a.sel.spec(&[])?;
    let store = a.sel.open()?;
    // Units from the device catalog (built-in types, and custom ones this process loaded).
    let units = fieldlab_emulator::model::catalog_units();
    let sum = match &a.out {
        Some(path) => {
            let tmp = path.with_extension("partial");
            let f = std::fs::File::create(&tmp)
                .with_context(|| format!("cannot create {}", tmp.display()))?;
            let (f, sum) = fieldlab_export::export(&store, &q, format, &units, f)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            sum
        }
        None => {
            use std::io::IsTerminal;
            if format == Format::Parquet && std::io::stdout().is_terminal() {
                bail!("--format parquet is binary; pass --out FILE or redirect standard output");
            }
            let out = std::io::BufWriter::new(std::io::stdout());
            let (mut out, sum) = fieldlab_export::export(&store, &q, format, &units, out)?;
            out.flush()?;
            sum
        }
    };
    eprintln!(
        "exported {} rows of {} series as {}",
        sum.rows,
        sum.series,
        format.extension()
    );
    Ok(())
}

#[derive(Args)]
pub struct BackupArgs {
    /// Archive to write (a tar, created with mode 0600).
    #[arg(long)]
    out: PathBuf,
    /// Back up a running instance through its HTTP API, e.g. http://127.0.0.1:8080.
    #[arg(long, conflicts_with = "data_dir")]
    url: Option<String>,
    /// With --url and auth on: an admin API key or access token (sent as `Authorization:
    /// Bearer`).
    #[arg(long, env = "FIELDLAB_TOKEN", hide_env_values = true, requires = "url")]
    token: Option<String>,
    /// Also archive secrets (JWT signing secret, users and API-key hashes, signing keys,
    /// private keys); without it they are left out and listed as excluded.
    #[arg(long)]
    include_secrets: bool,
    /// Back up this data dir directly (no instance may be running on it).
    #[arg(long, env = "DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
}

/// Create `path` for writing with mode 0600 whatever the umask (a backup may hold secrets).
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        o.mode(0o600);
        let f = o.open(path)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        Ok(f)
    }
    #[cfg(not(unix))]
    o.open(path)
}

pub fn backup(a: BackupArgs) -> anyhow::Result<()> {
    let tmp = a.out.with_extension("partial");
    let mut f = create_private(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let opts = fieldlab_store::backup::Options {
        include_secrets: a.include_secrets,
    };
    let pb = crate::progress::spinner(&format!("writing the backup {}", a.out.display()));
    let r = match &a.url {
        Some(url) => backup_online(url, a.token.as_deref(), opts, &mut f),
        None => backup_offline(&a.data_dir, opts, f.try_clone()?),
    };
    pb.finish_and_clear();
    if let Err(e) = r {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    f.sync_all()?;
    std::fs::rename(&tmp, &a.out)?;
    if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    println!(
        "backup written to {} ({} bytes)",
        a.out.display(),
        std::fs::metadata(&a.out)?.len()
    );
    // What was left out, read back from the archive's manifest.
    match fieldlab_store::backup::read_manifest(std::io::BufReader::new(std::fs::File::open(
        &a.out,
    )?)) {
        Ok(m) if !m.excluded.is_empty() => {
            println!("not in the backup:");
            for x in &m.excluded {
                println!("  {}: {}", x.path, x.reason);
            }
        }
        Ok(_) => {}
        Err(e) => eprintln!(
            "warning: {}: {e}; this version of fieldlab cannot restore it",
            a.out.display()
        ),
    }
    Ok(())
}

fn backup_online(
    url: &str,
    token: Option<&str>,
    opts: fieldlab_store::backup::Options,
    f: &mut std::fs::File,
) -> anyhow::Result<()> {
    let base = format!("{}/api/v1/backup", url.trim_end_matches('/'));
    let u = if opts.include_secrets {
        format!("{base}?include_secrets=true")
    } else {
        base.clone()
    };
    let mut req = reqwest::blocking::Client::builder()
        .timeout(None)
        .build()?
        .get(&u);
    if let Some(t) = token.filter(|t| !t.is_empty()) {
        req = req.bearer_auth(t);
    }
    let mut r = req
        .send()
        .with_context(|| format!("cannot reach {base}; is fieldlab up running there?"))?;
    let status = r.status();
    if status == reqwest::StatusCode::UNAUTHORIZED {
        let hint = if token.is_some() {
            "the token was refused (expired, revoked or wrong); pass a valid admin API key or access token"
        } else {
            "auth is on there; pass --token KEY (an admin API key or access token) or set FIELDLAB_TOKEN"
        };
        bail!("{base}: 401 Unauthorized: {hint}");
    }
    if status == reqwest::StatusCode::FORBIDDEN {
        bail!(
            "{base}: 403 Forbidden: only an admin may take a backup; use an admin's API key ({})",
            problem_detail(r)
        );
    }
    if !status.is_success() {
        bail!("{base}: {status}: {}", problem_detail(r));
    }
    r.copy_to(f)
        .with_context(|| format!("{base}: transfer broken"))?;
    Ok(())
}

/// The `detail` of a problem+json answer, else its text.
fn problem_detail(r: reqwest::blocking::Response) -> String {
    let text = r.text().unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_string))
        .unwrap_or(text)
}

fn backup_offline(
    dir: &Path,
    opts: fieldlab_store::backup::Options,
    f: std::fs::File,
) -> anyhow::Result<()> {
    if !dir.join("wal").is_dir() && !dir.join("blocks").is_dir() {
        bail!(
            "{} holds no fieldlab store; pass --data-dir, or --url for a running instance",
            dir.display()
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (store, _) = Store::open(StoreOptions::new(dir)).map_err(|e| match e {
            fieldlab_store::StoreError::Locked(_) => anyhow::anyhow!(
                "{} is in use by a running fieldlab; back it up online with --url http://HOST:PORT (and --token KEY or FIELDLAB_TOKEN when auth is on)",
                dir.display()
            ),
            e => anyhow::Error::from(e),
        })?;
        let r = store.backup_with(opts, f).await;
        store.close().await?;
        r?;
        anyhow::Ok(())
    })
}

#[derive(Args)]
pub struct RestoreArgs {
    /// Archive written by `fieldlab backup`.
    file: PathBuf,
    /// Empty (or new) directory to restore into.
    #[arg(long)]
    data_dir: PathBuf,
}

pub fn restore(a: RestoreArgs) -> anyhow::Result<()> {
    let f = std::fs::File::open(&a.file)
        .with_context(|| format!("cannot open {}", a.file.display()))?;
    let pb = crate::progress::bytes(
        f.metadata().map(|m| m.len()).unwrap_or(0),
        &format!("restoring {}", a.file.display()),
    );
    let m = fieldlab_store::backup::restore(std::io::BufReader::new(pb.wrap_read(f)), &a.data_dir)
        .with_context(|| format!("cannot restore {}", a.file.display()));
    pb.finish_and_clear();
    let m = m?;
    let (store, rec) = Store::open_read_only(&a.data_dir)?;
    println!(
        "restored {} into {}: backup of {} (fieldlab {}), {} blocks, {} WAL segments, {} other files; {} series, {} points",
        a.file.display(),
        a.data_dir.display(),
        m.created,
        m.fieldlab_version,
        m.blocks,
        m.wal_segments,
        m.files.len(),
        store.series(None).len(),
        rec.block_points + rec.wal_points
    );
    if !m.excluded.is_empty() {
        println!(
            "not in the backup ({}): {}",
            if m.secrets_included {
                "left out when it was taken"
            } else {
                "taken without --include-secrets; fieldlab up makes a new JWT secret and keys, add users with `fieldlab users add NAME --role admin`"
            },
            m.excluded
                .iter()
                .map(|x| x.path.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}
