//! The durable file keystore on a real filesystem: restarts, wrong keys,
//! tampering, fault injection, kill -9, two processes, root rotation, backup.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use strongroom::hazmat::weak_argon2_for_tests;
use strongroom::key::{HmacAlgorithm, KeyState, SymmetricAlgorithm};
use strongroom::keyring::CreatedGrant;
use strongroom::keyring::{
    EnableRotationOptions, ListAliasesOptions, ListOptions, PutKeyPolicyOptions,
    ScheduleDeletionOptions, SignOptions,
};
use strongroom::policy::GrantRequest;
use strongroom::store::OpenMode;
use strongroom::store::{
    Argon2Params, Durability, KeystoreOptions, RealStorage, RootKey, Storage, export_backup,
    restore_backup, rotate_root_key,
};
use strongroom::{Action, CreateKeyOptions, EncryptionContext, Error, KeyRing, KeySpec, Principal};

const ROOT: [u8; 32] = [0x11; 32];

fn root() -> RootKey {
    RootKey::raw(ROOT)
}

/// A ring on `dir` for tests where several rings or processes change the
/// store at once. The keystore lock is not fair (a waiter polls), so one
/// waiter may sit out many of the others' changes; on a loaded machine
/// with slow fsyncs that can exceed the default 10 s bound. A generous
/// bound keeps the test about what it checks (every change lands, once).
fn patient_ring(dir: &Path) -> KeyRing {
    KeyRing::builder()
        .file_keystore(
            dir,
            &root(),
            KeystoreOptions::default()
                .mode(OpenMode::OpenOrCreate)
                .lock_timeout(std::time::Duration::from_secs(120)),
        )
        .unwrap()
        .build()
}

fn p(s: &str) -> Principal {
    s.parse().unwrap()
}

fn ctx() -> EncryptionContext {
    EncryptionContext::new().with("store", "file")
}

fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for sub in ["", "keys", "material", "aliases", "manifest"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            if path.is_file() && path.file_name().unwrap() != "LOCK" {
                out.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// Whether a material record file of `key` version `v` exists (record
/// files are named `<name>.<generation>.rec`).
fn has_material(dir: &Path, key: &str, v: u32) -> bool {
    let prefix = format!("{key}.v{v}.");
    std::fs::read_dir(dir.join("material")).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_str()
            .unwrap()
            .starts_with(&prefix)
    })
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
        let ring = KeyRing::open_or_create(dir.path(), root()).unwrap();
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
                    c.rotate_key_on_demand(&id).unwrap();
                    c.enable_key_rotation(
                        &id,
                        EnableRotationOptions::default().rotation_period_days(90),
                    )
                    .unwrap();
                    let mut both = c.seal(&id, b"sealed", &ctx()).unwrap();
                    both.extend((old.len() as u32).to_be_bytes());
                    both.extend(old);
                    both
                }
                KeySpec::EccNistP256 | KeySpec::Ed25519 => {
                    c.sign(&id, b"msg", SignOptions::default()).unwrap()
                }
                KeySpec::Hmac(_) => c.generate_mac(&id, b"msg").unwrap(),
                _ => {
                    let pk = c.get_public_key(&id).unwrap();
                    strongroom::verify::hpke_seal(&pk.der, b"i", b"hpke", b"").unwrap()
                }
            };
            saved.push((id, *spec, out));
        }
        let CreatedGrant { grant_id: gid, .. } = c
            .create_grant(
                &saved[0].0,
                GrantRequest::new(p("user:bob"), &[Action::Decrypt]),
            )
            .unwrap();
        assert!(!gid.is_empty());
        c.disable_key(&saved[1].0).unwrap();
    }
    let ring = KeyRing::open_or_create(dir.path(), root()).unwrap();
    let c = ring.client(p("service:app"));
    assert_eq!(
        c.list_keys(ListOptions::default().limit(100))
            .unwrap()
            .items
            .len(),
        specs.len()
    );
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
                assert!(c.verify(id, b"msg", out, SignOptions::default()).unwrap())
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
        let ring = KeyRing::open_or_create(dir.path(), root()).unwrap();
        ring.client(p("user:a"))
            .create_key(KeySpec::default(), CreateKeyOptions::new())
            .unwrap();
    }
    let before = files(dir.path());
    assert!(matches!(
        KeyRing::open_or_create(dir.path(), RootKey::raw([0x22; 32])),
        Err(Error::WrongRootKey)
    ));
    assert!(matches!(
        KeyRing::open_or_create(dir.path(), RootKey::passphrase("x")),
        Err(Error::Configuration(_))
    ));
    assert_eq!(files(dir.path()), before);

    let pdir = tempfile::tempdir().unwrap();
    let fast = weak_argon2_for_tests(KeystoreOptions::default().mode(OpenMode::OpenOrCreate))
        .argon2(Argon2Params {
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
            .list_keys(ListOptions::default().limit(10))
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
        let ring = KeyRing::open_or_create(dir.path(), root()).unwrap();
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
            let r = KeyRing::open_or_create(dir.path(), root());
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
        KeyRing::open_or_create(dir.path(), root()),
        Err(Error::CorruptStore { .. })
    ));
    std::fs::write(keys[0], &pristine[keys[0]]).unwrap();
    assert!(KeyRing::open_or_create(dir.path(), root()).is_ok());
}

