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
//!
//! [`LocalCache`] keeps per-thread copies of values read on every operation
//! (read snapshots), validated by one atomic load.

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

/// Per-thread copies of values that are read on every operation and
/// written rarely (key records, identity snapshots, master-key material):
/// a *read snapshot* instead of a per-operation lock.
///
/// A read that hits this thread's copy loads one atomic (the cache's
/// epoch), which nobody writes until something changes, and touches
/// nothing another thread writes: no lock word, no shared reference count.
/// Every change bumps the epoch ([`LocalCache::invalidate`]) after it is
/// published and before the call that made it returns, so a thread that
/// learns of a change by any synchronizing means (a channel, a join, a
/// lock) reads the new value; a read racing with the change sees the value
/// before or after it, as it would under the lock.
///
/// Entries are per thread and per cache, at most [`LOCAL_CACHE_ENTRIES`]
/// per thread and cache (then that thread's copies of the cache start
/// over), and are dropped when their thread ends. Memory is therefore
/// bounded by threads × caches × 1,024 entries; a stale entry may keep an
/// old value alive until it is replaced or its thread starts over. A value is first cached
/// as it was loaded (sharing the reference count of the source's `Arc`);
/// once it has served [`PROMOTE_AFTER`] reads on the thread, `promote`
/// makes the thread its own copy, so keys used once in a while do not
/// cost a copy and hot keys stop sharing a counter.
pub(crate) struct LocalCache<K, V> {
    id: u64,
    epoch: std::sync::atomic::AtomicU64,
    /// Threads hold a `Weak` of it beside their copies: once the cache is
    /// gone, the next thread map made on a thread drops them.
    alive: std::sync::Arc<()>,
    _types: std::marker::PhantomData<fn(K) -> V>,
}

/// Entries a thread keeps per [`LocalCache`].
pub(crate) const LOCAL_CACHE_ENTRIES: usize = 1024;
/// Reads of a shared value after which a thread takes its own copy.
pub(crate) const PROMOTE_AFTER: u32 = 8;

struct Entry<V> {
    epoch: u64,
    value: V,
    hits: u32,
}

type LocalMaps = std::collections::HashMap<u64, (std::sync::Weak<()>, Box<dyn std::any::Any>)>;

