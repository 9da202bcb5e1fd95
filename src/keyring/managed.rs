//! Managed keys: a key the ring creates and runs for one component of the
//! application (a storage layer, a queue, a cache), the "AWS managed key"
//! of the KMS model.
//!
//! A service asks for *its* key by name with [`Client::managed_key`] and
//! gets the same key every time: created on first use under the reserved
//! alias `alias/strongroom/<service>`, AES-256-GCM, rotated automatically
//! every 365 days (rotation cannot be turned off), with a fixed key policy:
//!
//! - the service principal `service:<service>` may use the key (every
//!   cryptographic action) and manage grants on it (create, list, revoke,
//!   retire), so it can hand a narrower right to a helper;
//! - every principal may describe it and read its policy, tags and rotation
//!   status;
//! - nobody, not even a ring admin, may change its policy, disable or
//!   enable it, schedule its deletion, change its rotation, tags, version
//!   floors or aliases, or import material into it: an explicit `Deny`
//!   that no grant overrides.
//!
//! Concurrent first use (threads, or rings in several processes on one
//! store) creates exactly one key: the key and its alias are inserted in
//! one atomic step, and a caller that loses the race destroys the material
//! it generated and returns the winner's key.

use super::Client;
use crate::action::Action;
use crate::backend::MaterialId;
use crate::error::{Error, Result};
use crate::key::{Alias, KeyId, KeyManager, KeyRecord, KeySpec, KeyUsage, RotationSchedule};
use crate::policy::{KeyAccess, Policy};
use crate::principal::{Principal, PrincipalKind};
use crate::store::KeyMetadata;

/// Days between the automatic rotations of a managed key.
pub const MANAGED_ROTATION_PERIOD_DAYS: u32 = 365;

/// Actions the owning service may perform.
const OWNER_ACTIONS: &[Action] = &[
    Action::Encrypt,
    Action::Decrypt,
    Action::ReEncryptFrom,
    Action::ReEncryptTo,
    Action::GenerateDataKey,
    Action::GenerateDataKeyWithoutPlaintext,
    Action::CreateGrant,
    Action::ListGrants,
    Action::RevokeGrant,
    Action::RetireGrant,
    Action::GetKeyLastUsage,
];

/// Actions every principal may perform.
const PUBLIC_ACTIONS: &[Action] = &[
    Action::DescribeKey,
    Action::GetKeyPolicy,
    Action::GetKeyRotationStatus,
    Action::ListKeyRotations,
    Action::ListResourceTags,
];

/// Actions nobody may perform: the customer has no control.
const DENIED_ACTIONS: &[Action] = &[
    Action::PutKeyPolicy,
    Action::EnableKey,
    Action::DisableKey,
    Action::ScheduleKeyDeletion,
    Action::CancelKeyDeletion,
    Action::EnableKeyRotation,
    Action::DisableKeyRotation,
    Action::RotateKeyOnDemand,
    Action::UpdateKeyVersionFloors,
    Action::TagResource,
    Action::UntagResource,
    Action::CreateAlias,
    Action::UpdateAlias,
    Action::DeleteAlias,
    Action::GetParametersForImport,
    Action::ImportKeyMaterial,
];

/// The reserved alias of a service's managed key.
pub fn managed_alias(service: &str) -> Result<Alias> {
    Alias::parse(&format!("{}{service}", Alias::RESERVED_PREFIX))
}

/// The fixed key policy of the managed key of `owner` (see the module docs).
pub fn managed_key_policy(owner: &Principal) -> Result<Policy> {
    fixed_policy("ManagedKeyOwnerUse", &owner.to_string(), OWNER_ACTIONS)
}

/// A managed key's fixed policy: `actions` allowed to `principal` (the
/// statement `sid`), the public actions to everyone, and no customer
/// control for anyone.
fn fixed_policy(sid: &str, principal: &str, actions: &[Action]) -> Result<Policy> {
    let names =
        |a: &[Action]| serde_json::Value::Array(a.iter().map(|a| a.as_str().into()).collect());
    let doc = serde_json::json!({
        "Version": "2026-01-01",
        "Statement": [
            {
                "Sid": sid,
                "Effect": "Allow",
                "Principal": principal,
                "Action": names(actions),
            },
            {
                "Sid": "ManagedKeyEveryoneReads",
                "Effect": "Allow",
                "Principal": "*",
                "Action": names(PUBLIC_ACTIONS),
            },
            {
                "Sid": "ManagedKeyNoCustomerControl",
                "Effect": "Deny",
                "Principal": "*",
                "Action": names(DENIED_ACTIONS),
            },
        ],
    });
    Policy::from_json(&doc.to_string())
}

