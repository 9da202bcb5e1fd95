//! The usage meter: encryptions per key version, counted over the version's
//! whole life in blocks reserved in the key record.

use crate::backend::MaterialId;
use crate::error::{Error, Result};
use crate::store::KeyMetadata;
use crate::store::MetadataStore;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// The hard cap: a version that reaches it refuses to encrypt at all.
const HARD_LIMIT: u64 = 1 << 32;

/// Counts encryptions per key version, durably.
///
/// Before a ring encrypts under a version it holds a *reserved block* of
/// sequence numbers for it, taken from the version's counter in the key
/// record ([`KeyMetadata::encryptions_reserved`]) by an atomic store update.
/// Every encryption uses one number of a block that was persisted first, so
/// across restarts, crashes and rings sharing a store the number of
/// encryptions under a version never exceeds the persisted counter: the
/// encryption limit holds for the version's lifetime, not per process. A
/// restart loses at most the unused rest of each block (counted as used),
/// which only makes the ring rotate earlier.
#[derive(Debug)]
pub(crate) struct UsageMeter {
    /// Unique per meter (process-wide): the key of this meter's entries
    /// in each thread's cache.
    id: u64,
    limit: u64,
    /// Sequence numbers reserved per store update.
    block: u64,
    /// Sequence numbers a thread takes from the ring's block at a time.
    thread_block: u64,
    counts: RwLock<HashMap<MaterialId, Arc<Shared>>>,
}

/// One version's state in this ring: the ring's current block, and whether
/// the key was forgotten (threads drop their cached numbers then).
#[derive(Debug, Default)]
struct Shared {
    block: Mutex<Block>,
    retired: AtomicBool,
}

/// This ring's current block of one version: numbers `next + 1 ..= end`
/// remain; the block began after `start`.
#[derive(Debug, Default)]
struct Block {
    start: u64,
    next: u64,
    end: u64,
}

/// Numbers one thread holds for one version of one ring's meter:
/// `next + 1 ..= end` remain.
struct Local {
    shared: Arc<Shared>,
    next: u64,
    end: u64,
}

type LocalMap = HashMap<u64, HashMap<MaterialId, Local>>;

thread_local! {
    /// Per thread, per meter, per version: the numbers this thread may use
    /// without touching memory another thread writes.
    static LOCAL: RefCell<LocalMap> = RefCell::new(HashMap::new());
}

/// Largest block: one store update per 2^20 encryptions.
const MAX_BLOCK: u64 = 1 << 20;
/// Largest share of a block a thread takes at once.
const MAX_THREAD_BLOCK: u64 = 64;
/// Entries a thread keeps before it drops those of forgotten keys and
/// dropped rings.
const LOCAL_PRUNE_AT: usize = 256;

static NEXT_METER_ID: AtomicU64 = AtomicU64::new(1);

impl UsageMeter {
    pub(crate) fn new(limit: u64) -> Self {
        // Small limits (tests) reserve small blocks, so a restart wastes
        // little of them.
        let block = (limit / 64).clamp(1, MAX_BLOCK);
        UsageMeter {
            id: NEXT_METER_ID.fetch_add(1, Ordering::Relaxed),
            limit,
            block,
            thread_block: block.min(MAX_THREAD_BLOCK),
            counts: RwLock::new(HashMap::new()),
        }
    }

    fn cap(&self) -> u64 {
        HARD_LIMIT.min(self.limit.saturating_add(1 << 24))
    }

    /// Counts one encryption under `id` and returns its sequence number
    /// (counted over the version's whole life); refuses once the hard cap
    /// is reached.
    ///
    /// The hot path touches only this thread's memory: each thread takes
    /// up to 64 numbers at a time from the ring's block (one lock), and the
    /// ring reserves a new block in the store when its own is used up.
    /// Numbers a thread holds when it ends, or when its ring is dropped,
    /// are lost (counted as used), like a block at a restart.
    pub(crate) fn record(&self, id: &MaterialId, store: &dyn MetadataStore) -> Result<u64> {
        let cached = LOCAL.with(|l| {
            let mut l = l.borrow_mut();
            let e = l.get_mut(&self.id)?.get_mut(id)?;
            if e.next < e.end && !e.shared.retired.load(Ordering::Acquire) {
                e.next += 1;
                Some(e.next)
            } else {
                None
            }
        });
        let n = match cached {
            Some(n) => n,
            None => self.refill(id, store)?,
        };
        if n > self.cap() {
            return Err(limit_error(id));
        }
        Ok(n)
    }

