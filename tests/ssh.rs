//! SSH interop: OpenSSH public key lines and SSHSIG signatures, against the
//! real OpenSSH `ssh-keygen` in both directions, plus the pipeline rules
//! (authorization, audit, specs, namespaces) and a no-panic property test
//! of the verifier.
//!
//! The `ssh-keygen` tests need OpenSSH's client tools on `PATH`. Without
//! them they print one line saying they skipped and pass, except under
//! `CI=true`, where a skip is a failure (`.ci/run` installs
//! `openssh-client`).

use base64ct::{Base64, Base64Unpadded, Encoding};
use proptest::prelude::*;
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use strongroom::audit::{MemorySink, Outcome};
use strongroom::interop::ssh::{public_key_line, verify_sshsig};
use strongroom::key::HmacAlgorithm;
use strongroom::policy::GrantRequest;
use strongroom::{Action, Client, CreateKeyOptions, Error, KeyRing, KeySpec, Principal};

const SPECS: [KeySpec; 2] = [KeySpec::Ed25519, KeySpec::EccNistP256];

fn client() -> Client {
    KeyRing::in_memory().client(Principal::service("ssh-test").unwrap())
}

fn key(c: &Client, spec: KeySpec) -> String {
    c.create_key(spec, CreateKeyOptions::new())
        .unwrap()
        .to_string()
}

/// Data with bytes of every value and line breaks, as a file would have.
fn data() -> Vec<u8> {
    (0..5000u32).map(|i| (i * 7 % 256) as u8).collect()
}

// ---------------------------------------------------------------- ssh-keygen

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The `ssh-keygen` on PATH, or a skip (a panic under `CI=true`).
fn ssh_keygen_or_skip(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("ssh-keygen"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            !in_ci(),
            "CI=true: {test} may not skip: ssh-keygen is not on PATH; apt-get install -y openssh-client"
        );
        println!(
            "{test}: SKIPPED (ssh-keygen not found); enable with: apt-get install -y openssh-client"
        );
    }
    found
}

/// Runs ssh-keygen with `stdin` as its standard input.
fn run(bin: &Path, args: &[&str], dir: &Path, stdin: Option<&Path>) -> Output {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.stdin(match stdin {
        Some(p) => Stdio::from(std::fs::File::open(p).unwrap()),
        None => Stdio::null(),
    });
    cmd.output().expect("ssh-keygen runs")
}

