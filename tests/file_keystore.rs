//! The durable file keystore on a real filesystem: restarts, wrong keys,
//! tampering, fault injection, kill -9, two processes, root rotation, backup.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use strongroom::policy::GrantRequest;
use strongroom::store::{
    Argon2Params, Durability, KeystoreOptions, RealStorage, RootKey, Storage, export_backup,
    restore_backup, rotate_root_key,
};
use strongroom::verify::{MessageType, SignatureFormat};
use strongroom::{
    Action, CreateKeyOptions, EncryptionContext, Error, HmacAlgorithm, KeyRing, KeySpec, KeyState,
    Principal, SymmetricAlgorithm,
};

const ROOT: [u8; 32] = [0x11; 32];

fn root() -> RootKey {
    RootKey::raw(ROOT)
}

fn p(s: &str) -> Principal {
    s.parse().unwrap()
}

fn ctx() -> EncryptionContext {
    EncryptionContext::new().with("store", "file")
}

fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for sub in ["", "keys", "material", "aliases"] {
        for e in std::fs::read_dir(dir.join(sub)).unwrap() {
            let path = e.unwrap().path();
            if path.is_file() && path.file_name().unwrap() != "LOCK" {
                out.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

#[test]
fn restart_round_trip_of_every_key_type() {
    let dir = tempfile::tempdir().unwrap();
    let specs = [
        KeySpec::Symmetric(SymmetricAlgorithm::Aes256Gcm),
        KeySpec::Symmetric(SymmetricAlgorithm::ChaCha20Poly1305),
        KeySpec::EccNistP256,
        KeySpec::Ed25519,
        KeySpec::Hmac(HmacAlgorithm::Sha256),
        KeySpec::HpkeP256,
    ];
    let mut saved = Vec::new();
    {
        let ring = KeyRing::open(dir.path(), root()).unwrap();
        let c = ring.client(p("service:app"));
        for (i, spec) in specs.iter().enumerate() {
            let id = c
                .create_key(
                    *spec,
                    CreateKeyOptions::new()
                        .alias(format!("alias/k{i}"))
                        .tag("n", i.to_string())
                        .description("persisted"),
                )
                .unwrap()
                .to_string();
            let out: Vec<u8> = match spec {
                KeySpec::Symmetric(_) => {
                    let old = c.encrypt(&id, b"v1", &ctx()).unwrap();
                    c.rotate_now(&id).unwrap();
                    c.enable_rotation(&id, Some(90)).unwrap();
                    let mut both = c.seal(&id, b"sealed", &ctx()).unwrap();
                    both.extend((old.len() as u32).to_be_bytes());
                    both.extend(old);
                    both
                }
                KeySpec::EccNistP256 | KeySpec::Ed25519 => c
                    .sign(&id, b"msg", MessageType::Raw, SignatureFormat::Der)
                    .unwrap(),
                KeySpec::Hmac(_) => c.generate_mac(&id, b"msg").unwrap(),
                _ => {
                    let pk = c.get_public_key(&id).unwrap();
                    strongroom::verify::hpke_seal(&pk.der, b"i", b"hpke", b"").unwrap()
                }
            };
            saved.push((id, *spec, out));
        }
        let (gid, _) = c
            .create_grant(
                &saved[0].0,
                GrantRequest::new(p("user:bob"), &[Action::Decrypt]),
            )
            .unwrap();
        assert!(!gid.is_empty());
        c.disable_key(&saved[1].0).unwrap();
    }
    let ring = KeyRing::open(dir.path(), root()).unwrap();
    let c = ring.client(p("service:app"));
    assert_eq!(c.list_keys(100, None).unwrap().items.len(), specs.len());
    for (i, (id, spec, out)) in saved.iter().enumerate() {
        let m = c.describe_key(&format!("alias/k{i}")).unwrap();
        assert_eq!(&m.key_id.to_string(), id);
        assert_eq!(m.spec, *spec);
        assert_eq!(
            m.tags.get("n").map(String::as_str),
            Some(i.to_string().as_str())
        );
        match spec {
            KeySpec::Symmetric(_) if i == 1 => {
                assert_eq!(m.state, KeyState::Disabled);
                // Disabled survived the restart: refused until enabled.
                assert!(matches!(
                    c.encrypt(id, b"x", &ctx()),
                    Err(Error::InvalidKeyState { .. })
                ));
                c.enable_key(id).unwrap();
            }
            KeySpec::Symmetric(_) => {
                assert_eq!(m.primary_version, 2);
                assert!(m.rotation.is_some());
                assert_eq!(c.list_grants(id).unwrap().len(), 1);
            }
            _ => {}
        }
        match spec {
            KeySpec::Symmetric(_) => {
                let split = out.len();
                // sealed || old_len || old
                let mut found = false;
                for cut in 0..split.saturating_sub(4) {
                    let n = u32::from_be_bytes(out[cut..cut + 4].try_into().unwrap()) as usize;
                    if cut + 4 + n == split {
                        let sealed = &out[..cut];
                        let old = &out[cut + 4..];
                        assert_eq!(
                            c.open(sealed, &ctx()).unwrap().plaintext.expose_secret(),
                            b"sealed"
                        );
                        let d = c.decrypt(old, &ctx()).unwrap();
                        assert_eq!(d.key_version, 1);
                        found = true;
                        break;
                    }
                }
                assert!(found);
            }
            KeySpec::EccNistP256 | KeySpec::Ed25519 => {
                assert!(
                    c.verify(id, b"msg", out, MessageType::Raw, SignatureFormat::Der)
                        .unwrap()
                )
            }
            KeySpec::Hmac(_) => assert!(c.verify_mac(id, b"msg", out).unwrap()),
            _ => assert_eq!(
                c.decrypt_hpke(id, out, b"i", b"").unwrap().expose_secret(),
                b"hpke"
            ),
        }
    }
    // Policies and grants persisted: bob's grant still works after restart.
    let bob = ring.client(p("user:bob"));
    let blob = c.encrypt(&saved[0].0, b"for bob", &ctx()).unwrap();
    assert!(bob.decrypt(&blob, &ctx()).is_ok());
}

#[test]
fn wrong_root_key_or_passphrase_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ring = KeyRing::open(dir.path(), root()).unwrap();
        ring.client(p("user:a"))
            .create_key(KeySpec::default(), CreateKeyOptions::new())
            .unwrap();
    }
    let before = files(dir.path());
    assert!(matches!(
        KeyRing::open(dir.path(), RootKey::raw([0x22; 32])),
        Err(Error::WrongRootKey)
    ));
    assert!(matches!(
        KeyRing::open(dir.path(), RootKey::passphrase("x")),
        Err(Error::Configuration(_))
    ));
    assert_eq!(files(dir.path()), before);

    let pdir = tempfile::tempdir().unwrap();
    let fast = KeystoreOptions::default().argon2(Argon2Params {
        m_kib: 64,
        t: 1,
        p: 1,
    });
    {
        let ring = KeyRing::builder()
            .file_keystore(
                pdir.path(),
                &RootKey::passphrase("correct horse"),
                fast.clone(),
            )
            .unwrap()
            .build();
        ring.client(p("user:a"))
            .create_key(KeySpec::default(), CreateKeyOptions::new())
            .unwrap();
    }
    let before = files(pdir.path());
    let e = KeyRing::builder()
        .file_keystore(
            pdir.path(),
            &RootKey::passphrase("battery staple"),
            fast.clone(),
        )
        .unwrap_err();
    assert!(matches!(e, Error::WrongRootKey), "{e}");
    assert_eq!(files(pdir.path()), before);
    let header =
        String::from_utf8(std::fs::read(pdir.path().join("header.json")).unwrap()).unwrap();
    assert!(
        header.contains("argon2id") && header.contains("\"m_kib\": 64"),
        "{header}"
    );
    let ring = KeyRing::builder()
        .file_keystore(pdir.path(), &RootKey::passphrase("correct horse"), fast)
        .unwrap()
        .build();
    assert_eq!(
        ring.client(p("user:a"))
            .list_keys(10, None)
            .unwrap()
            .items
            .len(),
        1
    );
}

#[test]
fn every_bit_flip_and_truncation_is_detected_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ring = KeyRing::open(dir.path(), root()).unwrap();
        let c = ring.client(p("user:a"));
        c.create_key(KeySpec::default(), CreateKeyOptions::new().alias("alias/x"))
            .unwrap();
        c.create_key(KeySpec::Ed25519, CreateKeyOptions::new())
            .unwrap();
    }
    let pristine = files(dir.path());
    assert!(pristine.len() >= 6);
    for (path, content) in &pristine {
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let mut damaged: Vec<Vec<u8>> = vec![content[..content.len() / 2].to_vec(), Vec::new()];
        for i in (0..content.len() * 8).step_by(content.len().max(8) / 4 + 1) {
            let mut c = content.clone();
            c[i / 8] ^= 1 << (i % 8);
            damaged.push(c);
        }
        for d in damaged {
            std::fs::write(path, &d).unwrap();
            let r = KeyRing::open(dir.path(), root());
            match r {
                Err(Error::CorruptStore { file, .. }) => {
                    assert!(file.ends_with(&name), "{file} vs {name}")
                }
                // The header's check value cannot tell damage from a wrong key.
                Err(Error::WrongRootKey) if name == "header.json" => {}
                other => panic!("{name}: {other:?}"),
            }
            std::fs::write(path, content).unwrap();
        }
    }
    // A record moved to another key's name is refused too.
    let keys: Vec<&PathBuf> = pristine
        .keys()
        .filter(|p| p.to_str().unwrap().contains("/keys/"))
        .collect();
    std::fs::write(keys[0], &pristine[keys[1]]).unwrap();
    assert!(matches!(
        KeyRing::open(dir.path(), root()),
        Err(Error::CorruptStore { .. })
    ));
    std::fs::write(keys[0], &pristine[keys[0]]).unwrap();
    assert!(KeyRing::open(dir.path(), root()).is_ok());
}

