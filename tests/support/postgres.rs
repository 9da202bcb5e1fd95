//! The PostgreSQL server of the fleet-store tests.
//!
//! `.ci/postgres-setup` (CI) starts a cluster and exports
//! `STRONGROOM_POSTGRES_URL` (and `..._DATA`, `..._BIN`); that wins. Without
//! it, if the PostgreSQL binaries are installed, this process starts its own
//! throwaway cluster on 127.0.0.1 (stopped and removed when the process
//! ends, by a watchdog that waits for it). Each test gets a fresh database.
//! Without binaries the tests print one line saying they skipped and how to
//! enable them, and pass, except under `CI=true`, where a skip is a failure.
//!
//! Tests that restart the server always get a private cluster
//! ([`Cluster::private`]), so they never disturb the others.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// A running cluster.
pub struct Cluster {
    /// `postgres://user:password@127.0.0.1:port`, no database.
    base: String,
    /// The password (for checks that it never shows).
    pub password: String,
    bin: PathBuf,
    /// The data directory, if this process may restart the cluster.
    data: Option<PathBuf>,
    /// Stopped and removed on drop (private clusters).
    owned: bool,
    /// `(socket dir, port)` of a private cluster: admin connections go
    /// through the Unix socket (trusted), which also works when TCP
    /// requires TLS.
    socket: Option<(PathBuf, u16)>,
}

