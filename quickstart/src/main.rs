//! The five-minute tour: create a key, encrypt a secret, seal 1 MiB, open it.
//!
//! Run with `cargo run -p quickstart`.

use strongroom::keyring::EnableRotationOptions;
use strongroom::{CreateKeyOptions, EncryptionContext, KeyRing, KeySpec, Principal};

fn main() -> Result<(), strongroom::Error> {
    // An in-memory ring: master keys live in this process only.
    let ring = KeyRing::in_memory();
    // Every operation is done as someone.
    let app = ring.client(Principal::service("quickstart")?);

    let key = app.create_key(
        KeySpec::default(),
        CreateKeyOptions::new()
            .alias("alias/quickstart")
            .description("demo key")
            .tag("team", "docs"),
    )?;
    let meta = app.describe_key("alias/quickstart")?;
    println!(
        "created key {key} ({}, version {}) as {}",
        meta.spec,
        meta.primary_version,
        app.principal()
    );

    // Direct encryption of a small secret, bound to a context.
    let ctx = EncryptionContext::new()
        .with("purpose", "quickstart")
        .with("tenant", "acme");
    let blob = app.encrypt("alias/quickstart", b"db-password-hunter2", &ctx)?;
    let back = app.decrypt(&blob, &ctx)?;
    println!(
        "encrypt: 19-byte secret -> {}-byte blob naming key {} v{}; decrypt ok: {}",
        blob.len(),
        back.key_id,
        back.key_version,
        back.plaintext.expose_secret() == b"db-password-hunter2"
    );

    // The wrong context is refused with one opaque error.
    let wrong = EncryptionContext::new().with("tenant", "evil");
    println!(
        "decrypt with the wrong context: {}",
        app.decrypt(&blob, &wrong).unwrap_err()
    );

    // Envelope encryption of 1 MiB: a fresh data key per message.
    let data: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let message = app.seal("alias/quickstart", &data, &ctx)?;
    let opened = app.open(&message, &ctx)?;
    println!(
        "seal: 1 MiB -> {} bytes ({} bytes of overhead); open ok: {}, key {} v{}",
        message.len(),
        message.len() - data.len(),
        opened.plaintext.expose_secret() == data.as_slice(),
        opened.key_id,
        opened.key_version
    );

    // A data key for your own encryption: keep only the ciphertext.
    let dk = app.generate_data_key("alias/quickstart", &ctx)?;
    println!(
        "data key: 32 secret bytes for your own cipher (printing it shows only \
         \"<redacted>\"), and a {}-byte ciphertext of it under key {} v{} to store",
        dk.ciphertext().len(),
        dk.key_id(),
        dk.key_version()
    );
    let again = app.decrypt_data_key(dk.ciphertext(), &ctx)?;
    println!(
        "data key decrypts to the same bytes: {}",
        again.plaintext() == dk.plaintext()
    );

    // Rotation: a new version encrypts; old ciphertexts name their version
    // and keep opening.
    let v2 = app.rotate_key_on_demand("alias/quickstart")?;
    let new_blob = app.encrypt("alias/quickstart", b"rotated secret", &ctx)?;
    let old = app.decrypt(&blob, &ctx)?;
    let new = app.decrypt(&new_blob, &ctx)?;
    println!(
        "rotated to version {v2}: the old blob still opens with v{}, the new one uses v{}",
        old.key_version, new.key_version
    );
    let moved = app.re_encrypt(&blob, &ctx, "alias/quickstart", &ctx)?;
    if let strongroom::envelope::CiphertextInfo::Blob {
        key_id,
        key_version,
    } = strongroom::envelope::inspect(&moved)?
    {
        println!("re_encrypt moved the old blob to key {key_id} v{key_version}");
    }
    let schedule = app.enable_key_rotation("alias/quickstart", EnableRotationOptions::default())?;
    println!(
        "automatic rotation every {} days, next on {}",
        schedule.period_days, schedule.next_rotation
    );
    Ok(())
}
