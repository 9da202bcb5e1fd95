//! Unit tests of the PKCS#11 helpers.

use super::util::*;
use super::*;
use crate::crypto::{NONCE_LEN, TAG_LEN};

#[test]
fn gcm_output_must_be_plaintext_plus_tag() {
    assert!(check_gcm_output_len(0, TAG_LEN).is_ok());
    assert!(check_gcm_output_len(32, 32 + TAG_LEN).is_ok());
    // A token that prepends its IV, drops or shortens the tag, or pads.
    for bad in [
        NONCE_LEN + 32 + TAG_LEN,
        32,
        32 + TAG_LEN - 4,
        32 + TAG_LEN + 1,
        0,
    ] {
        let e = check_gcm_output_len(32, bad).unwrap_err();
        assert!(matches!(e, Error::Other(_)), "{e}");
        assert!(e.to_string().contains("returned"), "{e}");
    }
    // No overflow on absurd lengths.
    assert!(check_gcm_output_len(usize::MAX, usize::MAX).is_err());
}

#[test]
fn blob_carries_the_iv_given_and_checks_length() {
    let iv = [7u8; NONCE_LEN];
    let ct = [9u8; 5 + TAG_LEN];
    let blob = gcm_blob(&iv, 5, &ct).unwrap();
    assert_eq!(&blob[..NONCE_LEN], &iv);
    assert_eq!(&blob[NONCE_LEN..], &ct);
    assert!(gcm_blob(&iv, 6, &ct).is_err());
}

#[test]
fn key_attributes_are_all_required() {
    let good = [
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::NeverExtractable(true),
        Attribute::Local(true),
    ];
    assert!(key_attribute_problems(&good, false).is_empty());
    for i in 0..good.len() {
        // Each attribute flipped...
        let mut flipped = good.clone();
        flipped[i] = match &good[i] {
            Attribute::Sensitive(v) => Attribute::Sensitive(!v),
            Attribute::Extractable(v) => Attribute::Extractable(!v),
            Attribute::NeverExtractable(v) => Attribute::NeverExtractable(!v),
            Attribute::Local(v) => Attribute::Local(!v),
            _ => unreachable!(),
        };
        assert_eq!(key_attribute_problems(&flipped, false).len(), 1, "{i}");
        // ...or missing, is a problem.
        let mut missing = good.to_vec();
        missing.remove(i);
        assert_eq!(key_attribute_problems(&missing, false).len(), 1, "{i}");
        // With imported material allowed, only the origin attributes
        // (never extractable, generated on the token) are waived.
        let waived = matches!(
            good[i],
            Attribute::NeverExtractable(_) | Attribute::Local(_)
        );
        assert_eq!(
            key_attribute_problems(&flipped, true).is_empty(),
            waived,
            "{i}"
        );
        assert_eq!(
            key_attribute_problems(&missing, true).is_empty(),
            waived,
            "{i}"
        );
    }
}
