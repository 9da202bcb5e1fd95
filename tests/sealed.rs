//! `sealed`: typed encrypted values and encrypted struct fields.

use serde::{Deserialize, Serialize};
use strongroom::sealed::{Encrypted, FIELD_CONTEXT_KEY, with_open_scope, with_scope};
use strongroom::{Client, CreateKeyOptions, EncryptionContext, Error, KeyRing, KeySpec, Principal};

fn setup() -> Client {
    let ring = KeyRing::in_memory();
    let c = ring.client(Principal::service("clinic").unwrap());
    c.create_key(
        KeySpec::default(),
        CreateKeyOptions::new().alias("alias/pii"),
    )
    .unwrap();
    c
}

fn row(id: u64) -> EncryptionContext {
    EncryptionContext::new()
        .with("table", "patients")
        .with("row", id.to_string())
}

#[derive(Serialize, Deserialize, PartialEq, Debug, Clone)]
struct Address {
    street: String,
    zip: u32,
}

#[test]
fn encrypted_values_round_trip_in_text_and_binary_formats() {
    let c = setup();
    let addr = Address {
        street: "12 Hidden Lane".into(),
        zip: 90210,
    };
    let e = Encrypted::seal(&c, "alias/pii", &addr, &row(1)).unwrap();
    assert_eq!(e.open(&c, &row(1)).unwrap(), addr);

    // JSON (human-readable): a base64 string of the message.
    let json = serde_json::to_string(&e).unwrap();
    assert_eq!(json, format!("\"{}\"", e.to_base64()));
    assert!(!json.contains("Hidden"));
    let back: Encrypted<Address> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, e);
    assert_eq!(back.open(&c, &row(1)).unwrap(), addr);

    // CBOR (binary): the message bytes themselves, not base64.
    let mut cbor = Vec::new();
    ciborium::into_writer(&e, &mut cbor).unwrap();
    assert!(
        cbor.len() < e.as_bytes().len() + 4,
        "bytes, not base64 text"
    );
    assert!(cbor.ends_with(e.as_bytes()));
    let back: Encrypted<Address> = ciborium::from_reader(&cbor[..]).unwrap();
    assert_eq!(back.open(&c, &row(1)).unwrap(), addr);

    // Stored bytes and base64 text come back.
    let from_bytes = Encrypted::<Address>::from_bytes(e.as_bytes().to_vec());
    assert_eq!(from_bytes.open(&c, &row(1)).unwrap(), addr);
    let from_text = Encrypted::<Address>::from_base64(&e.to_base64()).unwrap();
    assert_eq!(from_text.open(&c, &row(1)).unwrap(), addr);
    // The message is an ordinary envelope message.
    let opened = c.open(e.as_bytes(), &row(1)).unwrap();
    assert_eq!(
        opened.plaintext.expose_secret(),
        br#"{"street":"12 Hidden Lane","zip":90210}"#
    );
}

#[test]
fn a_wrong_context_is_the_opaque_error() {
    let c = setup();
    let e = Encrypted::seal(&c, "alias/pii", &"078-05-1120".to_string(), &row(1)).unwrap();
    for wrong in [row(2), EncryptionContext::new(), row(1).with("extra", "x")] {
        assert!(matches!(e.open(&c, &wrong), Err(Error::DecryptionFailed)));
    }
    let mut bytes = e.into_bytes();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let tampered = Encrypted::<String>::from_bytes(bytes);
    assert!(matches!(
        tampered.open(&c, &row(1)),
        Err(Error::DecryptionFailed)
    ));
}

#[test]
fn the_wrong_type_is_an_error_that_reveals_nothing() {
    let c = setup();
    let e = Encrypted::seal(&c, "alias/pii", &"top secret words".to_string(), &row(1)).unwrap();
    let as_number = Encrypted::<u32>::from_bytes(e.into_bytes());
    let err = as_number.open(&c, &row(1)).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("u32"), "{text}");
    assert!(!text.contains("secret"), "{text}");
}

