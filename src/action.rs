//! The operations of the ring, as named in policies and audit records.

use crate::key::KeyUsage;
use serde::{Deserialize, Serialize};
use std::fmt;

/// One operation of the ring. Every public call maps to exactly one action,
/// which is what access control decides on and what the audit trail records.
///
/// `seal` is authorized as [`Action::GenerateDataKey`] and `open` as
/// [`Action::Decrypt`], as the AWS Encryption SDK's calls are: whoever may
/// decrypt a wrapped data key may open the message it protects, so separate
/// actions would only pretend to separate them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Action {
    /// Create a key.
    CreateKey,
    /// Read a key's metadata.
    DescribeKey,
    /// List the keys of the ring.
    ListKeys,
    /// Create an alias.
    CreateAlias,
    /// Point an existing alias at another key.
    UpdateAlias,
    /// Delete an alias.
    DeleteAlias,
    /// List aliases.
    ListAliases,
    /// Add or change tags of a key.
    TagResource,
    /// Remove tags from a key.
    UntagResource,
    /// List a key's tags.
    ListResourceTags,
    /// Encrypt up to 4096 bytes directly under a key.
    Encrypt,
    /// Decrypt a ciphertext blob (also: open an envelope message).
    Decrypt,
    /// The decrypting half of re-encryption (checked on the source key).
    ReEncryptFrom,
    /// The encrypting half of re-encryption (checked on the destination key).
    ReEncryptTo,
    /// Generate a data key with its plaintext (also: seal an envelope message).
    GenerateDataKey,
    /// Generate a data key without its plaintext.
    GenerateDataKeyWithoutPlaintext,
    /// Draw random bytes from the ring's generator.
    GenerateRandom,
    /// Enable a disabled key.
    EnableKey,
    /// Disable a key: it refuses every cryptographic operation.
    DisableKey,
    /// Schedule a key's deletion after a 7 to 30 day window.
    ScheduleKeyDeletion,
    /// Cancel a scheduled deletion (the key becomes Disabled).
    CancelKeyDeletion,
    /// Turn on automatic rotation.
    EnableKeyRotation,
    /// Turn off automatic rotation.
    DisableKeyRotation,
    /// Read the rotation schedule.
    GetKeyRotationStatus,
    /// Rotate now.
    RotateKeyOnDemand,
    /// List a key's rotations.
    ListKeyRotations,
    /// Set the minimum decryption and encryption versions.
    UpdateKeyVersionFloors,
    /// Replace a key's policy.
    PutKeyPolicy,
    /// Read a key's policy (also: explain a decision on the key).
    GetKeyPolicy,
    /// Create a grant on a key.
    CreateGrant,
    /// List a key's grants.
    ListGrants,
    /// Retire a grant (also allowed to its grantee and retiring principal).
    RetireGrant,
    /// Revoke a grant (a key administrator).
    RevokeGrant,
    /// Read when each version of a key was last used.
    GetKeyLastUsage,
    /// Sign a message or digest with an asymmetric key.
    Sign,
    /// Verify a signature through the ring.
    Verify,
    /// Export an asymmetric key's public key.
    GetPublicKey,
    /// Compute a MAC with an HMAC key.
    GenerateMac,
    /// Verify a MAC with an HMAC key.
    VerifyMac,
    /// Generate a data key pair, private key returned in plaintext and encrypted.
    GenerateDataKeyPair,
    /// Generate a data key pair, private key returned only encrypted.
    GenerateDataKeyPairWithoutPlaintext,
    /// Get a wrapping public key and token to import key material.
    GetParametersForImport,
    /// Create a key from imported, wrapped key material.
    ImportKeyMaterial,
    /// Get (creating on first use) the caller's own managed key
    /// (`Client::managed_key`): allowed to service principals, for their
    /// own service only; no policy decides it.
    CreateManagedKey,
    /// Copy a multi-region primary key's versions to a replica in another
    /// region (`Client::replicate_key`, `Client::sync_replica`): checked on
    /// the primary key, in the source region.
    ReplicateKey,
    /// Create a replica of a multi-region key in this region from wrapped
    /// material sent by its primary: ring-wide, checked in the target region.
    CreateReplicaKey,
    /// Receive new versions of a multi-region key from its primary: checked
    /// on the replica key, in the target region.
    SyncReplica,
    /// Move a multi-region key's primary role to another region: checked on
    /// the key in both regions.
    UpdatePrimaryRegion,
    /// Create a secret protected by a key (decided on that key).
    CreateSecret,
    /// Read a secret's value (decided on the key that protects it).
    GetSecretValue,
    /// Store a new version of a secret's value.
    PutSecretValue,
    /// Read a secret's metadata: key, versions, labels, deletion date.
    DescribeSecret,
    /// List secrets by path prefix, and read values by path (decided by the
    /// ring policy; each secret read also needs `GetSecretValue` on its key).
    ListSecrets,
    /// Schedule a secret's deletion after a 7 to 30 day window.
    DeleteSecret,
    /// Cancel a secret's scheduled deletion.
    RestoreSecret,
    /// Rotate a secret: a new version, tested, then made current.
    RotateSecret,
    /// Attach (create or replace) an identity policy of a principal
    /// (decided by the ring policy, see [`Action::IDENTITY_POLICY_ACTIONS`]).
    PutIdentityPolicy,
    /// Read an identity policy of a principal.
    GetIdentityPolicy,
    /// Detach (delete) an identity policy of a principal.
    DeleteIdentityPolicy,
    /// List the names of a principal's identity policies.
    ListIdentityPolicies,
}

