//! Envelope encryption: data keys, the encryption context, and the two byte
//! formats the ring emits (docs/FORMAT.md):
//!
//! - the **ciphertext blob** of [`crate::Client::encrypt`]: up to 4096 bytes
//!   encrypted directly under a master key version;
//! - the **envelope message** of [`crate::Client::seal`]: data of any size
//!   encrypted in frames under a fresh data key, with the data key wrapped by
//!   a master key, committed to, and bound to the context.

pub(crate) mod blob;
mod context;
mod datakey;
pub(crate) mod frames;
mod inspect;
pub(crate) mod message;
pub(crate) mod ranged;
pub(crate) mod rewrap;
pub(crate) mod stream;

pub(crate) use crate::limits::MAX_PLAINTEXT_LEN;
pub use context::EncryptionContext;
pub use datakey::{DataKey, Decrypted, Opened};
pub use inspect::{CiphertextInfo, inspect};
pub use message::SealOptions;
pub use ranged::{OpenedRange, RangeReader};
pub use stream::{OpenReader, SealWriter};

use crate::error::{Error, Result};

/// Magic bytes at the start of every strongroom ciphertext: ASCII "SR".
pub(crate) const MAGIC: [u8; 2] = *b"SR";

/// A bounds-checked reader over untrusted bytes. Every read that would run
/// past the end fails with the opaque decryption error.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(Error::DecryptionFailed)?;
        let s = self.buf.get(self.pos..end).ok_or(Error::DecryptionFailed)?;
        self.pos = end;
        Ok(s)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        self.take(N)?
            .try_into()
            .map_err(|_| Error::DecryptionFailed)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let s = self.buf.get(self.pos..).unwrap_or(&[]);
        self.pos = self.buf.len();
        s
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }
}
