//! Connection settings (from a URL), a small connection pool, TLS, and the
//! mapping of database failures onto the crate's error kinds.
//!
//! The URL's password lives only inside `postgres::Config` (whose `Debug`
//! prints `_` for it); no error or `Debug` of ours ever prints the URL.

use crate::error::{Error, Result};
use postgres::error::SqlState;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
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

/// Idle connections, reused; a connection that failed is never put back,
/// and a connection-level failure empties the pool (after a server restart
/// every idle connection is dead).
pub(crate) struct Pool {
    pub(crate) conn: Conn,
    idle: Mutex<Vec<postgres::Client>>,
    max_idle: usize,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("target", &self.conn.describe())
            .finish_non_exhaustive()
    }
}

impl Pool {
    pub(crate) fn new(conn: Conn, max_idle: usize) -> Pool {
        Pool {
            conn,
            idle: Mutex::new(Vec::new()),
            max_idle,
        }
    }

    /// An idle connection, or a new one.
    pub(crate) fn get(&self) -> Result<postgres::Client> {
        let reused = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match reused {
            Some(c) if !c.is_closed() => Ok(c),
            _ => self.conn.connect(),
        }
    }

    /// Returns a connection after a successful call.
    pub(crate) fn put(&self, c: postgres::Client) {
        if c.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push(c);
        }
    }

    /// Drops every idle connection (after a connection-level failure).
    pub(crate) fn flush(&self) {
        let old = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|e| e.into_inner()));
        drop(old);
    }
}
