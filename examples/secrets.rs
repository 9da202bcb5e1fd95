//! The secrets store on a file keystore: create, version, read by path,
//! rotate with a test step, a failed rotation that changes nothing, and a
//! restart that finds everything.
//!
//! ```sh
//! cargo run --example secrets
//! ```

use strongroom::keyring::ListOptions;
use strongroom::keyring::secrets::{SecretInput, SecretVersion, StagingLabel};
use strongroom::store::{KeystoreOptions, OpenMode, RootKey};
use strongroom::{CreateKeyOptions, Error, KeyRing, KeySpec, Principal};

fn open(dir: &std::path::Path) -> Result<KeyRing, Error> {
    Ok(KeyRing::builder()
        .file_keystore(
            dir,
            &RootKey::raw([0x5e; 32]),
            KeystoreOptions::default().mode(OpenMode::OpenOrCreate),
        )?
        .build())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let ring = open(dir.path())?;
    let app = ring.client(Principal::service("billing")?);
    let key = app.create_key(
        KeySpec::default(),
        CreateKeyOptions::new().alias("alias/billing-secrets"),
    )?;

    app.create_secret("/billing/prod/db/password", &key, SecretInput::Text("pw-1"))?;
    app.create_secret("/billing/prod/db/user", &key, SecretInput::Text("billing"))?;
    app.create_secret("/billing/dev/db/password", &key, SecretInput::Text("dev"))?;
    app.put_secret_value("/billing/prod/db/password", SecretInput::Text("pw-2"))?;

    let cur = app.get_secret_value("/billing/prod/db/password", &SecretVersion::CURRENT)?;
    let prev = app.get_secret_value(
        "/billing/prod/db/password",
        &SecretVersion::Label(StagingLabel::Previous),
    )?;
    println!(
        "password: CURRENT is version {} ({} bytes), PREVIOUS is version {}",
        cur.version_id,
        cur.expose_bytes().len(),
        prev.version_id
    );
    let page = app.get_secrets_by_path("/billing/prod", ListOptions::default())?;
    let names: Vec<&str> = page.items.iter().map(|v| v.name.as_str()).collect();
    println!("under /billing/prod: {names:?}");

    // A rotation whose test fails leaves CURRENT alone.
    let failed = app.rotate_secret(
        "/billing/prod/db/password",
        |_current| Ok(b"pw-3".to_vec()),
        |_new| {
            Err(Error::InvalidArgument(
                "the database refused the new password".into(),
            ))
        },
    );
    println!("rotation with a failing test: {}", failed.unwrap_err());
    let still = app.get_secret_value("/billing/prod/db/password", &SecretVersion::CURRENT)?;
    assert_eq!(still.version_id, cur.version_id);

    // A rotation that passes its test is promoted atomically.
    let rotated = app.rotate_secret(
        "/billing/prod/db/password",
        |_current| Ok(b"pw-3".to_vec()),
        |new| {
            if new == b"pw-3" {
                Ok(())
            } else {
                Err(Error::InvalidArgument("unexpected value".into()))
            }
        },
    )?;
    println!("rotated: CURRENT is now version {rotated}");

    // Another ring on the same directory (a restart) sees the same state.
    drop((app, ring));
    let ring = open(dir.path())?;
    let app = ring.client(Principal::service("billing")?);
    let d = app.describe_secret("/billing/prod/db/password")?;
    println!(
        "after a restart: {} versions, CURRENT = {}",
        d.versions.len(),
        d.versions
            .iter()
            .find(|v| v.labels.contains(&StagingLabel::Current))
            .map(|v| v.version_id.as_str())
            .unwrap_or("?")
    );
    // Someone else cannot read it: the key's policy names only its creator.
    let other = ring.client(Principal::user("mallory")?);
    let denied = other.get_secret_value("/billing/prod/db/password", &SecretVersion::CURRENT);
    println!("user:mallory reads it: {}", denied.unwrap_err());
    Ok(())
}
