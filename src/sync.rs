//! A read-write lock whose writers are not held back by a stream of readers,
//! on every platform.
//!
//! `std::sync::RwLock` leaves its priority policy to the platform ("a writer
//! which is waiting to acquire the lock might or might not block concurrent
//! calls to read"). The futex lock std uses on Linux blocks new readers
//! while a writer waits, but a reader-preferring implementation would let
//! the in-memory ring's sealing threads keep a rotation, a disable or a
//! revocation waiting for as long as they keep reading.
//!
//! [`WriterFirst`] closes a gate while a writer waits: readers that arrive
//! then queue on the gate instead of joining the lock, so a writer waits
//! only for the readers already past it (at most one per thread). The read
//! path costs one atomic load while no writer waits.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub(crate) struct WriterFirst<T> {
    /// Writers waiting for (or about to take) the lock.
    writers_waiting: AtomicUsize,
    /// Held by a writer from before it asks for the lock until it has it.
    gate: Mutex<()>,
    lock: RwLock<T>,
}

impl<T> WriterFirst<T> {
    pub(crate) fn new(value: T) -> Self {
        WriterFirst {
            writers_waiting: AtomicUsize::new(0),
            gate: Mutex::new(()),
            lock: RwLock::new(value),
        }
    }

    /// Shared access. Waits for every writer already waiting. A poisoned
    /// lock is entered anyway: writers here never leave a value half-changed.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, T> {
        if self.writers_waiting.load(Ordering::SeqCst) != 0 {
            // Queue behind the waiting writer(s); the gate opens once one
            // holds the lock, and the lock itself then holds us until it
            // is released.
            drop(self.gate.lock().unwrap_or_else(PoisonError::into_inner));
        }
        self.lock.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Exclusive access. Readers arriving from now on wait behind this
    /// writer; it waits only for the readers already inside.
    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, T> {
        self.writers_waiting.fetch_add(1, Ordering::SeqCst);
        let gate = self.gate.lock().unwrap_or_else(PoisonError::into_inner);
        let guard = self.lock.write().unwrap_or_else(PoisonError::into_inner);
        self.writers_waiting.fetch_sub(1, Ordering::SeqCst);
        drop(gate);
        guard
    }
}

impl<T: Default> Default for WriterFirst<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T: fmt::Debug> fmt::Debug for WriterFirst<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.lock.try_read() {
            Ok(v) => fmt::Debug::fmt(&*v, f),
            Err(_) => f.write_str("WriterFirst { <locked> }"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// While a writer waits for a reader, a new reader cannot enter: it is
    /// stopped at the gate, whatever the platform lock's own policy.
    #[test]
    fn a_waiting_writer_closes_the_gate_to_new_readers() {
        let lock = WriterFirst::new(0u32);
        let wrote = AtomicBool::new(false);
        std::thread::scope(|s| {
            let held = lock.read();
            let writer = s.spawn(|| {
                *lock.write() += 1;
                wrote.store(true, Ordering::SeqCst);
            });
            // The writer announces itself, then holds the gate while it
            // waits for `held`: no new reader gets past it.
            while lock.writers_waiting.load(Ordering::SeqCst) == 0 || lock.gate.try_lock().is_ok() {
                std::thread::yield_now();
            }
            assert!(!wrote.load(Ordering::SeqCst));
            drop(held);
            writer.join().unwrap();
        });
        assert!(wrote.load(Ordering::SeqCst));
        assert_eq!(*lock.read(), 1);
        assert_eq!(lock.writers_waiting.load(Ordering::SeqCst), 0);
    }
}
