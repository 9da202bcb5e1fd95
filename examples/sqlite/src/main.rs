//! Encrypted fields in a real SQLite database, read back after a restart.
//!
//! ```sh
//! cargo run -p strongroom-example-sqlite -- [DIR] [--check]
//! ```
//!
//! In `DIR` (default: a new temporary directory, removed at the end) it
//! opens or creates a file keystore (`DIR/keys`) and an SQLite database
//! (`DIR/clinic.db`), stores patients with encrypted columns, drops both
//! (the "restart"), reopens them, reads the rows back and prints them.
//! Anything read back that differs from what was stored is reported and
//! the exit status is nonzero. `--check` (for CI) also checks that no
//! secret value is in the database file in plaintext and that a value
//! copied into another row does not open, then prints a verdict; any
//! failure exits nonzero.
//!
//! Three ways to store an encrypted value, one per column:
//! - `ssn` BLOB: an `Encrypted<String>`'s message bytes;
//! - `diagnosis` TEXT: an `Encrypted<Option<String>>` as base64 text;
//! - `contact` TEXT: a JSON document whose fields `phone` and `email` are
//!   sealed by `sealed_field!` helpers inside `with_scope`.
//!
//! Every value is bound to `table`, `row` and `column` in its encryption
//! context (and the JSON fields to their field name too), so a value copied
//! into another row or column does not open.
//!
//! The keystore's root key here is a passphrase from the environment
//! variable `SQLITE_EXAMPLE_PASSPHRASE` (a fixed demo passphrase if unset).
//! Keep a real one out of the code and away from the keystore directory.

use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use strongroom::sealed::{Encrypted, with_open_scope, with_scope};
use strongroom::store::RootKey;
use strongroom::{Client, CreateKeyOptions, EncryptionContext, Error, KeyRing, KeySpec, Principal};

const KEY: &str = "alias/clinic-pii";

strongroom::sealed_field!(phone);
strongroom::sealed_field!(email);

/// The `contact` column: a JSON document with two encrypted fields.
#[derive(Serialize, Deserialize, PartialEq, Debug, Clone)]
struct Contact {
    #[serde(with = "phone")]
    phone: String,
    #[serde(with = "email")]
    email: Option<String>,
    /// Not secret: stays readable in the database.
    preferred_language: String,
}

#[derive(PartialEq, Debug, Clone)]
struct Patient {
    id: i64,
    name: String,
    ssn: String,
    diagnosis: Option<String>,
    contact: Contact,
}

fn patients() -> Vec<Patient> {
    vec![
        Patient {
            id: 1,
            name: "Ada Lovelace".into(),
            ssn: "078-05-1120".into(),
            diagnosis: Some("mild hypertension".into()),
            contact: Contact {
                phone: "+44 20 7946 0018".into(),
                email: Some("ada@example.org".into()),
                preferred_language: "en".into(),
            },
        },
        Patient {
            id: 2,
            name: "Grace Hopper".into(),
            ssn: "219-09-9999".into(),
            diagnosis: None,
            contact: Contact {
                phone: "+1 202 555 0147".into(),
                email: None,
                preferred_language: "en".into(),
            },
        },
        Patient {
            id: 3,
            name: "Émilie du Châtelet".into(),
            ssn: "457-55-5462".into(),
            diagnosis: Some("fracture du poignet (guérie)".into()),
            contact: Contact {
                phone: "+33 1 99 00 12 34".into(),
                email: Some("emilie@example.fr".into()),
                preferred_language: "fr".into(),
            },
        },
    ]
}

/// What every value of a cell is bound to.
fn cell(id: i64, column: &str) -> EncryptionContext {
    EncryptionContext::new()
        .with("table", "patients")
        .with("row", id.to_string())
        .with("column", column)
}

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Opens the keystore in `dir/keys`: `first_run` creates it (refused if one
/// is there already), later runs open it (refused if it is missing, so a
/// mistyped path never becomes a new, empty keystore).
fn open_ring(dir: &Path, first_run: bool) -> AnyResult<Client> {
    let passphrase = std::env::var("SQLITE_EXAMPLE_PASSPHRASE")
        .unwrap_or_else(|_| "demo passphrase, not for real data".into());
    let root = RootKey::passphrase(&passphrase);
    let ring = if first_run {
        KeyRing::create(dir.join("keys"), root)?
    } else {
        KeyRing::open(dir.join("keys"), root)?
    };
    let app = ring.client(Principal::service("clinic")?);
    match app.describe_key(KEY) {
        Ok(_) => {}
        Err(Error::AliasNotFound(_)) => {
            app.create_key(KeySpec::default(), CreateKeyOptions::new().alias(KEY))?;
        }
        Err(e) => return Err(e.into()),
    }
    Ok(app)
}

fn open_db(dir: &Path) -> AnyResult<Connection> {
    let db = Connection::open(dir.join("clinic.db"))?;
    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS patients (
             id        INTEGER PRIMARY KEY,
             name      TEXT NOT NULL,
             ssn       BLOB NOT NULL,   -- Encrypted<String>, message bytes
             diagnosis TEXT NOT NULL,   -- Encrypted<Option<String>>, base64
             contact   TEXT NOT NULL    -- JSON with sealed fields
         );",
    )?;
    Ok(db)
}

fn insert(app: &Client, db: &Connection, p: &Patient) -> AnyResult<()> {
    let ssn = Encrypted::seal(app, KEY, &p.ssn, &cell(p.id, "ssn"))?;
    let diagnosis = Encrypted::seal(app, KEY, &p.diagnosis, &cell(p.id, "diagnosis"))?;
    let contact = with_scope(app, KEY, &cell(p.id, "contact"), || {
        serde_json::to_string(&p.contact)
    })?;
    db.execute(
        "INSERT OR REPLACE INTO patients (id, name, ssn, diagnosis, contact)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![p.id, p.name, ssn.as_bytes(), diagnosis.to_base64(), contact],
    )?;
    Ok(())
}