/// Fails the Nth filesystem operation (write, fsync, rename, fsync_dir).
#[derive(Debug)]
struct Faulty {
    n: AtomicUsize,
    fail_at: usize,
}

impl Faulty {
    fn tick(&self) -> std::io::Result<()> {
        if self.n.fetch_add(1, Ordering::SeqCst) + 1 == self.fail_at {
            Err(std::io::Error::other("injected fault"))
        } else {
            Ok(())
        }
    }
}

impl Storage for Faulty {
    fn write(&self, path: &Path, data: &[u8]) -> std::io::Result<()> {
        self.tick()?;
        RealStorage.write(path, data)
    }
    fn fsync(&self, path: &Path) -> std::io::Result<()> {
        self.tick()?;
        RealStorage.fsync(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.tick()?;
        RealStorage.rename(from, to)
    }
    fn fsync_dir(&self, dir: &Path) -> std::io::Result<()> {
        self.tick()?;
        RealStorage.fsync_dir(dir)
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        self.tick()?;
        RealStorage.remove(path)
    }
}

#[test]
fn fault_injection_leaves_a_consistent_store() {
    for fail_at in 1..=40 {
        let dir = tempfile::tempdir().unwrap();
        let key = {
            let ring = KeyRing::open(dir.path(), root()).unwrap();
            ring.client(p("user:a"))
                .create_key(
                    KeySpec::default(),
                    CreateKeyOptions::new().alias("alias/base"),
                )
                .unwrap()
                .to_string()
        };
        let faulty = Arc::new(Faulty {
            n: AtomicUsize::new(0),
            fail_at,
        });
        let ring = KeyRing::builder()
            .file_keystore(
                dir.path(),
                &root(),
                KeystoreOptions::default().storage(faulty.clone()),
            )
            .unwrap()
            .build();
        let c = ring.client(p("user:a"));
        // A sequence of changes; the injected fault hits one of them. The
        // failing one returns an error and leaves the ring's view unchanged.
        type Op<'a> = Box<dyn Fn() -> Result<(), Error> + 'a>;
        let ops: Vec<Op<'_>> = vec![
            Box::new(|| c.rotate_now(&key).map(drop)),
            Box::new(|| c.tag_key(&key, &[("t", "1")])),
            Box::new(|| {
                c.create_key(
                    KeySpec::default(),
                    CreateKeyOptions::new().alias("alias/new"),
                )
                .map(drop)
            }),
            Box::new(|| c.create_alias("alias/second", &key)),
            Box::new(|| c.schedule_key_deletion(&key, Some(7)).map(drop)),
        ];
        for op in &ops {
            let before = c.describe_key(&key).unwrap();
            let keys_before = c.list_keys(100, None).unwrap().items.len();
            let aliases_before = c.list_aliases(None, 100, None).unwrap().items.len();
            if op().is_err() {
                assert_eq!(c.describe_key(&key).unwrap(), before, "fail_at {fail_at}");
                assert_eq!(c.list_keys(100, None).unwrap().items.len(), keys_before);
                assert_eq!(
                    c.list_aliases(None, 100, None).unwrap().items.len(),
                    aliases_before
                );
                break;
            }
        }
        drop(ring);
        // Reopening (with the real filesystem) gives a consistent store.
        let ring = KeyRing::open(dir.path(), root()).unwrap();
        let c = ring.client(p("user:a"));
        for e in c.list_keys(100, None).unwrap().items {
            let m = c.describe_key(e.key_id.as_str()).unwrap();
            for v in &m.versions {
                let f = dir
                    .path()
                    .join(format!("material/{}.v{}.rec", m.key_id, v.version));
                assert!(
                    f.exists(),
                    "fail_at {fail_at}: version {} without material",
                    v.version
                );
            }
            if m.state == KeyState::Enabled {
                let b = c.encrypt(m.key_id.as_str(), b"x", &ctx()).unwrap();
                assert!(c.decrypt(&b, &ctx()).is_ok());
            }
        }
        for a in c.list_aliases(None, 100, None).unwrap().items {
            assert!(c.describe_key(a.alias.as_str()).is_ok());
        }
    }
}