fn describe(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn our_signatures_verify_with_ssh_keygen_and_tampering_fails() {
    let Some(bin) = ssh_keygen_or_skip("our_signatures_verify_with_ssh_keygen") else {
        return;
    };
    let c = client();
    for spec in SPECS {
        let k = key(&c, spec);
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let line = c.get_ssh_public_key(&k, "strongroom test key").unwrap();
        std::fs::write(
            d.join("allowed_signers"),
            format!("release@example.com namespaces=\"file\" {line}\n"),
        )
        .unwrap();
        let data = data();
        std::fs::write(d.join("data"), &data).unwrap();
        let mut tampered = data.clone();
        tampered[2500] ^= 0x01;
        std::fs::write(d.join("tampered"), &tampered).unwrap();
        // Several signatures per key: ECDSA's r and s vary in length and
        // top bit, which is what the mpint encoding must get right.
        for i in 0..(if spec == KeySpec::EccNistP256 { 8 } else { 2 }) {
            let sig = if i % 2 == 0 {
                c.sign_ssh(&k, "file", &data).unwrap()
            } else {
                c.sign_ssh_reader(&k, "file", &data[..]).unwrap()
            };
            std::fs::write(d.join("data.sig"), &sig).unwrap();
            let verify = |ns: &str, input: &str| {
                run(
                    &bin,
                    &[
                        "-Y",
                        "verify",
                        "-f",
                        "allowed_signers",
                        "-I",
                        "release@example.com",
                        "-n",
                        ns,
                        "-s",
                        "data.sig",
                    ],
                    d,
                    Some(&d.join(input)),
                )
            };
            let ok = verify("file", "data");
            assert!(ok.status.success(), "{spec}: {}", describe(&ok));
            assert!(
                String::from_utf8_lossy(&ok.stdout)
                    .contains("Good \"file\" signature for release@example.com"),
                "{}",
                describe(&ok)
            );
            let check = |input: &str| {
                run(
                    &bin,
                    &["-Y", "check-novalidate", "-n", "file", "-s", "data.sig"],
                    d,
                    Some(&d.join(input)),
                )
            };
            let ok = check("data");
            assert!(ok.status.success(), "{spec}: {}", describe(&ok));
            // A flipped bit in the data, or another namespace, fails there.
            let bad = verify("file", "tampered");
            assert!(!bad.status.success(), "{spec}: {}", describe(&bad));
            let bad = check("tampered");
            assert!(!bad.status.success(), "{spec}: {}", describe(&bad));
            let bad = verify("git", "data");
            assert!(!bad.status.success(), "{spec}: {}", describe(&bad));
            // And our own verifier agrees on all three.
            assert!(verify_sshsig(&line, "file", &data, &sig).unwrap());
            assert!(!verify_sshsig(&line, "file", &tampered, &sig).unwrap());
            assert!(!verify_sshsig(&line, "git", &data, &sig).unwrap());
        }
    }
}

#[test]
fn ssh_keygen_reads_our_public_keys() {
    let Some(bin) = ssh_keygen_or_skip("ssh_keygen_reads_our_public_keys") else {
        return;
    };
    let c = client();
    for spec in SPECS {
        let k = key(&c, spec);
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let line = c.get_ssh_public_key(&k, "me@example.com").unwrap();
        std::fs::write(d.join("key.pub"), format!("{line}\n")).unwrap();
        // The fingerprint ssh-keygen computes is SHA-256 of the key blob;
        // here the blob is built independently from the SPKI DER.
        let spki = c.get_public_key(&k).unwrap().der;
        let blob = independent_key_blob(spec, &spki);
        let fp = format!(
            "SHA256:{}",
            Base64Unpadded::encode_string(&sha2::Sha256::digest(&blob))
        );
        let out = run(&bin, &["-l", "-f", "key.pub"], d, None);
        assert!(out.status.success(), "{}", describe(&out));
        let listed = String::from_utf8_lossy(&out.stdout);
        assert!(listed.starts_with("256 SHA256:"), "{listed}");
        assert!(listed.contains(&fp), "{listed} vs {fp}");
        assert!(listed.contains("me@example.com"), "{listed}");
        assert!(
            listed.trim_end().ends_with(if spec == KeySpec::Ed25519 {
                "(ED25519)"
            } else {
                "(ECDSA)"
            }),
            "{listed}"
        );
        // ssh-keygen converts the P-256 line back to the same SPKI PEM
        // (OpenSSH 9.2 cannot export Ed25519 as PKCS#8).
        if spec == KeySpec::EccNistP256 {
            let out = run(&bin, &["-e", "-m", "PKCS8", "-f", "key.pub"], d, None);
            assert!(out.status.success(), "{}", describe(&out));
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                c.get_public_key(&k).unwrap().pem.trim()
            );
        }
    }
}

#[test]
fn ssh_keygen_signatures_verify_with_ours() {
    let Some(bin) = ssh_keygen_or_skip("ssh_keygen_signatures_verify_with_ours") else {
        return;
    };
    let data = data();
    let mut tampered = data.clone();
    tampered[0] ^= 0x80;
    for (kind, bits) in [("ed25519", "256"), ("ecdsa", "256")] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let out = run(
            &bin,
            &[
                "-q", "-t", kind, "-b", bits, "-N", "", "-C", "theirs", "-f", "id",
            ],
            d,
            None,
        );
        assert!(out.status.success(), "{}", describe(&out));
        let line = std::fs::read_to_string(d.join("id.pub")).unwrap();
        std::fs::write(d.join("data"), &data).unwrap();
        // sha512 (the default) and sha256, several signatures each.
        for hashalg in ["sha512", "sha256"] {
            for _ in 0..4 {
                let _ = std::fs::remove_file(d.join("data.sig"));
                let opt = format!("hashalg={hashalg}");
                let out = run(
                    &bin,
                    &["-Y", "sign", "-f", "id", "-n", "file", "-O", &opt, "data"],
                    d,
                    None,
                );
                assert!(out.status.success(), "{}", describe(&out));
                let sig = std::fs::read_to_string(d.join("data.sig")).unwrap();
                assert!(
                    verify_sshsig(&line, "file", &data, &sig).unwrap(),
                    "{kind} {hashalg}"
                );
                assert!(!verify_sshsig(&line, "file", &tampered, &sig).unwrap());
                assert!(!verify_sshsig(&line, "git", &data, &sig).unwrap());
            }
        }
        // A signature by another key does not verify under this one.
        let other = client();
        let k = key(
            &other,
            if kind == "ed25519" {
                KeySpec::Ed25519
            } else {
                KeySpec::EccNistP256
            },
        );
        let ours = other.sign_ssh(&k, "file", &data).unwrap();
        assert!(!verify_sshsig(&line, "file", &data, &ours).unwrap());
    }
}