/// Fails the Nth filesystem operation (write, fsync, rename, fsync_dir).
#[derive(Debug)]
struct Faulty {
    n: AtomicUsize,
    fail_at: usize,
    /// The operation that failed, and its path.
    failed: std::sync::Mutex<Option<(&'static str, PathBuf)>>,
}

impl Faulty {
    fn tick(&self, op: &'static str, path: &Path) -> std::io::Result<()> {
        if self.n.fetch_add(1, Ordering::SeqCst) + 1 == self.fail_at {
            *self.failed.lock().unwrap() = Some((op, path.to_owned()));
            Err(std::io::Error::other("injected fault"))
        } else {
            Ok(())
        }
    }
}

impl Storage for Faulty {
    fn write(&self, path: &Path, data: &[u8]) -> std::io::Result<()> {
        self.tick("write", path)?;
        RealStorage.write(path, data)
    }
    fn fsync(&self, path: &Path) -> std::io::Result<()> {
        self.tick("fsync", path)?;
        RealStorage.fsync(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.tick("rename", to)?;
        RealStorage.rename(from, to)
    }
    fn fsync_dir(&self, dir: &Path) -> std::io::Result<()> {
        self.tick("fsync_dir", dir)?;
        RealStorage.fsync_dir(dir)
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        self.tick("remove", path)?;
        RealStorage.remove(path)
    }
}

#[test]
fn fault_injection_leaves_a_consistent_store() {
    let mut failures = 0;
    for fail_at in 1..=130 {
        let dir = tempfile::tempdir().unwrap();
        let key = {
            let ring = KeyRing::open_or_create(dir.path(), root()).unwrap();
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
            failed: std::sync::Mutex::new(None),
        });
        let ring = KeyRing::builder()
            .file_keystore(
                dir.path(),
                &root(),
                KeystoreOptions::default()
                    .mode(OpenMode::OpenOrCreate)
                    .storage(faulty.clone()),
            )
            .unwrap()
            .build();
        let c = ring.client(p("user:a"));
        // A sequence of changes; the injected fault hits one of them. The
        // failing one returns an error and leaves the ring's view unchanged.
        type Op<'a> = Box<dyn Fn() -> Result<(), Error> + 'a>;
        let ops: Vec<Op<'_>> = vec![
            Box::new(|| c.rotate_key_on_demand(&key).map(drop)),
            Box::new(|| c.tag_resource(&key, &[("t", "1")])),
            Box::new(|| {
                c.create_key(
                    KeySpec::default(),
                    CreateKeyOptions::new().alias("alias/new"),
                )
                .map(drop)
            }),
            Box::new(|| c.create_alias("alias/second", &key)),
            Box::new(|| {
                c.schedule_key_deletion(
                    &key,
                    ScheduleDeletionOptions::default().pending_window_days(7),
                )
                .map(drop)
            }),
        ];
        for op in &ops {
            let before = c.describe_key(&key).unwrap();
            let keys_before = c
                .list_keys(ListOptions::default().limit(100))
                .unwrap()
                .items
                .len();
            let aliases_before = c
                .list_aliases(ListAliasesOptions::default().limit(100))
                .unwrap()
                .items
                .len();
            if op().is_err() {
                failures += 1;
                let failed = faulty.failed.lock().unwrap().clone().unwrap();
                // Only the directory fsync after the manifest's rename (the
                // commit point) fails with the change already made visible.
                if failed == ("fsync_dir", dir.path().to_owned()) {
                    break;
                }
                assert_eq!(c.describe_key(&key).unwrap(), before, "fail_at {fail_at}");
                assert_eq!(
                    c.list_keys(ListOptions::default().limit(100))
                        .unwrap()
                        .items
                        .len(),
                    keys_before
                );
                assert_eq!(
                    c.list_aliases(ListAliasesOptions::default().limit(100))
                        .unwrap()
                        .items
                        .len(),
                    aliases_before
                );
                break;
            }
        }
        drop(ring);
        // Reopening (with the real filesystem) gives a consistent store.
        let ring = KeyRing::open_or_create(dir.path(), root()).unwrap();
        let c = ring.client(p("user:a"));
        for e in c
            .list_keys(ListOptions::default().limit(100))
            .unwrap()
            .items
        {
            let m = c.describe_key(e.key_id.as_str()).unwrap();
            for v in &m.versions {
                assert!(
                    has_material(dir.path(), m.key_id.as_str(), v.version),
                    "fail_at {fail_at}: version {} without material",
                    v.version
                );
            }
            if m.state == KeyState::Enabled {
                let b = c.encrypt(m.key_id.as_str(), b"x", &ctx()).unwrap();
                assert!(c.decrypt(&b, &ctx()).is_ok());
            }
        }
        for a in c
            .list_aliases(ListAliasesOptions::default().limit(100))
            .unwrap()
            .items
        {
            assert!(c.describe_key(a.alias.as_str()).is_ok());
        }
    }
    // The range covered every operation of the sequence, and then some.
    assert!(
        failures > 60 && failures < 130,
        "{failures} injected failures hit"
    );
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
    let ring = patient_ring(&dir);
    let c = ring.client(p("user:a"));
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    // libtest printed "test child_process_entry ... " without a newline:
    // without this one the first ACK would be glued to it and not counted.
    writeln!(out).unwrap();
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
                c.tag_resource(id.as_str(), &[("iter", "done")]).unwrap();
                writeln!(out, "ACK tag {id}").unwrap();
                out.flush().unwrap();
                let v = c.rotate_key_on_demand(id.as_str()).unwrap();
                writeln!(out, "ACK rotate {id} {v}").unwrap();
                out.flush().unwrap();
            }
        }
        "rotate" => {
            for _ in 0..10 {
                c.rotate_key_on_demand(&arg).unwrap();
            }
            writeln!(out, "ACK done").unwrap();
        }
        "serve" => {
            // One command per stdin line, one answer per stdout line.
            writeln!(out, "READY").unwrap();
            out.flush().unwrap();
            for line in std::io::stdin().lines() {
                let line = line.unwrap();
                let w: Vec<&str> = line.split_whitespace().collect();
                let answer = match w.as_slice() {
                    ["decrypt", who, blob] => ring
                        .client(p(who))
                        .decrypt(&unhex(blob), &ctx())
                        .map(|d| format!("{} {}", d.key_version, hex(d.plaintext.expose_secret()))),
                    ["encrypt", key] => c.encrypt(key, b"from child", &ctx()).map(|b| hex(&b)),
                    ["quit"] => break,
                    _ => panic!("bad command {line}"),
                };
                match answer {
                    Ok(a) => writeln!(out, "OK {a}").unwrap(),
                    Err(e) => writeln!(out, "ERR {}", e.name()).unwrap(),
                }
                out.flush().unwrap();
            }
        }
        other => panic!("unknown mode {other}"),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn random_below(n: u64) -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    u64::from_le_bytes(b) % n
}

