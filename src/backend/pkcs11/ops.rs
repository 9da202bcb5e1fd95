//! The backend traits on a PKCS#11 token.

use super::util::*;
use super::*;
use super::{KeyBackend, MaterialId, SigningBackend};
use crate::crypto::{NONCE_LEN, TAG_LEN};
use crate::error::{Error, Result};
use crate::key::{KeySpec, SymmetricAlgorithm};
use crate::random::random_array;
use crate::secret::SecretBytes;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass};

impl KeyBackend for Pkcs11Backend {
    fn name(&self) -> &str {
        "pkcs11"
    }

    fn supports(&self, spec: KeySpec) -> bool {
        matches!(
            spec,
            KeySpec::Symmetric(SymmetricAlgorithm::Aes256Gcm)
                | KeySpec::EccNistP256
                | KeySpec::Ed25519
        )
    }

    fn generate(&self, id: &MaterialId, spec: KeySpec) -> Result<()> {
        if !self.supports(spec) {
            return Err(Error::Unsupported(format!(
                "the PKCS#11 backend cannot hold {spec} keys (AES-256-GCM, P-256 and Ed25519 only)"
            )));
        }
        // Any object under the label, of any class, blocks generation: a
        // second object would make the label ambiguous (see the module docs).
        if self.label_taken(id)? {
            return Err(Error::invalid(format!(
                "material {id} already exists on the token"
            )));
        }
        if let Some(oid) = match spec {
            KeySpec::EccNistP256 => Some(P256_OID),
            KeySpec::Ed25519 => Some(ED25519_OID),
            _ => None,
        } {
            let label = self.label(id);
            let mech = if spec == KeySpec::Ed25519 {
                Mechanism::EccEdwardsKeyPairGen
            } else {
                Mechanism::EccKeyPairGen
            };
            self.with_session(|s| {
                s.generate_key_pair(
                    &mech,
                    &[
                        Attribute::Token(true),
                        Attribute::EcParams(oid.to_vec()),
                        Attribute::Verify(true),
                        Attribute::Label(label.clone()),
                        Attribute::Id(label.clone()),
                    ],
                    &[
                        Attribute::Token(true),
                        Attribute::Private(true),
                        Attribute::Sensitive(true),
                        Attribute::Extractable(false),
                        Attribute::Sign(true),
                        Attribute::Label(label.clone()),
                        Attribute::Id(label.clone()),
                    ],
                )
            })
            .map_err(other)?;
            return Ok(());
        }
        let label = self.label(id);
        let h = self
            .with_session(|s| {
                s.generate_key(
                    &Mechanism::AesKeyGen,
                    &[
                        Attribute::Class(ObjectClass::SECRET_KEY),
                        Attribute::KeyType(KeyType::AES),
                        Attribute::Token(true),
                        Attribute::Private(true),
                        Attribute::Sensitive(true),
                        Attribute::Extractable(false),
                        Attribute::ValueLen(32.into()),
                        Attribute::Encrypt(true),
                        Attribute::Decrypt(true),
                        Attribute::Label(label.clone()),
                        Attribute::Id(label.clone()),
                    ],
                )
            })
            .map_err(other)?;
        self.handles
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), h);
        Ok(())
    }

    fn encrypt(&self, id: &MaterialId, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let h = self.handle(id)?;
        let nonce: [u8; NONCE_LEN] = random_array(self.rng.as_ref())?;
        // The blob carries the IV read back after C_Encrypt, which is the
        // software nonce unless the token generated its own (module docs).
        let (iv, ct) = self
            .with_session(|s| gcm_encrypt_raw(s, h, nonce, aad, plaintext))
            .map_err(other)?;
        gcm_blob(&iv, plaintext.len(), &ct)
    }

    fn decrypt(&self, id: &MaterialId, aad: &[u8], payload: &[u8]) -> Result<SecretBytes> {
        if payload.len() < NONCE_LEN + TAG_LEN {
            return Err(Error::DecryptionFailed);
        }
        let h = self.handle(id)?;
        self.with_session(|s| gcm_decrypt_raw(s, h, aad, payload))
            .map(SecretBytes::new)
            .map_err(decrypt_error)
    }

    fn destroy(&self, id: &MaterialId) -> Result<()> {
        let label = self.label(id);
        self.with_session(|s| {
            for h in s.find_objects(&[Attribute::Label(label.clone())])? {
                s.destroy_object(h)?;
            }
            Ok(())
        })
        .map_err(other)?;
        self.handles
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        self.signers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        Ok(())
    }

    fn contains(&self, id: &MaterialId) -> Result<bool> {
        Ok(self.find(id)?.is_some() || self.find_signer(id)?.is_some())
    }

    fn raw_aead_payloads(&self) -> bool {
        true
    }

    fn signing(&self) -> Option<&dyn SigningBackend> {
        Some(self)
    }

    /// Only with [`super::Pkcs11Config::allow_imported_material`].
    fn importing(&self) -> Option<&dyn ImportBackend> {
        if self.allow_imported {
            Some(self)
        } else {
            None
        }
    }
}

