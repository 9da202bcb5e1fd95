//! Key rotation: versions, automatic and on-demand rotation, version floors.

use super::{Client, EnableRotationOptions, Inner, VersionFloors};
use crate::action::Action;
use crate::backend::MaterialId;
use crate::error::{Error, Result};
use crate::key::KeyRef;
use crate::key::{KeyState, KeyVersionInfo, RotationKind, RotationRecord, RotationSchedule};
use crate::store::KeyMetadata;
use std::sync::Arc;

/// Shortest and longest automatic rotation period, in days.
pub(crate) const ROTATION_PERIOD_DAYS: std::ops::RangeInclusive<u32> = 90..=2560;
/// Default automatic rotation period, in days.
pub(crate) const DEFAULT_ROTATION_PERIOD_DAYS: u32 = 365;

impl Inner {
    /// Rotates `meta`'s key unless another rotation already replaced the
    /// primary version `meta` saw (so concurrent triggers rotate once).
    /// Returns the fresh metadata.
    pub(crate) fn rotate_if_primary(
        &self,
        meta: &KeyMetadata,
        kind: RotationKind,
    ) -> Result<Arc<KeyMetadata>> {
        let result = self.rotate(meta, kind, Some(meta.primary_version), None);
        // A rotation the ring made on its own is recorded as one system
        // event; nothing is recorded when another rotator got there first.
        match &result {
            Ok(m) if m.primary_version == meta.primary_version => result,
            Ok(m) => {
                let v = m.primary_version;
                self.record_system(
                    super::audit::ACTION_ROTATE_KEY,
                    &meta.key_id,
                    Some(v),
                    result,
                )
            }
            Err(_) => {
                self.record_system(super::audit::ACTION_ROTATE_KEY, &meta.key_id, None, result)
            }
        }
    }

    /// Creates version `latest + 1`: material first, then metadata in one
    /// atomic store update. If the update fails the new material is destroyed,
    /// so a primary version never lacks material.
    ///
    /// With `only_if_primary = Some(v)`, nothing happens if the primary is no
    /// longer `v` (someone rotated meanwhile) or, for automatic rotation, if
    /// it is no longer due.
    pub(crate) fn rotate(
        &self,
        meta: &KeyMetadata,
        kind: RotationKind,
        only_if_primary: Option<u32>,
        imported: Option<&crate::SecretBytes>,
    ) -> Result<Arc<KeyMetadata>> {
        let _guard = self.rotation_lock.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.clock.now();
        // Everything happens inside the store's atomic update, on the freshest
        // metadata (a file store re-reads it under its cross-process lock):
        // decide, generate the new version's material, commit. Two rotators
        // therefore never pick the same version, and material is generated
        // only by the one that commits it.
        let mut generated: Option<MaterialId> = None;
        let updated = self.store.update_key(&meta.key_id, &mut |m| {
            generated = None;
            if m.is_replica() {
                // Only the primary region makes versions (they would diverge
                // otherwise); a replica gets them by `sync_replica`. A
                // rotation the ring would make on its own is skipped.
                return match kind {
                    RotationKind::Automatic | RotationKind::UsageLimit => Ok(()),
                    _ => super::replica::refuse_on_replica(m, "rotate"),
                };
            }
            if only_if_primary.is_some_and(|v| m.primary_version != v)
                || (kind == RotationKind::Automatic
                    && m.rotation.is_none_or(|r| now < r.next_rotation))
                || (m.state != KeyState::Enabled
                    && !matches!(kind, RotationKind::OnDemand | RotationKind::Imported))
            {
                // Nothing to do (someone rotated meanwhile, or not due).
                return Ok(());
            }
            let new_version = m
                .latest_version()
                .checked_add(1)
                .ok_or_else(|| Error::invalid("key has reached its maximum number of versions"))?;
            let mref = MaterialId::new(m.key_id.clone(), new_version);
            // Material never referenced by metadata was left by a crash
            // between generate and commit; under the store's lock nobody
            // else can be creating it, so it is discarded.
            if self.backend.contains(&mref)? {
                self.backend.destroy(&mref)?;
            }
            match imported {
                Some(raw) => {
                    self.import_backend(&mref)?
                        .import(&mref, m.spec, raw.expose_secret())?
                }
                None => self.backend.generate(&mref, m.spec)?,
            }
            generated = Some(mref);
            m.versions.push(KeyVersionInfo {
                version: new_version,
                created_at: now,
            });
            m.primary_version = new_version;
            m.rotations.push(RotationRecord {
                version: new_version,
                rotated_at: now,
                kind,
            });
            // One rotation per elapsed period, even after a long downtime:
            // the next one is a full period from now.
            if let Some(r) = m.rotation.as_mut() {
                r.next_rotation = now.plus_days(u64::from(r.period_days));
            }
            Ok(())
        });
        // If the commit failed after the material was made, the material is
        // left in place: a file store may have made the new record visible
        // even though it reports an error (e.g. the directory fsync failed
        // after the rename), and a version must never lose its material.
        // Unreferenced material is discarded by the next rotation.
        let _ = generated;
        updated
    }
}