#[test]
fn bad_stored_text_is_an_error_not_a_panic() {
    assert!(matches!(
        Encrypted::<String>::from_base64("not base64 !"),
        Err(Error::InvalidArgument(_))
    ));
    let err = serde_json::from_str::<Encrypted<String>>("\"%%%\"").unwrap_err();
    assert!(err.to_string().contains("base64"), "{err}");
    assert!(serde_json::from_str::<Encrypted<String>>("42").is_err());
    // Valid base64 that is no message: opening fails opaquely.
    let c = setup();
    let junk: Encrypted<String> = serde_json::from_str("\"AAAA\"").unwrap();
    assert!(matches!(
        junk.open(&c, &row(1)),
        Err(Error::DecryptionFailed)
    ));
}

#[test]
fn debug_shows_no_value_and_no_ciphertext() {
    let c = setup();
    let e = Encrypted::seal(&c, "alias/pii", &"078-05-1120".to_string(), &row(1)).unwrap();
    let dbg = format!("{e:?}");
    assert!(dbg.contains("message_len"), "{dbg}");
    assert!(!dbg.contains("078"), "{dbg}");
    let b64 = e.to_base64();
    assert!(!dbg.contains(&b64[..16]), "{dbg}");
}

// ---- encrypted fields ------------------------------------------------------

strongroom::sealed_field!(ssn);
strongroom::sealed_field!(diagnosis_field = "diagnosis");
strongroom::sealed_field!(pub(crate) phone);

#[derive(Serialize, Deserialize, PartialEq, Debug, Clone)]
struct Patient {
    id: u64,
    name: String,
    #[serde(with = "ssn")]
    ssn: String,
    #[serde(with = "diagnosis_field")]
    diagnosis: Option<String>,
    #[serde(with = "phone")]
    phone: String,
}

fn patient(id: u64) -> Patient {
    Patient {
        id,
        name: format!("Patient {id}"),
        ssn: format!("078-05-11{id:02}"),
        diagnosis: id.is_multiple_of(2).then(|| format!("diagnosis {id}")),
        phone: format!("+1 555 01{id:02}"),
    }
}

fn to_json(c: &Client, p: &Patient) -> String {
    with_scope(c, "alias/pii", &row(p.id), || serde_json::to_string(p)).unwrap()
}

fn from_json(c: &Client, id: u64, json: &str) -> serde_json::Result<Patient> {
    with_open_scope(c, &row(id), || serde_json::from_str(json))
}

#[test]
fn fields_round_trip_and_are_not_in_the_output() {
    let c = setup();
    for id in [1, 2] {
        let p = patient(id);
        let json = to_json(&c, &p);
        assert!(json.contains(&p.name), "plain fields stay plain: {json}");
        assert!(!json.contains(&p.ssn) && !json.contains("555"), "{json}");
        assert!(!json.contains("diagnosis "), "{json}");
        assert_eq!(from_json(&c, id, &json).unwrap(), p);
        // with_scope reads too.
        let back: Patient =
            with_scope(&c, "alias/pii", &row(id), || serde_json::from_str(&json)).unwrap();
        assert_eq!(back, p);
    }
    // A binary format: fields are bytes.
    let p = patient(3);
    let mut cbor = Vec::new();
    with_scope(&c, "alias/pii", &row(3), || {
        ciborium::into_writer(&p, &mut cbor)
    })
    .unwrap();
    let back: Patient = with_open_scope(&c, &row(3), || ciborium::from_reader(&cbor[..])).unwrap();
    assert_eq!(back, p);
}

#[test]
fn each_field_is_bound_to_its_name() {
    let c = setup();
    let p = patient(1);
    let json: serde_json::Value = serde_json::from_str(&to_json(&c, &p)).unwrap();
    let e = Encrypted::<String>::deserialize(&json["ssn"]).unwrap();
    assert_eq!(
        e.open(&c, &row(1).with(FIELD_CONTEXT_KEY, "ssn")).unwrap(),
        p.ssn
    );
    assert!(e.open(&c, &row(1)).is_err(), "the field name is bound");
    // The renamed module binds the given name.
    let d = Encrypted::<Option<String>>::deserialize(&json["diagnosis"]).unwrap();
    assert_eq!(
        d.open(&c, &row(1).with(FIELD_CONTEXT_KEY, "diagnosis"))
            .unwrap(),
        None
    );
}