fn child(mode: &str, dir: &Path, extra: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child_process_entry",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("STRONGROOM_CHILD_MODE", mode)
    .env("STRONGROOM_CHILD_DIR", dir)
    .env("STRONGROOM_CHILD_ARG", extra)
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    cmd
}

/// Entry point of the child processes of the kill -9 and two-process tests.
#[test]
#[ignore = "child process entry point, run by the kill -9 and two-process tests"]
fn child_process_entry() {
    let mode = std::env::var("STRONGROOM_CHILD_MODE").unwrap();
    let dir = PathBuf::from(std::env::var("STRONGROOM_CHILD_DIR").unwrap());
    let arg = std::env::var("STRONGROOM_CHILD_ARG").unwrap();
    let ring = KeyRing::open(&dir, root()).unwrap();
    let c = ring.client(p("user:a"));
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match mode.as_str() {
        "kill9" => {
            for i in 0.. {
                let alias = format!("alias/{arg}-{i}");
                let id = c
                    .create_key(
                        KeySpec::default(),
                        CreateKeyOptions::new().alias(alias.clone()),
                    )
                    .unwrap();
                writeln!(out, "ACK create {id} {alias}").unwrap();
                out.flush().unwrap();
                c.tag_key(id.as_str(), &[("iter", "done")]).unwrap();
                writeln!(out, "ACK tag {id}").unwrap();
                out.flush().unwrap();
                let v = c.rotate_now(id.as_str()).unwrap();
                writeln!(out, "ACK rotate {id} {v}").unwrap();
                out.flush().unwrap();
            }
        }
        "rotate" => {
            for _ in 0..10 {
                c.rotate_now(&arg).unwrap();
            }
            writeln!(out, "ACK done").unwrap();
        }
        other => panic!("unknown mode {other}"),
    }
}

