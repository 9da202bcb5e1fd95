//! End-to-end tests of the `strongroom-kms-server` binary on 127.0.0.1.
//!
//! - `boto3_client`: the AWS SDK for Python signs real SigV4 requests
//!   (tests/client.py); a ciphertext it made opens with the library
//!   directly from the same file keystore. Needs python3 with venv: the
//!   virtual environment is `server/.venv-test` (created with `pip install
//!   boto3` on first use), or the interpreter in `STRONGROOM_KMS_PYTHON`, or
//!   `.ci/remote-venv` if it has boto3. Without python3 the test prints one
//!   line and skips; under `CI=true` that is a failure.
//! - `raw_http`: requests written by hand and signed with the library's own
//!   SigV4 signer: malformed JSON, wrong types, missing fields, unknown
//!   operations, unsigned, stale and oversized requests, a silent client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use strongroom::interop::sigv4::{Credentials, Scope, amz_date, sign};

const ALICE: (&str, &str) = ("AKIAALICE0000000", "alice/secret+key0000000000000000000000");
const BOB: (&str, &str) = ("AKIABOB000000000", "bob/secret+key00000000000000000000000");
const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";

/// The running server; killed when dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn credentials_file(dir: &Path) -> PathBuf {
    let path = dir.join("credentials");
    std::fs::write(
        &path,
        format!(
            "# access key, secret, principal\n{} {} user:alice\n{} {} user:bob\n",
            ALICE.0, ALICE.1, BOB.0, BOB.1
        ),
    )
    .unwrap();
    path
}

fn start(args: &[&str], envs: &[(&str, &str)]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_strongroom-kms-server"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--region",
            REGION,
            "--account",
            ACCOUNT,
        ])
        .args(args)
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the server binary");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let mut server = Server {
        child,
        addr: String::new(),
    };
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the server did not say where it listens within 60 s");
    server.addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    server
}

/// One response read from `s`: status, the `Connection` header, body (by
/// its `Content-Length`, so a kept-alive connection is not waited out).
fn read_response(s: &mut impl Read) -> (u16, String, String) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).unwrap();
        assert!(
            n == 1,
            "connection closed mid-response: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_default()
    };
    let len: usize = header("content-length").parse().unwrap();
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    (
        status,
        header("connection"),
        String::from_utf8(body).unwrap(),
    )
}

/// Status and body of a raw exchange on a new connection.
fn exchange(addr: &str, raw: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(raw).unwrap();
    let (status, _, body) = read_response(&mut s);
    (status, body)
}

