//! encrypt, decrypt, sign, verify: files and stdin/stdout.
//!
//! Decryption to a file writes a temporary file in the destination's
//! directory and renames it over the destination only after the whole
//! message verified (its final frame authenticated and nothing after it):
//! a truncated, tampered or wrongly-contexted input leaves no output file
//! and no temporary file.
//!
//! Decryption to stdout cannot be taken back once written, so by default
//! the plaintext is held in memory (zeroized afterwards) and written only
//! after the whole message verified, up to [`STDOUT_BUFFER_LIMIT`]; a larger
//! plaintext is refused without writing anything. `--unsafe-stream` writes
//! each frame as soon as it verifies instead: then the exit code is what
//! says whether the output is complete and authentic.

use crate::exit::{self, CliError};
use crate::keystore::Session;
use crate::output::{AtomicFile, check_dest, emit};
use crate::progress::{Counted, Progress};
use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use strongroom::keyring::SignOptions;
use strongroom::{EncryptionContext, SealOptions};
use zeroize::Zeroizing;

/// The most plaintext `decrypt` buffers for stdout without
/// `--unsafe-stream` (64 MiB).
pub const STDOUT_BUFFER_LIMIT: usize = 64 << 20;

/// Chunk size of the copy loops (one envelope frame).
const CHUNK: usize = 64 * 1024;

/// Messages to sign are at most this long (the library's limit, 1 MiB).
const MAX_SIGN_INPUT: u64 = 1 << 20;

/// The encryption context of `--context k=v` flags. A key given twice is
/// refused (it would silently keep only one value).
pub fn context(pairs: &[String]) -> Result<EncryptionContext, CliError> {
    let mut ctx = EncryptionContext::new();
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| CliError::usage(format!("--context {p:?} must be written key=value")))?;
        if k.is_empty() {
            return Err(CliError::usage(format!(
                "--context {p:?}: the key must not be empty"
            )));
        }
        if ctx.get(k).is_some() {
            return Err(CliError::usage(format!(
                "--context key {k:?} is given twice"
            )));
        }
        ctx.insert(k, v);
    }
    ctx.validate()?;
    Ok(ctx)
}

/// An input: a file (with its size, for the progress bar) or stdin.
pub struct Input {
    reader: Box<dyn Read>,
    size: Option<u64>,
}

/// `None` or `-` is stdin.
fn is_std(path: Option<&Path>) -> Option<&Path> {
    path.filter(|p| p.as_os_str() != "-")
}

/// Opens the input.
pub fn open_input(path: Option<&Path>) -> Result<Input, CliError> {
    match is_std(path) {
        None => Ok(Input {
            reader: Box::new(io::stdin().lock()),
            size: None,
        }),
        Some(p) => {
            let f = File::open(p).map_err(|e| CliError::io("open", p, e))?;
            let m = f.metadata().map_err(|e| CliError::io("read", p, e))?;
            if m.is_dir() {
                return Err(CliError::usage(format!(
                    "input {} is a directory",
                    p.display()
                )));
            }
            Ok(Input {
                reader: Box::new(io::BufReader::with_capacity(CHUNK, f)),
                size: m.is_file().then_some(m.len()),
            })
        }
    }
}

/// Where encrypted output goes.
enum SealOut {
    Stdout(io::Stdout),
    File(AtomicFile),
}

impl Write for SealOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            SealOut::Stdout(s) => s.write(buf),
            SealOut::File(f) => f.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            SealOut::Stdout(s) => s.flush(),
            SealOut::File(f) => f.flush(),
        }
    }
}

/// Options of `encrypt`.
#[derive(Debug)]
pub struct EncryptArgs {
    /// Key id or alias.
    pub key: String,
    /// `--context` pairs.
    pub context: Vec<String>,
    /// Input path, `None`/`-` for stdin.
    pub input: Option<PathBuf>,
    /// Output path, `None`/`-` for stdout.
    pub output: Option<PathBuf>,
    /// Replace an existing output file.
    pub force: bool,
}