fn random_below(n: u64) -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    u64::from_le_bytes(b) % n
}

#[test]
fn kill_dash_nine_loop() {
    let dir = tempfile::tempdir().unwrap();
    KeyRing::open(dir.path(), root()).unwrap();
    let mut acked: Vec<Vec<String>> = Vec::new();
    for iter in 0..200 {
        let mut ch = child("kill9", dir.path(), &format!("i{iter}"))
            .spawn()
            .unwrap();
        let stdout = ch.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<String>>()
        });
        std::thread::sleep(std::time::Duration::from_millis(5 + random_below(60)));
        ch.kill().unwrap(); // SIGKILL
        ch.wait().unwrap();
        for line in reader.join().unwrap() {
            let parts: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
            if parts.first().map(String::as_str) == Some("ACK") {
                acked.push(parts);
            }
        }
        // Reopen after every kill: the store opens and every acknowledged
        // change is there.
        let ring = KeyRing::open(dir.path(), root()).unwrap();
        let c = ring.client(p("user:a"));
        for a in &acked {
            match a[1].as_str() {
                "create" => {
                    let m = c.describe_key(&a[3]).unwrap();
                    assert_eq!(m.key_id.as_str(), a[2]);
                }
                "tag" => assert_eq!(
                    c.list_tags(&a[2]).unwrap().get("iter").map(String::as_str),
                    Some("done")
                ),
                "rotate" => {
                    let v: u32 = a[3].parse().unwrap();
                    assert!(c.describe_key(&a[2]).unwrap().primary_version >= v);
                }
                _ => unreachable!(),
            }
        }
        // Nothing half-applied: every version has material, every alias a key.
        for e in c.list_keys(1000, None).unwrap().items {
            let m = c.describe_key(e.key_id.as_str()).unwrap();
            let versions: Vec<u32> = m.versions.iter().map(|v| v.version).collect();
            assert_eq!(versions, (1..=m.primary_version).collect::<Vec<_>>());
            for v in versions {
                assert!(
                    dir.path()
                        .join(format!("material/{}.v{v}.rec", m.key_id))
                        .exists()
                );
            }
        }
    }
    assert!(
        acked.len() > 50,
        "children acknowledged only {} changes",
        acked.len()
    );
}

