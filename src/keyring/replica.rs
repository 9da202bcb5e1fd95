//! Multi-region keys: one key, with the same id and the same material for
//! every version, in several independent rings and key stores ("regions"),
//! as AWS KMS multi-region keys.
//!
//! A ciphertext sealed in one region opens in any other region that holds
//! the key's version, with no call across: each region decrypts with its own
//! copy of the material.
//!
//! # The model
//! - Every ring that takes part names its region
//!   ([`crate::keyring::KeyRingBuilder::region`]).
//! - [`crate::CreateKeyOptions::multi_region`] makes a *primary* key, whose
//!   id starts with `mrk-` ([`KeyId::MULTI_REGION_PREFIX`]). Only multi-region
//!   keys carry that prefix.
//! - [`Client::replicate_key`] creates a *replica* in another ring: the same
//!   id, spec, usage and versions. [`Client::sync_replica`] sends the
//!   versions the primary made since (rotation happens only on the primary:
//!   a replica refuses `rotate_key_on_demand`, `enable_key_rotation` and
//!   `import_key_version`, and never rotates on its own, so versions never
//!   diverge). [`Client::update_primary_region`] moves the primary role.
//! - State (enabled, disabled, pending deletion), key policy, grants,
//!   aliases, tags, description and version floors belong to each region:
//!   disabling or deleting the key in one region leaves the others working.
//!   A replica starts in the primary's state (enabled or disabled) with the
//!   default key policy (its creator in the target region has full control).
//!
//! # A replica that is behind
//! A replica knows its own versions; it learns the primary's only when
//! someone compares them ([`Client::replica_status`]) or syncs. A
//! ciphertext naming a version newer than the replica's newest fails with
//! [`Error::ReplicaVersionUnknown`], which says to sync. That error is
//! distinct from the opaque [`Error::DecryptionFailed`] on purpose: it is
//! decided before the ciphertext is touched, from the version number in its
//! header, and reveals only the replica's newest version number, which
//! `DescribeKey` shows anyway. A version that the replica should have but
//! lacks, or any damaged ciphertext, still fails as before.
//!
//! # How material moves
//! Only sealed, and only inside one call that both regions authorized:
//! 1. the source ring authorizes [`Action::ReplicateKey`] on the primary;
//! 2. the target ring authorizes [`Action::CreateReplicaKey`] (ring-wide,
//!    by the ring policy) or [`Action::SyncReplica`] (on the replica), and
//!    issues a one-time HPKE key and token, as for key import
//!    ([`crate::keyring::ImportParameters`]), bound to the target's
//!    principal and the key id;
//! 3. the source backend seals each version's raw material to that key
//!    ([`crate::backend::ExportBackend`]; `info` and `aad` bind the token,
//!    key id and version: docs/FORMAT.md, "Replica key material");
//! 4. the target opens every version (all or none), validates it, imports
//!    it into its own backend, and only then makes the replica's record or
//!    new versions visible in one store update.
//!
//! The source's material is never in plaintext outside its backend; the
//! target's is in plaintext only inside the target ring's process, as for
//! any import. A source backend that cannot export (a PKCS#11 token, whose
//! keys are non-extractable; a remote custodian such as Vault or AWS KMS;
//! the memory backend, which keeps only key schedules) makes replication
//! fail with [`Error::Unsupported`] before the target is asked for
//! anything. The file keystore and the PostgreSQL backend export. A target
//! backend must be able to import ([`crate::backend::ImportBackend`]:
//! memory, file and PostgreSQL do; a PKCS#11 backend does when its
//! configuration allows imported material,
//! [`crate::backend::Pkcs11Config::allow_imported_material`], and then
//! creates each version on the token as a sensitive, non-extractable
//! object), or the target refuses with [`Error::Unsupported`] before
//! anything is sealed.
//!
//! # Failures
//! A replication that fails midway (a refused version, a crash, a kill -9)
//! leaves no replica: the record is written last, in one store update, and
//! material already imported is destroyed (or, after a crash, is material
//! without a record, invisible and replaced by the next attempt). A sync
//! that fails leaves the replica's versions as they were. Replicate a key
//! into a region from one place at a time.
//!
//! Every step is recorded in both rings' audit trails: `ReplicateKey` in the
//! source, `CreateReplicaKey` or `SyncReplica` in the target,
//! `UpdatePrimaryRegion` in both.

