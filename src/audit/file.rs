//! The hash-chained, signed JSON Lines audit log (docs/FORMAT.md, "Audit log").

use super::verify::{Anchor, Chain, Kind, VerifyError, unhex};
use super::{AuditEvent, AuditSink};
use crate::error::{Error, Result};
use crate::random::{OsRandom, random_array};
use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// When the log is fsynced.
///
/// Whatever the policy, every record is handed to the operating system (one
/// `write` of the whole line, no user-space buffer) before
/// [`AuditSink::record`] returns, and a failed write is reported by that
/// call. So an event whose operation returned survives the process crashing
/// or being killed. What the policy decides is when the OS is made to put
/// the file on disk: an OS crash or power loss before that loses the records
/// since the last fsync (the chain then simply ends earlier, or, if the
/// file system keeps a partly written line, the sink refuses to reopen the
/// log as tampered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FsyncPolicy {
    /// After every event: an acknowledged operation's event is on disk.
    EveryEvent,
    /// After every `max_events` events, at every digest, and on `flush`.
    Batched {
        /// Events between fsyncs.
        max_events: u32,
    },
}

/// Options of a [`JsonlFileSink`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct JsonlOptions {
    /// When to fsync. Default: batched, 256 events.
    pub fsync: FsyncPolicy,
    /// Records between signed digest records. Default 1000.
    pub digest_every: u64,
    /// A file larger than this rolls over to the next file (the chain
    /// continues across files). Default 64 MiB.
    pub max_file_bytes: u64,
    /// The anchor the sink published before a restart, if it was kept: the
    /// reopened log must still hold that record. Default none.
    pub anchor: Option<Anchor>,
}

impl Default for JsonlOptions {
    fn default() -> Self {
        JsonlOptions {
            fsync: FsyncPolicy::Batched { max_events: 256 },
            digest_every: 1000,
            max_file_bytes: 64 << 20,
            anchor: None,
        }
    }
}

impl JsonlOptions {
    /// Sets the fsync policy.
    pub fn fsync(mut self, f: FsyncPolicy) -> Self {
        self.fsync = f;
        self
    }

    /// Sets the records between digests (at least 1).
    pub fn digest_every(mut self, n: u64) -> Self {
        self.digest_every = n.max(1);
        self
    }

    /// Sets the rollover size (at least 1 KiB).
    pub fn max_file_bytes(mut self, n: u64) -> Self {
        self.max_file_bytes = n.max(1024);
        self
    }

    /// Makes [`JsonlFileSink::open`] refuse a log that lacks this record
    /// (from [`JsonlFileSink::anchor`] before the restart, kept outside the
    /// log's reach): it catches a log truncated back past the anchor, even
    /// at a digest, and a log deleted or replaced.
    pub fn anchor(mut self, a: Anchor) -> Self {
        self.anchor = Some(a);
        self
    }
}

/// One line of the log: exactly one of `event`, `digest` and (in the first
/// record only) `log`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Line {
    pub seq: u64,
    pub prev: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<LogHeader>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<AuditEvent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<DigestBody>,
}

/// The body of the header record, the first of a log.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogHeader {
    /// The log's random 16-byte id (hex), signed into every digest.
    pub id: String,
}

/// The body of a digest record.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DigestBody {
    /// Ed25519 signature (hex) over [`digest_message`].
    pub signature: String,
}

/// What a digest signs: a label, the log id, the digest's sequence number
/// and the hash of the previous line, which chains every record before it.
pub(crate) fn digest_message(log_id: &[u8; 16], seq: u64, prev: &[u8; 32]) -> Vec<u8> {
    let mut m = b"strongroom audit digest v2\0".to_vec();
    m.extend_from_slice(log_id);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(prev);
    m
}

pub(crate) use crate::hex::encode as hex;

pub(crate) fn file_name(index: u32) -> String {
    format!("audit-{index:06}.jsonl")
}

/// The log files of `dir`, in order.
pub(crate) fn log_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("audit-") && n.ends_with(".jsonl"))
        })
        .collect();
    files.sort();
    Ok(files)
}

fn file_index(path: &Path) -> Result<u32> {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("audit-"))
        .and_then(|n| n.strip_suffix(".jsonl"))
        .and_then(|n| n.parse::<u32>().ok())
        .ok_or_else(|| Error::Configuration(format!("audit log: bad file name {}", path.display())))
}

