//! What streaming a large file costs a whole process, next to the `age`
//! CLI on the same file: wall time, CPU cores kept busy ((user + system) ÷
//! wall) and peak RSS, each process measured by `/usr/bin/time`.
//!
//! ```text
//! cargo run --release --example stream_cost            # 1 GiB
//! STRONGROOM_BENCH_STREAM_MB=256 cargo run --release --example stream_cost
//! ```
//!
//! It writes a file of pseudo-random-looking bytes to a temporary
//! directory, then runs, 3 times each, `age` (X25519 recipient) encrypt and
//! decrypt, and this program again as a child that only seals (file → file
//! with `SealWriter::copy_from`) or only opens (`OpenReader::copy_to`) the
//! file, on every core and on one thread. It prints the median run of each
//! (by wall time) and writes them to `criterion/stream_file_cost.txt` in
//! the target directory, where `bench_report` reads them. It needs `age`,
//! `age-keygen` and `/usr/bin/time` (`apt-get install age time`).
//!
//! The child's ring takes its randomness from a fixed seed
//! (`hazmat::InsecureSeededRandom`) so that the child that opens recreates
//! the key of the child that sealed: a benchmark device, never a way to
//! keep keys.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use strongroom::{Client, CreateKeyOptions, EncryptionContext, KeyRing, KeySpec, Principal};

/// Set in a child: `seal` or `open`, with `IN`, `OUT` and `THREADS` below.
const CHILD: &str = "STRONGROOM_STREAM_COST_CHILD";

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    if let Ok(op) = std::env::var(CHILD) {
        return child(&op);
    }
    for tool in ["age", "age-keygen", "/usr/bin/time"] {
        let found = Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            eprintln!("stream_cost: `{tool}` is not installed (apt-get install age time)");
            std::process::exit(2);
        }
    }
    let mb: usize = std::env::var("STRONGROOM_BENCH_STREAM_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let dir = tempfile_dir()?;
    let p = |name: &str| dir.join(name);
    {
        let mut f = BufWriter::new(File::create(p("in"))?);
        let block: Vec<u8> = (0..1 << 20).map(|i: usize| (i * 131 % 251) as u8).collect();
        for _ in 0..mb {
            f.write_all(&block)?;
        }
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    let keygen = Command::new("age-keygen")
        .arg("-o")
        .arg(p("age.key"))
        .output()?;
    if !keygen.status.success() {
        return Err("age-keygen failed".into());
    }
    let key_text = std::fs::read_to_string(p("age.key"))?;
    let recipient = key_text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .ok_or("age-keygen printed no public key")?
        .to_owned();

    let mut rows: Vec<(&str, [f64; 4])> = Vec::new();
    let mut age_encrypt = Command::new("age");
    age_encrypt
        .arg("-r")
        .arg(&recipient)
        .arg("-o")
        .arg(p("out.age"))
        .arg(p("in"));
    rows.push(("age_encrypt", median_of_3(&mut age_encrypt, &p("out.age"))?));
    let mut age_decrypt = Command::new("age");
    age_decrypt
        .arg("-d")
        .arg("-i")
        .arg(p("age.key"))
        .arg("-o")
        .arg(p("dec.age"))
        .arg(p("out.age"));
    rows.push(("age_decrypt", median_of_3(&mut age_decrypt, &p("dec.age"))?));
    let me = std::env::current_exe()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for (threads, seal_name, open_name) in [
        (cores, "seal_all_cores", "open_all_cores"),
        (1, "seal_one_thread", "open_one_thread"),
    ] {
        let ours = |op: &str, from: &str, to: &str| {
            let mut c = Command::new(&me);
            c.env(CHILD, op)
                .env("STRONGROOM_STREAM_COST_IN", p(from))
                .env("STRONGROOM_STREAM_COST_OUT", p(to))
                .env("STRONGROOM_STREAM_COST_THREADS", threads.to_string());
            c
        };
        let seal = median_of_3(&mut ours("seal", "in", "ours.sr"), &p("ours.sr"))?;
        rows.push((seal_name, seal));
        let open = median_of_3(&mut ours("open", "ours.sr", "ours.dec"), &p("ours.dec"))?;
        rows.push((open_name, open));
        if !files_equal(&p("ours.dec"), &p("in"))? {
            return Err("the opened file differs from the input".into());
        }
    }
    std::fs::remove_dir_all(&dir)?;

    let mut text =
        format!("# {mb} MiB; name wall_s user_s sys_s max_rss_kib (median of 3 by wall)\n");
    println!("{mb} MiB file → file, median of 3 runs:");
    for (name, [e, u, s, m]) in &rows {
        println!(
            "  {name:<16} {e:>6.2} s  {:>4.2} cores busy  peak RSS {:>6.1} MiB",
            (u + s) / e.max(0.01),
            m / 1024.0
        );
        text.push_str(&format!("{name} {e} {u} {s} {m}\n"));
    }
    let out = criterion_dir().join("stream_file_cost.txt");
    std::fs::create_dir_all(out.parent().ok_or("no parent")?)?;
    std::fs::write(&out, text)?;
    println!("written to {}", out.display());
    Ok(())
}

/// True if both files hold the same bytes.
fn files_equal(a: &Path, b: &Path) -> Res<bool> {
    use std::io::Read;
    let (mut a, mut b) = (File::open(a)?, File::open(b)?);
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = a.read(&mut x)?;
        if n == 0 {
            return Ok(b.read(&mut y[..1])? == 0);
        }
        b.read_exact(&mut y[..n])?;
        if x[..n] != y[..n] {
            return Ok(false);
        }
    }
}