thread_local! {
    static LOCAL_MAPS: std::cell::RefCell<LocalMaps> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

static NEXT_CACHE_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl<K, V> LocalCache<K, V>
where
    K: std::hash::Hash + Eq + Clone + 'static,
    V: Clone + 'static,
{
    pub(crate) fn new() -> Self {
        LocalCache {
            id: NEXT_CACHE_ID.fetch_add(1, Ordering::Relaxed),
            epoch: std::sync::atomic::AtomicU64::new(0),
            alive: std::sync::Arc::new(()),
            _types: std::marker::PhantomData,
        }
    }

    /// Marks every thread's copies stale. Call after a change is
    /// published (and before the changing call returns).
    pub(crate) fn invalidate(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// This thread's copy of `key`'s value, or `load` (whose value, if
    /// any, is kept). `promote` makes a thread-private copy of a value
    /// read often (see the type's documentation). `f` runs on the value;
    /// it may use other caches. On a re-entrant call from inside `f` the
    /// cache is bypassed.
    pub(crate) fn get<Q, E>(
        &self,
        key: &Q,
        load: impl FnOnce() -> std::result::Result<Option<V>, E>,
        promote: impl FnOnce(&V) -> V,
    ) -> std::result::Result<Option<V>, E>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let epoch = self.epoch.load(Ordering::Acquire);
        let hit = LOCAL_MAPS.with(|maps| {
            let mut maps = maps.try_borrow_mut().ok()?;
            let map = maps
                .get_mut(&self.id)?
                .1
                .downcast_mut::<std::collections::HashMap<K, Entry<V>>>()?;
            let e = map.get_mut(key)?;
            if e.epoch != epoch {
                return None;
            }
            if e.hits < PROMOTE_AFTER {
                e.hits += 1;
                if e.hits == PROMOTE_AFTER {
                    e.value = promote(&e.value);
                }
            }
            Some(e.value.clone())
        });
        if let Some(v) = hit {
            return Ok(Some(v));
        }
        let value = load()?;
        if let Some(v) = &value {
            LOCAL_MAPS.with(|maps| {
                let Ok(mut maps) = maps.try_borrow_mut() else {
                    return;
                };
                if !maps.contains_key(&self.id) {
                    // Copies of caches that are gone (dropped rings) go
                    // when a thread starts on a new one.
                    maps.retain(|_, (alive, _)| alive.strong_count() > 0);
                    maps.insert(
                        self.id,
                        (
                            std::sync::Arc::downgrade(&self.alive),
                            Box::new(std::collections::HashMap::<K, Entry<V>>::new()),
                        ),
                    );
                }
                if let Some(map) = maps
                    .get_mut(&self.id)
                    .and_then(|m| m.1.downcast_mut::<std::collections::HashMap<K, Entry<V>>>())
                {
                    if map.len() >= LOCAL_CACHE_ENTRIES {
                        map.clear();
                    }
                    map.insert(
                        key.to_owned(),
                        Entry {
                            epoch,
                            value: v.clone(),
                            hits: 0,
                        },
                    );
                }
            });
        }
        Ok(value)
    }
}

impl<K, V> Default for LocalCache<K, V>
where
    K: std::hash::Hash + Eq + Clone + 'static,
    V: Clone + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V> Drop for LocalCache<K, V> {
    fn drop(&mut self) {
        // This thread's copies go now; other threads' go when they end or
        // start on another cache (their maps are keyed by this cache's
        // unique id, which is never reused, and hold a `Weak` of `alive`).
        let _ = LOCAL_MAPS.try_with(|maps| {
            if let Ok(mut maps) = maps.try_borrow_mut() {
                maps.remove(&self.id);
            }
        });
    }
}

impl<K, V> fmt::Debug for LocalCache<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalCache")
            .field("epoch", &self.epoch.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod local_cache_tests {
    use super::*;
    use std::cell::Cell;
    use std::sync::Arc;

    type Cache = LocalCache<String, Arc<String>>;

    fn read(c: &Cache, key: &str, source: &RwLock<Arc<String>>, loads: &Cell<u32>) -> Arc<String> {
        c.get(
            key,
            || {
                loads.set(loads.get() + 1);
                Ok::<_, ()>(Some(source.read().unwrap().clone()))
            },
            |v| Arc::new(String::clone(v)),
        )
        .unwrap()
        .unwrap()
    }

    #[test]
    fn reads_hit_until_invalidated_and_hot_values_become_private() {
        let c = Cache::new();
        let source = RwLock::new(Arc::new("v1".to_owned()));
        let loads = Cell::new(0);
        let first = read(&c, "k", &source, &loads);
        assert_eq!(loads.get(), 1);
        // Shared with the source until promoted.
        assert!(Arc::ptr_eq(&first, &source.read().unwrap()));
        for _ in 0..PROMOTE_AFTER {
            assert_eq!(*read(&c, "k", &source, &loads), "v1");
        }
        assert_eq!(loads.get(), 1);
        let hot = read(&c, "k", &source, &loads);
        assert!(!Arc::ptr_eq(&hot, &source.read().unwrap()));
        assert_eq!(*hot, "v1");
        // A change, published then invalidated, is read at once.
        *source.write().unwrap() = Arc::new("v2".to_owned());
        c.invalidate();
        assert_eq!(*read(&c, "k", &source, &loads), "v2");
        assert_eq!(loads.get(), 2);
    }

    #[test]
    fn another_thread_sees_a_change_after_invalidation() {
        let c = Cache::new();
        let source = RwLock::new(Arc::new("v1".to_owned()));
        std::thread::scope(|s| {
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let (back, done) = std::sync::mpsc::channel::<String>();
            let (c, source) = (&c, &source);
            s.spawn(move || {
                let loads = Cell::new(0);
                for _ in 0..20 {
                    read(c, "k", source, &loads);
                }
                back.send(read(c, "k", source, &loads).to_string()).unwrap();
                rx.recv().unwrap();
                back.send(read(c, "k", source, &loads).to_string()).unwrap();
            });
            assert_eq!(done.recv().unwrap(), "v1");
            *source.write().unwrap() = Arc::new("v2".to_owned());
            c.invalidate();
            tx.send(()).unwrap();
            assert_eq!(done.recv().unwrap(), "v2");
        });
    }

    #[test]
    fn bounded_per_thread_and_dropped_caches_are_pruned() {
        let source = RwLock::new(Arc::new("v".to_owned()));
        let loads = Cell::new(0);
        let c = Cache::new();
        for i in 0..LOCAL_CACHE_ENTRIES + 10 {
            read(&c, &i.to_string(), &source, &loads);
        }
        let len = |id: u64| {
            LOCAL_MAPS.with(|m| {
                m.borrow().get(&id).map(|(_, b)| {
                    b.downcast_ref::<std::collections::HashMap<String, Entry<Arc<String>>>>()
                        .unwrap()
                        .len()
                })
            })
        };
        assert!(len(c.id).unwrap() <= LOCAL_CACHE_ENTRIES);
        // A cache dropped on another thread: this thread's copies go when
        // it starts on a new cache.
        let gone = Cache::new();
        read(&gone, "k", &source, &loads);
        let gone_id = gone.id;
        std::thread::scope(|s| {
            s.spawn(move || drop(gone));
        });
        assert_eq!(len(gone_id), Some(1));
        let fresh = Cache::new();
        read(&fresh, "k", &source, &loads);
        assert_eq!(len(gone_id), None);
        // Dropped on this thread: gone at once.
        let fresh_id = fresh.id;
        drop(fresh);
        assert_eq!(len(fresh_id), None);
    }

    #[test]
    fn a_re_entrant_read_bypasses_the_cache() {
        let c = Cache::new();
        let source = RwLock::new(Arc::new("v".to_owned()));
        let loads = Cell::new(0);
        let v = c
            .get(
                "outer",
                || {
                    // Loading the outer value reads the cache again.
                    Ok::<_, ()>(Some(read(&c, "inner", &source, &loads)))
                },
                |v| v.clone(),
            )
            .unwrap()
            .unwrap();
        assert_eq!(*v, "v");
        assert_eq!(loads.get(), 1);
    }
}
