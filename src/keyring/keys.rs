//! Key management operations: create, describe and list keys; aliases; tags.

use super::pipeline::check_limit;
use super::{AliasEntry, Client, ListAliasesOptions, ListOptions, MAX_PAGE_LIMIT, Page};
use crate::action::Action;
use crate::backend::MaterialId;
use crate::error::{Error, Result};
use crate::key::KeyRef;
use crate::key::{
    Alias, CreateKeyOptions, KeyId, KeyListEntry, KeyRecord, KeySpec, MAX_TAGS, MultiRegion,
    validate_description, validate_tag,
};
use crate::policy::KeyAccess;
use crate::secret::SecretBytes;
use crate::store::KeyMetadata;
use std::collections::BTreeMap;

/// The one tag-count rule: at most [`MAX_TAGS`] tags per key.
fn check_tag_count(n: usize) -> Result<()> {
    if n > MAX_TAGS {
        return Err(Error::invalid(format!(
            "a key may have at most {MAX_TAGS} tags"
        )));
    }
    Ok(())
}

/// One page from a store listing fetched with `limit + 1` items: the first
/// `limit`, and the marker of the last one if more follow. The one paging
/// rule of every list call.
fn page_of<T>(mut items: Vec<T>, limit: usize, marker_of: impl Fn(&T) -> String) -> Page<T> {
    let next_marker = if items.len() > limit {
        items.truncate(limit);
        items.last().map(marker_of)
    } else {
        None
    };
    Page { items, next_marker }
}

impl Client {
    // ---- keys -------------------------------------------------------------

    /// Creates a customer key of `spec` with one version and returns its id.
    ///
    /// Fails with [`Error::InvalidArgument`] for a bad alias, tag, description
    /// or usage, [`Error::AliasExists`] if the alias is taken (nothing is
    /// created then), [`Error::Unsupported`] if the backend cannot hold `spec`.
    pub fn create_key(&self, spec: KeySpec, options: CreateKeyOptions) -> Result<KeyId> {
        self.on_ring(Action::CreateKey, None, |_| {
            self.create_key_inner(spec, &options, None)
        })
    }

    /// Creates a key with generated material, or with `imported` raw
    /// material. Runs inside an already authorized pipeline step.
    pub(crate) fn create_key_inner(
        &self,
        spec: KeySpec,
        options: &CreateKeyOptions,
        imported: Option<&SecretBytes>,
    ) -> Result<KeyId> {
        {
            let inner = self.inner();
            validate_description(&options.description)?;
            check_tag_count(options.tags.len())?;
            for (k, v) in &options.tags {
                validate_tag(k, v)?;
            }
            let alias = options
                .alias
                .as_deref()
                .map(Alias::parse_user)
                .transpose()?;
            let usage = options.usage.unwrap_or(spec.allowed_usages()[0]);
            if !spec.allowed_usages().contains(&usage) {
                return Err(Error::invalid(format!(
                    "usage {usage} is not allowed for key spec {spec}"
                )));
            }
            if !inner.backend.supports(spec) {
                return Err(Error::Unsupported(format!(
                    "backend {} cannot hold {spec} keys",
                    inner.backend.name()
                )));
            }
            if let Some(a) = &alias
                && inner.store.resolve_alias(a)?.is_some()
            {
                return Err(Error::AliasExists(a.to_string()));
            }
            let now = inner.clock.now();
            let region = if options.multi_region {
                Some(inner.region()?.to_owned())
            } else {
                None
            };
            let key_id = if region.is_some() {
                KeyId::generate_multi_region(inner.rng.as_ref())?
            } else {
                KeyId::generate(inner.rng.as_ref())?
            };
            let mut record =
                KeyRecord::new(key_id.clone(), spec, usage, self.principal.clone(), now);
            record.multi_region = region.map(|r| MultiRegion {
                region: r.clone(),
                primary_region: r,
                replica_regions: Vec::new(),
                synced_at: None,
            });
            record.description = options.description.clone();
            record.tags = options.tags.clone();
            if imported.is_some() {
                record.origin = crate::key::KeyOrigin::Imported;
            }
            let meta = KeyMetadata::new(record, KeyAccess::default());
            let mref = MaterialId::new(key_id.clone(), 1);
            match imported {
                Some(raw) => {
                    inner
                        .import_backend(&mref)?
                        .import(&mref, spec, raw.expose_secret())?
                }
                None => inner.backend.generate(&mref, spec)?,
            }
            if let Err(e) = inner.store.insert_key(meta, alias.as_ref()) {
                // Roll back the material when the store certainly stored
                // nothing; after an I/O error the record may be on disk (a
                // failed directory fsync after the rename), so the material
                // stays: material without metadata is harmless, the reverse
                // is not.
                if matches!(e, Error::AliasExists(_) | Error::InvalidArgument(_)) {
                    let _ = inner.backend.destroy(&mref);
                }
                return Err(e);
            }
            Ok(key_id)
        }
    }

