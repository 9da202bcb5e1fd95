//! Offline verification of a JSON Lines audit log, and the chain check that
//! [`super::JsonlFileSink::open`] runs over the tail of a log it continues.

use super::file::{Line, digest_message, hex, log_files};
use crate::error::{Error, Result};
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A point of a log to check it against later: a record's sequence number
/// and the SHA-256 of that record's line (docs/FORMAT.md, "Audit log").
///
/// Get one from [`super::JsonlFileSink::anchor`] (the last signed digest),
/// keep it outside the log's reach, and pass it to [`verify_log`] or to
/// [`super::JsonlOptions::anchor`]. A log truncated back past the anchor and
/// then continued, or replaced by another log, no longer has this record at
/// this sequence number. Its text form, `<seq>:<64 lowercase hex>`, is
/// [`fmt::Display`] and [`FromStr`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Anchor {
    seq: u64,
    hash: [u8; 32],
}

impl Anchor {
    /// The anchor of the record with sequence number `seq` (from 1) whose line
    /// hashes to `hash`.
    pub fn new(seq: u64, hash: [u8; 32]) -> Self {
        Anchor { seq, hash }
    }

    /// The record's sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The SHA-256 of the record's line (without its `\n`).
    pub fn hash(&self) -> &[u8; 32] {
        &self.hash
    }
}

impl fmt::Display for Anchor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.seq, hex(&self.hash))
    }
}

impl FromStr for Anchor {
    type Err = Error;

    /// Parses `<seq>:<64 lowercase hex>`, with `seq` at least 1.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::invalid("an audit anchor is <seq>:<64 lowercase hex>, seq from 1");
        let (seq, hash) = s.split_once(':').ok_or_else(bad)?;
        if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let seq: u64 = seq.parse().map_err(|_| bad())?;
        if seq == 0 {
            return Err(bad());
        }
        Ok(Anchor {
            seq,
            hash: unhex(hash).ok_or_else(bad)?,
        })
    }
}

/// What a successful verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// The log's random id, from its header record (`None` for an empty log).
    pub log_id: Option<[u8; 16]>,
    /// Event records checked.
    pub records: u64,
    /// Digest records whose signature verified.
    pub digests: u64,
    /// The last signed digest, an anchor for the next verification.
    pub last_digest: Option<Anchor>,
    /// Records after the last digest: chained but not yet signed.
    pub unsigned_tail: u64,
}

