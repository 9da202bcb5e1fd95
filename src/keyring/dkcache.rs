//! The data-key cache (opt-in): reuses a wrapped data key for several
//! messages, and an unwrapped one for several opens, within explicit limits.
//!
//! Like the AWS Encryption SDK's caching materials manager, it trades a
//! little key separation for far fewer calls to the backend (which may be a
//! remote KMS or an HSM). What it never trades away:
//!
//! - every call is still authorized and audited (the event says it was
//!   served from the cache: [`crate::audit::AuditEvent::cached`]);
//! - each message still has its own message id, so its own body key and
//!   commitment (HKDF over the data key and the message id);
//! - entries are partitioned by key, version, suite and canonical context,
//!   so a cached key serves only requests that would have wrapped the same
//!   way;
//! - an entry is dropped when it is older than `max_age`, has served
//!   `max_messages` messages or would pass `max_bytes`; when its key's
//!   primary version is no longer the one it was wrapped under (rotation,
//!   version floors); and when any change is made to its key through this
//!   ring (policy, grants, state, deletion, rotation);
//! - a miss fills once for every thread waiting on the same partition;
//! - cached keys are zeroized when dropped.
//!
//! Streams of unknown length ([`crate::Client::seal_writer`]) never use a
//! cached key: the byte limit could not be checked before the key is used.

use crate::clock::Timestamp;
use crate::key::KeyId;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use zeroize::Zeroizing;

/// Limits of the data-key cache ([`crate::KeyRingBuilder::data_key_cache`]).
///
/// There is no default age: choose how long one data key may protect new
/// data. The other limits have conservative defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DataKeyCacheLimits {
    /// How long an entry may be used after it was made (whole seconds on
    /// the ring's clock).
    pub max_age: Duration,
    /// Messages one cached data key may seal (opens one cached unwrapped
    /// key may serve). Default 65,536.
    pub max_messages: u64,
    /// Plaintext bytes one cached data key may seal. Default 64 GiB.
    pub max_bytes: u64,
    /// Entries kept per direction (encrypt, decrypt); the oldest is dropped
    /// beyond it. Default 1,024.
    pub max_entries: usize,
}

impl DataKeyCacheLimits {
    /// Limits with `max_age` and the default message, byte and entry limits.
    pub fn new(max_age: Duration) -> Self {
        DataKeyCacheLimits {
            max_age,
            max_messages: 1 << 16,
            max_bytes: 1 << 36,
            max_entries: 1024,
        }
    }

    /// Sets the message limit (at least 1).
    pub fn max_messages(mut self, n: u64) -> Self {
        self.max_messages = n.max(1);
        self
    }

    /// Sets the byte limit.
    pub fn max_bytes(mut self, n: u64) -> Self {
        self.max_bytes = n;
        self
    }

    /// Sets the entry limit (at least 1).
    pub fn max_entries(mut self, n: usize) -> Self {
        self.max_entries = n.max(1);
        self
    }
}

/// A data key and its wrapped form, as the seal path uses it.
pub(crate) struct SealKey {
    pub data_key: Zeroizing<[u8; 32]>,
    pub wrapped: Vec<u8>,
    pub version: u32,
}

/// Where an encrypt-side entry may be used.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct SealPartition {
    pub key_id: KeyId,
    pub version: u32,
    pub suite: u8,
    pub context: Vec<u8>,
}

struct SealEntry {
    key: SealKey,
    made: Timestamp,
    messages: u64,
    bytes: u64,
}

/// An unwrapped data key, as the open path uses it.
struct OpenEntry {
    data_key: Zeroizing<Vec<u8>>,
    key_id: KeyId,
    made: Timestamp,
    messages: u64,
}

/// One partition's slot: its lock is held while the slot is filled, so
/// threads that miss on the same partition wait for one fill.
type Slot<E> = Arc<Mutex<Option<E>>>;

/// Partitions and their slots, each with its insertion tick.
type Slots<K, E> = Mutex<HashMap<K, (u64, Slot<E>)>>;

/// The cache of one ring.
pub(crate) struct DataKeyCache {
    limits: DataKeyCacheLimits,
    seal: Slots<SealPartition, SealEntry>,
    open: Slots<Vec<u8>, OpenEntry>,
    /// Insertion counter, to drop the oldest partition beyond the limit.
    tick: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for DataKeyCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKeyCache")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn expired(made: Timestamp, now: Timestamp, max_age: Duration) -> bool {
    now.as_secs().saturating_sub(made.as_secs()) >= max_age.as_secs()
}

