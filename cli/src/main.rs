//! `strongroom`: the command-line tool of the strongroom key management
//! library. A file keystore protected by a passphrase; keys, aliases,
//! policies and grants; encryption and decryption of files and streams
//! under an encryption context; signing; audit-log verification.
//!
//! Exit codes (see `exit.rs` and the README): 0 ok, 1 usage or bad input,
//! 2 denied, 3 not found or bad key state, 4 not authentic (decryption,
//! signature or audit log), 5 keystore or passphrase, 6 busy (retry),
//! 7 I/O, 8 internal.

#![forbid(unsafe_code)]

mod audit;
mod data;
mod exit;
mod hex;
mod keystore;
mod manage;
mod output;
mod passphrase;
mod progress;
mod timefmt;

use clap::{Args, Parser, Subcommand, ValueEnum};
use exit::CliError;
use keystore::Session;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use strongroom::key::{HmacAlgorithm, SymmetricAlgorithm};
use strongroom::{KeySpec, Principal};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  usage: bad arguments or input, existing output file (without --force)
  2  denied: the principal (--as) may not do this
  3  not found, already exists, or the key's state/usage forbids it
  4  not authentic: decryption failed (wrong context, truncated or tampered
     input), signature invalid, audit log invalid
  5  keystore or passphrase: missing/existing keystore, no or wrong passphrase,
     damaged keystore
  6  busy: another strongroom command holds the keystore; retry
  7  I/O error reading input or writing output
  8  internal error

Environment: STRONGROOM_KEYSTORE (instead of --keystore),
STRONGROOM_PASSPHRASE (instead of --passphrase-file or the prompt).";

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "strongroom",
    version,
    about = "Keys, envelope encryption, signing and audit on a local encrypted keystore",
    after_help = EXIT_CODES
)]
struct Cli {
    /// The keystore directory [env: STRONGROOM_KEYSTORE]
    #[arg(long, global = true, value_name = "DIR")]
    keystore: Option<PathBuf>,
    /// Read the passphrase from this file (mode 0600; one trailing newline
    /// is ignored). Else STRONGROOM_PASSPHRASE, else a prompt.
    #[arg(long, global = true, value_name = "PATH")]
    passphrase_file: Option<PathBuf>,
    /// Act as this principal (user:NAME, service:NAME, role:NAME); default:
    /// the keystore's admin. Selects, does not authenticate.
    #[arg(long = "as", global = true, value_name = "PRINCIPAL", value_parser = principal)]
    as_principal: Option<Principal>,
    /// Machine-readable JSON output (list, describe, create, audit verify)
    #[arg(long, global = true)]
    json: bool,
    /// No progress bar and no confirmations
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

fn principal(s: &str) -> Result<Principal, String> {
    s.parse::<Principal>().map_err(|e| e.to_string())
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a new keystore (the directory must be absent or empty)
    Init {
        /// The administrator: the only principal that may create and list
        /// keys, and the default --as [default: --as, else user:admin]
        #[arg(long, value_parser = principal)]
        admin: Option<Principal>,
    },
    /// Create, list, describe, rotate, enable, disable and delete keys
    #[command(subcommand)]
    Key(KeyCmd),
    /// Create, update, delete and list aliases
    #[command(subcommand)]
    Alias(AliasCmd),
    /// Put or get a key's policy (JSON)
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Create, list and revoke grants
    #[command(subcommand)]
    Grant(GrantCmd),
    /// Encrypt a file or stdin into an envelope message
    Encrypt(EncryptCmd),
    /// Decrypt an envelope message; output appears only once it verified
    Decrypt(DecryptCmd),
    /// Sign a message (at most 1 MiB) with a signing key
    Sign {
        /// Key id or alias (an ECC_NIST_P256 or ED25519 key)
        #[arg(long)]
        key: String,
        /// Input file, or - for stdin [default: stdin]
        #[arg(long = "in", value_name = "FILE")]
        input: Option<PathBuf>,
        /// Write the raw signature here [default: hex on stdout]
        #[arg(long = "out", value_name = "FILE")]
        output: Option<PathBuf>,
        /// Replace an existing output file
        #[arg(long)]
        force: bool,
    },
    /// Verify a signature: exit 0 if valid, 4 if not
    Verify {
        /// Key id or alias
        #[arg(long)]
        key: String,
        /// The signature file (raw bytes, or the hex `sign` prints)
        #[arg(long, value_name = "FILE")]
        signature: PathBuf,
        /// Input file, or - for stdin [default: stdin]
        #[arg(long = "in", value_name = "FILE")]
        input: Option<PathBuf>,
    },
    /// Verify the keystore's audit log
    #[command(subcommand)]
    Audit(AuditCmd),
}

/// Key specs by CLI name.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Spec {
    /// AES-256-GCM (encrypt/decrypt)
    Aes256Gcm,
    /// ChaCha20-Poly1305 (encrypt/decrypt)
    Chacha20Poly1305,
    /// ECDSA P-256 with SHA-256 (sign/verify)
    EccNistP256,
    /// Ed25519 (sign/verify)
    Ed25519,
    /// HMAC-SHA-256
    Hmac256,
    /// HMAC-SHA-384
    Hmac384,
    /// HMAC-SHA-512
    Hmac512,
}