/// Rotation status of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RotationStatus {
    /// The schedule, if automatic rotation is on.
    pub schedule: Option<RotationSchedule>,
    /// The primary (encrypting) version.
    pub primary_version: u32,
    /// Encryptions under the primary version over its whole life, as
    /// persisted with the key (exact for one ring; after restarts or with
    /// several rings, an upper bound that counts unused reservations).
    pub primary_encryptions: u64,
    /// The minimum decryption version (0 or 1: none).
    pub min_decrypt_version: u32,
    /// The minimum encryption version (0 or 1: none).
    pub min_encrypt_version: u32,
}

impl Client {
    /// Turns on automatic rotation every `period_days` (90 to 2560; `None`:
    /// 365). The first rotation is due one period from now.
    ///
    /// Rotation applies to symmetric encryption keys: a new version becomes
    /// primary, and every earlier version keeps decrypting what it encrypted.
    pub fn enable_key_rotation<'k>(
        &self,
        key: impl Into<KeyRef<'k>>,
        options: EnableRotationOptions,
    ) -> Result<RotationSchedule> {
        self.on_key(Action::EnableKeyRotation, key, None, |_, meta| {
            let period = options
                .rotation_period_days
                .unwrap_or(DEFAULT_ROTATION_PERIOD_DAYS);
            if !ROTATION_PERIOD_DAYS.contains(&period) {
                return Err(Error::invalid(format!(
                    "rotation period must be {} to {} days (got {period})",
                    ROTATION_PERIOD_DAYS.start(),
                    ROTATION_PERIOD_DAYS.end()
                )));
            }
            rotatable(meta)?;
            super::replica::refuse_on_replica(meta, "schedule rotation of")?;
            let now = self.inner().clock.now();
            let schedule = RotationSchedule {
                period_days: period,
                next_rotation: now.plus_days(u64::from(period)),
            };
            self.inner().store.update_key(&meta.key_id, &mut |k| {
                k.rotation = Some(schedule);
                Ok(())
            })?;
            Ok(schedule)
        })
    }

    /// Turns off automatic rotation. Managed keys cannot turn it off.
    pub fn disable_key_rotation<'k>(&self, key: impl Into<KeyRef<'k>>) -> Result<()> {
        self.on_key(Action::DisableKeyRotation, key, None, |_, meta| {
            if meta.manager == crate::key::KeyManager::Managed {
                return Err(Error::invalid(
                    "managed keys rotate automatically; rotation cannot be disabled",
                ));
            }
            self.inner().store.update_key(&meta.key_id, &mut |k| {
                k.rotation = None;
                Ok(())
            })?;
            Ok(())
        })
    }

    /// The key's rotation schedule, primary version, floors and metering.
    pub fn get_key_rotation_status<'k>(
        &self,
        key: impl Into<KeyRef<'k>>,
    ) -> Result<RotationStatus> {
        self.on_key(Action::GetKeyRotationStatus, key, None, |_, meta| {
            Ok(RotationStatus {
                schedule: meta.rotation,
                primary_version: meta.primary_version,
                primary_encryptions: self.inner().usage.count(
                    &MaterialId::new(meta.key_id.clone(), meta.primary_version),
                    meta,
                ),
                min_decrypt_version: meta.min_decrypt_version,
                min_encrypt_version: meta.min_encrypt_version,
            })
        })
    }

    /// Rotates the key now and returns the new primary version. Works on an
    /// enabled or disabled key (not one pending deletion).
    pub fn rotate_key_on_demand<'k>(&self, key: impl Into<KeyRef<'k>>) -> Result<u32> {
        self.on_key(Action::RotateKeyOnDemand, key, None, |_, meta| {
            rotatable(meta)?;
            super::replica::refuse_on_replica(meta, "rotate")?;
            if matches!(meta.state, KeyState::PendingDeletion { .. }) {
                return Err(Error::InvalidKeyState {
                    key_id: meta.key_id.clone(),
                    state: meta.state,
                    action: Action::RotateKeyOnDemand,
                });
            }
            Ok(self
                .inner()
                .rotate(meta, RotationKind::OnDemand, None, None)?
                .primary_version)
        })
    }

    /// Every rotation of the key, oldest first, with time and kind.
    pub fn list_key_rotations<'k>(
        &self,
        key: impl Into<KeyRef<'k>>,
    ) -> Result<Vec<RotationRecord>> {
        self.on_key(Action::ListKeyRotations, key, None, |_, m| {
            Ok(m.rotations.clone())
        })
    }

    /// Sets version floors, as HashiCorp Vault's transit engine does:
    /// ciphertexts of versions below `min_decrypt` fail with
    /// [`Error::VersionRetired`] (naming the floor), and the primary version
    /// must be at least `min_encrypt`. `None` leaves a floor unchanged.
    /// Floors cannot exceed the newest version, and `min_encrypt` cannot be
    /// below `min_decrypt` (what is encrypted must stay decryptable).
    pub fn update_key_version_floors<'k>(
        &self,
        key: impl Into<KeyRef<'k>>,
        floors: VersionFloors,
    ) -> Result<()> {
        let VersionFloors {
            min_decrypt,
            min_encrypt,
        } = floors;
        self.on_key(Action::UpdateKeyVersionFloors, key, None, |_, meta| {
            self.inner().store.update_key(&meta.key_id, &mut |k| {
                let dec = min_decrypt.unwrap_or(k.min_decrypt_version);
                let enc = min_encrypt.unwrap_or(k.min_encrypt_version);
                let latest = k.latest_version();
                if dec > latest || enc > latest {
                    return Err(Error::invalid(format!(
                        "version floors must not exceed the newest version {latest}"
                    )));
                }
                if enc.max(1) < dec {
                    return Err(Error::invalid(
                        "the minimum encryption version must be at least the minimum decryption version",
                    ));
                }
                k.min_decrypt_version = dec;
                k.min_encrypt_version = enc;
                Ok(())
            })?;
            Ok(())
        })
    }
}

