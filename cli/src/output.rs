//! Where results go: stdout (written with errors handled, never a panic on
//! a closed pipe) or a file written through a temporary file in the
//! destination's directory and renamed over it only when complete.

use crate::exit::{self, CliError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Writes `text` to stdout. A closed pipe (`strongroom key list | head -1`)
/// is an I/O error, not a panic.
pub fn emit(text: &str) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| {
            if text.ends_with('\n') {
                Ok(())
            } else {
                out.write_all(b"\n")
            }
        })
        .and_then(|()| out.flush())
        .map_err(|e| CliError::new(exit::IO, format!("cannot write to stdout: {e}")))
}

/// `--json` output: pretty JSON and a newline.
pub fn emit_json(v: &serde_json::Value) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(v)
        .map_err(|e| CliError::new(exit::INTERNAL, e.to_string()))?;
    emit(&text)
}

/// Refuses an existing destination unless `force`, and a directory always.
/// Called before any work, so a refused command does nothing.
pub fn check_dest(dest: &Path, force: bool) -> Result<(), CliError> {
    match std::fs::symlink_metadata(dest) {
        Ok(m) if m.is_dir() => Err(CliError::usage(format!(
            "output {} is a directory",
            dest.display()
        ))),
        Ok(_) if !force => Err(CliError::usage(format!(
            "output file {} exists: use --force to replace it",
            dest.display()
        ))),
        _ => Ok(()),
    }
}

/// A file being written: a temporary file (mode 0600, named
/// `.strongroom-*.tmp`) in the destination's directory, removed if dropped
/// before [`AtomicFile::commit`].
#[derive(Debug)]
pub struct AtomicFile {
    tmp: tempfile::NamedTempFile,
    dest: PathBuf,
}

impl AtomicFile {
    /// Starts writing `dest` (see [`check_dest`]).
    pub fn create(dest: &Path, force: bool) -> Result<Self, CliError> {
        check_dest(dest, force)?;
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        // tempfile creates the file with mode 0600 on Unix.
        let tmp = tempfile::Builder::new()
            .prefix(".strongroom-")
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(|e| CliError::io("create a temporary file in", dir, e))?;
        Ok(AtomicFile {
            tmp,
            dest: dest.to_path_buf(),
        })
    }

    /// The destination path.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Syncs the data and renames the temporary file over the destination.
    pub fn commit(self) -> Result<(), CliError> {
        let dest = self.dest;
        self.tmp
            .as_file()
            .sync_all()
            .map_err(|e| CliError::io("sync", &dest, e))?;
        self.tmp
            .persist(&dest)
            .map_err(|e| CliError::io("rename the temporary file to", &dest, e.error))?;
        if let Some(dir) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            // Makes the rename durable; a failure here loses nothing written.
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tmp.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tmp.flush()
    }
}