use super::import::ImportPurpose;
use super::{Client, ImportParameters, Inner};
use crate::action::Action;
use crate::backend::{ExportRecipient, MaterialId};
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::key::{
    Alias, KeyId, KeyRecord, KeyRef, KeyState, MAX_TAGS, MultiRegion, validate_description,
    validate_tag,
};
use crate::policy::KeyAccess;
use crate::secret::SecretBytes;
use crate::store::KeyMetadata;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Options for [`Client::replicate_key`]: what belongs to the replica's
/// region alone.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ReplicaOptions {
    /// The replica's description (not shared with other regions).
    pub description: String,
    /// An alias to create for the replica in the target region.
    pub alias: Option<String>,
    /// The replica's tags.
    pub tags: BTreeMap<String, String>,
}

impl ReplicaOptions {
    /// Empty options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the description.
    pub fn description(mut self, d: impl Into<String>) -> Self {
        self.description = d.into();
        self
    }

    /// Sets an alias to create with the replica.
    pub fn alias(mut self, a: impl Into<String>) -> Self {
        self.alias = Some(a.into());
        self
    }

    /// Adds a tag.
    pub fn tag(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.tags.insert(k.into(), v.into());
        self
    }
}

/// A replica compared with its primary ([`Client::replica_status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplicaStatus {
    /// The key.
    pub key_id: KeyId,
    /// The replica's region.
    pub region: String,
    /// The primary's region.
    pub primary_region: String,
    /// The replica's newest version.
    pub replica_latest_version: u32,
    /// The primary's newest version.
    pub primary_latest_version: u32,
    /// Versions the primary has and the replica lacks (sync to get them).
    pub missing_versions: Vec<u32>,
    /// When the replica last received versions.
    pub synced_at: Option<Timestamp>,
}

impl ReplicaStatus {
    /// True if the primary has versions the replica lacks.
    pub fn is_behind(&self) -> bool {
        !self.missing_versions.is_empty()
    }
}

/// Refuses `what` on a multi-region replica: only the primary makes versions.
pub(crate) fn refuse_on_replica(meta: &KeyRecord, what: &str) -> Result<()> {
    match &meta.multi_region {
        Some(m) if !m.is_primary() => Err(Error::Unsupported(format!(
            "key {} is a replica (region {}) of a multi-region key whose primary is in \
             region {}: only the primary can {what} it; do it there, then sync_replica",
            meta.key_id, m.region, m.primary_region
        ))),
        _ => Ok(()),
    }
}

/// Checks a region name: 1 to 64 characters of `[a-z0-9-]`.
fn validate_region(r: &str) -> Result<()> {
    if r.is_empty()
        || r.len() > 64
        || !r
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(Error::Configuration(format!(
            "region {r:?} must be 1 to 64 characters of a-z 0-9 and -"
        )));
    }
    Ok(())
}

/// The multi-region part of a key's record, or a clear error.
fn multi_region(meta: &KeyRecord) -> Result<&MultiRegion> {
    meta.multi_region.as_ref().ok_or_else(|| {
        Error::Unsupported(format!(
            "key {} is not a multi-region key: create one with \
             CreateKeyOptions::multi_region(true)",
            meta.key_id
        ))
    })
}

/// The version numbers of a record.
fn version_numbers(meta: &KeyRecord) -> Vec<u32> {
    let mut v: Vec<u32> = meta.versions.iter().map(|v| v.version).collect();
    v.sort_unstable();
    v
}

impl Inner {
    /// The ring's region, checked.
    pub(crate) fn region(&self) -> Result<&str> {
        let r = self.region.as_deref().ok_or_else(|| {
            Error::Configuration(
                "this ring has no region: set KeyRingBuilder::region to use multi-region keys"
                    .into(),
            )
        })?;
        validate_region(r)?;
        Ok(r)
    }

    /// Seals the versions `versions` of the primary `meta` to the target's
    /// one-time key in `params`, inside this (source) backend.
    fn seal_versions(
        &self,
        meta: &KeyMetadata,
        params: &ImportParameters,
        versions: &[u32],
    ) -> Result<Vec<(u32, Vec<u8>)>> {
        let backend = self.backend.as_ref();
        let exporter = backend
            .exporting()
            .ok_or_else(|| no_export(backend, &meta.key_id))?;
        versions
            .iter()
            .map(|&v| {
                let to = ExportRecipient::new(
                    params.public_key_der.clone(),
                    super::import::replica_info(&params.import_token),
                    super::import::replica_aad(meta.spec, &meta.key_id, v),
                );
                let sealed =
                    exporter.export_sealed(&MaterialId::new(meta.key_id.clone(), v), &to)?;
                Ok((v, sealed))
            })
            .collect()
    }

