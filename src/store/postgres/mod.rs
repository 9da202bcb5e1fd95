//! The PostgreSQL fleet store (feature `postgres`): many instances, one
//! database.
//!
//! [`PostgresStore`] keeps key metadata, aliases, policies and grants
//! (grants as rows: one grant is written without rewriting the others).
//! [`crate::backend::PostgresBackend`] keeps the software backend's key
//! material in the same database, each version sealed under the ring's root
//! key (docs/FORMAT.md, "PostgreSQL material rows"); with a PKCS#11 or
//! remote backend only metadata goes to the database.
//!
//! - **Integrity**: every key, grant and alias row carries a MAC under a key
//!   derived from the root key, verified on every read (`auth.rs`,
//!   docs/FORMAT.md "PostgreSQL metadata MACs"); what a database writer can
//!   still do (delete rows, put back an older complete state) is said
//!   there.
//! - **Schema**: created and upgraded by the crate (numbered migrations in
//!   `strongroom_migrations`); a newer schema is refused
//!   ([`crate::Error::Configuration`]).
//! - **Concurrency**: every read-modify-write locks the key's row
//!   (`SELECT ... FOR UPDATE`) for the length of one transaction, so two
//!   instances rotating at once get consecutive versions and exactly one
//!   of them makes each version. A transaction that fails before its commit
//!   (a lost connection, a serialization failure) is retried a bounded
//!   number of times on a fresh connection: **an update closure may run
//!   more than once** ([`MetadataStore::update_key`]).
//! - **Freshness**: reads are cached per instance; every change sends a
//!   `NOTIFY` in its transaction and every instance's listener drops what
//!   changed; a reconnect of the listener flushes the cache; no entry older
//!   than [`PostgresOptions::max_staleness`] is ever served, so decisions
//!   (authorization, key state) never act on an older record. See `cache.rs`.
//! - **Failure**: a lost connection is [`crate::Error::Unavailable`]
//!   (retryable); the next call connects again by itself. A commit whose
//!   answer was lost is reported as `Unavailable` too (the change may or may
//!   not have happened; it is never reported as done when it was not).

mod auth;
mod cache;
mod conn;
mod material;
mod ops;
mod records;
mod rows;
mod schema;

pub use material::PostgresBackend;
pub use schema::SCHEMA_VERSION;

use crate::error::{Error, Result};
use crate::random::OsRandom;
use crate::store::MetadataStore;
use crate::store::RootKey;
use auth::Keys;
use cache::Shared;
use conn::{Conn, Pool, pg_err, transient};
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Settings of a [`PostgresStore`]. The connection itself comes from a URL.
#[derive(Clone)]
#[non_exhaustive]
pub struct PostgresOptions {
    /// The oldest a cached record may be when it is used (default 2 s).
    /// Zero turns the cache off: every read goes to the database.
    pub max_staleness: Duration,
    /// How long a connection attempt may take (default 5 s).
    pub connect_timeout: Duration,
    /// Attempts of one call that failed before its commit with a retryable
    /// error (default 3).
    pub attempts: u32,
    /// Idle connections kept for reuse (default 8; at most
    /// [`PostgresOptions::max_connections`]).
    pub pool_size: usize,
    /// The most connections this instance (one ring: its store and
    /// backend) opens at once, idle or in use (default 16), besides its
    /// listener's one connection. A call that finds them all busy waits up
    /// to [`PostgresOptions::connection_wait`] for one, then fails with
    /// [`crate::Error::Unavailable`] (retryable). Size the server's
    /// `max_connections` for (this + 1) × instances.
    pub max_connections: usize,
    /// How long a call waits for a free connection when
    /// [`PostgresOptions::max_connections`] are busy (default 2 s).
    pub connection_wait: Duration,
    /// A PEM root certificate trusted for the server's TLS certificate,
    /// beside the system's (feature `postgres-tls`; without it, setting
    /// one is a configuration error).
    pub tls_root_certificate: Option<Vec<u8>>,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            max_staleness: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(5),
            attempts: 3,
            pool_size: 8,
            max_connections: 16,
            connection_wait: Duration::from_secs(2),
            tls_root_certificate: None,
        }
    }
}

impl fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("max_staleness", &self.max_staleness)
            .field("connect_timeout", &self.connect_timeout)
            .field("attempts", &self.attempts)
            .field("pool_size", &self.pool_size)
            .field("max_connections", &self.max_connections)
            .field("connection_wait", &self.connection_wait)
            .field("tls_root_certificate", &self.tls_root_certificate.is_some())
            .finish()
    }
}

impl PostgresOptions {
    /// The default settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`PostgresOptions::max_staleness`].
    pub fn max_staleness(mut self, d: Duration) -> Self {
        self.max_staleness = d;
        self
    }