/// Opens a log file for appending, creating it readable by its owner only.
fn open_append(path: &Path) -> Result<File> {
    let mut o = OpenOptions::new();
    o.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path).map_err(|e| io(e, "open", path))
}

fn sync_dir(dir: &Path) -> Result<()> {
    let d = File::open(dir).map_err(|e| io(e, "open", dir))?;
    d.sync_all().map_err(|e| io(e, "fsync", dir))
}

/// Reads a log file, as much of it as its size says (a device posing as a
/// log file reads as empty, not forever).
fn read_text(path: &Path) -> Result<String> {
    let f = File::open(path).map_err(|e| io(e, "open", path))?;
    let len = f.metadata().map_err(|e| io(e, "stat", path))?.len();
    let mut buf = Vec::new();
    f.take(len)
        .read_to_end(&mut buf)
        .map_err(|e| io(e, "read", path))?;
    String::from_utf8(buf).map_err(|_| {
        tampered(VerifyError::Malformed {
            file: path.to_path_buf(),
            line: 1,
        })
    })
}

/// The first line of a log file (without `\n`).
fn first_line(path: &Path) -> Result<String> {
    let f = File::open(path).map_err(|e| io(e, "open", path))?;
    let len = f.metadata().map_err(|e| io(e, "stat", path))?.len();
    let mut buf = Vec::new();
    BufReader::new(f.take(len))
        .read_until(b'\n', &mut buf)
        .map_err(|e| io(e, "read", path))?;
    if buf.last() == Some(&b'\n') {
        buf.pop();
    }
    String::from_utf8(buf).map_err(|_| {
        tampered(VerifyError::Malformed {
            file: path.to_path_buf(),
            line: 1,
        })
    })
}

/// The refusal to continue a log whose tail does not verify.
fn tampered(why: impl std::fmt::Display) -> Error {
    Error::Configuration(format!(
        "audit log tampered: {why}. The sink will not extend this log: keep it as \
         evidence, check it with audit::verify_log, and open the sink on a new directory"
    ))
}

fn is_digest(line: &str) -> bool {
    serde_json::from_str::<Line>(line).is_ok_and(|l| l.digest.is_some())
}

fn seq_of(line: &str) -> Option<u64> {
    #[derive(Deserialize)]
    struct Seq {
        seq: u64,
    }
    serde_json::from_str::<Seq>(line).ok().map(|s| s.seq)
}

/// Where an existing log ends, after its tail verified.
struct Tail {
    log_id: [u8; 16],
    index: u32,
    bytes: u64,
    seq: u64,
    prev: [u8; 32],
    since_digest: u64,
    last_digest: Option<Anchor>,
}