/// The first problem found in a log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyError {
    /// A file could not be read.
    Io {
        /// The file.
        file: PathBuf,
        /// What failed.
        message: String,
    },
    /// A line is not a log record: it was altered.
    Malformed {
        /// The file.
        file: PathBuf,
        /// The line number, from 1.
        line: usize,
    },
    /// A record does not chain to the one before: the record before it was
    /// altered, or this record was inserted.
    Altered {
        /// The file.
        file: PathBuf,
        /// The line number of the record whose `prev` does not match.
        line: usize,
        /// Its sequence number.
        seq: u64,
    },
    /// Records are missing before this one (removed).
    Removed {
        /// The file.
        file: PathBuf,
        /// The line number.
        line: usize,
        /// The sequence number expected here.
        expected: u64,
        /// The one found.
        found: u64,
    },
    /// A record appears out of order or twice (reordered or inserted).
    Reordered {
        /// The file.
        file: PathBuf,
        /// The line number.
        line: usize,
        /// The sequence number expected here.
        expected: u64,
        /// The one found.
        found: u64,
    },
    /// A digest's signature does not verify: the records before it were
    /// altered and re-chained, the digest comes from another log (another
    /// log id), or the key is not this log's.
    BadSignature {
        /// The file.
        file: PathBuf,
        /// The line number.
        line: usize,
        /// The digest's sequence number.
        seq: u64,
    },
    /// The log ends before the caller's anchor: it was truncated back past
    /// that record.
    Truncated {
        /// The sequence number of the log's last record (0 if empty).
        last_seq: u64,
        /// The anchor's sequence number.
        anchor: u64,
    },
    /// The log's record at the anchor's sequence number is not the anchored
    /// record: the log was truncated and continued past that point, or
    /// replaced.
    AnchorMismatch {
        /// The file.
        file: PathBuf,
        /// The line number.
        line: usize,
        /// The anchor's sequence number.
        seq: u64,
    },
    /// The first record is not the log header that names the log id: the
    /// start of the log was altered, or it was written by a version of
    /// strongroom before log ids.
    NoHeader {
        /// The file.
        file: PathBuf,
        /// The line number.
        line: usize,
    },
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::Io { file, message } => write!(f, "{}: {message}", file.display()),
            VerifyError::Malformed { file, line } => {
                write!(f, "{}:{line}: not a log record (altered)", file.display())
            }
            VerifyError::Altered { file, line, seq } => write!(
                f,
                "{}:{line}: record {seq} does not chain to the record before it (that record was altered, or this one inserted)",
                file.display()
            ),
            VerifyError::Removed {
                file,
                line,
                expected,
                found,
            } => write!(
                f,
                "{}:{line}: records {expected}..{} removed (found {found})",
                file.display(),
                found.saturating_sub(1)
            ),
            VerifyError::Reordered {
                file,
                line,
                expected,
                found,
            } => write!(
                f,
                "{}:{line}: record {found} where {expected} was expected (reordered or inserted)",
                file.display()
            ),
            VerifyError::BadSignature { file, line, seq } => {
                write!(
                    f,
                    "{}:{line}: digest {seq} has an invalid signature for this log and key",
                    file.display()
                )
            }
            VerifyError::Truncated { last_seq, anchor } => write!(
                f,
                "log truncated: it ends at record {last_seq}, before the anchor record {anchor}"
            ),
            VerifyError::AnchorMismatch { file, line, seq } => write!(
                f,
                "{}:{line}: record {seq} is not the anchored record (the log was truncated and continued, or replaced)",
                file.display()
            ),
            VerifyError::NoHeader { file, line } => write!(
                f,
                "{}:{line}: the log does not start with its header record (altered, or a log without a log id)",
                file.display()
            ),
        }
    }
}

impl std::error::Error for VerifyError {}

/// The kind of a record that chained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Header,
    Event,
    Digest,
}

/// One record that chained: its kind, sequence number and line hash.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Step {
    pub kind: Kind,
    pub seq: u64,
    pub hash: [u8; 32],
}

/// Walks a log's lines in order, checking sequence numbers, hash links and
/// digest signatures.
pub(crate) struct Chain<'k> {
    key: &'k VerifyingKey,
    log_id: Option<[u8; 16]>,
    next: u64,
    prev: [u8; 32],
}

impl<'k> Chain<'k> {
    /// From the first record of a log (its header).
    pub fn from_start(key: &'k VerifyingKey) -> Self {
        Chain {
            key,
            log_id: None,
            next: 1,
            prev: [0; 32],
        }
    }

    /// After the record `seq` of the log `log_id`, whose line hashes to `hash`.
    pub fn resume(key: &'k VerifyingKey, log_id: [u8; 16], seq: u64, hash: [u8; 32]) -> Self {
        Chain {
            key,
            log_id: Some(log_id),
            next: seq.saturating_add(1),
            prev: hash,
        }
    }

    /// The log id, once the header was read (or given to `resume`).
    pub fn log_id(&self) -> Option<[u8; 16]> {
        self.log_id
    }

    /// The hash of the last record accepted (zeros before any).
    pub fn prev(&self) -> [u8; 32] {
        self.prev
    }

    /// The sequence number of the last record accepted (0 before any).
    pub fn last_seq(&self) -> u64 {
        self.next - 1
    }

