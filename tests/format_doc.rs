//! docs/FORMAT.md held to the bytes.
//!
//! Every number and formula checked here is read from docs/FORMAT.md itself
//! (embedded with `include_str!`), not copied from the implementation:
//!
//! - the layout tables of the ciphertext blob, the envelope header and both
//!   frame kinds: their `offset` cells must chain (each offset is the sum of
//!   the sizes before it) and the fields they locate must hold the expected
//!   bytes in real ciphertexts;
//! - the `Size:` formulas of blobs and messages, the stated fixed header part
//!   (**44 bytes**), the header size with a ring-minted key and the stated
//!   1 MiB overhead figures, against the lengths of real blobs and messages
//!   for many sizes, contexts and frame lengths;
//! - the streaming reader's wrapped-key limit against the blob formula;
//! - the statements about the frame associated data (a regular frame's
//!   content length is the frame length) and the body suite (it may differ
//!   from the wrapping key's algorithm, and is bound): a message assembled
//!   here from the document alone, with raw AEAD and HKDF calls, must open
//!   with the ring, and variants that contradict the document must not.
//!
//! Formulas are evaluated by a small evaluator for `+`, `-`, `×`,
//! parentheses, integers, variables and `Σ(…)` (a sum over the wrapped keys,
//! with `W` bound to each wrapped key's length in turn). Changing a number in
//! the document, or the format, fails a test here. Every test that uses a
//! ring runs once per crypto provider compiled in (`CryptoProvider::all`).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use std::collections::BTreeMap;
use strongroom::crypto::CryptoProvider;
use strongroom::envelope::{CiphertextInfo, inspect};
use strongroom::key::SymmetricAlgorithm;
use strongroom::{
    Client, CreateKeyOptions, EncryptionContext, KeyRing, KeySpec, Principal, SealOptions,
};

const DOC: &str = include_str!("../docs/FORMAT.md");

// ---- reading the document ---------------------------------------------------

/// The section whose heading line is `heading` (e.g. `### Header`), up to the
/// next heading of the same or a higher level. The heading must be unique.
fn section(heading: &str) -> &'static str {
    let needle = format!("\n{heading}\n");
    assert_eq!(
        DOC.matches(&needle).count(),
        1,
        "FORMAT.md must have exactly one heading `{heading}`"
    );
    let start = DOC.find(&needle).unwrap() + needle.len();
    let level = heading.chars().take_while(|c| *c == '#').count();
    let body = &DOC[start..];
    let mut pos = 0;
    for line in body.split_inclusive('\n') {
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if hashes > 0 && hashes <= level && line[hashes..].starts_with(' ') {
            return &body[..pos];
        }
        pos += line.len();
    }
    body
}

/// One row of a layout table: `offset` (if the table has that column),
/// `size` and `field`.
#[derive(Debug)]
struct Row {
    offset: Option<String>,
    size: String,
    field: String,
}

/// The first markdown table in `text` after the first occurrence of `after`.
fn table(text: &str, after: &str) -> Vec<Row> {
    let start = text
        .find(after)
        .unwrap_or_else(|| panic!("FORMAT.md: `{after}` not found"));
    let mut lines = text[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'));
    let cells = |l: &str| -> Vec<String> {
        let l = l.trim().trim_start_matches('|').trim_end_matches('|');
        l.split('|').map(|c| c.trim().to_string()).collect()
    };
    let header = cells(lines.next().expect("a table"));
    let col = |name: &str| header.iter().position(|h| h == name);
    let (offset, size, field) = (col("offset"), col("size"), col("field"));
    let (size, field) = (
        size.expect("a `size` column"),
        field.expect("a `field` column"),
    );
    lines
        .skip(1) // the |---| separator
        .map(|l| {
            let c = cells(l);
            Row {
                offset: offset.map(|i| c[i].clone()),
                size: c[size].clone(),
                field: c[field].clone(),
            }
        })
        .collect()
}

/// The table row whose field cell starts with `prefix` (exactly one).
fn row<'a>(rows: &'a [Row], prefix: &str) -> &'a Row {
    let found: Vec<_> = rows
        .iter()
        .filter(|r| r.field.starts_with(prefix))
        .collect();
    assert_eq!(found.len(), 1, "one table row starting with `{prefix}`");
    found[0]
}