    /// Sets [`PostgresOptions::connect_timeout`].
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Sets [`PostgresOptions::attempts`] (at least 1).
    pub fn attempts(mut self, n: u32) -> Self {
        self.attempts = n.max(1);
        self
    }

    /// Sets [`PostgresOptions::pool_size`].
    pub fn pool_size(mut self, n: usize) -> Self {
        self.pool_size = n;
        self
    }

    /// Sets [`PostgresOptions::max_connections`] (at least 1).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Sets [`PostgresOptions::connection_wait`].
    pub fn connection_wait(mut self, d: Duration) -> Self {
        self.connection_wait = d;
        self
    }

    /// Sets [`PostgresOptions::tls_root_certificate`] (PEM).
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_root_certificate = Some(pem.into());
        self
    }
}

/// What the store and the backend of one instance share: connections,
/// the cache, and the keys derived from the root key.
pub(crate) struct Core {
    pool: Pool,
    shared: Arc<Shared>,
    attempts: u32,
    keys: RwLock<Arc<Keys>>,
}

impl Drop for Core {
    fn drop(&mut self) {
        self.shared.stop();
    }
}

impl Core {
    /// The current keys (replaced by a root-key rotation).
    pub(crate) fn keys(&self) -> Arc<Keys> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// After a row did not verify (`e`, [`Error::CorruptStore`]): if the
    /// store's root-key check is no longer the one this instance opened,
    /// the root key was rotated by another instance, and the answer is
    /// [`Error::WrongRootKey`] (reopen with the new key). Call outside
    /// [`Core::run`].
    pub(crate) fn explain(&self, e: Error) -> Error {
        if !matches!(e, Error::CorruptStore { .. }) {
            return e;
        }
        let keys = self.keys();
        let check = self.run(|c| {
            c.query_opt(
                "SELECT check_record FROM strongroom_store WHERE id = 1",
                &[],
            )
            .map_err(pre("store identity"))
        });
        match check {
            Ok(Some(r)) if r.get::<_, &[u8]>(0) != keys.check.as_slice() => Error::WrongRootKey,
            _ => e,
        }
    }

    /// Runs `body` on a pooled connection; a retryable failure is tried
    /// again (up to `attempts` in all) on a fresh connection. `body` must
    /// leave nothing half-done when it fails: it is one statement or one
    /// transaction that commits last.
    pub(crate) fn run<T>(
        &self,
        mut body: impl FnMut(&mut postgres::Client) -> Attempt<T>,
    ) -> Result<T> {
        let mut last = None;
        for attempt in 0..self.attempts {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(25 << attempt.min(4)));
            }
            let mut client = match self.pool.get() {
                Ok(c) => c,
                Err((e, busy)) if !busy && transient(&e) => {
                    last = Some(e);
                    continue;
                }
                Err((e, _)) => return Err(e),
            };
            match body(&mut client) {
                Ok(v) => {
                    self.pool.put(client);
                    return Ok(v);
                }
                Err(e) => {
                    let closed = client.is_closed();
                    self.pool.put(client);
                    if closed {
                        self.pool.flush();
                    }
                    match e {
                        Retry::Again(e) => last = Some(e),
                        Retry::Stop(e) => return Err(e),
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::Unavailable("PostgreSQL: no attempt made".into())))
    }
}

/// How a failed attempt ends: try again (it changed nothing) or stop.
pub(crate) enum Retry {
    Again(Error),
    Stop(Error),
}

impl From<Error> for Retry {
    /// Retryable failures of the database before a commit are tried again;
    /// everything else (including the closure's own errors) stops.
    fn from(e: Error) -> Retry {
        if transient(&e) {
            Retry::Again(e)
        } else {
            Retry::Stop(e)
        }
    }
}

/// `Result` of one attempt.
pub(crate) type Attempt<T> = std::result::Result<T, Retry>;

/// A database failure before the commit: retryable if transient.
pub(crate) fn pre(what: &'static str) -> impl Fn(postgres::Error) -> Retry {
    move |e| Retry::from(pg_err(what, &e))
}

/// A failure of the commit itself: the outcome is unknown, never retried.
pub(crate) fn at_commit(e: postgres::Error) -> Retry {
    let err = pg_err("commit", &e);
    Retry::Stop(match err {
        Error::Unavailable(m) => Error::Unavailable(format!(
            "{m}; the change may or may not have been made: read it back before retrying"
        )),
        other => other,
    })
}