#[test]
fn kill_dash_nine_loop() {
    let dir = tempfile::tempdir().unwrap();
    KeyRing::open_or_create(dir.path(), root()).unwrap();
    let mut acked: Vec<Vec<String>> = Vec::new();
    // At least 200 kills, and on until the children have acknowledged more
    // than 50 changes: on a loaded machine a child may need longer to get
    // its first change done, so the window before the kill widens while
    // kills find nothing acknowledged (no timing assumption, only a bound
    // on the work).
    let mut window = 150;
    for iter in 0..2000 {
        if iter >= 200 && acked.len() > 50 {
            break;
        }
        let before = acked.len();
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
        std::thread::sleep(std::time::Duration::from_millis(5 + random_below(window)));
        ch.kill().unwrap(); // SIGKILL
        ch.wait().unwrap();
        for line in reader.join().unwrap() {
            let parts: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
            if parts.first().map(String::as_str) == Some("ACK") {
                acked.push(parts);
            }
        }
        // Up to 10 s: a child's first change on a loaded machine can take
        // longer than a 1 s cap would allow, and then no kill would ever
        // find an ACK and the loop could not end.
        window = if acked.len() == before {
            (window + 25).min(10_000)
        } else {
            window.saturating_sub(25).max(150)
        };
        // Reopen after every kill: the store opens and every acknowledged
        // change is there.
        let ring = KeyRing::open_or_create(dir.path(), root()).unwrap();
        let c = ring.client(p("user:a"));
        for a in &acked {
            match a[1].as_str() {
                "create" => {
                    let m = c.describe_key(&a[3]).unwrap();
                    assert_eq!(m.key_id.as_str(), a[2]);
                }
                "tag" => assert_eq!(
                    c.list_resource_tags(&a[2])
                        .unwrap()
                        .get("iter")
                        .map(String::as_str),
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
        for e in c
            .list_keys(ListOptions::default().limit(1000))
            .unwrap()
            .items
        {
            let m = c.describe_key(e.key_id.as_str()).unwrap();
            let versions: Vec<u32> = m.versions.iter().map(|v| v.version).collect();
            assert_eq!(versions, (1..=m.primary_version).collect::<Vec<_>>());
            for v in versions {
                assert!(has_material(dir.path(), m.key_id.as_str(), v));
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
        let ring = KeyRing::open_or_create(dir.path(), root()).unwrap();
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
    let ring = KeyRing::open_or_create(dir.path(), root()).unwrap();
    let m = ring.client(p("user:a")).describe_key(&key).unwrap();
    let versions: Vec<u32> = m.versions.iter().map(|v| v.version).collect();
    assert_eq!(versions, (1..=21).collect::<Vec<_>>());
    assert_eq!(m.primary_version, 21);
}

#[test]
fn several_rings_in_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let rings: Vec<KeyRing> = (0..3).map(|_| patient_ring(dir.path())).collect();
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
                    c.rotate_key_on_demand(key.as_str()).unwrap();
                    c.create_key(KeySpec::default(), CreateKeyOptions::new())
                        .unwrap();
                }
            });
        }
    });
    let ring = KeyRing::open_or_create(dir.path(), root()).unwrap();
    let c = ring.client(p("user:a"));
    assert_eq!(c.describe_key(key.as_str()).unwrap().primary_version, 16);
    assert_eq!(
        c.list_keys(ListOptions::default().limit(100))
            .unwrap()
            .items
            .len(),
        16
    );
}