    /// A key's description, by id or alias: everything except its policy
    /// and grants (read those with [`Client::get_key_policy`] and
    /// [`Client::list_grants`]).
    pub fn describe_key<'k>(&self, key: impl Into<KeyRef<'k>>) -> Result<KeyRecord> {
        self.on_key(Action::DescribeKey, key, None, |_, m| Ok(m.record.clone()))
    }

    /// Lists keys in id order, at most `limit` (1 to 1000) per page: their
    /// ids and aliases only, as KMS `ListKeys` does. Pass the previous
    /// page's `next_marker` to continue.
    pub fn list_keys(&self, options: ListOptions) -> Result<Page<KeyListEntry>> {
        let ListOptions { limit, marker } = options;
        self.on_ring(Action::ListKeys, None, |_| {
            check_limit(limit)?;
            let after = marker
                .as_deref()
                .map(|m| KeyId::parse(m).map_err(|_| Error::invalid("marker is not a key id")))
                .transpose()?;
            let store = &self.inner().store;
            let mut keys = store.list_keys(after.as_ref(), limit + 1)?;
            keys.truncate(limit + 1);
            // The aliases of the keys shown (not of the one fetched only to
            // know whether a next page exists), in one store call.
            let shown: Vec<KeyId> = keys.iter().take(limit).map(|k| k.key_id.clone()).collect();
            let mut aliases = store.aliases_of(&shown, MAX_PAGE_LIMIT)?;
            let items = keys
                .iter()
                .map(|k| KeyListEntry {
                    key_id: k.key_id.clone(),
                    aliases: aliases.remove(&k.key_id).unwrap_or_default(),
                    manager: k.manager,
                })
                .collect::<Vec<_>>();
            Ok(page_of(items, limit, |e: &KeyListEntry| {
                e.key_id.to_string()
            }))
        })
    }

    // ---- aliases ----------------------------------------------------------

    /// Creates `alias` (`alias/...`) pointing at `key`. Needs `CreateAlias`
    /// on `key`.
    pub fn create_alias<'k>(&self, alias: &str, key: impl Into<KeyRef<'k>>) -> Result<()> {
        let alias = Alias::parse_user(alias)?;
        self.on_key(Action::CreateAlias, key, None, |_, m| {
            self.inner().store.create_alias(&alias, &m.key_id)
        })
    }

    /// Points an existing alias at another key. As in AWS KMS, needs
    /// `UpdateAlias` on the key the alias points at now *and* on `key`: a
    /// caller who owns only the new key cannot take over another
    /// principal's alias. The store repoints the alias only if it still
    /// names the key the caller was authorized on (else [`Error::Conflict`],
    /// nothing changed).
    pub fn update_alias<'k>(&self, alias: &str, key: impl Into<KeyRef<'k>>) -> Result<()> {
        let parsed = Alias::parse_user(alias)?;
        self.on_key(Action::UpdateAlias, parsed.as_str(), None, |_, m| {
            let current = m;
            let inner = self.inner();
            let dest = inner.resolve(key)?;
            inner.authorize(&self.principal, Action::UpdateAlias, Some(&dest), None)?;
            inner
                .store
                .update_alias(&parsed, &current.key_id, &dest.key_id)
        })
    }

    /// Deletes an alias (the key stays). Needs `DeleteAlias` on the key the
    /// alias points at.
    pub fn delete_alias(&self, alias: &str) -> Result<()> {
        let parsed = Alias::parse(alias)?;
        self.on_key(Action::DeleteAlias, parsed.as_str(), None, |_, m| {
            self.inner().store.delete_alias(&parsed, &m.key_id)
        })
    }

    /// Lists aliases in name order, all of them or only those of `key`.
    pub fn list_aliases(&self, options: ListAliasesOptions) -> Result<Page<AliasEntry>> {
        let ListAliasesOptions {
            key,
            paging: ListOptions { limit, marker },
        } = options;
        let list = |key: Option<&KeyId>| {
            check_limit(limit)?;
            let after = marker
                .as_deref()
                .map(|m| Alias::parse(m).map_err(|_| Error::invalid("marker is not an alias")))
                .transpose()?;
            let list = self
                .inner()
                .store
                .list_aliases(key, after.as_ref(), limit + 1)?
                .into_iter()
                .map(|(alias, key_id)| AliasEntry { alias, key_id })
                .collect();
            Ok(page_of(list, limit, |e: &AliasEntry| e.alias.to_string()))
        };
        match key.as_deref() {
            Some(k) => self.on_key(Action::ListAliases, k, None, |_, m| list(Some(&m.key_id))),
            None => self.on_ring(Action::ListAliases, None, |_| list(None)),
        }
    }

    // ---- tags -------------------------------------------------------------

    /// Adds or replaces tags on a key (at most 50 tags in all).
    pub fn tag_resource<'k>(
        &self,
        key: impl Into<KeyRef<'k>>,
        tags: &[(&str, &str)],
    ) -> Result<()> {
        self.on_key(Action::TagResource, key, None, |_, m| {
            for (k, v) in tags {
                validate_tag(k, v)?;
            }
            self.inner().store.update_key(&m.key_id, &mut |meta| {
                for (k, v) in tags {
                    meta.tags.insert((*k).to_owned(), (*v).to_owned());
                }
                check_tag_count(meta.tags.len())
            })?;
            Ok(())
        })
    }

    /// Removes tags from a key; absent tag keys are ignored.
    pub fn untag_resource<'k>(&self, key: impl Into<KeyRef<'k>>, tag_keys: &[&str]) -> Result<()> {
        self.on_key(Action::UntagResource, key, None, |_, m| {
            self.inner().store.update_key(&m.key_id, &mut |meta| {
                for k in tag_keys {
                    meta.tags.remove(*k);
                }
                Ok(())
            })?;
            Ok(())
        })
    }

    /// A key's tags.
    pub fn list_resource_tags<'k>(
        &self,
        key: impl Into<KeyRef<'k>>,
    ) -> Result<BTreeMap<String, String>> {
        self.on_key(Action::ListResourceTags, key, None, |_, m| {
            Ok(m.tags.clone())
        })
    }
}
