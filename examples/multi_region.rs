//! Multi-region keys across two file keystores (two "regions"): seal in
//! one, open in the other with no call across, rotate on the primary and
//! sync, then promote the replica.
//!
//! ```sh
//! cargo run --example multi_region
//! ```

use strongroom::keyring::ReplicaOptions;
use strongroom::store::{KeystoreOptions, OpenMode, RootKey};
use strongroom::{CreateKeyOptions, EncryptionContext, Error, KeyRing, KeySpec, Principal};

fn region(dir: &std::path::Path, name: &str, root: u8) -> Result<KeyRing, Error> {
    Ok(KeyRing::builder()
        .file_keystore(
            dir,
            &RootKey::raw([root; 32]),
            KeystoreOptions::default().mode(OpenMode::OpenOrCreate),
        )?
        .region(name)
        .build())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (da, db) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let eu = region(da.path(), "eu-west", 1)?;
    let us = region(db.path(), "us-east", 2)?;
    let ceu = eu.client(Principal::service("orders")?);
    let cus = us.client(Principal::service("orders")?);
    let ctx = EncryptionContext::new().with("tenant", "acme");

    let key = ceu.create_key(
        KeySpec::default(),
        CreateKeyOptions::new().multi_region(true),
    )?;
    println!("primary {key} in eu-west");
    let message = ceu.seal(&key, b"order #1", &ctx)?;
    let replica = ceu.replicate_key(&key, &cus, ReplicaOptions::new().alias("alias/orders"))?;
    println!(
        "replica in {} (versions {:?})",
        replica
            .multi_region
            .as_ref()
            .map_or("?", |m| m.region.as_str()),
        replica
            .versions
            .iter()
            .map(|v| v.version)
            .collect::<Vec<_>>()
    );
    let opened = cus.open(&message, &ctx)?;
    println!(
        "us-east opens eu-west's message: {:?}",
        String::from_utf8_lossy(opened.plaintext.expose_secret())
    );

    // Rotation happens on the primary; the replica is behind until synced.
    ceu.rotate_key_on_demand(&key)?;
    let v2 = ceu.seal(&key, b"order #2", &ctx)?;
    match cus.open(&v2, &ctx) {
        Err(e @ Error::ReplicaVersionUnknown { .. }) => println!("before sync: {e}"),
        other => println!("before sync, unexpected: {other:?}"),
    }
    ceu.sync_replica(&key, &cus)?;
    println!(
        "after sync: us-east opens version {}",
        cus.open(&v2, &ctx)?.key_version
    );

    // Promote us-east: it rotates now, and eu-west follows by sync.
    ceu.update_primary_region(&key, &cus)?;
    let v3 = cus.rotate_key_on_demand(&key)?;
    cus.sync_replica(&key, &ceu)?;
    let m3 = cus.seal(&key, b"order #3", &ctx)?;
    println!(
        "us-east is primary, rotated to {v3}; eu-west opens it: version {}",
        ceu.open(&m3, &ctx)?.key_version
    );
    Ok(())
}