/// The `` `code` `` spans of `text`, in order.
fn spans(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// The paragraph of `text` (blank-line separated) that contains `needle`.
fn paragraph<'a>(text: &'a str, needle: &str) -> &'a str {
    text.split("\n\n")
        .find(|p| p.contains(needle))
        .unwrap_or_else(|| panic!("FORMAT.md: no paragraph with `{needle}`"))
}

/// The integers of `text`, in order (digits separated by `,` join: `4,389`).
fn numbers(text: &str) -> Vec<u64> {
    let mut out = Vec::new();
    let mut cur: Option<u64> = None;
    let chars: Vec<char> = text.chars().collect();
    for (i, &ch) in chars.iter().enumerate() {
        if let Some(d) = ch.to_digit(10) {
            cur = Some(cur.unwrap_or(0) * 10 + u64::from(d));
        } else if ch == ',' && cur.is_some() && chars.get(i + 1).is_some_and(char::is_ascii_digit) {
            // a thousands separator
        } else if let Some(n) = cur.take() {
            out.push(n);
        }
    }
    out.extend(cur);
    out
}

/// The numbers of every `**N bytes**` in `text`, in order.
fn bold_bytes(text: &str) -> Vec<u64> {
    text.split("**")
        .skip(1)
        .step_by(2)
        .filter_map(|b| b.strip_suffix(" bytes"))
        .map(|n| n.replace(',', "").parse().expect("**N bytes**"))
        .collect()
}

// ---- evaluating the document's formulas ---------------------------------------