impl From<Spec> for KeySpec {
    fn from(s: Spec) -> KeySpec {
        match s {
            Spec::Aes256Gcm => KeySpec::Symmetric(SymmetricAlgorithm::Aes256Gcm),
            Spec::Chacha20Poly1305 => KeySpec::Symmetric(SymmetricAlgorithm::ChaCha20Poly1305),
            Spec::EccNistP256 => KeySpec::EccNistP256,
            Spec::Ed25519 => KeySpec::Ed25519,
            Spec::Hmac256 => KeySpec::Hmac(HmacAlgorithm::Sha256),
            Spec::Hmac384 => KeySpec::Hmac(HmacAlgorithm::Sha384),
            Spec::Hmac512 => KeySpec::Hmac(HmacAlgorithm::Sha512),
        }
    }
}

#[derive(Debug, Subcommand)]
enum KeyCmd {
    /// Create a key; prints its id
    Create {
        /// What kind of key
        #[arg(long, value_enum, default_value = "aes256-gcm")]
        spec: Spec,
        /// An alias for it (alias/NAME)
        #[arg(long)]
        alias: Option<String>,
        /// Free text
        #[arg(long)]
        description: Option<String>,
        /// A tag key=value (repeatable)
        #[arg(long = "tag", value_name = "K=V")]
        tags: Vec<String>,
    },
    /// List key ids and their aliases
    List,
    /// Show a key's metadata
    Describe {
        /// Key id or alias
        key: String,
    },
    /// Rotate a key now (new primary version; old ones still decrypt)
    Rotate {
        /// Key id or alias
        key: String,
    },
    /// Disable a key (it refuses every cryptographic operation)
    Disable {
        /// Key id or alias
        key: String,
    },
    /// Enable a disabled key
    Enable {
        /// Key id or alias
        key: String,
    },
    /// Schedule the destruction of a key's material (7 to 30 days)
    ScheduleDeletion {
        /// Key id or alias
        key: String,
        /// Days until deletion [default: 30]
        #[arg(long)]
        days: Option<u32>,
    },
    /// Cancel a scheduled deletion (the key stays disabled)
    CancelDeletion {
        /// Key id or alias
        key: String,
    },
    /// Print a signing key's public key (PEM)
    PublicKey {
        /// Key id or alias
        key: String,
    },
}