#[test]
fn root_key_rotation_and_backup() {
    let dir = tempfile::tempdir().unwrap();
    let (key, blob) = {
        let ring = KeyRing::open_or_create(dir.path(), root()).unwrap();
        let c = ring.client(p("user:a"));
        let k = c
            .create_key(KeySpec::default(), CreateKeyOptions::new().alias("alias/r"))
            .unwrap();
        let b = c.encrypt(k.as_str(), b"survives", &ctx()).unwrap();
        (k, b)
    };
    let new_root = RootKey::raw([0x33; 32]);
    rotate_root_key(
        dir.path(),
        &root(),
        &new_root,
        &KeystoreOptions::default().mode(OpenMode::OpenOrCreate),
    )
    .unwrap();
    assert!(matches!(
        KeyRing::open_or_create(dir.path(), root()),
        Err(Error::WrongRootKey)
    ));
    let ring = KeyRing::open_or_create(dir.path(), RootKey::raw([0x33; 32])).unwrap();
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
    let ring = KeyRing::open_or_create(dir.path(), RootKey::raw([0x33; 32])).unwrap();
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
    let ring = KeyRing::open_or_create(&target, RootKey::raw([0x33; 32])).unwrap();
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
    let opts = KeystoreOptions::default()
        .mode(OpenMode::OpenOrCreate)
        .durability(Durability::NoSync);
    let k = {
        let ring = KeyRing::builder()
            .file_keystore(dir.path(), &root(), opts.clone())
            .unwrap()
            .build();
        ring.client(p("user:a"))
            .create_key(KeySpec::default(), CreateKeyOptions::new())
            .unwrap()
    };
    let ring = KeyRing::open_or_create(dir.path(), root()).unwrap();
    assert!(ring.client(p("user:a")).describe_key(k.as_str()).is_ok());
}

/// Every file and directory under `dir`, recursively.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn chmod(path: &Path, m: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(m)).unwrap();
}

// Item 7: modes, ownership checks, bounded lock wait.

#[test]
fn store_files_and_directories_are_private() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    {
        let ring = KeyRing::open_or_create(&store, root()).unwrap();
        let c = ring.client(p("user:a"));
        let k = c
            .create_key(KeySpec::default(), CreateKeyOptions::new().alias("alias/m"))
            .unwrap();
        c.rotate_key_on_demand(k.as_str()).unwrap();
    }
    let archive = tmp.path().join("backup.srkb");
    export_backup(&store, &root(), &archive).unwrap();
    assert_eq!(mode(&store), 0o700);
    let all = walk(&store);
    assert!(all.len() >= 10, "{all:?}");
    for path in all {
        if path.is_dir() {
            assert_eq!(mode(&path), 0o700, "{}", path.display());
        } else {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }
    assert_eq!(mode(&archive), 0o600);
}

#[test]
fn audit_logs_are_private() {
    use strongroom::audit::{JsonlFileSink, JsonlOptions};
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("audit");
    let sink = Arc::new(JsonlFileSink::open(&logs, &[7u8; 32], JsonlOptions::default()).unwrap());
    let ring = KeyRing::builder().audit_sink(sink).build();
    ring.client(p("user:a"))
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    drop(ring);
    assert_eq!(mode(&logs), 0o700);
    let all = walk(&logs);
    assert!(!all.is_empty());
    for path in all {
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
}

#[test]
fn open_refuses_a_directory_others_can_write() {
    let dir = tempfile::tempdir().unwrap();
    KeyRing::open_or_create(dir.path(), root()).unwrap();
    for (path, m) in [
        (dir.path().to_owned(), 0o770),
        (dir.path().to_owned(), 0o702),
        (dir.path().join("keys"), 0o777),
    ] {
        chmod(&path, m);
        match KeyRing::open_or_create(dir.path(), root()) {
            Err(Error::Configuration(msg)) => {
                assert!(msg.contains("writable by its group or by others"), "{msg}")
            }
            other => panic!("{}: {other:?}", path.display()),
        }
        chmod(&path, 0o700);
    }
    assert!(KeyRing::open_or_create(dir.path(), root()).is_ok());
    // Owned by another user: only root can set that up.
    use std::os::unix::fs::MetadataExt;
    let me = std::fs::metadata(dir.path()).unwrap().uid();
    if me == 0 {
        std::os::unix::fs::chown(dir.path(), Some(65534), None).unwrap();
        match KeyRing::open_or_create(dir.path(), root()) {
            Err(Error::Configuration(msg)) => {
                assert!(msg.contains("belongs to user 65534"), "{msg}")
            }
            other => panic!("{other:?}"),
        }
        std::os::unix::fs::chown(dir.path(), Some(0), None).unwrap();
        assert!(KeyRing::open_or_create(dir.path(), root()).is_ok());
    }
}

#[test]
fn a_format_1_store_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    let v1 = r#"{ "format": "strongroom-keystore", "version": 1,
  "kdf": { "kind": "raw" }, "check": "00" }"#;
    std::fs::write(dir.path().join("header.json"), v1).unwrap();
    match KeyRing::open_or_create(dir.path(), root()) {
        Err(Error::CorruptStore { file, reason }) => {
            assert_eq!(file, "header.json");
            assert!(
                reason.contains("format version 1 is not supported"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("header.json")).unwrap(),
        v1
    );
}

fn is_timeout(e: &Error) -> bool {
    matches!(e, Error::Other(inner)
        if inner.downcast_ref::<std::io::Error>().map(|i| i.kind())
            == Some(std::io::ErrorKind::TimedOut))
}

#[test]
fn a_held_lock_fails_after_the_timeout_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let opts = KeystoreOptions::default()
        .mode(OpenMode::OpenOrCreate)
        .lock_timeout(std::time::Duration::from_millis(300));
    let ring = KeyRing::builder()
        .file_keystore(dir.path(), &root(), opts.clone())
        .unwrap()
        .build();
    // Someone else takes the lock and keeps it.
    let holder = std::fs::File::open(dir.path().join("LOCK")).unwrap();
    holder.lock().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let path = dir.path().to_owned();
    let o = opts.clone();
    // Taken before the opener starts, so the opener's own wait (at least
    // the 300 ms timeout) lies entirely inside what is measured here, however
    // late this thread runs again on a loaded machine.
    let started = std::time::Instant::now();
    std::thread::spawn(move || {
        let r = KeyRing::builder()
            .file_keystore(&path, &root(), o)
            .map(drop);
        let _ = tx.send(r);
    });
    let r = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("open blocked on a held lock");
    assert!(is_timeout(&r.unwrap_err()));
    assert!(started.elapsed() >= std::time::Duration::from_millis(250));
    // A change on an open ring gives up too, and changes nothing.
    let e = ring
        .client(p("user:a"))
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap_err();
    assert!(is_timeout(&e), "{e}");
    holder.unlock().unwrap();
    assert!(
        ring.client(p("user:a"))
            .create_key(KeySpec::default(), CreateKeyOptions::new())
            .is_ok()
    );
    assert_eq!(
        ring.client(p("user:a"))
            .list_keys(ListOptions::default().limit(10))
            .unwrap()
            .items
            .len(),
        1
    );
}

