//! The record cache of one instance and the listener that keeps it fresh.
//!
//! Every change a store makes sends `NOTIFY strongroom, '<what>'` inside its
//! transaction, so the notification is delivered exactly when the change
//! commits. The listener thread of each instance holds its own connection
//! with `LISTEN strongroom` and drops what changed. Three rules bound what a
//! reader can see:
//!
//! - an entry older than the maximum staleness is never served (it is read
//!   again), so a lost notification costs at most that bound;
//! - while the listener is not connected, nothing is served from the cache;
//!   when it connects again, the whole cache is flushed first (anything may
//!   have changed while it was away);
//! - a read that raced with an invalidation is not cached (an epoch counter
//!   moves on every invalidation; a read caches its result only if the
//!   epoch did not move while it ran).
//!
//! Entry ages count from the moment the read *started*, so the bound is
//! conservative.

use super::conn::Conn;
use crate::backend::MaterialId;
use crate::key::{Alias, KeyId};
use crate::store::KeyMetadata;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

/// The notification channel.
pub(crate) const CHANNEL: &str = "strongroom";

/// A notification payload longer than this is sent as `*` (flush all);
/// PostgreSQL's limit is 8000 bytes.
const MAX_PAYLOAD: usize = 4000;

/// Something that holds decrypted key material and must drop it when its
/// row goes (the PostgreSQL backend).
pub(crate) trait MaterialCache: Send + Sync {
    /// Drops `id` from memory, or everything if `None`.
    fn evict(&self, id: Option<&MaterialId>);
}

struct Entry<T> {
    value: T,
    read_at: Instant,
}

/// What one instance caches, and the listener's state.
pub(crate) struct Shared {
    keys: RwLock<HashMap<KeyId, Entry<Arc<KeyMetadata>>>>,
    aliases: RwLock<HashMap<Alias, Entry<KeyId>>>,
    epoch: AtomicU64,
    listening: AtomicBool,
    stop: AtomicBool,
    max_staleness: Duration,
    materials: Mutex<Vec<Weak<dyn MaterialCache>>>,
    /// Reconnections of the listener (each flushed the cache).
    reconnects: AtomicU64,
    /// The highest revision read of each key (`k:`) and alias (`a:`), and
    /// when that read ended: a later read that started after it and finds
    /// an older revision found a row put back (rolled back) by someone.
    seen: Mutex<HashMap<String, (i64, Instant)>>,
}

/// A read in progress: the epoch and time it started.
pub(crate) struct Ticket {
    epoch: u64,
    pub(crate) at: Instant,
}

fn fresh<K: Eq + Hash, V: Clone>(
    map: &RwLock<HashMap<K, Entry<V>>>,
    k: &K,
    bound: Duration,
) -> Option<V> {
    let m = map.read().unwrap_or_else(|e| e.into_inner());
    m.get(k)
        .filter(|e| e.read_at.elapsed() < bound)
        .map(|e| e.value.clone())
}

impl Shared {
    pub(crate) fn new(max_staleness: Duration) -> Arc<Shared> {
        Arc::new(Shared {
            keys: RwLock::new(HashMap::new()),
            aliases: RwLock::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            listening: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            max_staleness,
            materials: Mutex::new(Vec::new()),
            reconnects: AtomicU64::new(0),
            seen: Mutex::new(HashMap::new()),
        })
    }

    /// True while notifications arrive (the cache may serve).
    pub(crate) fn listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    /// The configured bound.
    pub(crate) fn max_staleness(&self) -> Duration {
        self.max_staleness
    }

    /// How many times the listener connected again after losing its
    /// connection.
    pub(crate) fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    pub(crate) fn register(&self, m: Weak<dyn MaterialCache>) {
        self.materials
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(m);
    }

    /// A cached key no older than the bound, if the cache may serve.
    pub(crate) fn key(&self, id: &KeyId) -> Option<Arc<KeyMetadata>> {
        if !self.listening() {
            return None;
        }
        fresh(&self.keys, id, self.max_staleness)
    }

    /// A cached alias no older than the bound, if the cache may serve.
    pub(crate) fn alias(&self, a: &Alias) -> Option<KeyId> {
        if !self.listening() {
            return None;
        }
        fresh(&self.aliases, a, self.max_staleness)
    }

    /// Records that a read started at `started` found revision `rev` of
    /// `name` (`k:<key>` or `a:<alias>`); refuses a revision older than one
    /// a read that ended before `started` found. Revisions come from one
    /// sequence, so they never go back legitimately (even for a key
    /// deleted and created again). A read that overlapped the one that saw
    /// the newer revision is never refused (it may rightly see the older).
    pub(crate) fn witness(&self, name: String, rev: i64, started: Instant) -> crate::Result<()> {
        let mut m = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        match m.get(&name) {
            Some(&(r, at)) if r > rev && at < started => {
                return Err(crate::Error::CorruptStore {
                    file: format!("postgres:{name}"),
                    reason: format!(
                        "revision {rev} is older than revision {r} this instance read before: \
                         the row was rolled back outside strongroom (or the database restored \
                         from a backup while this instance ran; restart it then)"
                    ),
                });
            }
            Some(&(r, _)) if r >= rev => {}
            _ => {
                m.insert(name, (rev, Instant::now()));
            }
        }
        Ok(())
    }

    /// Call before reading from the database.
    pub(crate) fn ticket(&self) -> Ticket {
        Ticket {
            epoch: self.epoch.load(Ordering::Acquire),
            at: Instant::now(),
        }
    }

    /// True if nothing was invalidated since `t` and the listener is up.
    pub(crate) fn unchanged(&self, t: &Ticket) -> bool {
        self.listening() && self.epoch.load(Ordering::Acquire) == t.epoch
    }