/// Wipes the `CKA_VALUE` of a template once the token has its copy
/// (cryptoki's `Attribute` holds a plain `Vec`).
fn wipe_values(template: &mut [Attribute]) {
    use zeroize::Zeroize;
    for a in template {
        if let Attribute::Value(v) = a {
            v.zeroize();
        }
    }
}

/// `CKA_EC_POINT`: a DER OCTET STRING around the point (short form; the
/// points here are 65 or 32 bytes).
fn ec_point(point: &[u8]) -> Vec<u8> {
    let mut v = vec![0x04, point.len() as u8];
    v.extend_from_slice(point);
    v
}

impl ImportBackend for Pkcs11Backend {
    /// Creates the material on the token with `C_CreateObject`, with the
    /// same attributes as generated keys: token object, private, sensitive,
    /// not extractable (so it cannot be read back afterwards). AES-256 keys
    /// become one secret-key object; P-256 and Ed25519 keys a private-key
    /// object (the scalar or seed as `CKA_VALUE`) and its public-key object
    /// (the point computed here from the private key). The raw bytes given
    /// to the token are wiped from the template afterwards. Either all
    /// objects are created or none remains.
    fn import(&self, id: &MaterialId, spec: KeySpec, raw: &[u8]) -> Result<()> {
        if !self.allow_imported {
            return Err(Error::Unsupported(
                "this PKCS#11 backend refuses key objects not generated on the token; \
                 import (and replicas) need Pkcs11Config::allow_imported_material(true)"
                    .into(),
            ));
        }
        if !self.supports(spec) {
            return Err(Error::Unsupported(format!(
                "the PKCS#11 backend cannot hold {spec} keys (AES-256-GCM, P-256 and Ed25519 only)"
            )));
        }
        // Validates the bytes (length, a valid scalar) before the token sees them.
        crate::backend::material::Material::from_raw(spec, raw)?;
        if self.label_taken(id)? {
            return Err(Error::invalid(format!(
                "material {id} already exists on the token"
            )));
        }
        let label = self.label(id);
        let private = |key_type: KeyType, extra: Vec<Attribute>| {
            let mut t = vec![
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::KeyType(key_type),
                Attribute::Label(label.clone()),
                Attribute::Id(label.clone()),
                Attribute::Value(raw.to_vec()),
            ];
            t.extend(extra);
            t
        };
        match spec {
            KeySpec::Symmetric(_) => {
                let mut t = private(
                    KeyType::AES,
                    vec![
                        Attribute::Class(ObjectClass::SECRET_KEY),
                        Attribute::Encrypt(true),
                        Attribute::Decrypt(true),
                    ],
                );
                let r = self.with_session(|s| s.create_object(&t));
                wipe_values(&mut t);
                let h = r.map_err(other)?;
                self.handles
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id.clone(), h);
                Ok(())
            }
            _ => {
                let (key_type, oid, point) = if spec == KeySpec::Ed25519 {
                    let seed: [u8; 32] = raw
                        .try_into()
                        .map_err(|_| Error::invalid("an Ed25519 seed is 32 bytes"))?;
                    let sk = ed25519_dalek::SigningKey::from_bytes(&seed);
                    let point = sk.verifying_key().to_bytes().to_vec();
                    (KeyType::EC_EDWARDS, ED25519_OID, point)
                } else {
                    let sk = p256::ecdsa::SigningKey::from_slice(raw)
                        .map_err(|_| Error::invalid("not a P-256 scalar"))?;
                    let point = sk.verifying_key().to_sec1_point(false).as_bytes().to_vec();
                    (KeyType::EC, P256_OID, point)
                };
                let public = vec![
                    Attribute::Class(ObjectClass::PUBLIC_KEY),
                    Attribute::KeyType(key_type),
                    Attribute::Token(true),
                    Attribute::EcParams(oid.to_vec()),
                    Attribute::EcPoint(ec_point(&point)),
                    Attribute::Verify(true),
                    Attribute::Label(label.clone()),
                    Attribute::Id(label.clone()),
                ];
                let mut t = private(
                    key_type,
                    vec![
                        Attribute::Class(ObjectClass::PRIVATE_KEY),
                        Attribute::EcParams(oid.to_vec()),
                        Attribute::Sign(true),
                    ],
                );
                let r = self.with_session(|s| {
                    let pubh = s.create_object(&public)?;
                    match s.create_object(&t) {
                        Ok(h) => Ok(h),
                        Err(e) => {
                            // All or nothing: no public key without its private key.
                            let _ = s.destroy_object(pubh);
                            Err(e)
                        }
                    }
                });
                wipe_values(&mut t);
                r.map_err(other)?;
                Ok(())
            }
        }
    }
}

