//! Key lifecycle: enable, disable, scheduled deletion and its cancellation,
//! and the ring's maintenance pass.

use super::{Client, Inner, KeyRing, ScheduleDeletionOptions};
use crate::action::Action;
use crate::backend::MaterialId;
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::key::KeyRef;
use crate::key::{KeyId, KeyState, RotationKind};
use crate::store::KeyMetadata;

pub(crate) use crate::limits::DEFAULT_DELETION_WINDOW_DAYS;
pub(crate) use crate::limits::DELETION_WINDOW_DAYS;

/// What [`KeyRing::run_maintenance`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MaintenanceReport {
    /// Keys rotated automatically, with their new primary version.
    pub rotated: Vec<(KeyId, u32)>,
    /// Keys whose deletion date had passed and that are now gone.
    pub deleted: Vec<KeyId>,
    /// Secrets whose deletion date had passed and that are now destroyed
    /// ([`crate::keyring::secrets`]).
    pub secrets_destroyed: Vec<String>,
}

impl Inner {
    /// Destroys every version's material in the backend, then the metadata
    /// and aliases. Irreversible. Material first: if the process dies in
    /// between, the key is still pending deletion and the next pass finishes
    /// (destroying absent material is not an error).
    pub(crate) fn delete_now(&self, meta: &KeyMetadata) -> Result<()> {
        let _guard = self.rotation_lock.lock().unwrap_or_else(|e| e.into_inner());
        let result = (|| {
            for v in &meta.versions {
                self.backend
                    .destroy(&MaterialId::new(meta.key_id.clone(), v.version))?;
            }
            self.store.remove_key(&meta.key_id)?;
            self.usage.forget_key(&meta.key_id);
            Ok(())
        })();
        // The destruction is recorded once, by the system principal, with
        // its true outcome, whether maintenance or a caller's use found it due.
        self.record_system(super::audit::ACTION_DELETE_KEY, &meta.key_id, None, result)
    }

    fn set_state(
        &self,
        key: &KeyId,
        action: Action,
        f: impl Fn(KeyState) -> Option<KeyState>,
    ) -> Result<KeyState> {
        let meta = self.store.update_key(key, &mut |m| {
            m.state = f(m.state).ok_or_else(|| Error::InvalidKeyState {
                key_id: m.key_id.clone(),
                state: m.state,
                action,
            })?;
            Ok(())
        })?;
        Ok(meta.state)
    }
}

impl KeyRing {
    /// Runs due work on every key, on the ring's clock: deletes keys whose
    /// deletion window has passed and rotates keys whose rotation period has
    /// elapsed (at most once per key per call, however long ago it fell due),
    /// and destroys secrets whose deletion date has passed.
    ///
    /// The same checks also run whenever a key is used; call this from the
    /// application's scheduler so that unused keys are handled too. It is the
    /// ring's own housekeeping, so it runs without a caller principal.
    pub fn run_maintenance(&self) -> Result<MaintenanceReport> {
        let inner = &self.inner;
        let mut report = MaintenanceReport::default();
        let mut after: Option<KeyId> = None;
        loop {
            let page = inner.store.list_keys(after.as_ref(), 1000)?;
            let Some(last) = page.last() else { break };
            after = Some(last.key_id.clone());
            let now = inner.clock.now();
            for meta in page {
                match meta.state {
                    KeyState::PendingDeletion { deletion_date } if now >= deletion_date => {
                        inner.delete_now(&meta)?;
                        report.deleted.push(meta.key_id.clone());
                    }
                    KeyState::Enabled if meta.rotation.is_some_and(|r| now >= r.next_rotation) => {
                        let m = inner.rotate_if_primary(&meta, RotationKind::Automatic)?;
                        if m.primary_version != meta.primary_version {
                            report.rotated.push((m.key_id.clone(), m.primary_version));
                        }
                    }
                    _ => {}
                }
            }
        }
        report.secrets_destroyed = inner.destroy_due_secrets()?;
        Ok(report)
    }
}

impl Client {
    /// Enables a disabled key. A key pending deletion must have its deletion
    /// cancelled first.
    pub fn enable_key<'k>(&self, key: impl Into<KeyRef<'k>>) -> Result<()> {
        self.on_key(Action::EnableKey, key, None, |_, m| {
            self.inner()
                .set_state(&m.key_id, Action::EnableKey, |s| match s {
                    KeyState::Enabled | KeyState::Disabled => Some(KeyState::Enabled),
                    KeyState::PendingDeletion { .. } => None,
                })?;
            Ok(())
        })
    }

    /// Disables a key: it refuses every cryptographic operation, decryption
    /// included, with [`Error::InvalidKeyState`], until enabled again.
    pub fn disable_key<'k>(&self, key: impl Into<KeyRef<'k>>) -> Result<()> {
        self.on_key(Action::DisableKey, key, None, |_, m| {
            self.inner()
                .set_state(&m.key_id, Action::DisableKey, |s| match s {
                    KeyState::Enabled | KeyState::Disabled => Some(KeyState::Disabled),
                    KeyState::PendingDeletion { .. } => None,
                })?;
            Ok(())
        })
    }

    /// Schedules the key's deletion after `window_days` (7 to 30; `None`:
    /// 30) on the ring's clock and returns the deletion date. Until then the
    /// key refuses every cryptographic operation and the deletion can be
    /// cancelled; after it, every version's material is destroyed and the
    /// key is gone: ciphertexts under it can never be decrypted again.
    pub fn schedule_key_deletion<'k>(
        &self,
        key: impl Into<KeyRef<'k>>,
        options: ScheduleDeletionOptions,
    ) -> Result<Timestamp> {
        self.on_key(Action::ScheduleKeyDeletion, key, None, |_, m| {
            let days = options
                .pending_window_days
                .unwrap_or(DEFAULT_DELETION_WINDOW_DAYS);
            if !DELETION_WINDOW_DAYS.contains(&days) {
                return Err(Error::invalid(format!(
                    "deletion window must be {} to {} days (got {days})",
                    DELETION_WINDOW_DAYS.start(),
                    DELETION_WINDOW_DAYS.end()
                )));
            }
            let deletion_date = self.inner().clock.now().plus_days(u64::from(days));
            self.inner()
                .set_state(&m.key_id, Action::ScheduleKeyDeletion, |s| match s {
                    KeyState::Enabled | KeyState::Disabled => {
                        Some(KeyState::PendingDeletion { deletion_date })
                    }
                    KeyState::PendingDeletion { .. } => None,
                })?;
            Ok(deletion_date)
        })
    }

    /// Cancels a scheduled deletion. The key becomes Disabled (as in AWS
    /// KMS): enable it explicitly to use it again.
    pub fn cancel_key_deletion<'k>(&self, key: impl Into<KeyRef<'k>>) -> Result<()> {
        self.on_key(Action::CancelKeyDeletion, key, None, |_, m| {
            self.inner()
                .set_state(&m.key_id, Action::CancelKeyDeletion, |s| match s {
                    KeyState::PendingDeletion { .. } => Some(KeyState::Disabled),
                    _ => None,
                })?;
            Ok(())
        })
    }
}
