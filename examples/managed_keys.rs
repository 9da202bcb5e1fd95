//! Managed keys: a component asks the ring for *its* key by service name;
//! the ring creates it once (AES-256-GCM, yearly rotation that cannot be
//! turned off, a fixed policy) and nobody can change or delete it.
//!
//! ```sh
//! cargo run --example managed_keys
//! ```

use strongroom::{EncryptionContext, KeyRing, Principal};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ring = KeyRing::in_memory();
    let cache = ring.client(Principal::service("cache")?);
    let ctx = EncryptionContext::new().with("entry", "session:42");

    // Many threads asking at once get one key.
    let ids: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let c = cache.clone();
                s.spawn(move || c.managed_key("cache"))
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let key = ids[0].clone()?;
    assert!(ids.iter().all(|k| k.as_ref().ok() == Some(&key)));
    let d = cache.describe_key(&key)?;
    println!(
        "service:cache's key {key}: manager {:?}, rotation {:?}",
        d.manager,
        cache.get_key_rotation_status(&key)?.schedule
    );

    let blob = cache.encrypt(&key, b"cached value", &ctx)?;
    println!(
        "service:cache encrypts and decrypts: {}",
        cache.decrypt(&blob, &ctx).is_ok()
    );

    // Another principal sees the key but cannot use or change it.
    let admin = ring.client(Principal::user("admin")?);
    println!(
        "user:admin describes it: {}",
        admin.describe_key(&key).is_ok()
    );
    println!(
        "user:admin decrypts: {}",
        admin.decrypt(&blob, &ctx).unwrap_err()
    );
    println!(
        "user:admin disables it: {}",
        admin.disable_key(&key).unwrap_err()
    );
    // A service cannot ask for another service's key.
    println!(
        "service:cache asks for service:queue's key: {}",
        cache.managed_key("queue").unwrap_err()
    );
    Ok(())
}