#[derive(Debug)]
enum Expr {
    Num(i64),
    Var(String),
    Add(Box<Expr>, Box<Expr>),
    Sub(Box<Expr>, Box<Expr>),
    Mul(Box<Expr>, Box<Expr>),
    /// `Σ(…)`: the sum over the wrapped keys, `W` bound to each length.
    Sum(Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(i64),
    Ident(String),
    Op(char),
}

fn tokens(src: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut it = src.chars().peekable();
    while let Some(&c) = it.peek() {
        if c.is_whitespace() {
            it.next();
        } else if c.is_ascii_digit() {
            let mut n = 0i64;
            while let Some(d) = it.peek().and_then(|c| c.to_digit(10)) {
                n = n * 10 + i64::from(d);
                it.next();
            }
            out.push(Tok::Num(n));
        } else if c.is_ascii_alphabetic() {
            let mut s = String::new();
            while let Some(&c) = it.peek().filter(|c| c.is_ascii_alphanumeric()) {
                s.push(c);
                it.next();
            }
            out.push(Tok::Ident(s));
        } else if "+-×*()Σ".contains(c) {
            out.push(Tok::Op(if c == '*' { '×' } else { c }));
            it.next();
        } else {
            panic!("unexpected `{c}` in formula `{src}`");
        }
    }
    out
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek_op(&self) -> Option<char> {
        match self.toks.get(self.pos) {
            Some(Tok::Op(c)) => Some(*c),
            _ => None,
        }
    }

    fn expect(&mut self, op: char) {
        assert_eq!(self.peek_op(), Some(op), "formula: expected `{op}`");
        self.pos += 1;
    }

    fn sum(&mut self) -> Expr {
        let mut e = self.product();
        while let Some(op @ ('+' | '-')) = self.peek_op() {
            self.pos += 1;
            let r = self.product();
            e = if op == '+' {
                Expr::Add(Box::new(e), Box::new(r))
            } else {
                Expr::Sub(Box::new(e), Box::new(r))
            };
        }
        e
    }

    fn product(&mut self) -> Expr {
        let mut e = self.atom();
        while self.peek_op() == Some('×') {
            self.pos += 1;
            e = Expr::Mul(Box::new(e), Box::new(self.atom()));
        }
        e
    }

    fn atom(&mut self) -> Expr {
        let t = self
            .toks
            .get(self.pos)
            .cloned()
            .expect("formula ends early");
        self.pos += 1;
        match t {
            Tok::Num(n) => Expr::Num(n),
            Tok::Ident(s) => Expr::Var(s),
            Tok::Op('(') => {
                let e = self.sum();
                self.expect(')');
                e
            }
            Tok::Op('Σ') => {
                self.expect('(');
                let e = self.sum();
                self.expect(')');
                Expr::Sum(Box::new(e))
            }
            Tok::Op(c) => panic!("formula: unexpected `{c}`"),
        }
    }
}

/// Values of a formula's variables; `wrapped` are the wrapped-key lengths.
#[derive(Clone, Default)]
struct Env {
    vars: BTreeMap<&'static str, i64>,
    wrapped: Vec<i64>,
}

impl Env {
    fn with(mut self, name: &'static str, v: usize) -> Self {
        self.vars.insert(name, v as i64);
        self
    }
}

fn eval_expr(e: &Expr, env: &Env) -> i64 {
    match e {
        Expr::Num(n) => *n,
        Expr::Var(v) => *env
            .vars
            .get(v.as_str())
            .unwrap_or_else(|| panic!("formula variable `{v}` has no value")),
        Expr::Add(a, b) => eval_expr(a, env) + eval_expr(b, env),
        Expr::Sub(a, b) => eval_expr(a, env) - eval_expr(b, env),
        Expr::Mul(a, b) => eval_expr(a, env) * eval_expr(b, env),
        Expr::Sum(inner) => env
            .wrapped
            .iter()
            .map(|w| eval_expr(inner, &env.clone().with("W", *w as usize)))
            .sum(),
    }
}

/// Evaluates a formula written in the document.
fn eval(src: &str, env: &Env) -> usize {
    let mut p = Parser {
        toks: tokens(src),
        pos: 0,
    };
    let e = p.sum();
    assert_eq!(p.pos, p.toks.len(), "trailing tokens in formula `{src}`");
    usize::try_from(eval_expr(&e, env)).expect("a non-negative size")
}

/// Evaluates a layout table for `env`: asserts that every stated offset is
/// the sum of the sizes before it, and returns (offset, size) of every row
/// and the total size.
fn layout(rows: &[Row], env: &Env) -> (Vec<(usize, usize)>, usize) {
    let mut at = 0;
    let mut out = Vec::new();
    for r in rows {
        let size = eval(&r.size, env);
        if let Some(off) = &r.offset {
            assert_eq!(
                eval(off, env),
                at,
                "FORMAT.md: offset `{off}` of `{}` is not the sum of the sizes before it",
                r.field
            );
        }
        out.push((at, size));
        at += size;
    }
    (out, at)
}

/// The bytes of `msg` at the row whose field starts with `prefix`, given the
/// rows' (offset, size) from [`layout`].
fn field<'m>(rows: &[Row], at: &[(usize, usize)], msg: &'m [u8], prefix: &str) -> &'m [u8] {
    let found: Vec<usize> = (0..rows.len())
        .filter(|&i| rows[i].field.starts_with(prefix))
        .collect();
    assert_eq!(found.len(), 1, "one table row starting with `{prefix}`");
    let (off, size) = at[found[0]];
    &msg[off..off + size]
}

/// A big-endian unsigned integer.
fn be(b: &[u8]) -> usize {
    b.iter().fold(0usize, |acc, x| (acc << 8) | usize::from(*x))
}

// ---- the document's statements, parsed ------------------------------------------

fn blob_table() -> Vec<Row> {
    table(section("## Ciphertext blob (type 0x01)"), "| offset")
}

fn header_table() -> Vec<Row> {
    table(section("### Header"), "| offset")
}

fn regular_frame_table() -> Vec<Row> {
    table(section("### Body: frames"), "Regular frame")
}

fn final_frame_table() -> Vec<Row> {
    table(section("### Body: frames"), "Final frame")
}

/// The blob's `Size:` formulas: the general one (`L`, `n`) and the one for
/// a ring-minted key id (`n` only).
fn blob_size_formulas() -> (&'static str, &'static str) {
    let s = spans(paragraph(
        section("## Ciphertext blob (type 0x01)"),
        "Size:",
    ));
    assert_eq!(s.len(), 2, "blob Size: a general and a ring-minted formula");
    (s[0], s[1])
}

