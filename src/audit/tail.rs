//! Reading the log files back: their names, their lines, and the recovery
//! of the chain's tail when a sink reopens a log.

use super::file::*;
use super::verify::{Anchor, Chain, Kind, VerifyError, unhex};
use crate::error::{Error, Result};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

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

pub(super) fn file_index(path: &Path) -> Result<u32> {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("audit-"))
        .and_then(|n| n.strip_suffix(".jsonl"))
        .and_then(|n| n.parse::<u32>().ok())
        .ok_or_else(|| Error::Configuration(format!("audit log: bad file name {}", path.display())))
}

/// Opens a log file for appending, creating it readable by its owner only.
pub(super) fn open_append(path: &Path) -> Result<File> {
    let mut o = OpenOptions::new();
    o.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path).map_err(|e| io(e, "open", path))
}

pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    let d = File::open(dir).map_err(|e| io(e, "open", dir))?;
    d.sync_all().map_err(|e| io(e, "fsync", dir))
}

/// Reads a log file, as much of it as its size says (a device posing as a
/// log file reads as empty, not forever).
pub(super) fn read_text(path: &Path) -> Result<String> {
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
pub(super) fn first_line(path: &Path) -> Result<String> {
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
pub(super) fn tampered(why: impl std::fmt::Display) -> Error {
    Error::Configuration(format!(
        "audit log tampered: {why}. The sink will not extend this log: keep it as \
         evidence, check it with audit::verify_log, and open the sink on a new directory"
    ))
}

pub(super) fn is_digest(line: &str) -> bool {
    serde_json::from_str::<Line>(line).is_ok_and(|l| l.digest.is_some())
}

pub(super) fn seq_of(line: &str) -> Option<u64> {
    #[derive(Deserialize)]
    struct Seq {
        seq: u64,
    }
    serde_json::from_str::<Seq>(line).ok().map(|s| s.seq)
}

/// Where an existing log ends, after its tail verified.
pub(super) struct Tail {
    pub(super) log_id: [u8; 16],
    pub(super) index: u32,
    pub(super) bytes: u64,
    pub(super) seq: u64,
    pub(super) prev: [u8; 32],
    pub(super) since_digest: u64,
    pub(super) last_digest: Option<Anchor>,
}

/// Checks the end of the log in `files` with the sink's own key, from the
/// last digest (and the record before it, which the digest signs) to the
/// last record, and the caller's anchor if any. `None`: there is no log yet.
pub(super) fn read_tail(
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
pub(super) fn check_old_anchor(
    files: &[PathBuf],
    tail: &[(usize, usize, String)],
    a: Anchor,
) -> Result<()> {
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
