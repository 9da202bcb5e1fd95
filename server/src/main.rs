//! `strongroom-kms-server`: a KMS-compatible HTTP endpoint over a strongroom
//! key ring. AWS SDKs and the AWS CLI talk to it with `endpoint_url`; each
//! request is authenticated with SigV4 against a table of access keys, and
//! runs as the strongroom principal of its key.
//!
//! ```text
//! strongroom-kms-server --credentials creds.txt --in-memory
//! STRONGROOM_PASSPHRASE=... strongroom-kms-server --credentials creds.txt --keystore DIR
//! ```
//!
//! The first line on stdout is `listening on ADDR` (useful with port 0).
//! Requests are logged to stderr (operation, principal, outcome); secrets
//! never are.

mod auth;
mod http;
mod kms;

use std::net::TcpListener;
use std::process::ExitCode;
use std::time::Duration;
use strongroom::KeyRing;
use strongroom::store::RootKey;

const USAGE: &str = "\
strongroom-kms-server: a KMS-compatible HTTP endpoint (AWS KMS JSON 1.1, SigV4)

USAGE:
    strongroom-kms-server --credentials FILE (--in-memory | --keystore DIR) [OPTIONS]

OPTIONS:
    --listen ADDR        address to listen on [default: 127.0.0.1:4599]; port 0 picks one
    --region REGION      region of the SigV4 scope and the ARNs [default: us-east-1]
    --account ID         account id of the ARNs [default: 000000000000]
    --credentials FILE   access keys, one `ACCESS_KEY_ID SECRET principal` per line
                         (principal as kind:name, e.g. user:alice)
    --keystore DIR       a strongroom file keystore (created if absent); the
                         passphrase is read from STRONGROOM_PASSPHRASE
    --in-memory          keys in memory only, lost on exit
    --workers N          worker threads [default: 8]
    --max-body BYTES     largest request body [default: 262144]
    --io-timeout SECS    per read/write socket timeout [default: 10]
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
    workers: usize,
    max_body: usize,
    io_timeout: u64,
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Option<Config>, String> {
    let mut c = Config {
        listen: "127.0.0.1:4599".into(),
        region: "us-east-1".into(),
        account: "000000000000".into(),
        credentials: String::new(),
        keystore: None,
        in_memory: false,
        workers: 8,
        max_body: 256 * 1024,
        io_timeout: 10,
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
            "--workers" => c.workers = number("--workers", value("--workers")?)?.min(256) as usize,
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
    if c.in_memory == c.keystore.is_some() {
        return Err("give exactly one of --in-memory and --keystore DIR".into());
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
    let ring = match &c.keystore {
        None => KeyRing::in_memory(),
        Some(dir) => {
            let root =
                RootKey::passphrase_from_env("STRONGROOM_PASSPHRASE").map_err(|e| e.to_string())?;
            KeyRing::open_or_create(dir, root).map_err(|e| format!("keystore {dir}: {e}"))?
        }
    };
    let listener =
        TcpListener::bind(&c.listen).map_err(|e| format!("cannot listen on {}: {e}", c.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening on {addr}");
    eprintln!(
        "strongroom-kms-server: {} access keys, region {}, account {}, {} workers",
        table.len(),
        c.region,
        c.account,
        c.workers
    );
    let service = kms::Service {
        ring,
        region: c.region.clone(),
        account: c.account,
    };
    let limits = http::Limits {
        max_body: c.max_body,
        io_timeout: Duration::from_secs(c.io_timeout),
        request_deadline: Duration::from_secs(c.io_timeout * 3),
        workers: c.workers,
        queue: c.workers * 8,
    };
    let region = c.region;
    http::serve(listener, limits, move |req| {
        handle(&service, &table, &region, req)
    })
    .map_err(|e| e.to_string())
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
    req: http::Request,
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
    let principal = match auth::authenticate(table, region, &req) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{op} refused: {}", e.type_name);
            return json_error(&e);
        }
    };
    match service.call(principal.clone(), &op, &req.body) {
        Ok(v) => {
            eprintln!("{op} by {principal}: ok");
            http::Response {
                status: 200,
                content_type: "application/x-amz-json-1.1",
                body: zeroize::Zeroizing::new(v.to_string()).as_bytes().to_vec(),
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
