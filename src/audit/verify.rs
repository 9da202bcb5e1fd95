//! Offline verification of a JSON Lines audit log.

use super::file::{Line, digest_message, hex, log_files};
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};

/// What a successful verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Event records checked.
    pub records: u64,
    /// Digest records whose signature verified.
    pub digests: u64,
    /// The sequence number of the last signed digest.
    pub last_digest_seq: Option<u64>,
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
    /// A digest's signature does not verify.
    BadSignature {
        /// The file.
        file: PathBuf,
        /// The line number.
        line: usize,
        /// The digest's sequence number.
        seq: u64,
    },
    /// The log ends before a digest the caller knows was written: it was
    /// truncated back past that digest.
    Truncated {
        /// The last digest found.
        last_digest_seq: Option<u64>,
        /// The digest the caller expected.
        anchor: u64,
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
                found - 1
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
                    "{}:{line}: digest {seq} has an invalid signature",
                    file.display()
                )
            }
            VerifyError::Truncated {
                last_digest_seq,
                anchor,
            } => write!(
                f,
                "log truncated: last digest is {last_digest_seq:?}, but digest {anchor} was written"
            ),
        }
    }
}

impl std::error::Error for VerifyError {}

/// Verifies the log in `dir` (files `audit-NNNNNN.jsonl` in order) with the
/// Ed25519 public key of its digests. Reports the first record altered,
/// removed, reordered or inserted, and every digest whose signature fails.
///
/// A log cut exactly at an earlier digest looks complete by itself: pass the
/// last digest sequence number you know was written (`anchor`, e.g. from
/// [`super::JsonlFileSink::last_digest_seq`] kept elsewhere) to detect that
/// truncation too.
pub fn verify_log(
    dir: &Path,
    public_key: &[u8; 32],
    anchor: Option<u64>,
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
        records: 0,
        digests: 0,
        last_digest_seq: None,
        unsigned_tail: 0,
    };
    let mut expected: u64 = 1;
    let mut prev = [0u8; 32];
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
            let line_no = i + 1;
            let parsed: Line = serde_json::from_str(raw).map_err(|_| VerifyError::Malformed {
                file: file.clone(),
                line: line_no,
            })?;
            if parsed.seq > expected {
                return Err(VerifyError::Removed {
                    file,
                    line: line_no,
                    expected,
                    found: parsed.seq,
                });
            }
            if parsed.seq < expected {
                return Err(VerifyError::Reordered {
                    file,
                    line: line_no,
                    expected,
                    found: parsed.seq,
                });
            }
            if parsed.prev != hex(&prev) {
                return Err(VerifyError::Altered {
                    file,
                    line: line_no,
                    seq: parsed.seq,
                });
            }
            match (&parsed.event, &parsed.digest) {
                (Some(_), None) => {
                    report.records += 1;
                    report.unsigned_tail += 1;
                }
                (None, Some(d)) => {
                    let sig = unhex64(&d.signature).map(|b| Signature::from_bytes(&b));
                    let ok = sig.is_some_and(|s| {
                        key.verify_strict(&digest_message(parsed.seq, &prev), &s)
                            .is_ok()
                    });
                    if !ok {
                        return Err(VerifyError::BadSignature {
                            file,
                            line: line_no,
                            seq: parsed.seq,
                        });
                    }
                    report.digests += 1;
                    report.last_digest_seq = Some(parsed.seq);
                    report.unsigned_tail = 0;
                }
                _ => {
                    return Err(VerifyError::Malformed {
                        file,
                        line: line_no,
                    });
                }
            }
            prev = Sha256::digest(raw.as_bytes()).into();
            expected += 1;
        }
    }
    if let Some(a) = anchor
        && report.last_digest_seq.is_none_or(|d| d < a)
    {
        return Err(VerifyError::Truncated {
            last_digest_seq: report.last_digest_seq,
            anchor: a,
        });
    }
    Ok(report)
}

fn unhex64(s: &str) -> Option<[u8; 64]> {
    if s.len() != 128 {
        return None;
    }
    let mut out = [0u8; 64];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}