#[test]
fn a_value_moved_to_another_field_or_row_does_not_open() {
    let c = setup();
    let one: serde_json::Value = serde_json::from_str(&to_json(&c, &patient(1))).unwrap();
    let two: serde_json::Value = serde_json::from_str(&to_json(&c, &patient(2))).unwrap();

    // Same row, two fields of the same type swapped.
    let mut swapped = one.clone();
    swapped["ssn"] = one["phone"].clone();
    swapped["phone"] = one["ssn"].clone();
    // (`Value` writes keys in sorted order: `phone` is read first.)
    let err = from_json(&c, 1, &swapped.to_string()).unwrap_err();
    assert!(err.to_string().contains("field `phone`"), "{err}");
    assert!(err.to_string().contains("decryption failed"), "{err}");
    let mut one_swapped = one.clone();
    one_swapped["ssn"] = one["phone"].clone();
    let err = from_json(&c, 1, &one_swapped.to_string()).unwrap_err();
    assert!(err.to_string().contains("field `ssn`"), "{err}");

    // Patient 2's ssn pasted into patient 1's row.
    let mut moved = one.clone();
    moved["ssn"] = two["ssn"].clone();
    let err = from_json(&c, 1, &moved.to_string()).unwrap_err();
    assert!(err.to_string().contains("field `ssn`"), "{err}");

    // The whole record read as another row.
    assert!(from_json(&c, 2, &one.to_string()).is_err());
    // Untouched, it opens.
    assert_eq!(from_json(&c, 1, &one.to_string()).unwrap(), patient(1));
}

#[test]
fn a_missing_scope_is_a_clear_serde_error() {
    let c = setup();
    let p = patient(1);
    let err = serde_json::to_string(&p).unwrap_err();
    assert!(err.to_string().contains("no sealing scope"), "{err}");
    assert!(err.to_string().contains("with_scope"), "{err}");
    let json = to_json(&c, &p);
    let err = serde_json::from_str::<Patient>(&json).unwrap_err();
    assert!(err.to_string().contains("no sealing scope"), "{err}");

    // An open-only scope cannot seal, and says so.
    let err = with_open_scope(&c, &row(1), || serde_json::to_string(&p)).unwrap_err();
    assert!(err.to_string().contains("with_scope"), "{err}");

    // A scope context that already uses the field key is refused.
    let clash = row(1).with(FIELD_CONTEXT_KEY, "x");
    let err = with_scope(&c, "alias/pii", &clash, || serde_json::to_string(&p)).unwrap_err();
    assert!(err.to_string().contains("must not"), "{err}");

    // Errors of the ring come through: an unknown key.
    let err = with_scope(&c, "alias/nope", &row(1), || serde_json::to_string(&p)).unwrap_err();
    assert!(err.to_string().contains("alias/nope"), "{err}");
}

#[test]
fn scopes_nest_and_are_restored_after_a_panic() {
    let c = setup();
    let p1 = patient(1);
    let p2 = patient(2);
    let (a, b) = with_scope(&c, "alias/pii", &row(1), || {
        let inner = with_scope(&c, "alias/pii", &row(2), || serde_json::to_string(&p2));
        // The outer scope is back.
        (serde_json::to_string(&p1), inner)
    });
    assert_eq!(from_json(&c, 1, &a.unwrap()).unwrap(), p1);
    assert_eq!(from_json(&c, 2, &b.unwrap()).unwrap(), p2);

    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        with_scope(&c, "alias/pii", &row(1), || panic!("inside the scope"))
    }));
    assert!(panicked.is_err());
    // No scope leaked out of the panicking closure.
    assert!(serde_json::to_string(&p1).is_err());

    // Scopes are per thread.
    with_scope(&c, "alias/pii", &row(1), || {
        let other = std::thread::spawn(move || serde_json::to_string(&p1).is_err());
        assert!(other.join().unwrap());
    });
}