    /// Caches a key read under `t`, unless something was invalidated since.
    pub(crate) fn put_key(&self, t: &Ticket, meta: Arc<KeyMetadata>) {
        let mut m = self.keys.write().unwrap_or_else(|e| e.into_inner());
        // Checked under the write lock: an invalidation takes the same lock.
        if self.unchanged(t) {
            m.insert(
                meta.key_id.clone(),
                Entry {
                    value: meta,
                    read_at: t.at,
                },
            );
        }
    }

    /// Caches an alias read under `t`, unless something was invalidated since.
    pub(crate) fn put_alias(&self, t: &Ticket, a: Alias, key: KeyId) {
        let mut m = self.aliases.write().unwrap_or_else(|e| e.into_inner());
        if self.unchanged(t) {
            m.insert(
                a,
                Entry {
                    value: key,
                    read_at: t.at,
                },
            );
        }
    }

    /// Drops what a notification payload names (`k:<id>`, `a:<alias>`,
    /// `m:<id>:<version>`, or `*` for everything).
    pub(crate) fn invalidate(&self, payload: &str) {
        if let Some(id) = payload.strip_prefix("k:") {
            let mut m = self.keys.write().unwrap_or_else(|e| e.into_inner());
            self.epoch.fetch_add(1, Ordering::AcqRel);
            if let Ok(id) = KeyId::parse(id) {
                m.remove(&id);
            } else {
                m.clear();
            }
        } else if let Some(a) = payload.strip_prefix("a:") {
            let mut m = self.aliases.write().unwrap_or_else(|e| e.into_inner());
            self.epoch.fetch_add(1, Ordering::AcqRel);
            if let Ok(a) = Alias::parse(a) {
                m.remove(&a);
            } else {
                m.clear();
            }
        } else if let Some(mid) = payload.strip_prefix("m:") {
            let id = mid
                .rsplit_once(':')
                .and_then(|(k, v)| Some(MaterialId::new(KeyId::parse(k).ok()?, v.parse().ok()?)));
            self.epoch.fetch_add(1, Ordering::AcqRel);
            self.evict_material(id.as_ref());
        } else {
            self.flush();
        }
    }

    /// Drops every cached alias.
    pub(crate) fn forget_aliases(&self) {
        let mut a = self.aliases.write().unwrap_or_else(|e| e.into_inner());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        a.clear();
    }

    /// Drops everything, material included.
    pub(crate) fn flush(&self) {
        let mut k = self.keys.write().unwrap_or_else(|e| e.into_inner());
        let mut a = self.aliases.write().unwrap_or_else(|e| e.into_inner());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        k.clear();
        a.clear();
        drop((k, a));
        self.evict_material(None);
    }

    fn evict_material(&self, id: Option<&MaterialId>) {
        let mut list = self.materials.lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|w| w.strong_count() > 0);
        for m in list.iter().filter_map(Weak::upgrade) {
            m.evict(id);
        }
    }

    /// Asks the listener thread to end (it does within its poll interval).
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// The payload naming a key, an alias or a material row.
pub(crate) fn payload_key(id: &KeyId) -> String {
    bounded(format!("k:{id}"))
}

pub(crate) fn payload_alias(a: &Alias) -> String {
    bounded(format!("a:{a}"))
}

pub(crate) fn payload_material(id: &MaterialId) -> String {
    bounded(format!("m:{}:{}", id.key_id, id.version))
}

fn bounded(p: String) -> String {
    if p.len() > MAX_PAYLOAD { "*".into() } else { p }
}

/// How often the listener wakes to check `stop` and the connection.
const POLL: Duration = Duration::from_millis(100);

/// Starts the listener thread: LISTEN on its own connection; on every
/// notification, invalidate; on a lost connection, stop serving from the
/// cache, reconnect (backing off up to 1 s), flush, and serve again.
pub(crate) fn spawn_listener(conn: Arc<Conn>, shared: Arc<Shared>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("strongroom-pg-listen".into())
        .spawn(move || listen(&conn, &shared))
        .map(drop)
}

fn listen(conn: &Conn, shared: &Shared) {
    let mut pause = Duration::from_millis(20);
    let mut first = true;
    while !shared.stop.load(Ordering::Acquire) {
        let mut client = match conn.connect() {
            Ok(c) => c,
            Err(_) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        if client.batch_execute(&format!("LISTEN {CHANNEL}")).is_err() {
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(1));
            continue;
        }
        pause = Duration::from_millis(20);
        // Whatever changed while nobody listened is unknown: start empty.
        shared.flush();
        if !first {
            shared.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        first = false;
        shared.listening.store(true, Ordering::Release);
        let mut idle = Duration::ZERO;
        loop {
            if shared.stop.load(Ordering::Acquire) {
                return;
            }
            let mut n = client.notifications();
            let next = {
                use postgres::fallible_iterator::FallibleIterator;
                n.timeout_iter(POLL).next()
            };
            match next {
                Ok(Some(note)) => {
                    idle = Duration::ZERO;
                    shared.invalidate(note.payload());
                }
                Ok(None) => {
                    drop(n);
                    idle += POLL;
                    // A silent connection may be a dead one: check it at
                    // least every second (a closed socket shows at once).
                    if client.is_closed()
                        || (idle >= Duration::from_secs(1)
                            && client.is_valid(Duration::from_secs(1)).is_err())
                    {
                        break;
                    }
                    if idle >= Duration::from_secs(1) {
                        idle = Duration::ZERO;
                    }
                }
                Err(_) => break,
            }
        }
        shared.listening.store(false, Ordering::Release);
        shared.flush();
    }
}