impl SigningBackend for Pkcs11Backend {
    fn sign(&self, id: &MaterialId, data: &[u8]) -> Result<Vec<u8>> {
        use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
        let (h, edwards) = self
            .find_signer(id)?
            .ok_or_else(|| Error::KeyNotFound(id.to_string()))?;
        if edwards {
            return self
                .with_session(|s| {
                    s.sign(
                        &Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                        h,
                        data,
                    )
                })
                .map_err(other);
        }
        if data.len() != 32 {
            return Err(Error::invalid(
                "an ECDSA P-256 digest must be 32 bytes (SHA-256)",
            ));
        }
        // CKM_ECDSA on the SHA-256 digest computed by the caller; low-S
        // normalization as the memory backend does.
        let raw = self
            .with_session(|s| s.sign(&Mechanism::Ecdsa, h, data))
            .map_err(other)?;
        let sig = p256::ecdsa::Signature::from_slice(&raw)
            .map_err(|_| Error::invalid("the token returned a malformed ECDSA signature"))?;
        Ok(sig.normalize_s().to_bytes().to_vec())
    }

    fn public_key(&self, id: &MaterialId) -> Result<Vec<u8>> {
        use cryptoki::object::AttributeType;
        let h = self
            .find_unique(id, ObjectClass::PUBLIC_KEY)?
            .ok_or_else(|| Error::KeyNotFound(id.to_string()))?;
        let attrs = self
            .with_session(|s| {
                s.get_attributes(h, &[AttributeType::KeyType, AttributeType::EcPoint])
            })
            .map_err(other)?;
        let mut edwards = false;
        let mut point: Option<Vec<u8>> = None;
        for a in attrs {
            match a {
                Attribute::KeyType(t) => edwards = t == KeyType::EC_EDWARDS,
                Attribute::EcPoint(p) => point = Some(p),
                _ => {}
            }
        }
        let bad = || Error::invalid("the token returned a malformed public key");
        let point = point.ok_or_else(bad)?;
        // CKA_EC_POINT is a DER OCTET STRING around the point.
        let raw = match point.as_slice() {
            [0x04, len, rest @ ..] if *len as usize == rest.len() => rest,
            other => other,
        };
        if edwards {
            use ed25519_dalek::pkcs8::EncodePublicKey;
            let bytes: [u8; 32] = raw.try_into().map_err(|_| bad())?;
            let vk = ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| bad())?;
            Ok(vk
                .to_public_key_der()
                .map_err(|_| bad())?
                .as_bytes()
                .to_vec())
        } else {
            use p256::pkcs8::EncodePublicKey;
            let pk = p256::PublicKey::from_sec1_bytes(raw).map_err(|_| bad())?;
            Ok(pk
                .to_public_key_der()
                .map_err(|_| bad())?
                .as_bytes()
                .to_vec())
        }
    }
}