/// The SSH key blob from SPKI DER, written without the crate: the key
/// bytes are the last 32 (Ed25519) or 65 (P-256) bytes of the SPKI.
fn independent_key_blob(spec: KeySpec, spki: &[u8]) -> Vec<u8> {
    fn s(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(&(b.len() as u32).to_be_bytes());
        out.extend_from_slice(b);
    }
    let mut blob = Vec::new();
    if spec == KeySpec::Ed25519 {
        s(&mut blob, b"ssh-ed25519");
        s(&mut blob, &spki[spki.len() - 32..]);
    } else {
        s(&mut blob, b"ecdsa-sha2-nistp256");
        s(&mut blob, b"nistp256");
        s(&mut blob, &spki[spki.len() - 65..]);
    }
    blob
}

// ------------------------------------------------------- without ssh-keygen

/// An SSHSIG signature decoded by hand (PROTOCOL.sshsig), independently of
/// the crate's parser.
struct Decoded {
    version: u32,
    public_key: Vec<u8>,
    namespace: Vec<u8>,
    reserved: Vec<u8>,
    hash: Vec<u8>,
    signature: Vec<u8>,
}

fn decode(armored: &str) -> Decoded {
    let body: String = armored
        .strip_prefix("-----BEGIN SSH SIGNATURE-----\n")
        .unwrap()
        .strip_suffix("-----END SSH SIGNATURE-----\n")
        .unwrap()
        .lines()
        .inspect(|l| assert!(l.len() <= 70))
        .collect();
    let blob = Base64::decode_vec(&body).unwrap();
    assert_eq!(&blob[..6], b"SSHSIG");
    let mut at = 10;
    let mut next = || {
        let n = u32::from_be_bytes(blob[at..at + 4].try_into().unwrap()) as usize;
        at += 4 + n;
        blob[at - n..at].to_vec()
    };
    let d = Decoded {
        version: u32::from_be_bytes(blob[6..10].try_into().unwrap()),
        public_key: next(),
        namespace: next(),
        reserved: next(),
        hash: next(),
        signature: next(),
    };
    assert_eq!(at, blob.len(), "no trailing bytes");
    d
}

fn strings(mut b: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let n = u32::from_be_bytes(b[..4].try_into().unwrap()) as usize;
        out.push(b[4..4 + n].to_vec());
        b = &b[4 + n..];
    }
    out
}