/// The message's `Size:` formulas: header, regular frame, final frame.
fn message_size_formulas() -> [&'static str; 3] {
    let s = spans(paragraph(section("### Size"), "Size:"));
    assert_eq!(s.len(), 3, "message Size: header, regular and final frame");
    [s[0], s[1], s[2]]
}

/// The suite id the Suites table gives an algorithm.
fn doc_suite_id(alg: SymmetricAlgorithm) -> u8 {
    let name = match alg {
        SymmetricAlgorithm::Aes256Gcm => "AES-256-GCM",
        SymmetricAlgorithm::ChaCha20Poly1305 => "ChaCha20-Poly1305",
        other => panic!("no suite for {other:?}"),
    };
    let sec = section("## Suites");
    let line = sec
        .lines()
        .find(|l| l.starts_with("| `0x") && l.contains(name))
        .unwrap_or_else(|| panic!("Suites table: no row for {name}"));
    let hex = line.split('`').nth(1).unwrap().trim_start_matches("0x");
    u8::from_str_radix(hex, 16).unwrap()
}

/// The largest value stated in a table cell such as "(1 to 255)".
fn stated_max(cell: &str) -> usize {
    *numbers(cell).last().expect("a bound") as usize
}

// ---- the ring ---------------------------------------------------------------------

const ALGS: [SymmetricAlgorithm; 2] = [
    SymmetricAlgorithm::Aes256Gcm,
    SymmetricAlgorithm::ChaCha20Poly1305,
];

fn ring(provider: CryptoProvider) -> (Client, Vec<(SymmetricAlgorithm, String)>) {
    let c = KeyRing::builder()
        .crypto_provider(provider)
        .build()
        .client(Principal::user("alice").unwrap());
    let keys = ALGS
        .iter()
        .map(|&a| {
            let id = c
                .create_key(KeySpec::Symmetric(a), CreateKeyOptions::new())
                .unwrap();
            (a, id.to_string())
        })
        .collect();
    (c, keys)
}

fn contexts() -> Vec<EncryptionContext> {
    vec![
        EncryptionContext::new(),
        EncryptionContext::new().with("tenant", "acme"),
        EncryptionContext::new()
            .with("tenant", "acme")
            .with("purpose", "format-doc")
            .with("région", "é"),
    ]
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + 3) as u8).collect()
}

fn clen(ctx: &EncryptionContext) -> usize {
    ctx.canonical_bytes().unwrap().len()
}

/// Length of the wrapped data key of a message made with `key_id`, from the
/// document: a ciphertext blob of the 32-byte data key.
fn doc_wrapped_len(key_id: &str) -> usize {
    let (general, _) = blob_size_formulas();
    eval(
        general,
        &Env::default().with("L", key_id.len()).with("n", 32),
    )
}

// ---- tests ------------------------------------------------------------------------

/// Under every crypto provider compiled in.
#[test]
fn blob_table_and_size_formula_match_real_blobs() {
    for provider in CryptoProvider::all() {
        blob_table_and_size_formula_match_real_blobs_with(*provider);
    }
}

fn blob_table_and_size_formula_match_real_blobs_with(provider: CryptoProvider) {
    let rows = blob_table();
    let (general, minted) = blob_size_formulas();
    let (c, keys) = ring(provider);
    for (alg, key) in &keys {
        for ctx in contexts() {
            for n in [1usize, 2, 31, 32, 100, 4095, 4096] {
                let pt = data(n);
                let blob = c.encrypt(key, &pt, &ctx).unwrap();
                // The built-in backends' payload: nonce, ciphertext, tag.
                let env = Env::default()
                    .with("L", key.len())
                    .with("n", n)
                    .with("P", 28 + n);
                let (at, total) = layout(&rows, &env);
                assert_eq!(blob.len(), total, "blob table, n = {n}");
                assert_eq!(blob.len(), eval(general, &env), "`{general}`, n = {n}");
                assert_eq!(blob.len(), eval(minted, &env), "`{minted}`, n = {n}");
                let f = |p| field(&rows, &at, &blob, p);
                assert_eq!(f("magic"), b"SR");
                assert_eq!(f("type"), [0x01]);
                assert_eq!(f("format version"), [0x02]);
                assert_eq!(be(f("payload length")), 28 + n);
                assert_eq!(f("suite id"), [doc_suite_id(*alg)]);
                assert_eq!(be(f("key id length")), key.len());
                assert_eq!(f("key id,"), key.as_bytes());
                assert_eq!(be(f("key version")), 1);
                assert!(matches!(
                    inspect(&blob).unwrap(),
                    CiphertextInfo::Blob { key_version: 1, .. }
                ));
            }
            // A data key is a blob of 32 bytes.
            let dk = c.generate_data_key(key, &ctx).unwrap();
            assert_eq!(dk.ciphertext().len(), doc_wrapped_len(key));
        }
    }
}

