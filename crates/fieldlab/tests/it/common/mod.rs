//! Test harness: real fieldlab processes, a real Mosquitto, real mosquitto_pub.
//!
//! Every helper picks free ports and temporary directories and cleans up on drop, so tests run
//! in parallel and leave nothing behind. Mosquitto comes from Debian's `mosquitto` and
//! `mosquitto-clients` packages; `scripts/test.sh` installs them.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn find_tool(name: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':').chain([
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
    ]) {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("`{name}` is not installed; run scripts/test.sh, which installs mosquitto and mosquitto-clients")
}

/// A running `fieldlab up`.
pub struct Fieldlab {
    child: Option<Child>,
    pub http: String,
    pub mqtt_port: u16,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl Fieldlab {
    /// Start with `--http-port 0 --mqtt-port 0` plus `extra` args; waits for the banner.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Fieldlab {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fieldlab"));
        cmd.args(["up", "--data-dir"])
            .arg(data_dir)
            .args(["--http-port", "0", "--mqtt-port", "0"]);
        cmd.args(extra)
            .env("LOG_LEVEL", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn fieldlab");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let (o, e) = (stdout.clone(), stderr.clone());
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                o.lock().unwrap().push(l);
            }
        });
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                e.lock().unwrap().push(l);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let (mut http, mut mqtt) = (None, None);
        while http.is_none() || mqtt.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "fieldlab printed no banner within 30 s\nstdout: {:?}\nstderr: {:?}",
                    stdout.lock().unwrap(),
                    stderr.lock().unwrap()
                );
            }
            for l in stdout.lock().unwrap().iter() {
                fieldlab_bench::soak::read_banner(l, &mut http, &mut mqtt);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Fieldlab {
            child: Some(child),
            http: http.unwrap(),
            mqtt_port: mqtt.unwrap(),
            stdout,
            stderr,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.http, path)
    }

    /// GET a path; the body as JSON (or as a JSON string when it is not JSON).
    pub fn get(&self, path: &str) -> (u16, Value) {
        let (st, body) = self.text(path);
        (
            st,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    }

    pub fn text(&self, path: &str) -> (u16, String) {
        let r = reqwest::blocking::get(self.url(path)).expect("HTTP request");
        let st = r.status().as_u16();
        (st, r.text().unwrap())
    }

    /// Poll `/ready` until 200; returns how long it took.
    pub fn wait_ready(&self, within: Duration) -> Duration {
        let t0 = Instant::now();
        loop {
            if self.text("/ready").0 == 200 {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < within,
                "not ready within {within:?}: {:?}",
                self.text("/ready")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&mut self, sig: i32) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        unsafe { libc::kill(child.id() as i32, sig) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("fieldlab did not exit within 30 s of signal {sig}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGINT and wait; returns the exit status.
    pub fn interrupt(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGINT)
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM)
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
    }

    pub fn stdout_text(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    /// The process id of `fieldlab up` (for /proc measurements).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }
}

impl Drop for Fieldlab {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A Mosquitto broker on a free port, stopped on drop.
pub struct Mosquitto {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        Self::start_with("")
    }

    /// Start with extra lines appended to the configuration.
    pub fn start_with(extra_conf: &str) -> Mosquitto {
        let bin = find_tool("mosquitto");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\nmax_inflight_messages 1000\n{extra_conf}"),
        )
        .unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Mosquitto {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run a `fieldlab` subcommand on a data dir, feeding `stdin` (e.g. a password).
pub fn fieldlab_cmd(args: &[&str], data: &Path, stdin: Option<&str>) -> std::process::Output {
    let mut all = args.to_vec();
    all.extend(["--data-dir", data.to_str().expect("UTF-8 temp path")]);
    fieldlab_in(Path::new("."), &all, stdin)
}

/// `fieldlab users add <name> --role <role>` with password `pw` on a data dir; must succeed.
pub fn add_user(data: &Path, name: &str, role: &str, pw: &str) {
    let out = fieldlab_cmd(
        &["users", "add", name, "--role", role, "--password-stdin"],
        data,
        Some(&format!("{pw}\n")),
    );
    assert!(out.status.success(), "{out:?}");
}

/// `fieldlab users key add <device>` on a data dir; must succeed. The new API key.
pub fn add_key(data: &Path, device: &str) -> String {
    let out = fieldlab_cmd(&["users", "key", "add", device], data, None);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Run `fieldlab <args>`: its exit code (-1 if killed), stdout and stderr.
pub fn fieldlab(args: &[&str]) -> (i32, String, String) {
    let out = fieldlab_in(Path::new("."), args, None);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Run `fieldlab <args>` with `cwd` as working directory, feeding `stdin`.
pub fn fieldlab_in(cwd: &Path, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    let mut c = Command::new(env!("CARGO_BIN_EXE_fieldlab"))
        .current_dir(cwd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut i = c.stdin.take().unwrap();
    if let Some(s) = stdin {
        i.write_all(s.as_bytes()).unwrap();
    }
    drop(i);
    c.wait_with_output().unwrap()
}

/// Publish with the real `mosquitto_pub` client (QoS 1).
pub fn mosquitto_pub(port: u16, topic: &str, payload: &[u8]) {
    mosquitto_pub_with(port, topic, "-s", payload)
}

/// Publish every line of `lines` as one QoS 1 message (`mosquitto_pub -l`).
pub fn mosquitto_pub_lines(port: u16, topic: &str, lines: &[String]) {
    let mut body = lines.join("\n");
    body.push('\n');
    mosquitto_pub_with(port, topic, "-l", body.as_bytes())
}

fn mosquitto_pub_with(port: u16, topic: &str, mode: &str, payload: &[u8]) {
    let mut child = Command::new(find_tool("mosquitto_pub"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            topic,
            mode,
        ])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mosquitto_pub");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(payload).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "mosquitto_pub failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Retry `f` until it returns Some, or panic with `what` after `within`.
/// Which published message each PUBACK acknowledges, for tests that count exactly-once:
/// messages are numbered in publish order from `first`; publishes leave in call order, and a
/// packet id names its message until its PUBACK frees it for reuse.
pub struct PubAcks {
    next: usize,
    pending: std::collections::BTreeMap<u16, usize>,
}

impl PubAcks {
    pub fn new(first: usize) -> PubAcks {
        PubAcks {
            next: first,
            pending: Default::default(),
        }
    }

    /// The number of the message `ev` acknowledges, if it is a PUBACK of one of ours.
    pub fn on_event(&mut self, ev: &rumqttc::Event) -> Option<usize> {
        use rumqttc::{Event, Outgoing, Packet};
        match ev {
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                self.pending.insert(*pkid, self.next);
                self.next += 1;
                None
            }
            Event::Incoming(Packet::PubAck(a)) => self.pending.remove(&a.pkid),
            _ => None,
        }
    }
}

/// Every stored value of field `v` of devices `<prefix>_0` .. `<prefix>_<devices-1>` (message
/// numbers), with its timestamp. Asserts that each series is strictly ordered and that no
/// message is stored twice: the crash and full-disk tests count exactly-once with it.
pub fn stored_messages(
    f: &Fieldlab,
    prefix: &str,
    devices: usize,
) -> std::collections::BTreeMap<usize, String> {
    let ids: Vec<String> = (0..devices).map(|d| format!("{prefix}_{d}")).collect();
    let (st, v) = f.get(&format!(
        "/api/v1/query?device_id={}&field=v",
        ids.join(",")
    ));
    let mut out = std::collections::BTreeMap::new();
    if st != 200 {
        return out;
    }
    for s in v["series"].as_array().unwrap() {
        let mut last = String::new();
        for p in s["points"].as_array().unwrap() {
            let t = p["ts"].as_str().unwrap().to_string();
            assert!(t > last, "points out of order or stored twice at {t}");
            last = t.clone();
            let n = p["value"].as_f64().unwrap() as usize;
            assert!(out.insert(n, t).is_none(), "message {n} stored twice");
        }
    }
    out
}

pub fn eventually<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            t0.elapsed() < within,
            "timed out after {within:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A certificate authority made at test time (rcgen), its PEM file, and a server certificate
/// and key it signed. Nothing is checked in: every run has fresh keys.
pub struct Pki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    dir: PathBuf,
    name: String,
    ca_cert: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    /// A CA called `name` and a server certificate for `sans` (DNS names or IP addresses),
    /// written as `<name>-ca.pem`, `<name>-server.pem` and `<name>-server.key` in `dir`.
    pub fn new(dir: &Path, name: &str, sans: &[&str]) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let ca_cert = p.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let cert = CertificateParams::new(sans)
            .unwrap()
            .signed_by(&key, &ca_cert, &ca_key)
            .unwrap();
        let w = |n: &str, t: String| {
            let path = dir.join(format!("{name}-{n}"));
            std::fs::write(&path, t).unwrap();
            path
        };
        Pki {
            ca: w("ca.pem", ca_cert.pem()),
            cert: w("server.pem", cert.pem()),
            key: w("server.key", key.serialize_pem()),
            dir: dir.to_path_buf(),
            name: name.to_string(),
            ca_cert,
            ca_key,
        }
    }

    /// A client certificate (extended key usage clientAuth) for `cn`, signed by this CA:
    /// the certificate and key files.
    pub fn client(&self, cn: &str) -> (PathBuf, PathBuf) {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = p.signed_by(&key, &self.ca_cert, &self.ca_key).unwrap();
        let c = self.dir.join(format!("{}-client-{cn}.pem", self.name));
        let k = self.dir.join(format!("{}-client-{cn}.key", self.name));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

/// A Mosquitto TLS listener line block for `port` serving `pki`'s server certificate; with
/// `require_client_cert`, clients must present a certificate signed by `pki`'s CA (mTLS).
pub fn mosquitto_tls_listener(port: u16, pki: &Pki, require_client_cert: bool) -> String {
    let mut s = format!(
        "listener {port} 127.0.0.1\ncertfile {}\nkeyfile {}\n",
        pki.cert.display(),
        pki.key.display()
    );
    if require_client_cert {
        s.push_str(&format!(
            "cafile {}\nrequire_certificate true\n",
            pki.ca.display()
        ));
    }
    s
}

/// A file of `fieldlab cap`'s example data (examples/cap/NAME), as a path argument.
pub fn cap_example(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/cap")
        .join(name)
        .display()
        .to_string()
}

/// The `fieldlab cap` steps (without the `cap`) that turn the example suppliers and the UBO
/// file `ubos` into a workspace `w` with its proof: prepare, manifest build, proof build.
/// `run` runs each step and checks it.
pub fn cap_build_proof(ubos: &str, mut run: impl FnMut(&[&str])) {
    run(&[
        "prepare",
        "--suppliers",
        &cap_example("suppliers.csv"),
        "--ubos",
        ubos,
        "--out",
        "w",
    ]);
    run(&[
        "manifest",
        "build",
        "--dir",
        "w",
        "--policy",
        &cap_example("lksg_v2.yaml"),
        "--sanctions",
        &cap_example("sanctions.csv"),
    ]);
    run(&["proof", "build", "--dir", "w"]);
}

/// Run `cmd` to the end; it must succeed (else its stderr is the panic message). Its output.
pub fn output_ok(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// An HTTP answer's status, `content-type` (empty if none) and JSON body (null if not JSON).
pub fn status_type_json(r: reqwest::blocking::Response) -> (u16, String, Value) {
    let st = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (st, ct, r.json().unwrap_or(Value::Null))
}
