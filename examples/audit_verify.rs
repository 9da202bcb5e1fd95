//! Verifies a strongroom audit log offline.
//!
//! ```sh
//! cargo run --example audit_verify -- <log-dir> <public-key-hex> [anchor]
//! cargo run --example audit_verify -- --demo      # writes a log, then verifies it
//! ```
//!
//! `anchor` is `<seq>:<hash hex>`, as printed by an earlier run or by
//! `JsonlFileSink::anchor`: the log must still hold that record.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use strongroom::audit::{Anchor, JsonlFileSink, JsonlOptions, verify_log};
use strongroom::{CreateKeyOptions, EncryptionContext, KeyRing, KeySpec, Principal};

fn unhex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn demo() -> Result<(tempfile_dir::Dir, [u8; 32], Option<Anchor>), strongroom::Error> {
    let dir = tempfile_dir::Dir::new();
    let sink = Arc::new(JsonlFileSink::open(
        &dir.0,
        &[42u8; 32],
        JsonlOptions::default().digest_every(4),
    )?);
    let ring = KeyRing::builder().audit_sink(sink.clone()).build();
    let app = ring.client(Principal::service("demo")?);
    let key = app.create_key(KeySpec::default(), CreateKeyOptions::new())?;
    let ctx = EncryptionContext::new().with("purpose", "demo");
    for _ in 0..10 {
        let blob = app.encrypt(key.as_str(), b"secret", &ctx)?;
        app.decrypt(&blob, &ctx)?;
    }
    app.flush_audit()?;
    Ok((dir, sink.verifying_key(), sink.anchor()))
}

/// A directory under the system temp dir, removed on drop (no extra
/// dependency for an example).
mod tempfile_dir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            let p =
                std::env::temp_dir().join(format!("strongroom-audit-demo-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        println!(
            "usage: audit_verify <log-dir> <public-key-hex> [anchor]   verify a log\n       \
             audit_verify --demo                                 write a demo log, verify it\n\
             (no arguments given: running the demo)\n"
        );
    }
    let (holder, dir, key, anchor) = if args.is_empty() || args[0] == "--demo" {
        match demo() {
            Ok((d, k, a)) => {
                let path = d.0.clone();
                (Some(d), path, k, a)
            }
            Err(e) => {
                eprintln!("demo failed: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else if args.len() >= 2 {
        let Some(k) = unhex32(&args[1]) else {
            eprintln!("the public key must be 64 hex characters");
            return ExitCode::FAILURE;
        };
        let anchor = match args.get(2).map(|a| a.parse::<Anchor>()) {
            None => None,
            Some(Ok(a)) => Some(a),
            Some(Err(e)) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        (None, Path::new(&args[0]).to_path_buf(), k, anchor)
    } else {
        eprintln!("usage: audit_verify <log-dir> <public-key-hex> [anchor] | --demo");
        return ExitCode::FAILURE;
    };
    let result = verify_log(&dir, &key, anchor.as_ref());
    drop(holder);
    match result {
        Ok(r) => {
            println!(
                "log OK: {} records, {} signed digests, {} records after the last digest",
                r.records, r.digests, r.unsigned_tail
            );
            if let Some(a) = r.last_digest {
                println!("anchor (keep it for the next check): {a}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("log INVALID: {e}");
            ExitCode::FAILURE
        }
    }
}