/// Every line of the audit log in `dir` (all its files).
fn audit_lines(dir: &Path) -> Vec<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A KMS request signed with the library's SigV4 signer at `unix` time.
fn signed(addr: &str, op: &str, body: &[u8], key: (&str, &str), unix: u64) -> Vec<u8> {
    let target = format!("TrentService.{op}");
    let headers = [
        ("host", addr),
        ("content-type", "application/x-amz-json-1.1"),
        ("x-amz-target", target.as_str()),
    ];
    let date = amz_date(unix);
    let scope = Scope {
        date_time: &date,
        region: REGION,
        service: "kms",
    };
    let added = sign(
        "POST",
        "/",
        "",
        &headers,
        body,
        &Credentials::new(key.0, key.1),
        &scope,
    )
    .unwrap();
    let mut req = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n", body.len());
    for (n, v) in headers
        .iter()
        .copied()
        .chain(added.iter().map(|(n, v)| (n.as_str(), v.as_str())))
    {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut raw = req.into_bytes();
    raw.extend_from_slice(body);
    raw
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn call(server: &Server, op: &str, body: &str) -> (u16, serde_json::Value) {
    let (status, text) = exchange(
        &server.addr,
        &signed(&server.addr, op, body.as_bytes(), ALICE, now()),
    );
    let v = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{op}: not JSON: {text:?}"));
    (status, v)
}

fn error_type(v: &serde_json::Value) -> &str {
    v["__type"].as_str().unwrap_or("")
}

#[test]
fn raw_http() {
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials_file(dir.path());
    let audit = dir.path().join("audit");
    let server = start(
        &[
            "--in-memory",
            "--credentials",
            creds.to_str().unwrap(),
            "--max-body",
            "2048",
            "--io-timeout",
            "1",
            "--audit-log",
            audit.to_str().unwrap(),
        ],
        &[],
    );

    // Our signer and the server agree; the key list starts empty.
    let (status, v) = call(&server, "ListKeys", "{}");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["Keys"], serde_json::json!([]));

    // Malformed bodies, wrong types, missing fields: KMS errors, never a hang.
    for (op, body, want) in [
        ("CreateKey", "{not json", "SerializationException"),
        ("CreateKey", "[1, 2]", "SerializationException"),
        ("DescribeKey", r#"{"KeyId": 5}"#, "SerializationException"),
        ("DescribeKey", "{}", "ValidationException"),
        (
            "Encrypt",
            r#"{"KeyId": "k", "Plaintext": "!!!"}"#,
            "SerializationException",
        ),
        (
            "Encrypt",
            r#"{"KeyId": "k", "Plaintext": "aGk=", "EncryptionContext": {"a": 1}}"#,
            "SerializationException",
        ),
        (
            "GenerateRandom",
            r#"{"NumberOfBytes": -1}"#,
            "SerializationException",
        ),
        (
            "GenerateRandom",
            r#"{"NumberOfBytes": 0}"#,
            "ValidationException",
        ),
        (
            "DescribeKey",
            r#"{"KeyId": "arn:aws:kms:eu-west-1:123456789012:key/x"}"#,
            "NotFoundException",
        ),
        ("FlyToTheMoon", "{}", "UnsupportedOperationException"),
    ] {
        let (status, v) = call(&server, op, body);
        assert_eq!((status, error_type(&v)), (400, want), "{op} {body}: {v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }

    // A stale request is refused and does not run: no key is created.
    let create = br#"{"Description": "stale"}"#;
    for skew in [-400i64, 400] {
        let t = now().checked_add_signed(skew).unwrap();
        let (status, text) = exchange(
            &server.addr,
            &signed(&server.addr, "CreateKey", create, ALICE, t),
        );
        assert_eq!(status, 400);
        assert!(text.contains("InvalidSignatureException"), "{text}");
    }
    // A wrong secret, an unknown key, a body changed after signing.
    let bad_secret = signed(&server.addr, "CreateKey", create, (ALICE.0, BOB.1), now());
    let (_, text) = exchange(&server.addr, &bad_secret);
    assert!(text.contains("InvalidSignatureException"), "{text}");
    let unknown = signed(
        &server.addr,
        "CreateKey",
        create,
        ("AKIANOBODY", ALICE.1),
        now(),
    );
    let (_, text) = exchange(&server.addr, &unknown);
    assert!(text.contains("UnrecognizedClientException"), "{text}");
    let mut changed = signed(&server.addr, "CreateKey", create, ALICE, now());
    let n = changed.len();
    changed[n - 3] = b'X';
    let (_, text) = exchange(&server.addr, &changed);
    assert!(text.contains("InvalidSignatureException"), "{text}");
    // Unsigned.
    let (status, text) = exchange(
        &server.addr,
        b"POST / HTTP/1.1\r\nX-Amz-Target: TrentService.CreateKey\r\nContent-Length: 2\r\n\r\n{}",
    );
    assert_eq!(status, 400);
    assert!(
        text.contains("MissingAuthenticationTokenException"),
        "{text}"
    );
    let (_, v) = call(&server, "ListKeys", "{}");
    assert_eq!(
        v["Keys"],
        serde_json::json!([]),
        "a refused request created a key"
    );

    // Every refusal is in the ring's audit log (the server answered after
    // recording it): who the request claimed to be, what it asked, why.
    let lines = audit_lines(&audit);
    let refused = |principal: &str, reason: &str| {
        lines
            .iter()
            .filter(|l| {
                l.contains(&format!("\"principal\":\"{principal}\""))
                    && l.contains("\"action\":\"kms:CreateKey\"")
                    && l.contains(reason)
                    && l.contains("Denied")
            })
            .count()
    };
    let alice_claimed = format!("unauthenticated:{}", ALICE.0);
    // Two stale, one wrong secret, one changed body.
    assert_eq!(
        refused(&alice_claimed, "InvalidSignatureException"),
        4,
        "{lines:#?}"
    );
    assert_eq!(
        refused("unauthenticated:AKIANOBODY", "UnrecognizedClientException"),
        1,
        "{lines:#?}"
    );
    assert_eq!(
        refused("unauthenticated:-", "MissingAuthenticationTokenException"),
        1,
        "{lines:#?}"
    );
    // Authenticated operations are recorded as their principal.
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"principal\":\"user:alice\"")),
        "{lines:#?}"
    );
    // No secret reached the log.
    assert!(
        !lines
            .iter()
            .any(|l| l.contains(ALICE.1) || l.contains(BOB.1)),
        "a secret key in the audit log"
    );

    // Keep-alive: several requests on one connection, pipelined too; the
    // connection closes after a request asking for it.
    let mut conn = TcpStream::connect(&server.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    for _ in 0..3 {
        conn.write_all(&signed(&server.addr, "ListKeys", b"{}", ALICE, now()))
            .unwrap();
        let (status, connection, body) = read_response(&mut conn);
        assert_eq!((status, connection.as_str()), (200, "keep-alive"), "{body}");
    }
    let mut two = signed(&server.addr, "ListKeys", b"{}", ALICE, now());
    two.extend(signed(
        &server.addr,
        "GenerateRandom",
        br#"{"NumberOfBytes": 8}"#,
        ALICE,
        now(),
    ));
    conn.write_all(&two).unwrap();
    let (status, _, body) = read_response(&mut conn);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Keys"), "{body}");
    let (status, _, body) = read_response(&mut conn);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Plaintext"), "{body}");
    let mut last = signed(&server.addr, "ListKeys", b"{}", ALICE, now());
    let at = last.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    last.splice(at..at, b"Connection: close\r\n".iter().copied());
    conn.write_all(&last).unwrap();
    let (status, connection, _) = read_response(&mut conn);
    assert_eq!((status, connection.as_str()), (200, "close"));
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "data after a closing answer");
    // An error answer closes the connection too (the stream may be out of
    // step after a bad request).
    let mut conn = TcpStream::connect(&server.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    conn.write_all(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n")
        .unwrap();
    let (status, connection, _) = read_response(&mut conn);
    assert_eq!((status, connection.as_str()), (400, "close"));
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());

    // Oversized bodies are refused before they are read.
    let big = format!(r#"{{"Description": "{}"}}"#, "a".repeat(4000));
    let (status, _) = exchange(
        &server.addr,
        &signed(&server.addr, "CreateKey", big.as_bytes(), ALICE, now()),
    );
    assert_eq!(status, 413);
    // Garbage and non-KMS requests.
    assert_eq!(exchange(&server.addr, b"HELLO\r\n\r\n").0, 400);
    assert_eq!(
        exchange(&server.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").0,
        404
    );
    assert_eq!(
        exchange(
            &server.addr,
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        .0,
        411
    );

    // A client that sends nothing is dropped after the read timeout, and
    // holds no one else up meanwhile.
    // The server's read timeout is 1 s; the client waits up to 60 s (a
    // loaded machine may be slow) and tells the server closing the
    // connection (end of stream or a reset) from its own wait running out,
    // so no elapsed time is asserted.
    let mut idle = TcpStream::connect(&server.addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    assert_eq!(call(&server, "ListKeys", "{}").0, 200);
    let mut buf = [0u8; 16];
    match idle.read(&mut buf) {
        Ok(0) => {}
        Ok(_) => panic!("the server answered a request that was never sent"),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the idle connection was not dropped within 60 s: {e}"),
    }

    // The server is still healthy: a key round trip works.
    let (status, v) = call(&server, "CreateKey", "{}");
    assert_eq!(status, 200, "{v}");
    let arn = v["KeyMetadata"]["Arn"].as_str().unwrap().to_string();
    assert!(
        arn.starts_with(&format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/")),
        "{arn}"
    );
    let (status, v) = call(
        &server,
        "Encrypt",
        &format!(r#"{{"KeyId": "{arn}", "Plaintext": "aGVsbG8="}}"#),
    );
    assert_eq!(status, 200, "{v}");
    let blob = v["CiphertextBlob"].as_str().unwrap();
    let (status, v) = call(
        &server,
        "Decrypt",
        &format!(r#"{{"CiphertextBlob": "{blob}"}}"#),
    );
    assert_eq!(
        (status, v["Plaintext"].as_str()),
        (200, Some("aGVsbG8=")),
        "{v}"
    );
    assert_eq!(v["KeyId"].as_str(), Some(arn.as_str()));
}

/// A Python with boto3 (and the AWS CLI in the same bin directory), or
/// why there is none.
fn python_with_boto3() -> Result<PathBuf, String> {
    let ok = |py: &Path, code: &str| {
        Command::new(py)
            .args(["-c", code])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let ready = |py: &Path| ok(py, "import boto3, awscli");
    if let Some(py) = std::env::var_os("STRONGROOM_KMS_PYTHON") {
        let py = PathBuf::from(py);
        return if ready(&py) {
            Ok(py)
        } else {
            Err(format!(
                "STRONGROOM_KMS_PYTHON={} lacks boto3 or awscli",
                py.display()
            ))
        };
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-test");
    let venv_py = venv.join("bin/python");
    if ready(&venv_py) {
        return Ok(venv_py);
    }
    if !venv_py.exists() {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .map_err(|e| format!("no python3 ({e})"))?;
        if !made.success() {
            return Err("python3 -m venv failed (install python3-venv)".into());
        }
    }
    let pip = Command::new(&venv_py)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "boto3",
            "awscli",
        ])
        .status()
        .map_err(|e| format!("pip failed to start: {e}"))?;
    if !pip.success() || !ready(&venv_py) {
        return Err("pip install boto3 awscli failed (is PyPI reachable?)".into());
    }
    Ok(venv_py)
}

/// The Python, or the skip (a failure under `CI=true`).
fn python_or_skip(test: &str) -> Option<PathBuf> {
    // One test at a time creates the venv, across processes too (nextest
    // runs each test in its own): an exclusive lock on a file beside it,
    // released when the file is closed.
    let lock = std::fs::File::create(Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-test.lock"))
        .expect("create server/.venv-test.lock");
    lock.lock().expect("lock server/.venv-test.lock");
    match python_with_boto3() {
        Ok(p) => Some(p),
        Err(why) => {
            let msg = format!(
                "skipped {test}: {why}; install python3 and python3-venv (boto3 and awscli are \
                 then pip-installed into server/.venv-test) or set STRONGROOM_KMS_PYTHON to a \
                 python with both"
            );
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{msg} (CI=true: a skip is a failure)");
            }
            println!("{msg}");
            None
        }
    }
}

#[test]
fn boto3_client() {
    let Some(python) = python_or_skip("boto3_client") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials_file(dir.path());
    let keystore = dir.path().join("keystore");
    let passphrase = "correct horse battery staple";
    let server = start(
        &[
            "--keystore",
            keystore.to_str().unwrap(),
            "--credentials",
            creds.to_str().unwrap(),
        ],
        &[("STRONGROOM_PASSPHRASE", passphrase)],
    );
    let out = Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/client.py"))
        .env("KMS_ENDPOINT", format!("http://{}", server.addr))
        .env("KMS_REGION", REGION)
        .env("KMS_ACCOUNT", ACCOUNT)
        .env("ALICE_AK", ALICE.0)
        .env("ALICE_SK", ALICE.1)
        .env("BOB_AK", BOB.0)
        .env("BOB_SK", BOB.1)
        // No shared config, profiles or proxies from the developer's machine.
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("NO_PROXY", "127.0.0.1")
        .stderr(Stdio::inherit())
        .output()
        .expect("run client.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "client.py failed: {stdout}");
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("LIBRARY "))
        .expect("client.py printed no LIBRARY line");
    let (key_id, b64) = line.split_once(' ').unwrap();
    drop(server);

    // The endpoint's ciphertext opens with the library, from the same keystore.
    let blob = base64_decode(b64);
    let ring = strongroom::KeyRing::open(
        &keystore,
        strongroom::store::RootKey::passphrase(passphrase),
    )
    .unwrap();
    let alice = ring.client(strongroom::Principal::user("alice").unwrap());
    let ctx = strongroom::EncryptionContext::new().with("purpose", "library-check");
    let opened = alice.decrypt(&blob, &ctx).unwrap();
    assert_eq!(opened.plaintext.expose_secret(), b"made by the endpoint");
    assert_eq!(opened.key_id.as_str(), key_id);
    assert_eq!(
        ring.client(strongroom::Principal::user("alice").unwrap())
            .describe_key("alias/app")
            .unwrap()
            .key_id
            .as_str(),
        key_id
    );
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64ct::{Base64, Encoding};
    Base64::decode_vec(s).expect("base64 from client.py")
}

#[test]
fn aws_cli() {
    let Some(python) = python_or_skip("aws_cli") else {
        return;
    };
    let aws = python.with_file_name("aws");
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials_file(dir.path());
    let server = start(
        &["--in-memory", "--credentials", creds.to_str().unwrap()],
        &[],
    );
    let endpoint = format!("http://{}", server.addr);
    let run = |secret: &str, args: &[&str]| {
        let out = Command::new(&python)
            .arg(&aws)
            .args(["--endpoint-url", &endpoint, "--output", "text", "kms"])
            .args(args)
            .env("AWS_ACCESS_KEY_ID", ALICE.0)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_DEFAULT_REGION", REGION)
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_MAX_ATTEMPTS", "1")
            .env("NO_PROXY", "127.0.0.1")
            .output()
            .expect("run aws");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, key_id, err) = run(ALICE.1, &["create-key", "--query", "KeyMetadata.KeyId"]);
    assert!(ok && !key_id.is_empty(), "create-key: {err}");
    let plain = dir.path().join("plain");
    std::fs::write(&plain, b"from the aws cli").unwrap();
    let (ok, ct_b64, err) = run(
        ALICE.1,
        &[
            "encrypt",
            "--key-id",
            &key_id,
            "--plaintext",
            &format!("fileb://{}", plain.display()),
            "--encryption-context",
            "purpose=cli",
            "--query",
            "CiphertextBlob",
        ],
    );
    assert!(ok, "encrypt: {err}");
    let ct = dir.path().join("ct");
    std::fs::write(&ct, base64_decode(&ct_b64)).unwrap();
    let decrypt = |ctx: &str| {
        run(
            ALICE.1,
            &[
                "decrypt",
                "--ciphertext-blob",
                &format!("fileb://{}", ct.display()),
                "--encryption-context",
                ctx,
                "--query",
                "Plaintext",
            ],
        )
    };
    let (ok, pt_b64, err) = decrypt("purpose=cli");
    assert!(ok, "decrypt: {err}");
    assert_eq!(base64_decode(&pt_b64), b"from the aws cli");
    let (ok, _, err) = decrypt("purpose=other");
    assert!(!ok && err.contains("InvalidCiphertextException"), "{err}");
    let (ok, _, err) = run(BOB.1, &["list-keys"]);
    assert!(!ok && err.contains("InvalidSignatureException"), "{err}");
}

/// A self-signed certificate and key for 127.0.0.1 made with the openssl
/// CLI, or why there is none.
fn self_signed_cert(dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=strongroom-test"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .map_err(|e| format!("no openssl CLI ({e})"))?;
    if !out.status.success() {
        return Err(format!(
            "openssl req failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok((cert, key))
}

#[test]
fn boto3_tls() {
    let Some(python) = python_or_skip("boto3_tls") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = match self_signed_cert(dir.path()) {
        Ok(pair) => pair,
        Err(why) => {
            let msg = format!("skipped boto3_tls: {why}; install openssl (the CLI) to run it");
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{msg} (CI=true: a skip is a failure)");
            }
            println!("{msg}");
            return;
        }
    };
    let creds = credentials_file(dir.path());
    let server = start(
        &[
            "--in-memory",
            "--credentials",
            creds.to_str().unwrap(),
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[],
    );
    // Plain HTTP to the TLS port is not answered as KMS: the handshake
    // fails and the connection closes.
    let mut plain = TcpStream::connect(&server.addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    plain
        .write_all(&signed(&server.addr, "ListKeys", b"{}", ALICE, now()))
        .unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(
        !String::from_utf8_lossy(&got).contains("Keys"),
        "a plaintext request was served on the TLS port"
    );

    let out = Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls_client.py"))
        .env("KMS_ENDPOINT", format!("https://{}", server.addr))
        .env("KMS_REGION", REGION)
        .env("KMS_CA", &cert)
        .env("ALICE_AK", ALICE.0)
        .env("ALICE_SK", ALICE.1)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env_remove("AWS_CA_BUNDLE")
        .env_remove("REQUESTS_CA_BUNDLE")
        .env("NO_PROXY", "127.0.0.1")
        .stderr(Stdio::inherit())
        .output()
        .expect("run tls_client.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("TLS OK"),
        "tls_client.py failed: {stdout}"
    );
}

#[path = "../../tests/support/postgres.rs"]
mod pg;

/// Creates a key with an alias and encrypts under it on a first server
/// process, then decrypts on a second one started on the same stores: the
/// ring really is the database (and the token).
fn survives_a_restart(args: &[&str], envs: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials_file(dir.path());
    let mut full: Vec<&str> = args.to_vec();
    full.extend(["--credentials", creds.to_str().unwrap()]);
    let first = start(&full, envs);
    let (status, made) = call(&first, "CreateKey", "{}");
    assert_eq!(status, 200, "{made}");
    let key_id = made["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned();
    let alias = format!("alias/restart-{}", std::process::id());
    let (status, v) = call(
        &first,
        "CreateAlias",
        &format!(r#"{{"AliasName":"{alias}","TargetKeyId":"{key_id}"}}"#),
    );
    assert_eq!(status, 200, "{v}");
    let (status, enc) = call(
        &first,
        "Encrypt",
        &format!(
            r#"{{"KeyId":"{alias}","Plaintext":"c3Vydml2ZXM=","EncryptionContext":{{"a":"b"}}}}"#
        ),
    );
    assert_eq!(status, 200, "{enc}");
    let blob = enc["CiphertextBlob"].as_str().unwrap().to_owned();
    drop(first);
    let second = start(&full, envs);
    let (status, dec) = call(
        &second,
        "Decrypt",
        &format!(r#"{{"CiphertextBlob":"{blob}","EncryptionContext":{{"a":"b"}}}}"#),
    );
    assert_eq!(status, 200, "{dec}");
    assert_eq!(dec["Plaintext"], "c3Vydml2ZXM="); // "survives"
    assert!(dec["KeyId"].as_str().unwrap().ends_with(&key_id));
    // The wrong context is still refused after the restart.
    let (status, bad) = call(
        &second,
        "Decrypt",
        &format!(r#"{{"CiphertextBlob":"{blob}","EncryptionContext":{{"a":"c"}}}}"#),
    );
    assert_eq!(status, 400);
    assert_eq!(error_type(&bad), "InvalidCiphertextException");
}

#[test]
fn a_postgres_ring_survives_a_restart() {
    if !pg::available() {
        return;
    }
    let url = pg::fresh_db();
    survives_a_restart(
        &["--postgres"],
        &[
            ("STRONGROOM_POSTGRES_URL", &url),
            ("STRONGROOM_PASSPHRASE", "endpoint fleet passphrase"),
        ],
    );
}

/// Material on the SoftHSM2 token, metadata in PostgreSQL. In the nextest
/// group `softhsm` (one process at a time on the token).
#[test]
fn a_pkcs11_ring_with_postgres_metadata_survives_a_restart() {
    let vars = [
        "STRONGROOM_PKCS11_MODULE",
        "STRONGROOM_PKCS11_TOKEN",
        "STRONGROOM_PKCS11_PIN",
    ];
    if vars.iter().any(|v| std::env::var(v).is_err()) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true: the PKCS#11 endpoint test needs the SoftHSM2 token"
        );
        eprintln!(
            "skipped: STRONGROOM_PKCS11_MODULE/TOKEN/PIN not set; run eval \"$(.ci/softhsm-setup)\" to enable"
        );
        return;
    }
    if !pg::available() {
        return;
    }
    let url = pg::fresh_db();
    survives_a_restart(
        &["--postgres", "--pkcs11"],
        &[
            ("STRONGROOM_POSTGRES_URL", &url),
            ("STRONGROOM_PASSPHRASE", "endpoint hsm passphrase"),
        ],
    );
}
