//! The configuration of the AWS KMS backend.

use crate::backend::RetryPolicy;
use crate::clock::{Clock, SystemClock};
use crate::interop::sigv4::Credentials;
use std::fmt;
use std::sync::Arc;

/// How to reach KMS.
#[derive(Clone)]
pub struct AwsKmsConfig {
    /// The endpoint, `https://kms.<region>.amazonaws.com` by default; any
    /// KMS-compatible service's `http(s)://host[:port]`.
    pub endpoint: String,
    /// The region requests are signed for.
    pub region: String,
    /// The access key (secret redacted in `Debug`, zeroized on drop).
    pub credentials: Credentials,
    /// Prepended to every alias name after `alias/` (default `strongroom/`).
    pub alias_prefix: String,
    /// An existing symmetric key (id, ARN or alias) that wraps for every
    /// symmetric version instead of one new key per version.
    pub adopt_key: Option<String>,
    /// Deletion window of destroyed versions' keys, 7 to 30 days (default 7).
    pub pending_window_days: u32,
    /// Timeouts and retries.
    pub retry: RetryPolicy,
    /// The clock requests are signed with (default: the system clock).
    pub clock: Arc<dyn Clock>,
}

impl AwsKmsConfig {
    /// A configuration for AWS KMS in `region`.
    pub fn new(region: impl Into<String>, credentials: Credentials) -> Self {
        let region = region.into();
        AwsKmsConfig {
            endpoint: format!("https://kms.{region}.amazonaws.com"),
            region,
            credentials,
            alias_prefix: "strongroom/".into(),
            adopt_key: None,
            pending_window_days: 7,
            retry: RetryPolicy::default(),
            clock: Arc::new(SystemClock),
        }
    }

    /// Sets the endpoint (a KMS-compatible service, a VPC endpoint).
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = endpoint.into();
        self
    }

    /// Sets the alias prefix.
    pub fn alias_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.alias_prefix = prefix.into();
        self
    }

    /// Wraps every symmetric version with this existing key.
    pub fn adopt_key(mut self, key: impl Into<String>) -> Self {
        self.adopt_key = Some(key.into());
        self
    }

    /// Sets the deletion window (days).
    pub fn pending_window_days(mut self, days: u32) -> Self {
        self.pending_window_days = days;
        self
    }

    /// Sets the retry policy.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets the signing clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

impl fmt::Debug for AwsKmsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsKmsConfig")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("credentials", &self.credentials)
            .field("alias_prefix", &self.alias_prefix)
            .field("adopt_key", &self.adopt_key)
            .field("pending_window_days", &self.pending_window_days)
            .finish_non_exhaustive()
    }
}
