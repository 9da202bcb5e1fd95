//! The remote custodians' transport (features `vault`, `aws-kms`): one
//! synchronous HTTP agent, a per-attempt timeout, and a bounded retry with
//! exponential backoff and jitter for what is worth retrying.
//!
//! A request is retried when it never got an answer (connection refused or
//! reset, timed out) or when the service's answer says "later" (the backend
//! decides: HTTP 429/5xx, a KMS `ThrottlingException`). After the last
//! attempt the failure is [`Error::Unavailable`], which callers may retry.
//! Nothing here ever sees a secret in clear text except the header values
//! the caller builds, which are marked sensitive; no error message carries
//! a header or a request body.

use crate::error::{Error, Result};
use crate::random::{OsRandom, random_array};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use ureq::http::{HeaderValue, Method, Request};
use zeroize::Zeroizing;

/// Largest response body a remote custodian may send (bytes). Transit and
/// KMS answers to the calls we make are a few KiB at most.
const MAX_RESPONSE: u64 = 1 << 20;

/// How a remote backend times out and retries one operation.
///
/// Defaults: 4 attempts, backoff from 100 ms doubling up to 2 s (each
/// wait drawn uniformly from its upper half), 10 s per attempt. The worst
/// case of one operation is about `max_attempts × attempt_timeout` plus the
/// backoffs.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Most attempts per operation, at least 1 (1 = never retry).
    pub max_attempts: u32,
    /// Wait before the first retry; doubled before each next one.
    pub initial_backoff: Duration,
    /// Longest single wait.
    pub max_backoff: Duration,
    /// Timeout of one attempt: connecting, sending and reading the answer.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            attempt_timeout: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The default policy (see the type's docs).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the number of attempts (at least 1).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// Sets the first and the longest backoff.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max;
        self
    }

    /// Sets the timeout of one attempt.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    fn check(&self) -> Result<()> {
        if self.max_attempts == 0 || self.max_attempts > 100 {
            return Err(Error::Configuration(
                "retry policy: max_attempts must be 1 to 100".into(),
            ));
        }
        if self.attempt_timeout.is_zero() || self.initial_backoff > self.max_backoff {
            return Err(Error::Configuration(
                "retry policy: attempt_timeout must be positive and initial_backoff <= max_backoff"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The wait before retry number `retry` (from 0): a uniform draw from
    /// the upper half of `min(initial × 2^retry, max)`.
    fn wait(&self, retry: u32) -> Duration {
        let full = self
            .initial_backoff
            .saturating_mul(1u32.checked_shl(retry).unwrap_or(u32::MAX))
            .min(self.max_backoff);
        let half = full / 2;
        let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let jitter = random_array::<8>(&OsRandom)
            .map(u64::from_le_bytes)
            .map_or(0, |r| if nanos == 0 { 0 } else { r % nanos });
        half + Duration::from_nanos(jitter)
    }
}

/// One answer of the service: its status and body.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub body: Zeroizing<Vec<u8>>,
}

/// One remote service: its agent, its retry policy and a count of the
/// requests sent (each attempt counts).
#[derive(Debug)]
pub(crate) struct Transport {
    agent: ureq::Agent,
    retry: RetryPolicy,
    service: &'static str,
    requests: AtomicU64,
}

/// A header value that must not show in debug output (tokens, signatures).
pub(crate) fn sensitive(value: &str) -> Result<HeaderValue> {
    let mut v = HeaderValue::from_str(value)
        .map_err(|_| Error::Configuration("a credential contains invalid characters".into()))?;
    v.set_sensitive(true);
    Ok(v)
}

/// A plain header value.
pub(crate) fn plain(value: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(value)
        .map_err(|_| Error::invalid(format!("invalid HTTP header value {value:?}")))
}

impl Transport {
    /// A transport for `service` (a name for error messages).
    pub fn new(service: &'static str, retry: RetryPolicy) -> Result<Self> {
        retry.check()?;
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(retry.attempt_timeout))
            .max_redirects(0)
            .user_agent(concat!("strongroom/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Transport {
            agent: config.into(),
            retry,
            service,
            requests: AtomicU64::new(0),
        })
    }

    /// Requests sent so far (every attempt counts).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Sends `method url` with the headers `headers()` builds (called again
    /// for every attempt, so a signature can carry a fresh date) and
    /// `body`. Answers that `later` calls transient (it returns a reason)
    /// are retried like transport failures. Returns the first other answer,
    /// whatever its status, or [`Error::Unavailable`] after the last attempt.
    pub fn send(
        &self,
        method: Method,
        url: &str,
        headers: &dyn Fn() -> Result<Vec<(&'static str, HeaderValue)>>,
        body: &[u8],
        later: &dyn Fn(&Reply) -> Option<String>,
    ) -> Result<Reply> {
        let mut last = String::new();
        for attempt in 0..self.retry.max_attempts {
            if attempt > 0 {
                std::thread::sleep(self.retry.wait(attempt - 1));
            }
            let mut req = Request::builder().method(method.clone()).uri(url);
            for (name, value) in headers()? {
                req = req.header(name, value);
            }
            let req = req
                .body(body)
                .map_err(|_| Error::Configuration(format!("invalid {} URL", self.service)))?;
            self.requests.fetch_add(1, Ordering::Relaxed);
            match self.agent.run(req) {
                Ok(mut resp) => {
                    let status = resp.status().as_u16();
                    let body = match resp
                        .body_mut()
                        .with_config()
                        .limit(MAX_RESPONSE)
                        .read_to_vec()
                    {
                        Ok(b) => b,
                        Err(e) => {
                            last = format!("reading the answer failed: {}", describe(&e));
                            continue;
                        }
                    };
                    let reply = Reply {
                        status,
                        body: Zeroizing::new(body),
                    };
                    match later(&reply) {
                        Some(reason) => last = reason,
                        None => return Ok(reply),
                    }
                }
                Err(e) => match e {
                    ureq::Error::BadUri(_)
                    | ureq::Error::Http(_)
                    | ureq::Error::InvalidProxyUrl => {
                        return Err(Error::Configuration(format!(
                            "invalid {} address: {}",
                            self.service,
                            describe(&e)
                        )));
                    }
                    e => last = describe(&e),
                },
            }
        }
        Err(Error::Unavailable(format!(
            "{} did not answer usably after {} attempt(s): {last}",
            self.service, self.retry.max_attempts
        )))
    }
}

/// A transport error, described without any request content.
fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(t) => format!("timed out ({t:?})"),
        ureq::Error::Io(io) => format!("I/O error ({:?})", io.kind()),
        ureq::Error::HostNotFound => "host not found".into(),
        ureq::Error::ConnectionFailed => "connection failed".into(),
        other => other.to_string(),
    }
}