    /// Checks the next line (without its `\n`), from `file` at `line`.
    pub fn step(&mut self, raw: &str, file: &Path, line: usize) -> Result<Step, VerifyError> {
        let malformed = || VerifyError::Malformed {
            file: file.to_path_buf(),
            line,
        };
        let parsed: Line = serde_json::from_str(raw).map_err(|_| malformed())?;
        if parsed.seq == u64::MAX {
            // No log reaches it; refusing it keeps the count from overflowing.
            return Err(malformed());
        }
        if parsed.seq > self.next {
            return Err(VerifyError::Removed {
                file: file.to_path_buf(),
                line,
                expected: self.next,
                found: parsed.seq,
            });
        }
        if parsed.seq < self.next {
            return Err(VerifyError::Reordered {
                file: file.to_path_buf(),
                line,
                expected: self.next,
                found: parsed.seq,
            });
        }
        if parsed.prev != hex(&self.prev) {
            return Err(VerifyError::Altered {
                file: file.to_path_buf(),
                line,
                seq: parsed.seq,
            });
        }
        let kind = match (&parsed.event, &parsed.digest, &parsed.log) {
            (None, None, Some(h)) if parsed.seq == 1 => {
                self.log_id = Some(unhex(&h.id).ok_or_else(malformed)?);
                Kind::Header
            }
            _ if parsed.seq == 1 => {
                return Err(VerifyError::NoHeader {
                    file: file.to_path_buf(),
                    line,
                });
            }
            (Some(_), None, None) => Kind::Event,
            (None, Some(d), None) => {
                let log_id = self.log_id.ok_or_else(malformed)?;
                let ok = unhex::<64>(&d.signature)
                    .map(|b| Signature::from_bytes(&b))
                    .is_some_and(|s| {
                        self.key
                            .verify_strict(&digest_message(&log_id, parsed.seq, &self.prev), &s)
                            .is_ok()
                    });
                if !ok {
                    return Err(VerifyError::BadSignature {
                        file: file.to_path_buf(),
                        line,
                        seq: parsed.seq,
                    });
                }
                Kind::Digest
            }
            _ => return Err(malformed()),
        };
        self.prev = Sha256::digest(raw.as_bytes()).into();
        self.next += 1;
        Ok(Step {
            kind,
            seq: parsed.seq,
            hash: self.prev,
        })
    }
}

/// Verifies the log in `dir` (files `audit-NNNNNN.jsonl` in order) with the
/// Ed25519 public key of its digests. Reports the first record altered,
/// removed, reordered or inserted, a log that does not start with its header,
/// and the first digest whose signature fails (which includes a digest taken
/// from another log: every digest signs the log id).
///
/// A log cut at an earlier digest looks complete by itself, and so does one
/// cut and then continued by a restarted sink: pass an [`Anchor`] you kept
/// elsewhere (from [`super::JsonlFileSink::anchor`]) to detect both. The log
/// must then hold that very record at the anchor's sequence number.
pub fn verify_log(
    dir: &Path,
    public_key: &[u8; 32],
    anchor: Option<&Anchor>,
) -> Result<VerifyReport, VerifyError> {
    let key = VerifyingKey::from_bytes(public_key).map_err(|_| VerifyError::Io {
        file: dir.to_path_buf(),
        message: "invalid Ed25519 public key".into(),
    })?;
    let files = log_files(dir).map_err(|e| VerifyError::Io {
        file: dir.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut report = VerifyReport {
        log_id: None,
        records: 0,
        digests: 0,
        last_digest: None,
        unsigned_tail: 0,
    };
    let mut chain = Chain::from_start(&key);
    let mut anchor_found = false;
    for file in files {
        let text = std::fs::read(&file).map_err(|e| VerifyError::Io {
            file: file.clone(),
            message: e.to_string(),
        })?;
        let text = String::from_utf8(text).map_err(|_| VerifyError::Malformed {
            file: file.clone(),
            line: 1,
        })?;
        for (i, raw) in text.split_terminator('\n').enumerate() {
            let line = i + 1;
            let step = chain.step(raw, &file, line)?;
            match step.kind {
                Kind::Header => {}
                Kind::Event => {
                    report.records += 1;
                    report.unsigned_tail += 1;
                }
                Kind::Digest => {
                    report.digests += 1;
                    report.last_digest = Some(Anchor::new(step.seq, step.hash));
                    report.unsigned_tail = 0;
                }
            }
            if let Some(a) = anchor
                && a.seq == step.seq
            {
                if a.hash != step.hash {
                    return Err(VerifyError::AnchorMismatch {
                        file,
                        line,
                        seq: a.seq,
                    });
                }
                anchor_found = true;
            }
        }
    }
    if let Some(a) = anchor
        && !anchor_found
    {
        return Err(VerifyError::Truncated {
            last_seq: chain.last_seq(),
            anchor: a.seq,
        });
    }
    report.log_id = chain.log_id();
    Ok(report)
}

/// Lowercase hex of exactly `N` bytes; anything else is `None`.
pub(crate) use crate::hex::decode_array as unhex;
