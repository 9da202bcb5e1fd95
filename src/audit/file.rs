//! The hash-chained, signed JSON Lines audit log (docs/FORMAT.md, "Audit log").

use super::{AuditEvent, AuditSink};
use crate::error::{Error, Result};
use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// When the log is written through and fsynced.
///
/// With `Batched`, events since the last sync point live in the process's
/// buffer: a crash loses them (and the chain simply ends earlier). Use
/// `EveryEvent` when every acknowledged operation must be on disk.
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
}

impl Default for JsonlOptions {
    fn default() -> Self {
        JsonlOptions {
            fsync: FsyncPolicy::Batched { max_events: 256 },
            digest_every: 1000,
            max_file_bytes: 64 << 20,
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
}

/// One line of the log.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Line {
    pub seq: u64,
    pub prev: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<AuditEvent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<DigestBody>,
}

/// The body of a digest record.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DigestBody {
    /// Ed25519 signature (hex) over [`digest_message`].
    pub signature: String,
}

/// What a digest signs: a label, its sequence number and the hash of the
/// previous line, which chains every record before it.
pub(crate) fn digest_message(seq: u64, prev: &[u8; 32]) -> Vec<u8> {
    let mut m = b"strongroom audit digest v1\0".to_vec();
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(prev);
    m
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

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

#[derive(Debug)]
struct State {
    /// Buffered: written through to the OS at every sync point (every event
    /// with `FsyncPolicy::EveryEvent`; each batch, digest, rollover and
    /// flush otherwise).
    file: std::io::BufWriter<File>,
    index: u32,
    bytes: u64,
    seq: u64,
    prev: [u8; 32],
    since_digest: u64,
    unsynced: u32,
    last_digest_seq: Option<u64>,
    broken: bool,
}

/// A hash-chained JSON Lines audit log in a directory, with periodic digest
/// records signed by an Ed25519 key, size-based rollover, and a configurable
/// fsync policy. Verify it offline with [`super::verify_log`].
///
/// Reopening a directory continues its chain.
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
    pub fn open(
        dir: impl AsRef<Path>,
        signing_seed: &[u8; 32],
        options: JsonlOptions,
    ) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        // Private: the log names keys, principals and operations.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| io(e, "create", &dir))?;
        let files = log_files(&dir).map_err(|e| io(e, "list", &dir))?;
        // Continue in the last file, from the last record of the newest
        // non-empty file (a rollover may have left the last file empty).
        let (index, bytes) = match files.last() {
            None => (1, 0),
            Some(last) => {
                let index = last
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_prefix("audit-"))
                    .and_then(|n| n.strip_suffix(".jsonl"))
                    .and_then(|n| n.parse::<u32>().ok())
                    .ok_or_else(|| {
                        Error::Configuration(format!("audit log: bad file name {}", last.display()))
                    })?;
                let len = std::fs::metadata(last)
                    .map_err(|e| io(e, "stat", last))?
                    .len();
                (index, len)
            }
        };
        let mut seq = 0;
        let mut prev = [0u8; 32];
        for f in files.iter().rev() {
            let file = File::open(f).map_err(|e| io(e, "open", f))?;
            let mut last_line: Option<String> = None;
            for l in BufReader::new(file).lines() {
                let l = l.map_err(|e| io(e, "read", f))?;
                if !l.is_empty() {
                    last_line = Some(l);
                }
            }
            if let Some(l) = last_line {
                let parsed: Line = serde_json::from_str(&l).map_err(|_| {
                    Error::Configuration(format!(
                        "audit log: the last line of {} is not a log record; verify the log",
                        f.display()
                    ))
                })?;
                seq = parsed.seq;
                prev = Sha256::digest(l.as_bytes()).into();
                break;
            }
        }
        let path = dir.join(file_name(index));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io(e, "open", &path))?;
        Ok(JsonlFileSink {
            dir,
            key: SigningKey::from_bytes(signing_seed),
            options,
            state: Mutex::new(State {
                file: std::io::BufWriter::with_capacity(64 * 1024, file),
                index,
                bytes,
                seq,
                prev,
                since_digest: 0,
                unsynced: 0,
                last_digest_seq: None,
                broken: false,
            }),
        })
    }

    /// The Ed25519 public key that verifies this log's digests.
    pub fn verifying_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// The sequence number of the last digest written by this sink, an anchor
    /// to keep elsewhere: [`super::verify_log`] with it detects a log
    /// truncated back past that digest.
    pub fn last_digest_seq(&self) -> Option<u64> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_digest_seq
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn write_line(&self, st: &mut State, mut line: Line) -> Result<()> {
        st.seq += 1;
        line.seq = st.seq;
        line.prev = hex(&st.prev);
        let text = serde_json::to_string(&line).map_err(|e| Error::Other(Arc::new(e)))?;
        let path = self.dir.join(file_name(st.index));
        st.file
            .write_all(format!("{text}\n").as_bytes())
            .map_err(|e| io(e, "write", &path))?;
        st.bytes += text.len() as u64 + 1;
        st.prev = Sha256::digest(text.as_bytes()).into();
        Ok(())
    }

    fn write_digest(&self, st: &mut State) -> Result<()> {
        let sig = self.key.sign(&digest_message(st.seq + 1, &st.prev));
        self.write_line(
            st,
            Line {
                seq: 0,
                prev: String::new(),
                event: None,
                digest: Some(DigestBody {
                    signature: hex(&sig.to_bytes()),
                }),
            },
        )?;
        st.since_digest = 0;
        st.last_digest_seq = Some(st.seq);
        self.sync(st)
    }

    fn sync(&self, st: &mut State) -> Result<()> {
        let path = self.dir.join(file_name(st.index));
        st.file.flush().map_err(|e| io(e, "write", &path))?;
        st.file
            .get_ref()
            .sync_data()
            .map_err(|e| io(e, "fsync", &path))?;
        st.unsynced = 0;
        Ok(())
    }

    fn record_locked(&self, st: &mut State, event: &AuditEvent) -> Result<()> {
        self.write_line(
            st,
            Line {
                seq: 0,
                prev: String::new(),
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
            let next = st.index + 1;
            let path = self.dir.join(file_name(next));
            self.sync(st)?;
            st.file = std::io::BufWriter::with_capacity(
                64 * 1024,
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|e| io(e, "open", &path))?,
            );
            st.index = next;
            st.bytes = 0;
            let dir = File::open(&self.dir).map_err(|e| io(e, "open", &self.dir))?;
            dir.sync_all().map_err(|e| io(e, "fsync", &self.dir))?;
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
            // A partial line may be on disk: refuse further writes, which
            // would extend a broken chain.
            st.broken = true;
        }
        r
    }

    fn flush(&self) -> Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.broken {
            return Err(Error::AuditUnavailable("the audit log is broken".into()));
        }
        if st.since_digest > 0 {
            self.write_digest(&mut st)?;
        }
        self.sync(&mut st)
    }
}

impl Drop for JsonlFileSink {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}
