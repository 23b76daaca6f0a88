//! Throw-away local servers — InfluxDB 1.x and PostgreSQL — for tests and benchmarks.
//!
//! Each starts the real Debian binary (`influxd`, `/usr/lib/postgresql/*/bin/postgres`) on a
//! free loopback port with all its files in a temporary directory, waits until it answers, and
//! stops on drop. `stop` and `start` keep the directory and port, so tests can take a server
//! away mid-run and bring it back. PostgreSQL refuses to run as root; when we are root it runs
//! as the `postgres` user, in a directory handed over to that user.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (free at the time of asking).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn find(candidates: &[&str]) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    for c in candidates {
        if c.contains('/') {
            if Path::new(c).is_file() {
                return Some(PathBuf::from(c));
            }
            continue;
        }
        for dir in path.split(':').chain(["/usr/sbin", "/usr/bin"]) {
            let p = Path::new(dir).join(c);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// A local `influxd` (InfluxDB 1.x).
pub struct InfluxServer {
    pub dir: tempfile::TempDir,
    pub port: u16,
    config: PathBuf,
    child: Option<Child>,
}

impl InfluxServer {
    /// Start influxd with caches that snapshot and compact after one idle second, so on-disk
    /// size settles quickly (for the bytes/point comparison).
    pub fn start() -> anyhow::Result<InfluxServer> {
        let dir = tempfile::Builder::new()
            .prefix("fieldlab-influx-")
            .tempdir()?;
        let port = free_port();
        let rpc = free_port();
        let d = dir.path().display();
        let config = dir.path().join("influxdb.conf");
        std::fs::write(
            &config,
            format!(
                "reporting-disabled = true\n\
                 bind-address = \"127.0.0.1:{rpc}\"\n\
                 [meta]\n  dir = \"{d}/meta\"\n\
                 [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n\
                 \x20 cache-snapshot-write-cold-duration = \"1s\"\n  compact-full-write-cold-duration = \"1s\"\n\
                 [http]\n  bind-address = \"127.0.0.1:{port}\"\n  log-enabled = false\n  max-body-size = 0\n\
                 [monitor]\n  store-enabled = false\n\
                 [continuous_queries]\n  enabled = false\n\
                 [subscriber]\n  enabled = false\n"
            ),
        )?;
        let mut s = InfluxServer {
            dir,
            port,
            config,
            child: None,
        };
        s.run()?;
        Ok(s)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Start again after [`InfluxServer::stop`], same port and files.
    pub fn run(&mut self) -> anyhow::Result<()> {
        let bin = find(&["influxd"]).ok_or_else(|| {
            anyhow::anyhow!(
                "`influxd` is not installed; apt-get install influxdb (scripts/test.sh does)"
            )
        })?;
        let log = std::fs::File::create(self.dir.path().join("influxd.log"))?;
        let child = crate::process::peer_command(bin)
            .args(["run", "-config"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = reqwest::blocking::Client::new();
        loop {
            if let Ok(r) = client.get(format!("{}/ping", self.url())).send() {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if let Some(Some(st)) = self.child.as_mut().map(|c| c.try_wait().ok().flatten()) {
                anyhow::bail!(
                    "influxd exited with {st}; see {}",
                    self.log_path().display()
                );
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "influxd did not answer within 30 s; see {}",
                self.log_path().display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("influxd.log")
    }

    /// Kill the server (data stays; its WAL is replayed at the next `run`).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Run an InfluxQL statement; the JSON answer.
    pub fn query(&self, db: &str, q: &str) -> anyhow::Result<serde_json::Value> {
        let r = reqwest::blocking::Client::new()
            .post(format!("{}/query", self.url()))
            .form(&[("db", db), ("q", q), ("epoch", "ms")])
            .send()?;
        let st = r.status();
        let v: serde_json::Value = r.json()?;
        anyhow::ensure!(st.is_success(), "InfluxDB answered {st}: {v}");
        Ok(v)
    }

    pub fn create_db(&self, db: &str) -> anyhow::Result<()> {
        self.query(db, &format!("CREATE DATABASE \"{db}\""))?;
        Ok(())
    }

    /// Bytes under the data and WAL directories.
    pub fn disk_bytes(&self) -> u64 {
        dir_bytes(&self.dir.path().join("data")) + dir_bytes(&self.dir.path().join("wal"))
    }
}

impl Drop for InfluxServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Disk space allocated to the files under `p` (like `du`: blocks, so preallocated sparse
/// files such as InfluxDB's series-file segments count for what they really use).
pub fn dir_bytes(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// A local PostgreSQL cluster (trust auth on loopback, user `postgres`).
pub struct PostgresServer {
    pub dir: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
    user: Option<(u32, u32)>,
    child: Option<Child>,
}

fn postgres_bin() -> anyhow::Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    dirs.sort();
    dirs.into_iter()
        .rev()
        .find(|d| d.join("initdb").is_file())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "PostgreSQL is not installed; apt-get install postgresql (scripts/test.sh does)"
            )
        })
}

impl PostgresServer {
    pub fn start() -> anyhow::Result<PostgresServer> {
        use std::os::unix::process::CommandExt;
        let bin = postgres_bin()?;
        let dir = tempfile::Builder::new().prefix("fieldlab-pg-").tempdir()?;
        // SAFETY: geteuid has no preconditions.
        let user = if unsafe { libc::geteuid() } == 0 {
            let out = Command::new("id").args(["-u", "postgres"]).output()?;
            let uid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
            let out = Command::new("id").args(["-g", "postgres"]).output()?;
            let gid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
            Some((uid, gid))
        } else {
            None
        };
        let mut cmd = crate::process::peer_command(bin.join("initdb"));
        cmd.args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
            "-D",
        ])
        .arg(dir.path().join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        if let Some((uid, gid)) = user {
            cmd.uid(uid).gid(gid);
        }
        let out = cmd.output()?;
        anyhow::ensure!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut s = PostgresServer {
            dir,
            port: free_port(),
            bin,
            user,
            child: None,
        };
        s.run()?;
        Ok(s)
    }

    /// libpq-style URL of the `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Start again after [`PostgresServer::stop`], same port and files.
    pub fn run(&mut self) -> anyhow::Result<()> {
        use std::os::unix::process::CommandExt;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("postgres.log"))?;
        let mut cmd = crate::process::peer_command(self.bin.join("postgres"));
        cmd.arg("-D")
            .arg(self.dir.path().join("data"))
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
            ])
            .args(["-c", "fsync=off", "-c", "max_connections=30"])
            .arg("-k")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid);
        }
        self.child = Some(cmd.spawn()?);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                // Accepting TCP is not yet accepting queries; ask pg_isready-style via a query.
                if self.ping() {
                    return Ok(());
                }
            }
            if let Some(Some(st)) = self.child.as_mut().map(|c| c.try_wait().ok().flatten()) {
                anyhow::bail!(
                    "postgres exited with {st}; see {}/postgres.log",
                    self.dir.path().display()
                );
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "postgres did not start within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn ping(&self) -> bool {
        let url = self.url();
        // On a thread of its own, so this works from sync and async callers alike.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                    Ok((c, conn)) => {
                        tokio::spawn(conn);
                        c.simple_query("SELECT 1").await.is_ok()
                    }
                    Err(_) => false,
                }
            })
        })
        .join()
        .unwrap_or(false)
    }

    /// Stop the server (immediate shutdown; it recovers at the next `run`).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGQUIT: immediate shutdown, like a crash; the WAL brings it back.
            // SAFETY: plain kill(2) on our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGQUIT) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop();
    }
}