/// Under every crypto provider compiled in.
#[test]
fn header_table_fixed_part_and_size_match_real_messages() {
    for provider in CryptoProvider::all() {
        header_table_fixed_part_and_size_match_real_messages_with(*provider);
    }
}

fn header_table_fixed_part_and_size_match_real_messages_with(provider: CryptoProvider) {
    let sec = section("### Header");
    let rows = header_table();
    let stated_fixed = bold_bytes(paragraph(sec, "fixed part"));
    assert_eq!(stated_fixed.len(), 1, "one **N bytes** for the fixed part");
    let stated_fixed = stated_fixed[0] as usize;
    // The fixed part is every row before the context, whose size is `C`.
    let ctx_row = rows.iter().position(|r| r.size == "C").unwrap();
    let table_fixed: usize = rows[..ctx_row]
        .iter()
        .map(|r| r.size.parse::<usize>().unwrap())
        .sum();
    assert_eq!(table_fixed, stated_fixed, "header table vs fixed part");
    assert_eq!(
        eval(rows[ctx_row].offset.as_deref().unwrap(), &Env::default()),
        stated_fixed,
        "offset of the context"
    );
    let [header_formula, _, _] = message_size_formulas();
    let minted_header = spans(paragraph(section("### Size"), "ring-minted key"))
        .into_iter()
        .find(|s| s.contains('C'))
        .expect("the header size with a ring-minted key");
    let default_frame = stated_max(
        row(&rows, "frame length")
            .field
            .split("default")
            .nth(1)
            .unwrap(),
    );

    let (c, keys) = ring(provider);
    for (alg, key) in &keys {
        for ctx in contexts() {
            for frame_len in [1u32, 16, 65536, 1 << 24] {
                let m = c
                    .seal_with(key, b"x", &ctx, SealOptions::new().frame_len(frame_len))
                    .unwrap();
                let cl = clen(&ctx);
                let w = doc_wrapped_len(key);
                let env = Env {
                    wrapped: vec![w as i64],
                    ..Env::default()
                }
                .with("C", cl)
                .with("N", 1);
                let (at, header_len) = layout(&rows, &env);
                assert_eq!(header_len, eval(header_formula, &env), "`{header_formula}`");
                assert_eq!(header_len, eval(minted_header, &env), "`{minted_header}`");
                let f = |p| field(&rows, &at, &m, p);
                assert_eq!(f("magic"), b"SR");
                assert_eq!(f("type"), [0x02]);
                assert_eq!(f("format version"), [0x01]);
                // The ring writes the wrapping key's algorithm as body suite.
                assert_eq!(f("suite id"), [doc_suite_id(*alg)]);
                assert_eq!(f("body layout"), [0x02]);
                assert_eq!(be(f("frame length")), frame_len as usize);
                assert_eq!(be(f("context length")), cl);
                // The context starts right after the fixed part.
                assert_eq!(
                    &m[stated_fixed..stated_fixed + cl],
                    ctx.canonical_bytes().unwrap().as_slice()
                );
                assert_eq!(f("canonical encryption context"), &m[stated_fixed..][..cl]);
                assert_eq!(f("wrapped key count"), [1]);
                let entry = f("`N` wrapped keys");
                assert_eq!(be(&entry[..2]), w);
                let blob = &entry[2..];
                assert_eq!(blob[4], doc_suite_id(*alg), "wrapped key's suite");
                match inspect(blob).unwrap() {
                    CiphertextInfo::Blob { key_id, .. } => assert_eq!(key_id.as_str(), key),
                    other => panic!("not a blob: {other:?}"),
                }
                match inspect(&m).unwrap() {
                    CiphertextInfo::Message { frame_len: f, .. } => assert_eq!(f, frame_len),
                    other => panic!("not a message: {other:?}"),
                }
            }
            // `seal` uses the documented default frame length.
            let m = c.seal(key, b"", &ctx).unwrap();
            match inspect(&m).unwrap() {
                CiphertextInfo::Message { frame_len, .. } => {
                    assert_eq!(frame_len as usize, default_frame)
                }
                other => panic!("not a message: {other:?}"),
            }
        }
    }
}

