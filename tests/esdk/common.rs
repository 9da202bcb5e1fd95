//! Shared by the ESDK tests and the ESDK benchmark: a ring holding an
//! imported (BYOK) AES key, and the Python reference SDK as a subprocess.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use strongroom::interop::esdk::{TAG_KEY_NAME, TAG_KEY_NAMESPACE};
use strongroom::key::SymmetricAlgorithm;
use strongroom::{Client, CreateKeyOptions, KeyRing, KeySpec, Principal};

pub const ALIAS: &str = "alias/esdk-shared";
pub const NAMESPACE: &str = "strongroom-interop";
pub const NAME: &str = "python-shared-key";

/// The Python script driving the reference SDK.
pub fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/esdk/esdk_python.py")
}

/// A client on a fresh in-memory ring holding `key` imported with BYOK
/// under [`ALIAS`], tagged with [`NAMESPACE`] / [`NAME`].
pub fn ring_with_key(key: &[u8; 32]) -> Client {
    let ring = KeyRing::in_memory();
    let c = ring.client(Principal::service("esdk-tests").unwrap());
    let spec = KeySpec::Symmetric(SymmetricAlgorithm::Aes256Gcm);
    let params = c.get_parameters_for_import(spec).unwrap();
    let wrapped = params.wrap(key).unwrap();
    c.import_key(
        &params.import_token,
        &wrapped,
        CreateKeyOptions::new().alias(ALIAS),
    )
    .unwrap();
    c.tag_resource(
        ALIAS,
        &[(TAG_KEY_NAMESPACE, NAMESPACE), (TAG_KEY_NAME, NAME)],
    )
    .unwrap();
    c
}

/// The Python interpreter with `aws_encryption_sdk`, or why there is none.
pub fn python() -> Result<PathBuf, String> {
    let (py, origin) = match std::env::var_os("STRONGROOM_ESDK_PYTHON") {
        Some(p) => (PathBuf::from(p), "STRONGROOM_ESDK_PYTHON"),
        None => (
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".ci/esdk-venv/bin/python"),
            "STRONGROOM_ESDK_PYTHON unset; .ci/esdk-venv",
        ),
    };
    let ok = Command::new(&py)
        .args(["-c", "import aws_encryption_sdk"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok(py)
    } else {
        Err(format!(
            "{} ({origin}) cannot import aws_encryption_sdk",
            py.display()
        ))
    }
}

/// True when running in CI, where a skip is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Runs one JSON job through the Python script, with a timeout.
pub fn run_python(py: &PathBuf, job: &Value, timeout: Duration) -> Value {
    let mut child = Command::new(py)
        .arg(script())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    let input = serde_json::to_vec(job).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        s
    });
    let mut stderr = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("python ESDK script timed out after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    writer.join().unwrap();
    let out = reader.join().unwrap();
    let err = err_reader.join().unwrap();
    assert!(status.success(), "python ESDK script failed: {err}");
    serde_json::from_slice(&out).unwrap_or_else(|e| panic!("bad JSON from python ({e}): {err}"))
}

/// Test data: a fixed, non-repeating-looking pattern.
pub fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 31 + 7) % 251) as u8).collect()
}