#[test]
fn signatures_decode_by_hand_and_verify_with_the_curve_crates() {
    let c = client();
    let data = data();
    for spec in SPECS {
        let k = key(&c, spec);
        let spki = c.get_public_key(&k).unwrap().der;
        let sig = c.sign_ssh(&k, "name@example.com", &data).unwrap();
        let d = decode(&sig);
        assert_eq!(d.version, 1);
        assert_eq!(d.public_key, independent_key_blob(spec, &spki));
        assert_eq!(d.namespace, b"name@example.com");
        assert!(d.reserved.is_empty());
        assert_eq!(d.hash, b"sha512");
        // What the key signed (PROTOCOL.sshsig section 3).
        let mut signed = b"SSHSIG".to_vec();
        for part in [
            &b"name@example.com"[..],
            b"",
            b"sha512",
            &sha2::Sha512::digest(&data),
        ] {
            signed.extend_from_slice(&(part.len() as u32).to_be_bytes());
            signed.extend_from_slice(part);
        }
        let parts = strings(&d.signature);
        assert_eq!(parts.len(), 2);
        if spec == KeySpec::Ed25519 {
            assert_eq!(parts[0], b"ssh-ed25519");
            use ed25519_dalek::pkcs8::DecodePublicKey;
            let vk = ed25519_dalek::VerifyingKey::from_public_key_der(&spki).unwrap();
            let s = ed25519_dalek::Signature::from_slice(&parts[1]).unwrap();
            vk.verify_strict(&signed, &s).unwrap();
        } else {
            assert_eq!(parts[0], b"ecdsa-sha2-nistp256");
            let rs = strings(&parts[1]);
            assert_eq!(rs.len(), 2);
            let mut raw = [0u8; 64];
            for (i, m) in rs.iter().enumerate() {
                // Minimal, non-negative mpints.
                assert!(m[0] & 0x80 == 0 && !(m[0] == 0 && m.len() > 1 && m[1] & 0x80 == 0));
                let m = if m[0] == 0 { &m[1..] } else { &m[..] };
                raw[i * 32 + 32 - m.len()..(i + 1) * 32].copy_from_slice(m);
            }
            use p256::ecdsa::signature::Verifier;
            use p256::pkcs8::DecodePublicKey;
            let vk = p256::ecdsa::VerifyingKey::from_public_key_der(&spki).unwrap();
            vk.verify(&signed, &p256::ecdsa::Signature::from_slice(&raw).unwrap())
                .unwrap();
        }
        // The offline encoder gives the same line as the ring.
        assert_eq!(
            public_key_line(&spki, "c").unwrap(),
            c.get_ssh_public_key(&k, "c").unwrap()
        );
    }
}