    /// Imports every opened version and then inserts the replica's record:
    /// all or nothing visible. On failure, imported material is destroyed
    /// unless the store may hold the record.
    fn install_replica(
        &self,
        meta: KeyMetadata,
        alias: Option<&Alias>,
        opened: &[(u32, SecretBytes)],
    ) -> Result<()> {
        let _guard = self.rotation_lock.lock().unwrap_or_else(|e| e.into_inner());
        let key_id = meta.key_id.clone();
        let spec = meta.spec;
        if self.store.get_key(&key_id)?.is_some() {
            return Err(already_here(&key_id, self.region.as_deref()));
        }
        let mut made: Vec<MaterialId> = Vec::new();
        let mut attempt = || -> Result<()> {
            for (v, raw) in opened {
                let mref = MaterialId::new(key_id.clone(), *v);
                // No record names this key here (checked above, under the
                // ring's lock): material under its id was left by an attempt
                // that crashed, and is replaced.
                if self.backend.contains(&mref)? {
                    self.backend.destroy(&mref)?;
                }
                self.import_backend(&mref)?
                    .import(&mref, spec, raw.expose_secret())?;
                made.push(mref);
            }
            self.store.insert_key(meta.clone(), alias)
        };
        let result = attempt();
        if result.is_err() {
            // Roll back only when the store certainly holds no record: after
            // an I/O error the record may be on disk, and a version must
            // never lose its material.
            if matches!(self.store.get_key(&key_id), Ok(None)) {
                for m in &made {
                    let _ = self.backend.destroy(m);
                }
            }
        }
        result
    }

    /// Adds the opened versions to the replica `key_id` in one store update
    /// and takes the primary's version list, primary version and region.
    fn apply_sync(
        &self,
        key_id: &KeyId,
        primary: &KeyRecord,
        opened: &[(u32, SecretBytes)],
    ) -> Result<Arc<KeyMetadata>> {
        let _guard = self.rotation_lock.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.clock.now();
        let primary_region = multi_region(primary)?.region.clone();
        self.store.update_key(key_id, &mut |m| {
            let mine = version_numbers(m);
            let theirs = version_numbers(primary);
            if let Some(v) = mine.iter().find(|v| !theirs.contains(v)) {
                return Err(Error::Conflict(format!(
                    "the replica of {key_id} has version {v}, which the primary lacks: \
                     refusing to sync"
                )));
            }
            for (v, raw) in opened {
                if m.has_version(*v) {
                    continue;
                }
                let mref = MaterialId::new(key_id.clone(), *v);
                // Not referenced by the record (checked under the store's
                // lock): left by a sync that failed before its commit.
                if self.backend.contains(&mref)? {
                    self.backend.destroy(&mref)?;
                }
                self.import_backend(&mref)?
                    .import(&mref, m.spec, raw.expose_secret())?;
            }
            m.versions = primary.versions.clone();
            m.primary_version = primary.primary_version;
            m.rotations = primary.rotations.clone();
            let mr = m
                .multi_region
                .as_mut()
                .ok_or_else(|| Error::Conflict(format!("{key_id} is no longer a replica")))?;
            if mr.is_primary() {
                return Err(Error::Conflict(format!(
                    "{key_id} became the primary in this region meanwhile"
                )));
            }
            mr.primary_region = primary_region.clone();
            mr.synced_at = Some(now);
            Ok(())
        })
    }
}

fn no_export(backend: &dyn crate::backend::KeyBackend, key_id: &KeyId) -> Error {
    Error::Unsupported(format!(
        "backend {} cannot export key material (a PKCS#11 token's keys are non-extractable, \
         a remote custodian keeps its own): key {key_id} cannot be replicated from this region",
        backend.name()
    ))
}

/// Refuses early, before the source seals anything, if this (target)
/// backend cannot hold imported material.
fn check_importing(backend: &dyn crate::backend::KeyBackend, key_id: &KeyId) -> Result<()> {
    if backend.importing().is_none() {
        return Err(Error::Unsupported(format!(
            "backend {} cannot import key material, so it cannot hold a replica of {key_id}",
            backend.name()
        )));
    }
    Ok(())
}

fn already_here(key_id: &KeyId, region: Option<&str>) -> Error {
    Error::invalid(format!(
        "key {key_id} already exists in region {}: a region holds one copy of a \
         multi-region key (sync_replica brings a replica up to date)",
        region.unwrap_or("(none)")
    ))
}

