//! Connection settings (from a URL), a small connection pool, TLS, and the
//! mapping of database failures onto the crate's error kinds.
//!
//! The URL's password lives only inside `postgres::Config` (whose `Debug`
//! prints `_` for it); no error or `Debug` of ours ever prints the URL.

use crate::error::{Error, Result};
use postgres::error::SqlState;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How a connection is made: the parsed URL and the TLS connector.
pub(crate) struct Conn {
    config: postgres::Config,
    #[cfg(feature = "postgres-tls")]
    tls: Option<postgres_native_tls::MakeTlsConnector>,
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("target", &self.describe())
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// Parses `url` (`postgres://user:password@host:port/db?sslmode=...`, or
    /// the key=value form). A malformed URL is a configuration error that
    /// does not repeat the URL (it may hold the password).
    pub(crate) fn from_url(
        url: &str,
        connect_timeout: Duration,
        _tls_root_pem: Option<&[u8]>,
    ) -> Result<Conn> {
        let mut config = postgres::Config::from_str(url).map_err(|_| {
            Error::Configuration(
                "the PostgreSQL URL is not a valid connection string (the URL is not shown: \
                 it may contain a password)"
                    .into(),
            )
        })?;
        config.connect_timeout(connect_timeout);
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        if config.get_application_name().is_none() {
            config.application_name("strongroom");
        }
        let wants_tls = config.get_ssl_mode() != postgres::config::SslMode::Disable;
        #[cfg(feature = "postgres-tls")]
        {
            let tls = if wants_tls {
                let mut b = native_tls::TlsConnector::builder();
                if let Some(pem) = _tls_root_pem {
                    let cert = native_tls::Certificate::from_pem(pem).map_err(|_| {
                        Error::Configuration(
                            "the PostgreSQL TLS root certificate is not valid PEM".into(),
                        )
                    })?;
                    b.add_root_certificate(cert);
                }
                let c = b.build().map_err(|e| {
                    Error::Configuration(format!("cannot set up TLS for PostgreSQL: {e}"))
                })?;
                Some(postgres_native_tls::MakeTlsConnector::new(c))
            } else {
                None
            };
            Ok(Conn { config, tls })
        }
        #[cfg(not(feature = "postgres-tls"))]
        {
            if _tls_root_pem.is_some() {
                return Err(Error::Configuration(
                    "a TLS root certificate was given but strongroom was built without the \
                     `postgres-tls` feature"
                        .into(),
                ));
            }
            if wants_tls && config.get_ssl_mode() == postgres::config::SslMode::Require {
                return Err(Error::Configuration(
                    "the PostgreSQL URL requires TLS (sslmode=require) but strongroom was built \
                     without the `postgres-tls` feature"
                        .into(),
                ));
            }
            Ok(Conn { config })
        }
    }

    /// Names the connections made with these settings (`application_name`)
    /// unless the URL named them.
    pub(crate) fn named(mut self, name: &str) -> Conn {
        if self.config.get_application_name() == Some("strongroom") {
            self.config.application_name(name);
        }
        self
    }