#[test]
fn lines_look_like_openssh_lines() {
    let c = client();
    let ed = key(&c, KeySpec::Ed25519);
    let line = c.get_ssh_public_key(&ed, "").unwrap();
    assert!(
        line.starts_with("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI"),
        "{line}"
    );
    assert_eq!(
        line.split(' ').count(),
        2,
        "no trailing space without a comment"
    );
    let ec = key(&c, KeySpec::EccNistP256);
    let line = c.get_ssh_public_key(&ec, "a b").unwrap();
    assert!(
        line.starts_with(
            "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBB"
        ),
        "{line}"
    );
    assert!(line.ends_with(" a b"));
    for bad in ["a\nb", "tab\there", "\r", &"x".repeat(1025)] {
        assert!(
            matches!(
                c.get_ssh_public_key(&ec, bad),
                Err(Error::InvalidArgument(_))
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn only_signing_keys_have_ssh_forms() {
    let c = client();
    for spec in [
        KeySpec::default(),
        KeySpec::Hmac(HmacAlgorithm::Sha256),
        KeySpec::HpkeP256,
    ] {
        let k = key(&c, spec);
        let e = c.get_ssh_public_key(&k, "").unwrap_err();
        assert!(matches!(e, Error::Unsupported(_)), "{spec}: {e}");
        assert!(e.to_string().contains("Ed25519 or ECDSA P-256"), "{e}");
        let e = c.sign_ssh(&k, "file", b"x").unwrap_err();
        // Symmetric and HPKE keys fail the usage check (Sign needs a
        // SignVerify key); any that passed it would fail the spec check.
        assert!(
            matches!(e, Error::Unsupported(_) | Error::WrongKeyUsage { .. }),
            "{spec}: {e}"
        );
    }
}

#[test]
fn namespaces_are_required_and_checked() {
    let c = client();
    let k = key(&c, KeySpec::Ed25519);
    let line = c.get_ssh_public_key(&k, "").unwrap();
    let long = "n".repeat(257);
    for bad in [
        "",
        "has space",
        "quote\"",
        "comma,list",
        "star*",
        "ünï",
        long.as_str(),
    ] {
        assert!(
            matches!(c.sign_ssh(&k, bad, b"x"), Err(Error::InvalidArgument(_))),
            "{bad:?}"
        );
        assert!(
            matches!(
                c.sign_ssh_reader(&k, bad, &b"x"[..]),
                Err(Error::InvalidArgument(_))
            ),
            "{bad:?}"
        );
        let sig = c.sign_ssh(&k, "file", b"x").unwrap();
        assert!(
            matches!(
                verify_sshsig(&line, bad, b"x", &sig),
                Err(Error::InvalidArgument(_))
            ),
            "{bad:?}"
        );
    }
    for good in [
        "file",
        "git",
        "name@example.com",
        "a-b.c_d+e:f/g=h",
        &"n".repeat(256),
    ] {
        let sig = c.sign_ssh(&k, good, b"x").unwrap();
        assert!(verify_sshsig(&line, good, b"x", &sig).unwrap(), "{good}");
    }
}

#[test]
fn sign_ssh_is_one_audited_sign_and_a_sign_grant_is_enough() {
    let sink = Arc::new(MemorySink::new());
    let ring = KeyRing::builder().audit_sink(sink.clone()).build();
    let admin = ring.client(Principal::user("admin").unwrap());
    let bob = ring.client(Principal::user("bob").unwrap());
    let k = admin
        .create_key(KeySpec::Ed25519, CreateKeyOptions::new().alias("alias/ssh"))
        .unwrap();
    let line = admin.get_ssh_public_key("alias/ssh", "").unwrap();
    let before = sink.events().len();
    let sig = admin.sign_ssh("alias/ssh", "file", b"data").unwrap();
    let ev = sink.events();
    assert_eq!(ev.len(), before + 1, "exactly one event");
    let e = &ev[before];
    assert_eq!(e.action, "strongroom:Sign");
    assert_eq!(e.key_id.as_deref(), Some(k.as_str()));
    assert_eq!(e.key_version, Some(1));
    assert!(matches!(e.outcome, Outcome::Allowed));
    assert!(verify_sshsig(&line, "file", b"data", &sig).unwrap());
    // get_ssh_public_key is one GetPublicKey.
    admin.get_ssh_public_key(&k, "x").unwrap();
    let ev = sink.events();
    assert_eq!(ev.last().unwrap().action, "strongroom:GetPublicKey");
    // Bob may not sign, and the refusal is recorded as a denied Sign.
    let n = sink.events().len();
    assert!(matches!(
        bob.sign_ssh(&k, "file", b"data"),
        Err(Error::AccessDenied {
            action: Action::Sign,
            ..
        })
    ));
    let ev = sink.events();
    assert_eq!(ev.len(), n + 1);
    assert_eq!(ev[n].action, "strongroom:Sign");
    assert!(matches!(ev[n].outcome, Outcome::Denied { .. }));
    assert!(matches!(
        bob.get_ssh_public_key(&k, ""),
        Err(Error::AccessDenied {
            action: Action::GetPublicKey,
            ..
        })
    ));
    // With a grant for Sign alone (GetPublicKey is not grantable), he can.
    admin
        .create_grant(
            &k,
            GrantRequest::new(Principal::user("bob").unwrap(), &[Action::Sign]),
        )
        .unwrap();
    let sig = bob.sign_ssh(&k, "file", b"data").unwrap();
    assert!(verify_sshsig(&line, "file", b"data", &sig).unwrap());
    // A disabled key signs nothing.
    admin.disable_key(&k).unwrap();
    assert!(matches!(
        admin.sign_ssh(&k, "file", b"data"),
        Err(Error::InvalidKeyState { .. })
    ));
}

#[test]
fn reader_and_slice_sign_the_same_and_read_errors_are_errors() {
    let c = client();
    let k = key(&c, KeySpec::Ed25519);
    // Ed25519 is deterministic: the same data gives the same signature.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(
        c.sign_ssh(&k, "file", &big).unwrap(),
        c.sign_ssh_reader(&k, "file", &big[..]).unwrap()
    );
    // Larger than sign's 1 MiB limit: the data is hashed first.
    let huge = vec![0x5au8; 3 << 20];
    let sig = c.sign_ssh_reader(&k, "file", &huge[..]).unwrap();
    let line = c.get_ssh_public_key(&k, "").unwrap();
    assert!(verify_sshsig(&line, "file", &huge, &sig).unwrap());
    struct Broken;
    impl std::io::Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk on fire"))
        }
    }
    assert!(matches!(
        c.sign_ssh_reader(&k, "file", Broken),
        Err(Error::Other(_))
    ));
}

#[test]
fn verifier_rejects_bad_public_key_lines_with_errors() {
    let c = client();
    let k = key(&c, KeySpec::Ed25519);
    let line = c.get_ssh_public_key(&k, "").unwrap();
    let sig = c.sign_ssh(&k, "file", b"x").unwrap();
    let b64 = line.split(' ').nth(1).unwrap();
    for bad in [
        String::new(),
        "ssh-ed25519".to_string(),
        format!("ssh-ed25519 {b64}!"),
        format!("ecdsa-sha2-nistp256 {b64}"), // type does not match the blob
        "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC7".to_string(),
        format!("ssh-ed25519 {}", &b64[..b64.len() - 4]),
        format!("{line} {}", "x".repeat(9000)),
    ] {
        assert!(
            matches!(
                verify_sshsig(&bad, "file", b"x", &sig),
                Err(Error::InvalidArgument(_))
            ),
            "{bad:.60}"
        );
    }
    // Whitespace around the line and a comment are fine.
    assert!(verify_sshsig(&format!("  {line} comment here \n"), "file", b"x", &sig).unwrap());
    // A malformed signature is simply invalid.
    for bad in [
        "",
        "garbage",
        &sig[..sig.len() - 5],
        &sig.replace("SSH SIGNATURE", "PGP"),
    ] {
        assert!(!verify_sshsig(&line, "file", b"x", bad).unwrap(), "{bad:?}");
    }
    assert!(!verify_sshsig(&line, "file", b"x", &"A".repeat(20_000)).unwrap());
}

/// A signature with `edit` applied to its decoded blob, re-armored.
fn rearmor(sig: &str, edit: impl FnOnce(&mut Vec<u8>)) -> String {
    let body: String = sig.lines().filter(|l| !l.starts_with("-----")).collect();
    let mut blob = Base64::decode_vec(&body).unwrap();
    edit(&mut blob);
    format!(
        "-----BEGIN SSH SIGNATURE-----\n{}\n-----END SSH SIGNATURE-----\n",
        Base64::encode_string(&blob)
    )
}

/// One (public key line, signature of b"proptest data" in "file") per spec.
fn fixtures() -> &'static [(String, String)] {
    static FIXTURES: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();
    FIXTURES.get_or_init(|| {
        let c = client();
        SPECS
            .iter()
            .map(|&spec| {
                let k = key(&c, spec);
                (
                    c.get_ssh_public_key(&k, "").unwrap(),
                    c.sign_ssh(&k, "file", b"proptest data").unwrap(),
                )
            })
            .collect()
    })
}

