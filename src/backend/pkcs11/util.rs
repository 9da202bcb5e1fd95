//! PKCS#11 helpers: error mapping, the GCM blob checks, and the attribute checks of key objects.

use crate::crypto::{NONCE_LEN, TAG_LEN};
use crate::error::{Error, Result};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use std::sync::Arc;

pub(super) fn other(e: CkError) -> Error {
    Error::Other(Arc::new(e))
}

/// A token returned something the PKCS#11 spec does not allow.
#[derive(Debug, thiserror::Error)]
#[error("the PKCS#11 token misbehaved: {0}")]
pub(super) struct TokenMisbehaved(pub(super) String);

/// The GCM tag length, in bits, of every blob.
pub(super) const GCM_TAG_BITS: u64 = (TAG_LEN * 8) as u64;

/// Checks the output of `C_Encrypt` under `CKM_AES_GCM`: it must be exactly
/// the plaintext length plus the tag. Anything else (a token that prepends
/// its IV, truncates the tag, or pads) would make a blob that cannot be
/// decrypted, so it is refused rather than stored.
pub(super) fn check_gcm_output_len(plaintext_len: usize, output_len: usize) -> Result<()> {
    match plaintext_len.checked_add(TAG_LEN) {
        Some(expected) if expected == output_len => Ok(()),
        _ => Err(Error::Other(Arc::new(TokenMisbehaved(format!(
            "AES-GCM encryption of {plaintext_len} bytes returned {output_len} bytes \
             (expected plaintext + {TAG_LEN}-byte tag); the result was discarded"
        ))))),
    }
}

/// The blob the backend stores: the IV the token used, then ciphertext and
/// tag. `iv` must be the buffer read back after `C_Encrypt` (see the module
/// docs); the output length is checked first.
pub(super) fn gcm_blob(iv: &[u8; NONCE_LEN], plaintext_len: usize, ct: &[u8]) -> Result<Vec<u8>> {
    check_gcm_output_len(plaintext_len, ct.len())?;
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(iv);
    out.extend_from_slice(ct);
    Ok(out)
}

/// `C_EncryptInit` + `C_Encrypt` with `CKM_AES_GCM`, starting from the
/// software IV `iv`, and returns the IV as it is *after* the call with the
/// ciphertext.
///
/// `GcmParams` holds `iv` by `&mut` and hands the token a pointer to it
/// (`CK_GCM_PARAMS.pIv`); a token that generates its own IV writes it there.
/// The mechanism is dropped at the end of the inner block, ending that
/// borrow, so what is returned is exactly what the token left in the buffer.
pub(super) fn gcm_encrypt_raw(
    s: &Session,
    key: ObjectHandle,
    mut iv: [u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> std::result::Result<([u8; NONCE_LEN], Vec<u8>), CkError> {
    let ct = {
        let mech = Mechanism::AesGcm(GcmParams::new(&mut iv, aad, GCM_TAG_BITS.into())?);
        s.encrypt(&mech, key, plaintext)?
    };
    Ok((iv, ct))
}

/// `C_DecryptInit` + `C_Decrypt` of a blob made by [`gcm_blob`]; the caller
/// has checked that it is at least IV + tag long.
pub(super) fn gcm_decrypt_raw(
    s: &Session,
    key: ObjectHandle,
    aad: &[u8],
    payload: &[u8],
) -> std::result::Result<Vec<u8>, CkError> {
    let (nonce, ct) = payload.split_at(NONCE_LEN);
    let mut iv = [0u8; NONCE_LEN];
    iv.copy_from_slice(nonce);
    s.decrypt(
        &Mechanism::AesGcm(GcmParams::new(&mut iv, aad, GCM_TAG_BITS.into())?),
        key,
        ct,
    )
}

/// Maps a failed `C_Decrypt` to the crate's opaque error where it is an
/// authentication failure.
pub(super) fn decrypt_error(e: CkError) -> Error {
    match e {
        // SoftHSM2 reports a failed GCM tag as CKR_GENERAL_ERROR; other
        // tokens use CKR_ENCRYPTED_DATA_INVALID / _LEN_RANGE.
        CkError::Pkcs11(
            RvError::GeneralError | RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange,
            _,
        ) => Error::DecryptionFailed,
        e => other(e),
    }
}

/// Which key attributes of a token object break the rules of the module
/// docs, by PKCS#11 name. `local` is required for every key the backend
/// uses, since the backend only ever generates keys on the token. An
/// attribute the token does not report counts as broken.
pub(super) fn key_attribute_problems(
    attrs: &[Attribute],
    allow_imported: bool,
) -> Vec<&'static str> {
    let (mut sensitive, mut extractable, mut never_extractable, mut local) =
        (None, None, None, None);
    for a in attrs {
        match a {
            Attribute::Sensitive(v) => sensitive = Some(*v),
            Attribute::Extractable(v) => extractable = Some(*v),
            Attribute::NeverExtractable(v) => never_extractable = Some(*v),
            Attribute::Local(v) => local = Some(*v),
            _ => {}
        }
    }
    let mut problems = Vec::new();
    if sensitive != Some(true) {
        problems.push("CKA_SENSITIVE is not true");
    }
    if extractable != Some(false) {
        problems.push("CKA_EXTRACTABLE is not false");
    }
    if never_extractable != Some(true) && !allow_imported {
        problems.push("CKA_NEVER_EXTRACTABLE is not true");
    }
    if local != Some(true) && !allow_imported {
        problems.push("CKA_LOCAL is not true (the key was not generated on the token)");
    }
    problems
}

pub(super) fn class_name(class: ObjectClass) -> &'static str {
    if class == ObjectClass::SECRET_KEY {
        "secret key"
    } else if class == ObjectClass::PRIVATE_KEY {
        "private key"
    } else if class == ObjectClass::PUBLIC_KEY {
        "public key"
    } else {
        "object"
    }
}

/// True for errors after which a session must not be reused.
pub(super) fn session_broken(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceError
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent
                | RvError::UserNotLoggedIn,
            _
        )
    )
}