    /// Takes this thread's next share of the ring's block (reserving a new
    /// block in the store if needed) and returns its first number.
    fn refill(&self, id: &MaterialId, store: &dyn MetadataStore) -> Result<u64> {
        let shared = self.shared(id);
        let (first, end) = {
            let mut b = shared.block.lock().unwrap_or_else(|e| e.into_inner());
            if b.next >= b.end {
                if b.next >= self.cap() {
                    return Err(limit_error(id));
                }
                let mut range = (0, 0);
                let block = self.block;
                store.update_key(&id.key_id, &mut |m| {
                    let r = m.encryptions_reserved.entry(id.version).or_insert(0);
                    range = (*r, r.saturating_add(block));
                    *r = range.1;
                    Ok(())
                })?;
                (b.start, b.end) = range;
                b.next = range.0;
            }
            let take = self.thread_block.min(b.end - b.next);
            let first = b.next + 1;
            b.next += take;
            (first, b.next)
        };
        LOCAL.with(|l| {
            let mut l = l.borrow_mut();
            if l.values().map(HashMap::len).sum::<usize>() >= LOCAL_PRUNE_AT {
                for m in l.values_mut() {
                    m.retain(|_, e| {
                        !e.shared.retired.load(Ordering::Acquire)
                            && Arc::strong_count(&e.shared) > 1
                    });
                }
                l.retain(|_, m| !m.is_empty());
            }
            l.entry(self.id).or_default().insert(
                id.clone(),
                Local {
                    shared,
                    next: first,
                    end,
                },
            );
        });
        Ok(first)
    }

    fn shared(&self, id: &MaterialId) -> Arc<Shared> {
        let existing = self
            .counts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned();
        match existing {
            Some(c) => c,
            None => self
                .counts
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .entry(id.clone())
                .or_default()
                .clone(),
        }
    }

    /// True when `count` (a value returned by `record`) should trigger a
    /// rotation: exactly at the limit, and every 1024 encryptions after it
    /// in case an earlier rotation attempt failed.
    pub(crate) fn should_rotate(&self, count: u64) -> bool {
        count >= self.limit && (count - self.limit).is_multiple_of(1024)
    }

    /// Encryptions counted for `id`: the version's persisted counter less
    /// the unused rest of this ring's block and of the calling thread's
    /// share (exact for a single ring used from one thread; an upper bound
    /// by at most 64 per other thread, and after restarts or with several
    /// rings).
    pub(crate) fn count(&self, id: &MaterialId, meta: &KeyMetadata) -> u64 {
        let reserved = meta
            .encryptions_reserved
            .get(&id.version)
            .copied()
            .unwrap_or(0);
        let Some(shared) = self
            .counts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
        else {
            return reserved;
        };
        let (start, unused_ring) = {
            let b = shared.block.lock().unwrap_or_else(|e| e.into_inner());
            // Only if this block is the newest reservation.
            if b.end != reserved {
                return reserved;
            }
            (b.start, b.end - b.next)
        };
        let unused_here = LOCAL.with(|l| {
            l.borrow()
                .get(&self.id)
                .and_then(|m| m.get(id))
                .filter(|e| Arc::ptr_eq(&e.shared, &shared) && e.end > start)
                .map_or(0, |e| e.end - e.next)
        });
        reserved - unused_ring - unused_here
    }

    pub(crate) fn forget_key(&self, key_id: &crate::KeyId) {
        self.counts
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, s| {
                let keep = &k.key_id != key_id;
                if !keep {
                    s.retired.store(true, Ordering::Release);
                }
                keep
            });
    }
}

fn limit_error(id: &MaterialId) -> Error {
    Error::VersionCannotEncrypt {
        key_id: id.key_id.clone(),
        version: id.version,
        reason: "it reached its encryption limit".into(),
    }
}