fn pg_bin() -> Option<PathBuf> {
    if let Ok(b) = std::env::var("STRONGROOM_POSTGRES_BIN") {
        return Some(PathBuf::from(b));
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|d| d.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop()
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|r| r.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Runs a PostgreSQL program as the cluster's owner.
fn as_owner(bin: &Path, prog: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(prog));
        c
    } else {
        Command::new(bin.join(prog))
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

fn split_url(url: &str) -> (String, String) {
    let rest = url.split('?').next().unwrap_or(url);
    let (base, _) = rest.rsplit_once('/').expect("a URL with a database");
    let pw = base
        .split_once("://")
        .and_then(|(_, r)| r.split_once('@'))
        .and_then(|(cred, _)| cred.split_once(':'))
        .map(|(_, p)| p.to_owned())
        .unwrap_or_default();
    (base.to_owned(), pw)
}

impl Cluster {
    /// Starts a new cluster in a temp dir, or `None` without binaries.
    pub fn private() -> Option<Cluster> {
        let bin = pg_bin()?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("strongroom-pgtest-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).ok()?;
        if is_root() {
            Command::new("chown")
                .arg("postgres")
                .arg(&dir)
                .status()
                .ok()?;
        }
        let password = format!("pw-{:x}-{n}-tEsT", std::process::id());
        let pwfile = dir.join("pw");
        std::fs::write(&pwfile, format!("{password}\n")).ok()?;
        if is_root() {
            Command::new("chown")
                .arg("postgres")
                .arg(&pwfile)
                .status()
                .ok()?;
        }
        let data = dir.join("data");
        let ok = as_owner(&bin, "initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "strongroom", "--auth-local=trust"])
            .args(["--auth-host=scram-sha-256", "--no-sync", "-E", "UTF8"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let _ = std::fs::remove_file(&pwfile);
        if !ok {
            return None;
        }
        let port = free_port();
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             fsync = off\nmax_connections = 200\n",
            dir.display()
        );
        let mut auto = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .ok()?;
        std::io::Write::write_all(&mut auto, conf.as_bytes()).ok()?;
        // A watchdog stops and removes the cluster when this process ends,
        // however it ends.
        let stop = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {own} {pgctl} -D {data} -m immediate stop >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            own = if is_root() {
                "runuser -u postgres --"
            } else {
                ""
            },
            pgctl = bin.join("pg_ctl").display(),
            data = data.display(),
            dir = dir.display(),
        );
        Command::new("sh")
            .args(["-c", &stop])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let c = Cluster {
            base: format!("postgres://strongroom:{password}@127.0.0.1:{port}"),
            password,
            bin,
            data: Some(data),
            owned: true,
            socket: Some((dir.clone(), port)),
        };
        c.start();
        Some(c)
    }

    /// A private cluster that accepts TCP connections over TLS only, with
    /// a fresh self-signed certificate for 127.0.0.1; returns the
    /// certificate (PEM) too. `None` without PostgreSQL or `openssl`.
    pub fn private_tls() -> Option<(Cluster, Vec<u8>)> {
        let c = Cluster::private()?;
        let data = c.data.clone()?;
        let ok = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args([
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ])
            .arg("-keyout")
            .arg(data.join("server.key"))
            .arg("-out")
            .arg(data.join("server.crt"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return None;
        }
        let pem = std::fs::read(data.join("server.crt")).ok()?;
        let hba = data.join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba).ok()?;
        std::fs::write(
            &hba,
            format!("hostnossl all all 0.0.0.0/0 reject\nhostnossl all all ::/0 reject\n{old}"),
        )
        .ok()?;
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .ok()?;
        std::io::Write::write_all(&mut conf, b"ssl = on\n").ok()?;
        if is_root() {
            for f in ["server.key", "server.crt", "pg_hba.conf"] {
                Command::new("chown")
                    .arg("postgres")
                    .arg(data.join(f))
                    .status()
                    .ok()?;
            }
        }
        Command::new("chmod")
            .arg("600")
            .arg(data.join("server.key"))
            .status()
            .ok()?;
        c.restart();
        Some((c, pem))
    }

    fn from_env() -> Option<Cluster> {
        let url = std::env::var("STRONGROOM_POSTGRES_URL").ok()?;
        let (base, password) = split_url(&url);
        Some(Cluster {
            base,
            password,
            bin: pg_bin().unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin")),
            data: None,
            owned: false,
            socket: None,
        })
    }

    /// A fresh, empty database; its URL.
    pub fn fresh_db(&self) -> String {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("sr_{}_{n}", std::process::id());
        let admin_url = match &self.socket {
            Some((dir, port)) => format!(
                "host={} port={port} user=strongroom dbname=postgres",
                dir.display()
            ),
            None => self.url("postgres"),
        };
        let mut admin = postgres::Client::connect(&admin_url, postgres::NoTls)
            .expect("connect to the test server");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create a test database");
        self.url(&name)
    }

    /// The URL of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("{}/{db}", self.base)
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.data.as_ref().expect("a private cluster");
        let log = data.parent().unwrap().join("log");
        let st = as_owner(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(data)
            .arg("-l")
            .arg(&log)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run pg_ctl");
        assert!(st.success(), "pg_ctl {args:?} failed");
    }

    /// Starts the (private) server and waits for it.
    pub fn start(&self) {
        self.pg_ctl(&["-w", "start"]);
    }

    /// Stops the (private) server (fast: connections are closed).
    pub fn stop(&self) {
        self.pg_ctl(&["-w", "-m", "fast", "stop"]);
    }

    /// `pg_ctl restart` of the (private) server.
    pub fn restart(&self) {
        self.pg_ctl(&["-w", "-m", "fast", "restart"]);
    }

    /// `pg_dump` of database `db`, as text.
    pub fn dump(&self, db_url: &str) -> Vec<u8> {
        let out = Command::new(self.bin.join("pg_dump"))
            .arg("--dbname")
            .arg(db_url)
            .output()
            .expect("run pg_dump");
        assert!(
            out.status.success(),
            "pg_dump failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.owned
            && let Some(data) = &self.data
        {
            let _ = as_owner(&self.bin, "pg_ctl")
                .arg("-D")
                .arg(data)
                .args(["-m", "immediate", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = std::fs::remove_dir_all(data.parent().unwrap());
        }
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

fn skip_or_fail() {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "PostgreSQL is required under CI=true: run `eval \"$(.ci/postgres-setup)\"`"
    );
    eprintln!(
        "skipped: no PostgreSQL; `apt-get install postgresql` or `eval \"$(.ci/postgres-setup)\"` to run the PostgreSQL tests"
    );
}

/// The cluster of this test process: `STRONGROOM_POSTGRES_URL`'s, or one
/// started here; `None` (after saying so) when there is none.
pub fn cluster() -> Option<&'static Cluster> {
    static C: OnceLock<Option<Cluster>> = OnceLock::new();
    let c = C
        .get_or_init(|| Cluster::from_env().or_else(Cluster::private))
        .as_ref();
    if c.is_none() {
        skip_or_fail();
    }
    c
}

/// A private cluster for a test that restarts the server, or `None`
/// (after saying so).
pub fn private_cluster() -> Option<Cluster> {
    let c = Cluster::private();
    if c.is_none() {
        skip_or_fail();
    }
    c
}

/// True if the tests can run (see [`cluster`]).
pub fn available() -> bool {
    cluster().is_some()
}

/// A fresh database on this process's cluster. Call after [`available`].
pub fn fresh_db() -> String {
    cluster().expect("checked by available()").fresh_db()
}
