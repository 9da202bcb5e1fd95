//! Open time and the cost of one change of the file keystore at 10, 1,000
//! and 100,000 keys.
//!
//! ```sh
//! cargo run --release --example keystore_scale            # 10, 1000, 100000
//! cargo run --release --example keystore_scale -- 10 1000 # chosen sizes
//! ```
//!
//! Keys are bulk-created with `Durability::NoSync`; the measured open and
//! changes use the default, fully durable mode: each change writes its
//! records and one manifest shard as new files (fsync each, fsync their
//! directories), then commits by replacing `MANIFEST` (temp file, fsync,
//! rename, directory fsync). Open reads the manifest and every record.

use std::time::{Duration, Instant};
use strongroom::keyring::ListOptions;
use strongroom::store::OpenMode;
use strongroom::store::{Durability, KeystoreOptions, RootKey};
use strongroom::{CreateKeyOptions, EncryptionContext, KeyRing, KeySpec, Principal};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let sizes: Vec<usize> = {
        let a: Vec<usize> = std::env::args()
            .skip(1)
            .filter_map(|a| a.parse().ok())
            .collect();
        if a.is_empty() {
            vec![10, 1_000, 100_000]
        } else {
            a
        }
    };
    let root = [0x5au8; 32];
    println!(
        "{:>8} {:>12} {:>14} {:>14} {:>14}",
        "keys", "open", "tag (1 write)", "rotate", "create+alias"
    );
    for n in sizes {
        let dir = std::env::temp_dir().join(format!("strongroom-scale-{n}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let bulk = KeystoreOptions::default()
            .mode(OpenMode::OpenOrCreate)
            .durability(Durability::NoSync);
        {
            let ring = KeyRing::builder()
                .file_keystore(&dir, &RootKey::raw(root), bulk)
                .unwrap()
                .build();
            let c = ring.client(Principal::service("scale").unwrap());
            for _ in 0..n {
                c.create_key(KeySpec::default(), CreateKeyOptions::new())
                    .unwrap();
            }
        }
        let t = Instant::now();
        let ring = KeyRing::open_or_create(&dir, RootKey::raw(root)).unwrap();
        let open = t.elapsed();
        let c = ring.client(Principal::service("scale").unwrap());
        let key = c.list_keys(ListOptions::default().limit(1)).unwrap().items[0]
            .key_id
            .to_string();
        let time = |f: &dyn Fn(usize)| {
            median(
                (0..9)
                    .map(|i| {
                        let t = Instant::now();
                        f(i);
                        t.elapsed()
                    })
                    .collect(),
            )
        };
        let tag = time(&|i| c.tag_resource(&key, &[("i", &i.to_string())]).unwrap());
        let rotate = time(&|_| {
            c.rotate_key_on_demand(&key).unwrap();
        });
        let create = time(&|i| {
            c.create_key(
                KeySpec::default(),
                CreateKeyOptions::new().alias(format!("alias/scale-{i}")),
            )
            .unwrap();
        });
        assert!(c.encrypt(&key, b"x", &EncryptionContext::new()).is_ok());
        println!(
            "{n:>8} {:>12.1?} {:>14.2?} {:>14.2?} {:>14.2?}",
            open, tag, rotate, create
        );
        drop(ring);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