/// `strongroom encrypt`: a streamed envelope message.
pub fn encrypt(
    open: impl FnOnce() -> Result<Session, CliError>,
    a: EncryptArgs,
    progress: bool,
) -> Result<(), CliError> {
    let ctx = context(&a.context)?;
    let dest = is_std(a.output.as_deref()).map(Path::to_path_buf);
    match &dest {
        Some(d) => check_dest(d, a.force)?,
        None if io::stdout().is_terminal() => {
            return Err(CliError::usage(
                "refusing to write a binary message to a terminal: use --out FILE or redirect stdout",
            ));
        }
        None => {}
    }
    let input = open_input(a.input.as_deref())?;
    let session = open()?;
    let out = match &dest {
        Some(d) => SealOut::File(AtomicFile::create(d, a.force)?),
        None => SealOut::Stdout(io::stdout()),
    };
    // The pipeline runs here (authorize, wrap a fresh data key, audit);
    // the audit log is signed and the keystore released before the data
    // streams, so a long encryption blocks no other command.
    let started = session
        .client
        .seal_writer(a.key.as_str(), &ctx, SealOptions::default(), out);
    let finished = session.finish();
    let mut writer = started?;
    finished?;

    let mut bar = Progress::new("encrypting", input.size, progress);
    let mut reader = Counted::new(input.reader, &mut bar);
    let mut buf = Zeroizing::new(vec![0u8; CHUNK]);
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(CliError::new(
                    exit::IO,
                    format!("cannot read the input: {e}"),
                ));
            }
        };
        writer
            .write_all(&buf[..n])
            .map_err(|e| CliError::new(exit::IO, format!("cannot write the output: {e}")))?;
    }
    let out = writer
        .finish()
        .map_err(|e| CliError::new(exit::IO, format!("cannot write the output: {e}")))?;
    drop(reader);
    bar.clear();
    match out {
        SealOut::File(f) => f.commit(),
        SealOut::Stdout(_) => Ok(()),
    }
}

/// Options of `decrypt`.
#[derive(Debug)]
pub struct DecryptArgs {
    /// `--context` pairs: must equal the message's context exactly.
    pub context: Vec<String>,
    /// Input path, `None`/`-` for stdin.
    pub input: Option<PathBuf>,
    /// Output path, `None`/`-` for stdout.
    pub output: Option<PathBuf>,
    /// Replace an existing output file.
    pub force: bool,
    /// Write to stdout frame by frame, before the whole message verified.
    pub unsafe_stream: bool,
}

/// An error while reading plaintext from the open reader: the library's
/// error inside the I/O error (decryption failed), else an I/O failure.
fn read_error(e: io::Error) -> CliError {
    match e
        .get_ref()
        .and_then(|i| i.downcast_ref::<strongroom::Error>())
    {
        Some(inner) => CliError::from(inner.clone()),
        None => CliError::from(strongroom::Error::DecryptionFailed),
    }
}

/// `strongroom decrypt`.
pub fn decrypt(
    open: impl FnOnce() -> Result<Session, CliError>,
    a: DecryptArgs,
    progress: bool,
) -> Result<(), CliError> {
    let ctx = context(&a.context)?;
    let dest = is_std(a.output.as_deref()).map(Path::to_path_buf);
    if let Some(d) = &dest {
        check_dest(d, a.force)?;
        if a.unsafe_stream {
            return Err(CliError::usage(
                "--unsafe-stream applies to stdout output only",
            ));
        }
    }
    let input = open_input(a.input.as_deref())?;
    let size = input.size;
    let mut bar = Progress::new("decrypting", size, progress);
    let session = open()?;
    // Header, data key and context are checked here, and the call audited.
    let opened = session
        .client
        .open_reader(Counted::new(input.reader, &mut bar), &ctx);
    let finished = session.finish();
    let mut reader = opened?;
    finished?;

    let mut buf = Zeroizing::new(vec![0u8; CHUNK]);
    match dest {
        Some(d) => {
            // Dropped on any error below: the temporary file is removed.
            let mut tmp = AtomicFile::create(&d, a.force)?;
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(read_error(e)),
                };
                tmp.write_all(&buf[..n])
                    .map_err(|e| CliError::io("write", tmp.dest(), e))?;
            }
            drop(reader);
            bar.clear();
            // `read` returned 0: the final frame verified and nothing followed.
            tmp.commit()
        }
        None if a.unsafe_stream => {
            let mut out = io::stdout().lock();
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        let mut err = read_error(e);
                        err.message.push_str(
                            " (--unsafe-stream: the output written so far is incomplete \
                             or not authentic; discard it)",
                        );
                        return Err(err);
                    }
                };
                out.write_all(&buf[..n])
                    .map_err(|e| CliError::new(exit::IO, format!("cannot write to stdout: {e}")))?;
            }
            out.flush()
                .map_err(|e| CliError::new(exit::IO, format!("cannot write to stdout: {e}")))
        }
        None => {
            // Sized once from the input (plaintext is shorter than its
            // ciphertext) and only ever replaced by a new buffer, never
            // reallocated in place: each old buffer is wiped as it is
            // dropped, so no copy of the plaintext stays in freed memory.
            let reserve = size.map_or(STDOUT_BUFFER_LIMIT, |s| {
                usize::try_from(s).map_or(STDOUT_BUFFER_LIMIT, |s| s.min(STDOUT_BUFFER_LIMIT))
            });
            let mut plain = Zeroizing::new(Vec::with_capacity(reserve));
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(read_error(e)),
                };
                if plain.len() + n > STDOUT_BUFFER_LIMIT {
                    return Err(CliError::usage(format!(
                        "the plaintext is larger than {} MiB, the most decrypt holds back \
                         for stdout until it verified; nothing was written: use --out FILE, \
                         or --unsafe-stream to write frames as they verify",
                        STDOUT_BUFFER_LIMIT >> 20
                    )));
                }
                if plain.len() + n > plain.capacity() {
                    let mut bigger = Zeroizing::new(Vec::with_capacity(STDOUT_BUFFER_LIMIT));
                    bigger.extend_from_slice(&plain);
                    plain = bigger;
                }
                plain.extend_from_slice(&buf[..n]);
            }
            drop(reader);
            bar.clear();
            let mut out = io::stdout().lock();
            out.write_all(&plain)
                .and_then(|()| out.flush())
                .map_err(|e| CliError::new(exit::IO, format!("cannot write to stdout: {e}")))
        }
    }
}

