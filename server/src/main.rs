//! `strongroom-kms-server`: a KMS-compatible HTTP endpoint over a strongroom
//! key ring. AWS SDKs and the AWS CLI talk to it with `endpoint_url`; each
//! request is authenticated with SigV4 against a table of access keys, and
//! runs as the strongroom principal of its key.
//!
//! ```text
//! strongroom-kms-server --credentials creds.txt --in-memory
//! STRONGROOM_PASSPHRASE=... strongroom-kms-server --credentials creds.txt --keystore DIR
//! STRONGROOM_PASSPHRASE=... STRONGROOM_POSTGRES_URL=postgres://... \
//!     strongroom-kms-server --credentials creds.txt --postgres [--pkcs11]
//! ```
//!
//! The first line on stdout is `listening on ADDR` (useful with port 0).
//! Requests are logged to stderr (operation, principal, outcome); secrets
//! never are.

mod auth;
mod http;
mod kms;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use strongroom::KeyRing;
use strongroom::SecretBytes;
use strongroom::audit::{JsonlFileSink, JsonlOptions};
use strongroom::backend::{Pkcs11Backend, Pkcs11Config};
use strongroom::store::{KeystoreOptions, OpenMode, PostgresOptions, RootKey};
use zeroize::{Zeroize, Zeroizing};

const USAGE: &str = "\
strongroom-kms-server: a KMS-compatible HTTP endpoint (AWS KMS JSON 1.1, SigV4)

USAGE:
    strongroom-kms-server --credentials FILE (--in-memory | --keystore DIR | --postgres) [--pkcs11] [OPTIONS]

OPTIONS:
    --listen ADDR        address to listen on [default: 127.0.0.1:4599]; port 0 picks one
    --region REGION      region of the SigV4 scope and the ARNs [default: us-east-1]
    --account ID         account id of the ARNs [default: 000000000000]
    --credentials FILE   access keys, one `ACCESS_KEY_ID SECRET principal` per line
                         (principal as kind:name, e.g. user:alice)
    --keystore DIR       a strongroom file keystore (created if absent); the
                         passphrase is read from STRONGROOM_PASSPHRASE
    --in-memory          keys in memory only, lost on exit
    --postgres           a PostgreSQL fleet store: the URL is read from
                         STRONGROOM_POSTGRES_URL (so its password is not in the
                         process list), the root-key passphrase from
                         STRONGROOM_PASSPHRASE; several servers may share it
    --pkcs11             key material on a PKCS#11 token (module, token label
                         and user PIN from STRONGROOM_PKCS11_MODULE,
                         STRONGROOM_PKCS11_TOKEN, STRONGROOM_PKCS11_PIN); with
                         --postgres the metadata goes to the database, with
                         --in-memory it is lost on exit
    --max-connections N  connections served at once, one thread each [default: 64]
    --max-body BYTES     largest request body [default: 262144]
    --io-timeout SECS    per read/write socket timeout [default: 10]
    --idle-timeout SECS  how long a kept-alive connection waits for its next
                         request [default: 5]
    --max-requests N     requests served on one connection [default: 1000]
    --tls-cert FILE      serve HTTPS: the certificate chain (PEM), leaf first
    --tls-key FILE       and its private key (PEM: PKCS#8, PKCS#1 or SEC1)
    --audit-log DIR      the ring's audit log: a signed, hash-chained JSON
                         Lines log in DIR (created 0700 if absent); every
                         operation and every refused request is recorded
    --audit-key FILE     the log's 32-byte Ed25519 signing seed (created 0600
                         with a random seed if absent) [default: DIR/../audit.seed]
    -h, --help           this help
";

