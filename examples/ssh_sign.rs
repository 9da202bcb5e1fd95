//! Sign a file the way `ssh-keygen -Y sign` does, with a strongroom key.
//!
//! ```sh
//! cargo run --example ssh_sign                 # signs a demo string
//! cargo run --example ssh_sign -- release.tgz  # signs a file
//! ```
//!
//! Creates an Ed25519 key in an in-memory ring, prints its OpenSSH public
//! key line and an SSHSIG signature (namespace `file`), checks the
//! signature with strongroom's own verifier, and says how to check it with
//! OpenSSH.

use std::fs::File;
use std::io::BufReader;
use strongroom::interop::ssh::verify_sshsig;
use strongroom::{CreateKeyOptions, KeyRing, KeySpec, Principal};

const NAMESPACE: &str = "file";
const SIGNER: &str = "release@example.com";
const DEMO: &[u8] = b"strongroom ssh_sign demo: these bytes are signed\n";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ring = KeyRing::in_memory();
    let app = ring.client(Principal::service("release-signer")?);
    let key = app.create_key(
        KeySpec::Ed25519,
        CreateKeyOptions::new().alias("alias/release-signing"),
    )?;
    let public = app.get_ssh_public_key(&key, SIGNER)?;

    let path = std::env::args().nth(1);
    let (what, signature, check) = match &path {
        Some(p) => {
            let sig = app.sign_ssh_reader(&key, NAMESPACE, BufReader::new(File::open(p)?))?;
            let ok = verify_sshsig(&public, NAMESPACE, &std::fs::read(p)?, &sig)?;
            (format!("file {p}"), sig, ok)
        }
        None => {
            let sig = app.sign_ssh(&key, NAMESPACE, DEMO)?;
            let ok = verify_sshsig(&public, NAMESPACE, DEMO, &sig)?;
            (
                "the demo string (pass a file path to sign a file)".to_string(),
                sig,
                ok,
            )
        }
    };

    println!("Key {key} (Ed25519, in an in-memory ring: it is gone when this exits)");
    println!();
    println!("OpenSSH public key:");
    println!("  {public}");
    println!();
    println!("SSH signature of {what}, namespace \"{NAMESPACE}\":");
    print!("{signature}");
    println!();
    println!(
        "strongroom's verifier: {}",
        if check {
            "good signature"
        } else {
            "BAD signature"
        }
    );
    println!();
    let data = path.as_deref().unwrap_or("data");
    println!("To verify with OpenSSH, save the signature above as {data}.sig");
    if path.is_none() {
        println!("and the demo string (with its final newline) as {data}, then run:");
    } else {
        println!("next to the file, then run:");
    }
    println!("  echo '{SIGNER} namespaces=\"{NAMESPACE}\" {public}' > allowed_signers");
    println!(
        "  ssh-keygen -Y verify -f allowed_signers -I {SIGNER} -n {NAMESPACE} -s {data}.sig < {data}"
    );
    println!("It prints: Good \"{NAMESPACE}\" signature for {SIGNER} with ED25519 key SHA256:...");
    if !check {
        return Err("the signature did not verify".into());
    }
    Ok(())
}