#[derive(Debug, Subcommand)]
enum AliasCmd {
    /// Point a new alias at a key
    Create {
        /// alias/NAME
        alias: String,
        /// Key id or alias
        key: String,
    },
    /// Repoint an existing alias
    Update {
        /// alias/NAME
        alias: String,
        /// Key id or alias
        key: String,
    },
    /// Delete an alias (not its key)
    Delete {
        /// alias/NAME
        alias: String,
    },
    /// List aliases
    List {
        /// Only this key's aliases
        #[arg(long)]
        key: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCmd {
    /// Replace a key's policy with the JSON document in FILE
    Put {
        /// Key id or alias
        key: String,
        /// The policy document (JSON)
        file: PathBuf,
        /// Allow a policy that would lock the caller out of changing it again
        #[arg(long)]
        bypass_lockout_check: bool,
    },
    /// Print a key's policy (JSON)
    Get {
        /// Key id or alias
        key: String,
        /// Write it to this file instead of stdout
        #[arg(long = "out", value_name = "FILE")]
        output: Option<PathBuf>,
        /// Replace an existing output file
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
enum GrantCmd {
    /// Allow a principal operations on a key; prints the grant id
    Create {
        /// Key id or alias
        key: String,
        /// Who the grant allows
        #[arg(long, value_parser = principal)]
        grantee: Principal,
        /// Operations, e.g. Decrypt,Encrypt,GenerateDataKey (repeatable)
        #[arg(long = "operation", required = true, value_name = "OP[,OP...]")]
        operations: Vec<String>,
        /// A name for the grant
        #[arg(long)]
        name: Option<String>,
        /// Allow only requests whose context is exactly these pairs (repeatable)
        #[arg(long = "context", value_name = "K=V")]
        context: Vec<String>,
    },
    /// List a key's grants
    List {
        /// Key id or alias
        key: String,
    },
    /// Revoke a grant
    Revoke {
        /// Key id or alias
        key: String,
        /// The grant id
        grant_id: String,
    },
}

#[derive(Debug, Args)]
struct EncryptCmd {
    /// Key id or alias
    #[arg(long)]
    key: String,
    /// Encryption context pair (repeatable); decrypt needs the same pairs
    #[arg(long = "context", value_name = "K=V")]
    context: Vec<String>,
    /// Input file, or - for stdin [default: stdin]
    #[arg(long = "in", value_name = "FILE")]
    input: Option<PathBuf>,
    /// Output file, or - for stdout [default: stdout]
    #[arg(long = "out", value_name = "FILE")]
    output: Option<PathBuf>,
    /// Replace an existing output file
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
struct DecryptCmd {
    /// Encryption context pair (repeatable): exactly the pairs used to encrypt
    #[arg(long = "context", value_name = "K=V")]
    context: Vec<String>,
    /// Input file, or - for stdin [default: stdin]
    #[arg(long = "in", value_name = "FILE")]
    input: Option<PathBuf>,
    /// Output file (written only after the whole message verified), or -
    /// for stdout [default: stdout]
    #[arg(long = "out", value_name = "FILE")]
    output: Option<PathBuf>,
    /// Replace an existing output file
    #[arg(long)]
    force: bool,
    /// To stdout: write each frame as it verifies instead of holding the
    /// plaintext (at most 64 MiB) until the whole message verified. Output
    /// is then complete and authentic only if the exit code is 0.
    #[arg(long)]
    unsafe_stream: bool,
}

#[derive(Debug, Subcommand)]
enum AuditCmd {
    /// Check the hash chain and signed digests of the audit log (no passphrase needed)
    Verify {
        /// The audit public key `init` printed (64 hex) [default: the one in the keystore]
        #[arg(long, value_name = "HEX")]
        public_key: Option<String>,
        /// An anchor SEQ:HASH from an earlier verify: the log must still hold it
        #[arg(long)]
        anchor: Option<String>,
    },
}

impl Cli {
    fn dir(&self) -> Result<PathBuf, CliError> {
        keystore::dir(self.keystore.as_deref())
    }

    fn session(&self) -> Result<Session, CliError> {
        let dir = self.dir()?;
        Session::open(
            &dir,
            self.as_principal.clone(),
            self.passphrase_file.as_deref(),
        )
    }
}

fn run(cli: Cli) -> Result<(), CliError> {
    let json = cli.json;
    let quiet = cli.quiet;
    match &cli.command {
        Command::Init { admin } => {
            let dir = cli.dir()?;
            let admin = match (admin, &cli.as_principal) {
                (Some(a), _) | (None, Some(a)) => a.clone(),
                (None, None) => Principal::user("admin")?,
            };
            let done = keystore::init(&dir, admin, cli.passphrase_file.as_deref())?;
            let key = hex::encode(&done.audit_public_key);
            if json {
                return output::emit_json(&serde_json::json!({
                    "keystore": dir.display().to_string(),
                    "admin": done.admin.to_string(),
                    "audit_public_key": key,
                }));
            }
            output::emit(&format!(
                "initialized keystore {}\nadmin: {}\naudit public key: {key}\n\
                 (keep a copy of the public key outside the keystore: \
                 `strongroom audit verify --public-key {key}`)",
                dir.display(),
                done.admin
            ))
        }
        Command::Key(k) => key_command(&cli, k, json, quiet),
        Command::Alias(a) => manage::with(cli.session()?, |c| match a {
            AliasCmd::Create { alias, key } => {
                c.create_alias(alias, key.as_str())?;
                manage::done(quiet, &format!("{alias} -> {key}"))
            }
            AliasCmd::Update { alias, key } => {
                c.update_alias(alias, key.as_str())?;
                manage::done(quiet, &format!("{alias} -> {key}"))
            }
            AliasCmd::Delete { alias } => {
                c.delete_alias(alias)?;
                manage::done(quiet, &format!("deleted {alias}"))
            }
            AliasCmd::List { key } => manage::list_aliases(c, key.as_deref(), json),
        }),
        Command::Policy(p) => manage::with(cli.session()?, |c| match p {
            PolicyCmd::Put {
                key,
                file,
                bypass_lockout_check,
            } => {
                manage::put_policy(c, key, file, *bypass_lockout_check)?;
                manage::done(quiet, &format!("policy of {key} replaced"))
            }
            PolicyCmd::Get { key, output, force } => {
                manage::get_policy(c, key, output.as_deref(), *force)
            }
        }),
        Command::Grant(g) => manage::with(cli.session()?, |c| match g {
            GrantCmd::Create {
                key,
                grantee,
                operations,
                name,
                context,
            } => manage::create_grant(
                c,
                key,
                grantee.clone(),
                operations,
                name.as_deref(),
                context,
                json,
            ),
            GrantCmd::List { key } => manage::list_grants(c, key, json),
            GrantCmd::Revoke { key, grant_id } => {
                c.revoke_grant(key.as_str(), grant_id)?;
                manage::done(quiet, &format!("revoked grant {grant_id}"))
            }
        }),
        Command::Encrypt(e) => data::encrypt(
            || cli.session(),
            data::EncryptArgs {
                key: e.key.clone(),
                context: e.context.clone(),
                input: e.input.clone(),
                output: e.output.clone(),
                force: e.force,
            },
            !quiet,
        ),
        Command::Decrypt(d) => data::decrypt(
            || cli.session(),
            data::DecryptArgs {
                context: d.context.clone(),
                input: d.input.clone(),
                output: d.output.clone(),
                force: d.force,
                unsafe_stream: d.unsafe_stream,
            },
            !quiet,
        ),
        Command::Sign {
            key,
            input,
            output,
            force,
        } => data::sign(
            cli.session()?,
            key,
            input.as_deref(),
            output.as_deref(),
            *force,
        ),
        Command::Verify {
            key,
            signature,
            input,
        } => data::verify(cli.session()?, key, input.as_deref(), signature, quiet),
        Command::Audit(AuditCmd::Verify { public_key, anchor }) => {
            audit::verify(&cli.dir()?, public_key.as_deref(), anchor.as_deref(), json)
        }
    }
}

fn key_command(cli: &Cli, k: &KeyCmd, json: bool, quiet: bool) -> Result<(), CliError> {
    manage::with(cli.session()?, |c| match k {
        KeyCmd::Create {
            spec,
            alias,
            description,
            tags,
        } => manage::create_key(
            c,
            (*spec).into(),
            alias.as_deref(),
            description.as_deref(),
            tags,
            json,
        ),
        KeyCmd::List => manage::list_keys(c, json),
        KeyCmd::Describe { key } => manage::describe_key(c, key, json),
        KeyCmd::Rotate { key } => {
            let v = c.rotate_key_on_demand(key.as_str())?;
            manage::done(quiet, &format!("{key} rotated: primary version is now {v}"))
        }
        KeyCmd::Disable { key } => {
            c.disable_key(key.as_str())?;
            manage::done(quiet, &format!("{key} disabled"))
        }
        KeyCmd::Enable { key } => {
            c.enable_key(key.as_str())?;
            manage::done(quiet, &format!("{key} enabled"))
        }
        KeyCmd::ScheduleDeletion { key, days } => manage::schedule_deletion(c, key, *days),
        KeyCmd::CancelDeletion { key } => {
            c.cancel_key_deletion(key.as_str())?;
            manage::done(
                quiet,
                &format!("deletion of {key} cancelled; the key is disabled until enabled"),
            )
        }
        KeyCmd::PublicKey { key } => manage::public_key(c, key),
    })
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are "errors" that print to stdout and succeed.
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "strongroom: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}
