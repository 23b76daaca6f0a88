//! Redis and Mosquitto as throw-away servers: a free loopback port, files in a temporary
//! directory, stopped on drop.

use crate::process::peer_command;
use anyhow::Context;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn wait_listening(name: &str, port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "{name} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A peer's process and its files: the process is killed, then the files removed, on drop.
struct Running {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Running {
    /// `child`, serving from `dir`, once it listens on `port` (killed if it never does).
    fn listening(
        name: &str,
        child: std::process::Child,
        port: u16,
        dir: tempfile::TempDir,
    ) -> anyhow::Result<Running> {
        let r = Running { child, _dir: dir };
        wait_listening(name, port)?;
        Ok(r)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary redis-server (no persistence) on a free port, stopped on drop.
pub struct TempRedis {
    pub port: u16,
    _running: Running,
}

impl TempRedis {
    pub fn start() -> anyhow::Result<TempRedis> {
        TempRedis::start_on(crate::free_port())
    }

    /// The same on a given port: a server that comes (back) where clients already look.
    pub fn start_on(port: u16) -> anyhow::Result<TempRedis> {
        let dir = tempfile::tempdir()?;
        let child = peer_command("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .context("cannot start redis-server; install it (apt-get install redis-server) or pass --redis-url")?;
        Ok(TempRedis {
            port,
            _running: Running::listening("redis-server", child, port, dir)?,
        })
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

/// A temporary Mosquitto (anonymous, no persistence, deep queues) on a free port, stopped on
/// drop.
pub struct Mosquitto {
    pub port: u16,
    _running: Running,
}

impl Mosquitto {
    pub fn start() -> anyhow::Result<Mosquitto> {
        let bin = [
            "/usr/sbin/mosquitto",
            "/usr/bin/mosquitto",
            "/usr/local/sbin/mosquitto",
        ]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .ok_or_else(|| anyhow::anyhow!("mosquitto is not installed (apt-get install mosquitto)"))?;
        let port = crate::free_port();
        let dir = tempfile::tempdir()?;
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_inflight_messages 1000\nmax_queued_messages 1000000\n"),
        )?;
        let child = peer_command(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Mosquitto {
            port,
            _running: Running::listening("mosquitto", child, port, dir)?,
        })
    }
}

/// A temporary nats-server with JetStream (files in a temporary directory) and its MQTT
/// listener, on free ports, stopped on drop. `extra` is appended to its configuration (the
/// cluster's subject mapping).
pub struct TempNats {
    child: Option<std::process::Child>,
    pub port: u16,
    pub mqtt_port: u16,
    conf: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl TempNats {
    pub fn start(extra: &str) -> anyhow::Result<TempNats> {
        let dir = tempfile::tempdir()?;
        let (port, mqtt_port) = (crate::free_port(), crate::free_port());
        let conf = dir.path().join("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "listen: 127.0.0.1:{port}\nserver_name: fieldlab_test\njetstream {{ store_dir: \"{}\" }}\nmqtt {{ listen: 127.0.0.1:{mqtt_port} }}\n{extra}\n",
                dir.path().join("js").display()
            ),
        )?;
        let mut n = TempNats {
            child: None,
            port,
            mqtt_port,
            conf,
            _dir: dir,
        };
        n.run()?;
        Ok(n)
    }

    /// (Re)start the server on the same ports and files.
    pub fn run(&mut self) -> anyhow::Result<()> {
        let bin = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .ok_or_else(|| {
                anyhow::anyhow!("nats-server is not installed (apt-get install nats-server)")
            })?;
        self.child = Some(
            peer_command(bin)
                .arg("-c")
                .arg(&self.conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
        wait_listening("nats-server", self.port)?;
        wait_listening("nats-server (mqtt)", self.mqtt_port)
    }

    /// Kill the server (SIGKILL), keeping its files.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for TempNats {
    fn drop(&mut self) {
        self.kill();
    }
}
