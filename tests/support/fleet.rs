//! Helpers of the fleet tests (`postgres_fleet`, `postgres_failures`):
//! rings on one database, retries of retryable errors, polling without
//! timing assertions, and child processes of the running test binary.

#![allow(dead_code)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use strongroom::store::{PostgresOptions, RootKey};
use strongroom::{Client, EncryptionContext, Error, ErrorKind, KeyRing, Principal};

pub fn ring(url: &str) -> KeyRing {
    KeyRing::builder()
        .postgres(url, &RootKey::raw([7; 32]), PostgresOptions::default())
        .unwrap()
        .build()
}

pub fn admin(r: &KeyRing) -> Client {
    r.client(Principal::user("admin").unwrap())
}

pub fn ctx() -> EncryptionContext {
    EncryptionContext::new().with("fleet", "test")
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Retries a call that failed with a retryable error (a lost race, the
/// server away), failing on any other error; gives up after 60 s.
pub fn retrying<T>(mut f: impl FnMut() -> Result<T, Error>) -> T {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if e.is_retryable() && start.elapsed() < Duration::from_secs(60) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
}

/// Polls `f` until it returns true, up to a generous limit (no timing
/// assertion: only that it happens).
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what}: not seen within 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn db(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).unwrap()
}

pub fn refused(r: Result<Vec<u8>, Error>) -> bool {
    match r {
        Ok(_) => false,
        Err(e) if e.is_retryable() => false,
        Err(e) => matches!(
            e.kind(),
            ErrorKind::Denied | ErrorKind::KeyState | ErrorKind::NotFound
        ),
    }
}

pub fn child(mode: &str, url: &str, arg: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child_process_entry",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("STRONGROOM_PG_CHILD_MODE", mode)
    .env("STRONGROOM_PG_CHILD_URL", url)
    .env("STRONGROOM_PG_CHILD_ARG", arg)
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    cmd
}