impl Action {
    /// Every action, in declaration order.
    pub const ALL: &'static [Action] = &[
        Action::CreateKey,
        Action::DescribeKey,
        Action::ListKeys,
        Action::CreateAlias,
        Action::UpdateAlias,
        Action::DeleteAlias,
        Action::ListAliases,
        Action::TagResource,
        Action::UntagResource,
        Action::ListResourceTags,
        Action::Encrypt,
        Action::Decrypt,
        Action::ReEncryptFrom,
        Action::ReEncryptTo,
        Action::GenerateDataKey,
        Action::GenerateDataKeyWithoutPlaintext,
        Action::GenerateRandom,
        Action::EnableKey,
        Action::DisableKey,
        Action::ScheduleKeyDeletion,
        Action::CancelKeyDeletion,
        Action::EnableKeyRotation,
        Action::DisableKeyRotation,
        Action::GetKeyRotationStatus,
        Action::RotateKeyOnDemand,
        Action::ListKeyRotations,
        Action::UpdateKeyVersionFloors,
        Action::PutKeyPolicy,
        Action::GetKeyPolicy,
        Action::CreateGrant,
        Action::ListGrants,
        Action::RetireGrant,
        Action::RevokeGrant,
        Action::GetKeyLastUsage,
        Action::Sign,
        Action::Verify,
        Action::GetPublicKey,
        Action::GenerateMac,
        Action::VerifyMac,
        Action::GenerateDataKeyPair,
        Action::GenerateDataKeyPairWithoutPlaintext,
        Action::GetParametersForImport,
        Action::ImportKeyMaterial,
        Action::CreateManagedKey,
        Action::ReplicateKey,
        Action::CreateReplicaKey,
        Action::SyncReplica,
        Action::UpdatePrimaryRegion,
        Action::CreateSecret,
        Action::GetSecretValue,
        Action::PutSecretValue,
        Action::DescribeSecret,
        Action::ListSecrets,
        Action::DeleteSecret,
        Action::RestoreSecret,
        Action::RotateSecret,
        Action::PutIdentityPolicy,
        Action::GetIdentityPolicy,
        Action::DeleteIdentityPolicy,
        Action::ListIdentityPolicies,
    ];

    /// The identity-policy management actions
    /// ([`crate::Client::put_identity_policy`] and its siblings). They act
    /// on no key and are decided by the ring policy (with the caller's
    /// identity policies, `Resource: "*"`), like the ring-wide actions, but
    /// they are *not* in [`Action::RING_WIDE`]: the open ring policy does
    /// not allow them (else anyone could write themselves an identity
    /// policy); [`crate::policy::Policy::ring_admins`] does.
    pub const IDENTITY_POLICY_ACTIONS: &'static [Action] = &[
        Action::PutIdentityPolicy,
        Action::GetIdentityPolicy,
        Action::DeleteIdentityPolicy,
        Action::ListIdentityPolicies,
    ];

    /// The actions that act on no existing key, decided by the ring policy:
    /// create and import (new) keys, list key ids and aliases, draw random
    /// bytes, create a replica of another region's multi-region key, list
    /// secrets. `GetParametersForImport` and `ImportKeyMaterial` are also
    /// decided on a key when they import a version of it.
    pub const RING_WIDE: &'static [Action] = &[
        Action::CreateKey,
        Action::ListKeys,
        Action::ListAliases,
        Action::GenerateRandom,
        Action::GetParametersForImport,
        Action::ImportKeyMaterial,
        Action::CreateReplicaKey,
        Action::ListSecrets,
    ];

    /// The key usage this action needs, if it uses a key's material (a
    /// cryptographic operation); `None` for management actions, which work
    /// on a key in any state.
    pub fn required_usage(self) -> Option<KeyUsage> {
        match self {
            Action::Encrypt
            | Action::Decrypt
            | Action::ReEncryptFrom
            | Action::ReEncryptTo
            | Action::GenerateDataKey
            | Action::GenerateDataKeyWithoutPlaintext
            | Action::GenerateDataKeyPair
            | Action::GenerateDataKeyPairWithoutPlaintext
            | Action::CreateSecret
            | Action::GetSecretValue
            | Action::PutSecretValue
            | Action::RotateSecret => Some(KeyUsage::EncryptDecrypt),
            Action::Sign | Action::Verify => Some(KeyUsage::SignVerify),
            Action::GenerateMac | Action::VerifyMac => Some(KeyUsage::GenerateVerifyMac),
            _ => None,
        }
    }

    /// True if the action uses a key's material: it needs an enabled key of
    /// the right usage, and triggers a due rotation first.
    pub fn is_cryptographic(self) -> bool {
        self.required_usage().is_some()
    }

    /// True if a grant may allow the action: cryptographic operations (the
    /// secret value actions among them), `DescribeKey`, `DescribeSecret`
    /// and `RetireGrant`. Administration (policies, deletion, aliases,
    /// grants for others, secret deletion and restore) needs the key policy.
    pub fn is_grantable(self) -> bool {
        self.is_cryptographic()
            || matches!(
                self,
                Action::DescribeKey | Action::DescribeSecret | Action::RetireGrant
            )
    }

    /// True if the ring policy decides the action when no key is named
    /// ([`Action::RING_WIDE`]).
    pub fn is_ring_wide(self) -> bool {
        Self::RING_WIDE.contains(&self)
    }

    /// The action's name, as written in policies: `strongroom:Encrypt`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::CreateKey => "strongroom:CreateKey",
            Action::DescribeKey => "strongroom:DescribeKey",
            Action::ListKeys => "strongroom:ListKeys",
            Action::CreateAlias => "strongroom:CreateAlias",
            Action::UpdateAlias => "strongroom:UpdateAlias",
            Action::DeleteAlias => "strongroom:DeleteAlias",
            Action::ListAliases => "strongroom:ListAliases",
            Action::TagResource => "strongroom:TagResource",
            Action::UntagResource => "strongroom:UntagResource",
            Action::ListResourceTags => "strongroom:ListResourceTags",
            Action::Encrypt => "strongroom:Encrypt",
            Action::Decrypt => "strongroom:Decrypt",
            Action::ReEncryptFrom => "strongroom:ReEncryptFrom",
            Action::ReEncryptTo => "strongroom:ReEncryptTo",
            Action::GenerateDataKey => "strongroom:GenerateDataKey",
            Action::GenerateDataKeyWithoutPlaintext => "strongroom:GenerateDataKeyWithoutPlaintext",
            Action::GenerateRandom => "strongroom:GenerateRandom",
            Action::EnableKey => "strongroom:EnableKey",
            Action::DisableKey => "strongroom:DisableKey",
            Action::ScheduleKeyDeletion => "strongroom:ScheduleKeyDeletion",
            Action::CancelKeyDeletion => "strongroom:CancelKeyDeletion",
            Action::EnableKeyRotation => "strongroom:EnableKeyRotation",
            Action::DisableKeyRotation => "strongroom:DisableKeyRotation",
            Action::GetKeyRotationStatus => "strongroom:GetKeyRotationStatus",
            Action::RotateKeyOnDemand => "strongroom:RotateKeyOnDemand",
            Action::ListKeyRotations => "strongroom:ListKeyRotations",
            Action::UpdateKeyVersionFloors => "strongroom:UpdateKeyVersionFloors",
            Action::PutKeyPolicy => "strongroom:PutKeyPolicy",
            Action::GetKeyPolicy => "strongroom:GetKeyPolicy",
            Action::CreateGrant => "strongroom:CreateGrant",
            Action::ListGrants => "strongroom:ListGrants",
            Action::RetireGrant => "strongroom:RetireGrant",
            Action::RevokeGrant => "strongroom:RevokeGrant",
            Action::GetKeyLastUsage => "strongroom:GetKeyLastUsage",
            Action::Sign => "strongroom:Sign",
            Action::Verify => "strongroom:Verify",
            Action::GetPublicKey => "strongroom:GetPublicKey",
            Action::GenerateMac => "strongroom:GenerateMac",
            Action::VerifyMac => "strongroom:VerifyMac",
            Action::GenerateDataKeyPair => "strongroom:GenerateDataKeyPair",
            Action::GenerateDataKeyPairWithoutPlaintext => {
                "strongroom:GenerateDataKeyPairWithoutPlaintext"
            }
            Action::GetParametersForImport => "strongroom:GetParametersForImport",
            Action::ImportKeyMaterial => "strongroom:ImportKeyMaterial",
            Action::CreateManagedKey => "strongroom:CreateManagedKey",
            Action::ReplicateKey => "strongroom:ReplicateKey",
            Action::CreateReplicaKey => "strongroom:CreateReplicaKey",
            Action::SyncReplica => "strongroom:SyncReplica",
            Action::UpdatePrimaryRegion => "strongroom:UpdatePrimaryRegion",
            Action::CreateSecret => "strongroom:CreateSecret",
            Action::GetSecretValue => "strongroom:GetSecretValue",
            Action::PutSecretValue => "strongroom:PutSecretValue",
            Action::DescribeSecret => "strongroom:DescribeSecret",
            Action::ListSecrets => "strongroom:ListSecrets",
            Action::DeleteSecret => "strongroom:DeleteSecret",
            Action::RestoreSecret => "strongroom:RestoreSecret",
            Action::RotateSecret => "strongroom:RotateSecret",
            Action::PutIdentityPolicy => "strongroom:PutIdentityPolicy",
            Action::GetIdentityPolicy => "strongroom:GetIdentityPolicy",
            Action::DeleteIdentityPolicy => "strongroom:DeleteIdentityPolicy",
            Action::ListIdentityPolicies => "strongroom:ListIdentityPolicies",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