impl Client {
    /// The managed key of `service`, created on first use (see the
    /// [module docs](self)): only the service itself may ask, as
    /// `service:<service>`; anyone else gets [`Error::AccessDenied`].
    /// Authorized and audited as [`Action::CreateManagedKey`] whether it
    /// created the key or found it.
    pub fn managed_key(&self, service: &str) -> Result<KeyId> {
        self.on_ring(Action::CreateManagedKey, None, |_| {
            let owner = Principal::service(service)?;
            if service == SECRETS_SERVICE {
                return Err(Error::invalid(format!(
                    "the managed key of {owner} is reserved for the secrets store \
                     (Client::create_managed_secret)"
                )));
            }
            if self.principal() != &owner {
                return Err(Error::AccessDenied {
                    principal: self.principal().clone(),
                    action: Action::CreateManagedKey,
                    key_id: None,
                });
            }
            let alias = managed_alias(service)?;
            self.inner()
                .ensure_managed_key(&alias, &owner, managed_key_policy(&owner)?)
        })
    }
}

impl super::Inner {
    /// The managed key under `alias`, created on first use with `policy`
    /// and `owner` as its creator. Concurrent first uses (threads, rings on
    /// one store) create exactly one: the key and its alias are inserted in
    /// one atomic step, and a loser destroys its material and returns the
    /// winner's key.
    pub(crate) fn ensure_managed_key(
        &self,
        alias: &Alias,
        owner: &Principal,
        policy: Policy,
    ) -> Result<KeyId> {
        if let Some(id) = self.store.resolve_alias(alias)? {
            return Ok(id);
        }
        let spec = KeySpec::default();
        let now = self.clock.now();
        let key_id = KeyId::generate(self.rng.as_ref())?;
        let mut record = KeyRecord::new(
            key_id.clone(),
            spec,
            KeyUsage::EncryptDecrypt,
            owner.clone(),
            now,
        );
        record.manager = KeyManager::Managed;
        record.description = format!("managed key of {owner}");
        record.rotation = Some(RotationSchedule {
            period_days: MANAGED_ROTATION_PERIOD_DAYS,
            next_rotation: now.plus_days(u64::from(MANAGED_ROTATION_PERIOD_DAYS)),
        });
        let access = KeyAccess::new(Some(policy));
        let mref = MaterialId::new(key_id.clone(), 1);
        self.backend.generate(&mref, spec)?;
        match self
            .store
            .insert_key(KeyMetadata::new(record, access), Some(alias))
        {
            Ok(()) => Ok(key_id),
            Err(Error::AliasExists(_)) => {
                // Another thread or process created it first: keep
                // theirs, destroy ours.
                let _ = self.backend.destroy(&mref);
                self.store
                    .resolve_alias(alias)?
                    .ok_or_else(|| Error::AliasNotFound(alias.to_string()))
            }
            Err(e) => Err(e),
        }
    }
}

/// The service name of the secrets store's managed key: its alias is
/// `alias/strongroom/secrets` ([`crate::keyring::secrets::MANAGED_SECRETS_KEY`]).
pub const SECRETS_SERVICE: &str = "secrets";

/// The secret actions the secrets store's managed key delegates to the
/// ring's account.
const SECRET_ACTIONS: &[Action] = &[
    Action::CreateSecret,
    Action::GetSecretValue,
    Action::PutSecretValue,
    Action::RotateSecret,
    Action::DescribeSecret,
    Action::DeleteSecret,
    Action::RestoreSecret,
];

/// The fixed key policy of the secrets store's managed key (the
/// `aws/secretsmanager` key of the KMS model): the secret actions are
/// delegated to the identity policies of the ring's `account` (a principal
/// may use a secret under this key exactly when its identity policies
/// allow the secret action on `alias/strongroom/secrets`, optionally
/// conditioned on the secret's name in the context `strongroom:secret`);
/// nobody may use the key directly (no `Encrypt`, `Decrypt` or
/// `GenerateDataKey` for anyone: the secrets store uses its material
/// inside the secret calls); everyone may describe it; nobody controls it.
pub fn secrets_key_policy(account: &crate::principal::AccountId) -> Result<Policy> {
    fixed_policy(
        "SecretsDelegatedToIdentityPolicies",
        &format!("account:{account}"),
        SECRET_ACTIONS,
    )
}

/// True if `p` may ask for a managed key at all (a service principal): the
/// decision of [`Action::CreateManagedKey`]; the work then checks it asks
/// for its own.
pub(crate) fn may_ask(p: &Principal) -> bool {
    p.kind() == PrincipalKind::Service
}