/// Checks the end of the log in `files` with the sink's own key, from the
/// last digest (and the record before it, which the digest signs) to the
/// last record, and the caller's anchor if any. `None`: there is no log yet.
fn read_tail(
    files: &[PathBuf],
    key: &ed25519_dalek::VerifyingKey,
    anchor: Option<Anchor>,
) -> Result<Option<Tail>> {
    let missing = |a: Anchor| {
        tampered(VerifyError::Truncated {
            last_seq: 0,
            anchor: a.seq(),
        })
    };
    let (Some(first), Some(last)) = (files.first(), files.last()) else {
        return match anchor {
            Some(a) => Err(missing(a)),
            None => Ok(None),
        };
    };
    let first_len = std::fs::metadata(first)
        .map_err(|e| io(e, "stat", first))?
        .len();
    if first_len == 0 {
        // A log whose first file was created but never written (a crash
        // right after creation) starts anew; later files without a first
        // record are not a log.
        return match (anchor, files.len()) {
            (Some(a), _) => Err(missing(a)),
            (None, 1) => Ok(None),
            (None, _) => Err(tampered(VerifyError::NoHeader {
                file: first.clone(),
                line: 1,
            })),
        };
    }
    // Whole files, newest last, until one holds a digest with a record
    // before it, or the first file (the log's header) is in.
    let mut tail: Vec<(usize, usize, String)> = Vec::new();
    let mut start = None;
    for fi in (0..files.len()).rev() {
        let text = read_text(&files[fi])?;
        if !text.is_empty() && !text.ends_with('\n') {
            return Err(tampered(format!(
                "{} ends in a partial line (cut, or torn by a crash during a write)",
                files[fi].display()
            )));
        }
        let lines: Vec<_> = text
            .split_terminator('\n')
            .enumerate()
            .map(|(i, l)| (fi, i + 1, l.to_owned()))
            .collect();
        tail.splice(0..0, lines);
        if let Some(d) = tail.iter().rposition(|(_, _, l)| is_digest(l))
            && d >= 1
        {
            start = Some(d - 1);
            break;
        }
    }
    let tamper = |e: VerifyError| tampered(e);
    let (mut chain, from) = match start {
        None => (Chain::from_start(key), 0),
        Some(s) => {
            // Resume after the record the last digest follows: the log id
            // comes from the header at the start of the first file.
            let header = first_line(first)?;
            let log_id = serde_json::from_str::<Line>(&header)
                .ok()
                .filter(|l| {
                    l.seq == 1 && l.prev == hex(&[0; 32]) && l.event.is_none() && l.digest.is_none()
                })
                .and_then(|l| l.log)
                .and_then(|h| unhex::<16>(&h.id))
                .ok_or_else(|| {
                    tampered(VerifyError::NoHeader {
                        file: first.clone(),
                        line: 1,
                    })
                })?;
            let (fi, line, text) = &tail[s];
            let seq = seq_of(text).ok_or_else(|| {
                tamper(VerifyError::Malformed {
                    file: files[*fi].clone(),
                    line: *line,
                })
            })?;
            let hash = Sha256::digest(text.as_bytes()).into();
            (Chain::resume(key, log_id, seq, hash), s + 1)
        }
    };
    let mut since_digest = 0;
    let mut last_digest = None;
    let mut anchor_ok = false;
    for (fi, line, text) in &tail[from..] {
        let step = chain.step(text, &files[*fi], *line).map_err(tamper)?;
        match step.kind {
            Kind::Header => {}
            Kind::Event => since_digest += 1,
            Kind::Digest => {
                since_digest = 0;
                last_digest = Some(Anchor::new(step.seq, step.hash));
            }
        }
        if let Some(a) = anchor
            && a.seq() == step.seq
        {
            if a.hash() != &step.hash {
                return Err(tamper(VerifyError::AnchorMismatch {
                    file: files[*fi].clone(),
                    line: *line,
                    seq: a.seq(),
                }));
            }
            anchor_ok = true;
        }
    }
    let log_id = chain.log_id().ok_or_else(|| {
        tampered(VerifyError::NoHeader {
            file: first.clone(),
            line: 1,
        })
    })?;
    let last_seq = chain.last_seq();
    if let Some(a) = anchor
        && !anchor_ok
    {
        if a.seq() > last_seq || a.seq() == 0 {
            return Err(tamper(VerifyError::Truncated {
                last_seq,
                anchor: a.seq(),
            }));
        }
        check_old_anchor(files, &tail, a)?;
    }
    let bytes = std::fs::metadata(last)
        .map_err(|e| io(e, "stat", last))?
        .len();
    Ok(Some(Tail {
        log_id,
        index: file_index(last)?,
        bytes,
        seq: last_seq,
        prev: chain.prev(),
        since_digest,
        last_digest,
    }))
}

/// Finds the anchor's record before the verified tail and compares its hash
/// (a quick check: [`super::verify_log`] checks the whole chain).
fn check_old_anchor(files: &[PathBuf], tail: &[(usize, usize, String)], a: Anchor) -> Result<()> {
    let compare = |fi: usize, line: usize, text: &str| {
        if Sha256::digest(text.as_bytes()).as_slice() == a.hash() {
            Ok(())
        } else {
            Err(tampered(VerifyError::AnchorMismatch {
                file: files[fi].clone(),
                line,
                seq: a.seq(),
            }))
        }
    };
    if let Some((fi, line, text)) = tail.iter().find(|(_, _, l)| seq_of(l) == Some(a.seq())) {
        return compare(*fi, *line, text);
    }
    let first_tail_file = tail.first().map_or(files.len(), |t| t.0);
    for fi in (0..first_tail_file).rev() {
        let text = read_text(&files[fi])?;
        for (i, l) in text.split_terminator('\n').enumerate() {
            if seq_of(l) == Some(a.seq()) {
                return compare(fi, i + 1, l);
            }
        }
    }
    Err(tampered(format!(
        "the anchor record {} is not in the log (removed)",
        a.seq()
    )))
}