/// Key metadata, aliases, policies and grants in PostgreSQL, shared by a
/// fleet of instances (see the [module docs](self)).
///
/// `Debug` shows the user, host, port and database, never the password.
pub struct PostgresStore {
    pub(crate) core: Arc<Core>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.core.pool.conn.describe())
            .field("max_staleness", &self.core.shared.max_staleness())
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the database at `url`
    /// (`postgres://user:password@host:port/db`, `?sslmode=require` for TLS
    /// with the `postgres-tls` feature), creates or upgrades the schema,
    /// checks `root` against the store (the first instance to open a
    /// database sets its store id and root-key check; passphrases go
    /// through Argon2id with the default parameters), and starts this
    /// instance's listener. Every key, grant and alias row is authenticated
    /// under a key derived from `root` (the rows of an older schema are
    /// authenticated here, once, by the upgrade).
    ///
    /// Fails with [`crate::Error::Unavailable`] if the server cannot be
    /// reached, [`crate::Error::WrongRootKey`] if `root` does not open the
    /// store (nothing changes), and [`crate::Error::Configuration`] for a
    /// bad URL, bad credentials or a schema newer than this crate knows.
    /// No error repeats the URL.
    pub fn connect(url: &str, root: &RootKey, options: PostgresOptions) -> Result<PostgresStore> {
        let conn = Conn::from_url(
            url,
            options.connect_timeout,
            options.tls_root_certificate.as_deref(),
        )?;
        let pool = Pool::new(
            conn,
            options.pool_size,
            options.max_connections,
            options.connection_wait,
        );
        let keys = {
            let mut client = pool.get().map_err(|(e, _)| e)?;
            let mut tx = client.transaction().map_err(|e| pg_err("migrate", &e))?;
            let before = schema::migrate(&mut tx)?;
            let keys = auth::identify(&mut tx, root, &OsRandom, before)?;
            tx.commit().map_err(|e| pg_err("migrate", &e))?;
            pool.put(client);
            keys
        };
        // The listener's connection is named `strongroom-listener` (unless
        // the URL names its connections), so operators can tell it apart.
        let listen_conn = Arc::new(
            Conn::from_url(
                url,
                options.connect_timeout,
                options.tls_root_certificate.as_deref(),
            )?
            .named("strongroom-listener"),
        );
        let shared = Shared::new(options.max_staleness);
        cache::spawn_listener(listen_conn, shared.clone())
            .map_err(|e| Error::Other(Arc::new(e)))?;
        Ok(PostgresStore {
            core: Arc::new(Core {
                pool,
                shared,
                attempts: options.attempts.max(1),
                keys: RwLock::new(Arc::new(keys)),
            }),
        })
    }

    /// Replaces the root key of the whole database with `new`, in one
    /// transaction: every material row is opened under the current root key
    /// and sealed under the new one, every key, grant and alias row is
    /// verified and MAC'd under the new one, and the KDF and root-key check
    /// are replaced. Either all of it happens or none. This instance goes on
    /// with the new key; every other instance of the fleet must be reopened
    /// with it: until then its writes are refused
    /// ([`crate::Error::WrongRootKey`]) and its reads of rows it has not
    /// cached fail as not authentic. The old root key opens nothing
    /// afterwards (backups taken before still need it: keep it as long as
    /// them).
    ///
    /// A row that does not verify under the current key stops the rotation
    /// ([`crate::Error::CorruptStore`]) and nothing changes.
    pub fn rotate_root_key(&self, new: &RootKey) -> Result<()> {
        let old = self.core.keys();
        let mut client = self.core.pool.get().map_err(|(e, _)| e)?;
        let mut tx = client
            .transaction()
            .map_err(|e| pg_err("rotate root key", &e))?;
        let keys = auth::rotate(&mut tx, &old, new, &OsRandom)?;
        tx.commit().map_err(|e| match at_commit(e) {
            Retry::Again(e) | Retry::Stop(e) => e,
        })?;
        self.core.pool.put(client);
        *self.core.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        self.core.shared.flush();
        Ok(())
    }

    /// True while this instance receives change notifications (its cache
    /// may serve reads); false while its listener reconnects.
    pub fn is_listening(&self) -> bool {
        self.core.shared.listening()
    }

    /// How many times this instance's listener lost its connection and
    /// connected again (each time, the whole cache was flushed).
    pub fn listener_reconnects(&self) -> u64 {
        self.core.shared.reconnects()
    }

    /// Waits up to `timeout` for the listener to be connected; true if it is.
    pub fn wait_listening(&self, timeout: Duration) -> bool {
        let start = std::time::Instant::now();
        while !self.is_listening() {
            if start.elapsed() >= timeout {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// As a `MetadataStore` trait object.
    pub fn into_dyn(self) -> Arc<dyn MetadataStore> {
        Arc::new(self)
    }
}