#[test]
fn version_and_trailing_bytes_are_checked() {
    for (line, sig) in fixtures().iter().map(|(l, s)| (l.as_str(), s.as_str())) {
        assert!(verify_sshsig(line, "file", b"proptest data", sig).unwrap());
        assert!(verify_sshsig(line, "file", b"proptest data", &rearmor(sig, |_| {})).unwrap());
        let v2 = rearmor(sig, |b| b[9] = 2);
        assert!(!verify_sshsig(line, "file", b"proptest data", &v2).unwrap());
        let trailing = rearmor(sig, |b| b.push(0));
        assert!(!verify_sshsig(line, "file", b"proptest data", &trailing).unwrap());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary text as the signature, or as the key line: never a panic,
    /// never a valid signature.
    #[test]
    fn garbage_never_panics(garbage in ".{0,600}", bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let (line, _) = &fixtures()[0];
        prop_assert!(!verify_sshsig(line, "file", b"proptest data", &garbage).unwrap());
        let armored = format!(
            "-----BEGIN SSH SIGNATURE-----\n{}\n-----END SSH SIGNATURE-----\n",
            Base64::encode_string(&bytes)
        );
        prop_assert!(!verify_sshsig(line, "file", b"proptest data", &armored).unwrap());
        let _ = verify_sshsig(&garbage, "file", b"x", &armored);
        let _ = verify_sshsig(&format!("ssh-ed25519 {}", Base64::encode_string(&bytes)), "file", b"x", &armored);
    }

    /// Any single changed byte of a valid signature's blob, or any
    /// truncation, makes it invalid (and never panics).
    #[test]
    fn mutations_never_verify(which in 0usize..2, at in any::<prop::sample::Index>(), xor in 1u8..=255, cut in any::<prop::sample::Index>()) {
        let (line, sig) = &fixtures()[which];
        let mutated = rearmor(sig, |b| { let i = at.index(b.len()); b[i] ^= xor; });
        prop_assert!(!verify_sshsig(line, "file", b"proptest data", &mutated).unwrap());
        let truncated = rearmor(sig, |b| { let n = cut.index(b.len()); b.truncate(n); });
        prop_assert!(!verify_sshsig(line, "file", b"proptest data", &truncated).unwrap());
    }
}