/// The primary record of `meta` in this region, or why it is not one.
fn primary_here<'m>(meta: &'m KeyRecord, region: &str) -> Result<&'m MultiRegion> {
    let mr = multi_region(meta)?;
    if mr.region != region {
        return Err(Error::Configuration(format!(
            "key {} belongs to region {}, but this ring is region {region}",
            meta.key_id, mr.region
        )));
    }
    if !mr.is_primary() {
        return Err(Error::invalid(format!(
            "key {} is a replica here (region {region}); its primary is in region {}: \
             replicate and sync from there",
            meta.key_id, mr.primary_region
        )));
    }
    if let KeyState::PendingDeletion { .. } = meta.state {
        return Err(Error::InvalidKeyState {
            key_id: meta.key_id.clone(),
            state: meta.state,
            action: Action::ReplicateKey,
        });
    }
    Ok(mr)
}

impl Client {
    /// The regions of this ring and `other`, which must differ.
    fn two_regions(&self, other: &Client) -> Result<(String, String)> {
        let here = self.inner().region()?.to_owned();
        let there = other.inner().region()?.to_owned();
        if here == there || Arc::ptr_eq(&self.ring.inner, &other.ring.inner) {
            return Err(Error::invalid(format!(
                "both rings are region {here}: a replica must live in another region"
            )));
        }
        Ok((here, there))
    }