#[test]
fn two_processes_rotating_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = {
        let ring = KeyRing::open(dir.path(), root()).unwrap();
        ring.client(p("user:a"))
            .create_key(KeySpec::default(), CreateKeyOptions::new())
            .unwrap()
            .to_string()
    };
    let a = child("rotate", dir.path(), &key).spawn().unwrap();
    let b = child("rotate", dir.path(), &key).spawn().unwrap();
    for ch in [a, b] {
        let out = ch.wait_with_output().unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("ACK done"));
    }
    let ring = KeyRing::open(dir.path(), root()).unwrap();
    let m = ring.client(p("user:a")).describe_key(&key).unwrap();
    let versions: Vec<u32> = m.versions.iter().map(|v| v.version).collect();
    assert_eq!(versions, (1..=21).collect::<Vec<_>>());
    assert_eq!(m.primary_version, 21);
}

#[test]
fn several_rings_in_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let rings: Vec<KeyRing> = (0..3)
        .map(|_| KeyRing::open(dir.path(), root()).unwrap())
        .collect();
    let key = rings[0]
        .client(p("user:a"))
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    std::thread::scope(|s| {
        for r in &rings {
            let key = key.clone();
            s.spawn(move || {
                let c = r.client(p("user:a"));
                for _ in 0..5 {
                    c.rotate_now(key.as_str()).unwrap();
                    c.create_key(KeySpec::default(), CreateKeyOptions::new())
                        .unwrap();
                }
            });
        }
    });
    let ring = KeyRing::open(dir.path(), root()).unwrap();
    let c = ring.client(p("user:a"));
    assert_eq!(c.describe_key(key.as_str()).unwrap().primary_version, 16);
    assert_eq!(c.list_keys(100, None).unwrap().items.len(), 16);
}