// Item 8: alias record names.

#[test]
fn long_aliases_work_and_no_alias_name_shows_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let long = format!("alias/{}", "x".repeat(250));
    assert_eq!(long.len(), 256);
    let secret = "alias/payroll-2026";
    {
        let ring = KeyRing::open_or_create(dir.path(), root()).unwrap();
        let c = ring.client(p("user:a"));
        let k = c
            .create_key(KeySpec::default(), CreateKeyOptions::new().alias(&*long))
            .unwrap();
        c.create_alias(secret, k.as_str()).unwrap();
    }
    let ring = KeyRing::open_or_create(dir.path(), root()).unwrap();
    let c = ring.client(p("user:a"));
    let k = c.describe_key(&long).unwrap().key_id;
    assert_eq!(c.describe_key(secret).unwrap().key_id, k);
    assert_eq!(
        c.list_aliases(ListAliasesOptions::default().limit(10))
            .unwrap()
            .items
            .len(),
        2
    );
    let hex_secret = hex(secret.as_bytes());
    for path in walk(dir.path()) {
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        for needle in ["payroll", &hex_secret, "xxxxxxxx", &hex(b"xxxx")] {
            assert!(!name.contains(needle), "{name} shows {needle}");
        }
        if path.is_file() {
            let data = std::fs::read(&path).unwrap();
            assert!(!data.windows(7).any(|w| w == b"payroll"), "{name}");
        }
    }
    c.delete_alias(&long).unwrap();
    assert!(c.describe_key(&long).is_err());
}

// Item 9: rollback.