/// One stored row, still encrypted.
struct Row {
    id: i64,
    name: String,
    ssn: Vec<u8>,
    diagnosis: String,
    contact: String,
}

fn read_rows(db: &Connection) -> AnyResult<Vec<Row>> {
    let mut stmt =
        db.prepare("SELECT id, name, ssn, diagnosis, contact FROM patients ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok(Row {
            id: r.get(0)?,
            name: r.get(1)?,
            ssn: r.get(2)?,
            diagnosis: r.get(3)?,
            contact: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn decrypt(app: &Client, row: &Row) -> AnyResult<Patient> {
    let ssn = Encrypted::<String>::from_bytes(row.ssn.clone()).open(app, &cell(row.id, "ssn"))?;
    let diagnosis = Encrypted::<Option<String>>::from_base64(&row.diagnosis)?
        .open(app, &cell(row.id, "diagnosis"))?;
    let contact: Contact = with_open_scope(app, &cell(row.id, "contact"), || {
        serde_json::from_str(&row.contact)
    })?;
    Ok(Patient {
        id: row.id,
        name: row.name.clone(),
        ssn,
        diagnosis,
        contact,
    })
}

fn run(dir: &Path, check: bool) -> AnyResult<bool> {
    let expected = patients();
    let mut ok = true;

    // ---- first run: store --------------------------------------------------
    {
        let app = open_ring(dir, true)?;
        let db = open_db(dir)?;
        for p in &expected {
            insert(&app, &db, p)?;
        }
        println!(
            "stored {} patients in {}",
            expected.len(),
            dir.join("clinic.db").display()
        );
        // Both dropped here: connection closed, keystore released.
    }

    // ---- "restart": reopen everything from disk ------------------------------
    let app = open_ring(dir, false)?;
    let db = open_db(dir)?;
    let rows = read_rows(&db)?;
    drop(db);
    println!("\nafter reopening the keystore and the database:");
    for row in &rows {
        println!(
            "  row {}: ssn {} bytes (BLOB), diagnosis {} chars (base64), contact {}",
            row.id,
            row.ssn.len(),
            row.diagnosis.len(),
            abbreviate(&row.contact, 90)
        );
    }
    println!();
    let mut read = Vec::new();
    for row in &rows {
        let p = decrypt(&app, row)?;
        println!("  #{} {}", p.id, p.name);
        println!("      ssn:       {}", p.ssn);
        println!(
            "      diagnosis: {}",
            p.diagnosis.as_deref().unwrap_or("(none)")
        );
        println!(
            "      contact:   {}, {} (language {})",
            p.contact.phone,
            p.contact.email.as_deref().unwrap_or("no email"),
            p.contact.preferred_language
        );
        read.push(p);
    }
    if read != expected {
        ok = false;
        eprintln!("MISMATCH: the rows read back differ from the rows stored");
    }

    if !check {
        return Ok(ok);
    }
    ok &= check_at_rest(&app, dir, &expected)?;
    println!("\ncheck: {}", if ok { "ok" } else { "FAILED" });
    Ok(ok)
}

/// `--check`: no secret value is in the database file in plaintext, and a
/// value copied into another row does not open (the row is put back).
fn check_at_rest(app: &Client, dir: &Path, expected: &[Patient]) -> AnyResult<bool> {
    let mut ok = true;
    // Nothing secret in the database file.
    let file = std::fs::read(dir.join("clinic.db"))?;
    for p in expected {
        let secrets = [
            Some(p.ssn.as_str()),
            p.diagnosis.as_deref(),
            Some(p.contact.phone.as_str()),
            p.contact.email.as_deref(),
        ];
        for s in secrets.into_iter().flatten() {
            if contains(&file, s.as_bytes()) {
                ok = false;
                eprintln!("LEAK: {s:?} is in the database file in plaintext");
            }
        }
    }
    println!(
        "\nno secret value appears in clinic.db in plaintext: {}",
        ok
    );

    // A value copied into another row does not open.
    let db = open_db(dir)?;
    db.execute(
        "UPDATE patients SET ssn = (SELECT ssn FROM patients WHERE id = 1) WHERE id = 2",
        [],
    )?;
    let rows = read_rows(&db)?;
    let moved = rows.iter().find(|r| r.id == 2).ok_or("row 2 is missing")?;
    match decrypt(app, moved) {
        Err(e) => println!("row 1's ssn copied into row 2 does not open: {e}"),
        Ok(_) => {
            ok = false;
            eprintln!("BINDING: a value copied into another row opened");
        }
    }
    // Put row 2 back as it was.
    insert(app, &db, &expected[1])?;

    Ok(ok)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn abbreviate(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

fn main() -> ExitCode {
    let mut check = false;
    let mut dir: Option<PathBuf> = None;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--check" => check = true,
            "-h" | "--help" => {
                println!("usage: strongroom-example-sqlite [DIR] [--check]");
                return ExitCode::SUCCESS;
            }
            a if a.starts_with('-') => {
                eprintln!("unknown option {a}; usage: strongroom-example-sqlite [DIR] [--check]");
                return ExitCode::from(2);
            }
            a => dir = Some(PathBuf::from(a)),
        }
    }
    let (dir, temporary) = match dir {
        Some(d) => (d, false),
        None => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let d = std::env::temp_dir()
                .join(format!("strongroom-sqlite-{}-{nanos}", std::process::id()));
            (d, true)
        }
    };
    let result = std::fs::create_dir_all(&dir)
        .map_err(Into::into)
        .and_then(|()| run(&dir, check));
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