#[test]
fn root_key_rotation_and_backup() {
    let dir = tempfile::tempdir().unwrap();
    let (key, blob) = {
        let ring = KeyRing::open(dir.path(), root()).unwrap();
        let c = ring.client(p("user:a"));
        let k = c
            .create_key(KeySpec::default(), CreateKeyOptions::new().alias("alias/r"))
            .unwrap();
        let b = c.encrypt(k.as_str(), b"survives", &ctx()).unwrap();
        (k, b)
    };
    let new_root = RootKey::raw([0x33; 32]);
    rotate_root_key(dir.path(), &root(), &new_root, &KeystoreOptions::default()).unwrap();
    assert!(matches!(
        KeyRing::open(dir.path(), root()),
        Err(Error::WrongRootKey)
    ));
    let ring = KeyRing::open(dir.path(), RootKey::raw([0x33; 32])).unwrap();
    let c = ring.client(p("user:a"));
    assert_eq!(
        c.decrypt(&blob, &ctx()).unwrap().plaintext.expose_secret(),
        b"survives"
    );
    drop(ring);

    // An interrupted rotation (records rewritten, no commit marker) rolls back.
    let sub = dir.path().join("keys");
    let rec = std::fs::read_dir(&sub)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(rec.with_extension("rec.new"), b"half-written").unwrap();
    let ring = KeyRing::open(dir.path(), RootKey::raw([0x33; 32])).unwrap();
    assert!(ring.client(p("user:a")).describe_key("alias/r").is_ok());
    assert!(!rec.with_extension("rec.new").exists());
    drop(ring);

    // Backup and restore into a new directory.
    let archive = dir.path().join("backup.srkb");
    export_backup(dir.path(), &RootKey::raw([0x33; 32]), &archive).unwrap();
    let restored = tempfile::tempdir().unwrap();
    let target = restored.path().join("store");
    assert!(matches!(
        restore_backup(&archive, &root(), &target),
        Err(Error::WrongRootKey)
    ));
    restore_backup(&archive, &RootKey::raw([0x33; 32]), &target).unwrap();
    let ring = KeyRing::open(&target, RootKey::raw([0x33; 32])).unwrap();
    let c = ring.client(p("user:a"));
    assert_eq!(c.describe_key("alias/r").unwrap().key_id, key);
    assert!(c.decrypt(&blob, &ctx()).is_ok());
    // A damaged archive is refused.
    let mut bad = std::fs::read(&archive).unwrap();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    std::fs::write(&archive, &bad).unwrap();
    assert!(
        restore_backup(
            &archive,
            &RootKey::raw([0x33; 32]),
            restored.path().join("again")
        )
        .is_err()
    );
}

#[test]
fn nosync_durability_still_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let opts = KeystoreOptions::default().durability(Durability::NoSync);
    let k = {
        let ring = KeyRing::builder()
            .file_keystore(dir.path(), &root(), opts.clone())
            .unwrap()
            .build();
        ring.client(p("user:a"))
            .create_key(KeySpec::default(), CreateKeyOptions::new())
            .unwrap()
    };
    let ring = KeyRing::open(dir.path(), root()).unwrap();
    assert!(ring.client(p("user:a")).describe_key(k.as_str()).is_ok());
}