/// Only symmetric encryption keys rotate.
fn rotatable(meta: &KeyMetadata) -> Result<()> {
    if meta.spec.symmetric_algorithm().is_none() {
        return Err(Error::Unsupported(format!(
            "key {} ({}) does not rotate: only symmetric encryption keys have versions",
            meta.key_id, meta.spec
        )));
    }
    Ok(())
}

impl Client {
    /// Moves an envelope message to `destination_key`'s primary version:
    /// opens it (action `Decrypt`; `context` must equal the message's) and
    /// seals the data again under a fresh data key (action
    /// `GenerateDataKey`), keeping its context and frame length. The
    /// plaintext never reaches the caller. Pass the message's own key to
    /// move old messages to the newest version after a rotation.
    pub fn re_encrypt_message<'k>(
        &self,
        message: &[u8],
        context: &crate::EncryptionContext,
        destination_key: impl Into<KeyRef<'k>>,
    ) -> Result<Vec<u8>> {
        let opened = self.open(message, context)?;
        let frame_len = match crate::envelope::inspect(message)? {
            crate::envelope::CiphertextInfo::Message { frame_len, .. } => frame_len,
            crate::envelope::CiphertextInfo::Blob { .. } => return Err(Error::DecryptionFailed),
        };
        self.seal_with(
            destination_key,
            opened.plaintext.expose_secret(),
            &opened.context,
            crate::SealOptions::new().frame_len(frame_len),
        )
    }
}
