//! Heap allocations per operation (1 KiB payloads, warm ring, one thread),
//! counted by a counting global allocator: `cargo bench --bench allocs`.
//! Prints a table and writes `target/criterion/allocs.json`, which
//! `examples/bench_report.rs` includes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use strongroom::{CreateKeyOptions, EncryptionContext, KeyRing, KeySpec, Principal};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only
// counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const OPS: u64 = 2_000;

/// Allocations and bytes per call of `f`, after a warm-up.
fn per_op(mut f: impl FnMut()) -> (f64, f64) {
    for _ in 0..100 {
        f();
    }
    let (a0, b0) = (
        ALLOCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    for _ in 0..OPS {
        f();
    }
    let (a1, b1) = (
        ALLOCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    ((a1 - a0) as f64 / OPS as f64, (b1 - b0) as f64 / OPS as f64)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter that is not ours means
    // another bench was asked for.
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && !"allocs".contains(a.as_str()))
    {
        return;
    }
    let ring = KeyRing::builder().threads(1).build();
    let c = ring.client(Principal::service("bench").unwrap());
    let key = c
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap()
        .to_string();
    let ctx = EncryptionContext::new().with("bench", "1");
    let data = vec![0x5au8; 1024];
    let blob = c.encrypt(&key, &data, &ctx).unwrap();
    let msg = c.seal(&key, &data, &ctx).unwrap();
    let mut out = Vec::with_capacity(4096);
    let rows: Vec<(&str, (f64, f64))> = vec![
        (
            "encrypt_1k",
            per_op(|| {
                c.encrypt(&key, &data, &ctx).unwrap();
            }),
        ),
        (
            "decrypt_1k",
            per_op(|| {
                c.decrypt(&blob, &ctx).unwrap();
            }),
        ),
        (
            "seal_1k",
            per_op(|| {
                c.seal(&key, &data, &ctx).unwrap();
            }),
        ),
        (
            "seal_into_1k",
            per_op(|| {
                out.clear();
                c.seal_into(&key, &data, &ctx, Default::default(), &mut out)
                    .unwrap();
            }),
        ),
        (
            "open_1k",
            per_op(|| {
                c.open(&msg, &ctx).unwrap();
            }),
        ),
    ];
    println!("{:<14} {:>12} {:>14}", "operation", "allocs/op", "bytes/op");
    let mut json = String::from("{");
    for (i, (name, (a, b))) in rows.iter().enumerate() {
        println!("{name:<14} {a:>12.1} {b:>14.0}");
        if i > 0 {
            json.push(',');
        }
        json.push_str(&format!(
            "\"{name}\":{{\"allocs\":{a:.2},\"bytes\":{b:.0}}}"
        ));
    }
    json.push('}');
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/criterion");
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(dir.join("allocs.json"), json);
    }
}
