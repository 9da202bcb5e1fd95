//! The real servers of the remote-backend tests: OpenBao (Transit) and
//! moto (a local AWS KMS), no mocks.
//!
//! `.ci/remote-setup` (CI) starts both and exports `STRONGROOM_VAULT_ADDR`,
//! `STRONGROOM_VAULT_TOKEN`, `STRONGROOM_AWS_KMS_ENDPOINT`,
//! `STRONGROOM_AWS_ACCESS_KEY_ID`, `STRONGROOM_AWS_SECRET_ACCESS_KEY` and
//! `STRONGROOM_REMOTE_VENV`; those win. Without them, when the virtual
//! environment with `bao` and `moto_server` exists (`STRONGROOM_REMOTE_VENV`
//! or `.ci/remote-venv`), this process starts its own servers on free
//! ports; a watchdog shell stops them when the test process ends. Otherwise
//! the tests print one line saying they skipped and how to enable them, and
//! pass, except under `CI=true`, where a skip is a failure.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The virtual environment holding `bao` and `moto_server`, if installed.
pub fn venv() -> Option<PathBuf> {
    let dir = std::env::var_os("STRONGROOM_REMOTE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".ci/remote-venv"));
    (dir.join("bin/bao").exists() && dir.join("bin/moto_server").exists()).then_some(dir)
}

fn skip(what: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{what} is required under CI=true: run `eval \"$(.ci/remote-setup)\"`"
    );
    eprintln!(
        "skipped: no {what}; run `eval \"$(.ci/remote-setup)\"` (or create .ci/remote-venv with it) to run the remote-backend tests"
    );
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something listens on `port` (at most `secs` seconds).
pub fn wait_listening(port: u16, secs: u64) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Starts `cmd` with a watchdog that kills it (by its pid) once this test
/// process is gone; returns the server's pid.
pub fn spawn_server(
    program: &std::path::Path,
    args: &[String],
    env: &[(&str, &str)],
    log: &std::path::Path,
) -> u32 {
    let quoted: Vec<String> = std::iter::once(program.display().to_string())
        .chain(args.iter().cloned())
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect();
    let script = format!(
        "{} >'{}' 2>&1 & s=$!; echo $s; while kill -0 {} 2>/dev/null && kill -0 $s 2>/dev/null; do sleep 1; done; kill $s 2>/dev/null",
        quoted.join(" "),
        log.display(),
        std::process::id()
    );
    let mut c = Command::new("sh");
    c.args(["-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child: Child = c.spawn().expect("sh");
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // The watchdog shell is reaped by a thread when it ends.
    std::thread::spawn(move || child.wait());
    line.trim().parse().expect("server pid")
}

/// Sends a signal to a server this process started (by its pid).
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} {pid}");
}

fn temp_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let d = std::env::temp_dir().join(format!("strongroom-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

// ---- Vault / OpenBao ----------------------------------------------------

/// An OpenBao server: address and root token.
pub struct Vault {
    pub addr: String,
    pub token: String,
}

/// Waits until the server is unsealed and active, then mounts Transit at
/// `transit/` (an existing mount is fine).
pub fn enable_transit(addr: &str, token: &str) {
    let end = Instant::now() + Duration::from_secs(30);
    while agent()
        .get(&format!("{addr}/v1/sys/health"))
        .call()
        .map_or(true, |r| r.status().as_u16() != 200)
    {
        assert!(
            Instant::now() < end,
            "OpenBao at {addr} did not become active"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    loop {
        let r = agent()
            .post(&format!("{addr}/v1/sys/mounts/transit"))
            .header("X-Vault-Token", token)
            .send(r#"{"type":"transit"}"#);
        match r {
            Ok(resp) if resp.status().as_u16() < 500 => return,
            _ if Instant::now() > end => panic!("OpenBao at {addr} did not come up"),
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn start_dev_vault() -> Option<Vault> {
    let venv = venv()?;
    let port = free_port();
    let addr = format!("http://127.0.0.1:{port}");
    let log = temp_dir("bao-dev").join("bao.log");
    spawn_server(
        &venv.join("bin/bao"),
        &[
            "server".into(),
            "-dev".into(),
            "-dev-root-token-id=root".into(),
            format!("-dev-listen-address=127.0.0.1:{port}"),
        ],
        &[],
        &log,
    );
    assert!(
        wait_listening(port, 60),
        "OpenBao did not listen; see {}",
        log.display()
    );
    enable_transit(&addr, "root");
    Some(Vault {
        addr,
        token: "root".into(),
    })
}

/// The shared OpenBao server, or `None` (after saying so) when there is
/// none and this is not CI.
pub fn vault() -> Option<&'static Vault> {
    static VAULT: OnceLock<Option<Vault>> = OnceLock::new();
    let v = VAULT
        .get_or_init(|| {
            match (
                std::env::var("STRONGROOM_VAULT_ADDR"),
                std::env::var("STRONGROOM_VAULT_TOKEN"),
            ) {
                (Ok(addr), Ok(token)) => Some(Vault { addr, token }),
                _ => start_dev_vault(),
            }
        })
        .as_ref();
    if v.is_none() {
        skip("OpenBao (bao)");
    }
    v
}

/// An OpenBao server of this test only, with file storage, so it can be
/// stopped and started again with its keys.
pub struct PersistentVault {
    pub addr: String,
    pub token: String,
    port: u16,
    dir: PathBuf,
    unseal_key: String,
    pub pid: u32,
}

impl PersistentVault {
    /// Starts, initializes and unseals it; `None` without the binary.
    pub fn start() -> Option<Self> {
        venv()?;
        let (port, cluster) = (free_port(), free_port());
        let dir = temp_dir("bao-raft");
        std::fs::create_dir_all(dir.join("data")).unwrap();
        // OpenBao 2 has no file storage; a one-node Raft cluster persists.
        std::fs::write(
            dir.join("config.hcl"),
            format!(
                "storage \"raft\" {{\n path = \"{}\"\n node_id = \"n1\"\n}}\n\
                 listener \"tcp\" {{\n address = \"127.0.0.1:{port}\"\n tls_disable = true\n}}\n\
                 api_addr = \"http://127.0.0.1:{port}\"\ncluster_addr = \"http://127.0.0.1:{cluster}\"\n",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let mut v = PersistentVault {
            addr: format!("http://127.0.0.1:{port}"),
            token: String::new(),
            port,
            dir,
            unseal_key: String::new(),
            pid: 0,
        };
        v.run();
        let mut resp = agent()
            .put(&format!("{}/v1/sys/init", v.addr))
            .send(r#"{"secret_shares":1,"secret_threshold":1}"#)
            .unwrap();
        let init: serde_json::Value =
            serde_json::from_slice(&resp.body_mut().read_to_vec().unwrap()).unwrap();
        v.unseal_key = init["keys_base64"][0].as_str().unwrap().into();
        v.token = init["root_token"].as_str().unwrap().into();
        v.unseal();
        enable_transit(&v.addr, &v.token);
        Some(v)
    }

    fn run(&mut self) {
        let venv = venv().unwrap();
        self.pid = spawn_server(
            &venv.join("bin/bao"),
            &[
                "server".into(),
                format!("-config={}", self.dir.join("config.hcl").display()),
            ],
            &[],
            &self.dir.join(format!("bao-{}.log", self.pid)),
        );
        assert!(
            wait_listening(self.port, 60),
            "OpenBao did not listen; see {}",
            self.dir.display()
        );
    }

    fn unseal(&self) {
        let r = agent()
            .put(&format!("{}/v1/sys/unseal", self.addr))
            .send(format!(r#"{{"key":"{}"}}"#, self.unseal_key))
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }

    /// Stops the server (SIGTERM) and waits until its port is closed.
    pub fn stop(&self) {
        signal(self.pid, "TERM");
        let end = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts it again on the same port and unseals it.
    pub fn restart(&mut self) {
        self.run();
        self.unseal();
        enable_transit(&self.addr, &self.token);
    }
}

impl Drop for PersistentVault {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.pid.to_string()).status();
    }
}

// ---- AWS KMS (moto) ------------------------------------------------------

/// A KMS endpoint and credentials it accepts.
pub struct Kms {
    pub endpoint: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub pid: Option<u32>,
}

/// Python run in the venv: creates an IAM user allowed `kms:*` and prints
/// its access key id and secret. Run while moto still lets requests in
/// without authentication (`INITIAL_NO_AUTH_ACTION_COUNT`).
const IAM_USER_PY: &str = r#"
import boto3, json, sys
iam = boto3.client("iam", endpoint_url=sys.argv[1], region_name="us-east-1",
                   aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
iam.create_user(UserName="strongroom")
k = iam.create_access_key(UserName="strongroom")["AccessKey"]
iam.put_user_policy(UserName="strongroom", PolicyName="kms", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}))
print(k["AccessKeyId"], k["SecretAccessKey"])
"#;

/// Starts a moto server of this process with IAM authentication on, and
/// a user for it.
pub fn start_moto() -> Option<Kms> {
    let venv = venv()?;
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let log = temp_dir("moto").join("moto.log");
    let pid = spawn_server(
        &venv.join("bin/moto_server"),
        &[
            "-H".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
        ],
        &[("INITIAL_NO_AUTH_ACTION_COUNT", "3")],
        &log,
    );
    assert!(
        wait_listening(port, 60),
        "moto did not listen; see {}",
        log.display()
    );
    let out = Command::new(venv.join("bin/python"))
        .args(["-c", IAM_USER_PY, &endpoint])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "IAM user: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut it = text.split_whitespace();
    Some(Kms {
        endpoint,
        access_key_id: it.next().unwrap().into(),
        secret_access_key: it.next().unwrap().into(),
        pid: Some(pid),
    })
}

/// The shared KMS endpoint, or `None` (after saying so).
pub fn kms() -> Option<&'static Kms> {
    static KMS: OnceLock<Option<Kms>> = OnceLock::new();
    let k = KMS
        .get_or_init(|| match std::env::var("STRONGROOM_AWS_KMS_ENDPOINT") {
            Ok(endpoint) => Some(Kms {
                endpoint,
                access_key_id: std::env::var("STRONGROOM_AWS_ACCESS_KEY_ID").unwrap_or_default(),
                secret_access_key: std::env::var("STRONGROOM_AWS_SECRET_ACCESS_KEY")
                    .unwrap_or_default(),
                pid: None,
            }),
            Err(_) => start_moto(),
        })
        .as_ref();
    if k.is_none() {
        skip("moto (AWS KMS)");
    }
    k
}

/// A prefix unique to this test run, for key names and aliases.
pub fn unique(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{test}-{}-{nanos}", std::process::id())
}