    /// `user@host:port/db`, without the password, for `Debug`.
    pub(crate) fn describe(&self) -> String {
        let host = self
            .config
            .get_hosts()
            .first()
            .map(|h| match h {
                postgres::config::Host::Tcp(s) => s.clone(),
                postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .unwrap_or_default();
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!(
            "{}@{host}:{port}/{}",
            self.config.get_user().unwrap_or(""),
            self.config.get_dbname().unwrap_or("")
        )
    }

    /// A new connection.
    pub(crate) fn connect(&self) -> Result<postgres::Client> {
        #[cfg(feature = "postgres-tls")]
        if let Some(tls) = &self.tls {
            return self
                .config
                .connect(tls.clone())
                .map_err(|e| pg_err("connect", &e));
        }
        self.config
            .connect(postgres::NoTls)
            .map_err(|e| pg_err("connect", &e))
    }
}

/// Maps a database failure onto the crate's errors: a lost or refused
/// connection, a server shutting down or out of resources is
/// [`Error::Unavailable`]; a serialization failure or deadlock is
/// [`Error::Conflict`] (both retryable, [`Error::is_retryable`]); bad
/// credentials are [`Error::Configuration`]. Messages carry the server's
/// message and SQLSTATE, never the URL, the password or a row's values.
pub(crate) fn pg_err(what: &str, e: &postgres::Error) -> Error {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        let msg = format!(
            "PostgreSQL {what}: {} (SQLSTATE {})",
            db.message(),
            code.code()
        );
        let class = &code.code()[..2];
        return if *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED
        {
            Error::Conflict(msg)
        } else if matches!(class, "08" | "57" | "53" | "58") {
            Error::Unavailable(msg)
        } else if class == "28" {
            Error::Configuration(msg)
        } else {
            Error::Other(Arc::new(std::io::Error::other(msg)))
        };
    }
    let text = e.to_string();
    let cause = std::error::Error::source(e)
        .map(|s| format!(": {s}"))
        .unwrap_or_default();
    let msg = format!("PostgreSQL {what}: {text}{cause}");
    if e.is_closed()
        || [
            "error communicating",
            "connection closed",
            "error connecting",
            "timeout",
            "TLS",
            "unexpected message",
        ]
        .iter()
        .any(|p| text.contains(p))
    {
        Error::Unavailable(msg)
    } else if text.contains("authentication") {
        Error::Configuration(msg)
    } else {
        Error::Other(Arc::new(std::io::Error::other(msg)))
    }
}

/// True for the failures after which a fresh connection may succeed.
pub(crate) fn transient(e: &Error) -> bool {
    matches!(e, Error::Unavailable(_) | Error::Conflict(_))
}

/// The connections of one instance: at most `max` open at once (idle or
/// in use; the listener's own connection is not counted), idle ones
/// reused. A caller finding all `max` in use waits up to `wait` for one,
/// then gets [`Error::Unavailable`] (retryable). A connection that failed
/// is never put back, and a connection-level failure empties the pool
/// (after a server restart every idle connection is dead).
pub(crate) struct Pool {
    pub(crate) conn: Conn,
    state: Mutex<PoolState>,
    freed: Condvar,
    max_idle: usize,
    max: usize,
    wait: Duration,
}

struct PoolState {
    idle: Vec<postgres::Client>,
    /// Connections open: idle plus leased.
    open: usize,
}

/// A connection leased from the pool; its slot is given back when it is
/// returned ([`Pool::put`]) or dropped.
pub(crate) struct Lease<'a> {
    pool: &'a Pool,
    client: Option<postgres::Client>,
}

impl std::ops::Deref for Lease<'_> {
    type Target = postgres::Client;
    fn deref(&self) -> &postgres::Client {
        self.client
            .as_ref()
            .expect("a lease holds its client until returned")
    }
}

impl std::ops::DerefMut for Lease<'_> {
    fn deref_mut(&mut self) -> &mut postgres::Client {
        self.client
            .as_mut()
            .expect("a lease holds its client until returned")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            drop(c);
            self.pool.release(1);
        }
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("target", &self.conn.describe())
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl Pool {
    pub(crate) fn new(conn: Conn, max_idle: usize, max: usize, wait: Duration) -> Pool {
        let max = max.max(1);
        Pool {
            conn,
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
            max_idle: max_idle.min(max),
            max,
            wait,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn release(&self, n: usize) {
        let mut s = self.lock();
        s.open = s.open.saturating_sub(n);
        drop(s);
        self.freed.notify_all();
    }

    /// An idle connection, or a new one if fewer than the maximum are
    /// open; otherwise waits (bounded) for one to be returned.
    /// `Err((e, true))`: every slot stayed busy (not worth retrying at
    /// once); `Err((e, false))`: connecting failed.
    pub(crate) fn get(&self) -> std::result::Result<Lease<'_>, (Error, bool)> {
        let deadline = std::time::Instant::now() + self.wait;
        let mut s = self.lock();
        loop {
            while let Some(c) = s.idle.pop() {
                if c.is_closed() {
                    s.open = s.open.saturating_sub(1);
                    continue;
                }
                return Ok(Lease {
                    pool: self,
                    client: Some(c),
                });
            }
            if s.open < self.max {
                s.open += 1;
                drop(s);
                return match self.conn.connect() {
                    Ok(c) => Ok(Lease {
                        pool: self,
                        client: Some(c),
                    }),
                    Err(e) => {
                        self.release(1);
                        Err((e, false))
                    }
                };
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Err((
                    Error::Unavailable(format!(
                        "PostgreSQL: all {} connections of this instance stayed busy for {:?} \
                         (PostgresOptions::max_connections); retry later",
                        self.max, self.wait
                    )),
                    true,
                ));
            }
            s = self
                .freed
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Returns a connection after a call (a closed one is dropped).
    pub(crate) fn put(&self, mut lease: Lease<'_>) {
        let Some(c) = lease.client.take() else { return };
        let mut s = self.lock();
        if !c.is_closed() && s.idle.len() < self.max_idle {
            s.idle.push(c);
            drop(s);
        } else {
            s.open = s.open.saturating_sub(1);
            drop(s);
            drop(c);
        }
        self.freed.notify_all();
    }

    /// Drops every idle connection (after a connection-level failure).
    pub(crate) fn flush(&self) {
        let mut s = self.lock();
        let old = std::mem::take(&mut s.idle);
        s.open = s.open.saturating_sub(old.len());
        drop(s);
        drop(old);
        self.freed.notify_all();
    }
}