    /// Replicates the multi-region primary `key` of this ring into the ring
    /// of `target` (another region): every version's material, sealed to a
    /// one-time key of the target (module docs), and a record with the same
    /// id, spec, usage, versions and primary version, in the primary's state
    /// (enabled or disabled). Returns the replica's record.
    ///
    /// Needs [`Action::ReplicateKey`] on the key here, and
    /// [`Action::CreateReplicaKey`] for `target`'s principal in the target
    /// ring (its ring policy). Fails with [`Error::Unsupported`] if this
    /// ring's backend cannot export material (PKCS#11, remote custodians,
    /// memory), [`Error::InvalidArgument`] if the target already has a key
    /// with this id, and leaves nothing in the target on any failure.
    pub fn replicate_key<'k>(
        &self,
        key: impl Into<KeyRef<'k>>,
        target: &Client,
        options: ReplicaOptions,
    ) -> Result<KeyRecord> {
        let (here, there) = self.two_regions(target)?;
        self.on_key(Action::ReplicateKey, key, None, |call, meta| {
            primary_here(meta, &here)?;
            let backend = self.inner().backend.as_ref();
            if backend.exporting().is_none() {
                return Err(no_export(backend, &meta.key_id));
            }
            call.note_version(meta.latest_version());
            let versions = version_numbers(meta);
            let record = target.receive_replica(meta, &options, |params| {
                self.inner().seal_versions(meta, params, &versions)
            })?;
            // Informational: the regions this primary has replicated to.
            // The replica exists now whatever happens here, so a failure to
            // note it must not report the replication as failed (a retry
            // would only find the key already there); the list is filled
            // in by the next replication or promotion instead.
            let _noted = self.inner().store.update_key(&meta.key_id, &mut |m| {
                if let Some(mr) = m.multi_region.as_mut()
                    && !mr.replica_regions.contains(&there)
                {
                    mr.replica_regions.push(there.clone());
                    mr.replica_regions.sort();
                }
                Ok(())
            });
            Ok(record)
        })
    }

    /// The target half of [`Client::replicate_key`], in the target ring.
    fn receive_replica(
        &self,
        primary: &KeyMetadata,
        options: &ReplicaOptions,
        seal: impl FnOnce(&ImportParameters) -> Result<Vec<(u32, Vec<u8>)>>,
    ) -> Result<KeyRecord> {
        self.on_ring(Action::CreateReplicaKey, None, |call| {
            call.note_key(&primary.key_id);
            call.note_version(primary.latest_version());
            let inner = self.inner();
            let region = inner.region()?.to_owned();
            let source = multi_region(primary)?;
            validate_description(&options.description)?;
            if options.tags.len() > MAX_TAGS {
                return Err(Error::invalid(format!(
                    "a key may have at most {MAX_TAGS} tags"
                )));
            }
            for (k, v) in &options.tags {
                validate_tag(k, v)?;
            }
            let alias = options
                .alias
                .as_deref()
                .map(Alias::parse_user)
                .transpose()?;
            if let Some(a) = &alias
                && inner.store.resolve_alias(a)?.is_some()
            {
                return Err(Error::AliasExists(a.to_string()));
            }
            if inner.store.get_key(&primary.key_id)?.is_some() {
                return Err(already_here(&primary.key_id, Some(&region)));
            }
            check_importing(inner.backend.as_ref(), &primary.key_id)?;
            let now = inner.clock.now();
            let mut record = KeyRecord::new(
                primary.key_id.clone(),
                primary.spec,
                primary.usage,
                self.principal().clone(),
                now,
            );
            record.description = options.description.clone();
            record.tags = options.tags.clone();
            record.state = match primary.state {
                KeyState::Disabled => KeyState::Disabled,
                _ => KeyState::Enabled,
            };
            record.versions = primary.versions.clone();
            record.primary_version = primary.primary_version;
            record.rotations = primary.rotations.clone();
            record.origin = primary.origin;
            record.multi_region = Some(MultiRegion {
                region,
                primary_region: source.region.clone(),
                replica_regions: Vec::new(),
                synced_at: Some(now),
            });
            let opened = self.exchange(&primary.key_id, primary.spec, seal)?;
            let expected = version_numbers(primary);
            if opened.iter().map(|(v, _)| *v).collect::<Vec<_>>() != expected {
                return Err(Error::invalid(
                    "the primary sent other versions than its record lists",
                ));
            }
            inner.install_replica(
                KeyMetadata::new(record.clone(), KeyAccess::default()),
                alias.as_ref(),
                &opened,
            )?;
            Ok(record)
        })
    }

    /// One exchange in the target ring: a one-time key bound to this
    /// principal and `key_id`, the source's sealing, and the opening of
    /// every version (all or none). The token is dropped if anything fails.
    fn exchange(
        &self,
        key_id: &KeyId,
        spec: crate::key::KeySpec,
        seal: impl FnOnce(&ImportParameters) -> Result<Vec<(u32, Vec<u8>)>>,
    ) -> Result<Vec<(u32, SecretBytes)>> {
        let params = self.new_import(spec, Some(key_id.clone()), ImportPurpose::Replica)?;
        let opened = seal(&params)
            .and_then(|sealed| self.unwrap_replica(&params.import_token, key_id, &sealed));
        if opened.is_err() {
            self.drop_import(&params.import_token);
        }
        opened
    }

    /// Sends the versions the primary `key` (in this ring) has and the
    /// replica in `replica`'s ring lacks, and brings the replica's primary
    /// version and primary region up to date. Returns the replica's record.
    /// Nothing changes in the replica if any version fails.
    ///
    /// Needs [`Action::ReplicateKey`] on the key here and
    /// [`Action::SyncReplica`] on the replica there.
    pub fn sync_replica<'k>(
        &self,
        key: impl Into<KeyRef<'k>>,
        replica: &Client,
    ) -> Result<KeyRecord> {
        let (here, _) = self.two_regions(replica)?;
        self.on_key(Action::ReplicateKey, key, None, |call, meta| {
            primary_here(meta, &here)?;
            let backend = self.inner().backend.as_ref();
            if backend.exporting().is_none() {
                return Err(no_export(backend, &meta.key_id));
            }
            call.note_version(meta.latest_version());
            replica.receive_sync(meta, |params, missing| {
                self.inner().seal_versions(meta, params, missing)
            })
        })
    }

    /// The target half of [`Client::sync_replica`], in the replica's ring.
    fn receive_sync(
        &self,
        primary: &KeyMetadata,
        seal: impl FnOnce(&ImportParameters, &[u32]) -> Result<Vec<(u32, Vec<u8>)>>,
    ) -> Result<KeyRecord> {
        self.on_key(Action::SyncReplica, &primary.key_id, None, |call, rmeta| {
            let mr = multi_region(rmeta)?;
            if mr.is_primary() {
                return Err(Error::invalid(format!(
                    "key {} is the primary in region {}: there is nothing to sync into it",
                    rmeta.key_id, mr.region
                )));
            }
            if rmeta.spec != primary.spec {
                return Err(Error::invalid(format!(
                    "key {} is {} here and {} in the primary region",
                    rmeta.key_id, rmeta.spec, primary.spec
                )));
            }
            let mine = version_numbers(rmeta);
            let missing: Vec<u32> = version_numbers(primary)
                .into_iter()
                .filter(|v| !mine.contains(v))
                .collect();
            call.note_version(primary.latest_version());
            let opened = if missing.is_empty() {
                Vec::new()
            } else {
                check_importing(self.inner().backend.as_ref(), &rmeta.key_id)?;
                self.exchange(&rmeta.key_id, rmeta.spec, |params| seal(params, &missing))?
            };
            Ok(self
                .inner()
                .apply_sync(&rmeta.key_id, primary, &opened)?
                .record
                .clone())
        })
    }

    /// Makes the replica of `key` in `new_primary`'s ring the primary, and
    /// this ring's primary a replica of it. The replica must hold every
    /// version the primary has (sync first); the check and the demotion are
    /// one store update here, so a concurrent rotation cannot slip between.
    ///
    /// This region is demoted first: if promoting the other fails, neither
    /// region is primary (nothing rotates) and calling again from here
    /// finishes the move. Other replicas learn the new primary region at
    /// their next [`Client::sync_replica`] from it.
    ///
    /// Needs [`Action::UpdatePrimaryRegion`] on the key in both rings.
    pub fn update_primary_region<'k>(
        &self,
        key: impl Into<KeyRef<'k>>,
        new_primary: &Client,
    ) -> Result<()> {
        let (here, there) = self.two_regions(new_primary)?;
        self.on_key(Action::UpdatePrimaryRegion, key, None, |_, meta| {
            let key_id = meta.key_id.clone();
            new_primary.on_key(Action::UpdatePrimaryRegion, &key_id, None, |_, target| {
                let tmr = multi_region(target)?;
                if tmr.is_primary() {
                    return Err(Error::invalid(format!(
                        "key {key_id} is already the primary in region {there}"
                    )));
                }
                if tmr.primary_region != here {
                    return Err(Error::invalid(format!(
                        "the replica of {key_id} in region {there} names region {} as its \
                         primary, not {here}",
                        tmr.primary_region
                    )));
                }
                let wanted = version_numbers(target);
                let mut replicas = Vec::new();
                self.inner().store.update_key(&key_id, &mut |m| {
                    let mr = multi_region(m)?.clone();
                    let resuming = !mr.is_primary() && mr.primary_region == there;
                    if !mr.is_primary() && !resuming {
                        return Err(Error::invalid(format!(
                            "key {key_id} is not the primary in region {here} (its primary \
                             is in region {})",
                            mr.primary_region
                        )));
                    }
                    if version_numbers(m) != wanted {
                        return Err(Error::invalid(format!(
                            "the replica of {key_id} in region {there} lacks versions of the \
                             primary: sync_replica first"
                        )));
                    }
                    replicas = mr.replica_regions.clone();
                    if let Some(mr) = m.multi_region.as_mut() {
                        mr.primary_region = there.clone();
                        mr.replica_regions.clear();
                        mr.synced_at = Some(self.inner().clock.now());
                    }
                    Ok(())
                })?;
                replicas.retain(|r| r != &there);
                if !replicas.contains(&here) {
                    replicas.push(here.clone());
                }
                replicas.sort();
                new_primary.inner().store.update_key(&key_id, &mut |m| {
                    let mr = m.multi_region.as_mut().ok_or_else(|| {
                        Error::Conflict(format!("{key_id} is no longer multi-region"))
                    })?;
                    mr.primary_region = mr.region.clone();
                    mr.replica_regions = replicas.clone();
                    mr.synced_at = None;
                    Ok(())
                })?;
                Ok(())
            })
        })
    }

    /// Compares the replica `key` in this ring with its primary in
    /// `primary`'s ring: versions the replica lacks, and when it last
    /// synced. Needs `DescribeKey` on the key in both rings.
    pub fn replica_status<'k>(
        &self,
        key: impl Into<KeyRef<'k>>,
        primary: &Client,
    ) -> Result<ReplicaStatus> {
        let mine = self.describe_key(key)?;
        let mr = multi_region(&mine)?.clone();
        let theirs = primary.describe_key(&mine.key_id)?;
        let tmr = multi_region(&theirs)?;
        if !tmr.is_primary() {
            return Err(Error::invalid(format!(
                "key {} is not the primary in region {}",
                mine.key_id, tmr.region
            )));
        }
        let have = version_numbers(&mine);
        Ok(ReplicaStatus {
            key_id: mine.key_id.clone(),
            region: mr.region,
            primary_region: tmr.region.clone(),
            replica_latest_version: mine.latest_version(),
            primary_latest_version: theirs.latest_version(),
            missing_versions: version_numbers(&theirs)
                .into_iter()
                .filter(|v| !have.contains(v))
                .collect(),
            synced_at: mr.synced_at,
        })
    }
}
