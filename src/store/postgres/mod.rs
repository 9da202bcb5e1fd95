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

mod cache;
mod conn;
mod material;
mod ops;
mod rows;
mod schema;

pub use material::PostgresBackend;
pub use schema::SCHEMA_VERSION;

use crate::error::{Error, Result};
use crate::store::MetadataStore;
use cache::Shared;
use conn::{Conn, Pool, pg_err, transient};
use std::fmt;
use std::sync::Arc;
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
    /// Idle connections kept for reuse (default 8).
    pub pool_size: usize,
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

    /// Sets [`PostgresOptions::tls_root_certificate`] (PEM).
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_root_certificate = Some(pem.into());
        self
    }
}

/// What the store and the backend of one instance share: connections and
/// the cache.
pub(crate) struct Core {
    pool: Pool,
    shared: Arc<Shared>,
    attempts: u32,
}

impl Drop for Core {
    fn drop(&mut self) {
        self.shared.stop();
    }
}

impl Core {
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
                Err(e) if transient(&e) => {
                    last = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            match body(&mut client) {
                Ok(v) => {
                    self.pool.put(client);
                    return Ok(v);
                }
                Err(e) => {
                    if client.is_closed() {
                        self.pool.flush();
                    } else {
                        self.pool.put(client);
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
    /// with the `postgres-tls` feature), creates or upgrades the schema, and
    /// starts this instance's listener. Fails with
    /// [`crate::Error::Unavailable`] if the server cannot be reached, and
    /// [`crate::Error::Configuration`] for a bad URL, bad credentials or a
    /// schema newer than this crate knows. No error repeats the URL.
    pub fn connect(url: &str, options: PostgresOptions) -> Result<PostgresStore> {
        let conn = Conn::from_url(
            url,
            options.connect_timeout,
            options.tls_root_certificate.as_deref(),
        )?;
        let mut client = conn.connect()?;
        schema::migrate(&mut client)?;
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
        let pool = Pool::new(conn, options.pool_size);
        pool.put(client);
        let shared = Shared::new(options.max_staleness);
        cache::spawn_listener(listen_conn, shared.clone())
            .map_err(|e| Error::Other(Arc::new(e)))?;
        Ok(PostgresStore {
            core: Arc::new(Core {
                pool,
                shared,
                attempts: options.attempts.max(1),
            }),
        })
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