/// Regular frames for `d` bytes: "a regular frame only while more than `F`
/// bytes remain".
fn regular_frames(d: usize, f: usize) -> usize {
    d.saturating_sub(1) / f
}

/// Checks a real message's length and frame layout against the document.
fn check_message(m: &[u8], d: usize, f: usize, ctx: &EncryptionContext, key: &str) {
    let [header_formula, regular_formula, final_formula] = message_size_formulas();
    let (reg_rows, fin_rows) = (regular_frame_table(), final_frame_table());
    let env = Env {
        wrapped: vec![doc_wrapped_len(key) as i64],
        ..Env::default()
    }
    .with("C", clen(ctx))
    .with("N", 1)
    .with("F", f);
    let header = eval(header_formula, &env);
    let r = regular_frames(d, f);
    let n = d - r * f;
    let env = env.with("n", n);
    let (reg_at, reg_len) = layout(&reg_rows, &env);
    let (fin_at, fin_len) = layout(&fin_rows, &env);
    assert_eq!(reg_len, eval(regular_formula, &env), "`{regular_formula}`");
    assert_eq!(fin_len, eval(final_formula, &env), "`{final_formula}`");
    assert_eq!(
        m.len(),
        header + r * reg_len + fin_len,
        "message of {d} bytes, F = {f}, C = {}",
        clen(ctx)
    );
    let marker = u32::from_str_radix(
        row(&fin_rows, "marker")
            .field
            .split('`')
            .nth(1)
            .unwrap()
            .trim_start_matches("0x"),
        16,
    )
    .unwrap() as usize;
    let mut p = header;
    for seq in 1..=r {
        let fr = &m[p..p + reg_len];
        assert_eq!(be(field(&reg_rows, &reg_at, fr, "sequence number")), seq);
        p += reg_len;
    }
    let fr = &m[p..];
    assert_eq!(fr.len(), fin_len);
    assert_eq!(be(field(&fin_rows, &fin_at, fr, "marker")), marker);
    assert_eq!(be(field(&fin_rows, &fin_at, fr, "sequence number")), r + 1);
    assert_eq!(be(field(&fin_rows, &fin_at, fr, "content length")), n);
}

/// Under every crypto provider compiled in.
#[test]
fn message_sizes_and_frames_match_the_formulas() {
    for provider in CryptoProvider::all() {
        message_sizes_and_frames_match_the_formulas_with(*provider);
    }
}

fn message_sizes_and_frames_match_the_formulas_with(provider: CryptoProvider) {
    let (c, keys) = ring(provider);
    let (_, key) = &keys[0];
    for ctx in contexts() {
        for f in [1usize, 7, 16, 4096, 65536] {
            // 1 MiB is checked in `one_mib_overhead_figures_are_exact`;
            // sealing is slow in debug builds, so the 64 KiB frames get
            // only the sizes around one frame.
            let sizes = if f > 4096 {
                vec![0, 1, f, f + 1]
            } else {
                vec![0, 1, f - 1, f, f + 1, 2 * f + 1]
            };
            for d in sizes {
                let m = c
                    .seal_with(key, &data(d), &ctx, SealOptions::new().frame_len(f as u32))
                    .unwrap();
                check_message(&m, d, f, &ctx, key);
            }
        }
    }
    // The streaming writer emits the same layout.
    let ctx = EncryptionContext::new().with("tenant", "acme");
    for d in [0usize, 1, 16, 17, 50] {
        let mut w = c
            .seal_writer(key, &ctx, SealOptions::new().frame_len(16), Vec::new())
            .unwrap();
        for piece in data(d).chunks(5) {
            std::io::Write::write_all(&mut w, piece).unwrap();
        }
        check_message(&w.finish().unwrap(), d, 16, &ctx, key);
    }
}