fn key_record(dir: &Path) -> (PathBuf, Vec<u8>) {
    let mut recs: Vec<PathBuf> = std::fs::read_dir(dir.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(recs.len(), 1, "{recs:?}");
    let path = recs.pop().unwrap();
    let data = std::fs::read(&path).unwrap();
    (path, data)
}

#[test]
fn an_older_authentic_record_put_back_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (key, gid, blob) = {
        let ring = KeyRing::open_or_create(dir.path(), root()).unwrap();
        let c = ring.client(p("user:a"));
        let k = c
            .create_key(KeySpec::default(), CreateKeyOptions::new())
            .unwrap();
        let CreatedGrant { grant_id: gid, .. } = c
            .create_grant(
                k.as_str(),
                GrantRequest::new(p("user:bob"), &[Action::Decrypt]),
            )
            .unwrap();
        let blob = c.encrypt(k.as_str(), b"x", &ctx()).unwrap();
        (k.to_string(), gid, blob)
    };
    let (old_path, old) = key_record(dir.path());
    let old_files = files(dir.path());
    {
        let ring = KeyRing::open_or_create(dir.path(), root()).unwrap();
        ring.client(p("user:a")).revoke_grant(&key, &gid).unwrap();
    }
    let (cur_path, _) = key_record(dir.path());
    // The old record under the current record's file name: refused.
    let cur = std::fs::read(&cur_path).unwrap();
    std::fs::write(&cur_path, &old).unwrap();
    match KeyRing::open_or_create(dir.path(), root()) {
        Err(Error::CorruptStore { file, .. }) => assert!(file.starts_with("keys/"), "{file}"),
        other => panic!("{other:?}"),
    }
    std::fs::write(&cur_path, &cur).unwrap();
    // The old record (and the old manifest shards) back under their own
    // names: not referenced by the manifest, ignored, and removed.
    for (path, data) in &old_files {
        if path.starts_with(dir.path().join("keys"))
            || path.starts_with(dir.path().join("manifest"))
        {
            std::fs::write(path, data).unwrap();
        }
    }
    let ring = KeyRing::open_or_create(dir.path(), root()).unwrap();
    assert!(!old_path.exists());
    let bob = ring.client(p("user:bob"));
    assert!(matches!(
        bob.decrypt(&blob, &ctx()),
        Err(Error::AccessDenied { .. })
    ));
    // A running ring notices the whole store going back in time.
    let before = files(dir.path());
    ring.client(p("user:a")).disable_key(&key).unwrap();
    for path in files(dir.path()).keys() {
        std::fs::remove_file(path).unwrap();
    }
    for (path, data) in &before {
        std::fs::write(path, data).unwrap();
    }
    match ring.client(p("user:a")).describe_key(&key) {
        Err(Error::CorruptStore { file, reason }) => {
            assert_eq!(file, "MANIFEST");
            assert!(reason.contains("went back"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

// Item 10: freshness across rings and processes.

/// A key policy letting user:a do everything, except encrypt if `deny`.
fn policy(deny: bool) -> strongroom::policy::Policy {
    let deny = if deny {
        r#",{"Sid":"NoEncrypt","Effect":"Deny","Principal":"user:a","Action":"strongroom:Encrypt"}"#
    } else {
        ""
    };
    strongroom::policy::Policy::from_json(&format!(
        r#"{{"Version":"2026-01-01","Statement":[
  {{"Sid":"A","Effect":"Allow","Principal":"user:a","Action":"strongroom:*"}}{deny}]}}"#
    ))
    .unwrap()
}

#[test]
fn a_second_ring_sees_every_change_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(strongroom::clock::ManualClock::new(strongroom::Timestamp(
        1_800_000_000,
    )));
    let a = KeyRing::builder()
        .clock(clock.clone())
        .file_keystore(
            dir.path(),
            &root(),
            KeystoreOptions::default().mode(OpenMode::OpenOrCreate),
        )
        .unwrap()
        .build();
    let b = KeyRing::open_or_create(dir.path(), root()).unwrap();
    let (ca, cb) = (a.client(p("user:a")), b.client(p("user:a")));
    let key = ca
        .create_key(
            KeySpec::default(),
            CreateKeyOptions::new().alias("alias/fresh"),
        )
        .unwrap()
        .to_string();
    assert_eq!(cb.describe_key("alias/fresh").unwrap().key_id.as_str(), key);
    let CreatedGrant { grant_id: gid, .. } = ca
        .create_grant(&key, GrantRequest::new(p("user:bob"), &[Action::Decrypt]))
        .unwrap();
    let blob = ca.encrypt(&key, b"x", &ctx()).unwrap();
    assert!(b.client(p("user:bob")).decrypt(&blob, &ctx()).is_ok());
    ca.revoke_grant(&key, &gid).unwrap();
    assert!(matches!(
        b.client(p("user:bob")).decrypt(&blob, &ctx()),
        Err(Error::AccessDenied { .. })
    ));
    // A new version: b decrypts a's new ciphertexts and encrypts with it.
    ca.rotate_key_on_demand(&key).unwrap();
    let v2 = ca.encrypt(&key, b"v2", &ctx()).unwrap();
    assert_eq!(cb.decrypt(&v2, &ctx()).unwrap().key_version, 2);
    let from_b = cb.encrypt(&key, b"b", &ctx()).unwrap();
    assert_eq!(ca.decrypt(&from_b, &ctx()).unwrap().key_version, 2);
    // A tightened policy.
    ca.put_key_policy(&key, &policy(true), PutKeyPolicyOptions::default())
        .unwrap();
    assert!(matches!(
        cb.encrypt(&key, b"x", &ctx()),
        Err(Error::AccessDenied { .. })
    ));
    ca.put_key_policy(&key, &policy(false), PutKeyPolicyOptions::default())
        .unwrap();
    // Disabled, then deleted.
    ca.disable_key(&key).unwrap();
    assert!(matches!(
        cb.encrypt(&key, b"x", &ctx()),
        Err(Error::InvalidKeyState { .. })
    ));
    ca.enable_key(&key).unwrap();
    assert!(cb.encrypt(&key, b"x", &ctx()).is_ok());
    ca.schedule_key_deletion(
        &key,
        ScheduleDeletionOptions::default().pending_window_days(7),
    )
    .unwrap();
    clock.advance_days(8);
    assert_eq!(a.run_maintenance().unwrap().deleted.len(), 1);
    assert!(matches!(
        cb.encrypt(&key, b"x", &ctx()),
        Err(Error::KeyNotFound(_))
    ));
    assert!(cb.describe_key("alias/fresh").is_err());
    assert!(
        cb.list_keys(ListOptions::default().limit(10))
            .unwrap()
            .items
            .is_empty()
    );
    // b's backend dropped the material: even the backend escape hatch no
    // longer has it.
    let m = strongroom::backend::MaterialId::new(strongroom::KeyId::parse(&key).unwrap(), 1);
    assert!(!b.dangerous_backend().contains(&m).unwrap());
    assert!(b.dangerous_backend().encrypt(&m, b"", b"x").is_err());
}

#[test]
fn a_ring_in_another_process_sees_every_change_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(strongroom::clock::ManualClock::new(strongroom::Timestamp(
        1_800_000_000,
    )));
    let ring = KeyRing::builder()
        .clock(clock.clone())
        .file_keystore(
            dir.path(),
            &root(),
            KeystoreOptions::default().mode(OpenMode::OpenOrCreate),
        )
        .unwrap()
        .build();
    let c = ring.client(p("user:a"));
    let key = c
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap()
        .to_string();
    let CreatedGrant { grant_id: gid, .. } = c
        .create_grant(&key, GrantRequest::new(p("user:bob"), &[Action::Decrypt]))
        .unwrap();
    let blob = c.encrypt(&key, b"x", &ctx()).unwrap();
    let mut ch = child("serve", dir.path(), "")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = ch.stdin.take().unwrap();
    let mut lines = BufReader::new(ch.stdout.take().unwrap()).lines();
    // The test harness prints its own lines first.
    while !lines.next().unwrap().unwrap().ends_with("READY") {}
    let mut ask = |cmd: String| -> String {
        use std::io::Write;
        writeln!(stdin, "{cmd}").unwrap();
        stdin.flush().unwrap();
        lines.next().unwrap().unwrap()
    };
    let decrypt_as_bob = format!("decrypt user:bob {}", hex(&blob));
    assert!(ask(decrypt_as_bob.clone()).starts_with("OK 1 "));
    c.revoke_grant(&key, &gid).unwrap();
    assert_eq!(ask(decrypt_as_bob), "ERR AccessDenied");
    c.rotate_key_on_demand(&key).unwrap();
    let v2 = c.encrypt(&key, b"v2", &ctx()).unwrap();
    assert_eq!(
        ask(format!("decrypt user:a {}", hex(&v2))),
        format!("OK 2 {}", hex(b"v2"))
    );
    let reply = ask(format!("encrypt {key}"));
    let from_child = unhex(reply.strip_prefix("OK ").unwrap());
    assert_eq!(c.decrypt(&from_child, &ctx()).unwrap().key_version, 2);
    c.put_key_policy(&key, &policy(true), PutKeyPolicyOptions::default())
        .unwrap();
    assert_eq!(ask(format!("encrypt {key}")), "ERR AccessDenied");
    c.put_key_policy(&key, &policy(false), PutKeyPolicyOptions::default())
        .unwrap();
    c.disable_key(&key).unwrap();
    assert_eq!(ask(format!("encrypt {key}")), "ERR InvalidKeyState");
    c.enable_key(&key).unwrap();
    assert!(ask(format!("encrypt {key}")).starts_with("OK "));
    c.schedule_key_deletion(
        &key,
        ScheduleDeletionOptions::default().pending_window_days(7),
    )
    .unwrap();
    clock.advance_days(8);
    assert_eq!(ring.run_maintenance().unwrap().deleted.len(), 1);
    assert_eq!(ask(format!("encrypt {key}")), "ERR KeyNotFound");
    assert_eq!(
        ask(format!("decrypt user:a {}", hex(&v2))),
        "ERR KeyNotFound"
    );
    ask("quit".into());
    assert!(ch.wait().unwrap().success());
}

