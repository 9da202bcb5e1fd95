//! The usage meter: encryptions per key version, counted over the version's
//! whole life in blocks reserved in the key record.

use crate::backend::MaterialId;
use crate::error::{Error, Result};
use crate::store::KeyMetadata;
use crate::store::MetadataStore;
use std::collections::HashMap;
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
    limit: u64,
    /// Sequence numbers reserved per store update.
    block: u64,
    counts: RwLock<HashMap<MaterialId, Arc<Mutex<Block>>>>,
}

/// This ring's current block of one version: numbers `next + 1 ..= end`
/// remain.
#[derive(Debug, Default)]
struct Block {
    next: u64,
    end: u64,
}

/// Largest block: one store update per 2^20 encryptions.
const MAX_BLOCK: u64 = 1 << 20;

impl UsageMeter {
    pub(crate) fn new(limit: u64) -> Self {
        UsageMeter {
            limit,
            // Small limits (tests) reserve small blocks, so a restart wastes
            // little of them.
            block: (limit / 64).clamp(1, MAX_BLOCK),
            counts: RwLock::new(HashMap::new()),
        }
    }

    /// Counts one encryption under `id` and returns its sequence number
    /// (counted over the version's whole life); reserves a new block in the
    /// store when this ring's is used up; refuses once the hard cap is
    /// reached.
    pub(crate) fn record(&self, id: &MaterialId, store: &dyn MetadataStore) -> Result<u64> {
        let existing = self
            .counts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned();
        let counter = match existing {
            Some(c) => c,
            None => self
                .counts
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .entry(id.clone())
                .or_default()
                .clone(),
        };
        let mut b = counter.lock().unwrap_or_else(|e| e.into_inner());
        let cap = HARD_LIMIT.min(self.limit.saturating_add(1 << 24));
        if b.next >= b.end {
            if b.next >= cap {
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
            (b.next, b.end) = range;
        }
        b.next += 1;
        let n = b.next;
        if n > cap {
            return Err(limit_error(id));
        }
        Ok(n)
    }

    /// True when `count` (a value returned by `record`) should trigger a
    /// rotation: exactly at the limit, and every 1024 encryptions after it
    /// in case an earlier rotation attempt failed.
    pub(crate) fn should_rotate(&self, count: u64) -> bool {
        count >= self.limit && (count - self.limit).is_multiple_of(1024)
    }

    /// Encryptions counted for `id`: the version's persisted counter less
    /// the unused rest of this ring's block (exact for a single ring; an
    /// upper bound after restarts or with several rings).
    pub(crate) fn count(&self, id: &MaterialId, meta: &KeyMetadata) -> u64 {
        let reserved = meta
            .encryptions_reserved
            .get(&id.version)
            .copied()
            .unwrap_or(0);
        let unused = self
            .counts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .map_or(0, |c| {
                let b = c.lock().unwrap_or_else(|e| e.into_inner());
                // Only if this block is the newest reservation.
                if b.end == reserved { b.end - b.next } else { 0 }
            });
        reserved - unused
    }

    pub(crate) fn forget_key(&self, key_id: &crate::KeyId) {
        self.counts
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| &k.key_id != key_id);
    }
}

fn limit_error(id: &MaterialId) -> Error {
    Error::VersionCannotEncrypt {
        key_id: id.key_id.clone(),
        version: id.version,
        reason: "it reached its encryption limit".into(),
    }
}
