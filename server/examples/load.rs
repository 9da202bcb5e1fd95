//! A load figure for a running `strongroom-kms-server` over loopback:
//! Encrypt and GenerateDataKey requests per second with 1 and 16
//! concurrent clients, and their latency (p50, p90, p99, max). Each client
//! is a thread with its own kept-alive connection (as the AWS SDKs pool
//! theirs), signing every request with the library's SigV4.
//!
//! ```text
//! cargo run --release -p strongroom-kms-server --example load -- \
//!     http://127.0.0.1:4599 ACCESS_KEY_ID SECRET [SECONDS] [MAX_REQUESTS] [REGION]
//! ```
//!
//! Each of the four runs is bounded in time (SECONDS, default 5) and in
//! count (MAX_REQUESTS per run, default 20000), whichever comes first. The
//! access key's principal must be allowed to create keys (the default ring
//! policy allows anyone). Plain HTTP only. Prints figures only.

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

/// A kept-alive connection, reopened if the server closed it.
struct Conn {
    stream: Option<TcpStream>,
}

fn signed(t: &Target, op: &str, body: &str) -> Result<Vec<u8>, String> {
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
    Ok(req.into_bytes())
}

/// Reads one response (by its Content-Length); returns status, whether the
/// server keeps the connection, and the body.
fn read_response(s: &mut TcpStream) -> Result<(u16, bool, String), String> {
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            Ok(_) => return Err("connection closed".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let status = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or("no status line")?;
    let mut len = 0usize;
    let mut keep = false;
    for line in head.lines() {
        if let Some((n, v)) = line.split_once(':') {
            if n.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().map_err(|_| "bad Content-Length")?;
            } else if n.eq_ignore_ascii_case("connection") {
                keep = v.trim().eq_ignore_ascii_case("keep-alive");
            }
        }
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).map_err(|e| e.to_string())?;
    Ok((status, keep, String::from_utf8_lossy(&body).to_string()))
}

impl Conn {
    fn request(&mut self, t: &Target, op: &str, body: &str) -> Result<String, String> {
        let raw = signed(t, op, body)?;
        let mut s = match self.stream.take() {
            Some(s) => s,
            None => {
                let s = TcpStream::connect(&t.addr).map_err(|e| e.to_string())?;
                s.set_nodelay(true).map_err(|e| e.to_string())?;
                s.set_read_timeout(Some(Duration::from_secs(30)))
                    .map_err(|e| e.to_string())?;
                s
            }
        };
        s.write_all(&raw).map_err(|e| e.to_string())?;
        let (status, keep, body) = read_response(&mut s)?;
        if keep {
            self.stream = Some(s);
        }
        if status != 200 {
            return Err(format!("{status}: {body}"));
        }
        Ok(body)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: load ENDPOINT ACCESS_KEY_ID SECRET [SECONDS] [MAX_REQUESTS] [REGION]");
        std::process::exit(2);
    }
    let addr = args[0]
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let secs: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5);
    let max_requests: u64 = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let region = args.get(5).cloned().unwrap_or_else(|| "us-east-1".into());
    let t = Arc::new(Target {
        addr,
        creds: Credentials::new(&args[1], &args[2]),
        region,
    });
    let created = Conn { stream: None }
        .request(&t, "CreateKey", "{}")
        .unwrap_or_else(|e| {
            eprintln!("CreateKey failed: {e}");
            std::process::exit(1)
        });
    let v: serde_json::Value = serde_json::from_str(&created).expect("CreateKey answer");
    let key = v["KeyMetadata"]["KeyId"]
        .as_str()
        .expect("KeyId")
        .to_string();
    let encrypt = format!(
        r#"{{"KeyId": "{key}", "Plaintext": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "EncryptionContext": {{"tenant": "42"}}}}"#
    );
    let data_key = format!(
        r#"{{"KeyId": "{key}", "KeySpec": "AES_256", "EncryptionContext": {{"tenant": "42"}}}}"#
    );
    println!(
        "{secs} s or {max_requests} requests per run, whichever first; keep-alive connections"
    );
    for (op, body) in [("Encrypt", encrypt), ("GenerateDataKey", data_key)] {
        let body = Arc::new(body);
        for clients in [1usize, 16] {
            let issued = Arc::new(AtomicU64::new(0));
            let failed = Arc::new(AtomicU64::new(0));
            let start = Instant::now();
            let deadline = start + Duration::from_secs(secs);
            let threads: Vec<_> = (0..clients)
                .map(|_| {
                    let (t, body, issued, failed) =
                        (t.clone(), body.clone(), issued.clone(), failed.clone());
                    std::thread::spawn(move || {
                        let mut conn = Conn { stream: None };
                        let mut latencies = Vec::new();
                        while Instant::now() < deadline
                            && issued.fetch_add(1, Ordering::Relaxed) < max_requests
                        {
                            let began = Instant::now();
                            match conn.request(&t, op, &body) {
                                Ok(_) => latencies.push(began.elapsed()),
                                Err(_) => {
                                    failed.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        latencies
                    })
                })
                .collect();
            let mut all: Vec<Duration> = threads
                .into_iter()
                .flat_map(|th| th.join().unwrap_or_default())
                .collect();
            let elapsed = start.elapsed().as_secs_f64();
            all.sort_unstable();
            let n = all.len();
            println!(
                "{op:<15} {clients:>2} clients: {:>7.0} req/s ({n} ok, {} failed, {elapsed:.1} s); \
                 latency p50 {} p90 {} p99 {} max {}",
                n as f64 / elapsed,
                failed.load(Ordering::Relaxed),
                ms(percentile(&all, 0.50)),
                ms(percentile(&all, 0.90)),
                ms(percentile(&all, 0.99)),
                ms(all.last().copied().unwrap_or_default()),
            );
        }
    }
}