/// Under every crypto provider compiled in.
#[test]
fn one_mib_overhead_figures_are_exact() {
    for provider in CryptoProvider::all() {
        one_mib_overhead_figures_are_exact_with(*provider);
    }
}

fn one_mib_overhead_figures_are_exact_with(provider: CryptoProvider) {
    let para = paragraph(section("### Size"), "1 MiB");
    let figures = bold_bytes(para);
    assert_eq!(
        figures.len(),
        2,
        "overhead with the empty and a small context"
    );
    // The small context is written in the document as JSON.
    let json = spans(para)
        .into_iter()
        .find(|s| s.starts_with('{'))
        .expect("the small context, as JSON");
    let small: EncryptionContext = serde_json::from_str(json).unwrap();
    assert!(!small.is_empty());
    // The stated `C = …` values are the canonical lengths.
    let stated_c: Vec<u64> = para.split("C = ").skip(1).map(|s| numbers(s)[0]).collect();
    let ctxs = [EncryptionContext::new(), small];
    assert_eq!(stated_c.len(), 2);
    let (c, keys) = ring(provider);
    let d = vec![0xa5; 1 << 20];
    // One 1 MiB message per context (sealing is slow in debug builds); the
    // two keys share the work, so both suites are covered.
    for (((alg, key), ctx), (figure, cl)) in
        keys.iter().zip(&ctxs).zip(figures.iter().zip(&stated_c))
    {
        assert_eq!(clen(ctx) as u64, *cl, "C of {ctx:?}");
        let m = c.seal(key, &d, ctx).unwrap();
        assert_eq!(
            (m.len() - d.len()) as u64,
            *figure,
            "overhead of 1 MiB, {alg:?}, context {ctx:?}"
        );
        // `seal`'s frame length is the documented default (checked in
        // `header_table_fixed_part_and_size_match_real_messages`).
        let CiphertextInfo::Message { frame_len, .. } = inspect(&m).unwrap() else {
            panic!("not a message");
        };
        check_message(&m, d.len(), frame_len as usize, ctx, key);
    }
}

#[test]
fn streaming_wrapped_key_limit_is_the_largest_blob() {
    let para = paragraph(section("### Streaming"), "wrapped-key entry longer than");
    let limit = numbers(para.split("longer than").nth(1).unwrap())[0] as usize;
    let rows = blob_table();
    let max_l = stated_max(&row(&rows, "key id length").field);
    let max_p = stated_max(&row(&rows, "payload length").field);
    let (_, largest) = layout(
        &rows,
        &Env::default()
            .with("L", max_l)
            .with("P", max_p)
            .with("n", 0),
    );
    assert_eq!(largest, limit);
}

// ---- a message assembled from the document alone ------------------------------

fn aead_seal(suite: u8, key: &[u8], seq: u32, aad: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; 12]; // 0^8 || seq (u32)
    nonce[8..].copy_from_slice(&seq.to_be_bytes());
    let payload = Payload { msg, aad };
    match suite {
        1 => aes_gcm::Aes256Gcm::new_from_slice(key)
            .unwrap()
            .encrypt(nonce.as_slice().try_into().unwrap(), payload)
            .unwrap(),
        2 => chacha20poly1305::ChaCha20Poly1305::new_from_slice(key)
            .unwrap()
            .encrypt(nonce.as_slice().try_into().unwrap(), payload)
            .unwrap(),
        _ => unreachable!(),
    }
}