#[derive(Debug)]
struct State {
    /// Unbuffered: every line is one `write` to the OS.
    file: File,
    index: u32,
    /// The size of the current file.
    bytes: u64,
    seq: u64,
    prev: [u8; 32],
    log_id: [u8; 16],
    since_digest: u64,
    unsynced: u32,
    last_digest: Option<Anchor>,
    broken: bool,
}

/// A hash-chained JSON Lines audit log in a directory, with periodic digest
/// records signed by an Ed25519 key, size-based rollover, and a configurable
/// fsync policy. Verify it offline with [`super::verify_log`].
///
/// Every record is written to the OS before [`AuditSink::record`] returns
/// (see [`FsyncPolicy`] for what reaches the disk when), and a write error is
/// reported by the call whose record failed; the sink then refuses further
/// records until it is reopened.
///
/// Reopening a directory continues its chain, after checking the log's tail
/// with the sink's own key: see [`JsonlFileSink::open`].
pub struct JsonlFileSink {
    dir: PathBuf,
    key: SigningKey,
    options: JsonlOptions,
    state: Mutex<State>,
}

impl std::fmt::Debug for JsonlFileSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonlFileSink")
            .field("dir", &self.dir)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn io(e: std::io::Error, what: &str, path: &Path) -> Error {
    Error::Other(Arc::new(std::io::Error::new(
        e.kind(),
        format!("audit log: {what} {}: {e}", path.display()),
    )))
}

