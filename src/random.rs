//! Sources of randomness.
//!
//! The ring draws every random value (key ids, master keys, data keys, nonces,
//! message ids) from one [`RandomSource`]. The default is the operating
//! system's generator, [`OsRandom`].
//!
//! # One OS call per operation
//!
//! An operation that needs several random values (a seal: the data key,
//! the wrap's nonce, the message id) runs inside a *batch*
//! (`with_batch`): the first [`OsRandom::fill`] of the batch, on that
//! thread, asks the operating system once for every byte the operation will
//! need, and the later fills are served from that buffer, each byte once,
//! in order; the bytes are wiped as they are handed out, and whatever is
//! left is wiped when the batch ends. Nothing outlives the operation: there
//! is no generator state to reseed, no buffer a `fork` or a virtual-machine
//! snapshot could duplicate into two futures (a child process starts with
//! only the thread that forked, which is not inside a batch unless an
//! operation's own backend forks, and a batch never spans two operations).
//! Only [`OsRandom`] takes part: a caller's own source (for example the
//! seeded one of [`crate::hazmat`]) is called exactly as before, so a
//! seeded ring draws the same bytes in the same order.

use crate::error::{Error, Result};
use std::fmt::Debug;
use zeroize::Zeroize;

/// A cryptographically secure random number generator.
///
/// Implementations must be safe to call from many threads at once.
pub trait RandomSource: Send + Sync + Debug {
    /// Fills `buf` with random bytes, or fails with [`Error::Random`].
    fn fill(&self, buf: &mut [u8]) -> Result<()>;
}

/// The operating system's random number generator (`getrandom`).
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRandom;

impl RandomSource for OsRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<()> {
        if BATCH.with(|b| b.borrow_mut().serve(buf)) {
            return Ok(());
        }
        os_fill(buf)
    }
}

/// The one place that asks the OS.
fn os_fill(buf: &mut [u8]) -> Result<()> {
    #[cfg(test)]
    OS_CALLS.with(|c| c.set(c.get() + 1));
    getrandom::fill(buf).map_err(|_| Error::Random)
}