/// Builds an envelope message as docs/FORMAT.md describes it, around a
/// data key and its wrapped blob from `generate_data_key` (a blob of `DK`
/// whose associated data is `blob header || canonical context`, as a wrapped
/// key must be). `regular_aad_len` is the content length put in a regular
/// frame's associated data (the document says: the frame length).
fn build_message(
    body_suite: u8,
    dk: &[u8],
    wrapped: &[u8],
    ctx: &EncryptionContext,
    f: usize,
    data: &[u8],
    regular_aad_len: u64,
) -> Vec<u8> {
    let message_id = [0x5a; 32];
    let ctx = ctx.canonical_bytes().unwrap();
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(&message_id), dk);
    let mut body_key = [0u8; 32];
    hk.expand_multi_info(&[b"strongroom/v1 body key", &[body_suite]], &mut body_key)
        .unwrap();
    let mut commitment = [0u8; 32];
    hk.expand_multi_info(
        &[b"strongroom/v1 commitment", &[body_suite]],
        &mut commitment,
    )
    .unwrap();
    let mut m = b"SR".to_vec();
    m.extend_from_slice(&[0x02, 0x01, body_suite, 0x02]);
    m.extend_from_slice(&(f as u32).to_be_bytes());
    m.extend_from_slice(&message_id);
    m.extend_from_slice(&(ctx.len() as u16).to_be_bytes());
    m.extend_from_slice(&ctx);
    m.push(1);
    m.extend_from_slice(&(wrapped.len() as u16).to_be_bytes());
    m.extend_from_slice(wrapped);
    m.extend_from_slice(&commitment);
    let tag = aead_seal(body_suite, &body_key, 0, &m, &[]);
    m.extend_from_slice(&tag);
    let aad = |fin: u8, seq: u32, len: u64| {
        let mut a = message_id.to_vec();
        a.push(fin);
        a.extend_from_slice(&seq.to_be_bytes());
        a.extend_from_slice(&len.to_be_bytes());
        a
    };
    let r = regular_frames(data.len(), f);
    let mut seq = 1u32;
    for chunk in data[..r * f].chunks(f) {
        m.extend_from_slice(&seq.to_be_bytes());
        let ct = aead_seal(
            body_suite,
            &body_key,
            seq,
            &aad(0, seq, regular_aad_len),
            chunk,
        );
        m.extend_from_slice(&ct);
        seq += 1;
    }
    let last = &data[r * f..];
    m.extend_from_slice(&0xFFFF_FFFFu32.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(&(last.len() as u32).to_be_bytes());
    let ct = aead_seal(
        body_suite,
        &body_key,
        seq,
        &aad(1, seq, last.len() as u64),
        last,
    );
    m.extend_from_slice(&ct);
    m
}

/// Under every crypto provider compiled in.
#[test]
fn doc_built_message_opens_with_any_body_suite_and_frame_len_in_the_aad() {
    for provider in CryptoProvider::all() {
        doc_built_message_opens_with_any_body_suite_and_frame_len_in_the_aad_with(*provider);
    }
}

fn doc_built_message_opens_with_any_body_suite_and_frame_len_in_the_aad_with(
    provider: CryptoProvider,
) {
    let (c, keys) = ring(provider);
    let ctx = EncryptionContext::new().with("tenant", "acme");
    let f = 16;
    let d = data(3 * f + 5); // three regular frames and a final one
    for (wrap_alg, key) in &keys {
        for body_alg in ALGS {
            let body_suite = doc_suite_id(body_alg);
            let dk = c.generate_data_key(key, &ctx).unwrap();
            let build = |suite: u8, regular_aad_len: u64| {
                build_message(
                    suite,
                    dk.plaintext().expose_secret(),
                    dk.ciphertext(),
                    &ctx,
                    f,
                    &d,
                    regular_aad_len,
                )
            };
            let m = build(body_suite, f as u64);
            check_message(&m, d.len(), f, &ctx, key);
            let opened = c
                .open(&m, &ctx)
                .unwrap_or_else(|e| panic!("body {body_alg:?}, wrapped by {wrap_alg:?}: {e}"));
            assert_eq!(opened.plaintext.expose_secret(), d.as_slice());
            assert_eq!(opened.key_id.as_str(), key);

            // The suite is bound: flipping it in the header fails to open.
            let mut flipped = m.clone();
            flipped[4] = doc_suite_id(ALGS.into_iter().find(|a| *a != body_alg).unwrap());
            assert!(c.open(&flipped, &ctx).is_err(), "suite not bound");

            // Any other content length in a regular frame's AAD fails:
            // the ciphertext-and-tag length, or zero.
            for wrong in [f as u64 + 16, 0] {
                assert!(
                    c.open(&build(body_suite, wrong), &ctx).is_err(),
                    "regular frame AAD with content length {wrong} opened"
                );
            }
        }
    }
}