/// Reads at most [`MAX_SIGN_INPUT`] bytes, refusing more.
fn read_message(path: Option<&Path>) -> Result<Vec<u8>, CliError> {
    let input = open_input(path)?;
    let mut data = Vec::new();
    input
        .reader
        .take(MAX_SIGN_INPUT + 1)
        .read_to_end(&mut data)
        .map_err(|e| CliError::new(exit::IO, format!("cannot read the input: {e}")))?;
    if data.len() as u64 > MAX_SIGN_INPUT {
        return Err(CliError::usage(
            "messages to sign or verify are at most 1 MiB",
        ));
    }
    Ok(data)
}

/// `strongroom sign`: the signature, to `--out` (raw bytes) or stdout (hex).
pub fn sign(
    session: Session,
    key: &str,
    input: Option<&Path>,
    output: Option<&Path>,
    force: bool,
) -> Result<(), CliError> {
    let output = is_std(output);
    if let Some(d) = output {
        check_dest(d, force)?;
    }
    let message = read_message(input)?;
    let signed = session.client.sign(key, &message, SignOptions::default());
    session.finish()?;
    let signature = signed?;
    match output {
        Some(d) => {
            let mut f = AtomicFile::create(d, force)?;
            f.write_all(&signature)
                .map_err(|e| CliError::io("write", d, e))?;
            f.commit()
        }
        None => emit(&crate::hex::encode(&signature)),
    }
}

/// `strongroom verify`: exit 0 if the signature holds, 4 if not.
pub fn verify(
    session: Session,
    key: &str,
    input: Option<&Path>,
    signature: &Path,
    quiet: bool,
) -> Result<(), CliError> {
    let message = read_message(input)?;
    let raw = read_small(signature, 4096)?;
    // A signature file holds raw bytes or hex text (what `sign` prints).
    let sig = std::str::from_utf8(&raw)
        .ok()
        .and_then(crate::hex::decode)
        .filter(|b| !b.is_empty())
        .unwrap_or(raw);
    let verified = session
        .client
        .verify(key, &message, &sig, SignOptions::default());
    session.finish()?;
    if verified? {
        if !quiet {
            emit("signature valid")?;
        }
        Ok(())
    } else {
        Err(CliError::new(
            exit::NOT_AUTHENTIC,
            "signature INVALID for this key and message",
        ))
    }
}

fn read_small(path: &Path, max: u64) -> Result<Vec<u8>, CliError> {
    let f = File::open(path).map_err(|e| CliError::io("open", path, e))?;
    let mut data = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut data)
        .map_err(|e| CliError::io("read", path, e))?;
    if data.len() as u64 > max {
        return Err(CliError::usage(format!(
            "{} is too large for a signature",
            path.display()
        )));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::context;

    #[test]
    fn context_flags() {
        let ctx = context(&["tenant=acme".into(), "purpose=a=b".into(), "empty=".into()]).unwrap();
        assert_eq!(ctx.get("tenant"), Some("acme"));
        assert_eq!(ctx.get("purpose"), Some("a=b"));
        assert_eq!(ctx.get("empty"), Some(""));
        for bad in ["novalue", "=v"] {
            assert_eq!(
                context(&[bad.into()]).unwrap_err().code,
                crate::exit::USAGE,
                "{bad}"
            );
        }
        let twice = context(&["a=1".into(), "a=2".into()]).unwrap_err();
        assert!(twice.message.contains("twice"), "{}", twice.message);
    }
}