/// The slot of `key` in `map`, made if absent; drops the oldest slot when
/// the map would exceed `max`.
fn slot<K: Clone + Eq + std::hash::Hash, E>(
    map: &Slots<K, E>,
    key: &K,
    max: usize,
    tick: &std::sync::atomic::AtomicU64,
) -> Slot<E> {
    let mut m = lock(map);
    if let Some((_, s)) = m.get(key) {
        return s.clone();
    }
    if m.len() >= max
        && let Some(oldest) = m
            .iter()
            .min_by_key(|(_, (t, _))| *t)
            .map(|(k, _)| k.clone())
    {
        m.remove(&oldest);
    }
    let t = tick.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let s: Slot<E> = Arc::default();
    m.insert(key.clone(), (t, s.clone()));
    s
}

impl DataKeyCache {
    pub(crate) fn new(limits: DataKeyCacheLimits) -> Self {
        DataKeyCache {
            limits,
            seal: Mutex::default(),
            open: Mutex::default(),
            tick: Default::default(),
        }
    }

    /// A data key for a message of `len` bytes in `partition`: the cached
    /// one if it is within every limit (counting this message), otherwise a
    /// fresh one from `fill`, cached for the next messages. Returns the key
    /// and whether it came from the cache. Threads missing on the same
    /// partition wait for one fill.
    pub(crate) fn seal_key(
        &self,
        partition: &SealPartition,
        len: u64,
        now: Timestamp,
        fill: impl FnOnce() -> crate::Result<SealKey>,
    ) -> crate::Result<(SealKey, bool)> {
        let l = self.limits;
        if len > l.max_bytes {
            // Too large for any entry: a fresh key, not cached.
            return fill().map(|k| (k, false));
        }
        let slot = slot(&self.seal, partition, l.max_entries, &self.tick);
        let mut entry = lock(&slot);
        if let Some(e) = entry.as_mut() {
            let usable = !expired(e.made, now, l.max_age)
                && e.messages < l.max_messages
                && e.bytes.saturating_add(len) <= l.max_bytes;
            if usable {
                e.messages += 1;
                e.bytes += len;
                return Ok((
                    SealKey {
                        data_key: e.key.data_key.clone(),
                        wrapped: e.key.wrapped.clone(),
                        version: e.key.version,
                    },
                    true,
                ));
            }
            *entry = None;
        }
        let key = fill()?;
        *entry = Some(SealEntry {
            key: SealKey {
                data_key: key.data_key.clone(),
                wrapped: key.wrapped.clone(),
                version: key.version,
            },
            made: now,
            messages: 1,
            bytes: len,
        });
        Ok((key, false))
    }

    /// The unwrapped data key of `wrapped` (the exact wrapped-key bytes of a
    /// message) opened under `context`: cached, or from `fill` and cached.
    /// Returns the key and whether it came from the cache.
    pub(crate) fn open_key(
        &self,
        key_id: &KeyId,
        wrapped: &[&[u8]],
        context: &[u8],
        now: Timestamp,
        fill: impl FnOnce() -> crate::Result<Zeroizing<Vec<u8>>>,
    ) -> crate::Result<(Zeroizing<Vec<u8>>, bool)> {
        let l = self.limits;
        // The exact bytes, length-prefixed, are the entry's name: no two
        // different (wrapped key, context) pairs share one. (The map's
        // keyed SipHash keeps lookups cheap and resistant to chosen
        // collisions; a cryptographic digest would only add cost.)
        let mut id =
            Vec::with_capacity(24 + context.len() + wrapped.iter().map(|p| p.len()).sum::<usize>());
        for part in wrapped.iter().chain([&context]) {
            id.extend_from_slice(&(part.len() as u64).to_be_bytes());
            id.extend_from_slice(part);
        }
        let slot = slot(&self.open, &id, l.max_entries, &self.tick);
        let mut entry = lock(&slot);
        if let Some(e) = entry.as_mut() {
            if &e.key_id == key_id
                && !expired(e.made, now, l.max_age)
                && e.messages < l.max_messages
            {
                e.messages += 1;
                return Ok((e.data_key.clone(), true));
            }
            *entry = None;
        }
        let dk = fill()?;
        *entry = Some(OpenEntry {
            data_key: dk.clone(),
            key_id: key_id.clone(),
            made: now,
            messages: 1,
        });
        Ok((dk, false))
    }

    /// Drops every entry of `key_id` (both directions).
    pub(crate) fn purge_key(&self, key_id: &KeyId) {
        lock(&self.seal).retain(|p, _| &p.key_id != key_id);
        lock(&self.open).retain(|_, (_, s)| {
            // An entry being filled right now (its slot locked) is kept:
            // its key check on the next hit still applies.
            match s.try_lock() {
                Ok(e) => e.as_ref().is_none_or(|e| &e.key_id != key_id),
                Err(_) => true,
            }
        });
    }

    /// Drops the encrypt-side entries of `key_id` made under a version
    /// other than `primary` (after a rotation seen on a hit).
    pub(crate) fn purge_stale_versions(&self, key_id: &KeyId, primary: u32) {
        lock(&self.seal).retain(|p, _| &p.key_id != key_id || p.version == primary);
    }
}