#[cfg(test)]
thread_local! {
    static OS_CALLS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// The most one batch asks for (a seal needs 76 bytes).
const BATCH_MAX: usize = 128;

/// The open batch of this thread, if any.
struct Batch {
    /// Bytes asked for when the first fill comes (0: no batch open).
    want: usize,
    /// The buffer; bytes before `pos` are handed out (and wiped).
    buf: [u8; BATCH_MAX],
    /// Filled bytes, `pos..len` unused.
    len: usize,
    pos: usize,
}

impl Batch {
    /// Serves `out` from the batch if one is open and can; fills the batch
    /// from the OS on its first use. `false`: the caller draws directly.
    fn serve(&mut self, out: &mut [u8]) -> bool {
        if self.want == 0 {
            return false;
        }
        if self.len == 0 {
            let n = self.want.max(out.len());
            if n > BATCH_MAX || os_fill(&mut self.buf[..n]).is_err() {
                // Too big, or the OS failed: close the batch; the direct
                // call reports the failure (or succeeds).
                self.want = 0;
                return false;
            }
            self.len = n;
        }
        let end = self.pos + out.len();
        if end > self.len {
            return false;
        }
        out.copy_from_slice(&self.buf[self.pos..end]);
        self.buf[self.pos..end].zeroize();
        self.pos = end;
        true
    }

    fn close(&mut self) {
        self.buf[..self.len].zeroize();
        self.want = 0;
        self.len = 0;
        self.pos = 0;
    }
}

thread_local! {
    static BATCH: std::cell::RefCell<Batch> = const {
        std::cell::RefCell::new(Batch { want: 0, buf: [0; BATCH_MAX], len: 0, pos: 0 })
    };
}

/// Runs `f` with a batch of `bytes` OS random bytes open on this thread
/// (see the module documentation): [`OsRandom`] asks the OS once, on the
/// first fill, and serves the next fills from the batch. A batch already
/// open (a nested operation) is used as it is.
pub(crate) fn with_batch<T>(bytes: usize, f: impl FnOnce() -> T) -> T {
    struct Close;
    impl Drop for Close {
        fn drop(&mut self) {
            BATCH.with(|b| b.borrow_mut().close());
        }
    }
    let opened = BATCH.with(|b| {
        let mut b = b.borrow_mut();
        if b.want != 0 {
            return false;
        }
        b.want = bytes.min(BATCH_MAX);
        true
    });
    if !opened {
        return f();
    }
    let _close = Close;
    f()
}

pub(crate) fn random_array<const N: usize>(rng: &dyn RandomSource) -> Result<[u8; N]> {
    let mut out = [0u8; N];
    rng.fill(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calls() -> u32 {
        OS_CALLS.with(std::cell::Cell::get)
    }

    fn leftover_is_wiped() -> bool {
        BATCH.with(|b| {
            let b = b.borrow();
            b.want == 0 && b.len == 0 && b.buf.iter().all(|x| *x == 0)
        })
    }

    #[test]
    fn a_batch_asks_the_os_once_and_hands_each_byte_out_once() {
        let before = calls();
        let (a, n, m) = with_batch(76, || {
            let a: [u8; 32] = random_array(&OsRandom).unwrap();
            let n: [u8; 12] = random_array(&OsRandom).unwrap();
            let m: [u8; 32] = random_array(&OsRandom).unwrap();
            // Still open, with bytes 0..76 handed out and wiped.
            BATCH.with(|b| {
                let b = b.borrow();
                assert_eq!((b.want, b.len, b.pos), (76, 76, 76));
                assert!(b.buf[..76].iter().all(|x| *x == 0));
            });
            (a, n, m)
        });
        assert_eq!(calls() - before, 1);
        assert!(leftover_is_wiped());
        // Three different values (a repeat of 32 random bytes cannot happen).
        assert_ne!(a, m);
        assert_ne!(a[..12], n[..]);
        assert_ne!(a, [0; 32]);
    }

    #[test]
    fn beyond_the_batch_and_outside_it_the_os_is_asked_directly() {
        let before = calls();
        with_batch(12, || {
            let _: [u8; 12] = random_array(&OsRandom).unwrap();
            // Only 12 were fetched: the next fill goes to the OS.
            let _: [u8; 12] = random_array(&OsRandom).unwrap();
        });
        assert_eq!(calls() - before, 2);
        // A first fill larger than the batch's size takes its own size.
        let before = calls();
        with_batch(8, || {
            let _: [u8; 40] = random_array(&OsRandom).unwrap();
        });
        assert_eq!(calls() - before, 1);
        // Larger than any batch: direct, and the batch stays closed.
        let before = calls();
        with_batch(64, || {
            let _: [u8; 200] = random_array(&OsRandom).unwrap();
            let _: [u8; 12] = random_array(&OsRandom).unwrap();
        });
        assert_eq!(calls() - before, 2);
        assert!(leftover_is_wiped());
        let before = calls();
        let a: [u8; 16] = random_array(&OsRandom).unwrap();
        let b: [u8; 16] = random_array(&OsRandom).unwrap();
        assert_eq!(calls() - before, 2);
        assert_ne!(a, b);
    }

    #[test]
    fn a_nested_batch_uses_the_open_one_and_a_panic_closes_it() {
        let before = calls();
        with_batch(64, || {
            let _: [u8; 16] = random_array(&OsRandom).unwrap();
            with_batch(64, || {
                let _: [u8; 16] = random_array(&OsRandom).unwrap();
            });
            // The inner batch did not close the outer one.
            let _: [u8; 32] = random_array(&OsRandom).unwrap();
        });
        assert_eq!(calls() - before, 1);
        let r = std::panic::catch_unwind(|| {
            with_batch(64, || {
                let _: [u8; 16] = random_array(&OsRandom).unwrap();
                panic!("work failed");
            })
        });
        assert!(r.is_err());
        assert!(leftover_is_wiped());
    }

    #[test]
    fn a_seal_and_a_data_key_ask_the_os_once() {
        // The OS generator named explicitly: under the accelerated provider
        // (CI's second pass) the default source is AWS-LC's own generator,
        // which makes no OS call per operation at all.
        let ring = crate::KeyRing::builder()
            .threads(1)
            .random(std::sync::Arc::new(OsRandom))
            .build();
        let client = ring.client(crate::Principal::service("rng").unwrap());
        let key = client
            .create_key(crate::KeySpec::default(), crate::CreateKeyOptions::new())
            .unwrap()
            .to_string();
        let ctx = crate::EncryptionContext::new().with("a", "b");
        let _ = client.seal(&key, b"warm up", &ctx).unwrap();
        let before = calls();
        let m = client.seal(&key, b"hello", &ctx).unwrap();
        assert_eq!(calls() - before, 1);
        let before = calls();
        let _ = client.generate_data_key(&key, &ctx).unwrap();
        let _ = client.encrypt(&key, b"x", &ctx).unwrap();
        assert_eq!(calls() - before, 2);
        let before = calls();
        assert_eq!(
            client.open(&m, &ctx).unwrap().plaintext.expose_secret(),
            b"hello"
        );
        assert_eq!(calls() - before, 0);
        assert!(leftover_is_wiped());
    }

    #[test]
    fn other_threads_do_not_share_a_batch() {
        with_batch(64, || {
            let _: [u8; 16] = random_array(&OsRandom).unwrap();
            std::thread::scope(|s| {
                s.spawn(|| {
                    let before = calls();
                    let _: [u8; 16] = random_array(&OsRandom).unwrap();
                    let _: [u8; 16] = random_array(&OsRandom).unwrap();
                    assert_eq!(calls() - before, 2);
                    assert!(leftover_is_wiped());
                });
            });
        });
    }
}
