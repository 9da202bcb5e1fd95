//! A small load figure for a running `strongroom-kms-server`: Encrypt
//! requests per second with 1 and 16 concurrent clients (each request on a
//! new connection, signed with the library's SigV4). Prints figures only.
//!
//! ```text
//! cargo run -p strongroom-kms-server --example load -- \
//!     http://127.0.0.1:4599 ACCESS_KEY_ID SECRET [SECONDS] [REGION]
//! ```
//!
//! The access key's principal must be allowed to create keys (the default
//! ring policy allows anyone).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use strongroom::interop::sigv4::{Credentials, Scope, amz_date, sign};

struct Target {
    addr: String,
    creds: Credentials,
    region: String,
}

fn request(t: &Target, op: &str, body: &str) -> Result<String, String> {
    let op = format!("TrentService.{op}");
    let headers = [
        ("host", t.addr.as_str()),
        ("content-type", "application/x-amz-json-1.1"),
        ("x-amz-target", op.as_str()),
    ];
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let date = amz_date(unix);
    let scope = Scope {
        date_time: &date,
        region: &t.region,
        service: "kms",
    };
    let added = sign("POST", "/", "", &headers, body.as_bytes(), &t.creds, &scope)
        .map_err(|e| e.to_string())?;
    let mut req = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n", body.len());
    for (n, v) in headers
        .iter()
        .map(|(n, v)| (*n, *v))
        .chain(added.iter().map(|(n, v)| (n.as_str(), v.as_str())))
    {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    let mut s = TcpStream::connect(&t.addr).map_err(|e| e.to_string())?;
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    if !out.starts_with("HTTP/1.1 200") {
        return Err(out);
    }
    Ok(out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: load ENDPOINT ACCESS_KEY_ID SECRET [SECONDS] [REGION]");
        std::process::exit(2);
    }
    let addr = args[0]
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let secs: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5);
    let region = args.get(4).cloned().unwrap_or_else(|| "us-east-1".into());
    let t = Arc::new(Target {
        addr,
        creds: Credentials::new(&args[1], &args[2]),
        region,
    });
    let created = request(&t, "CreateKey", "{}").expect("CreateKey");
    let v: serde_json::Value = serde_json::from_str(&created).expect("CreateKey answer");
    let key = v["KeyMetadata"]["KeyId"]
        .as_str()
        .expect("KeyId")
        .to_string();
    let body = Arc::new(format!(
        r#"{{"KeyId": "{key}", "Plaintext": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "EncryptionContext": {{"tenant": "42"}}}}"#
    ));
    for clients in [1usize, 16] {
        let done = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let deadline = start + Duration::from_secs(secs);
        let threads: Vec<_> = (0..clients)
            .map(|_| {
                let (t, body, done, failed) =
                    (t.clone(), body.clone(), done.clone(), failed.clone());
                std::thread::spawn(move || {
                    while Instant::now() < deadline {
                        match request(&t, "Encrypt", &body) {
                            Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                            Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                })
            })
            .collect();
        for th in threads {
            let _ = th.join();
        }
        let elapsed = start.elapsed().as_secs_f64();
        let n = done.load(Ordering::Relaxed);
        println!(
            "Encrypt, {clients:>2} concurrent clients: {:.0} requests/s ({n} ok, {} failed, {elapsed:.1} s)",
            n as f64 / elapsed,
            failed.load(Ordering::Relaxed)
        );
    }
}
