//! The configuration of the Transit backend.

use crate::backend::RetryPolicy;
use crate::secret::SecretBytes;
use std::fmt;

/// How to reach Transit.
pub struct VaultConfig {
    /// The server, `https://vault.example.com:8200` (no path).
    pub address: String,
    /// The token. Redacted in `Debug`, zeroized on drop.
    pub token: SecretBytes,
    /// Where the Transit engine is mounted (default `transit`).
    pub mount: String,
    /// The Vault Enterprise / OpenBao namespace, if any.
    pub namespace: Option<String>,
    /// Prepended to every Transit key name, to share a mount between rings
    /// (default `strongroom-`).
    pub key_prefix: String,
    /// Timeouts and retries.
    pub retry: RetryPolicy,
}

impl VaultConfig {
    /// A configuration for the server at `address` with `token`, the mount
    /// `transit` and the key prefix `strongroom-`.
    pub fn new(address: impl Into<String>, token: SecretBytes) -> Self {
        VaultConfig {
            address: address.into(),
            token,
            mount: "transit".into(),
            namespace: None,
            key_prefix: "strongroom-".into(),
            retry: RetryPolicy::default(),
        }
    }

    /// Sets the mount path of the Transit engine.
    pub fn mount(mut self, mount: impl Into<String>) -> Self {
        self.mount = mount.into();
        self
    }

    /// Sets the namespace (`X-Vault-Namespace`).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Sets the key-name prefix.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Sets the retry policy.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
}

impl fmt::Debug for VaultConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultConfig")
            .field("address", &self.address)
            .field("token", &"<redacted>")
            .field("mount", &self.mount)
            .field("namespace", &self.namespace)
            .field("key_prefix", &self.key_prefix)
            .field("retry", &self.retry)
            .finish()
    }
}