// Item 11: a wrong root key repairs nothing.

/// Fails every rename onto `MANIFEST`: a root rotation stops right after
/// its commit point.
#[derive(Debug)]
struct NoManifestRename;

impl Storage for NoManifestRename {
    fn write(&self, path: &Path, data: &[u8]) -> std::io::Result<()> {
        RealStorage.write(path, data)
    }
    fn fsync(&self, path: &Path) -> std::io::Result<()> {
        RealStorage.fsync(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        if to.file_name().unwrap() == "MANIFEST" {
            return Err(std::io::Error::other("injected fault"));
        }
        RealStorage.rename(from, to)
    }
    fn fsync_dir(&self, dir: &Path) -> std::io::Result<()> {
        RealStorage.fsync_dir(dir)
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        RealStorage.remove(path)
    }
}

#[test]
fn a_wrong_root_key_repairs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let key = {
        let ring = KeyRing::open_or_create(dir.path(), root()).unwrap();
        ring.client(p("user:a"))
            .create_key(KeySpec::default(), CreateKeyOptions::new().alias("alias/w"))
            .unwrap()
    };
    // Crash leftovers of interrupted writes: a wrong key removes none.
    std::fs::write(dir.path().join("keys/.tmp-999-leftover"), b"torn").unwrap();
    std::fs::write(dir.path().join("keys/leftover.rec.new"), b"torn").unwrap();
    std::fs::write(dir.path().join(".tmp-999-top"), b"torn").unwrap();
    let before = files(dir.path());
    assert!(matches!(
        KeyRing::open_or_create(dir.path(), RootKey::raw([0x22; 32])),
        Err(Error::WrongRootKey)
    ));
    assert_eq!(files(dir.path()), before);
    // A root rotation interrupted right after its commit point: neither a
    // wrong key nor the old one finishes it.
    let new_root = || RootKey::raw([0x44; 32]);
    let faulty = KeystoreOptions::default()
        .mode(OpenMode::OpenOrCreate)
        .storage(Arc::new(NoManifestRename));
    assert!(rotate_root_key(dir.path(), &root(), &new_root(), &faulty).is_err());
    let before = files(dir.path());
    assert!(before.keys().any(|p| p.ends_with("ROOT-ROTATION.json")));
    for wrong in [RootKey::raw([0x22; 32]), root()] {
        assert!(matches!(
            KeyRing::open_or_create(dir.path(), wrong),
            Err(Error::WrongRootKey)
        ));
        assert_eq!(files(dir.path()), before);
    }
    // The right (new) key finishes the rotation and removes the leftovers.
    let ring = KeyRing::open_or_create(dir.path(), new_root()).unwrap();
    assert_eq!(
        ring.client(p("user:a"))
            .describe_key("alias/w")
            .unwrap()
            .key_id,
        key
    );
    let after = files(dir.path());
    assert!(!after.keys().any(|p| {
        let n = p.file_name().unwrap().to_str().unwrap();
        n.starts_with(".tmp-") || n.ends_with(".new") || n == "ROOT-ROTATION.json"
    }));
}