/// The parsed command line.
struct Config {
    listen: String,
    region: String,
    account: String,
    credentials: String,
    keystore: Option<String>,
    in_memory: bool,
    postgres: bool,
    pkcs11: bool,
    max_connections: usize,
    max_body: usize,
    io_timeout: u64,
    idle_timeout: u64,
    max_requests: usize,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    audit_log: Option<String>,
    audit_key: Option<String>,
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Option<Config>, String> {
    let mut c = Config {
        listen: "127.0.0.1:4599".into(),
        region: "us-east-1".into(),
        account: "000000000000".into(),
        credentials: String::new(),
        keystore: None,
        in_memory: false,
        postgres: false,
        pkcs11: false,
        max_connections: 64,
        max_body: 256 * 1024,
        io_timeout: 10,
        idle_timeout: 5,
        max_requests: 1000,
        tls_cert: None,
        tls_key: None,
        audit_log: None,
        audit_key: None,
    };
    let mut args = args.peekable();
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        let number = |name: &str, v: String| {
            v.parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{name} must be a positive integer"))
        };
        match a.as_str() {
            "-h" | "--help" => return Ok(None),
            "--listen" => c.listen = value("--listen")?,
            "--region" => c.region = value("--region")?,
            "--account" => c.account = value("--account")?,
            "--credentials" => c.credentials = value("--credentials")?,
            "--keystore" => c.keystore = Some(value("--keystore")?),
            "--in-memory" => c.in_memory = true,
            "--postgres" => c.postgres = true,
            "--pkcs11" => c.pkcs11 = true,
            "--max-connections" => {
                c.max_connections =
                    number("--max-connections", value("--max-connections")?)?.min(4096) as usize
            }
            "--idle-timeout" => {
                c.idle_timeout = number("--idle-timeout", value("--idle-timeout")?)?
            }
            "--max-requests" => {
                c.max_requests =
                    number("--max-requests", value("--max-requests")?)?.min(1 << 20) as usize
            }
            "--tls-cert" => c.tls_cert = Some(value("--tls-cert")?),
            "--tls-key" => c.tls_key = Some(value("--tls-key")?),
            "--audit-log" => c.audit_log = Some(value("--audit-log")?),
            "--audit-key" => c.audit_key = Some(value("--audit-key")?),
            "--max-body" => {
                c.max_body = number("--max-body", value("--max-body")?)?.min(64 << 20) as usize
            }
            "--io-timeout" => c.io_timeout = number("--io-timeout", value("--io-timeout")?)?,
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    if c.credentials.is_empty() {
        return Err("--credentials FILE is required".into());
    }
    if [c.in_memory, c.keystore.is_some(), c.postgres]
        .iter()
        .filter(|x| **x)
        .count()
        != 1
    {
        return Err("give exactly one of --in-memory, --keystore DIR and --postgres".into());
    }
    if c.pkcs11 && c.keystore.is_some() {
        return Err("--pkcs11 goes with --postgres or --in-memory, not --keystore".into());
    }
    if c.tls_cert.is_some() != c.tls_key.is_some() {
        return Err("give both --tls-cert and --tls-key, or neither".into());
    }
    if c.audit_key.is_some() && c.audit_log.is_none() {
        return Err("--audit-key needs --audit-log DIR".into());
    }
    let region_ok = !c.region.is_empty()
        && c.region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !region_ok {
        return Err("--region must be lowercase letters, digits and dashes".into());
    }
    if c.account.len() != 12 || !c.account.bytes().all(|b| b.is_ascii_digit()) {
        return Err("--account must be 12 digits".into());
    }
    Ok(Some(c))
}

fn run(c: Config) -> Result<(), String> {
    let creds_text = std::fs::read_to_string(&c.credentials)
        .map_err(|e| format!("cannot read {}: {e}", c.credentials))?;
    let table = auth::CredentialTable::parse(&creds_text)?;
    drop(zeroize::Zeroizing::new(creds_text));
    let mut builder = KeyRing::builder();
    if c.pkcs11 {
        let var = |name: &str| {
            std::env::var(name).map_err(|_| format!("--pkcs11 needs {name} in the environment"))
        };
        let pin = Zeroizing::new(var("STRONGROOM_PKCS11_PIN")?);
        let config = Pkcs11Config::new(
            var("STRONGROOM_PKCS11_MODULE")?,
            var("STRONGROOM_PKCS11_TOKEN")?,
            SecretBytes::new(pin.as_bytes().to_vec()),
        );
        let backend = Pkcs11Backend::connect(&config).map_err(|e| format!("PKCS#11: {e}"))?;
        builder = builder.backend(Arc::new(backend));
    }
    if c.postgres {
        let url = Zeroizing::new(std::env::var("STRONGROOM_POSTGRES_URL").map_err(|_| {
            "--postgres needs STRONGROOM_POSTGRES_URL in the environment".to_string()
        })?);
        let root =
            RootKey::passphrase_from_env("STRONGROOM_PASSPHRASE").map_err(|e| e.to_string())?;
        builder = if c.pkcs11 {
            builder.postgres_metadata(&url, &root, PostgresOptions::default())
        } else {
            builder.postgres(&url, &root, PostgresOptions::default())
        }
        .map_err(|e| format!("PostgreSQL: {e}"))?;
    }
    if let Some(dir) = &c.keystore {
        let root =
            RootKey::passphrase_from_env("STRONGROOM_PASSPHRASE").map_err(|e| e.to_string())?;
        builder = builder
            .file_keystore(
                dir,
                &root,
                KeystoreOptions::default().mode(OpenMode::OpenOrCreate),
            )
            .map_err(|e| format!("keystore {dir}: {e}"))?;
    }
    if let Some(dir) = &c.audit_log {
        let seed_path = match &c.audit_key {
            Some(p) => PathBuf::from(p),
            None => Path::new(dir)
                .parent()
                .unwrap_or(Path::new("."))
                .join("audit.seed"),
        };
        let seed = audit_seed(&seed_path)?;
        let sink = JsonlFileSink::open(dir, &seed, JsonlOptions::default())
            .map_err(|e| format!("audit log {dir}: {e}"))?;
        builder = builder.audit_sink(Arc::new(sink));
    }
    let ring = builder.build();
    let tls = match (&c.tls_cert, &c.tls_key) {
        (Some(cert), Some(key)) => Some(tls_config(cert, key)?),
        _ => None,
    };
    let listener =
        TcpListener::bind(&c.listen).map_err(|e| format!("cannot listen on {}: {e}", c.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening on {addr}");
    eprintln!(
        "strongroom-kms-server: {} access keys, region {}, account {}, {}, audit log {}",
        table.len(),
        c.region,
        c.account,
        if tls.is_some() { "TLS" } else { "plain HTTP" },
        c.audit_log.as_deref().unwrap_or("off"),
    );
    let service = kms::Service {
        ring,
        region: c.region.clone(),
        account: c.account,
    };
    let limits = http::Limits {
        max_body: c.max_body,
        io_timeout: Duration::from_secs(c.io_timeout),
        request_deadline: Duration::from_secs(c.io_timeout.saturating_mul(3)),
        idle_timeout: Duration::from_secs(c.idle_timeout),
        max_requests_per_connection: c.max_requests,
        max_connections: c.max_connections,
    };
    let region = c.region;
    http::serve(listener, limits, tls, move |req| {
        handle(&service, &table, &region, req)
    })
    .map_err(|e| e.to_string())
}

/// The audit log's signing seed from `path`: 32 bytes, created (0600,
/// random) if the file does not exist.
fn audit_seed(path: &Path) -> Result<Zeroizing<[u8; 32]>, String> {
    let mut seed = Zeroizing::new([0u8; 32]);
    match std::fs::read(path) {
        Ok(bytes) => {
            let bytes = Zeroizing::new(bytes);
            if bytes.len() != 32 {
                return Err(format!(
                    "audit key {}: expected 32 bytes, found {}",
                    path.display(),
                    bytes.len()
                ));
            }
            seed.copy_from_slice(&bytes);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use strongroom::random::RandomSource;
            strongroom::random::OsRandom
                .fill(seed.as_mut_slice())
                .map_err(|e| format!("audit key: {e}"))?;
            let mut o = std::fs::OpenOptions::new();
            o.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
            let mut f = o
                .open(path)
                .map_err(|e| format!("cannot create audit key {}: {e}", path.display()))?;
            std::io::Write::write_all(&mut f, seed.as_slice())
                .and_then(|()| f.sync_all())
                .map_err(|e| format!("cannot write audit key {}: {e}", path.display()))?;
        }
        Err(e) => return Err(format!("cannot read audit key {}: {e}", path.display())),
    }
    Ok(seed)
}

/// A rustls server configuration (ring provider) from PEM files.
fn tls_config(cert: &str, key: &str) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("--tls-cert {cert}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("--tls-cert {cert}: no CERTIFICATE in the file"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("--tls-key {key}: {e}"))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS: {e}"))?
    .with_no_client_auth()
    .with_single_cert(certs, key_der)
    .map_err(|e| format!("TLS certificate and key: {e}"))?;
    Ok(Arc::new(config))
}

fn json_error(e: &kms::KmsError) -> http::Response {
    http::Response {
        status: e.status,
        content_type: "application/x-amz-json-1.1",
        body: e.body(),
    }
}

/// One request: route, authenticate, run, answer. Logs the operation, the
/// principal and the outcome (exception name) only.
fn handle(
    service: &kms::Service,
    table: &auth::CredentialTable,
    region: &str,
    mut req: http::Request,
) -> http::Response {
    let response = handle_inner(service, table, region, &req);
    // The body may hold a plaintext (Encrypt) or a data key.
    req.body.zeroize();
    response
}

fn handle_inner(
    service: &kms::Service,
    table: &auth::CredentialTable,
    region: &str,
    req: &http::Request,
) -> http::Response {
    if req.method != "POST" || req.path != "/" {
        return http::plain(404, "KMS requests are POST /");
    }
    let Some(op) = req
        .header("x-amz-target")
        .and_then(|t| t.strip_prefix("TrentService."))
        .map(str::to_owned)
    else {
        return json_error(&kms::KmsError::new(
            "UnknownOperationException",
            "X-Amz-Target must be TrentService.<Operation>",
        ));
    };
    let principal = match auth::authenticate(table, region, req) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{op} refused: {}", e.type_name);
            // Into the ring's audit log too: who the request claimed to be
            // (the access key id, unverified), what it asked, why it was
            // refused. No operation ran.
            let claimed = auth::claimed_access_key(req).unwrap_or("-");
            let action = format!("kms:{}", kms::op_name(&op));
            if let Err(audit) = service.ring.record_refused_request(
                &format!("unauthenticated:{claimed}"),
                &action,
                e.type_name,
            ) {
                eprintln!("{op} refused, and not audited: {audit}");
            }
            return json_error(&e);
        }
    };
    match service.call(principal.clone(), &op, &req.body) {
        Ok(v) => {
            eprintln!("{op} by {principal}: ok");
            http::Response {
                status: 200,
                content_type: "application/x-amz-json-1.1",
                body: kms::to_body(v),
            }
        }
        Err(e) => {
            eprintln!("{op} by {principal}: {}", e.type_name);
            json_error(&e)
        }
    }
}

fn main() -> ExitCode {
    match parse_args(std::env::args().skip(1)) {
        Ok(None) => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Some(c)) => match run(c) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("strongroom-kms-server: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("strongroom-kms-server: {e}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