/// A fresh directory under the system's temporary directory.
fn tempfile_dir() -> Res<PathBuf> {
    let dir = std::env::temp_dir().join(format!("strongroom-stream-cost-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The child: seal or open one file, nothing else.
fn child(op: &str) -> Res<()> {
    let var = |k: &str| std::env::var(k).map_err(|_| format!("{k} is not set"));
    let threads: usize = var("STRONGROOM_STREAM_COST_THREADS")?.parse()?;
    let ring = KeyRing::builder()
        .random(std::sync::Arc::new(
            strongroom::hazmat::InsecureSeededRandom::new([7; 32]),
        ))
        .threads(threads)
        .build();
    let client = ring.client(Principal::service("bench")?);
    let key = client
        .create_key(KeySpec::default(), CreateKeyOptions::new())?
        .to_string();
    let (from, to) = (
        PathBuf::from(var("STRONGROOM_STREAM_COST_IN")?),
        PathBuf::from(var("STRONGROOM_STREAM_COST_OUT")?),
    );
    match op {
        "seal" => seal_file(&client, &key, &from, &to),
        "open" => open_file(&client, &from, &to),
        other => Err(format!("{CHILD}={other}: expected seal or open").into()),
    }
}

fn ctx() -> EncryptionContext {
    EncryptionContext::new().with("bench", "stream")
}

fn seal_file(client: &Client, key: &str, from: &Path, to: &Path) -> Res<()> {
    let mut input = File::open(from)?;
    let out = File::create(to)?;
    let mut w = client.seal_writer(key, &ctx(), Default::default(), out)?;
    w.copy_from(&mut input)?;
    w.finish()?;
    Ok(())
}

fn open_file(client: &Client, from: &Path, to: &Path) -> Res<()> {
    let input = File::open(from)?;
    let mut r = client.open_reader(input, &ctx())?;
    let mut out = File::create(to)?;
    r.copy_to(&mut out)?;
    Ok(())
}

/// One process under `/usr/bin/time -f '%e %U %S %M'`: wall, user and
/// system seconds, peak RSS in KiB.
fn timed(cmd: &Command) -> Res<[f64; 4]> {
    let mut timed = Command::new("/usr/bin/time");
    timed.arg("-f").arg("%e %U %S %M").arg(cmd.get_program());
    timed.args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            timed.env(k, v);
        }
    }
    let out = timed.output()?;
    if !out.status.success() {
        return Err(format!("{timed:?} failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let v: Vec<f64> = err
        .lines()
        .last()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    match v[..] {
        [e, u, s, m] => Ok([e, u, s, m]),
        _ => Err(format!("unexpected /usr/bin/time output: {err}").into()),
    }
}

/// The median of 3 runs by wall time. Before each run the output file
/// `out` is removed and after it flushed to disk, both outside the timing:
/// every run (ours and `age`'s alike) starts with no truncation to do and
/// no backlog of dirty pages left by the one before.
fn median_of_3(cmd: &mut Command, out: &Path) -> Res<[f64; 4]> {
    let run = || -> Res<[f64; 4]> {
        match std::fs::remove_file(out) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        let r = timed(cmd)?;
        File::open(out)?.sync_all()?;
        Ok(r)
    };
    let mut runs = [run()?, run()?, run()?];
    runs.sort_by(|a, b| a[0].total_cmp(&b[0]));
    Ok(runs[1])
}

/// Where criterion writes and `bench_report` reads: `$CARGO_TARGET_DIR`'s
/// `criterion` when that is set, else `target/criterion` in this crate.
fn criterion_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) if !t.is_empty() => {
            let t = PathBuf::from(t);
            let t = if t.is_absolute() {
                t
            } else {
                Path::new(env!("CARGO_MANIFEST_DIR")).join(t)
            };
            t.join("criterion")
        }
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/criterion"),
    }
}