// Item 12: root rotation while another ring has the store open.

#[test]
fn rotating_the_root_key_under_an_open_ring_leaves_the_store_openable() {
    let dir = tempfile::tempdir().unwrap();
    let ring = KeyRing::open_or_create(dir.path(), root()).unwrap();
    let c = ring.client(p("user:a"));
    let key = c
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap()
        .to_string();
    let blob = c.encrypt(&key, b"kept", &ctx()).unwrap();
    let new_root = || RootKey::raw([0x55; 32]);
    rotate_root_key(
        dir.path(),
        &root(),
        &new_root(),
        &KeystoreOptions::default().mode(OpenMode::OpenOrCreate),
    )
    .unwrap();
    // The old ring notices, and writes nothing under the old key.
    assert!(matches!(
        c.create_key(KeySpec::default(), CreateKeyOptions::new()),
        Err(Error::WrongRootKey)
    ));
    assert!(matches!(
        c.rotate_key_on_demand(&key),
        Err(Error::WrongRootKey)
    ));
    assert!(matches!(
        c.encrypt(&key, b"x", &ctx()),
        Err(Error::WrongRootKey)
    ));
    drop(ring);
    let ring = KeyRing::open_or_create(dir.path(), new_root()).unwrap();
    let c = ring.client(p("user:a"));
    assert_eq!(
        c.list_keys(ListOptions::default().limit(10))
            .unwrap()
            .items
            .len(),
        1
    );
    assert_eq!(c.describe_key(&key).unwrap().primary_version, 1);
    assert_eq!(
        c.decrypt(&blob, &ctx()).unwrap().plaintext.expose_secret(),
        b"kept"
    );
}

// Item 18 (part): the Argon2id floor.

#[test]
fn argon2_parameters_below_the_floor_are_refused() {
    assert_eq!(Argon2Params::default(), Argon2Params::MINIMUM);
    let weak = Argon2Params {
        m_kib: 64,
        t: 1,
        p: 1,
    };
    let dir = tempfile::tempdir().unwrap();
    let pass = || RootKey::passphrase("correct horse");
    match KeyRing::builder().file_keystore(
        dir.path(),
        &pass(),
        KeystoreOptions::default()
            .mode(OpenMode::OpenOrCreate)
            .argon2(weak),
    ) {
        Err(Error::Configuration(msg)) => assert!(msg.contains("below the minimum"), "{msg}"),
        other => panic!("{other:?}"),
    }
    assert!(!dir.path().join("header.json").exists());
    for params in [
        Argon2Params {
            m_kib: 19 * 1024 - 1,
            ..Argon2Params::MINIMUM
        },
        Argon2Params {
            t: 1,
            ..Argon2Params::MINIMUM
        },
        Argon2Params {
            p: 0,
            ..Argon2Params::MINIMUM
        },
    ] {
        assert!(matches!(
            KeyRing::builder().file_keystore(
                dir.path(),
                &pass(),
                KeystoreOptions::default()
                    .mode(OpenMode::OpenOrCreate)
                    .argon2(params)
            ),
            Err(Error::Configuration(_))
        ));
    }
    // The test-only escape hatch creates one; without it, it is refused.
    let fast =
        weak_argon2_for_tests(KeystoreOptions::default().mode(OpenMode::OpenOrCreate)).argon2(weak);
    KeyRing::builder()
        .file_keystore(dir.path(), &pass(), fast.clone())
        .unwrap();
    assert!(matches!(
        KeyRing::builder().file_keystore(
            dir.path(),
            &pass(),
            KeystoreOptions::default().mode(OpenMode::OpenOrCreate)
        ),
        Err(Error::Configuration(_))
    ));
    // Rotating a raw store to a weak passphrase is refused too.
    let raw = tempfile::tempdir().unwrap();
    KeyRing::open_or_create(raw.path(), root()).unwrap();
    assert!(matches!(
        rotate_root_key(
            raw.path(),
            &root(),
            &pass(),
            &KeystoreOptions::default()
                .mode(OpenMode::OpenOrCreate)
                .argon2(weak)
        ),
        Err(Error::Configuration(_))
    ));
    assert!(KeyRing::open_or_create(raw.path(), root()).is_ok());
}

#[test]
fn a_store_whose_header_is_gone_is_not_replaced_by_an_empty_one() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ring = KeyRing::open_or_create(dir.path(), root()).unwrap();
        ring.client(p("user:a"))
            .create_key(KeySpec::default(), CreateKeyOptions::new())
            .unwrap();
    }
    let header = std::fs::read(dir.path().join("header.json")).unwrap();
    std::fs::remove_file(dir.path().join("header.json")).unwrap();
    let before = files(dir.path());
    match KeyRing::open_or_create(dir.path(), root()) {
        Err(Error::CorruptStore { file, .. }) => assert_eq!(file, "header.json"),
        other => panic!("{other:?}"),
    }
    assert_eq!(files(dir.path()), before);
    std::fs::write(dir.path().join("header.json"), header).unwrap();
    let ring = KeyRing::open_or_create(dir.path(), root()).unwrap();
    assert_eq!(
        ring.client(p("user:a"))
            .list_keys(ListOptions::default().limit(10))
            .unwrap()
            .items
            .len(),
        1
    );
}
