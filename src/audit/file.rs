//! The hash-chained, signed JSON Lines audit log (docs/FORMAT.md, "Audit log").

use super::verify::Anchor;
use super::{AuditEvent, AuditSink};
use crate::error::{Error, Result};
use crate::random::{OsRandom, random_array};
use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Write;
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

use super::tail::*;
pub(crate) use super::tail::{file_name, log_files};

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

pub(super) fn io(e: std::io::Error, what: &str, path: &Path) -> Error {
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