impl JsonlFileSink {
    /// Opens (or creates) the log in `dir`, signing digests with the Ed25519
    /// key whose 32-byte seed is `signing_seed` (keep it, to continue the log
    /// after a restart; publish [`JsonlFileSink::verifying_key`]).
    ///
    /// A new log starts with a header record naming a random log id, which
    /// every digest signs. An existing log is continued only if its tail
    /// verifies with this key: from the last digest (whose signature must
    /// hold) through every record after it, whole lines only. If
    /// [`JsonlOptions::anchor`] is set, the log must also still hold that
    /// record. Otherwise the sink refuses with [`Error::Configuration`]
    /// (`audit log tampered: ...`) and writes nothing. Records before the
    /// last digest are not re-read: [`super::verify_log`] checks them.
    pub fn open(
        dir: impl AsRef<Path>,
        signing_seed: &[u8; 32],
        options: JsonlOptions,
    ) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&dir).map_err(|e| io(e, "create", &dir))?;
        let files = log_files(&dir).map_err(|e| io(e, "list", &dir))?;
        let key = SigningKey::from_bytes(signing_seed);
        let tail = read_tail(&files, &key.verifying_key(), options.anchor)?;
        let sink = |state| JsonlFileSink {
            dir: dir.clone(),
            key: key.clone(),
            options,
            state: Mutex::new(state),
        };
        if let Some(t) = tail {
            let path = dir.join(file_name(t.index));
            return Ok(sink(State {
                file: open_append(&path)?,
                index: t.index,
                bytes: t.bytes,
                seq: t.seq,
                prev: t.prev,
                log_id: t.log_id,
                since_digest: t.since_digest,
                unsynced: 0,
                last_digest: t.last_digest,
                broken: false,
            }));
        }
        // A new log: its header, on disk before the sink is handed out.
        let index = match files.first() {
            Some(f) => file_index(f)?,
            None => 1,
        };
        let path = dir.join(file_name(index));
        let this = sink(State {
            file: open_append(&path)?,
            index,
            bytes: 0,
            seq: 0,
            prev: [0; 32],
            log_id: random_array::<16>(&OsRandom)?,
            since_digest: 0,
            unsynced: 0,
            last_digest: None,
            broken: false,
        });
        {
            let mut st = this.state.lock().unwrap_or_else(|e| e.into_inner());
            let id = hex(&st.log_id);
            this.write_line(
                &mut st,
                Line {
                    seq: 0,
                    prev: String::new(),
                    log: Some(LogHeader { id }),
                    event: None,
                    digest: None,
                },
            )?;
            this.sync(&mut st)?;
        }
        sync_dir(&dir)?;
        Ok(this)
    }

    /// The Ed25519 public key that verifies this log's digests.
    pub fn verifying_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// The log's random id, from its header record; every digest signs it.
    pub fn log_id(&self) -> [u8; 16] {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).log_id
    }

    /// The last digest of the log, fsynced (written by this sink, or found
    /// when it opened the log): an anchor to keep outside the log's reach.
    /// [`super::verify_log`] with it, or [`JsonlOptions::anchor`] on the next
    /// open, detects a log truncated back past that digest, even if it was
    /// continued since.
    pub fn anchor(&self) -> Option<Anchor> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_digest
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes one line with one `write` (to the OS, not to a buffer). On
    /// failure, cuts a partly written line back off if it can.
    fn write_line(&self, st: &mut State, mut line: Line) -> Result<()> {
        let seq = st
            .seq
            .checked_add(1)
            .filter(|s| *s < u64::MAX)
            .ok_or_else(|| Error::AuditUnavailable("the audit log is full".into()))?;
        line.seq = seq;
        line.prev = hex(&st.prev);
        let mut text = serde_json::to_string(&line).map_err(|e| Error::Other(Arc::new(e)))?;
        let hash: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        text.push('\n');
        if let Err(e) = (&st.file).write_all(text.as_bytes()) {
            let _ = st.file.set_len(st.bytes);
            return Err(io(e, "write", &self.dir.join(file_name(st.index))));
        }
        st.seq = seq;
        st.bytes += text.len() as u64;
        st.prev = hash;
        Ok(())
    }

    fn write_digest(&self, st: &mut State) -> Result<()> {
        let sig = self
            .key
            .sign(&digest_message(&st.log_id, st.seq + 1, &st.prev));
        self.write_line(
            st,
            Line {
                seq: 0,
                prev: String::new(),
                log: None,
                event: None,
                digest: Some(DigestBody {
                    signature: hex(&sig.to_bytes()),
                }),
            },
        )?;
        st.since_digest = 0;
        self.sync(st)?;
        st.last_digest = Some(Anchor::new(st.seq, st.prev));
        Ok(())
    }

    fn sync(&self, st: &mut State) -> Result<()> {
        st.file
            .sync_data()
            .map_err(|e| io(e, "fsync", &self.dir.join(file_name(st.index))))?;
        st.unsynced = 0;
        Ok(())
    }

    fn record_locked(&self, st: &mut State, event: &AuditEvent) -> Result<()> {
        self.write_line(
            st,
            Line {
                seq: 0,
                prev: String::new(),
                log: None,
                event: Some(event.clone()),
                digest: None,
            },
        )?;
        st.since_digest += 1;
        st.unsynced += 1;
        if st.since_digest >= self.options.digest_every {
            self.write_digest(st)?;
        }
        match self.options.fsync {
            FsyncPolicy::EveryEvent => self.sync(st)?,
            FsyncPolicy::Batched { max_events } if st.unsynced >= max_events.max(1) => {
                self.sync(st)?
            }
            FsyncPolicy::Batched { .. } => {}
        }
        if st.bytes >= self.options.max_file_bytes {
            // Close the file with a digest, then continue the chain in the next.
            if st.since_digest > 0 {
                self.write_digest(st)?;
            }
            self.sync(st)?;
            let next = st.index + 1;
            st.file = open_append(&self.dir.join(file_name(next)))?;
            st.index = next;
            st.bytes = 0;
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

impl AuditSink for JsonlFileSink {
    fn record(&self, event: &AuditEvent) -> Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.broken {
            return Err(Error::AuditUnavailable(
                "an earlier write to the audit log failed; reopen the sink".into(),
            ));
        }
        let r = self.record_locked(&mut st, event);
        if r.is_err() {
            // The chain's state may be ahead of the file: refuse further
            // writes, which would extend a broken chain.
            st.broken = true;
        }
        r
    }

    fn flush(&self) -> Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.broken {
            return Err(Error::AuditUnavailable("the audit log is broken".into()));
        }
        let r = if st.since_digest > 0 {
            self.write_digest(&mut st)
        } else {
            self.sync(&mut st)
        };
        if r.is_err() {
            st.broken = true;
        }
        r
    }
}

impl Drop for JsonlFileSink {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}
